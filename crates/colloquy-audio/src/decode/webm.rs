//! WebM/Opus: an incremental header check for the capture-time probe, and the
//! decoder used at reconstruction time (`matroska-demuxer` + `opus-decoder`).
//!
//! Live WebM as produced by MediaRecorder (unknown Segment/Cluster sizes, no SeekHead,
//! no Cues) is supported: the demuxer walks clusters linearly.

use std::io::{Read, Seek};
use std::panic::{catch_unwind, AssertUnwindSafe};

use matroska_demuxer::{DemuxError, Frame, MatroskaFile, TrackType};
use opus_decoder::OpusDecoder;

use crate::AudioError;

/// EBML magic (the EBML header element ID) that starts every WebM stream.
pub const EBML_MAGIC: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];

pub(crate) const ID_EBML: u32 = 0x1A45_DFA3;
pub(crate) const ID_DOCTYPE: u32 = 0x4282;
pub(crate) const ID_SEGMENT: u32 = 0x1853_8067;
pub(crate) const ID_CLUSTER: u32 = 0x1F43_B675;
pub(crate) const ID_TRACKS: u32 = 0x1654_AE6B;
const ID_TRACK_ENTRY: u32 = 0xAE;
const ID_TRACK_TYPE: u32 = 0x83;
const ID_CODEC_ID: u32 = 0x86;
const ID_CODEC_PRIVATE: u32 = 0x63A2;
const TRACK_TYPE_AUDIO: u64 = 2;

/// Opus decoding always happens at 48 kHz, the output rate.
pub(crate) const OPUS_RATE: u32 = 48_000;

// ---------------------------------------------------------------------------
// OpusHead

/// The parts of the `OpusHead` identification header (RFC 7845 §5.1) we use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OpusHead {
    pub channels: u8,
    pub pre_skip: u16,
    /// Linear output gain from the header's Q7.8 dB gain.
    pub gain: f32,
}

pub(crate) fn parse_opus_head(b: &[u8]) -> Result<OpusHead, AudioError> {
    if b.len() < 19 || &b[..8] != b"OpusHead" {
        return Err(AudioError::InvalidWebm(
            "Opus CodecPrivate is not an OpusHead".into(),
        ));
    }
    if b[8] >> 4 != 0 {
        return Err(AudioError::Unsupported(format!(
            "OpusHead version {}",
            b[8]
        )));
    }
    let channels = b[9];
    let pre_skip = u16::from_le_bytes([b[10], b[11]]);
    let gain_q8 = i16::from_le_bytes([b[16], b[17]]);
    let family = b[18];
    if channels == 0 || channels > 2 || family != 0 {
        return Err(AudioError::Unsupported(format!(
            "Opus with {channels} channels / mapping family {family} (mono or stereo only)"
        )));
    }
    Ok(OpusHead {
        channels,
        pre_skip,
        gain: 10f32.powf(f32::from(gain_q8) / (20.0 * 256.0)),
    })
}

// ---------------------------------------------------------------------------
// Incremental header probe

/// Bytes of one header element (EBML header, Tracks) we are willing to buffer.
pub(crate) const MAX_ELEMENT: u64 = 64 * 1024;
/// How far into the stream the Tracks element must appear.
const MAX_SCAN: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeState {
    EbmlHeader,
    SegmentHeader,
    TopLevel,
    Done,
}

/// Validates a WebM stream's headers as bytes arrive, buffering at most one header
/// element (≤ 64 KiB) and skipping other elements without buffering them.
#[derive(Debug)]
pub(crate) struct WebmProbe {
    buf: Vec<u8>,
    skip: u64,
    scanned: u64,
    state: ProbeState,
}

