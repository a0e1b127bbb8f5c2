//! Raw little-endian signed 16-bit PCM (`linear16`).

use crate::{AudioError, Linear16Format};

/// Checks that `chunk` holds whole frames of `format`.
pub(crate) fn check_aligned(format: Linear16Format, chunk: &[u8]) -> Result<(), AudioError> {
    let frame_bytes = format.frame_bytes();
    if chunk.len() % frame_bytes != 0 {
        return Err(AudioError::Linear16Misaligned {
            len: chunk.len(),
            frame_bytes,
            channels: format.channels,
        });
    }
    Ok(())
}

/// Decodes interleaved linear16 frames, downmixing to mono (channel mean), appending to `out`.
pub fn linear16_to_mono(
    format: Linear16Format,
    chunk: &[u8],
    out: &mut Vec<f32>,
) -> Result<(), AudioError> {
    check_aligned(format, chunk)?;
    let channels = usize::from(format.channels);
    let scale = 1.0 / (32768.0 * channels as f32);
    out.reserve(chunk.len() / format.frame_bytes());
    for frame in chunk.chunks_exact(format.frame_bytes()) {
        let sum: i32 = frame
            .chunks_exact(2)
            .map(|s| i32::from(i16::from_le_bytes([s[0], s[1]])))
            .sum();
        out.push(sum as f32 * scale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downmixes_and_rejects_partial_frames() {
        let fmt = Linear16Format {
            sample_rate: 16_000,
            channels: 2,
        };
        let mut bytes = Vec::new();
        for s in [16384i16, 0, -32768, -32768] {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        let mut out = Vec::new();
        linear16_to_mono(fmt, &bytes, &mut out).unwrap();
        assert_eq!(out, vec![0.25, -1.0]);
        assert!(matches!(
            linear16_to_mono(fmt, &bytes[..6], &mut out),
            Err(AudioError::Linear16Misaligned { len: 6, .. })
        ));
    }
}
