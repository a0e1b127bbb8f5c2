//! Turn detection: speech start / speech end over a stream of PCM.
//!
//! [`TurnDetector`] scores 16 ms frames at 16 kHz with [earshot](https://docs.rs/earshot)
//! (a small neural voice-activity detector in pure Rust; input at other rates is resampled
//! first) and turns the per-frame decisions into turns:
//!
//! * **Start**: once frames scoring at least [`VadConfig::threshold`] add up to
//!   [`VadConfig::min_speech_ms`] (gaps shorter than [`VadConfig::start_gap_ms`] between
//!   them are tolerated), a [`VadEvent::SpeechStart`] reports when the first of them began.
//!   Short clicks and coughs therefore never start a turn.
//! * **End**: after [`VadConfig::hangover_ms`] without a voiced frame (frames quieter than
//!   about −60 dBFS never count as voiced, whatever the model scores), a
//!   [`VadEvent::SpeechEnd`] carries the utterance's audio (16 kHz, from
//!   [`VadConfig::pre_roll_ms`] before the start to a short tail after the last voiced
//!   frame), ready for a transcription service. An utterance is also cut at
//!   [`VadConfig::max_utterance_ms`].
//!
//! All times are milliseconds of audio since the detector was created (stream time, not
//! wall-clock time), so they are deterministic in tests.

use std::collections::VecDeque;

use crate::pcm::{to_f32, to_i16, Pcm, StreamResampler};

/// The rate the detector works at.
pub const VAD_SAMPLE_RATE: u32 = 16_000;
/// Samples per detector frame (16 ms at 16 kHz).
pub const FRAME_SAMPLES: usize = 256;
const FRAME_MS: u64 = 16;
/// Audio kept after the last voiced frame in [`VadEvent::SpeechEnd::audio`].
const TAIL_MS: u64 = 160;
/// RMS below which a frame is silence whatever the model scores it (≈ −60 dBFS). The
/// model's recurrent state makes it score the first 80–100 ms of true silence after speech
/// as voiced, which would add that much to every turn's end; audio this quiet (digital
/// silence, noise-suppressed microphones) is never speech. Above the floor the model
/// decides alone.
const SILENCE_FLOOR_RMS: i64 = 33;

/// Turn-detection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VadConfig {
    /// Frame score (0–1) from which a frame counts as speech.
    pub threshold: f32,
    /// Voiced audio needed before a turn starts.
    pub min_speech_ms: u32,
    /// Largest gap between voiced frames while a start is still being confirmed.
    pub start_gap_ms: u32,
    /// Silence after the last voiced frame that ends the turn.
    pub hangover_ms: u32,
    /// Audio before the detected start kept in the utterance.
    pub pre_roll_ms: u32,
    /// Longest utterance; a longer one ends here (and a new one starts if speech goes on).
    pub max_utterance_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            min_speech_ms: 160,
            start_gap_ms: 240,
            hangover_ms: 600,
            pre_roll_ms: 300,
            max_utterance_ms: 60_000,
        }
    }
}

/// What the detector noticed.
#[derive(Debug, Clone, PartialEq)]
pub enum VadEvent {
    /// The user started speaking at `at_ms` (stream time). Reported `min_speech_ms` or so
    /// later, when the start is confirmed.
    SpeechStart {
        /// When the first voiced frame began.
        at_ms: u64,
    },
    /// The user stopped speaking.
    SpeechEnd {
        /// When the turn's first voiced frame began (as in `SpeechStart`).
        start_ms: u64,
        /// When the last voiced frame ended. The event itself comes `hangover_ms` later.
        end_ms: u64,
        /// The utterance at 16 kHz, including pre-roll and a short tail.
        audio: Pcm,
    },
}

enum State {
    Idle {
        /// First voiced frame of a start being confirmed, and voiced frames seen since.
        candidate: Option<(u64, u32)>,
    },
    Speaking {
        start_frame: u64,
        /// Frame index of `utterance[0]`.
        audio_start_frame: u64,
        utterance: Vec<i16>,
    },
}

