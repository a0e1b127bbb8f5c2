//! AAC-LC encoding with FDK AAC and MP4 muxing with the `mp4` crate's box model.
//!
//! Layout: `ftyp`, `mdat` (64-bit size, AUs appended as they are encoded), then `moov`.
//! `mp4::Mp4Writer` cannot write an edit list, so the `moov` is assembled here from the
//! crate's box model (its box types are only reachable through `MoovBox`'s fields, hence
//! the `Default::default()` construction): one AAC track, timescale 48000, every sample 1024 ticks, and an
//! `elst` whose `media_time` is the encoder delay (priming) and whose duration is the
//! exact number of input frames, so players (ffmpeg, Chromium) trim priming and padding.
//! Only the per-AU size table (4 bytes per 1024 frames) is kept in memory.

use std::io::{Seek, SeekFrom, Write};

use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};
use mp4::{FixedPointU16, FtypBox, MoovBox, WriteBox};

use crate::{AudioError, OUTPUT_SAMPLE_RATE};

/// AAC-LC frame length in samples per channel.
const FRAME: usize = 1024;
/// AUs per MP4 chunk (~1 s).
const AUS_PER_CHUNK: u32 = 47;

/// Bit rate used for `channels` output channels.
pub(crate) fn bitrate(channels: u16) -> u32 {
    if channels == 2 {
        128_000
    } else {
        64_000
    }
}

/// The 2-byte AudioSpecificConfig for AAC-LC at 48 kHz.
pub(crate) fn audio_specific_config(channels: u16) -> [u8; 2] {
    let (aot, freq_index) = (2u16, 3u16);
    let v = (aot << 11) | (freq_index << 7) | (channels << 3);
    v.to_be_bytes()
}

fn enc_err(e: fdk_aac::enc::EncoderError) -> AudioError {
    AudioError::Encode(e.to_string())
}

fn mux_err(e: mp4::Error) -> AudioError {
    AudioError::Mux(e.to_string())
}

/// Streams interleaved 16-bit PCM at 48 kHz into an AAC-LC MP4.
pub(crate) struct AacMp4Writer<W: Write + Seek> {
    out: W,
    encoder: Encoder,
    channels: u16,
    delay: u32,
    pending: Vec<i16>,
    au: Vec<u8>,
    sizes: Vec<u32>,
    mdat_pos: u64,
    data_len: u64,
    input_frames: u64,
}

impl<W: Write + Seek> AacMp4Writer<W> {
    /// Sets up the encoder and writes `ftyp` and the `mdat` header.
    pub fn new(mut out: W, channels: u16) -> Result<Self, AudioError> {
        let encoder = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(bitrate(channels)),
            sample_rate: OUTPUT_SAMPLE_RATE,
            transport: Transport::Raw,
            channels: if channels == 2 {
                ChannelMode::Stereo
            } else {
                ChannelMode::Mono
            },
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(enc_err)?;
        let info = encoder.info().map_err(enc_err)?;
        if info.frameLength as usize != FRAME {
            return Err(AudioError::Encode(format!(
                "unexpected frame length {}",
                info.frameLength
            )));
        }
        // The esds written below is derived from AacConfig; make sure it is what FDK emits.
        let conf = &info.confBuf[..(info.confSize as usize).min(info.confBuf.len())];
        if conf != audio_specific_config(channels) {
            return Err(AudioError::Encode(format!(
                "unexpected AudioSpecificConfig {conf:02x?}"
            )));
        }
        FtypBox {
            major_brand: fourcc(b"isom"),
            minor_version: 512,
            compatible_brands: vec![fourcc(b"isom"), fourcc(b"iso2"), fourcc(b"mp41")],
        }
        .write_box(&mut out)
        .map_err(mux_err)?;
        let mdat_pos = out.stream_position()?;
        // size = 1: the real size follows as a 64-bit "largesize", patched at the end.
        out.write_all(&1u32.to_be_bytes())?;
        out.write_all(b"mdat")?;
        out.write_all(&0u64.to_be_bytes())?;
        Ok(Self {
            out,
            encoder,
            channels,
            delay: info.nDelayCore,
            pending: Vec::with_capacity(FRAME * 2 * usize::from(channels)),
            au: vec![0; (info.maxOutBufBytes as usize).max(8192)],
            sizes: Vec::new(),
            mdat_pos,
            data_len: 0,
            input_frames: 0,
        })
    }

    /// Encodes interleaved samples (length a multiple of the channel count).
    pub fn write(&mut self, pcm: &[i16]) -> Result<(), AudioError> {
        self.input_frames += (pcm.len() / usize::from(self.channels)) as u64;
        self.pending.extend_from_slice(pcm);
        self.encode_pending()
    }

