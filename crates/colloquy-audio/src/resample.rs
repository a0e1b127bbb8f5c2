//! Streaming conversion of one mono signal to another sample rate (reconstruction: to the
//! 48 kHz output rate; colloquy-speech: to the voice activity detector's and the
//! clients' rates).
//!
//! Uses rubato's `FftFixedIn`: a synchronous FFT resampler (band-limited, with an
//! anti-aliasing filter when downsampling) that is exact for any integer rate ratio,
//! fast, and needs only a few KiB of state. Its latency is compensated (the first
//! `output_delay()` output samples are dropped and the tail is flushed), so a sample at
//! input time `t` lands at output time `t`. Input already at the output rate passes
//! through untouched.

use rubato::{FftFixedIn, Resampler};

use crate::{AudioError, OUTPUT_SAMPLE_RATE};

/// Input frames per resampler call for reconstruction ([`StreamResampler::new`]).
const CHUNK: usize = 1024;

/// Zero-padded blocks [`StreamResampler::finish`] runs at most to flush the tail (it needs
/// only as many as cover the resampler's delay; this bound is for safety).
const MAX_FLUSH_BLOCKS: usize = 256;

/// A stateful mono resampler for one contiguous run of audio.
pub struct StreamResampler {
    in_rate: u32,
    out_rate: u32,
    fft: Option<Box<Fft>>,
    in_total: u64,
    out_total: u64,
}

struct Fft {
    inner: FftFixedIn<f32>,
    chunk: usize,
    pending: Vec<f32>,
    out: Vec<Vec<f32>>,
    skip: usize,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("in_rate", &self.in_rate)
            .field("out_rate", &self.out_rate)
            .finish_non_exhaustive()
    }
}

impl StreamResampler {
    /// A resampler from `in_rate` to [`OUTPUT_SAMPLE_RATE`] in blocks of 1024 input frames
    /// (what reconstruction uses).
    pub fn new(in_rate: u32) -> Result<Self, AudioError> {
        Self::with_rates(in_rate, OUTPUT_SAMPLE_RATE, CHUNK)
    }

    /// A resampler from `in_rate` to `out_rate` Hz that converts `block` input frames at a
    /// time: output appears once a whole block is in, so smaller blocks mean less latency.
    /// The block size also sets the FFT size, hence the filter.
    ///
    /// Errors if a rate or `block` is zero.
    pub fn with_rates(in_rate: u32, out_rate: u32, block: usize) -> Result<Self, AudioError> {
        if in_rate == 0 || out_rate == 0 || block == 0 {
            return Err(AudioError::Resample(format!(
                "cannot resample {in_rate} Hz to {out_rate} Hz in blocks of {block} frames"
            )));
        }
        let fft = if in_rate == out_rate {
            None
        } else {
            let inner = FftFixedIn::<f32>::new(in_rate as usize, out_rate as usize, block, 1, 1)
                .map_err(|e| AudioError::Resample(e.to_string()))?;
            Some(Box::new(Fft {
                out: inner.output_buffer_allocate(true),
                skip: inner.output_delay(),
                pending: Vec::with_capacity(block),
                chunk: block,
                inner,
            }))
        };
        Ok(Self {
            in_rate,
            out_rate,
            fft,
            in_total: 0,
            out_total: 0,
        })
    }

    /// The input rate (Hz).
    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    /// The output rate (Hz).
    pub fn out_rate(&self) -> u32 {
        self.out_rate
    }

    /// Output samples this run will have produced once finished.
    pub fn expected_output(&self) -> u64 {
        Self::output_len(self.in_total, self.in_rate, self.out_rate)
    }

    /// Output length of `in_len` samples converted from `in_rate` to `out_rate` (rounded to
    /// nearest): what a finished run produces.
    pub fn output_len(in_len: u64, in_rate: u32, out_rate: u32) -> u64 {
        let num = u128::from(in_len) * u128::from(out_rate);
        ((num + u128::from(in_rate) / 2) / u128::from(in_rate)) as u64
    }