/// Streaming turn detector. Create one per audio stream (user), feed it every chunk with
/// [`push`](Self::push), and call [`finish`](Self::finish) when the stream ends.
pub struct TurnDetector {
    config: VadConfig,
    detector: Box<earshot::Detector>,
    resampler: Option<StreamResampler>,
    resampled: Vec<f32>,
    pending: Vec<i16>,
    /// Index of the next frame to be scored.
    frame: u64,
    last_voiced: u64,
    /// Recent frames while idle (for the pre-roll and the start being confirmed).
    recent: VecDeque<[i16; FRAME_SAMPLES]>,
    state: State,
}

impl std::fmt::Debug for TurnDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnDetector")
            .field("config", &self.config)
            .field("frame", &self.frame)
            .field("speaking", &self.is_speaking())
            .finish_non_exhaustive()
    }
}

impl TurnDetector {
    /// A detector for mono 16-bit audio at `input_rate` Hz (any rate; 16 kHz avoids
    /// resampling).
    ///
    /// # Panics
    /// If `input_rate` is zero.
    pub fn new(config: VadConfig, input_rate: u32) -> Self {
        assert!(input_rate > 0, "input rate must be non-zero");
        Self {
            config,
            detector: earshot::Detector::default_boxed(),
            resampler: (input_rate != VAD_SAMPLE_RATE)
                .then(|| StreamResampler::new(input_rate, VAD_SAMPLE_RATE)),
            resampled: Vec::new(),
            pending: Vec::with_capacity(FRAME_SAMPLES),
            frame: 0,
            last_voiced: 0,
            recent: VecDeque::new(),
            state: State::Idle { candidate: None },
        }
    }

    /// The settings.
    pub fn config(&self) -> &VadConfig {
        &self.config
    }

