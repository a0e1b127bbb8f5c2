//! Turning one voice's record log into time-placed 48 kHz mono audio.
//!
//! A voice is a [`Source`] of [`Piece`]s: runs of samples at known positions on the
//! output timeline, in time order and never overlapping each other. Sources decode
//! lazily, one record (or one packet / block) at a time.

pub(crate) mod input;
pub(crate) mod pcm;
pub(crate) mod wav;
pub(crate) mod webm;
pub(crate) mod webm_stream;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use crate::record::{read_full, RecordReader};
use crate::resample::StreamResampler;
use crate::{AudioError, Linear16Format, MixOptions, VoiceFormat, VoiceInput, MAX_TIMELINE_MS};
use crate::{OUTPUT_SAMPLE_RATE, SAMPLES_PER_MS};

use self::wav::WavStream;
use self::webm::{WebmOpusDecoder, EBML_MAGIC};

/// Samples at 48 kHz mono, starting at `start` on the output timeline.
#[derive(Debug)]
pub(crate) struct Piece {
    pub start: u64,
    pub samples: Vec<f32>,
}

/// One voice's audio, pulled piece by piece.
pub(crate) trait Source {
    /// The next piece (starting at or after the end of the previous one), `None` at the end.
    fn next_piece(&mut self) -> Result<Option<Piece>, AudioError>;
    /// Number of clips (contiguous runs of audio) started so far.
    fn clips(&self) -> usize;
}

/// Builds the source for one voice.
pub(crate) fn open_source<'a, R: Read + 'a>(
    input: VoiceInput<R>,
    opts: &MixOptions,
) -> Result<Box<dyn Source + 'a>, AudioError> {
    let records = RecordReader::new(input.records);
    let tolerance = u64::from(opts.gap_tolerance_ms) * SAMPLES_PER_MS;
    Ok(match input.format {
        VoiceFormat::Linear16(format) => {
            format.validate()?;
            Box::new(ClipSource::new(
                records,
                ClipKind::Linear16(format),
                tolerance,
            ))
        }
        VoiceFormat::WavClips => Box::new(ClipSource::new(records, ClipKind::Wav, tolerance)),
        VoiceFormat::Container => Box::new(ContainerSource {
            state: ContainerState::Unread(records, opts.temp_dir.clone()),
            clips: 0,
            scratch: Vec::new(),
        }),
    })
}

/// Arrival offset in output samples (negative offsets clamp to the chat start).
fn offset_to_samples(offset_ms: i64) -> Result<u64, AudioError> {
    let ms = offset_ms.max(0) as u64;
    if ms > MAX_TIMELINE_MS {
        return Err(AudioError::TimelineTooLong {
            ms,
            max_ms: MAX_TIMELINE_MS,
        });
    }
    Ok(ms * SAMPLES_PER_MS)
}

// ---------------------------------------------------------------------------
// Record-per-chunk sources: linear16 chunks and whole-WAV clips.

#[derive(Debug, Clone, Copy)]
enum ClipKind {
    Linear16(Linear16Format),
    Wav,
}

/// A contiguous run of chunks played back-to-back through one resampler.
struct Run {
    start: u64,
    emitted: u64,
    resampler: StreamResampler,
}

impl Run {
    /// Where the run's audio ends, counting input not yet flushed out of the resampler.
    fn end(&self) -> u64 {
        self.start + self.resampler.expected_output()
    }
}

/// Places each record's audio by the rule: right after the previous chunk unless it
/// arrived more than `tolerance` later than that end (then at its arrival time).
struct ClipSource<R> {
    records: RecordReader<R>,
    kind: ClipKind,
    tolerance: u64,
    run: Option<Run>,
    clips: usize,
    ready: VecDeque<Piece>,
    done: bool,
    scratch: Vec<f32>,
}

impl<R: Read> ClipSource<R> {
    fn new(records: RecordReader<R>, kind: ClipKind, tolerance: u64) -> Self {
        Self {
            records,
            kind,
            tolerance,
            run: None,
            clips: 0,
            ready: VecDeque::new(),
            done: false,
            scratch: Vec::new(),
        }
    }

