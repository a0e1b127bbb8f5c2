//! The pipeline engine inside the session loop: Colloquy answers the user itself.
//!
//! A turn starts with `user_input`, or with speech in `audio_input`: turn detection finds
//! where the user stops talking and the utterance is transcribed into a `user_message`;
//! speech while the assistant talks interrupts it (`user_interruption`). The model's
//! answer arrives as [`TurnOutput`]s, recorded and sent here: one `AGENT_MESSAGE` +
//! `assistant_message` per sentence followed by its `audio_output` chunks, `tool_call`s
//! (`FUNCTION_CALL`) that wait for the client's answer, then `assistant_end`. See
//! `docs/engines.md`.

use super::{End, Session};
use crate::engine::expression::{prosody_inference, ExpressionClient};
use crate::engine::pipeline::{Services, Turn, TurnOutput};
use base64::Engine;
use colloquy_audio::{
    linear16_to_mono, AudioError, Linear16Format, WavChunkDecoder, WebmOpusStream, EBML_MAGIC,
};
use colloquy_speech::pcm::to_i16;
use colloquy_speech::prompt::{
    build_messages, history_messages, tool_definitions, HANG_UP_TOOL_NAME,
};
use colloquy_speech::{ChatMessage, ChatRequest, Pcm, TurnDetector, VadEvent};
use colloquy_storage::PageRequest;
use colloquy_wire::socket::{AudioConfiguration, MillisecondInterval};
use colloquy_wire::socket::{ChatMessage as WireMessage, Inference, ServerMessage};
use colloquy_wire::{EventRole, EventType, ReturnChatEvent};
use std::sync::Arc;
use std::time::Duration;

/// A pipeline chat's conversation and its running answer.
pub(super) struct Pipeline {
    services: Arc<Services>,
    /// Earlier chats of a resumed group.
    history: Vec<ChatMessage>,
    /// This chat's messages so far.
    turns: Vec<ChatMessage>,
    /// The answer being produced.
    turn: Option<Turn>,
    /// Text of the current answer sent so far.
    answer: String,
    /// Sentences of the current answer sent so far.
    sentences: usize,
    /// Tool calls of the current answer still waiting for the client.
    pending_tools: Vec<String>,
    /// `pause_assistant_message` received: output waits until `resume_assistant_message`.
    pub(super) paused: bool,
    /// Where the assistant's speech sent so far ends (ms from the chat's start), so the next
    /// chunk is recorded after it, as the client plays it.
    speech_end_ms: i64,
    /// The last spoken sentence: its `AGENT_MESSAGE` id and where its speech starts and
    /// ends on the timeline (to tell whether an interruption cut it).
    last_spoken: Option<(uuid::Uuid, i64, i64)>,
    /// An answer is being produced (user speech now is an interruption).
    answering: bool,
    /// Turn detection on the user's audio, for its sample rate.
    detector: Option<(u32, TurnDetector)>,
    /// How the user's `audio_input` chunks are decoded for turn detection.
    input: InputDecoder,
    /// Stream times of the utterance being transcribed.
    heard_span: (i64, i64),
    /// Speech sent but not yet playing: `(offset_ms, duration_ms, wav)`, recorded once it
    /// plays, dropped if an interruption comes first.
    unplayed: std::collections::VecDeque<(i64, i64, Vec<u8>)>,
    /// Where the recorded speech ends.
    played_end_ms: i64,
    /// `verbose_transcription=true`: interim `user_message`s while transcribing.
    pub(super) verbose: bool,
    /// Emotion scores of the user's speech (`[engine.expression]`); one socket per chat,
    /// opened at the first utterance.
    expression: Option<ExpressionClient>,
}

/// How long before the end of the speech already sent the next output is sent.
const SEND_AHEAD_MS: i64 = 300;

