//! Streaming conversion of one mono signal to the 48 kHz output rate.
//!
//! Uses rubato's `FftFixedIn`: a synchronous FFT resampler (band-limited, with an
//! anti-aliasing filter when downsampling) that is exact for any integer rate ratio,
//! fast, and needs only a few KiB of state. Its latency is compensated (the first
//! `output_delay()` output samples are dropped and the tail is flushed), so a sample at
//! input time `t` lands at output time `t`. 48 kHz input passes through untouched.

use rubato::{FftFixedIn, Resampler};

use crate::{AudioError, OUTPUT_SAMPLE_RATE};

/// Input frames per resampler call.
const CHUNK: usize = 1024;

/// A stateful resampler for one contiguous run of audio.
pub(crate) struct StreamResampler {
    in_rate: u32,
    fft: Option<Box<Fft>>,
    in_total: u64,
    out_total: u64,
}

struct Fft {
    inner: FftFixedIn<f32>,
    pending: Vec<f32>,
    out: Vec<Vec<f32>>,
    skip: usize,
}

impl StreamResampler {
    pub fn new(in_rate: u32) -> Result<Self, AudioError> {
        let fft = if in_rate == OUTPUT_SAMPLE_RATE {
            None
        } else {
            let inner =
                FftFixedIn::<f32>::new(in_rate as usize, OUTPUT_SAMPLE_RATE as usize, CHUNK, 1, 1)
                    .map_err(|e| AudioError::Resample(e.to_string()))?;
            Some(Box::new(Fft {
                out: inner.output_buffer_allocate(true),
                skip: inner.output_delay(),
                pending: Vec::with_capacity(CHUNK),
                inner,
            }))
        };
        Ok(Self {
            in_rate,
            fft,
            in_total: 0,
            out_total: 0,
        })
    }

    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    /// Output samples this run will have produced once finished.
    pub fn expected_output(&self) -> u64 {
        output_len(self.in_total, self.in_rate)
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
            let take = (CHUNK - fft.pending.len()).min(input.len());
            fft.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if fft.pending.len() == CHUNK {
                self.out_total += fft.run(out)?;
            }
        }
        Ok(())
    }

    /// Flushes the tail so the run's output is exactly `in_len * 48000 / in_rate` samples.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let expected = self.expected_output();
        if let Some(fft) = self.fft.as_mut() {
            let start = out.len();
            let mut produced = self.out_total;
            // Each zero-padded call pushes at least one FFT block out; bounded for safety.
            for _ in 0..64 {
                if produced >= expected {
                    break;
                }
                fft.pending.resize(CHUNK, 0.0);
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

/// Output length (at 48 kHz) of `in_len` samples at `in_rate`, rounded to nearest.
pub(crate) fn output_len(in_len: u64, in_rate: u32) -> u64 {
    let num = u128::from(in_len) * u128::from(OUTPUT_SAMPLE_RATE);
    ((num + u128::from(in_rate) / 2) / u128::from(in_rate)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, freq: f32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| 0.5 * (std::f32::consts::TAU * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn exact_length_and_alignment() {
        for rate in [
            8_000, 16_000, 22_050, 24_000, 44_100, 96_000, 192_000, 48_000,
        ] {
            let len = rate as usize / 2 + 17;
            // Silence, then a step at a known time: the onset must stay in place.
            let onset_in = rate as usize / 4;
            let mut input = vec![0.0; len];
            input[onset_in..]
                .iter_mut()
                .zip(tone(rate, 1000.0, len))
                .for_each(|(s, t)| *s = t);
            let mut rs = StreamResampler::new(rate).unwrap();
            let mut out = Vec::new();
            for piece in input.chunks(333) {
                rs.process(piece, &mut out).unwrap();
            }
            rs.finish(&mut out).unwrap();
            assert_eq!(
                out.len() as u64,
                output_len(len as u64, rate),
                "rate {rate}"
            );
            let onset_out = out.iter().position(|s| s.abs() > 0.05).unwrap();
            let expected = 12_000; // 250 ms
            assert!(
                onset_out.abs_diff(expected) < 48,
                "rate {rate}: onset {onset_out} vs {expected}"
            );
            // Amplitude preserved in the steady state.
            let peak = out[18_000..20_000].iter().fold(0f32, |m, s| m.max(s.abs()));
            assert!((peak - 0.5).abs() < 0.02, "rate {rate}: peak {peak}");
        }
    }
}
