//! WAV (RIFF/WAVE) encoding and decoding for `audio_output` chunks and speech services.
//!
//! [`encode_wav`] writes 16-bit mono PCM; [`wav_chunks`] splits audio into several complete
//! WAV files (each EVI `audio_output` message carries one, base64-encoded).
//! [`decode_wav`] reads what OpenAI-compatible speech services return, through
//! colloquy-audio's WAV parser: 8/16/24/32-bit integer or 32/64-bit float PCM, plain or
//! `WAVE_FORMAT_EXTENSIBLE`, 1–8 channels (downmixed to mono) at 8–192 kHz, and streamed
//! files whose sizes are placeholders (`0` or `0xFFFFFFFF`: the data then runs to the end).

use colloquy_audio::AudioError;

use crate::pcm::{to_i16, Pcm};

/// Why bytes could not be decoded as WAV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a supported WAV file: {0}")]
pub struct WavError(pub String);

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

/// Decodes a complete WAV file to mono 16-bit PCM (channels are averaged), with
/// colloquy-audio's WAV parser and sample conversion ([`colloquy_audio::decode_wav`]).
pub fn decode_wav(bytes: &[u8]) -> Result<Pcm, WavError> {
    let mut samples = Vec::new();
    let rate = colloquy_audio::decode_wav(bytes, &mut samples).map_err(|e| match e {
        AudioError::InvalidWav(msg) | AudioError::Unsupported(msg) => WavError(msg),
        other => WavError(other.to_string()),
    })?;
    Ok(Pcm::new(samples.into_iter().map(to_i16).collect(), rate))
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
        let pcm = Pcm::new((0..20_000).map(|i| i as i16).collect(), 8000);
        let chunks = wav_chunks(&pcm, 1000);
        assert_eq!(chunks.len(), 3);
        let mut joined = Vec::new();
        for c in &chunks {
            let d = decode_wav(c).unwrap();
            assert_eq!(d.sample_rate, 8000);
            joined.extend(d.samples);
        }
        assert_eq!(joined, pcm.samples);
        assert!(wav_chunks(&Pcm::new(vec![], 8000), 100).is_empty());
    }

    #[test]
    fn rejects_garbage() {
        // Header parsing and sample conversion are tested in colloquy-audio.
        assert_eq!(
            decode_wav(b"OggS....").unwrap_err().to_string(),
            "not a supported WAV file: missing RIFF magic"
        );
        assert!(decode_wav(b"RIFF\0\0\0\0WAVEdata\0\0\0\0").is_err());
    }
}
