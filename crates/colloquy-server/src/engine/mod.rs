//! Speech engines: what answers in a chat. A chat's [`Engine`] is a value the session loop
//! asks through a few seams — the chat opens ([`Engine::on_open`]), a client message was
//! accepted ([`Engine::on_client`]), the engine's next output ([`Engine::next`], handled by
//! [`Engine::on_output`]), the chat ends ([`Engine::before_end`], [`Engine::close`]) — so
//! the loop itself has no engine-specific arms.
//!
//! The mode comes from `[engine]` (globally, and per API key under `[engine.keys]`):
//!
//! * [`EngineMode::Client`] (default, [`client`]): the client drives the chat
//!   (`user_input`, `assistant_input`, …); `assistant_input` is spoken when a voice is
//!   available.
//! * [`EngineMode::Relay`] ([`relay`]): the chat is relayed to an upstream EVI-compatible
//!   socket; the loop forwards both ways and records what passes.
//! * [`EngineMode::Pipeline`] ([`pipeline`]): Colloquy answers itself through
//!   OpenAI-compatible services (turn detection + transcription, a streamed LLM, speech),
//!   with emotion scores of the user's speech from an optional expression service.
//!
//! Authentication, validation, recording, timeouts and the chat lifecycle (`crate::session`)
//! do not depend on the engine.

pub mod client;
pub mod pipeline;
pub mod relay;

pub use crate::config::EngineMode;
use crate::config::EngineSettings;
use crate::session::core::Core;
use crate::session::ending::End;
use colloquy_storage::{NewEvent, Principal};
use colloquy_wire::socket::ServerMessage;
use serde_json::Value;

/// The engine mode of a chat opened by `who`: its key's override (by the key's prefix, from
/// the authenticated principal), else the global mode.
pub fn mode_for(engine: &EngineSettings, who: &Principal) -> EngineMode {
    engine.mode_for(Some(&who.key_prefix))
}

/// The engine of one chat.
pub enum Engine {
    /// The client drives the chat.
    Client(client::ClientEngine),
    /// Relayed to an upstream EVI socket.
    Relay(Box<relay::RelayEngine>),
    /// Answered by Colloquy's own pipeline.
    Pipeline(Box<pipeline::PipelineEngine>),
}

/// A client message the session accepted (validated, recorded, echoed), as the engine
/// sees it.
pub struct Accepted<'a> {
    /// The message as the client sent it.
    pub raw: &'a str,
    /// What it was.
    pub event: ClientEvent<'a>,
}