impl Pipeline {
    pub(super) fn new(services: Services) -> Self {
        Self {
            services: Arc::new(services),
            history: Vec::new(),
            turns: Vec::new(),
            turn: None,
            answer: String::new(),
            sentences: 0,
            pending_tools: Vec::new(),
            paused: false,
            speech_end_ms: 0,
            last_spoken: None,
            answering: false,
            detector: None,
            input: InputDecoder::default(),
            heard_span: (0, 0),
            unplayed: std::collections::VecDeque::new(),
            played_end_ms: 0,
            verbose: false,
            expression: None,
        }
    }

    /// Output is paced to playback: the next sentence goes out shortly before the speech
    /// already sent ends, so an interruption cuts at most the sentence being heard.
    pub(super) fn pace(&self, now_offset_ms: i64) -> Option<Duration> {
        let wait = self.speech_end_ms - SEND_AHEAD_MS - now_offset_ms;
        (wait > 0 && self.turn.is_some()).then(|| Duration::from_millis(wait as u64))
    }

    /// Where to wait for the running answer's next output (`None`: nothing to wait for).
    pub(super) fn receiver(&mut self) -> Option<&mut tokio::sync::mpsc::Receiver<TurnOutput>> {
        if self.paused {
            return None;
        }
        self.turn.as_mut().map(Turn::receiver)
    }

    /// Keeps what was said of the current answer and cancels the rest.
    fn stop_answer(&mut self) {
        self.turn = None;
        self.answering = false;
        let said = std::mem::take(&mut self.answer);
        if !said.trim().is_empty() {
            self.turns.push(ChatMessage::assistant(said.trim()));
        }
        self.sentences = 0;
        self.pending_tools.clear();
    }
}

impl Session {
    /// Loads a resumed group's earlier events as the model's history.
    pub(super) async fn load_pipeline_history(&mut self) {
        if self.pipeline.is_some() {
            let limit = self
                .settings
                .event_limit
                .map(|l| l as usize)
                .unwrap_or(self.state.settings.engine.pipeline.event_limit);
            let mut events: Vec<ReturnChatEvent> = Vec::new();
            let mut number = 0;
            loop {
                let page = PageRequest {
                    number,
                    size: 100,
                    ascending: true,
                };
                match self
                    .state
                    .store
                    .list_group_events(self.group_id, page)
                    .await
                {
                    Ok(page) => {
                        let done = page.items.len() < 100;
                        events.extend(
                            page.items
                                .into_iter()
                                .filter(|e| e.chat_id != self.chat_id)
                                .map(ReturnChatEvent::from),
                        );
                        if done {
                            break;
                        }
                        number += 1;
                    }
                    Err(e) => {
                        tracing::warn!(chat_id = %self.chat_id, error = %e, "could not read the group's history; the model starts without it");
                        break;
                    }
                }
            }
            let history = history_messages(&events, limit);
            if let Some(p) = self.pipeline.as_mut() {
                p.history = history;
            }
        }
    }

    /// A typed user turn: the model answers it.
    pub(super) async fn pipeline_user_turn(&mut self, text: String) -> Result<(), End> {
        let Some(p) = self.pipeline.as_mut() else {
            return Ok(());
        };
        p.stop_answer();
        p.turns.push(ChatMessage::user(text));
        self.start_answer().await
    }

    /// The client answered a tool call; once every call of the answer is answered, the
    /// model continues.
    pub(super) async fn pipeline_tool_result(
        &mut self,
        tool_call_id: &str,
        content: String,
    ) -> Result<(), End> {
        let Some(p) = self.pipeline.as_mut() else {
            return Ok(());
        };
        let Some(i) = p.pending_tools.iter().position(|id| id == tool_call_id) else {
            return Ok(());
        };
        p.pending_tools.remove(i);
        p.turns
            .push(ChatMessage::tool_result(tool_call_id, content));
        if p.pending_tools.is_empty() {
            p.turn = None;
            p.answer.clear();
            return self.start_answer().await;
        }
        Ok(())
    }

