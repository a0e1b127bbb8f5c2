//! Mono 16-bit PCM buffers and resampling.

use rubato::{FftFixedIn, Resampler as _};

/// Mono, signed 16-bit PCM at `sample_rate` Hz.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pcm {
    /// The samples, one per frame.
    pub samples: Vec<i16>,
    /// Frames per second.
    pub sample_rate: u32,
}

impl Pcm {
    /// Wraps `samples` recorded at `sample_rate` Hz.
    pub fn new(samples: Vec<i16>, sample_rate: u32) -> Self {
        Self {
            samples,
            sample_rate,
        }
    }

    /// Length in milliseconds (rounded down).
    pub fn duration_ms(&self) -> u64 {
        if self.sample_rate == 0 {
            return 0;
        }
        self.samples.len() as u64 * 1000 / u64::from(self.sample_rate)
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Appends `other`, resampling it first if its rate differs.
    pub fn append(&mut self, other: &Pcm) {
        if self.samples.is_empty() && self.sample_rate == 0 {
            self.sample_rate = other.sample_rate;
        }
        if other.sample_rate == self.sample_rate {
            self.samples.extend_from_slice(&other.samples);
        } else {
            self.samples
                .extend_from_slice(&other.resample(self.sample_rate).samples);
        }
    }

    /// The same audio at `rate` Hz (band-limited FFT resampler, latency compensated, so
    /// the output has exactly `len * rate / sample_rate` samples, rounded).
    pub fn resample(&self, rate: u32) -> Pcm {
        if rate == self.sample_rate || self.samples.is_empty() {
            return Pcm::new(self.samples.clone(), rate);
        }
        let mut rs = StreamResampler::new(self.sample_rate, rate);
        let input: Vec<f32> = self.samples.iter().map(|&s| to_f32(s)).collect();
        let mut out =
            Vec::with_capacity(output_len(input.len() as u64, self.sample_rate, rate) as usize);
        rs.process(&input, &mut out);
        rs.finish(&mut out);
        Pcm::new(out.into_iter().map(to_i16).collect(), rate)
    }
}

/// `i16` sample to `[-1, 1)`.
pub fn to_f32(s: i16) -> f32 {
    f32::from(s) / 32768.0
}

/// `[-1, 1]` sample to `i16`, saturating.
pub fn to_i16(s: f32) -> i16 {
    (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// Output length of `in_len` samples converted from `in_rate` to `out_rate`, rounded.
pub(crate) fn output_len(in_len: u64, in_rate: u32, out_rate: u32) -> u64 {
    let num = u128::from(in_len) * u128::from(out_rate);
    ((num + u128::from(in_rate) / 2) / u128::from(in_rate)) as u64
}

/// A streaming mono resampler (rubato's synchronous FFT resampler in ~10 ms blocks, its
/// delay compensated: a sample at input time `t` comes out at output time `t`).
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
    /// A resampler from `in_rate` to `out_rate` Hz (both non-zero).
    ///
    /// # Panics
    /// If a rate is zero.
    pub fn new(in_rate: u32, out_rate: u32) -> Self {
        assert!(in_rate > 0 && out_rate > 0, "sample rates must be non-zero");
        let fft = (in_rate != out_rate).then(|| {
            // About 10 ms of input per call, at least 64 frames.
            let chunk = (in_rate as usize / 100).max(64);
            let inner = FftFixedIn::<f32>::new(in_rate as usize, out_rate as usize, chunk, 1, 1)
                .expect("valid resampler parameters");
            Box::new(Fft {
                out: inner.output_buffer_allocate(true),
                skip: inner.output_delay(),
                pending: Vec::with_capacity(chunk),
                chunk,
                inner,
            })
        });
        Self {
            in_rate,
            out_rate,
            fft,
            in_total: 0,
            out_total: 0,
        }
    }

    /// Resamples `input`, appending whatever output is ready to `out`.
    pub fn process(&mut self, mut input: &[f32], out: &mut Vec<f32>) {
        self.in_total += input.len() as u64;
        let Some(fft) = self.fft.as_mut() else {
            out.extend_from_slice(input);
            self.out_total += input.len() as u64;
            return;
        };
        while !input.is_empty() {
            let take = (fft.chunk - fft.pending.len()).min(input.len());
            fft.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if fft.pending.len() == fft.chunk {
                self.out_total += fft.run(out);
            }
        }
    }

    /// Flushes the tail so the total output is exactly the input's length at the new rate.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        let expected = output_len(self.in_total, self.in_rate, self.out_rate);
        if let Some(fft) = self.fft.as_mut() {
            let start = out.len();
            let mut produced = self.out_total;
            for _ in 0..256 {
                if produced >= expected {
                    break;
                }
                fft.pending.resize(fft.chunk, 0.0);
                produced += fft.run(out);
            }
            let excess = produced.saturating_sub(expected) as usize;
            out.truncate(out.len().saturating_sub(excess).max(start));
            self.out_total = produced - excess as u64;
        }
    }
}

impl Fft {
    fn run(&mut self, out: &mut Vec<f32>) -> u64 {
        let (_, n) = self
            .inner
            .process_into_buffer(&[&self.pending[..]], &mut self.out, None)
            .expect("buffers sized by the resampler");
        self.pending.clear();
        let skip = self.skip.min(n);
        self.skip -= skip;
        out.extend_from_slice(&self.out[0][skip..n]);
        (n - skip) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, freq: f32, len: usize) -> Vec<i16> {
        (0..len)
            .map(|i| to_i16(0.5 * (std::f32::consts::TAU * freq * i as f32 / rate as f32).sin()))
            .collect()
    }

    #[test]
    fn resample_keeps_length_timing_and_amplitude() {
        for (from, to) in [
            (22_050, 48_000),
            (48_000, 16_000),
            (44_100, 16_000),
            (8_000, 16_000),
        ] {
            let len = from as usize / 2;
            let mut samples = vec![0i16; len];
            let onset = from as usize / 4;
            samples[onset..].copy_from_slice(&tone(from, 440.0, len - onset));
            let out = Pcm::new(samples, from).resample(to);
            assert_eq!(out.sample_rate, to);
            assert_eq!(out.samples.len() as u64, output_len(len as u64, from, to));
            let first = out
                .samples
                .iter()
                .position(|s| s.unsigned_abs() > 1600)
                .unwrap();
            let expected = to as usize / 4;
            assert!(
                first.abs_diff(expected) < to as usize / 500,
                "{from}->{to}: onset {first} vs {expected}"
            );
            let peak = out.samples[to as usize * 3 / 8..]
                .iter()
                .map(|s| s.unsigned_abs())
                .max()
                .unwrap();
            assert!(
                (f32::from(peak) / 32768.0 - 0.5).abs() < 0.03,
                "{from}->{to}: peak {peak}"
            );
        }
    }

    #[test]
    fn same_rate_is_identity() {
        let pcm = Pcm::new(vec![1, 2, 3], 16_000);
        assert_eq!(pcm.resample(16_000), pcm);
        assert_eq!(pcm.duration_ms(), 0);
        assert_eq!(Pcm::new(vec![0; 1600], 16_000).duration_ms(), 100);
    }
}