    fn end_run(&mut self) -> Result<(), AudioError> {
        if let Some(mut run) = self.run.take() {
            let mut out = Vec::new();
            run.resampler.finish(&mut out)?;
            emit(&mut run, out, &mut self.ready);
        }
        Ok(())
    }

    fn start_run(&mut self, start: u64, rate: u32) -> Result<(), AudioError> {
        self.run = Some(Run {
            start,
            emitted: 0,
            resampler: StreamResampler::new(rate)?,
        });
        Ok(())
    }

    /// Chooses where a chunk of `rate` audio that arrived at `arrival` goes.
    fn place(&mut self, arrival: u64, rate: u32) -> Result<(), AudioError> {
        match &self.run {
            Some(run) if arrival <= run.end() + self.tolerance => {
                if run.resampler.in_rate() != rate {
                    // Back-to-back, but the format changed: new resampler, same clip.
                    let end = run.end();
                    self.end_run()?;
                    self.start_run(end, rate)?;
                }
            }
            Some(_) => {
                self.end_run()?;
                self.start_run(arrival, rate)?;
                self.clips += 1;
            }
            None => {
                self.start_run(arrival, rate)?;
                self.clips += 1;
            }
        }
        Ok(())
    }
}

fn emit(run: &mut Run, samples: Vec<f32>, ready: &mut VecDeque<Piece>) {
    if !samples.is_empty() {
        let start = run.start + run.emitted;
        run.emitted += samples.len() as u64;
        ready.push_back(Piece { start, samples });
    }
}

impl<R: Read> Source for ClipSource<R> {
    fn next_piece(&mut self) -> Result<Option<Piece>, AudioError> {
        loop {
            if let Some(piece) = self.ready.pop_front() {
                return Ok(Some(piece));
            }
            if self.done {
                return Ok(None);
            }
            let Some((offset_ms, bytes)) = self.records.next_record()? else {
                self.end_run()?;
                self.done = true;
                continue;
            };
            if bytes.is_empty() {
                continue;
            }
            self.scratch.clear();
            let rate = match self.kind {
                ClipKind::Linear16(format) => {
                    pcm::linear16_to_mono(format, bytes, &mut self.scratch)?;
                    format.sample_rate
                }
                ClipKind::Wav => wav::decode_clip(bytes, &mut self.scratch)?.sample_rate,
            };
            if self.scratch.is_empty() {
                continue;
            }
            let arrival = offset_to_samples(offset_ms)?;
            self.place(arrival, rate)?;
            let run = self.run.as_mut().expect("place() leaves a run");
            let mut out = Vec::with_capacity(self.scratch.len() * 4);
            run.resampler.process(&self.scratch, &mut out)?;
            emit(run, out, &mut self.ready);
        }
    }

    fn clips(&self) -> usize {
        self.clips
    }
}

// ---------------------------------------------------------------------------
// Container streams: WebM/Opus or WAV split arbitrarily across records.

/// Frames decoded per WAV read.
const WAV_BLOCK_FRAMES: usize = 4096;
/// Opus packets starting within this many samples after the previous one's end are
/// treated as contiguous (block timestamps are rounded to the timestamp scale).
const WEBM_JITTER: i64 = 5 * SAMPLES_PER_MS as i64;

enum ContainerState<R> {
    Unread(RecordReader<R>, Option<std::path::PathBuf>),
    Wav {
        stream: WavStream<SpoolReader>,
        resampler: StreamResampler,
        start: u64,
        emitted: u64,
    },
    Webm {
        decoder: Box<WebmOpusDecoder<SpoolReader>>,
        base: u64,
        next: Option<i64>,
    },
    Done,
}

/// The stream is spooled to an anonymous temp file (disk, not memory) because the
/// demuxer needs `Read + Seek`; it is then decoded incrementally.
struct ContainerSource<R> {
    state: ContainerState<R>,
    clips: usize,
    scratch: Vec<f32>,
}

