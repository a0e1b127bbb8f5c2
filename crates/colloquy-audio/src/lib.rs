//! Audio reconstruction for Colloquy: decode a chat's captured user and assistant audio,
//! place it on a timeline, mix it and encode one AAC-LC MP4 — streaming, with memory
//! bounded independently of the chat length.
//!
//! * Capture time: [`StreamProbe`] validates chunks cheaply; [`write_record`] appends
//!   them to a per-voice record log.
//! * Reconstruction: [`reconstruct`] reads the logs back one record at a time.
//! * Live decoding: [`InputDecoder`] turns each `audio_input` chunk into mono samples
//!   whatever its format (the pipeline engine's turn detection); [`WebmOpusStream`]
//!   decodes a WebM/Opus stream as its chunks arrive, [`WavChunkDecoder`] a WAV stream.
//! * Building blocks for other crates: [`decode_wav`] (a complete WAV file to mono) and
//!   [`StreamResampler`] (streaming band-limited resampling between any two rates).
//!
//! The default feature `reconstruct` adds [`reconstruct`] (mixing, and AAC-LC/MP4 encoding
//! with the C++ FDK AAC encoder). Without it the crate is pure Rust.
//!
//! Output is always 48 kHz AAC-LC in MP4: mono (64 kbit/s) by default, or stereo
//! (128 kbit/s) with the user on the left and the assistant on the right
//! ([`MixOptions::stereo_split`]).
//!
//! Placement rules (all positions are in 48 kHz samples from the chat start):
//! * linear16 chunks and assistant WAV clips play back-to-back after the previous chunk
//!   of the same voice, unless a chunk arrives more than [`MixOptions::gap_tolerance_ms`]
//!   after that end; then silence fills the gap and the chunk starts at its arrival
//!   offset. Bursts (faster than real time) therefore queue up, never overlap.
//! * WebM/Opus: each packet at (arrival of the stream's first chunk + block timestamp −
//!   codec delay); a packet never starts before the previous one ended.
//! * WAV stream: one clip starting at the first chunk's arrival offset.

// Lets the unit tests include the integration tests' helpers (`tests/common`).
#[cfg(test)]
extern crate self as colloquy_audio;

// Without `reconstruct`, the record-log sources that feed the mixer are unused.
#[cfg_attr(not(feature = "reconstruct"), allow(dead_code))]
mod decode;
#[cfg(feature = "reconstruct")]
mod encode;
mod error;
#[cfg(feature = "reconstruct")]
mod mix;
mod probe;
mod record;
mod resample;

use std::io::Read;
#[cfg(feature = "reconstruct")]
use std::io::{Seek, Write};
use std::path::PathBuf;

pub use decode::input::{InputDecoder, MonoChunk};
pub use decode::pcm::linear16_to_mono;
pub use decode::wav::{decode_wav, WavChunkDecoder};
pub use decode::webm::EBML_MAGIC;
pub use decode::webm_stream::WebmOpusStream;
pub use error::{AudioError, Voice};
pub use probe::{DetectedFormat, StreamProbe};
pub use record::{write_record, RecordReader, MAX_RECORD_LEN};
pub use resample::StreamResampler;

/// The output sample rate (Hz); every input is resampled to it.
pub const OUTPUT_SAMPLE_RATE: u32 = 48_000;
/// Lowest accepted input sample rate (Hz).
pub const MIN_SAMPLE_RATE: u32 = 8_000;
/// Highest accepted input sample rate (Hz).
pub const MAX_SAMPLE_RATE: u32 = 192_000;
/// Most input channels accepted (they are downmixed).
pub const MAX_CHANNELS: u16 = 8;
/// Offsets and durations beyond this (24 h) are rejected as corrupt.
pub const MAX_TIMELINE_MS: u64 = 24 * 60 * 60 * 1000;
/// Default for [`MixOptions::gap_tolerance_ms`].
pub const DEFAULT_GAP_TOLERANCE_MS: u32 = 250;

pub(crate) const SAMPLES_PER_MS: u64 = OUTPUT_SAMPLE_RATE as u64 / 1000;

/// Raw little-endian signed 16-bit interleaved PCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Linear16Format {
    /// Frames per second, 8 000–192 000.
    pub sample_rate: u32,
    /// Interleaved channels, 1–8.
    pub channels: u16,
}

impl Linear16Format {
    /// Checks the rate and channel count are supported.
    pub fn validate(&self) -> Result<(), AudioError> {
        if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&self.sample_rate) {
            return Err(AudioError::Unsupported(format!(
                "linear16 sample rate {} Hz ({MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE})",
                self.sample_rate
            )));
        }
        if self.channels == 0 || self.channels > MAX_CHANNELS {
            return Err(AudioError::Unsupported(format!(
                "linear16 with {} channels (1..={MAX_CHANNELS})",
                self.channels
            )));
        }
        Ok(())
    }

    /// Bytes per interleaved frame.
    pub fn frame_bytes(&self) -> usize {
        2 * usize::from(self.channels)
    }
}