/// What an accepted client message was.
pub enum ClientEvent<'a> {
    /// `user_input`.
    UserText(&'a str),
    /// `assistant_input`, recorded as the `AGENT_MESSAGE` `id`; its `assistant_message` is
    /// queued, and `assistant_end` follows once the engine returns.
    AssistantText {
        /// The event id (the message's `id`).
        id: &'a str,
        /// The text.
        text: &'a str,
    },
    /// An `audio_input` chunk, decoded from base64.
    Audio(&'a [u8]),
    /// `tool_response` (its content) or `tool_error` (`error: …`).
    ToolResult {
        /// The call answered.
        tool_call_id: &'a str,
        /// The client's message (`type` included): what the model is told comes from it
        /// ([`colloquy_wire::socket::tool_result_content`]), and it is the
        /// `message.tool_result` of the answer's message.
        message: Value,
    },
    /// `pause_assistant_message` (true) or `resume_assistant_message` (false).
    Pause(bool),
    /// `session_settings`.
    Settings,
    /// `user_input` or `assistant_input` that the engine records from its own replies
    /// ([`Engine::records_inputs_itself`]).
    Unrecorded,
}

/// Something an engine produced on its own.
pub enum Output {
    /// Relay: a message from the upstream, or its failure.
    Upstream(Result<relay::upstream::Incoming, relay::upstream::UpstreamError>),
    /// Relay: time to check the upstream is alive.
    KeepAlive,
    /// Pipeline: the running turn's next output (`None`: it ended).
    Turn(Option<pipeline::turn::TurnOutput>),
    /// Pipeline: the user stayed silent for the config's nudge interval.
    Nudge,
}

impl Engine {
    /// The mode this engine implements.
    pub fn mode(&self) -> EngineMode {
        match self {
            Engine::Client(_) => EngineMode::Client,
            Engine::Relay(_) => EngineMode::Relay,
            Engine::Pipeline(_) => EngineMode::Pipeline,
        }
    }

    /// Whether the key checks of messages that record nothing may finish in the background
    /// (relayed messages are forwarded at once; pipeline audio reaches turn detection at
    /// once).
    pub fn defers_key_checks(&self) -> bool {
        !matches!(self, Engine::Client(_))
    }

    /// Whether the engine runs turn detection on the user's audio (and so tells when the
    /// user is heard, for the inactivity timeout).
    pub fn detects_turns(&self) -> bool {
        matches!(self, Engine::Pipeline(_))
    }

    /// Whether `user_input` and `assistant_input` are recorded from the engine's replies
    /// instead of by the session (the relay records the upstream's `user_message` and
    /// `assistant_message`).
    pub fn records_inputs_itself(&self) -> bool {
        matches!(self, Engine::Relay(_))
    }

    /// The chat is being created: events and metadata the engine adds.
    pub fn on_open(&mut self, core: &mut Core, events: &mut Vec<NewEvent>, metadata: &mut Value) {
        if !matches!(self, Engine::Client(_)) {
            metadata["engine"] = Value::from(self.mode().as_str());
        }
        match self {
            Engine::Client(_) => {}
            Engine::Relay(r) => r.on_open(metadata),
            Engine::Pipeline(p) => p.on_open(core, events),
        }
    }

    /// The chat is open and `chat_metadata` sent.
    pub async fn opened(&mut self, core: &mut Core, resumed: bool) {
        if let Engine::Pipeline(p) = self {
            if resumed {
                p.load_history(core).await;
            }
        }
    }

    /// A client message was accepted.
    pub async fn on_client(&mut self, core: &mut Core, msg: Accepted<'_>) -> Result<(), End> {
        match self {
            Engine::Client(c) => c.on_client(core, msg.event).await,
            Engine::Relay(r) => r.forward_up(core, msg.raw).await,
            Engine::Pipeline(p) => p.on_client(core, msg.event).await,
        }
    }

    /// Waits for the engine's next output (forever for an engine that has none). `start_ms`:
    /// when the chat started (for pacing).
    pub async fn next(&mut self, start_ms: i64) -> Output {
        match self {
            Engine::Client(_) => std::future::pending().await,
            Engine::Relay(r) => r.next().await,
            Engine::Pipeline(p) => p.next(start_ms).await,
        }
    }

    /// Records and sends what [`Self::next`] produced.
    pub async fn on_output(&mut self, core: &mut Core, out: Output) -> Result<(), End> {
        match (self, out) {
            (Engine::Relay(r), Output::Upstream(incoming)) => r.on_upstream(core, incoming).await,
            (Engine::Relay(r), Output::KeepAlive) => r.keep_alive(core).await,
            (Engine::Pipeline(p), Output::Turn(out)) => p.on_turn_output(core, out).await,
            (Engine::Pipeline(p), Output::Nudge) => p.nudge(core).await,
            _ => Ok(()),
        }
    }

    /// Says `text` as the assistant (a config's greeting or timeout message): recorded as
    /// an `AGENT_MESSAGE`, sent as `assistant_message`, spoken as `audio_output` when the
    /// chat has a voice, then `assistant_end`.
    pub async fn say(&mut self, core: &mut Core, text: &str) -> Result<(), End> {
        match self {
            Engine::Pipeline(p) => p.say(core, text).await,
            Engine::Client(c) => {
                let id = core.assistant_says(text, false).await?;
                c.speak(core, &id, text).await?;
                core.send_or_end(&ServerMessage::AssistantEnd {}).await
            }
            Engine::Relay(_) => {
                core.assistant_says(text, false).await?;
                core.send_or_end(&ServerMessage::AssistantEnd {}).await
            }
        }
    }

    /// Speaks with `voice` from now on (the config's voice, or `session_settings.voice_id`);
    /// an engine that does not speak stays silent, and a relayed chat's upstream speaks.
    pub fn set_voice(&mut self, voice: std::sync::Arc<dyn colloquy_speech::Voice>) {
        match self {
            Engine::Client(c) => c.set_voice(voice),
            Engine::Pipeline(p) => p.set_voice(voice),
            Engine::Relay(_) => {}
        }
    }

    /// The chat is ending: speech sent but not yet recorded is recorded.
    pub async fn before_end(&mut self, core: &mut Core) {
        if let Engine::Pipeline(p) = self {
            p.release_speech(core, None).await;
        }
    }

    /// The chat has ended: the engine lets go of its services.
    pub async fn close(self, end: End) {
        if let Engine::Relay(r) = self {
            r.close(end).await;
        }
    }
}

/// Places a WAV clip on the timeline where the client plays it: now, or after the speech
/// sent before it (which ends at `speech_end_ms`, moved past the clip). Its offset and length
/// in ms.
pub fn place_after(speech_end_ms: &mut i64, now: i64, wav: &[u8]) -> (i64, i64) {
    let offset = (*speech_end_ms).max(now);
    let ms = colloquy_speech::decode_wav(wav)
        .map(|pcm| pcm.duration_ms())
        .unwrap_or(0) as i64;
    *speech_end_ms = offset + ms;
    (offset, ms)
}

/// The `metadata` of a `USER_MESSAGE` or `AGENT_MESSAGE` event whose language the speech
/// recognizer or the upstream reported: `{"language":"en"}`.
pub fn language_metadata(language: Option<&str>) -> Option<String> {
    language.map(|l| serde_json::json!({ "language": l }).to_string())
}

/// The language [`language_metadata`] stored, if any.
pub fn language_in_metadata(metadata: Option<&str>) -> Option<String> {
    let v: Value = serde_json::from_str(metadata?).ok()?;
    v.get("language")?.as_str().map(str::to_string)
}
