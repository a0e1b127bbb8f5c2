//! Streaming WebM/Opus decoding: bytes in, 48 kHz mono samples out, as chunks arrive.
//!
//! Unlike the reconstruction decoder ([`super::webm::WebmOpusDecoder`], which needs the
//! whole file), [`WebmOpusStream`] takes the stream in arbitrary splits — MediaRecorder's
//! live WebM with unknown-size Segment and Clusters, SimpleBlocks and BlockGroups, any
//! lacing — and holds at most one element: a header element (EBML header, Tracks) of at
//! most 64 KiB or a block of at most 1 MiB ([`WebmOpusStream::MAX_HEADER_ELEMENT`],
//! [`WebmOpusStream::MAX_BLOCK`]). Other
//! elements (other tracks' blocks, cues, tags, unknown IDs) are skipped as they stream by.

use std::panic::{catch_unwind, AssertUnwindSafe};

use opus_decoder::OpusDecoder;

use super::webm::{
    check_ebml_header, element_header, first_audio_track, for_each_child, parse_opus_head,
    read_vint, OpusHead, ID_CLUSTER, ID_EBML, ID_SEGMENT, ID_TRACKS, MAX_ELEMENT, OPUS_RATE,
};
use crate::AudioError;

const MAX_HEADER_ELEMENT: usize = WebmOpusStream::MAX_HEADER_ELEMENT;
const MAX_BLOCK: usize = WebmOpusStream::MAX_BLOCK;
/// Longest element header (4-byte ID + 8-byte size).
const MAX_ELEMENT_HEADER: usize = 12;

const ID_SIMPLE_BLOCK: u32 = 0xA3;
const ID_BLOCK_GROUP: u32 = 0xA0;
const ID_BLOCK: u32 = 0xA1;
const ID_VOID: u32 = 0xEC;
const ID_CRC32: u32 = 0xBF;

/// Element IDs allowed inside a Cluster; any other ID ends an unknown-size Cluster.
const CLUSTER_CHILDREN: [u32; 9] = [
    0xE7,   // Timestamp
    0x5854, // SilentTracks
    0xA7,   // Position
    0xAB,   // PrevSize
    ID_SIMPLE_BLOCK,
    ID_BLOCK_GROUP,
    0xAF, // EncryptedBlock
    ID_VOID,
    ID_CRC32,
];

/// An open master element.
#[derive(Debug, Clone, Copy)]
struct Open {
    id: u32,
    /// Bytes of its body not yet read; `None` for unknown size ("live" streams).
    remaining: Option<u64>,
}

/// What to do with the body of the element whose header was just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    EbmlHeader,
    Tracks,
    Block,
    BlockGroup,
}

/// The audio track being decoded.
struct Track {
    number: u64,
    decoder: OpusDecoder,
    channels: usize,
    gain: f32,
    /// Priming samples (CodecDelay, else OpusHead pre-skip) still to drop, at 48 kHz.
    skip: usize,
    pcm: Vec<f32>,
}

/// Incremental WebM/Opus decoder: feed it the stream in any chunking, get 48 kHz mono.
///
/// The first audio track is decoded (it must be Opus, mono or stereo; stereo is averaged
/// to mono); CodecDelay (else the OpusHead pre-skip) is dropped from the start and the
/// OpusHead output gain applied, as in reconstruction. Packets are concatenated in stream
/// order (block timestamps are not used). An EBML header after the Segment ended — or
/// ending an unknown-size Segment — starts a new stream (a recorder restarted); its
/// samples follow the previous stream's.
///
/// Every error is an [`AudioError`] (`InvalidWebm`, `InvalidOpus`, `Unsupported`), never a
/// panic; after one, the stream is finished and every further [`Self::feed`] fails.
pub struct WebmOpusStream {
    /// The element header being read (at most [`MAX_ELEMENT_HEADER`] bytes).
    header: Vec<u8>,
    /// The body being buffered, with its kind and full length.
    body: Vec<u8>,
    pending: Option<(Body, usize)>,
    /// The pending SimpleBlock's track number was read (it is ours).
    block_checked: bool,
    /// Bytes of a skipped element still to drop.
    skip: u64,
    /// Open master elements, outermost first.
    open: Vec<Open>,
    /// An EBML header was read and no Segment has ended since.
    in_stream: bool,
    track: Option<Track>,
    /// Set by the first error.
    failed: Option<String>,
}