    async fn start_answer(&mut self) -> Result<(), End> {
        let engine = &self.state.settings.engine.pipeline;
        let system = self
            .settings
            .system_prompt
            .clone()
            .or_else(|| engine.system_prompt.clone())
            .unwrap_or_default();
        let variables = self.settings.variables.clone().unwrap_or_default();
        let context = self
            .settings
            .context
            .as_ref()
            .and_then(|c| c.get("text").and_then(|t| t.as_str()).map(str::to_string));
        if self
            .settings
            .context
            .as_ref()
            .and_then(|c| c.get("type"))
            .and_then(|t| t.as_str())
            .is_none_or(|t| t == "temporary")
        {
            // Temporary context applies to the next answer only.
            self.settings.context = None;
        }
        let tools = match tool_definitions(
            self.settings.tools.as_deref().unwrap_or_default(),
            self.settings.builtin_tools.as_deref().unwrap_or_default(),
        ) {
            Ok(t) => t,
            Err(e) => {
                return self
                    .client_error(
                        "E0101",
                        "invalid_message",
                        format!("session_settings.tools cannot be offered to the model: {e}"),
                    )
                    .await;
            }
        };
        let Some(p) = self.pipeline.as_mut() else {
            return Ok(());
        };
        let request = ChatRequest {
            messages: build_messages(
                &system,
                &variables,
                &p.history,
                &p.turns,
                context.as_deref(),
            ),
            tools,
            ..ChatRequest::default()
        };
        p.answer.clear();
        p.sentences = 0;
        p.answering = true;
        p.turn = Some(Turn::start(p.services.clone(), request));
        Ok(())
    }

    /// Records and sends one output of the running answer.
    pub(super) async fn on_turn_output(&mut self, out: Option<TurnOutput>) -> Result<(), End> {
        let now = self.offset_now();
        self.release_speech(Some(now)).await;
        let Some(out) = out else {
            // The task ended without a last word (it cannot, short of a panic).
            if let Some(p) = self.pipeline.as_mut() {
                p.turn = None;
                p.answering = false;
            }
            return Ok(());
        };
        match out {
            TurnOutput::Sentence { text, audio } => self.say_sentence(text, audio).await,
            TurnOutput::HeardSoFar(text) => {
                let Some(p) = self.pipeline.as_ref() else {
                    return Ok(());
                };
                let (begin, end) = p.heard_span;
                // Interim transcripts are sent, not recorded (as in the hosted API).
                self.send_or_end(&ServerMessage::UserMessage {
                    message: WireMessage {
                        role: "user".into(),
                        content: Some(text),
                    },
                    models: Inference::default(),
                    time: MillisecondInterval { begin, end },
                    from_text: false,
                    interim: true,
                })
                .await
            }
            TurnOutput::Heard { text, scores } => {
                let Some(p) = self.pipeline.as_mut() else {
                    return Ok(());
                };
                p.turn = None;
                let (begin, end) = p.heard_span;
                if text.trim().is_empty() {
                    return Ok(()); // noise, or nothing the service understood
                }
                // Scores only when the expression service measured this utterance.
                let models = Inference {
                    prosody: scores.as_ref().map(prosody_inference),
                };
                let mut ev = self.event(EventRole::User, EventType::UserMessage, &text);
                ev.emotion_features = scores.as_ref().and_then(|s| serde_json::to_string(s).ok());
                self.record(vec![ev]).await?;
                self.send_or_end(&ServerMessage::UserMessage {
                    message: WireMessage {
                        role: "user".into(),
                        content: Some(text.clone()),
                    },
                    models,
                    time: MillisecondInterval { begin, end },
                    from_text: false,
                    interim: false,
                })
                .await?;
                self.pipeline_user_turn(text).await
            }
            TurnOutput::ToolCall {
                id,
                name,
                arguments,
            } => {
                let builtin = name == HANG_UP_TOOL_NAME;
                let msg = ServerMessage::ToolCall {
                    name: name.clone(),
                    parameters: arguments.clone(),
                    tool_call_id: id.clone(),
                    tool_type: if builtin { "builtin" } else { "function" }.into(),
                    response_required: !builtin,
                };
                let text = serde_json::to_string(&msg).unwrap_or_default();
                let ev = self.event(EventRole::Tool, EventType::FunctionCall, &text);
                self.record(vec![ev]).await?;
                if builtin {
                    tracing::info!(chat_id = %self.chat_id, "the model hung up");
                    return Err(End::HangUp);
                }
                if let Some(p) = self.pipeline.as_mut() {
                    let said = std::mem::take(&mut p.answer);
                    match p.turns.last_mut() {
                        Some(last) if !p.pending_tools.is_empty() => {
                            let mut call = ChatMessage::assistant_tool_call(&id, &name, &arguments);
                            last.tool_calls.append(&mut call.tool_calls);
                        }
                        _ => {
                            let mut call = ChatMessage::assistant_tool_call(&id, &name, &arguments);
                            if !said.trim().is_empty() {
                                call.content = Some(said.trim().to_string());
                            }
                            p.turns.push(call);
                        }
                    }
                    p.pending_tools.push(id);
                }
                self.send_or_end(&msg).await
            }
            TurnOutput::Done => {
                let Some(p) = self.pipeline.as_mut() else {
                    return Ok(());
                };
                p.turn = None;
                p.answering = false;
                if !p.pending_tools.is_empty() {
                    return Ok(()); // the answer goes on after the tool results
                }
                let said = std::mem::take(&mut p.answer);
                if !said.trim().is_empty() {
                    p.turns.push(ChatMessage::assistant(said.trim()));
                }
                self.send_or_end(&ServerMessage::AssistantEnd {}).await
            }
            TurnOutput::Failed(detail) => {
                tracing::warn!(chat_id = %self.chat_id, error = %detail, "pipeline answer failed");
                let Some(p) = self.pipeline.as_mut() else {
                    return Ok(());
                };
                let spoke = p.sentences > 0;
                p.stop_answer();
                self.send_error(
                    "I0300",
                    "pipeline_service_failed",
                    format!("the assistant could not answer: {detail}"),
                )
                .await?;
                if spoke {
                    self.send_or_end(&ServerMessage::AssistantEnd {}).await?;
                }
                Ok(())
            }
        }
    }

