//! Reconstruction speed and memory: a long two-voice chat mixed and encoded by
//! `colloquy_audio::reconstruct`, side by side with ffmpeg doing the same resample + mix +
//! limit + AAC encode on the same audio. Each runs in its own child process pinned to one
//! core, so its CPU time and peak RSS are its own.
//!
//! ```text
//! cargo run --release -p colloquy-bench --bin reconstruct -- --minutes 30
//! ```

use anyhow::{bail, Context};
use clap::Parser;
use colloquy_audio::{write_record, Linear16Format, MixOptions, VoiceFormat, VoiceInput};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// Chat length in minutes.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Skip the ffmpeg baseline.
    #[arg(long)]
    no_ffmpeg: bool,
    /// Internal: reconstruct the inputs in DIR (used by the child process).
    #[arg(long, hide = true)]
    child: Option<PathBuf>,
}

const USER_RATE: u32 = 16_000;
const ASSISTANT_RATE: u32 = 24_000;
/// Turn length: the user speaks, then the assistant, each `TURN_MS` (with a 500 ms overlap).
const TURN_MS: u64 = 8_000;

/// Deterministic speech-like signal: a few harmonics with a syllable-rate envelope + noise.
fn speech(rate: u32, start_sample: u64, n: usize, pitch: f64, seed: &mut u64) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = (start_sample + i as u64) as f64 / rate as f64;
            let env = (0.5 + 0.5 * (2.0 * std::f64::consts::PI * 4.0 * t).sin()).powi(2);
            let mut v = 0.0;
            for h in 1..=4 {
                v += (2.0 * std::f64::consts::PI * pitch * h as f64 * t).sin() / h as f64;
            }
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            let noise = (*seed % 2000) as f64 / 1000.0 - 1.0;
            ((0.25 * env * v + 0.02 * noise) * i16::MAX as f64) as i16
        })
        .collect()
}

fn wav_header(w: &mut impl Write, rate: u32, samples: u64) -> std::io::Result<()> {
    let data = (samples * 2) as u32;
    w.write_all(b"RIFF")?;
    w.write_all(&(36 + data).to_le_bytes())?;
    w.write_all(b"WAVEfmt ")?;
    w.write_all(&16u32.to_le_bytes())?;
    w.write_all(&1u16.to_le_bytes())?;
    w.write_all(&1u16.to_le_bytes())?;
    w.write_all(&rate.to_le_bytes())?;
    w.write_all(&(rate * 2).to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&16u16.to_le_bytes())?;
    w.write_all(b"data")?;
    w.write_all(&data.to_le_bytes())
}

