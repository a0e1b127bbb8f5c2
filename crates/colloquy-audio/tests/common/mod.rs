//! Helpers shared by the integration tests: signal generation, record logs, decoding
//! the produced MP4 with ffmpeg (an independent decoder) and tone detection.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use colloquy_audio::{reconstruct, write_record, AudioError, MixOptions, Summary, VoiceInput};

pub const RATE: usize = 48_000;

/// Panics with an actionable message if `tool` is not on PATH (never skips silently).
pub fn require(tool: &str) {
    let ok = Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{tool}` not found on PATH: this test needs ffmpeg/ffprobe (with libopus). \
         Install it, e.g. `apt-get install -y ffmpeg` (CI installs it)."
    );
}

/// A sine of `amp` (0..1 of full scale), `frames` long, same signal on every channel.
pub fn sine(rate: u32, freq: f64, amp: f64, frames: usize, channels: u16) -> Vec<i16> {
    sine_from(rate, freq, amp, 0, frames, channels)
}

/// Like [`sine`], continuing the phase from frame `first`.
pub fn sine_from(
    rate: u32,
    freq: f64,
    amp: f64,
    first: usize,
    frames: usize,
    channels: u16,
) -> Vec<i16> {
    let mut v = Vec::with_capacity(frames * usize::from(channels));
    for i in first..first + frames {
        let s = amp * (std::f64::consts::TAU * freq * i as f64 / f64::from(rate)).sin();
        let s = (s * 32767.0).round() as i16;
        for _ in 0..channels {
            v.push(s);
        }
    }
    v
}

pub fn le(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// A WAV file. `format`: 1 = PCM, 3 = float; `bits` 16/24/32; `samples` are 16-bit and
/// converted. `streaming` writes 0xFFFFFFFF placeholder sizes like a live recorder.
pub fn wav(
    rate: u32,
    channels: u16,
    samples: &[i16],
    format: u16,
    bits: u16,
    streaming: bool,
) -> Vec<u8> {
    let mut data = Vec::new();
    for &s in samples {
        match (format, bits) {
            (1, 16) => data.extend_from_slice(&s.to_le_bytes()),
            (1, 24) => data.extend_from_slice(&(i32::from(s) << 8).to_le_bytes()[..3]),
            (1, 32) => data.extend_from_slice(&(i32::from(s) << 16).to_le_bytes()),
            (3, 32) => data.extend_from_slice(&(f32::from(s) / 32768.0).to_le_bytes()),
            _ => panic!("unsupported test format"),
        }
    }
    let align = channels * bits / 8;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    let riff = if streaming {
        u32::MAX
    } else {
        36 + data.len() as u32
    };
    v.extend_from_slice(&riff.to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&format.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
    v.extend_from_slice(&align.to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    let size = if streaming {
        u32::MAX
    } else {
        data.len() as u32
    };
    v.extend_from_slice(&size.to_le_bytes());
    v.extend_from_slice(&data);
    v
}

/// A record log from `(offset_ms, bytes)` records.
pub fn log(records: &[(i64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (offset, bytes) in records {
        write_record(&mut out, *offset, bytes).unwrap();
    }
    out
}

/// Splits `bytes` into pseudo-random chunks of 1..=max bytes (deterministic).
pub fn split_arbitrarily(bytes: &[u8], max: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = ((state >> 33) as usize % max + 1).min(rest.len());
        chunks.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    chunks
}

pub type Input<'a> = Option<VoiceInput<&'a [u8]>>;

/// Runs [`reconstruct`] into a temp file; returns the summary and the file.
pub fn run(
    user: Input<'_>,
    assistant: Input<'_>,
    opts: &MixOptions,
) -> Result<(Summary, tempfile::NamedTempFile), AudioError> {
    let mut file = tempfile::Builder::new().suffix(".mp4").tempfile().unwrap();
    let summary = reconstruct(user, assistant, opts, file.as_file_mut())?;
    file.as_file_mut().flush().unwrap();
    Ok((summary, file))
}

/// Decodes an MP4 with ffmpeg to 48 kHz float samples, one Vec per channel.
pub fn decode(path: &Path, channels: usize) -> Vec<Vec<f32>> {
    require("ffmpeg");
    let out = Command::new("ffmpeg")
        .args(["-v", "warning", "-i"])
        .arg(path)
        .args(["-f", "s16le", "-acodec", "pcm_s16le", "-ar", "48000", "-ac"])
        .arg(channels.to_string())
        .arg("-")
        .output()
        .expect("run ffmpeg");
    // Any demuxer/decoder warning (bad esds, sample table, edit list...) fails the test.
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg complained: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut chans = vec![Vec::new(); channels];
    for (i, s) in out.stdout.chunks_exact(2).enumerate() {
        chans[i % channels].push(f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0);
    }
    chans
}

/// `ffprobe` stream and format fields as `key -> value` (stream keys prefixed `stream.`).
pub fn ffprobe(path: &Path) -> HashMap<String, String> {
    require("ffprobe");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "flat",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let k = k.replace("streams.stream.0.", "stream.");
            (k, v.trim_matches('"').to_owned())
        })
        .collect()
}

/// Amplitude of `freq` in `x` (Goertzel; a sine of amplitude A reads ≈ A).
pub fn tone_amplitude(x: &[f32], freq: f64) -> f64 {
    let w = std::f64::consts::TAU * freq / RATE as f64;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s0 = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / x.len() as f64
}

/// Where `freq` is present: `(onset_ms, end_ms)` of the first and last 10 ms windows
/// (hop 1 ms) whose amplitude exceeds half of `amp`, corrected to the half-covered point.
pub fn tone_span(x: &[f32], freq: f64, amp: f64) -> Option<(f64, f64)> {
    let win = RATE / 100;
    let hop = RATE / 1000;
    let present: Vec<bool> = (0..x.len().saturating_sub(win) / hop)
        .map(|i| tone_amplitude(&x[i * hop..i * hop + win], freq) > amp / 2.0)
        .collect();
    let first = present.iter().position(|p| *p)?;
    let last = present.iter().rposition(|p| *p)?;
    // A window is half covered when the tone edge is at its centre (5 ms in).
    Some((first as f64 + 5.0, last as f64 + 5.0))
}

/// Steady-state amplitude of `freq` between `from_ms` and `to_ms`.
pub fn amplitude_between(x: &[f32], freq: f64, from_ms: usize, to_ms: usize) -> f64 {
    tone_amplitude(&x[from_ms * RATE / 1000..to_ms * RATE / 1000], freq)
}

pub fn assert_near(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got:.1}, want {want:.1} ± {tol}"
    );
}

/// Encodes a tone to WebM/Opus with ffmpeg (libopus). `live` writes to a pipe, giving
/// the unknown-size Segment/Clusters MediaRecorder produces; otherwise a seekable file.
/// The tone has amplitude `amp` (0..1 of full scale).
pub fn ffmpeg_webm_opus(freq: f64, amp: f64, seconds: f64, channels: u16, live: bool) -> Vec<u8> {
    require("ffmpeg");
    // One expression per channel: identical channels, no rematrixing (ffmpeg's mono ->
    // stereo upmix would apply -3 dB).
    let expr = vec![format!("{amp}*sin(2*PI*{freq}*t)"); usize::from(channels)].join("|");
    let source = format!("aevalsrc={expr}:s=48000:d={seconds}");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-f", "lavfi", "-i", &source])
        .args([
            "-ac",
            &channels.to_string(),
            "-c:a",
            "libopus",
            "-b:a",
            "64k",
            "-f",
            "webm",
        ]);
    if live {
        let out = cmd
            .args(["-live", "1", "pipe:1"])
            .output()
            .expect("run ffmpeg");
        assert!(
            out.status.success(),
            "ffmpeg failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    } else {
        let file = tempfile::Builder::new().suffix(".webm").tempfile().unwrap();
        let out = cmd.arg("-y").arg(file.path()).output().expect("run ffmpeg");
        assert!(
            out.status.success(),
            "ffmpeg failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(file.path()).unwrap()
    }
}

/// Reads an EBML variable-length integer at `p`: `(value, length)`; IDs keep the marker.
fn vint(b: &[u8], p: usize, keep_marker: bool) -> (u64, usize) {
    let len = b[p].leading_zeros() as usize + 1;
    let mut v = b[p..p + len]
        .iter()
        .fold(0u64, |a, &x| (a << 8) | u64::from(x));
    if !keep_marker {
        v &= (1u64 << (7 * len)) - 1;
    }
    (v, len)
}

/// Rewrites ffmpeg's live WebM into the shape Chrome's MediaRecorder produces: no
/// SeekHead/Void/Tags/Cues, and every Cluster with the 8-byte "unknown size" (ffmpeg's
/// live mode still buffers clusters and writes their sizes).
pub fn mediarecorder_like(webm: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(webm.len() + 64);
    // EBML header: copy.
    let (_, il) = vint(webm, 0, true);
    let (size, sl) = vint(webm, il, false);
    let mut p = il + sl + size as usize;
    out.extend_from_slice(&webm[..p]);
    // Segment header: copy (ffmpeg live mode already uses the unknown size).
    let (id, il) = vint(webm, p, true);
    assert_eq!(id, 0x1853_8067, "Segment expected");
    let (_, sl) = vint(webm, p + il, false);
    out.extend_from_slice(&webm[p..p + il + sl]);
    p += il + sl;
    while p < webm.len() {
        let (id, il) = vint(webm, p, true);
        let (size, sl) = vint(webm, p + il, false);
        let body = &webm[p + il + sl..p + il + sl + size as usize];
        if matches!(id, 0x114D_9B74 | 0xEC | 0x1254_C367 | 0x1C53_BB6B) {
            p += il + sl + size as usize;
            continue;
        }
        out.extend_from_slice(&webm[p..p + il]);
        if id == 0x1F43_B675 {
            out.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        } else {
            out.extend_from_slice(&webm[p + il..p + il + sl]);
        }
        out.extend_from_slice(body);
        p += il + sl + size as usize;
    }
    out
}
