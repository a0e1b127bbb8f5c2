//! Mono 16-bit PCM buffers and resampling.

use colloquy_audio::StreamResampler as Resampler;

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
        let len = Resampler::output_len(input.len() as u64, self.sample_rate, rate);
        let mut out = Vec::with_capacity(len as usize);
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

/// A streaming mono resampler: colloquy-audio's [`colloquy_audio::StreamResampler`] in
/// ~10 ms blocks (its delay compensated: a sample at input time `t` comes out at output
/// time `t`).
#[derive(Debug)]
pub struct StreamResampler(colloquy_audio::StreamResampler);

impl StreamResampler {
    /// A resampler from `in_rate` to `out_rate` Hz (both non-zero).
    ///
    /// # Panics
    /// If a rate is zero.
    pub fn new(in_rate: u32, out_rate: u32) -> Self {
        assert!(in_rate > 0 && out_rate > 0, "sample rates must be non-zero");
        // About 10 ms of input per call, at least 64 frames.
        let block = (in_rate as usize / 100).max(64);
        Self(
            colloquy_audio::StreamResampler::with_rates(in_rate, out_rate, block)
                .expect("valid resampler parameters"),
        )
    }

    /// Resamples `input`, appending whatever output is ready to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.0
            .process(input, out)
            .expect("buffers sized by the resampler");
    }

    /// Flushes the tail so the total output is exactly the input's length at the new rate.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        self.0.finish(out).expect("buffers sized by the resampler");
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
    fn resample_keeps_length_and_amplitude() {
        // Timing and the resampler itself are tested in colloquy-audio.
        for (from, to) in [(22_050, 48_000), (48_000, 16_000), (8_000, 16_000)] {
            let len = from as usize / 2;
            let out = Pcm::new(tone(from, 440.0, len), from).resample(to);
            assert_eq!(out.sample_rate, to);
            assert_eq!(
                out.samples.len() as u64,
                Resampler::output_len(len as u64, from, to)
            );
            let peak = out.samples[to as usize / 8..]
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