    /// True between a `SpeechStart` and its `SpeechEnd`.
    pub fn is_speaking(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    /// Stream time processed so far, in milliseconds.
    pub fn position_ms(&self) -> u64 {
        self.frame * FRAME_MS
    }

    /// Feeds mono samples at the input rate; returns what was detected, in order.
    pub fn push(&mut self, samples: &[i16]) -> Vec<VadEvent> {
        let mut events = Vec::new();
        if let Some(rs) = self.resampler.as_mut() {
            let input: Vec<f32> = samples.iter().map(|&s| to_f32(s)).collect();
            self.resampled.clear();
            rs.process(&input, &mut self.resampled);
            let converted: Vec<i16> = self.resampled.iter().map(|&s| to_i16(s)).collect();
            self.push_16k(&converted, &mut events);
        } else {
            self.push_16k(samples, &mut events);
        }
        events
    }

    /// Ends the stream: a turn in progress ends now (with what was heard so far).
    pub fn finish(&mut self) -> Vec<VadEvent> {
        let mut events = Vec::new();
        if let Some(rs) = self.resampler.as_mut() {
            self.resampled.clear();
            rs.finish(&mut self.resampled);
            let converted: Vec<i16> = self.resampled.iter().map(|&s| to_i16(s)).collect();
            self.push_16k(&converted, &mut events);
        }
        if self.is_speaking() {
            events.push(self.end_turn());
        }
        events
    }

    fn push_16k(&mut self, mut samples: &[i16], events: &mut Vec<VadEvent>) {
        while !samples.is_empty() {
            let take = (FRAME_SAMPLES - self.pending.len()).min(samples.len());
            self.pending.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.pending.len() == FRAME_SAMPLES {
                let mut frame = [0i16; FRAME_SAMPLES];
                frame.copy_from_slice(&self.pending);
                self.pending.clear();
                if let Some(event) = self.process_frame(frame) {
                    events.push(event);
                }
            }
        }
    }

    fn ms_to_frames(ms: u32) -> u64 {
        u64::from(ms).div_ceil(FRAME_MS)
    }

    fn process_frame(&mut self, frame: [i16; FRAME_SAMPLES]) -> Option<VadEvent> {
        let index = self.frame;
        self.frame += 1;
        // The model sees every frame, quiet ones too, so that its state follows the audio.
        let score = self.detector.predict_i16(&frame);
        let energy: i64 = frame.iter().map(|&x| i64::from(x) * i64::from(x)).sum();
        let audible = energy >= SILENCE_FLOOR_RMS * SILENCE_FLOOR_RMS * FRAME_SAMPLES as i64;
        let voiced = audible && score >= self.config.threshold;
        if voiced {
            self.last_voiced = index;
        }
        let cfg = &self.config;
        match &mut self.state {
            State::Idle { candidate } => {
                let keep =
                    Self::ms_to_frames(cfg.pre_roll_ms + cfg.min_speech_ms + cfg.start_gap_ms) + 1;
                self.recent.push_back(frame);
                while self.recent.len() as u64 > keep {
                    self.recent.pop_front();
                }
                if voiced {
                    let (start, count) = candidate.get_or_insert((index, 0));
                    *count += 1;
                    let start = *start;
                    if u64::from(*count) * FRAME_MS >= u64::from(cfg.min_speech_ms) {
                        // Confirmed: the utterance starts pre_roll before the first voiced frame.
                        let first_kept = index + 1 - self.recent.len() as u64;
                        let audio_start = start
                            .saturating_sub(Self::ms_to_frames(cfg.pre_roll_ms))
                            .max(first_kept);
                        let mut utterance = Vec::new();
                        for (i, f) in self.recent.iter().enumerate() {
                            if first_kept + i as u64 >= audio_start {
                                utterance.extend_from_slice(f);
                            }
                        }
                        self.recent.clear();
                        self.state = State::Speaking {
                            start_frame: start,
                            audio_start_frame: audio_start,
                            utterance,
                        };
                        return Some(VadEvent::SpeechStart {
                            at_ms: start * FRAME_MS,
                        });
                    }
                } else if candidate.is_some()
                    && (index - self.last_voiced) * FRAME_MS > u64::from(cfg.start_gap_ms)
                {
                    *candidate = None;
                }
                None
            }
            State::Speaking {
                start_frame,
                utterance,
                ..
            } => {
                utterance.extend_from_slice(&frame);
                let silent_ms = (index - self.last_voiced) * FRAME_MS;
                let length_ms = (index + 1 - *start_frame) * FRAME_MS;
                if silent_ms >= u64::from(cfg.hangover_ms)
                    || length_ms >= u64::from(cfg.max_utterance_ms)
                {
                    Some(self.end_turn())
                } else {
                    None
                }
            }
        }
    }

    fn end_turn(&mut self) -> VadEvent {
        let state = std::mem::replace(&mut self.state, State::Idle { candidate: None });
        let State::Speaking {
            start_frame,
            audio_start_frame,
            mut utterance,
        } = state
        else {
            unreachable!("end_turn only while speaking");
        };
        let end_frame = (self.last_voiced + 1).max(start_frame + 1);
        let keep_until = end_frame + Self::ms_to_frames(TAIL_MS as u32);
        let keep_samples = (keep_until.saturating_sub(audio_start_frame)) as usize * FRAME_SAMPLES;
        utterance.truncate(keep_samples);
        VadEvent::SpeechEnd {
            start_ms: start_frame * FRAME_MS,
            end_ms: end_frame * FRAME_MS,
            audio: Pcm::new(utterance, VAD_SAMPLE_RATE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_and_noise_start_nothing() {
        let mut vad = TurnDetector::new(VadConfig::default(), 16_000);
        assert!(vad.push(&vec![0; 16_000 * 3]).is_empty());
        // Deterministic white noise at -20 dBFS.
        let mut x: u32 = 12345;
        let noise: Vec<i16> = (0..16_000 * 3)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((x >> 16) as i16) / 10
            })
            .collect();
        let events = vad.push(&noise);
        assert!(events.is_empty(), "{events:?}");
        assert!(vad.finish().is_empty());
        assert_eq!(vad.position_ms(), 6000 / 16 * 16);
    }
}