    /// One sentence: `AGENT_MESSAGE` committed, then `assistant_message` and its audio.
    async fn say_sentence(&mut self, text: String, audio: Vec<Vec<u8>>) -> Result<(), End> {
        let ev = self.event(EventRole::Agent, EventType::AgentMessage, &text);
        let id = ev.id.to_string();
        self.record(vec![ev]).await?;
        if let Some(p) = self.pipeline.as_mut() {
            if !p.answer.is_empty() {
                p.answer.push(' ');
            }
            p.answer.push_str(text.trim());
            p.sentences += 1;
        }
        self.send_or_end(&ServerMessage::AssistantMessage {
            id: id.clone(),
            message: WireMessage {
                role: "assistant".into(),
                content: Some(text),
            },
            models: Inference::default(),
            from_text: false,
            is_quick_response: false,
        })
        .await?;
        let start = match self.pipeline.as_ref() {
            Some(p) => p.speech_end_ms.max(self.offset_now()),
            None => 0,
        };
        for (index, chunk) in audio.iter().enumerate() {
            self.capture_pipeline_speech(chunk).await;
            if let (Some(p), Ok(uuid)) = (self.pipeline.as_mut(), uuid::Uuid::parse_str(&id)) {
                p.last_spoken = Some((uuid, start, p.speech_end_ms));
            }
            self.send_or_end(&ServerMessage::AudioOutput {
                id: id.clone(),
                index: index as u32,
                data: base64::engine::general_purpose::STANDARD.encode(chunk),
            })
            .await?;
        }
        Ok(())
    }

