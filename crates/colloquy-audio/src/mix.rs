//! Mixing the voices on the 48 kHz output timeline, one block at a time.
//!
//! Each voice is a [`Lane`] that holds at most one decoded [`Piece`] and pulls the next
//! only when the timeline reaches it, so memory does not grow with the chat length.

use crate::decode::{Piece, Source};
use crate::{AudioError, Voice, OUTPUT_SAMPLE_RATE};

/// Frames mixed (and handed to the encoder) per step.
pub(crate) const BLOCK: usize = 2048;

/// Limiter release time: how fast the gain recovers after a peak.
const RELEASE_SECONDS: f32 = 0.05;

/// One voice on the timeline.
pub(crate) struct Lane<'a> {
    voice: Voice,
    source: Box<dyn Source + 'a>,
    current: Option<Piece>,
    exhausted: bool,
    end: u64,
}

impl<'a> Lane<'a> {
    pub fn new(voice: Voice, source: Box<dyn Source + 'a>) -> Self {
        Self {
            voice,
            source,
            current: None,
            exhausted: false,
            end: 0,
        }
    }

    /// Loads the next non-empty piece if none is held; `false` once the voice is over.
    pub fn load(&mut self) -> Result<bool, AudioError> {
        while self.current.is_none() && !self.exhausted {
            match self
                .source
                .next_piece()
                .map_err(|e| e.in_voice(self.voice))?
            {
                Some(p) if p.samples.is_empty() => {}
                Some(p) => {
                    self.end = self.end.max(p.start + p.samples.len() as u64);
                    self.current = Some(p);
                }
                None => self.exhausted = true,
            }
        }
        Ok(self.current.is_some())
    }

    /// Writes this voice's samples for `[t0, t0 + out.len())` into `out` (zeros elsewhere).
    pub fn fill(&mut self, t0: u64, out: &mut [f32]) -> Result<(), AudioError> {
        out.fill(0.0);
        let t1 = t0 + out.len() as u64;
        while self.load()? {
            let piece = self.current.as_ref().expect("loaded");
            let p_end = piece.start + piece.samples.len() as u64;
            if piece.start >= t1 {
                break;
            }
            let (from, to) = (piece.start.max(t0), p_end.min(t1));
            if from < to {
                out[(from - t0) as usize..(to - t0) as usize].copy_from_slice(
                    &piece.samples[(from - piece.start) as usize..(to - piece.start) as usize],
                );
            }
            if p_end > t1 {
                break;
            }
            self.current = None;
        }
        Ok(())
    }

    /// True once every piece has been pulled and consumed.
    pub fn finished(&self) -> bool {
        self.exhausted && self.current.is_none()
    }

    /// End of the last sample seen so far.
    pub fn end(&self) -> u64 {
        self.end
    }

    pub fn clips(&self) -> usize {
        self.source.clips()
    }
}

/// A peak limiter that is transparent unless the signal exceeds full scale.
///
/// Gain is 1.0 (bit-exact pass-through) until a sample's magnitude exceeds 1.0; the gain
/// then drops instantly to exactly what keeps that sample at full scale and recovers
/// exponentially (50 ms) afterwards. No look-ahead, so no added latency.
#[derive(Debug, Clone)]
pub(crate) struct Limiter {
    gain: f32,
    release: f32,
    /// Samples whose magnitude exceeded full scale.
    pub over: u64,
}

impl Limiter {
    pub fn new() -> Self {
        Self {
            gain: 1.0,
            release: (-1.0 / (RELEASE_SECONDS * OUTPUT_SAMPLE_RATE as f32)).exp(),
            over: 0,
        }
    }

    #[inline]
    pub fn process(&mut self, x: f32) -> f32 {
        if self.gain < 1.0 {
            self.gain = 1.0 - (1.0 - self.gain) * self.release;
            if self.gain > 0.999_9 {
                self.gain = 1.0;
            }
        }
        let magnitude = x.abs();
        if magnitude > 1.0 {
            self.over += 1;
            self.gain = self.gain.min(1.0 / magnitude);
        }
        x * self.gain
    }
}