impl std::fmt::Debug for WebmOpusStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebmOpusStream")
            .field("buffered", &self.buffered())
            .field("open", &self.open)
            .field("track", &self.track.as_ref().map(|t| t.number))
            .field("failed", &self.failed)
            .finish()
    }
}

impl Default for WebmOpusStream {
    fn default() -> Self {
        Self::new()
    }
}

impl WebmOpusStream {
    /// Largest header element (EBML header, Tracks) buffered, in bytes; larger is an error.
    pub const MAX_HEADER_ELEMENT: usize = MAX_ELEMENT as usize;
    /// Largest SimpleBlock or BlockGroup buffered, in bytes; larger is an error.
    pub const MAX_BLOCK: usize = 1024 * 1024;

    /// A decoder expecting the stream's first byte (the EBML header).
    pub fn new() -> Self {
        Self {
            header: Vec::with_capacity(MAX_ELEMENT_HEADER),
            body: Vec::new(),
            pending: None,
            block_checked: false,
            skip: 0,
            open: Vec::new(),
            in_stream: false,
            track: None,
            failed: None,
        }
    }

    /// The output sample rate (Opus always decodes at 48 kHz).
    pub fn sample_rate(&self) -> u32 {
        OPUS_RATE
    }

    /// Bytes currently held: a partial element header and body.
    pub fn buffered(&self) -> usize {
        self.header.len() + self.body.len()
    }

    /// Whether the stream has failed (every further `feed` errors).
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Checks that the stream ended cleanly: its audio track was described and no element
    /// was cut short.
    pub fn finish(&self) -> Result<(), AudioError> {
        if let Some(reason) = &self.failed {
            return Err(AudioError::InvalidWebm(reason.clone()));
        }
        if self.pending.is_some() || self.skip > 0 || !self.header.is_empty() {
            return Err(AudioError::InvalidWebm(
                "the stream ends inside an element (truncated)".into(),
            ));
        }
        if self.track.is_none() {
            return Err(AudioError::InvalidWebm(
                "the stream ends before its Tracks element".into(),
            ));
        }
        Ok(())
    }

