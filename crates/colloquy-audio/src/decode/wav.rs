//! WAV (RIFF/WAVE) parsing: header validation and sample conversion.
//!
//! Supports PCM 8/16/24/32-bit integer and 32/64-bit IEEE float, plain or
//! `WAVE_FORMAT_EXTENSIBLE`, 1–8 channels, 8–192 kHz. Streamed WAVs often carry
//! placeholder sizes (`0` or `0xFFFFFFFF`); the data then runs to the end of the input.

use std::io::Read;

use crate::record::read_full;
use crate::{AudioError, MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};

/// Most header bytes (everything before the sample data) we are willing to buffer.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Sample encoding of a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
}

impl Encoding {
    fn bytes(self) -> usize {
        match self {
            Encoding::U8 => 1,
            Encoding::I16 => 2,
            Encoding::I24 => 3,
            Encoding::I32 | Encoding::F32 => 4,
            Encoding::F64 => 8,
        }
    }

    fn sample(self, b: &[u8]) -> f32 {
        match self {
            Encoding::U8 => (f32::from(b[0]) - 128.0) / 128.0,
            Encoding::I16 => f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0,
            Encoding::I24 => (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0,
            Encoding::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0,
            Encoding::F32 => sanitize(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Encoding::F64 => {
                sanitize(f64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as f32)
            }
        }
    }
}

/// NaN/inf in float WAVs become silence / full scale instead of poisoning the mix.
fn sanitize(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(-1.0, 1.0)
    }
}

/// A validated WAV header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WavHeader {
    pub sample_rate: u32,
    pub channels: u16,
    pub encoding: Encoding,
    /// Offset of the first sample byte.
    pub data_offset: usize,
    /// Declared data length, `None` when it is a streaming placeholder.
    pub data_len: Option<u64>,
}

impl WavHeader {
    pub fn frame_bytes(&self) -> usize {
        self.encoding.bytes() * usize::from(self.channels)
    }

    /// Converts whole frames of `data` to mono (channel mean), appending to `out`.
    /// A trailing partial frame is ignored.
    pub fn decode_mono(&self, data: &[u8], out: &mut Vec<f32>) {
        let width = self.encoding.bytes();
        let inv = 1.0 / f32::from(self.channels);
        out.reserve(data.len() / self.frame_bytes());
        for frame in data.chunks_exact(self.frame_bytes()) {
            let sum: f32 = frame
                .chunks_exact(width)
                .map(|s| self.encoding.sample(s))
                .sum();
            out.push(sum * inv);
        }
    }
}

/// Decodes a WAV stream as its bytes arrive in chunks split anywhere: the header (buffered,
/// at most [`MAX_HEADER_BYTES`]), then whole frames of the declared data, to mono at the
/// stream's own rate; a frame cut in two is completed by the next chunk. Bytes past a
/// declared data length are ignored.
#[derive(Debug, Default)]
pub struct WavChunkDecoder {
    header: Option<WavHeader>,
    /// Header bytes before the header is complete; afterwards, the start of a frame.
    pending: Vec<u8>,
    /// Data bytes still expected (`None`: to the end of the stream).
    remaining: Option<u64>,
}

impl WavChunkDecoder {
    /// A stream before its first byte.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream's sample rate, once its header has been read.
    pub fn sample_rate(&self) -> Option<u32> {
        self.header.map(|h| h.sample_rate)
    }

    /// Feeds the next chunk, appending the mono samples it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.pending.extend_from_slice(chunk);
        let header = match self.header {
            Some(h) => h,
            None => {
                let Some(h) = parse_header(&self.pending)? else {
                    if self.pending.len() > MAX_HEADER_BYTES {
                        return Err(AudioError::InvalidWav(format!(
                            "no data chunk within the first {MAX_HEADER_BYTES} bytes"
                        )));
                    }
                    return Ok(());
                };
                self.pending.drain(..h.data_offset);
                self.header = Some(h);
                self.remaining = h.data_len;
                h
            }
        };
        if let Some(left) = self.remaining {
            let keep = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.pending.len());
            self.pending.truncate(keep);
        }
        let whole = self.pending.len() - self.pending.len() % header.frame_bytes();
        header.decode_mono(&self.pending[..whole], out);
        self.pending.drain(..whole);
        if let Some(left) = self.remaining.as_mut() {
            *left -= whole as u64;
        }
        Ok(())
    }
}