impl<R: Read> ContainerSource<R> {
    fn open(&mut self) -> Result<(), AudioError> {
        let ContainerState::Unread(records, dir) = &mut self.state else {
            return Ok(());
        };
        let file = match dir {
            Some(dir) => tempfile::tempfile_in(dir)?,
            None => tempfile::tempfile()?,
        };
        let mut spool = BufWriter::new(file);
        let mut base = None;
        while let Some((offset_ms, bytes)) = records.next_record()? {
            if bytes.is_empty() {
                continue;
            }
            if base.is_none() {
                base = Some(offset_to_samples(offset_ms)?);
            }
            spool.write_all(bytes)?;
        }
        let Some(base) = base else {
            self.state = ContainerState::Done;
            return Ok(());
        };
        let file = spool.into_inner().map_err(|e| e.into_error())?;
        let mut reader = SpoolReader::new(file)?;
        let mut head = [0u8; 12];
        let got = read_full(&mut reader, &mut head)?;
        reader.seek(SeekFrom::Start(0))?;
        self.state = if got >= 4 && head[..4] == EBML_MAGIC {
            ContainerState::Webm {
                decoder: Box::new(WebmOpusDecoder::open(reader)?),
                base,
                next: None,
            }
        } else if wav::looks_like_wav(&head[..got]) {
            let stream = WavStream::open(reader)?;
            ContainerState::Wav {
                resampler: StreamResampler::new(stream.header.sample_rate)?,
                stream,
                start: base,
                emitted: 0,
            }
        } else {
            return Err(AudioError::UnrecognizedContainer);
        };
        Ok(())
    }
}

impl<R: Read> Source for ContainerSource<R> {
    fn next_piece(&mut self) -> Result<Option<Piece>, AudioError> {
        self.open()?;
        loop {
            self.scratch.clear();
            match &mut self.state {
                ContainerState::Unread(..) => unreachable!("opened above"),
                ContainerState::Done => return Ok(None),
                ContainerState::Wav {
                    stream,
                    resampler,
                    start,
                    emitted,
                } => {
                    let mut out = Vec::new();
                    let more = stream.read_mono(WAV_BLOCK_FRAMES, &mut self.scratch)?;
                    if more {
                        resampler.process(&self.scratch, &mut out)?;
                    } else {
                        resampler.finish(&mut out)?;
                    }
                    let piece_start = *start + *emitted;
                    *emitted += out.len() as u64;
                    if !more {
                        self.state = ContainerState::Done;
                    }
                    if out.is_empty() {
                        continue;
                    }
                    self.clips = 1;
                    return Ok(Some(Piece {
                        start: piece_start,
                        samples: out,
                    }));
                }
                ContainerState::Webm {
                    decoder,
                    base,
                    next,
                } => {
                    let Some(pos) = decoder.next_packet(&mut self.scratch)? else {
                        self.state = ContainerState::Done;
                        continue;
                    };
                    let len = self.scratch.len() as i64;
                    let start = match *next {
                        Some(n) if pos <= n + WEBM_JITTER => n,
                        _ => {
                            self.clips += 1;
                            pos
                        }
                    };
                    *next = Some(start + len);
                    // Drop priming samples before the stream start.
                    let drop = usize::try_from(-start).unwrap_or(0).min(self.scratch.len());
                    if drop == self.scratch.len() {
                        continue;
                    }
                    let abs = *base + start.max(0) as u64;
                    if abs / SAMPLES_PER_MS > MAX_TIMELINE_MS {
                        return Err(AudioError::TimelineTooLong {
                            ms: abs / SAMPLES_PER_MS,
                            max_ms: MAX_TIMELINE_MS,
                        });
                    }
                    return Ok(Some(Piece {
                        start: abs,
                        samples: self.scratch[drop..].to_vec(),
                    }));
                }
            }
        }
    }

    fn clips(&self) -> usize {
        self.clips
    }
}

const _: () = assert!(OUTPUT_SAMPLE_RATE as u64 == SAMPLES_PER_MS * 1000);

