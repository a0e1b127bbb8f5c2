//! The output formats (spec §7.5): mono 48 kHz everywhere; `pcm` is headerless signed
//! 16-bit little-endian, `wav` RIFF PCM16, `mp3` 64 kbit/s CBR through LAME
//! (`mp3lame-encoder`).
//!
//! Two ways to encode: [`file`] makes one complete file of known length (`/file`, the JSON
//! answers, and each chunk of a stream without `strip_headers`); a [`StreamEncoder`] makes
//! one file in pieces as the audio arrives (`/stream/file`, and chunks with
//! `strip_headers`), its WAV header written first with the "length unknown" sizes that
//! decoders read to the end of the stream.

use super::wire::AudioFormat;
use mp3lame_encoder::{Bitrate, Builder, FlushNoGap, MonoPcm, Quality};

/// The sample rate of every output.
pub const SAMPLE_RATE: u32 = 48_000;

/// A WAV header for `data_len` bytes of mono 16-bit PCM (`None`: unknown length).
fn wav_header(data_len: Option<u32>) -> Vec<u8> {
    let data = data_len.unwrap_or(u32::MAX - 36);
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(data.saturating_add(36)).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // PCM
    h.extend_from_slice(&1u16.to_le_bytes()); // mono
    h.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    h.extend_from_slice(&(SAMPLE_RATE * 2).to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data.to_le_bytes());
    h
}

fn pcm_bytes(samples: &[i16], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

fn mp3_encoder() -> Option<mp3lame_encoder::Encoder> {
    let mut b = Builder::new()?;
    b.set_num_channels(1).ok()?;
    b.set_sample_rate(SAMPLE_RATE).ok()?;
    b.set_brate(Bitrate::Kbps64).ok()?;
    b.set_quality(Quality::Good).ok()?;
    b.build().ok()
}

fn mp3_encode(enc: &mut mp3lame_encoder::Encoder, samples: &[i16], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 5 / 4 + 7200);
    if let Err(e) = enc.encode_to_vec(MonoPcm(samples), out) {
        tracing::warn!(error = ?e, "mp3 encoding failed");
    }
}

fn mp3_flush(enc: &mut mp3lame_encoder::Encoder, out: &mut Vec<u8>) {
    out.reserve(7200);
    if let Err(e) = enc.flush_to_vec::<FlushNoGap>(out) {
        tracing::warn!(error = ?e, "mp3 flush failed");
    }
}

/// One complete file of `samples` (48 kHz mono).
pub fn file(format: AudioFormat, samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        AudioFormat::Pcm => pcm_bytes(samples, &mut out),
        AudioFormat::Wav => {
            let len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX - 36);
            out = wav_header(Some(len));
            pcm_bytes(samples, &mut out);
        }
        AudioFormat::Mp3 => {
            if let Some(mut enc) = mp3_encoder() {
                mp3_encode(&mut enc, samples, &mut out);
                mp3_flush(&mut enc, &mut out);
            }
        }
    }
    out
}

/// One file made in pieces (see the module documentation).
pub struct StreamEncoder {
    format: AudioFormat,
    started: bool,
    mp3: Option<mp3lame_encoder::Encoder>,
}

impl StreamEncoder {
    /// An encoder for `format`.
    pub fn new(format: AudioFormat) -> Self {
        Self {
            format,
            started: false,
            mp3: None,
        }
    }

    /// The bytes for the next `samples` (may be empty: MP3 frames are made 1152 samples at
    /// a time).
    pub fn push(&mut self, samples: &[i16]) -> Vec<u8> {
        let mut out = Vec::new();
        match self.format {
            AudioFormat::Pcm => pcm_bytes(samples, &mut out),
            AudioFormat::Wav => {
                if !self.started {
                    out = wav_header(None);
                }
                pcm_bytes(samples, &mut out);
            }
            AudioFormat::Mp3 => {
                if self.mp3.is_none() {
                    self.mp3 = mp3_encoder();
                }
                if let Some(enc) = self.mp3.as_mut() {
                    mp3_encode(enc, samples, &mut out);
                }
            }
        }
        self.started = true;
        out
    }

    /// The last bytes (the MP3 encoder's buffered frames; a WAV header if nothing was
    /// pushed).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.format {
            AudioFormat::Pcm => {}
            AudioFormat::Wav => {
                if !self.started {
                    out = wav_header(Some(0));
                }
            }
            AudioFormat::Mp3 => {
                if let Some(enc) = self.mp3.as_mut() {
                    mp3_flush(enc, &mut out);
                }
            }
        }
        self.started = true;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_files_have_exact_sizes_and_streams_unknown_ones() {
        let f = file(AudioFormat::Wav, &[1, -1, 2]);
        assert_eq!(f.len(), 44 + 6);
        assert_eq!(&f[4..8], &(36u32 + 6).to_le_bytes());
        assert_eq!(&f[40..44], &6u32.to_le_bytes());
        assert_eq!(&f[44..], &[1, 0, 255, 255, 2, 0]);
        let mut s = StreamEncoder::new(AudioFormat::Wav);
        let first = s.push(&[1]);
        assert_eq!(&first[..4], b"RIFF");
        assert_eq!(first.len(), 46);
        assert_eq!(s.push(&[2]), vec![2, 0], "no second header");
        assert!(s.finish().is_empty());
    }

    #[test]
    fn mp3_is_mpeg_frames() {
        let tone: Vec<i16> = (0..48_000)
            .map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16)
            .collect();
        let f = file(AudioFormat::Mp3, &tone);
        assert!(f.len() > 4000, "{} bytes", f.len());
        // An MPEG-1 Layer III frame sync.
        assert_eq!(f[0], 0xFF);
        assert_eq!(f[1] & 0xE0, 0xE0);
    }
}