    /// Places one `audio_output` chunk on the timeline where the client plays it: after the
    /// speech sent before it. It is recorded once its playback has started
    /// ([`Self::release_speech`]), so speech cut by an interruption before it was heard is
    /// not in the recording.
    async fn capture_pipeline_speech(&mut self, wav: &[u8]) {
        let now = self.offset_now();
        let Some(p) = self.pipeline.as_mut() else {
            return;
        };
        let (offset, ms) = super::speak::place_after(&mut p.speech_end_ms, now, wav);
        p.unplayed.push_back((offset, ms, wav.to_vec()));
    }

    /// Records the speech whose playback started by `upto` (ms from the chat's start; `None`:
    /// all of it). Returns where the recorded speech ends.
    pub(super) async fn release_speech(&mut self, upto: Option<i64>) -> i64 {
        let Some(p) = self.pipeline.as_mut() else {
            return 0;
        };
        let mut ready = Vec::new();
        while let Some((offset, _, _)) = p.unplayed.front() {
            if upto.is_some_and(|t| *offset > t) {
                break;
            }
            if let Some(chunk) = p.unplayed.pop_front() {
                p.played_end_ms = chunk.0 + chunk.1;
                ready.push(chunk);
            }
        }
        let played_end = p.played_end_ms;
        if !self.who.data_retention || ready.is_empty() {
            return played_end;
        }
        for (offset, _, wav) in ready {
            self.record_assistant_clip(offset, &wav).await;
        }
        played_end
    }
}

impl Session {
    /// Feeds one accepted `audio_input` chunk to turn detection: speech while the
    /// assistant talks interrupts it; the end of an utterance starts its transcription.
    pub(super) async fn pipeline_audio(&mut self, bytes: &[u8]) -> Result<(), End> {
        let now = self.offset_now();
        self.release_speech(Some(now)).await;
        let format = self.settings.audio.clone();
        let Some(p) = self.pipeline.as_mut() else {
            return Ok(());
        };
        let Some(asr) = p.services.asr.clone() else {
            return Ok(()); // no transcription service: spoken turns are not answered
        };
        let pcm = match p.input.decode(bytes, format.as_ref()) {
            Ok(Some(pcm)) => pcm,
            Ok(None) => return Ok(()),
            Err(e) => {
                if std::mem::replace(&mut p.input.told, true) {
                    tracing::debug!(chat_id = %self.chat_id, error = %e, "audio_input cannot be decoded for turn detection");
                    return Ok(());
                }
                tracing::warn!(chat_id = %self.chat_id, error = %e, "audio_input cannot be decoded for turn detection; telling the client once");
                // Once per chat: the audio is still recorded, and the chat goes on.
                return self
                    .send_error(
                        "E0104",
                        "invalid_audio",
                        format!(
                            "this audio_input could not be decoded for turn detection, so the \
                             assistant cannot hear it (it is still recorded): {e}. Send raw \
                             linear16 declared in session_settings.audio, a WebM/Opus stream, \
                             or chunks that are each a complete WAV file"
                        ),
                    )
                    .await;
            }
        };
        if pcm.samples.is_empty() {
            return Ok(());
        }
        let vad = p.services.vad.clone();
        let detector = match &mut p.detector {
            Some((rate, d)) if *rate == pcm.sample_rate => d,
            slot => {
                let d = TurnDetector::new(vad, pcm.sample_rate);
                &mut slot.insert((pcm.sample_rate, d)).1
            }
        };
        let events = detector.push(&pcm.samples);
        for event in events {
            match event {
                VadEvent::SpeechStart { .. } => self.pipeline_interrupt().await?,
                VadEvent::SpeechEnd {
                    start_ms,
                    end_ms,
                    audio,
                } => {
                    let measure = &self.state.settings.engine.expression;
                    if let Some(p) = self.pipeline.as_mut() {
                        p.stop_answer();
                        p.heard_span = (start_ms as i64, end_ms as i64);
                        if p.expression.is_none() {
                            p.expression = ExpressionClient::from_settings(measure);
                        }
                        let expression = p.expression.clone();
                        p.turn = Some(Turn::transcribe(asr.clone(), audio, p.verbose, expression));
                    }
                }
            }
        }
        Ok(())
    }