/// Buffered reader over the spool file with `Cursor`-like seeking: seeks only move a
/// logical position (applied lazily, within the buffer when possible), and positions
/// past the end are allowed and read as EOF. The demuxer relies on both: it seeks past
/// unknown-size ("live") elements, which some filesystems refuse with `EINVAL`, and it
/// probes the stream length around every frame.
pub(crate) struct SpoolReader {
    inner: BufReader<File>,
    len: u64,
    pos: u64,
    inner_pos: u64,
}

impl SpoolReader {
    fn new(mut file: File) -> io::Result<Self> {
        let len = file.seek(SeekFrom::End(0))?;
        file.seek(SeekFrom::Start(0))?;
        Ok(Self {
            inner: BufReader::with_capacity(64 * 1024, file),
            len,
            pos: 0,
            inner_pos: 0,
        })
    }
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        if self.inner_pos != self.pos {
            let delta = i64::try_from(i128::from(self.pos) - i128::from(self.inner_pos))
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
            self.inner.seek_relative(delta)?;
            self.inner_pos = self.pos;
        }
        let max = usize::try_from(self.len - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..max])?;
        self.pos += n as u64;
        self.inner_pos = self.pos;
        Ok(n)
    }
}

impl Seek for SpoolReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => i128::from(n),
            SeekFrom::End(d) => i128::from(self.len) + i128::from(d),
            SeekFrom::Current(d) => i128::from(self.pos) + i128::from(d),
        };
        if target < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before start",
            ));
        }
        self.pos = u64::try_from(target).unwrap_or(u64::MAX);
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::write_record;

    fn pcm_chunk(ms: usize, rate: u32, value: i16) -> Vec<u8> {
        let n = ms * rate as usize / 1000;
        (0..n).flat_map(|_| value.to_le_bytes()).collect()
    }

    fn collect(src: &mut dyn Source) -> Vec<(u64, usize)> {
        let mut pieces: Vec<(u64, usize)> = Vec::new();
        while let Some(p) = src.next_piece().unwrap() {
            // Merge contiguous pieces to see the clip layout.
            match pieces.last_mut() {
                Some((s, l)) if *s + *l as u64 == p.start => *l += p.samples.len(),
                _ => pieces.push((p.start, p.samples.len())),
            }
        }
        pieces
    }

    #[test]
    fn jitter_burst_and_pause_placement() {
        let fmt = Linear16Format {
            sample_rate: 48_000,
            channels: 1,
        };
        let mut log = Vec::new();
        // 10 chunks of 20 ms arriving with jitter (late by up to 40 ms) and in a burst.
        let arrivals = [1000, 1025, 1030, 1070, 1075, 1075, 1075, 1075, 1190, 1200];
        for a in arrivals {
            write_record(&mut log, a, &pcm_chunk(20, 48_000, 1000)).unwrap();
        }
        // Pause: the next chunk arrives 1 s after the audio ended (at 1200 ms).
        write_record(&mut log, 2200, &pcm_chunk(20, 48_000, 1000)).unwrap();
        let input = VoiceInput {
            format: VoiceFormat::Linear16(fmt),
            records: &log[..],
        };
        let mut src = open_source(input, &MixOptions::default()).unwrap();
        let layout = collect(src.as_mut());
        assert_eq!(layout, vec![(48_000, 9_600), (2200 * 48, 960)]);
        assert_eq!(src.clips(), 2);
    }

    #[test]
    fn offsets_beyond_limit_are_rejected() {
        let mut log = Vec::new();
        write_record(&mut log, i64::MAX, &[0, 0]).unwrap();
        let input = VoiceInput {
            format: VoiceFormat::Linear16(Linear16Format {
                sample_rate: 16_000,
                channels: 1,
            }),
            records: &log[..],
        };
        let mut src = open_source(input, &MixOptions::default()).unwrap();
        assert!(matches!(
            src.next_piece(),
            Err(AudioError::TimelineTooLong { .. })
        ));
    }
}
