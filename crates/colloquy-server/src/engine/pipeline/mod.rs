//! The pipeline engine: Colloquy answers the user itself, through OpenAI-compatible
//! services ([`turn`]).
//!
//! A turn starts with `user_input`, or with speech in `audio_input`: turn detection finds
//! where the user stops talking and the utterance is transcribed into a `user_message`
//! ([`listen`]); speech while the assistant talks interrupts it (`user_interruption`). The
//! model's answer arrives as [`TurnOutput`]s, recorded and sent by [`answer`]: one
//! `AGENT_MESSAGE` + `assistant_message` per sentence followed by its `audio_output`
//! chunks, `tool_call`s (`FUNCTION_CALL`) that wait for the client's answer, then
//! `assistant_end`. See `docs/engines.md`.

mod answer;
mod listen;
pub mod turn;

use super::{ClientEvent, Output};
use crate::platform::chat_config::ChatConfig;
use crate::session::core::Core;
use crate::session::ending::End;
use colloquy_audio::InputDecoder;
use colloquy_speech::expression::ExpressionClient;
use colloquy_speech::prompt::{build_messages, history_messages, tool_definitions};
use colloquy_speech::{ChatMessage, ChatRequest, TurnDetector};
use colloquy_storage::{NewEvent, PageRequest};
use colloquy_wire::socket::{tool_result_content, ServerMessage};
use colloquy_wire::{EventRole, EventType, ReturnChatEvent, SocketError};
use std::sync::Arc;
use std::time::Duration;
use turn::{Services, Turn};

/// A pipeline chat's conversation and its running answer.
pub struct PipelineEngine {
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
    paused: bool,
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
    verbose: bool,
    /// Emotion scores of the user's speech (`[engine.expression]`); one socket per chat,
    /// opened at the first utterance.
    expression: Option<ExpressionClient>,
    /// The config's model (`language_model.model_resource`), else the service's.
    model: Option<String>,
    /// The config's sampling temperature.
    temperature: Option<f32>,
    /// The config's nudge interval: the user silent this long after the assistant spoke
    /// gets one nudge.
    nudge_interval: Option<Duration>,
    /// When the silent user is nudged.
    nudge_at: Option<tokio::time::Instant>,
    /// The user was nudged since they last spoke (one nudge per silence).
    nudged: bool,
    /// The config's `interruption.min_interruption_ms`: shorter speech does not interrupt.
    min_interruption_ms: u32,
    /// Speech that started while the assistant talked, not yet long enough to interrupt
    /// it: its start (stream ms).
    pending_interrupt: Option<u64>,
}

/// What the model is told when the user has been silent for the config's nudge interval.
pub const NUDGE_INSTRUCTION: &str = "The user has been silent for a while. In one short \
sentence, gently invite them to continue the conversation.";

/// How long before the end of the speech already sent the next output is sent.
const SEND_AHEAD_MS: i64 = 300;

