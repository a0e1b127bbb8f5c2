//! Cheap incremental validation of a voice stream at capture time.

use crate::decode::pcm;
use crate::decode::wav::{self, WavHeader};
use crate::decode::webm::{WebmProbe, EBML_MAGIC};
use crate::{AudioError, Linear16Format};

/// What a [`StreamProbe`] has recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectedFormat {
    /// Raw linear16 in the declared format.
    Linear16(Linear16Format),
    /// A WebM stream whose first audio track is Opus.
    WebmOpus,
    /// A WAV stream.
    Wav {
        /// Sample rate from the `fmt ` chunk.
        sample_rate: u32,
        /// Channel count from the `fmt ` chunk.
        channels: u16,
    },
}

#[derive(Debug)]
enum Mode {
    Linear16(Linear16Format),
    /// First bytes of a container stream, until the magic is known.
    Sniff(Vec<u8>),
    Webm(WebmProbe),
    Wav(Vec<u8>),
    WavDone(WavHeader),
    Failed(String),
}

/// Validates a voice's chunks as they arrive, without buffering the stream.
///
/// * With an expected [`Linear16Format`]: the format must be supported and every chunk
///   must be a whole number of frames (`2 * channels` bytes). A misaligned chunk is
///   **rejected** (not carried over to the next one), matching how reconstruction
///   decodes each chunk on its own; the probe stays usable for later chunks.
/// * Without: the stream must be WebM/Opus (EBML magic `1A 45 DF A3`) or WAV
///   (`RIFF....WAVE`). Headers are validated as soon as enough bytes have arrived:
///   at most 64 KiB is held for look-ahead (one header element), other WebM elements
///   before `Tracks` are skipped unbuffered, and `Tracks` must appear within 1 MiB.
///   After that, chunks are only counted. Once a container stream has been rejected
///   every further `feed` fails too.
#[derive(Debug)]
pub struct StreamProbe {
    mode: Mode,
    bytes: u64,
}

impl StreamProbe {
    /// A probe for a linear16 stream (`Some`) or a WebM/Opus or WAV stream (`None`).
    pub fn new(expected: Option<Linear16Format>) -> Self {
        Self {
            mode: match expected {
                Some(format) => Mode::Linear16(format),
                None => Mode::Sniff(Vec::with_capacity(12)),
            },
            bytes: 0,
        }
    }

    /// Checks the next chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), AudioError> {
        if let Mode::Linear16(format) = self.mode {
            format.validate()?;
            pcm::check_aligned(format, chunk)?;
            self.bytes += chunk.len() as u64;
            return Ok(());
        }
        if let Mode::Failed(reason) = &self.mode {
            return Err(AudioError::Unsupported(format!(
                "stream already rejected: {reason}"
            )));
        }
        self.bytes += chunk.len() as u64;
        let result = self.feed_container(chunk);
        if let Err(e) = &result {
            self.mode = Mode::Failed(e.to_string());
        }
        result
    }

    fn feed_container(&mut self, chunk: &[u8]) -> Result<(), AudioError> {
        match &mut self.mode {
            Mode::Sniff(head) => {
                head.extend_from_slice(chunk);
                let head = std::mem::take(head);
                let could_be_webm = head.iter().zip(EBML_MAGIC).all(|(a, b)| *a == b);
                let could_be_wav = head.iter().zip(b"RIFF").all(|(a, b)| a == b)
                    || head.iter().zip(b"RF64").all(|(a, b)| a == b);
                if could_be_webm && head.len() >= 4 {
                    let mut probe = WebmProbe::new();
                    probe.feed(&head)?;
                    self.mode = Mode::Webm(probe);
                } else if could_be_wav && head.len() >= 12 {
                    if !wav::looks_like_wav(&head) {
                        return Err(AudioError::UnrecognizedContainer);
                    }
                    self.mode = Mode::Wav(Vec::new());
                    return self.feed_container(&head);
                } else if could_be_webm || could_be_wav {
                    self.mode = Mode::Sniff(head);
                } else {
                    return Err(AudioError::UnrecognizedContainer);
                }
                Ok(())
            }
            Mode::Webm(probe) => probe.feed(chunk),
            Mode::Wav(buf) => {
                buf.extend_from_slice(chunk);
                if let Some(header) = wav::parse_header(buf)? {
                    self.mode = Mode::WavDone(header);
                }
                Ok(())
            }
            Mode::WavDone(_) => Ok(()),
            Mode::Linear16(_) | Mode::Failed(_) => unreachable!("handled in feed"),
        }
    }

    /// The recognised format, once known.
    pub fn detected(&self) -> Option<DetectedFormat> {
        match &self.mode {
            Mode::Linear16(f) => Some(DetectedFormat::Linear16(*f)),
            Mode::Webm(_) => Some(DetectedFormat::WebmOpus),
            Mode::WavDone(h) => Some(DetectedFormat::Wav {
                sample_rate: h.sample_rate,
                channels: h.channels,
            }),
            Mode::Sniff(_) | Mode::Wav(_) | Mode::Failed(_) => None,
        }
    }

    /// True once the headers have been fully validated (always for linear16).
    pub fn is_validated(&self) -> bool {
        match &self.mode {
            Mode::Linear16(_) | Mode::WavDone(_) => true,
            Mode::Webm(p) => p.is_done(),
            _ => false,
        }
    }

    /// Bytes currently held for look-ahead (bounded; 0 once validated).
    pub fn buffered_bytes(&self) -> usize {
        match &self.mode {
            Mode::Sniff(b) | Mode::Wav(b) => b.len(),
            Mode::Webm(p) => p.buffered(),
            _ => 0,
        }
    }

    /// Total bytes fed so far.
    pub fn bytes_seen(&self) -> u64 {
        self.bytes
    }

    /// Call at the end of the stream: fails if a container stream ended before its
    /// headers were complete (or was rejected).
    pub fn finish(&self) -> Result<Option<DetectedFormat>, AudioError> {
        match &self.mode {
            Mode::Failed(reason) => Err(AudioError::Unsupported(format!(
                "stream already rejected: {reason}"
            ))),
            Mode::Sniff(b) if b.is_empty() => Ok(None),
            Mode::Sniff(_) => Err(AudioError::UnrecognizedContainer),
            Mode::Wav(_) => Err(AudioError::InvalidWav(
                "stream ended inside the header".into(),
            )),
            Mode::Webm(p) if !p.is_done() => Err(AudioError::InvalidWebm(
                "stream ended before the Tracks element".into(),
            )),
            _ => Ok(self.detected()),
        }
    }
}