/// Whether `head` starts like a WAV file (needs 12 bytes to be sure).
pub(crate) fn looks_like_wav(head: &[u8]) -> bool {
    head.len() >= 12 && (&head[..4] == b"RIFF" || &head[..4] == b"RF64") && &head[8..12] == b"WAVE"
}

/// Parses the header at the start of `buf`.
///
/// `Ok(None)` means more bytes are needed. Errors once the header is known to be bad
/// or longer than [`MAX_HEADER_BYTES`].
pub(crate) fn parse_header(buf: &[u8]) -> Result<Option<WavHeader>, AudioError> {
    if buf.len() < 12 {
        return if buf.len() >= 4 && &buf[..4] != b"RIFF" && &buf[..4] != b"RF64" {
            Err(AudioError::InvalidWav("missing RIFF magic".into()))
        } else {
            Ok(None)
        };
    }
    if !looks_like_wav(buf) {
        return Err(AudioError::InvalidWav("missing RIFF/WAVE magic".into()));
    }
    let rf64 = &buf[..4] == b"RF64";
    let mut pos = 12usize;
    let mut fmt: Option<(u32, u16, Encoding)> = None;
    loop {
        if pos > MAX_HEADER_BYTES {
            return Err(AudioError::InvalidWav(format!(
                "no data chunk within the first {MAX_HEADER_BYTES} bytes"
            )));
        }
        let Some(chunk_header) = buf.get(pos..pos + 8) else {
            return Ok(None);
        };
        let id = &chunk_header[..4];
        let size = u32::from_le_bytes(chunk_header[4..8].try_into().expect("4 bytes"));
        let body = pos + 8;
        if id == b"data" {
            let (sample_rate, channels, encoding) =
                fmt.ok_or_else(|| AudioError::InvalidWav("data chunk before fmt chunk".into()))?;
            let data_len = if size == 0 || size == u32::MAX || rf64 {
                None
            } else {
                Some(u64::from(size))
            };
            return Ok(Some(WavHeader {
                sample_rate,
                channels,
                encoding,
                data_offset: body,
                data_len,
            }));
        }
        let size = size as usize;
        if id == b"fmt " {
            let Some(body) = buf.get(body..body + size) else {
                if size > MAX_HEADER_BYTES {
                    return Err(AudioError::InvalidWav("oversized fmt chunk".into()));
                }
                return Ok(None);
            };
            fmt = Some(parse_fmt(body)?);
        }
        pos = body.saturating_add(size).saturating_add(size & 1);
    }
}

fn parse_fmt(b: &[u8]) -> Result<(u32, u16, Encoding), AudioError> {
    if b.len() < 16 {
        return Err(AudioError::InvalidWav(format!(
            "fmt chunk of {} bytes (need 16)",
            b.len()
        )));
    }
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let mut tag = u16_at(0);
    let channels = u16_at(2);
    let sample_rate = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
    let block_align = u16_at(12);
    let bits = u16_at(14);
    if tag == 0xFFFE {
        if b.len() < 40 {
            return Err(AudioError::InvalidWav(
                "truncated WAVE_FORMAT_EXTENSIBLE".into(),
            ));
        }
        tag = u16_at(24); // first two bytes of the SubFormat GUID
    }
    let encoding = match (tag, bits) {
        (1, 8) => Encoding::U8,
        (1, 16) => Encoding::I16,
        (1, 24) => Encoding::I24,
        (1, 32) => Encoding::I32,
        (3, 32) => Encoding::F32,
        (3, 64) => Encoding::F64,
        (1 | 3, _) => {
            return Err(AudioError::Unsupported(format!(
                "WAV with {bits}-bit samples (format tag {tag})"
            )))
        }
        _ => {
            return Err(AudioError::Unsupported(format!(
                "WAV format tag 0x{tag:04x} (only PCM and IEEE float)"
            )))
        }
    };
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(AudioError::Unsupported(format!(
            "WAV with {channels} channels (1..={MAX_CHANNELS})"
        )));
    }
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
        return Err(AudioError::Unsupported(format!(
            "WAV sample rate {sample_rate} Hz ({MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE})"
        )));
    }
    if usize::from(block_align) != encoding.bytes() * usize::from(channels) {
        return Err(AudioError::InvalidWav(format!(
            "block align {block_align} does not match {channels} x {bits}-bit"
        )));
    }
    Ok((sample_rate, channels, encoding))
}