/// How a voice's records are encoded. Stored beside the records as JSON (the voice's
/// `format.json`): `{"format":"linear16","sample_rate":16000,"channels":1}`,
/// `{"format":"container"}` or `{"format":"wav_clips"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum VoiceFormat {
    /// Every record is raw linear16 in this format.
    Linear16(Linear16Format),
    /// The records concatenate to one WebM/Opus or WAV stream (detected from its first
    /// bytes), split at arbitrary points.
    Container,
    /// Every record is one complete WAV file (e.g. an EVI `audio_output` chunk).
    WavClips,
}

/// One voice's captured audio: a record log (see [`write_record`]) and its format.
#[derive(Debug)]
pub struct VoiceInput<R: Read> {
    /// How the records are encoded.
    pub format: VoiceFormat,
    /// The record log, read sequentially one record at a time.
    pub records: R,
}

/// Mixing options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixOptions {
    /// Stereo output with the user on the left and the assistant on the right
    /// (otherwise mono, both voices summed).
    pub stereo_split: bool,
    /// A chunk arriving more than this after the previous chunk's end starts a new clip
    /// at its arrival time instead of playing back-to-back.
    pub gap_tolerance_ms: u32,
    /// Minimum output duration (e.g. the chat's duration); the output lasts until the
    /// last sample or this, whichever is longer.
    pub min_duration_ms: Option<u64>,
    /// Where container streams are spooled (anonymous temp files); system default if `None`.
    pub temp_dir: Option<PathBuf>,
}

impl Default for MixOptions {
    fn default() -> Self {
        Self {
            stereo_split: false,
            gap_tolerance_ms: DEFAULT_GAP_TOLERANCE_MS,
            min_duration_ms: None,
            temp_dir: None,
        }
    }
}

/// What [`reconstruct`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Output duration in milliseconds (rounded).
    pub duration_ms: u64,
    /// Output duration in 48 kHz frames.
    pub frames: u64,
    /// Output channels (1, or 2 with `stereo_split`).
    pub channels: u16,
    /// Contiguous user clips placed on the timeline.
    pub user_clips: usize,
    /// Contiguous assistant clips placed on the timeline.
    pub assistant_clips: usize,
    /// Output samples (per channel) whose mix exceeded full scale and were limited.
    pub samples_clipped: u64,
}

/// Decodes, places, mixes and encodes the voices into one AAC-LC MP4 written to `out`.
///
/// Either voice may be absent (`None::<VoiceInput<std::io::Empty>>`). Errors about one
/// voice's input are wrapped in [`AudioError::InVoice`]; if neither voice yields any
/// audio the result is [`AudioError::NoAudio`] and nothing is written to `out`.
#[cfg(feature = "reconstruct")]
pub fn reconstruct<W: Write + Seek>(
    user: Option<VoiceInput<impl Read>>,
    assistant: Option<VoiceInput<impl Read>>,
    opts: &MixOptions,
    out: W,
) -> Result<Summary, AudioError> {
    let min_ms = opts.min_duration_ms.unwrap_or(0);
    if min_ms > MAX_TIMELINE_MS {
        return Err(AudioError::TimelineTooLong {
            ms: min_ms,
            max_ms: MAX_TIMELINE_MS,
        });
    }
    let mut user = open_lane(Voice::User, user, opts)?;
    let mut assistant = open_lane(Voice::Assistant, assistant, opts)?;
    let mut has_audio = false;
    for lane in [user.as_mut(), assistant.as_mut()].into_iter().flatten() {
        has_audio |= lane.load()?;
    }
    if !has_audio {
        return Err(AudioError::NoAudio);
    }

    let channels = if opts.stereo_split { 2 } else { 1 };
    let mut writer = encode::AacMp4Writer::new(out, channels)?;
    let stats = mix::mix(
        user.as_mut(),
        assistant.as_mut(),
        opts.stereo_split,
        min_ms * SAMPLES_PER_MS,
        |pcm| writer.write(pcm),
    )?;
    writer.finish()?;
    Ok(Summary {
        duration_ms: (stats.frames + SAMPLES_PER_MS / 2) / SAMPLES_PER_MS,
        frames: stats.frames,
        channels,
        user_clips: user.as_ref().map_or(0, mix::Lane::clips),
        assistant_clips: assistant.as_ref().map_or(0, mix::Lane::clips),
        samples_clipped: stats.clipped,
    })
}

#[cfg(feature = "reconstruct")]
fn open_lane<'a, R: Read + 'a>(
    voice: Voice,
    input: Option<VoiceInput<R>>,
    opts: &MixOptions,
) -> Result<Option<mix::Lane<'a>>, AudioError> {
    input
        .map(|input| {
            decode::open_source(input, opts)
                .map(|source| mix::Lane::new(voice, source))
                .map_err(|e| e.in_voice(voice))
        })
        .transpose()
}