fn pcm_bytes(s: &[i16]) -> Vec<u8> {
    s.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes the chat's inputs, streaming (nothing is held whole):
/// * `user.rec`: the microphone as Colloquy captures it, 20 ms linear16 chunks at 16 kHz for
///   the whole chat (speech in the user's turns, near-silence otherwise);
/// * `assistant.rec`: one WAV clip per second of assistant speech at 24 kHz;
/// * `user.wav`, `assistant.wav`: the same audio laid out on the timeline for ffmpeg.
fn generate(dir: &Path, minutes: u64) -> anyhow::Result<()> {
    let total_ms = minutes * 60_000;
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut user_rec = BufWriter::new(File::create(dir.join("user.rec"))?);
    let mut user_wav = BufWriter::new(File::create(dir.join("user.wav"))?);
    wav_header(&mut user_wav, USER_RATE, total_ms * USER_RATE as u64 / 1000)?;
    let chunk = (USER_RATE / 50) as usize;
    for c in 0..total_ms / 20 {
        let t = c * 20;
        let speaking = (t / TURN_MS) % 2 == 0;
        let mut s = speech(USER_RATE, c * chunk as u64, chunk, 140.0, &mut seed);
        if !speaking {
            s.iter_mut().for_each(|v| *v /= 40);
        }
        let bytes = pcm_bytes(&s);
        let jitter = (seed % 15) as i64;
        write_record(&mut user_rec, t as i64 + jitter, &bytes)?;
        user_wav.write_all(&bytes)?;
    }
    user_rec.flush()?;
    user_wav.flush()?;

    let mut asst_rec = BufWriter::new(File::create(dir.join("assistant.rec"))?);
    let mut asst_wav = BufWriter::new(File::create(dir.join("assistant.wav"))?);
    let per_ms = ASSISTANT_RATE as u64 / 1000;
    wav_header(&mut asst_wav, ASSISTANT_RATE, total_ms * per_ms)?;
    let mut written_ms = 0u64;
    let mut turn_start = TURN_MS - 500; // the assistant starts 500 ms before the user stops
    while turn_start + TURN_MS <= total_ms {
        // silence up to the turn
        let gap = vec![0u8; ((turn_start - written_ms) * per_ms * 2) as usize];
        asst_wav.write_all(&gap)?;
        for sec in 0..TURN_MS / 1000 {
            let s = speech(
                ASSISTANT_RATE,
                sec * 1000 * per_ms,
                (1000 * per_ms) as usize,
                210.0,
                &mut seed,
            );
            let mut clip = Vec::with_capacity(44 + s.len() * 2);
            wav_header(&mut clip, ASSISTANT_RATE, s.len() as u64)?;
            clip.extend_from_slice(&pcm_bytes(&s));
            // clips of one turn arrive in a burst at the turn's start
            write_record(&mut asst_rec, turn_start as i64 + sec as i64 * 30, &clip)?;
            asst_wav.write_all(&pcm_bytes(&s))?;
        }
        written_ms = turn_start + TURN_MS;
        turn_start += 2 * TURN_MS;
    }
    asst_wav.write_all(&vec![0u8; ((total_ms - written_ms) * per_ms * 2) as usize])?;
    asst_rec.flush()?;
    asst_wav.flush()?;
    Ok(())
}

/// Child: reconstruct `dir`'s record logs into `dir/colloquy.mp4`.
fn child(dir: &Path) -> anyhow::Result<()> {
    let user = VoiceInput {
        format: VoiceFormat::Linear16(Linear16Format {
            sample_rate: USER_RATE,
            channels: 1,
        }),
        records: std::io::BufReader::new(File::open(dir.join("user.rec"))?),
    };
    let assistant = VoiceInput {
        format: VoiceFormat::WavClips,
        records: std::io::BufReader::new(File::open(dir.join("assistant.rec"))?),
    };
    let out = BufWriter::new(File::create(dir.join("colloquy.mp4"))?);
    let summary =
        colloquy_audio::reconstruct(Some(user), Some(assistant), &MixOptions::default(), out)?;
    eprintln!("{summary:?}");
    Ok(())
}

struct Measured {
    wall: f64,
    cpu: f64,
    peak_mb: f64,
}

/// Runs a command pinned to CPU 0 and returns its wall time, CPU time and peak RSS.
fn measure(mut cmd: Command) -> anyhow::Result<Measured> {
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        });
    }
    let start = Instant::now();
    let child = cmd.spawn().context("spawn")?;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        bail!("wait4 failed");
    }
    let wall = start.elapsed().as_secs_f64();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed with status {status}");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        peak_mb: usage.ru_maxrss as f64 / 1024.0,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.child {
        return child(dir);
    }
    let dir = tempfile::tempdir()?;
    let audio_secs = args.minutes as f64 * 60.0;
    println!("machine: {}", colloquy_bench::sys::machine());
    println!(
        "generating a {}-minute two-voice chat in {}",
        args.minutes,
        dir.path().display()
    );
    generate(dir.path(), args.minutes)?;

    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--child").arg(dir.path());
    let ours = measure(cmd)?;
    let mut rows = vec![("colloquy-audio (FDK AAC-LC 64k mono)", ours)];

    if !args.no_ffmpeg {
        let mut ff = Command::new("ffmpeg");
        ff.args([
            "-v",
            "error",
            "-y",
            "-threads",
            "1",
            "-filter_threads",
            "1",
            "-i",
        ])
        .arg(dir.path().join("user.wav"))
        .arg("-i")
        .arg(dir.path().join("assistant.wav"))
        .args([
            "-filter_complex",
            "[0:a]aresample=48000[u];[1:a]aresample=48000[a];\
                 [u][a]amix=inputs=2:normalize=0:duration=longest,alimiter=limit=1[m]",
            "-map",
            "[m]",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-ac",
            "1",
            "-ar",
            "48000",
        ])
        .arg(dir.path().join("ffmpeg.mp4"));
        rows.push(("ffmpeg (native AAC 64k mono)", measure(ff)?));
    }

    println!(
        "\n| pipeline ({} min of audio, one core) | wall s | CPU s | × real time | peak RSS MB |",
        args.minutes
    );
    println!("|---|---|---|---|---|");
    for (name, m) in &rows {
        println!(
            "| {name} | {:.2} | {:.2} | {:.0}× | {:.1} |",
            m.wall,
            m.cpu,
            audio_secs / m.wall,
            m.peak_mb
        );
    }
    Ok(())
}