/// Decodes a complete in-memory WAV file to mono samples at its own rate, appending them
/// to `out`; returns that rate (Hz). Data past a declared data length is ignored.
pub fn decode_wav(bytes: &[u8], out: &mut Vec<f32>) -> Result<u32, AudioError> {
    decode_clip(bytes, out).map(|h| h.sample_rate)
}

/// Decodes a complete in-memory WAV file to mono samples at its own rate.
pub(crate) fn decode_clip(bytes: &[u8], out: &mut Vec<f32>) -> Result<WavHeader, AudioError> {
    let header =
        parse_header(bytes)?.ok_or_else(|| AudioError::InvalidWav("truncated header".into()))?;
    let mut data = &bytes[header.data_offset.min(bytes.len())..];
    if let Some(len) = header.data_len {
        data = &data[..data.len().min(usize::try_from(len).unwrap_or(usize::MAX))];
    }
    header.decode_mono(data, out);
    Ok(header)
}

/// Streaming WAV decoder over a reader (the spooled container stream).
pub(crate) struct WavStream<R> {
    reader: R,
    pub header: WavHeader,
    remaining: Option<u64>,
    buf: Vec<u8>,
    carry: usize,
}

impl<R: Read> WavStream<R> {
    /// Reads and validates the header (buffering at most [`MAX_HEADER_BYTES`]).
    pub fn open(mut reader: R) -> Result<Self, AudioError> {
        let mut head = Vec::with_capacity(4096);
        let header = loop {
            let old = head.len();
            let want = (old + 4096).min(MAX_HEADER_BYTES + 8);
            head.resize(want, 0);
            let got = read_full(&mut reader, &mut head[old..])?;
            head.truncate(old + got);
            match parse_header(&head)? {
                Some(h) => break h,
                None if got == 0 || head.len() >= MAX_HEADER_BYTES + 8 => {
                    return Err(AudioError::InvalidWav("truncated header".into()))
                }
                None => {}
            }
        };
        // Bytes already read past the header are the first sample bytes.
        let leftover = head.split_off(header.data_offset.min(head.len()));
        let mut stream = Self {
            reader,
            header,
            remaining: header.data_len,
            buf: Vec::new(),
            carry: 0,
        };
        stream.buf = leftover;
        stream.carry = stream.buf.len();
        Ok(stream)
    }