impl WebmProbe {
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            skip: 0,
            scanned: 0,
            state: ProbeState::EbmlHeader,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == ProbeState::Done
    }

    /// Bytes currently held for look-ahead.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), AudioError> {
        if self.is_done() {
            return Ok(());
        }
        self.scanned += chunk.len() as u64;
        if self.skip > 0 {
            let n = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(chunk.len());
            self.skip -= n as u64;
            chunk = &chunk[n..];
        }
        self.buf.extend_from_slice(chunk);
        while self.step()? {}
        if !self.is_done() && self.scanned > MAX_SCAN {
            return Err(AudioError::InvalidWebm(format!(
                "no Tracks element within the first {MAX_SCAN} bytes"
            )));
        }
        Ok(())
    }

    /// One parsing step; `Ok(false)` when more bytes are needed (or done).
    fn step(&mut self) -> Result<bool, AudioError> {
        if self.state == ProbeState::Done || self.skip > 0 {
            return Ok(false);
        }
        let Some((id, size, header_len)) = element_header(&self.buf)? else {
            return Ok(false);
        };
        match self.state {
            ProbeState::EbmlHeader => {
                if id != ID_EBML {
                    return Err(AudioError::InvalidWebm("missing EBML header".into()));
                }
                let Some(body) = self.whole_element(size, header_len, "EBML header")? else {
                    return Ok(false);
                };
                check_ebml_header(body)?;
                self.consume(header_len + body_len(size));
                self.state = ProbeState::SegmentHeader;
            }
            ProbeState::SegmentHeader => {
                if id != ID_SEGMENT {
                    return Err(AudioError::InvalidWebm(format!(
                        "expected Segment, found element 0x{id:X}"
                    )));
                }
                self.consume(header_len);
                self.state = ProbeState::TopLevel;
            }
            ProbeState::TopLevel => match id {
                ID_TRACKS => {
                    let Some(body) = self.whole_element(size, header_len, "Tracks")? else {
                        return Ok(false);
                    };
                    check_tracks(body)?;
                    self.buf = Vec::new();
                    self.state = ProbeState::Done;
                }
                ID_CLUSTER => {
                    return Err(AudioError::InvalidWebm(
                        "Cluster before Tracks: no track description".into(),
                    ))
                }
                _ => {
                    let size = size.ok_or_else(|| {
                        AudioError::InvalidWebm(format!(
                            "unknown-size element 0x{id:X} before Tracks"
                        ))
                    })?;
                    let total = header_len as u64 + size;
                    let have = self.buf.len() as u64;
                    if total <= have {
                        self.consume(total as usize);
                    } else {
                        self.buf.clear();
                        self.skip = total - have;
                    }
                }
            },
            ProbeState::Done => return Ok(false),
        }
        Ok(true)
    }

    /// The element body if fully buffered; errors if it is too large to buffer.
    fn whole_element(
        &self,
        size: Option<u64>,
        header_len: usize,
        what: &str,
    ) -> Result<Option<&[u8]>, AudioError> {
        let size = match size {
            Some(s) if s <= MAX_ELEMENT => s as usize,
            Some(s) => {
                return Err(AudioError::InvalidWebm(format!(
                    "{what} element of {s} bytes is too large"
                )))
            }
            None => {
                return Err(AudioError::InvalidWebm(format!(
                    "{what} element has unknown size"
                )))
            }
        };
        Ok(self.buf.get(header_len..header_len + size))
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
    }
}

fn body_len(size: Option<u64>) -> usize {
    size.map_or(0, |s| s as usize)
}

/// Checks an EBML header body: the DocType must be `webm` or `matroska`.
pub(crate) fn check_ebml_header(body: &[u8]) -> Result<(), AudioError> {
    let mut doc_type = None;
    for_each_child(body, |cid, cbody| {
        if cid == ID_DOCTYPE {
            doc_type = Some(
                String::from_utf8_lossy(cbody)
                    .trim_end_matches('\0')
                    .to_owned(),
            );
        }
        Ok(())
    })?;
    match doc_type.as_deref() {
        Some("webm") | Some("matroska") => Ok(()),
        other => Err(AudioError::InvalidWebm(format!(
            "EBML DocType {other:?} is not webm/matroska"
        ))),
    }
}

/// The first audio track of a Tracks element, as far as Opus decoding needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AudioTrack<'a> {
    /// TrackNumber (what blocks refer to).
    pub number: u64,
    /// CodecID, e.g. `A_OPUS`.
    pub codec: String,
    /// CodecPrivate (the OpusHead for Opus).
    pub private: Option<&'a [u8]>,
    /// CodecDelay in nanoseconds.
    pub codec_delay_ns: Option<u64>,
}

const ID_TRACK_NUMBER: u32 = 0xD7;
const ID_CODEC_DELAY: u32 = 0x56AA;

/// Finds the first audio track in a Tracks body.
pub(crate) fn first_audio_track(body: &[u8]) -> Result<AudioTrack<'_>, AudioError> {
    let mut found = None;
    for_each_child(body, |id, entry| {
        if id != ID_TRACK_ENTRY || found.is_some() {
            return Ok(());
        }
        let mut track_type = None;
        let mut track = AudioTrack {
            number: 0,
            codec: String::new(),
            private: None,
            codec_delay_ns: None,
        };
        for_each_child(entry, |cid, cbody| {
            match cid {
                ID_TRACK_TYPE => track_type = Some(be_uint(cbody)),
                ID_TRACK_NUMBER => track.number = be_uint(cbody),
                ID_CODEC_ID => {
                    track.codec = String::from_utf8_lossy(cbody)
                        .trim_end_matches('\0')
                        .to_owned()
                }
                ID_CODEC_PRIVATE => track.private = Some(cbody),
                ID_CODEC_DELAY => track.codec_delay_ns = Some(be_uint(cbody)),
                _ => {}
            }
            Ok(())
        })?;
        if track_type == Some(TRACK_TYPE_AUDIO) {
            found = Some(track);
        }
        Ok(())
    })?;
    found.ok_or_else(|| AudioError::InvalidWebm("no audio track".into()))
}