    fn encode_pending(&mut self) -> Result<(), AudioError> {
        let frame = FRAME * usize::from(self.channels);
        let mut offset = 0;
        while self.pending.len() - offset >= frame {
            let info = self
                .encoder
                .encode(&self.pending[offset..offset + frame], &mut self.au)
                .map_err(enc_err)?;
            if info.input_consumed == 0 && info.output_size == 0 {
                return Err(AudioError::Encode("encoder made no progress".into()));
            }
            offset += info.input_consumed;
            if info.output_size > 0 {
                self.out.write_all(&self.au[..info.output_size])?;
                self.sizes.push(info.output_size as u32);
                self.data_len += info.output_size as u64;
            }
        }
        self.pending.drain(..offset);
        Ok(())
    }

    /// Flushes the encoder (zero padding, trimmed by the edit list) and writes `moov`.
    pub fn finish(mut self) -> Result<W, AudioError> {
        let frame = FRAME * usize::from(self.channels);
        let needed = self.input_frames + u64::from(self.delay);
        let zeros = vec![0i16; frame];
        let mut guard = 0;
        while (self.sizes.len() as u64) * (FRAME as u64) < needed {
            guard += 1;
            if guard > 64 + self.delay as usize / FRAME {
                return Err(AudioError::Encode("encoder did not flush".into()));
            }
            self.pending.extend_from_slice(&zeros);
            self.encode_pending()?;
        }
        let end = self.out.stream_position()?;
        self.out.seek(SeekFrom::Start(self.mdat_pos + 8))?;
        self.out.write_all(&(16 + self.data_len).to_be_bytes())?;
        self.out.seek(SeekFrom::Start(end))?;
        let moov = self.moov(self.mdat_pos + 16)?;
        self.out.write_all(&moov)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn moov(&mut self, data_start: u64) -> Result<Vec<u8>, AudioError> {
        let frames = u32::try_from(self.sizes.len())
            .map_err(|_| AudioError::Mux("too many AAC frames".into()))?;
        let media_duration = u64::from(frames) * FRAME as u64;
        let version = u8::from(media_duration > u64::from(u32::MAX));

        let mut moov = MoovBox::default();
        moov.mvhd.version = version;
        moov.mvhd.timescale = OUTPUT_SAMPLE_RATE;
        moov.mvhd.duration = self.input_frames;
        moov.mvhd.next_track_id = 2;
        moov.traks.push(Default::default());
        let trak = &mut moov.traks[0];

        trak.tkhd.version = version;
        trak.tkhd.flags = 0x3; // enabled, in movie
        trak.tkhd.track_id = 1;
        trak.tkhd.duration = self.input_frames;

        // Edit list: skip the encoder delay, play exactly the input length.
        let elst = trak
            .edts
            .get_or_insert_with(Default::default)
            .elst
            .get_or_insert_with(Default::default);
        elst.version = version;
        elst.entries.push(Default::default());
        let entry = &mut elst.entries[0];
        entry.segment_duration = self.input_frames;
        entry.media_time = u64::from(self.delay);
        entry.media_rate = 1;

        let mdia = &mut trak.mdia;
        mdia.mdhd.version = version;
        mdia.mdhd.timescale = OUTPUT_SAMPLE_RATE;
        mdia.mdhd.duration = media_duration;
        mdia.mdhd.language = "und".into();
        mdia.hdlr.handler_type = fourcc(b"soun");
        mdia.hdlr.name = "SoundHandler".into();
        mdia.minf.smhd = Some(Default::default());

        let stbl = &mut mdia.minf.stbl;
        let mp4a = stbl.stsd.mp4a.insert(Default::default());
        mp4a.data_reference_index = 1;
        mp4a.channelcount = self.channels;
        mp4a.samplesize = 16;
        mp4a.samplerate = FixedPointU16::new(OUTPUT_SAMPLE_RATE as u16);
        let esds = mp4a.esds.get_or_insert_with(Default::default);
        esds.es_desc.es_id = 1;
        let dc = &mut esds.es_desc.dec_config;
        dc.object_type_indication = 0x40; // MPEG-4 audio
        dc.stream_type = 0x05; // audio stream
        dc.buffer_size_db = self.sizes.iter().copied().max().unwrap_or(0);
        dc.avg_bitrate = u32::try_from(
            self.data_len * 8 * u64::from(OUTPUT_SAMPLE_RATE) / media_duration.max(1),
        )
        .unwrap_or(u32::MAX);
        dc.max_bitrate = bitrate(self.channels).max(dc.avg_bitrate);
        let [asc0, asc1] = audio_specific_config(self.channels);
        dc.dec_specific.profile = asc0 >> 3;
        dc.dec_specific.freq_index = ((asc0 & 0x07) << 1) | (asc1 >> 7);
        dc.dec_specific.chan_conf = (asc1 >> 3) & 0x0F;

        stbl.stts.entries.push(Default::default());
        stbl.stts.entries[0].sample_count = frames;
        stbl.stts.entries[0].sample_delta = FRAME as u32;

        let chunks = frames.div_ceil(AUS_PER_CHUNK);
        let last = frames - (chunks - 1) * AUS_PER_CHUNK;
        let mut runs = vec![(1, AUS_PER_CHUNK.min(frames))];
        if chunks > 1 && last != AUS_PER_CHUNK {
            runs.push((chunks, last));
        }
        for (first_chunk, per_chunk) in runs {
            stbl.stsc.entries.push(Default::default());
            let e = stbl.stsc.entries.last_mut().expect("pushed");
            e.first_chunk = first_chunk;
            e.samples_per_chunk = per_chunk;
            e.sample_description_index = 1;
            e.first_sample = (first_chunk - 1) * AUS_PER_CHUNK + 1;
        }

        let mut offsets = Vec::with_capacity(chunks as usize);
        let mut pos = data_start;
        for chunk in self.sizes.chunks(AUS_PER_CHUNK as usize) {
            offsets.push(pos);
            pos += chunk.iter().map(|s| u64::from(*s)).sum::<u64>();
        }
        if pos <= u64::from(u32::MAX) {
            stbl.stco.get_or_insert_with(Default::default).entries =
                offsets.into_iter().map(|o| o as u32).collect();
        } else {
            stbl.co64.get_or_insert_with(Default::default).entries = offsets;
        }
        stbl.stsz.sample_size = 0;
        stbl.stsz.sample_count = frames;
        stbl.stsz.sample_sizes = std::mem::take(&mut self.sizes);

        let mut buf = Vec::new();
        moov.write_box(&mut buf).map_err(mux_err)?;
        patch_sl_config(&mut buf);
        Ok(buf)
    }
}

/// The `mp4` crate writes the SLConfigDescriptor as `06 00 00` (length 0 followed by a
/// stray byte); ISO/IEC 14496-14 requires `06 01 02` (length 1, predefined = 2 for MP4).
/// Same size, patched in place at the end of the `esds` box.
fn patch_sl_config(moov: &mut [u8]) {
    if let Some(p) = moov.windows(4).position(|w| w == b"esds") {
        if p >= 4 {
            let size = u32::from_be_bytes(moov[p - 4..p].try_into().expect("4 bytes")) as usize;
            let end = p - 4 + size;
            if end <= moov.len() && end >= p + 7 && moov[end - 3..end] == [0x06, 0x00, 0x00] {
                moov[end - 3..end].copy_from_slice(&[0x06, 0x01, 0x02]);
            }
        }
    }
}

fn fourcc(b: &[u8; 4]) -> mp4::FourCC {
    mp4::FourCC::from(*b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn asc_matches_known_values() {
        assert_eq!(audio_specific_config(1), [0x11, 0x88]);
        assert_eq!(audio_specific_config(2), [0x11, 0x90]);
    }

    #[test]
    fn writes_a_parseable_mp4_with_edit_list() {
        for channels in [1u16, 2] {
            let mut w = AacMp4Writer::new(Cursor::new(Vec::new()), channels).unwrap();
            let frames = 48_000 + 123;
            let pcm: Vec<i16> = (0..frames * usize::from(channels))
                .map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16)
                .collect();
            for block in pcm.chunks(2048 * usize::from(channels)) {
                w.write(block).unwrap();
            }
            let delay = w.delay;
            let bytes = w.finish().unwrap().into_inner();
            let size = bytes.len() as u64;
            let mp4 = mp4::Mp4Reader::read_header(Cursor::new(&bytes), size).unwrap();
            let track = mp4.tracks().get(&1).unwrap();
            assert_eq!(track.timescale(), 48_000);
            assert_eq!(track.channel_config().unwrap() as u16, channels);
            assert!(u64::from(track.sample_count()) * 1024 >= frames as u64 + u64::from(delay));
            let elst = mp4.moov.traks[0]
                .edts
                .as_ref()
                .unwrap()
                .elst
                .as_ref()
                .unwrap();
            assert_eq!(elst.entries[0].segment_duration, frames as u64);
            assert_eq!(elst.entries[0].media_time, u64::from(delay));
            assert!(bytes
                .windows(5)
                .any(|w| w == [0x11, 0x88 + 8 * (channels as u8 - 1), 0x06, 0x01, 0x02]));
        }
    }
}