impl PipelineEngine {
    /// A chat answered with `services`, shaped by its config (model, temperature, voice,
    /// turn detection, interruption, nudges); `verbose`: interim transcripts are sent.
    pub fn new(services: Services, verbose: bool, config: Option<&ChatConfig>) -> Self {
        let services = match config {
            Some(c) => services.for_config(c),
            None => services,
        };
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
            verbose,
            expression: None,
            model: config.and_then(|c| c.model().map(str::to_string)),
            temperature: config.and_then(ChatConfig::temperature),
            nudge_interval: config.and_then(|c| c.nudge_interval),
            nudge_at: None,
            nudged: false,
            min_interruption_ms: config.and_then(|c| c.min_interruption_ms).unwrap_or(0),
            pending_interrupt: None,
        }
    }

    /// Speaks with `voice` from now on, if the chat speaks at all (a voice was available at
    /// start).
    pub(super) fn set_voice(&mut self, voice: Arc<dyn colloquy_speech::Voice>) {
        if self.services.voice.is_some() {
            let mut services = (*self.services).clone();
            services.voice = Some(voice);
            self.services = Arc::new(services);
        }
    }

    /// Says a config's message (greeting, timeout message) as the assistant, then
    /// `assistant_end`; the model sees it as its own words.
    pub(super) async fn say(&mut self, core: &mut Core, text: &str) -> Result<(), End> {
        self.stop_answer();
        let audio = match &self.services.voice {
            Some(voice) => turn::speak(voice.as_ref(), text).await,
            None => Vec::new(),
        };
        self.say_sentence(core, text.to_string(), audio).await?;
        let said = std::mem::take(&mut self.answer);
        self.turns.push(ChatMessage::assistant(said.trim()));
        self.sentences = 0;
        self.wait_for_user(core);
        core.send_or_end(&colloquy_wire::socket::ServerMessage::AssistantEnd {})
            .await
    }

    /// The assistant finished speaking: the nudge timer starts (once per silence) when the
    /// config enables nudges, counting from the end of the speech sent.
    fn wait_for_user(&mut self, core: &mut Core) {
        let Some(interval) = self.nudge_interval.filter(|_| !self.nudged) else {
            return;
        };
        let playing = (self.speech_end_ms - core.offset_now()).max(0) as u64;
        self.nudge_at =
            Some(tokio::time::Instant::now() + Duration::from_millis(playing) + interval);
    }

    /// The user did something: no nudge is due.
    fn user_active(&mut self) {
        self.nudge_at = None;
        self.nudged = false;
    }

    /// The user stayed silent for the nudge interval: the model is asked to invite them to
    /// go on (once, until the user speaks again).
    pub(super) async fn nudge(&mut self, core: &mut Core) -> Result<(), End> {
        self.nudge_at = None;
        self.nudged = true;
        tracing::debug!("nudging the silent user");
        self.start_answer_with(core, Some(NUDGE_INSTRUCTION)).await
    }

    /// The configured prompt the model gets, recorded like a client's when it sent none.
    pub(super) fn on_open(&mut self, core: &mut Core, events: &mut Vec<NewEvent>) {
        if core.system_prompt().is_none() {
            if let Some(prompt) = core.state.settings.engine.pipeline.system_prompt.clone() {
                events.push(core.event(EventRole::System, EventType::SystemPrompt, &prompt));
            }
        }
    }

    pub(super) async fn on_client(
        &mut self,
        core: &mut Core,
        event: ClientEvent<'_>,
    ) -> Result<(), End> {
        match event {
            ClientEvent::UserText(text) => self.user_turn(core, text.to_string()).await,
            ClientEvent::Audio(bytes) => self.hear(core, bytes).await,
            ClientEvent::ToolResult {
                tool_call_id,
                message,
            } => self.tool_result(core, tool_call_id, message).await,
            ClientEvent::Pause(paused) => {
                self.paused = paused;
                Ok(())
            }
            ClientEvent::AssistantText { .. } | ClientEvent::Settings | ClientEvent::Unrecorded => {
                Ok(())
            }
        }
    }

    /// The running answer's next output, paced to playback: the next sentence goes out
    /// shortly before the speech already sent ends, so an interruption cuts at most the
    /// sentence being heard. Nothing while paused.
    pub(super) async fn next(&mut self, start_ms: i64) -> Output {
        let now_offset = crate::clock::now_ms() - start_ms;
        let wait = self.speech_end_ms - SEND_AHEAD_MS - now_offset;
        let turn = match self.turn.as_mut() {
            Some(turn) if !self.paused => turn,
            None if !self.paused => match self.nudge_at {
                Some(at) => {
                    tokio::time::sleep_until(at).await;
                    return Output::Nudge;
                }
                None => return std::future::pending().await,
            },
            _ => return std::future::pending().await,
        };
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        Output::Turn(turn.receiver().recv().await)
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

    /// Loads a resumed group's earlier events as the model's history.
    pub(super) async fn load_history(&mut self, core: &mut Core) {
        // `session_settings.event_limit` wins over the connect query's `event_limit`.
        let limit = core
            .settings
            .event_limit
            .or(core.connect_event_limit)
            .map(|l| l as usize)
            .unwrap_or(core.state.settings.engine.pipeline.event_limit);
        let mut events: Vec<ReturnChatEvent> = Vec::new();
        let mut number = 0;
        loop {
            let page = PageRequest {
                number,
                size: 100,
                ascending: true,
            };
            match core
                .state
                .store
                .list_group_events(core.group_id, page)
                .await
            {
                Ok(page) => {
                    let done = page.items.len() < 100;
                    events.extend(
                        page.items
                            .into_iter()
                            .filter(|e| e.chat_id != core.chat_id)
                            .map(ReturnChatEvent::from),
                    );
                    if done {
                        break;
                    }
                    number += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the group's history; the model starts without it");
                    break;
                }
            }
        }
        self.history = history_messages(&events, limit);
    }

    /// A typed user turn: the model answers it.
    async fn user_turn(&mut self, core: &mut Core, text: String) -> Result<(), End> {
        self.user_active();
        self.stop_answer();
        self.turns.push(ChatMessage::user(text));
        self.start_answer(core).await
    }

    /// The client answered a tool call; once every call of the answer is answered, the
    /// model continues.
    async fn tool_result(
        &mut self,
        core: &mut Core,
        tool_call_id: &str,
        message: serde_json::Value,
    ) -> Result<(), End> {
        let Some(i) = self.pending_tools.iter().position(|id| id == tool_call_id) else {
            return Ok(());
        };
        self.pending_tools.remove(i);
        // The answer, as a message with role `tool` (`message.tool_result`).
        let content = tool_result_content(&message);
        let at = core.offset_now();
        core.send_or_end(&ServerMessage::tool_result(message, content.clone(), at))
            .await?;
        self.turns
            .push(ChatMessage::tool_result(tool_call_id, content));
        if self.pending_tools.is_empty() {
            self.turn = None;
            self.answer.clear();
            return self.start_answer(core).await;
        }
        Ok(())
    }

    async fn start_answer(&mut self, core: &mut Core) -> Result<(), End> {
        self.start_answer_with(core, None).await
    }

    /// Starts the model's answer; `instruction`: a last system message for this answer only.
    async fn start_answer_with(
        &mut self,
        core: &mut Core,
        instruction: Option<&str>,
    ) -> Result<(), End> {
        let engine = &core.state.settings.engine.pipeline;
        // The session's prompt, else the config's, else `[engine.pipeline] system_prompt`.
        let system = core
            .system_prompt()
            .map(str::to_string)
            .or_else(|| engine.system_prompt.clone())
            .unwrap_or_default();
        let variables = core.settings.variables.clone().unwrap_or_default();
        let context = core
            .settings
            .context
            .as_ref()
            .and_then(|c| c.get("text").and_then(|t| t.as_str()).map(str::to_string));
        if core
            .settings
            .context
            .as_ref()
            .and_then(|c| c.get("type"))
            .and_then(|t| t.as_str())
            .is_none_or(|t| t == "temporary")
        {
            // Temporary context applies to the next answer only.
            core.settings.context = None;
        }
        // The session's tools replace the config's (each list on its own).
        let config = core.config.as_deref();
        let tools = core
            .settings
            .tools
            .as_deref()
            .or(config.map(|c| c.tools.as_slice()))
            .unwrap_or_default();
        let builtins = core
            .settings
            .builtin_tools
            .as_deref()
            .or(config.map(|c| c.builtin_tools.as_slice()))
            .unwrap_or_default();
        let tools = match tool_definitions(tools, builtins) {
            Ok(t) => t,
            Err(e) => {
                return core
                    .client_error(
                        SocketError::InvalidMessage,
                        format!("session_settings.tools cannot be offered to the model: {e}"),
                    )
                    .await;
            }
        };
        let mut messages = build_messages(
            &system,
            &variables,
            &self.history,
            &self.turns,
            context.as_deref(),
        );
        if let Some(instruction) = instruction {
            messages.push(ChatMessage::system(instruction));
        }
        let request = ChatRequest {
            messages,
            tools,
            model: self.model.clone(),
            temperature: self.temperature,
            // The session's `language_model_api_key`, for this chat only.
            api_key: core.settings.language_model_api_key.clone(),
            ..ChatRequest::default()
        };
        self.answer.clear();
        self.sentences = 0;
        self.answering = true;
        self.turn = Some(Turn::start(self.services.clone(), request));
        Ok(())
    }
}
