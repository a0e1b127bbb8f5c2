//! The user's live audio for turn detection: each `audio_input` chunk decoded to mono
//! samples as it arrives, whatever the client sends — raw linear16 (as its session settings
//! declare), WAV files or a WAV stream, or a WebM/Opus stream split across chunks.

use super::pcm::linear16_to_mono;
use super::wav::WavChunkDecoder;
use super::webm::EBML_MAGIC;
use super::webm_stream::WebmOpusStream;
use crate::{AudioError, Linear16Format};

/// Mono samples (full scale ±1.0) of one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct MonoChunk {
    /// The samples.
    pub samples: Vec<f32>,
    /// Their rate (Hz).
    pub sample_rate: u32,
}

/// Decodes the user's `audio_input` chunks for turn detection, keeping the state of a
/// WebM/Opus stream across chunks.
#[derive(Debug, Default)]
pub struct InputDecoder {
    /// The WebM/Opus stream being decoded (`None` before one starts, or after it failed).
    webm: Option<WebmOpusStream>,
    /// A WebM/Opus stream failed: its further chunks are ignored until a new one starts.
    webm_failed: bool,
    /// The client was told its audio cannot be heard (once per chat).
    pub told: bool,
    /// The WAV stream being heard: chunks after its header are raw samples.
    wav: Option<WavChunkDecoder>,
}

impl InputDecoder {
    /// One chunk as mono PCM: raw linear16 as `session_settings.audio` declares; else by its
    /// first bytes, a WAV file or the start of a WAV stream (`RIFF`; the chunks after it
    /// without a header are its raw samples) or the start or continuation of a WebM/Opus
    /// stream (EBML magic; one stream across chunks, decoded at 48 kHz).
    /// `Ok(None)`: nothing to hear (no samples yet, or the rest of a failed stream).
    pub fn decode(
        &mut self,
        bytes: &[u8],
        format: Option<Linear16Format>,
    ) -> Result<Option<MonoChunk>, AudioError> {
        if let Some(format) = format {
            let mut samples = Vec::new();
            linear16_to_mono(format, bytes, &mut samples)?;
            return Ok(Some(MonoChunk {
                samples,
                sample_rate: format.sample_rate,
            }));
        }
        if bytes.starts_with(&EBML_MAGIC) && self.webm.is_none() {
            // A new stream: the first, or one restarted after a failure.
            self.webm = Some(WebmOpusStream::new());
            self.webm_failed = false;
            self.wav = None;
        }
        if let Some(stream) = self.webm.as_mut() {
            let mut samples = Vec::new();
            let fed = stream.feed(bytes, &mut samples);
            let rate = stream.sample_rate();
            if let Err(e) = fed {
                self.webm = None;
                self.webm_failed = true;
                return Err(e);
            }
            return Ok((!samples.is_empty()).then_some(MonoChunk {
                samples,
                sample_rate: rate,
            }));
        }
        if bytes.starts_with(b"RIFF") {
            // A WAV file, or the start of a WAV stream.
            self.wav = Some(WavChunkDecoder::new());
        }
        if let Some(stream) = self.wav.as_mut() {
            let mut samples = Vec::new();
            if let Err(e) = stream.feed(bytes, &mut samples) {
                self.wav = None;
                return Err(match e {
                    AudioError::InvalidWav(m) => AudioError::InvalidWav(format!(
                        "{m} (send each chunk as a WAV file, or a WAV header followed by raw \
                         samples)"
                    )),
                    other => other,
                });
            }
            let Some(rate) = stream.sample_rate() else {
                return Ok(None); // the header is still incomplete
            };
            return Ok((!samples.is_empty()).then_some(MonoChunk {
                samples,
                sample_rate: rate,
            }));
        }
        if self.webm_failed {
            return Ok(None);
        }
        Err(AudioError::UnrecognizedContainer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(samples: &[i16], rate: u32) -> Vec<u8> {
        let pcm: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        colloquy_testkit::wav(&pcm, rate)
    }

    fn i16s(chunk: &MonoChunk) -> Vec<i16> {
        chunk
            .samples
            .iter()
            .map(|s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }

    #[test]
    fn audio_chunks_become_mono_pcm() {
        let stereo = Linear16Format {
            channels: 2,
            sample_rate: 8_000,
        };
        let bytes: Vec<u8> = [100i16, 300, -50, -150]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let mut input = InputDecoder::default();
        let pcm = input.decode(&bytes, Some(stereo)).unwrap().unwrap();
        assert_eq!((i16s(&pcm), pcm.sample_rate), (vec![200, -100], 8_000));

        let pcm = input
            .decode(&wav(&[1, 2, 3], 24_000), None)
            .unwrap()
            .unwrap();
        assert_eq!((i16s(&pcm), pcm.sample_rate), (vec![1, 2, 3], 24_000));
        assert!(InputDecoder::default().decode(b"neither", None).is_err());
    }

    #[test]
    fn a_wav_stream_is_heard_across_chunks() {
        // One WAV file cut into a header chunk and raw pieces that split samples in two.
        let samples: Vec<i16> = (0..100).map(|i| i * 100 - 5_000).collect();
        let file = wav(&samples, 16_000);
        let (head, rest) = file.split_at(44 + 21);
        let mut input = InputDecoder::default();
        let mut heard = Vec::new();
        let first = input.decode(head, None).unwrap().unwrap();
        assert_eq!(first.sample_rate, 16_000);
        heard.extend(i16s(&first));
        for piece in rest.chunks(37) {
            if let Some(pcm) = input.decode(piece, None).unwrap() {
                assert_eq!(pcm.sample_rate, 16_000);
                heard.extend(i16s(&pcm));
            }
        }
        assert_eq!(heard, samples, "every sample once, none split");
        // A new header starts a new stream, in its own format.
        let pcm = input.decode(&wav(&[7, 8], 8_000), None).unwrap().unwrap();
        assert_eq!((i16s(&pcm), pcm.sample_rate), (vec![7, 8], 8_000));
    }

    #[test]
    fn a_failed_webm_stream_is_ignored_until_a_new_one_starts() {
        let mut input = InputDecoder::default();
        // An EBML header with a DocType that is not WebM.
        let mut bad = EBML_MAGIC.to_vec();
        bad.extend_from_slice(&[0x87, 0x42, 0x82, 0x84, b'n', b'o', b'p', b'e']);
        assert!(input.decode(&bad, None).is_err());
        assert!(input
            .decode(b"more of that stream", None)
            .unwrap()
            .is_none());
        // A new stream starts over (here: its first bytes, no samples yet).
        assert!(input.decode(&EBML_MAGIC, None).unwrap().is_none());
        assert!(input.webm.is_some());
    }
}