    /// Resamples `input`, appending whatever output is ready to `out`.
    pub fn process(&mut self, mut input: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.in_total += input.len() as u64;
        let Some(fft) = self.fft.as_mut() else {
            out.extend_from_slice(input);
            self.out_total += input.len() as u64;
            return Ok(());
        };
        while !input.is_empty() {
            let take = (fft.chunk - fft.pending.len()).min(input.len());
            fft.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if fft.pending.len() == fft.chunk {
                self.out_total += fft.run(out)?;
            }
        }
        Ok(())
    }

    /// Flushes the tail so the run's output is exactly [`Self::expected_output`] samples.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let expected = self.expected_output();
        if let Some(fft) = self.fft.as_mut() {
            let start = out.len();
            let mut produced = self.out_total;
            // Each zero-padded call pushes at least one FFT block out.
            for _ in 0..MAX_FLUSH_BLOCKS {
                if produced >= expected {
                    break;
                }
                fft.pending.resize(fft.chunk, 0.0);
                produced += fft.run(out)?;
            }
            let excess = produced.saturating_sub(expected) as usize;
            out.truncate(out.len().saturating_sub(excess).max(start));
            self.out_total = produced - excess as u64;
        }
        Ok(())
    }
}

impl Fft {
    /// Processes one full `pending` chunk; returns the number of samples appended.
    fn run(&mut self, out: &mut Vec<f32>) -> Result<u64, AudioError> {
        let (_, n) = self
            .inner
            .process_into_buffer(&[&self.pending[..]], &mut self.out, None)
            .map_err(|e| AudioError::Resample(e.to_string()))?;
        self.pending.clear();
        let skip = self.skip.min(n);
        self.skip -= skip;
        out.extend_from_slice(&self.out[0][skip..n]);
        Ok((n - skip) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, freq: f32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| 0.5 * (std::f32::consts::TAU * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    /// Half a second: silence, then a tone from 250 ms, fed in uneven pieces.
    fn check(mut rs: StreamResampler) {
        let (rate, out_rate) = (rs.in_rate(), rs.out_rate());
        let len = rate as usize / 2 + 17;
        // The onset must stay in place.
        let onset_in = rate as usize / 4;
        let mut input = vec![0.0; len];
        input[onset_in..]
            .iter_mut()
            .zip(tone(rate, 1000.0, len))
            .for_each(|(s, t)| *s = t);
        let mut out = Vec::new();
        for piece in input.chunks(333) {
            rs.process(piece, &mut out).unwrap();
        }
        rs.finish(&mut out).unwrap();
        let case = format!("{rate} -> {out_rate} Hz");
        assert_eq!(
            out.len() as u64,
            StreamResampler::output_len(len as u64, rate, out_rate),
            "{case}"
        );
        let onset_out = out.iter().position(|s| s.abs() > 0.05).unwrap();
        let expected = out_rate as usize / 4;
        assert!(
            onset_out.abs_diff(expected) < out_rate as usize / 1000,
            "{case}: onset {onset_out} vs {expected}"
        );
        // Amplitude preserved in the steady state (375 to 417 ms).
        let steady = &out[out_rate as usize * 3 / 8..out_rate as usize * 5 / 12];
        let peak = steady.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!((peak - 0.5).abs() < 0.02, "{case}: peak {peak}");
    }

    #[test]
    fn exact_length_and_alignment_to_the_output_rate() {
        for rate in [
            8_000, 16_000, 22_050, 24_000, 44_100, 96_000, 192_000, 48_000,
        ] {
            check(StreamResampler::new(rate).unwrap());
        }
    }

    #[test]
    fn exact_length_and_alignment_between_any_rates_in_small_blocks() {
        // colloquy-speech's cases: 10 ms blocks, up and down.
        for (from, to) in [
            (22_050, 48_000),
            (48_000, 16_000),
            (44_100, 16_000),
            (8_000, 16_000),
            (16_000, 16_000),
        ] {
            check(StreamResampler::with_rates(from, to, (from as usize / 100).max(64)).unwrap());
        }
        assert!(StreamResampler::with_rates(0, 16_000, 64).is_err());
        assert!(StreamResampler::with_rates(16_000, 48_000, 0).is_err());
    }
}