/// Checks the Tracks body: the first audio track must be Opus with a valid OpusHead.
fn check_tracks(body: &[u8]) -> Result<(), AudioError> {
    let track = first_audio_track(body)?;
    if track.codec != "A_OPUS" {
        return Err(AudioError::Unsupported(format!(
            "WebM audio codec {:?} (only A_OPUS)",
            track.codec
        )));
    }
    if let Some(private) = track.private {
        parse_opus_head(private)?;
    }
    Ok(())
}

/// A big-endian unsigned integer element body (at most 8 bytes are read).
pub(crate) fn be_uint(b: &[u8]) -> u64 {
    b.iter()
        .take(8)
        .fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

/// Reads an EBML variable-length integer: `(value without the length marker, length)`,
/// `None` if `b` is too short.
pub(crate) fn read_vint(b: &[u8]) -> Result<Option<(u64, usize)>, AudioError> {
    let Some(&first) = b.first() else {
        return Ok(None);
    };
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return Err(AudioError::InvalidWebm(
            "invalid variable-length integer".into(),
        ));
    }
    let Some(bytes) = b.get(..len) else {
        return Ok(None);
    };
    let mask = if len == 8 { 0 } else { 0xFFu8 >> len };
    let value = bytes[1..]
        .iter()
        .fold(u64::from(bytes[0] & mask), |acc, &x| {
            (acc << 8) | u64::from(x)
        });
    Ok(Some((value, len)))
}

/// Parses an element header: `(id, size (None = unknown), header length)`.
pub(crate) fn element_header(b: &[u8]) -> Result<Option<(u32, Option<u64>, usize)>, AudioError> {
    let Some(&first) = b.first() else {
        return Ok(None);
    };
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 {
        return Err(AudioError::InvalidWebm(format!(
            "invalid element ID byte 0x{first:02X}"
        )));
    }
    let Some(rest) = b.get(id_len..) else {
        return Ok(None);
    };
    let (value, size_len) = match read_vint(rest) {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(None),
        Err(_) => return Err(AudioError::InvalidWebm("invalid element size".into())),
    };
    let id = b[..id_len]
        .iter()
        .fold(0u32, |acc, &x| (acc << 8) | u32::from(x));
    let all_ones = (1u64 << (7 * size_len)) - 1;
    let size = (value != all_ones).then_some(value);
    Ok(Some((id, size, id_len + size_len)))
}

/// Calls `f` for each child element of a fully buffered master element body.
pub(crate) fn for_each_child<'a>(
    mut b: &'a [u8],
    mut f: impl FnMut(u32, &'a [u8]) -> Result<(), AudioError>,
) -> Result<(), AudioError> {
    while !b.is_empty() {
        let (id, size, header_len) = element_header(b)?
            .ok_or_else(|| AudioError::InvalidWebm("truncated child element".into()))?;
        let size =
            size.ok_or_else(|| AudioError::InvalidWebm("unknown-size child element".into()))?;
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_add(header_len))
            .filter(|end| *end <= b.len())
            .ok_or_else(|| {
                AudioError::InvalidWebm(format!("element 0x{id:X} overruns its parent"))
            })?;
        f(id, &b[header_len..end])?;
        b = &b[end..];
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Decoder

fn demux_error(e: DemuxError) -> AudioError {
    match e {
        // Reading from the spool file: running out of bytes means the stream is cut short.
        DemuxError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::InvalidWebm("stream truncated inside the headers".into())
        }
        DemuxError::IoError(io) => AudioError::Io(io),
        other => AudioError::InvalidWebm(other.to_string()),
    }
}

/// Runs third-party parsing code, turning a panic on hostile input into an error.
pub(crate) fn guarded<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, AudioError>,
) -> Result<T, AudioError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(AudioError::InvalidWebm(format!(
            "{what} failed on malformed data"
        )))
    })
}

/// Decodes the first Opus audio track of a WebM stream, packet by packet, to 48 kHz mono.
pub(crate) struct WebmOpusDecoder<R: Read + Seek> {
    mkv: MatroskaFile<R>,
    track: u64,
    decoder: OpusDecoder,
    channels: usize,
    scale_ns: u64,
    /// Priming samples to drop (CodecDelay, else OpusHead pre-skip), at 48 kHz.
    delay: i64,
    gain: f32,
    frame: Frame,
    pcm: Vec<f32>,
}