    /// The user started speaking: if the assistant is talking (an answer is coming or its
    /// speech is still playing), it stops, and the interruption is recorded and sent.
    async fn pipeline_interrupt(&mut self) -> Result<(), End> {
        let now = self.offset_now();
        let Some(p) = self.pipeline.as_mut() else {
            return Ok(());
        };
        if !(p.answering || p.speech_end_ms > now) {
            return Ok(());
        }
        let cut = p.last_spoken.filter(|&(_, _, end)| end > now);
        p.stop_answer();
        // The client stops playing: what had started is recorded, the rest is dropped.
        let played_end = self.release_speech(Some(now)).await;
        let Some(p) = self.pipeline.as_mut() else {
            return Ok(());
        };
        p.unplayed.clear();
        p.speech_end_ms = played_end.max(now);
        let time = crate::clock::now_ms();
        let mut ev = self.event(EventRole::User, EventType::UserInterruption, "");
        let mut meta = serde_json::json!({ "time": time, "truncated": cut.is_some() });
        if let Some((id, start, end)) = cut {
            meta["heard_ms"] = serde_json::json!(now - start);
            meta["duration_ms"] = serde_json::json!(end - start);
            ev.related_event_id = Some(id);
        }
        ev.metadata = Some(meta.to_string());
        self.record(vec![ev]).await?;
        self.send_or_end(&ServerMessage::UserInterruption { time })
            .await
    }
}

/// Decodes the user's `audio_input` chunks for turn detection, keeping the state of a
/// WebM/Opus stream across chunks.
#[derive(Debug, Default)]
struct InputDecoder {
    /// The WebM/Opus stream being decoded (`None` before one starts, or after it failed).
    webm: Option<WebmOpusStream>,
    /// A WebM/Opus stream failed: its further chunks are ignored until a new one starts.
    webm_failed: bool,
    /// The client was told its audio cannot be heard (once per chat).
    told: bool,
    /// The WAV stream being heard: chunks after its header are raw samples.
    wav: Option<WavChunkDecoder>,
}