    /// Decodes up to `max_frames` frames to mono, appending to `out`; `false` at the end.
    pub fn read_mono(&mut self, max_frames: usize, out: &mut Vec<f32>) -> Result<bool, AudioError> {
        let fb = self.header.frame_bytes();
        let want = max_frames * fb;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let mut filled = self.carry;
        if filled < want {
            filled += read_full(&mut self.reader, &mut self.buf[filled..want])?;
        }
        let mut usable = filled;
        if let Some(rem) = self.remaining {
            usable = usable.min(usize::try_from(rem).unwrap_or(usize::MAX));
        }
        let whole = usable / fb * fb;
        if whole == 0 {
            return Ok(false);
        }
        self.header.decode_mono(&self.buf[..whole], out);
        if let Some(rem) = self.remaining.as_mut() {
            *rem -= whole as u64;
        }
        self.buf.copy_within(whole..filled, 0);
        self.carry = filled - whole;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8], data_size: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(b"WAVE");
        v.extend_from_slice(b"LIST");
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(b"abc\0"); // odd size + pad byte
        v.extend_from_slice(b"fmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        let align = channels * bits / 8;
        v.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        v.extend_from_slice(&align.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data_size.to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn a_stream_decodes_across_any_chunk_split_and_stops_at_the_declared_length() {
        // Stereo 16-bit: frames of 4 bytes, so most splits cut a frame (or the header).
        let frames: Vec<[i16; 2]> = (0..50).map(|i| [i * 200, i * 100]).collect();
        let data: Vec<u8> = frames
            .iter()
            .flat_map(|f| f.iter().flat_map(|s| s.to_le_bytes()))
            .collect();
        let mono: Vec<f32> = frames
            .iter()
            .map(|f| (f32::from(f[0]) + f32::from(f[1])) / 2.0 / 32768.0)
            .collect();
        for size in [u32::MAX, data.len() as u32] {
            let mut file = wav(1, 2, 16_000, 16, &data, size);
            file.extend_from_slice(&[0x7f; 8]); // past a declared length: not samples
            for split in [1, 3, 7, 64, file.len()] {
                let mut stream = WavChunkDecoder::new();
                let mut out = Vec::new();
                for piece in file.chunks(split) {
                    stream.feed(piece, &mut out).unwrap();
                }
                assert_eq!(stream.sample_rate(), Some(16_000));
                let want = if size == u32::MAX { 52 } else { 50 };
                assert_eq!(out.len(), want, "size {size}, split {split}");
                assert_eq!(&out[..50], &mono[..], "size {size}, split {split}");
            }
        }
        assert!(WavChunkDecoder::new()
            .feed(b"RIFF....WAVX", &mut Vec::new())
            .is_err());
    }

    #[test]
    fn parses_incrementally_and_decodes_formats() {
        let mut data = Vec::new();
        for s in [0x40_0000i32, -0x80_0000] {
            data.extend_from_slice(&s.to_le_bytes()[..3]);
        }
        let file = wav(1, 1, 22_050, 24, &data, u32::MAX);
        for cut in 0..file.len() - data.len() {
            assert_eq!(parse_header(&file[..cut]).unwrap(), None, "cut {cut}");
        }
        let mut out = Vec::new();
        let h = decode_clip(&file, &mut out).unwrap();
        assert_eq!((h.sample_rate, h.channels, h.data_len), (22_050, 1, None));
        assert_eq!(out, vec![0.5, -1.0]);

        let data: Vec<u8> = [0.5f32, -0.25]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let mut out = Vec::new();
        decode_clip(&wav(3, 2, 48_000, 32, &data, 8), &mut out).unwrap();
        assert_eq!(out, vec![0.125]);
    }

    #[test]
    fn rejects_bad_headers() {
        assert!(matches!(
            parse_header(b"RIFX\0\0\0\0WAVEfmt "),
            Err(AudioError::InvalidWav(_))
        ));
        assert!(matches!(
            decode_clip(&wav(0x55, 1, 44_100, 16, &[], 0), &mut Vec::new()),
            Err(AudioError::Unsupported(_))
        ));
        assert!(matches!(
            decode_clip(&wav(1, 1, 44_100, 12, &[], 0), &mut Vec::new()),
            Err(AudioError::Unsupported(_))
        ));
        assert!(matches!(
            decode_clip(&wav(1, 9, 44_100, 16, &[], 0), &mut Vec::new()),
            Err(AudioError::Unsupported(_))
        ));
        assert!(matches!(
            decode_clip(&wav(1, 1, 4_000, 16, &[], 0), &mut Vec::new()),
            Err(AudioError::Unsupported(_))
        ));
    }

    #[test]
    fn streams_in_blocks_with_declared_length() {
        let data: Vec<u8> = (0..1000i16).flat_map(|s| s.to_le_bytes()).collect();
        let mut file = wav(1, 1, 16_000, 16, &data, 1000);
        file.extend_from_slice(b"junk after data");
        let mut s = WavStream::open(&file[..]).unwrap();
        let mut out = Vec::new();
        while s.read_mono(77, &mut out).unwrap() {}
        assert_eq!(out.len(), 500);
        assert_eq!(out[499], 499.0 / 32768.0);
    }
}