    /// Consumes the next bytes of the stream, appending decoded mono samples to `out`.
    ///
    /// Samples decoded before an error stay in `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), AudioError> {
        if let Some(reason) = &self.failed {
            return Err(AudioError::InvalidWebm(format!(
                "the stream already failed: {reason}"
            )));
        }
        let result = self.run(bytes, out);
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
            self.header = Vec::new();
            self.body = Vec::new();
            tracing::debug!(error = %e, "WebM/Opus stream failed");
        }
        result
    }

    fn run(&mut self, mut input: &[u8], out: &mut Vec<f32>) -> Result<(), AudioError> {
        while !input.is_empty() || self.can_progress() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                self.skip -= n as u64;
                input = &input[n..];
                continue;
            }
            if let Some((kind, len)) = self.pending {
                if kind == Body::Block && !self.block_checked {
                    // Read the block's track number before buffering it: other tracks'
                    // blocks are skipped, whatever their size.
                    let Some((number, _)) = read_vint(&self.body)? else {
                        if self.body.len() >= len {
                            return Err(AudioError::InvalidWebm(
                                "block without a track number".into(),
                            ));
                        }
                        self.body.push(input[0]);
                        input = &input[1..];
                        continue;
                    };
                    self.block_checked = true;
                    if self.track.as_ref().is_none_or(|t| t.number != number) {
                        self.skip = (len - self.body.len()) as u64;
                        self.body.clear();
                        self.pending = None;
                        continue;
                    }
                    if len > MAX_BLOCK {
                        return Err(AudioError::InvalidWebm(format!(
                            "SimpleBlock of {len} bytes is larger than the {MAX_BLOCK}-byte limit"
                        )));
                    }
                }
                if self.body.is_empty() && input.len() >= len {
                    // The whole body is here: use it in place.
                    self.pending = None;
                    let (body, rest) = input.split_at(len);
                    input = rest;
                    self.element(kind, body, out)?;
                } else {
                    let n = (len - self.body.len()).min(input.len());
                    self.body.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.body.len() == len {
                        self.pending = None;
                        let body = std::mem::take(&mut self.body);
                        self.element(kind, &body, out)?;
                        self.body = body;
                        self.body.clear();
                        if self.body.capacity() > MAX_HEADER_ELEMENT {
                            self.body = Vec::new(); // keep the idle footprint small
                        }
                    }
                }
                continue;
            }
            // An element header: at most 12 bytes, gathered across chunks.
            let before = self.header.len();
            let n = (MAX_ELEMENT_HEADER - before).min(input.len());
            self.header.extend_from_slice(&input[..n]);
            match element_header(&self.header)? {
                Some((id, size, header_len)) => {
                    input = &input[header_len - before..];
                    self.header.clear();
                    self.start_element(id, size, header_len as u64)?;
                }
                None => {
                    input = &input[n..];
                }
            }
        }
        Ok(())
    }

    /// Whether the pending element can move on without more bytes: an empty body, or a
    /// block whose track number has just been completed.
    fn can_progress(&self) -> bool {
        match self.pending {
            Some((_, 0)) => true,
            Some((Body::Block, _)) => {
                !self.block_checked && matches!(read_vint(&self.body), Ok(Some(_)))
            }
            _ => false,
        }
    }

    /// Decides what to do with an element whose header was just read.
    fn start_element(
        &mut self,
        id: u32,
        size: Option<u64>,
        header_len: u64,
    ) -> Result<(), AudioError> {
        self.close_unknown_size(id);
        let parent = self.open.last().map(|o| o.id);
        match (parent, id) {
            (None, ID_EBML) => {
                self.open.clear();
                self.in_stream = false;
                self.track = None;
                self.keep(Body::EbmlHeader, id, size, header_len, MAX_HEADER_ELEMENT)
            }
            (None, _) if !self.in_stream => Err(AudioError::InvalidWebm(format!(
                "missing EBML header (found element 0x{id:X})"
            ))),
            (None, ID_SEGMENT) => {
                self.account(header_len)?;
                self.open.push(Open {
                    id,
                    remaining: size,
                });
                self.close_finished();
                Ok(())
            }
            (Some(ID_SEGMENT), ID_TRACKS) if self.track.is_none() => {
                self.keep(Body::Tracks, id, size, header_len, MAX_HEADER_ELEMENT)
            }
            (Some(ID_SEGMENT), ID_CLUSTER) => {
                if self.track.is_none() {
                    return Err(AudioError::InvalidWebm(
                        "Cluster before Tracks: no track description".into(),
                    ));
                }
                self.account(header_len)?;
                self.open.push(Open {
                    id,
                    remaining: size,
                });
                self.close_finished();
                Ok(())
            }
            (Some(ID_SEGMENT), _) if id <= 0x00FF_FFFF && id != ID_VOID && id != ID_CRC32 => {
                // Segment children have 4-byte IDs: anything else is corrupt data.
                Err(AudioError::InvalidWebm(format!(
                    "unexpected element 0x{id:X} in the Segment (corrupt stream?)"
                )))
            }
            (Some(ID_CLUSTER), ID_SIMPLE_BLOCK) => {
                // Its size is checked once its track number shows it is ours.
                self.block_checked = false;
                self.keep(Body::Block, id, size, header_len, usize::MAX)
            }
            (Some(ID_CLUSTER), ID_BLOCK_GROUP) => {
                self.keep(Body::BlockGroup, id, size, header_len, MAX_BLOCK)
            }
            _ => {
                let size = size.ok_or_else(|| {
                    AudioError::Unsupported(format!(
                        "unknown-size WebM element 0x{id:X} (only Segment and Cluster may \
                         have an unknown size)"
                    ))
                })?;
                self.account(header_len.saturating_add(size))?;
                self.close_finished();
                self.skip = size;
                Ok(())
            }
        }
    }

    /// Buffers the body of an element we need whole (at most `max` bytes).
    fn keep(
        &mut self,
        kind: Body,
        id: u32,
        size: Option<u64>,
        header_len: u64,
        max: usize,
    ) -> Result<(), AudioError> {
        let size = size.ok_or_else(|| {
            AudioError::InvalidWebm(format!("element 0x{id:X} has an unknown size"))
        })?;
        let len = usize::try_from(size)
            .ok()
            .filter(|&len| len <= max)
            .ok_or_else(|| {
                AudioError::InvalidWebm(format!(
                    "element 0x{id:X} of {size} bytes is larger than the {max}-byte limit"
                ))
            })?;
        self.account(header_len + size)?;
        self.close_finished();
        self.pending = Some((kind, len));
        Ok(())
    }

    /// An element ID that cannot be a child of an unknown-size Cluster ends it; a Segment or
    /// EBML header ends an unknown-size Segment.
    fn close_unknown_size(&mut self, id: u32) {
        while let Some(top) = self.open.last() {
            if top.remaining.is_some() {
                break;
            }
            let ends = match top.id {
                ID_CLUSTER => !CLUSTER_CHILDREN.contains(&id),
                ID_SEGMENT => id == ID_SEGMENT || id == ID_EBML,
                _ => false,
            };
            if !ends {
                break;
            }
            self.open.pop();
        }
    }

    /// Counts `n` bytes against every known-size open element.
    fn account(&mut self, n: u64) -> Result<(), AudioError> {
        for open in &mut self.open {
            if let Some(rem) = &mut open.remaining {
                *rem = rem.checked_sub(n).ok_or_else(|| {
                    AudioError::InvalidWebm(format!(
                        "a child element overruns its parent 0x{:X}",
                        open.id
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Closes the known-size elements whose body has been read entirely.
    fn close_finished(&mut self) {
        while self.open.last().is_some_and(|o| o.remaining == Some(0)) {
            if self.open.pop().is_some_and(|o| o.id == ID_SEGMENT) {
                self.in_stream = false;
            }
        }
    }

    /// A complete element body.
    fn element(&mut self, kind: Body, body: &[u8], out: &mut Vec<f32>) -> Result<(), AudioError> {
        match kind {
            Body::EbmlHeader => {
                check_ebml_header(body)?;
                self.in_stream = true;
                Ok(())
            }
            Body::Tracks => {
                self.track = Some(open_track(body)?);
                Ok(())
            }
            Body::Block => self.block(body, out),
            Body::BlockGroup => {
                let mut block = None;
                for_each_child(body, |id, b| {
                    if id == ID_BLOCK && block.is_none() {
                        block = Some(b);
                    }
                    Ok(())
                })?;
                match block {
                    Some(b) => self.block(b, out),
                    None => Ok(()),
                }
            }
        }
    }

    /// A (Simple)Block: track number, timestamp, flags, then one or more laced frames.
    fn block(&mut self, b: &[u8], out: &mut Vec<f32>) -> Result<(), AudioError> {
        let Some(track) = self.track.as_mut() else {
            return Ok(());
        };
        let (number, n) = read_vint(b)?
            .ok_or_else(|| AudioError::InvalidWebm("block without a track number".into()))?;
        if number != track.number {
            return Ok(());
        }
        let flags = *b
            .get(n + 2)
            .ok_or_else(|| AudioError::InvalidWebm("block header truncated".into()))?;
        let data = &b[n + 3..];
        for frame in frames(flags, data)? {
            track.decode(frame, out)?;
        }
        Ok(())
    }
}

/// Sets up decoding of the first audio track of a Tracks body.
fn open_track(body: &[u8]) -> Result<Track, AudioError> {
    let found = first_audio_track(body)?;
    if found.codec != "A_OPUS" {
        return Err(AudioError::Unsupported(format!(
            "WebM audio codec {:?} (only A_OPUS)",
            found.codec
        )));
    }
    let head = match found.private {
        Some(private) => parse_opus_head(private)?,
        None => OpusHead {
            channels: 1,
            pre_skip: 0,
            gain: 1.0,
        },
    };
    let skip = match found.codec_delay_ns {
        Some(ns) => u128::from(ns) * u128::from(OPUS_RATE) / 1_000_000_000,
        None => u128::from(head.pre_skip),
    };
    let channels = usize::from(head.channels);
    let decoder = OpusDecoder::new(OPUS_RATE, channels)
        .map_err(|e| AudioError::InvalidOpus(e.to_string()))?;
    let pcm = vec![0.0; decoder.max_frame_size_per_channel() * channels];
    tracing::debug!(
        track = found.number,
        channels,
        skip = %skip,
        "WebM/Opus stream: decoding audio track"
    );
    Ok(Track {
        number: found.number,
        decoder,
        channels,
        gain: head.gain,
        skip: usize::try_from(skip).unwrap_or(usize::MAX),
        pcm,
    })
}

impl Track {
    /// Decodes one Opus packet, appending mono samples (after the priming skip) to `out`.
    fn decode(&mut self, packet: &[u8], out: &mut Vec<f32>) -> Result<(), AudioError> {
        if packet.is_empty() {
            return Ok(());
        }
        let (decoder, pcm) = (&mut self.decoder, &mut self.pcm);
        let n = catch_unwind(AssertUnwindSafe(|| {
            decoder.decode_float(packet, pcm, false)
        }))
        .map_err(|_| AudioError::InvalidOpus("decoder failed on malformed packet".into()))?
        .map_err(|e| AudioError::InvalidOpus(e.to_string()))?;
        let drop = self.skip.min(n);
        self.skip -= drop;
        let scale = self.gain / self.channels as f32;
        out.extend(
            self.pcm[drop * self.channels..n * self.channels]
                .chunks_exact(self.channels)
                .map(|f| f.iter().sum::<f32>() * scale),
        );
        Ok(())
    }
}

/// Splits a block's payload into its frames by the lacing in `flags` (bits 1–2).
fn frames(flags: u8, data: &[u8]) -> Result<Vec<&[u8]>, AudioError> {
    let lacing = (flags >> 1) & 0b11;
    if lacing == 0 {
        return Ok(vec![data]);
    }
    let truncated = || AudioError::InvalidWebm("laced block truncated".into());
    let (&count_minus_one, mut rest) = data.split_first().ok_or_else(truncated)?;
    let count = usize::from(count_minus_one) + 1;
    let mut sizes = Vec::with_capacity(count);
    match lacing {
        // Xiph: each size but the last as a run of 255s plus a final byte.
        0b01 => {
            for _ in 1..count {
                let mut size = 0usize;
                loop {
                    let (&byte, r) = rest.split_first().ok_or_else(truncated)?;
                    rest = r;
                    size += usize::from(byte);
                    if byte != 255 {
                        break;
                    }
                }
                sizes.push(size);
            }
        }
        // EBML: the first size as a vint, then signed differences.
        0b11 => {
            let mut size: i64 = 0;
            for i in 1..count {
                let (raw, n) = read_vint(rest)?.ok_or_else(truncated)?;
                rest = &rest[n..];
                if i == 1 {
                    size = i64::try_from(raw).map_err(|_| truncated())?;
                } else {
                    let bias = (1i64 << (7 * n - 1)) - 1;
                    size += raw as i64 - bias;
                }
                sizes
                    .push(usize::try_from(size).map_err(|_| {
                        AudioError::InvalidWebm("negative laced frame size".into())
                    })?);
            }
        }
        // Fixed: equal sizes.
        _ => {
            if rest.len() % count != 0 {
                return Err(AudioError::InvalidWebm(format!(
                    "{} bytes cannot be split into {count} equal laced frames",
                    rest.len()
                )));
            }
            sizes.resize(count - 1, rest.len() / count);
        }
    }
    let mut frames = Vec::with_capacity(count);
    for size in sizes {
        if size > rest.len() {
            return Err(truncated());
        }
        let (frame, r) = rest.split_at(size);
        frames.push(frame);
        rest = r;
    }
    frames.push(rest);
    Ok(frames)
}

/// The integration tests' helpers (ffmpeg encoding), for the comparison with the file decoder.
#[cfg(all(test, feature = "reconstruct"))]
#[path = "../../tests/common/mod.rs"]
mod test_common;

#[cfg(all(test, feature = "reconstruct"))]
mod tests {
    use super::test_common::{ffmpeg_webm_opus, mediarecorder_like};
    use super::*;
    use crate::decode::webm::WebmOpusDecoder;

    /// What reconstruction decodes: every packet of the file, priming samples dropped.
    fn file_decoder_output(webm: &[u8]) -> Vec<f32> {
        let mut dec = WebmOpusDecoder::open(std::io::Cursor::new(webm.to_vec())).unwrap();
        let mut out = Vec::new();
        let mut first = None;
        while let Some(pos) = dec.next_packet(&mut out).unwrap() {
            first.get_or_insert(pos);
        }
        let drop = usize::try_from(-first.unwrap()).unwrap_or(0);
        out.drain(..drop);
        out
    }

    fn stream_output(webm: &[u8], chunk: usize) -> Vec<f32> {
        let mut stream = WebmOpusStream::new();
        let mut out = Vec::new();
        for c in webm.chunks(chunk) {
            stream.feed(c, &mut out).unwrap();
        }
        stream.finish().unwrap();
        out
    }

    #[test]
    fn matches_the_file_decoder_in_any_chunking() {
        let live = mediarecorder_like(&ffmpeg_webm_opus(440.0, 0.4, 1.5, 1, true));
        let file = ffmpeg_webm_opus(660.0, 0.3, 1.2, 2, false);
        for webm in [live, file] {
            let want = file_decoder_output(&webm);
            assert!(want.len() > 48_000);
            for chunk in [1, 7, 1000, webm.len()] {
                let got = stream_output(&webm, chunk);
                assert_eq!(got.len(), want.len(), "length, {chunk}-byte chunks");
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(worst < 1e-6, "{chunk}-byte chunks differ by {worst}");
            }
        }
    }

    #[test]
    fn lacing() {
        // No lacing.
        assert_eq!(frames(0x80, b"abc").unwrap(), vec![&b"abc"[..]]);
        // Xiph: 3 frames of 2, 256 and 1 bytes.
        let mut xiph = vec![2u8, 2, 255, 1];
        xiph.extend_from_slice(&[7; 2 + 256 + 1]);
        let f = frames(0b010, &xiph).unwrap();
        assert_eq!(f.iter().map(|f| f.len()).collect::<Vec<_>>(), [2, 256, 1]);
        // EBML: sizes 300, 290 (difference -10 as a 2-byte signed vint), rest 5.
        let mut ebml = vec![2u8, 0x41, 0x2C]; // 300
        let diff = (-10i64 + 8191) as u16 | 0x4000;
        ebml.extend_from_slice(&diff.to_be_bytes());
        ebml.extend_from_slice(&[1; 300 + 290 + 5]);
        let f = frames(0b110, &ebml).unwrap();
        assert_eq!(f.iter().map(|f| f.len()).collect::<Vec<_>>(), [300, 290, 5]);
        // Fixed: 4 frames of 3 bytes.
        let mut fixed = vec![3u8];
        fixed.extend_from_slice(&[0; 12]);
        let f = frames(0b100, &fixed).unwrap();
        assert_eq!(f.iter().map(|f| f.len()).collect::<Vec<_>>(), [3; 4]);
        // Malformed lacing is an error.
        assert!(frames(0b100, &[3, 0, 0]).is_err());
        assert!(frames(0b010, &[2, 255]).is_err());
        assert!(frames(0b010, &[1, 200, 0]).is_err());
        assert!(frames(0b110, &[]).is_err());
    }
}