impl<R: Read + Seek> WebmOpusDecoder<R> {
    pub fn open(reader: R) -> Result<Self, AudioError> {
        let mkv = guarded("WebM demuxer", || {
            MatroskaFile::open(reader).map_err(demux_error)
        })?;
        let track = mkv
            .tracks()
            .iter()
            .find(|t| t.track_type() == TrackType::Audio)
            .ok_or_else(|| AudioError::InvalidWebm("no audio track".into()))?;
        if track.codec_id() != "A_OPUS" {
            return Err(AudioError::Unsupported(format!(
                "WebM audio codec {:?} (only A_OPUS)",
                track.codec_id()
            )));
        }
        let head = match track.codec_private() {
            Some(private) => parse_opus_head(private)?,
            None => OpusHead {
                channels: track
                    .audio()
                    .map_or(1, |a| u8::try_from(a.channels().get()).unwrap_or(u8::MAX)),
                pre_skip: 0,
                gain: 1.0,
            },
        };
        if head.channels == 0 || head.channels > 2 {
            return Err(AudioError::Unsupported(format!(
                "Opus with {} channels",
                head.channels
            )));
        }
        let delay = match track.codec_delay() {
            Some(ns) => i64::try_from(u128::from(ns) * u128::from(OPUS_RATE) / 1_000_000_000)
                .unwrap_or(i64::MAX),
            None => i64::from(head.pre_skip),
        };
        let channels = usize::from(head.channels);
        let decoder = OpusDecoder::new(OPUS_RATE, channels)
            .map_err(|e| AudioError::InvalidOpus(e.to_string()))?;
        let pcm = vec![0.0; decoder.max_frame_size_per_channel() * channels];
        Ok(Self {
            track: track.track_number().get(),
            scale_ns: mkv.info().timestamp_scale().get(),
            mkv,
            decoder,
            channels,
            delay,
            gain: head.gain,
            frame: Frame::default(),
            pcm,
        })
    }

    /// Decodes the next packet of the track, appending mono samples to `out`.
    ///
    /// Returns the packet's presentation position in 48 kHz samples relative to the
    /// stream start (negative for priming samples), or `None` at the end of the stream.
    /// A final block cut short (recording stopped mid-write) ends the stream.
    pub fn next_packet(&mut self, out: &mut Vec<f32>) -> Result<Option<i64>, AudioError> {
        loop {
            let more = guarded("WebM demuxer", || {
                match self.mkv.next_frame(&mut self.frame) {
                    Ok(more) => Ok(more),
                    Err(DemuxError::ElementSizeExceedsStream { .. }) => Ok(false),
                    Err(e) => Err(demux_error(e)),
                }
            })?;
            if !more {
                return Ok(None);
            }
            if self.frame.track != self.track || self.frame.data.is_empty() {
                continue;
            }
            let ts_ns = u128::from(self.frame.timestamp) * u128::from(self.scale_ns);
            let pos = i64::try_from(ts_ns * u128::from(OPUS_RATE) / 1_000_000_000)
                .map_err(|_| AudioError::InvalidWebm("block timestamp out of range".into()))?
                - self.delay;
            let (decoder, packet, pcm) = (&mut self.decoder, &self.frame.data, &mut self.pcm);
            let n = catch_unwind(AssertUnwindSafe(|| {
                decoder.decode_float(packet, pcm, false)
            }))
            .map_err(|_| AudioError::InvalidOpus("decoder failed on malformed packet".into()))?
            .map_err(|e| AudioError::InvalidOpus(e.to_string()))?;
            let scale = self.gain / self.channels as f32;
            out.extend(
                self.pcm[..n * self.channels]
                    .chunks_exact(self.channels)
                    .map(|f| f.iter().sum::<f32>() * scale),
            );
            return Ok(Some(pos));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_header_sizes() {
        assert_eq!(
            element_header(&[0x1A, 0x45, 0xDF, 0xA3, 0x9F]).unwrap(),
            Some((ID_EBML, Some(0x1F), 5))
        );
        // Unknown size, 1-byte and 8-byte forms.
        assert_eq!(
            element_header(&[0xEC, 0xFF]).unwrap(),
            Some((0xEC, None, 2))
        );
        let mut live = vec![0x1F, 0x43, 0xB6, 0x75, 0x01];
        live.extend_from_slice(&[0xFF; 7]);
        assert_eq!(element_header(&live).unwrap(), Some((ID_CLUSTER, None, 12)));
        assert_eq!(element_header(&live[..6]).unwrap(), None);
        assert!(element_header(&[0x00, 0x81]).is_err());
    }

    #[test]
    fn opus_head() {
        let mut h = b"OpusHead".to_vec();
        h.extend_from_slice(&[1, 2, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0]);
        let head = parse_opus_head(&h).unwrap();
        assert_eq!((head.channels, head.pre_skip, head.gain), (2, 312, 1.0));
        h[9] = 6;
        assert!(matches!(
            parse_opus_head(&h),
            Err(AudioError::Unsupported(_))
        ));
        assert!(parse_opus_head(b"OpusTags").is_err());
    }
}