/// Float sample in [-1, 1] to 16-bit.
#[inline]
fn quantize(x: f32) -> i16 {
    (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// What the mix produced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MixStats {
    pub frames: u64,
    pub clipped: u64,
}

/// Runs the timeline from 0 to the end of the last sample (at least `min_frames`),
/// handing interleaved 16-bit blocks to `sink`: mono = user + assistant through one
/// limiter; stereo split = user left, assistant right, each with its own limiter.
pub(crate) fn mix<'a>(
    mut user: Option<&mut Lane<'a>>,
    mut assistant: Option<&mut Lane<'a>>,
    stereo_split: bool,
    min_frames: u64,
    mut sink: impl FnMut(&[i16]) -> Result<(), AudioError>,
) -> Result<MixStats, AudioError> {
    let channels = if stereo_split { 2 } else { 1 };
    let mut ubuf = vec![0f32; BLOCK];
    let mut abuf = vec![0f32; BLOCK];
    let mut pcm = vec![0i16; BLOCK * channels];
    let mut limiters = [Limiter::new(), Limiter::new()];
    let mut t = 0u64;
    loop {
        let mut finished = true;
        let mut end = min_frames;
        for (lane, buf) in [
            (user.as_deref_mut(), &mut ubuf),
            (assistant.as_deref_mut(), &mut abuf),
        ] {
            match lane {
                Some(lane) => {
                    lane.fill(t, buf)?;
                    finished &= lane.finished();
                    end = end.max(lane.end());
                }
                None => buf.fill(0.0),
            }
        }
        let n = if finished {
            end.saturating_sub(t).min(BLOCK as u64) as usize
        } else {
            BLOCK
        };
        if n == 0 {
            break;
        }
        if stereo_split {
            let [left, right] = &mut limiters;
            for (i, frame) in pcm[..2 * n].chunks_exact_mut(2).enumerate() {
                frame[0] = quantize(left.process(ubuf[i]));
                frame[1] = quantize(right.process(abuf[i]));
            }
        } else {
            let limiter = &mut limiters[0];
            for (i, out) in pcm[..n].iter_mut().enumerate() {
                *out = quantize(limiter.process(ubuf[i] + abuf[i]));
            }
        }
        sink(&pcm[..n * channels])?;
        t += n as u64;
    }
    Ok(MixStats {
        frames: t,
        clipped: limiters[0].over + limiters[1].over,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_is_transparent_below_full_scale() {
        let mut l = Limiter::new();
        for i in 0..10_000 {
            let x = 0.999 * (i as f32 * 0.01).sin();
            assert_eq!(l.process(x), x);
        }
        assert_eq!(l.over, 0);
    }

    #[test]
    fn limiter_caps_peaks_and_recovers() {
        let mut l = Limiter::new();
        let mut peak = 0f32;
        for i in 0..4_800 {
            let x = 1.8 * (i as f32 * 0.05).sin();
            peak = peak.max(l.process(x).abs());
        }
        assert!(peak <= 1.0 && peak > 0.95, "peak {peak}");
        assert!(l.over > 0);
        // After half a second of quiet material the gain is back to exactly 1.
        for _ in 0..24_000 {
            l.process(0.1);
        }
        assert_eq!(l.process(0.5), 0.5);
    }

    struct Fixed(Vec<Piece>);
    impl Source for Fixed {
        fn next_piece(&mut self) -> Result<Option<Piece>, AudioError> {
            Ok((!self.0.is_empty()).then(|| self.0.remove(0)))
        }
        fn clips(&self) -> usize {
            0
        }
    }

    #[test]
    fn mixes_sums_and_respects_min_duration() {
        let mut user = Lane::new(
            Voice::User,
            Box::new(Fixed(vec![
                Piece {
                    start: 10,
                    samples: vec![0.25; 5000],
                },
                Piece {
                    start: 9000,
                    samples: vec![0.25; 10],
                },
            ])),
        );
        let mut asst = Lane::new(
            Voice::User,
            Box::new(Fixed(vec![Piece {
                start: 4000,
                samples: vec![0.5; 2000],
            }])),
        );
        let mut out = Vec::new();
        let stats = mix(Some(&mut user), Some(&mut asst), false, 0, |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(stats.frames, 9010);
        assert_eq!(out.len(), 9010);
        assert_eq!(
            (out[9], out[10], out[3999], out[4000]),
            (0, 8192, 8192, 24576)
        );
        assert_eq!(
            (out[5009], out[5010], out[5999], out[6000]),
            (24576, 16384, 16384, 0)
        );

        let mut user = Lane::new(
            Voice::User,
            Box::new(Fixed(vec![Piece {
                start: 0,
                samples: vec![0.25; 100],
            }])),
        );
        let mut out = Vec::new();
        let stats = mix(Some(&mut user), None, true, 5000, |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!((stats.frames, out.len()), (5000, 10_000));
        assert_eq!((out[0], out[1]), (8192, 0));
    }
}
