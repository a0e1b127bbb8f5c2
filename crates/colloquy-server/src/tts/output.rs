//! Turning a run's [`Event`]s into answers: the whole JSON answer ([`collect`]), one file
//! ([`collect_file`], [`FileStream`]) and streamed chunks ([`Chunker`], for `stream/json`,
//! voice conversion's JSON and the stream-input socket).

use super::formats::{self, StreamEncoder, SAMPLE_RATE};
use super::plan::SnippetPlan;
use super::synthesis::Event;
use super::wire::{
    AudioEncoding, AudioFormat, ReturnGeneration, ReturnTts, Snippet, SnippetAudioChunk, Timestamp,
    TimestampMessage, TtsOutput,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::sync::mpsc;

/// Collects every take into the `ReturnTts` answer. `Err`: the engine failed.
pub async fn collect(
    mut rx: mpsc::Receiver<Event>,
    request_id: String,
    format: AudioFormat,
    utterances: usize,
) -> Result<ReturnTts, String> {
    struct Take {
        id: String,
        samples: Vec<i16>,
        snippets: Vec<Vec<Snippet>>,
    }
    let mut takes: Vec<Take> = Vec::new();
    let mut current: Option<(SnippetPlan, Vec<i16>, Vec<Timestamp>)> = None;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::GenerationStart { id } => takes.push(Take {
                id: id.to_string(),
                samples: Vec::new(),
                snippets: vec![Vec::new(); utterances],
            }),
            Event::SnippetStart { snippet, .. } => {
                current = Some((snippet, Vec::new(), Vec::new()))
            }
            Event::Audio(s) => {
                if let Some((_, samples, _)) = current.as_mut() {
                    samples.extend_from_slice(&s);
                }
            }
            Event::Timestamp(t) => {
                if let Some((_, _, ts)) = current.as_mut() {
                    ts.push(t);
                }
            }
            Event::SnippetEnd => {
                if let (Some((plan, samples, timestamps)), Some(take)) =
                    (current.take(), takes.last_mut())
                {
                    take.samples.extend_from_slice(&samples);
                    let snippet = Snippet {
                        id: plan.id.to_string(),
                        generation_id: take.id.clone(),
                        text: plan.text.clone(),
                        audio: B64.encode(formats::file(format, &samples)),
                        timestamps,
                        utterance_index: plan.utterance_index,
                        transcribed_text: Some(plan.text),
                    };
                    if let Some(list) = take.snippets.get_mut(plan.utterance_index) {
                        list.push(snippet);
                    }
                }
            }
            Event::GenerationEnd => {}
            Event::Failed(e) => return Err(e),
        }
    }
    let generations = takes
        .into_iter()
        .map(|t| {
            let file = formats::file(format, &t.samples);
            ReturnGeneration {
                generation_id: t.id,
                duration: t.samples.len() as f64 / SAMPLE_RATE as f64,
                file_size: file.len(),
                audio: B64.encode(&file),
                encoding: AudioEncoding {
                    format,
                    sample_rate: SAMPLE_RATE,
                },
                snippets: t.snippets,
            }
        })
        .collect();
    Ok(ReturnTts {
        generations,
        request_id,
    })
}

/// The first take as one file.
pub async fn collect_file(
    mut rx: mpsc::Receiver<Event>,
    format: AudioFormat,
) -> Result<Vec<u8>, String> {
    let mut samples = Vec::new();
    let mut takes = 0;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::GenerationStart { .. } => takes += 1,
            Event::Audio(s) if takes == 1 => samples.extend_from_slice(&s),
            Event::Failed(e) => return Err(e),
            _ => {}
        }
    }
    Ok(formats::file(format, &samples))
}

/// The first take as one file, in pieces as it is made.
pub struct FileStream {
    rx: mpsc::Receiver<Event>,
    encoder: StreamEncoder,
    finished: bool,
}

impl FileStream {
    /// Streams the run `rx` in `format`.
    pub fn new(rx: mpsc::Receiver<Event>, format: AudioFormat) -> Self {
        Self {
            rx,
            encoder: StreamEncoder::new(format),
            finished: false,
        }
    }

