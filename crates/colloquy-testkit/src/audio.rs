//! Test signals: sine tones as 16-bit PCM and the WAV file around them.

/// The query of a chat socket that sends 16 kHz mono linear16 `audio_input`.
pub const LINEAR16_16K_MONO: &str = "session_settings[audio][encoding]=linear16\
     &session_settings[audio][sample_rate]=16000&session_settings[audio][channels]=1";

/// `ms` of a sine tone at half of full scale as 16-bit little-endian mono PCM.
pub fn tone(freq: f64, rate: u32, ms: u32) -> Vec<u8> {
    let n = rate as usize * ms as usize / 1000;
    (0..n)
        .flat_map(|i| {
            let v = (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() * 0.5;
            ((v * i16::MAX as f64) as i16).to_le_bytes()
        })
        .collect()
}

/// A mono 16-bit WAV file around `pcm`.
pub fn wav(pcm: &[u8], rate: u32) -> Vec<u8> {
    let mut w = Vec::with_capacity(44 + pcm.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    w.extend_from_slice(pcm);
    w
}