impl InputDecoder {
    /// One chunk as mono PCM: raw linear16 as `session_settings.audio` declares; else by its
    /// first bytes, a WAV file or the start of a WAV stream (`RIFF`; the chunks after it
    /// without a header are its raw samples) or the start or continuation of a WebM/Opus
    /// stream (EBML magic; one stream across chunks, decoded at 48 kHz).
    /// `Ok(None)`: nothing to hear (no samples yet, or the rest of a failed stream).
    fn decode(
        &mut self,
        bytes: &[u8],
        format: Option<&AudioConfiguration>,
    ) -> Result<Option<Pcm>, AudioError> {
        if let Some(a) = format {
            let format = Linear16Format {
                sample_rate: a.sample_rate,
                channels: a.channels as u16,
            };
            let mut samples = Vec::new();
            linear16_to_mono(format, bytes, &mut samples)?;
            let samples = samples.into_iter().map(to_i16).collect();
            return Ok(Some(Pcm::new(samples, a.sample_rate)));
        }
        if bytes.starts_with(&EBML_MAGIC) && self.webm.is_none() {
            // A new stream: the first, or one restarted after a failure.
            self.webm = Some(WebmOpusStream::new());
            self.webm_failed = false;
            self.wav = None;
        }
        if let Some(stream) = self.webm.as_mut() {
            let mut samples = Vec::new();
            let fed = stream.feed(bytes, &mut samples);
            let rate = stream.sample_rate();
            if let Err(e) = fed {
                self.webm = None;
                self.webm_failed = true;
                return Err(e);
            }
            let samples: Vec<i16> = samples.into_iter().map(to_i16).collect();
            return Ok((!samples.is_empty()).then(|| Pcm::new(samples, rate)));
        }
        if bytes.starts_with(b"RIFF") {
            // A WAV file, or the start of a WAV stream.
            self.wav = Some(WavChunkDecoder::new());
        }
        if let Some(stream) = self.wav.as_mut() {
            let mut samples = Vec::new();
            if let Err(e) = stream.feed(bytes, &mut samples) {
                self.wav = None;
                return Err(match e {
                    AudioError::InvalidWav(m) => AudioError::InvalidWav(format!(
                        "{m} (send each chunk as a WAV file, or a WAV header followed by raw \
                         samples)"
                    )),
                    other => other,
                });
            }
            let Some(rate) = stream.sample_rate() else {
                return Ok(None); // the header is still incomplete
            };
            let samples: Vec<i16> = samples.into_iter().map(to_i16).collect();
            return Ok((!samples.is_empty()).then(|| Pcm::new(samples, rate)));
        }
        if self.webm_failed {
            return Ok(None);
        }
        Err(AudioError::UnrecognizedContainer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_chunks_become_mono_pcm() {
        let stereo = AudioConfiguration {
            channels: 2,
            encoding: "linear16".into(),
            sample_rate: 8_000,
            codec: None,
        };
        let bytes: Vec<u8> = [100i16, 300, -50, -150]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let mut input = InputDecoder::default();
        let pcm = input.decode(&bytes, Some(&stereo)).unwrap().unwrap();
        assert_eq!((pcm.samples, pcm.sample_rate), (vec![200, -100], 8_000));

        let wav = colloquy_speech::encode_wav(&Pcm::new(vec![1, 2, 3], 24_000));
        let pcm = input.decode(&wav, None).unwrap().unwrap();
        assert_eq!((pcm.samples, pcm.sample_rate), (vec![1, 2, 3], 24_000));
        assert!(InputDecoder::default().decode(b"neither", None).is_err());
    }

    #[test]
    fn a_wav_stream_is_heard_across_chunks() {
        // One WAV file cut into a header chunk and raw pieces that split samples in two.
        let samples: Vec<i16> = (0..100).map(|i| i * 100 - 5_000).collect();
        let wav = colloquy_speech::encode_wav(&Pcm::new(samples.clone(), 16_000));
        let (head, rest) = wav.split_at(44 + 21);
        let mut input = InputDecoder::default();
        let mut heard = Vec::new();
        let first = input.decode(head, None).unwrap().unwrap();
        assert_eq!(first.sample_rate, 16_000);
        heard.extend(first.samples);
        for piece in rest.chunks(37) {
            if let Some(pcm) = input.decode(piece, None).unwrap() {
                assert_eq!(pcm.sample_rate, 16_000);
                heard.extend(pcm.samples);
            }
        }
        assert_eq!(heard, samples, "every sample once, none split");
        // A new header starts a new stream, in its own format.
        let again = colloquy_speech::encode_wav(&Pcm::new(vec![7, 8], 8_000));
        let pcm = input.decode(&again, None).unwrap().unwrap();
        assert_eq!((pcm.samples, pcm.sample_rate), (vec![7, 8], 8_000));
    }

    #[test]
    fn a_failed_webm_stream_is_ignored_until_a_new_one_starts() {
        let mut input = InputDecoder::default();
        // An EBML header with a DocType that is not WebM.
        let mut bad = EBML_MAGIC.to_vec();
        bad.extend_from_slice(&[0x87, 0x42, 0x82, 0x84, b'n', b'o', b'p', b'e']);
        assert!(input.decode(&bad, None).is_err());
        assert!(input
            .decode(b"more of that stream", None)
            .unwrap()
            .is_none());
        // A new stream starts over (here: its first bytes, no samples yet).
        assert!(input.decode(&EBML_MAGIC, None).unwrap().is_none());
        assert!(input.webm.is_some());
    }
}