    /// The next bytes; `None` at the end. `Err`: the engine failed after the first byte
    /// (the stream is cut, spec §7.4).
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, String>> {
        while !self.finished {
            match self.rx.recv().await {
                Some(Event::Audio(s)) => {
                    let bytes = self.encoder.push(&s);
                    if !bytes.is_empty() {
                        return Some(Ok(bytes));
                    }
                }
                Some(Event::GenerationEnd) | None => {
                    self.finished = true;
                    let tail = self.encoder.finish();
                    if !tail.is_empty() {
                        return Some(Ok(tail));
                    }
                }
                Some(Event::Failed(e)) => {
                    self.finished = true;
                    return Some(Err(e));
                }
                Some(_) => {}
            }
        }
        None
    }
}

/// Makes the streamed chunks of a run (`SnippetAudioChunk` and `TimestampMessage` lines).
///
/// Without `strip_headers` each WAV chunk is a complete file with its own header; with it
/// a take's chunks concatenate into one file (its first chunk carries the header). MP3 has
/// no header: a take is encoded as one stream either way, so every chunk is whole frames
/// that decode on their own and the chunks concatenate into one file. One chunk is held
/// back so the snippet's last can say `is_last_chunk`.
pub struct Chunker {
    request_id: String,
    format: AudioFormat,
    strip_headers: bool,
    generation_id: String,
    snippet: Option<(SnippetPlan, bool)>,
    chunk_index: usize,
    pending: Option<Vec<u8>>,
    encoder: Option<StreamEncoder>,
}

/// A chunk line and, for audio, its bytes (the socket's binary frame).
pub type Line = (TtsOutput, Option<Vec<u8>>);

impl Chunker {
    /// Chunks for `request_id` in `format`.
    pub fn new(request_id: String, format: AudioFormat, strip_headers: bool) -> Self {
        Self {
            request_id,
            format,
            strip_headers,
            generation_id: String::new(),
            snippet: None,
            chunk_index: 0,
            pending: None,
            encoder: None,
        }
    }

    fn chunk(&mut self, bytes: Vec<u8>, last: bool) -> Line {
        let (plan, _) = self.snippet.as_ref().expect("inside a snippet");
        let chunk = SnippetAudioChunk {
            request_id: self.request_id.clone(),
            generation_id: self.generation_id.clone(),
            snippet_id: plan.id.to_string(),
            text: plan.text.clone(),
            audio: B64.encode(&bytes),
            audio_format: self.format,
            chunk_index: self.chunk_index,
            is_last_chunk: last,
            utterance_index: plan.utterance_index,
            transcribed_text: plan.transcribed_text.clone(),
        };
        self.chunk_index += 1;
        (TtsOutput::Audio(chunk), Some(bytes))
    }

    /// The lines `ev` makes. `Err`: the engine failed.
    pub fn event(&mut self, ev: Event) -> Result<Vec<Line>, String> {
        let mut out = Vec::new();
        match ev {
            Event::GenerationStart { id } => {
                self.generation_id = id.to_string();
                self.encoder = (self.strip_headers || self.format == AudioFormat::Mp3)
                    .then(|| StreamEncoder::new(self.format));
            }
            Event::SnippetStart {
                snippet,
                last_in_generation,
            } => {
                self.snippet = Some((snippet, last_in_generation));
                self.chunk_index = 0;
                self.pending = None;
            }
            Event::Audio(samples) => {
                let bytes = match self.encoder.as_mut() {
                    Some(e) => e.push(&samples),
                    None => formats::file(self.format, &samples),
                };
                if !bytes.is_empty() {
                    if let Some(previous) = self.pending.replace(bytes) {
                        out.push(self.chunk(previous, false));
                    }
                }
            }
            Event::Timestamp(timestamp) => {
                if let Some((plan, _)) = &self.snippet {
                    out.push((
                        TtsOutput::Timestamp(TimestampMessage {
                            request_id: self.request_id.clone(),
                            generation_id: self.generation_id.clone(),
                            snippet_id: plan.id.to_string(),
                            timestamp,
                        }),
                        None,
                    ));
                }
            }
            Event::SnippetEnd => {
                let last_in_generation = self.snippet.as_ref().is_some_and(|(_, l)| *l);
                let mut bytes = self.pending.take().unwrap_or_default();
                if last_in_generation {
                    if let Some(e) = self.encoder.as_mut() {
                        bytes.extend(e.finish());
                    }
                }
                if self.snippet.is_some() {
                    out.push(self.chunk(bytes, true));
                }
            }
            Event::GenerationEnd => {}
            Event::Failed(e) => return Err(e),
        }
        Ok(out)
    }
}
