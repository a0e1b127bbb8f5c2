//! WAV (RIFF/WAVE) encoding and decoding for `audio_output` chunks and speech services.
//!
//! [`encode_wav`] writes 16-bit mono PCM; [`wav_chunks`] splits audio into several complete
//! WAV files (each EVI `audio_output` message carries one, base64-encoded).
//! [`decode_wav`] reads what OpenAI-compatible speech services return: 8/16/24/32-bit
//! integer or 32/64-bit float PCM, plain or `WAVE_FORMAT_EXTENSIBLE`, any channel count
//! (downmixed to mono), and streamed files whose sizes are placeholders (`0` or
//! `0xFFFFFFFF`: the data then runs to the end).

use crate::pcm::{to_i16, Pcm};

/// Why bytes could not be decoded as WAV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a supported WAV file: {0}")]
pub struct WavError(pub String);

fn err(msg: impl Into<String>) -> WavError {
    WavError(msg.into())
}

/// Encodes `pcm` as a complete 16-bit mono WAV file.
pub fn encode_wav(pcm: &Pcm) -> Vec<u8> {
    let data_len = (pcm.samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&pcm.sample_rate.to_le_bytes());
    out.extend_from_slice(&(pcm.sample_rate * 2).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in &pcm.samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Splits `pcm` into consecutive pieces of at most `max_ms` milliseconds (at least one
/// frame each), each encoded as a complete WAV file. Empty audio gives no chunks.
pub fn wav_chunks(pcm: &Pcm, max_ms: u32) -> Vec<Vec<u8>> {
    let frames = (u64::from(pcm.sample_rate) * u64::from(max_ms) / 1000).max(1) as usize;
    pcm.samples
        .chunks(frames)
        .map(|piece| encode_wav(&Pcm::new(piece.to_vec(), pcm.sample_rate)))
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
}

impl Encoding {
    fn width(self) -> usize {
        match self {
            Encoding::U8 => 1,
            Encoding::I16 => 2,
            Encoding::I24 => 3,
            Encoding::I32 | Encoding::F32 => 4,
            Encoding::F64 => 8,
        }
    }

    fn sample(self, b: &[u8]) -> f32 {
        match self {
            Encoding::U8 => (f32::from(b[0]) - 128.0) / 128.0,
            Encoding::I16 => f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0,
            Encoding::I24 => (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0,
            Encoding::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0,
            Encoding::F32 => finite(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Encoding::F64 => finite(f64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as f32),
        }
    }
}

fn finite(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(-1.0, 1.0)
    }
}

/// Decodes a complete WAV file to mono 16-bit PCM (channels are averaged).
pub fn decode_wav(bytes: &[u8]) -> Result<Pcm, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(err("missing RIFF/WAVE header"));
    }
    let mut pos = 12;
    let mut format: Option<(Encoding, u16, u32)> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let body = pos + 8;
        if id == b"fmt " {
            let end = body + size as usize;
            if size < 16 || end > bytes.len() {
                return Err(err("truncated fmt chunk"));
            }
            format = Some(parse_fmt(&bytes[body..end])?);
        } else if id == b"data" {
            let (encoding, channels, rate) = format.ok_or_else(|| err("data before fmt chunk"))?;
            let end = if size == 0 || size == u32::MAX {
                bytes.len()
            } else {
                (body + size as usize).min(bytes.len())
            };
            let frame = encoding.width() * usize::from(channels);
            let samples = bytes[body..end]
                .chunks_exact(frame)
                .map(|f| {
                    let sum: f32 = f
                        .chunks_exact(encoding.width())
                        .map(|b| encoding.sample(b))
                        .sum();
                    to_i16(sum / f32::from(channels))
                })
                .collect();
            return Ok(Pcm::new(samples, rate));
        }
        // Chunks are padded to an even length.
        pos = body
            .saturating_add(size as usize)
            .saturating_add(size as usize & 1);
    }
    Err(err("no data chunk"))
}

fn parse_fmt(f: &[u8]) -> Result<(Encoding, u16, u32), WavError> {
    let u16_at = |i: usize| u16::from_le_bytes([f[i], f[i + 1]]);
    let mut tag = u16_at(0);
    let channels = u16_at(2);
    let rate = u32::from_le_bytes(f[4..8].try_into().expect("4 bytes"));
    let bits = u16_at(14);
    if tag == 0xFFFE {
        if f.len() < 26 {
            return Err(err("truncated WAVE_FORMAT_EXTENSIBLE header"));
        }
        tag = u16_at(24); // first two bytes of the sub-format GUID
    }
    let encoding = match (tag, bits) {
        (1, 8) => Encoding::U8,
        (1, 16) => Encoding::I16,
        (1, 24) => Encoding::I24,
        (1, 32) => Encoding::I32,
        (3, 32) => Encoding::F32,
        (3, 64) => Encoding::F64,
        _ => return Err(err(format!("format tag {tag} with {bits} bits per sample"))),
    };
    if channels == 0 || rate == 0 {
        return Err(err(format!("{channels} channels at {rate} Hz")));
    }
    Ok((encoding, channels, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pcm = Pcm::new(
            (0..1000).map(|i| (i * 37 % 2000 - 1000) as i16).collect(),
            24_000,
        );
        let wav = encode_wav(&pcm);
        assert_eq!(wav.len(), 44 + 2000);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(decode_wav(&wav).unwrap(), pcm);
    }

    #[test]
    fn chunks_are_complete_files_that_concatenate_to_the_input() {
        let pcm = Pcm::new((0..2500).map(|i| i as i16).collect(), 1000);
        let chunks = wav_chunks(&pcm, 1000);
        assert_eq!(chunks.len(), 3);
        let mut joined = Vec::new();
        for c in &chunks {
            let d = decode_wav(c).unwrap();
            assert_eq!(d.sample_rate, 1000);
            joined.extend(d.samples);
        }
        assert_eq!(joined, pcm.samples);
        assert!(wav_chunks(&Pcm::new(vec![], 1000), 100).is_empty());
    }

    #[test]
    fn stereo_float_with_streaming_sizes_and_extra_chunks() {
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF\xff\xff\xff\xffWAVE");
        wav.extend_from_slice(b"LIST\x03\x00\x00\x00abc\x00"); // odd size, padded
        wav.extend_from_slice(b"fmt \x10\x00\x00\x00");
        wav.extend_from_slice(&3u16.to_le_bytes());
        wav.extend_from_slice(&2u16.to_le_bytes());
        wav.extend_from_slice(&8000u32.to_le_bytes());
        wav.extend_from_slice(&64000u32.to_le_bytes());
        wav.extend_from_slice(&8u16.to_le_bytes());
        wav.extend_from_slice(&32u16.to_le_bytes());
        wav.extend_from_slice(b"data\xff\xff\xff\xff");
        for (l, r) in [(0.5f32, 0.0f32), (-1.0, -1.0), (0.25, 0.75)] {
            wav.extend_from_slice(&l.to_le_bytes());
            wav.extend_from_slice(&r.to_le_bytes());
        }
        let pcm = decode_wav(&wav).unwrap();
        assert_eq!(pcm.sample_rate, 8000);
        assert_eq!(pcm.samples, vec![8192, -32768, 16384]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode_wav(b"OggS....").is_err());
        assert!(decode_wav(b"RIFF\0\0\0\0WAVEdata\0\0\0\0").is_err());
    }
}
