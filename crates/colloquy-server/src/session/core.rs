//! What every chat session has, whatever its engine: the client's socket, the chat's ids,
//! its settings and audio, and the recording of its events (group-committed through the
//! [`crate::recorder::Recorder`], each client message re-checking the session's key).

use super::ending::End;
use super::settings;
use crate::capture::VoiceRecorder;
use crate::clock::now_ms;
use crate::limits::OpenChat;
use crate::live::{Observed, ObserverTx};
use crate::platform::chat_config::ChatConfig;
use crate::recorder::RecordError;
use crate::state::AppState;
use axum::extract::ws::WebSocket;
use colloquy_audio::StreamProbe;
use colloquy_storage::{NewEvent, OpOutcome, Principal, WriteOp};
use colloquy_wire::socket::{ChatMessage, Inference, ServerMessage, SessionSettings};
use colloquy_wire::{EventRole, EventType};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The engine-independent state of one chat session.
pub struct Core {
    pub(crate) state: AppState,
    pub(crate) socket: WebSocket,
    pub(crate) who: Principal,
    pub(crate) chat_id: Uuid,
    pub(crate) group_id: Uuid,
    /// The `request_id` of `chat_metadata` and `error` messages: the upgrade request's
    /// `x-request-id`.
    pub(crate) request_id: String,
    /// Epoch ms the socket was accepted.
    pub(crate) start_ms: i64,
    /// When the socket was accepted.
    pub(crate) accepted: Instant,
    /// The chat's config version (`config_id` at connect), resolved before the chat is
    /// stored.
    pub(crate) config: Option<Arc<ChatConfig>>,
    /// The config's inactivity message was said; the chat ends at the next inactivity
    /// deadline unless the user does something first.
    pub(crate) warned_inactive: bool,
    last_ts: i64,
    next_seq: i64,
    /// Session settings in effect (connect-time ones merged with later messages).
    pub(crate) settings: SessionSettings,
    /// `audio_input` chunks accepted so far.
    pub(crate) user_chunks: u64,
    /// Validates the user's audio stream across chunks.
    pub(crate) user_probe: Option<StreamProbe>,
    pub(crate) user_audio: Option<VoiceRecorder>,
    /// Assistant speech (`audio_output` of an engine).
    pub(crate) assistant_audio: Option<VoiceRecorder>,
    /// Set when the current client message was refused with an `error`.
    pub(crate) rejected: bool,
    /// What the last refused message was told (for a control-plane message's answer).
    pub(crate) last_refusal: Option<String>,
    /// The current client message still needs its key check (see `check_key_or_defer`).
    pub(crate) key_check_due: bool,
    /// The engine lets key checks of messages that record nothing finish in the background.
    pub(crate) defer_key_checks: bool,
    /// What went wrong, for endings that need explaining (upstream failures).
    pub(crate) end_detail: Option<String>,
    /// When the chat ends for inactivity unless the client does something first.
    pub(crate) idle_at: Instant,
    /// When the chat reaches `chat.max_duration_secs`.
    pub(crate) max_at: Instant,
    /// A send to the client timed out: the socket is abandoned, nothing more is sent.
    pub(crate) stalled: bool,
    /// Captured audio that was lost, to tell the client (`I0101`).
    pub(crate) capture_notices: Vec<String>,
    /// Counts this chat among its account's open chats on this server, for
    /// retention-disabled accounts under `limits.max_concurrent_chats_per_account`.
    pub(crate) counted: Option<OpenChat>,
    /// The chat's webhooks (issue 14).
    pub(crate) hooks: crate::webhooks::SessionHooks,
    /// Observers attached through the control plane; every message to the client is also
    /// sent to them (one that falls behind is dropped).
    pub(crate) observers: Vec<ObserverTx>,
    /// For retention-disabled accounts with `allow_connection` (nothing is stored): the
    /// messages an observer attaching now is sent as the history, newest last.
    pub(crate) held: Option<VecDeque<Arc<str>>>,
    /// The `chat_metadata` the client received.
    pub(crate) chat_metadata: String,
    /// The connect query's `event_limit` (`session_settings.event_limit` wins).
    pub(crate) connect_event_limit: Option<u32>,
    /// The chat's stored `metadata`.
    pub(crate) chat_meta: serde_json::Value,
    /// The current client message is user activity (resets the inactivity timer): any
    /// message but `audio_input`, and `audio_input` in which the user is heard.
    pub(crate) active: bool,
    /// Decodes the user's audio to tell sound from silence (client and relay modes).
    pub(crate) loudness: Option<colloquy_audio::InputDecoder>,
}

/// Messages a retention-disabled chat holds for observers' history.
const HELD_MESSAGES: usize = 300;

/// Message types an observer's history replays.
const REPLAYED: [&str; 7] = [
    "\"user_message\"",
    "\"assistant_message\"",
    "\"tool_call\"",
    "\"tool_response\"",
    "\"tool_error\"",
    "\"user_interruption\"",
    "\"assistant_end\"",
];

impl Core {
    /// A session on an accepted socket; the chat is not stored yet.
    pub fn new(state: AppState, who: Principal, socket: WebSocket, request_id: String) -> Self {
        let start_ms = now_ms();
        let chat = &state.settings.chat;
        let now = Instant::now();
        Core {
            idle_at: now + Duration::from_secs(chat.inactivity_timeout_secs),
            max_at: now + Duration::from_secs(chat.max_duration_secs),
            state,
            socket,
            who,
            chat_id: Uuid::now_v7(),
            group_id: Uuid::now_v7(),
            request_id,
            start_ms,
            accepted: now,
            config: None,
            warned_inactive: false,
            last_ts: start_ms,
            next_seq: 0,
            settings: SessionSettings::default(),
            user_chunks: 0,
            user_probe: None,
            user_audio: None,
            assistant_audio: None,
            rejected: false,
            last_refusal: None,
            key_check_due: false,
            defer_key_checks: false,
            end_detail: None,
            stalled: false,
            capture_notices: Vec::new(),
            counted: None,
            hooks: Default::default(),
            observers: Vec::new(),
            held: None,
            chat_metadata: String::new(),
            connect_event_limit: None,
            chat_meta: serde_json::Value::Null,
            active: false,
            loudness: None,
        }
    }

    /// Applies the chat's config: its timeouts replace the server's `chat.*` ones (a
    /// disabled maximum duration falls back to `chat.max_duration_secs`).
    pub(crate) fn set_config(&mut self, config: ChatConfig) {
        if let Some(max) = config.max_duration {
            self.max_at = self.accepted + max;
        }
        self.config = Some(Arc::new(config));
    }

    /// The inactivity timeout in effect: the config's (`None` when the config disables
    /// it), else `chat.inactivity_timeout_secs`.
    pub(crate) fn inactivity(&self) -> Option<Duration> {
        match &self.config {
            Some(c) => c.inactivity,
            None => Some(Duration::from_secs(
                self.state.settings.chat.inactivity_timeout_secs,
            )),
        }
    }

    /// The config's voice, resolved in the voice library, as an engine voice (`None`: the
    /// config has none, or it cannot be spoken here; logged).
    pub(crate) async fn config_voice(&mut self) -> Option<Arc<dyn colloquy_speech::Voice>> {
        let v = self.config.as_ref()?.voice.as_ref()?;
        match crate::tts::resolve(
            &self.state,
            self.who.user_id,
            Some(&v.id),
            None,
            Some(v.provider),
        )
        .await
        {
            Ok(Ok(resolved)) => crate::tts::speaking_voice(&self.state, &resolved.settings),
            Ok(Err(message)) => {
                tracing::warn!(%message, "the config's voice is gone; the default voice speaks");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the config's voice; the default voice speaks");
                None
            }
        }
    }

    /// The voice with library or saved-voice id `id` (`session_settings.voice_id`), as an
    /// engine voice (`Ok(None)`: it exists but cannot be spoken here); `Err` with the
    /// message when there is no such voice.
    pub(crate) async fn voice_by_id(
        &mut self,
        id: &str,
    ) -> Result<Option<Arc<dyn colloquy_speech::Voice>>, String> {
        match crate::tts::resolve(&self.state, self.who.user_id, Some(id), None, None).await {
            Ok(Ok(resolved)) => Ok(crate::tts::speaking_voice(&self.state, &resolved.settings)),
            Ok(Err(message)) => Err(format!(
                "session_settings.voice_id: {message}; the voice is unchanged"
            )),
            Err(e) => {
                tracing::warn!(error = %e, "could not read a voice");
                Err(
                    "session_settings.voice_id could not be read now; the voice is unchanged"
                        .into(),
                )
            }
        }
    }

    /// The user did something (see [`Core::active`]): the inactivity timer starts over.
    pub(crate) fn mark_active(&mut self) {
        self.active = true;
        self.warned_inactive = false;
        self.idle_at = Instant::now() + self.inactivity().unwrap_or(super::NEVER);
    }

    /// The system prompt in effect: the session's (`session_settings.system_prompt`), else
    /// the config's.
    pub(crate) fn system_prompt(&self) -> Option<&str> {
        self.settings
            .system_prompt
            .as_deref()
            .or_else(|| self.config.as_ref().and_then(|c| c.prompt.as_deref()))
    }

    /// Records `text` as an `AGENT_MESSAGE` and queues its `assistant_message` (sent with
    /// the next flush); returns the message id (the event's).
    pub(crate) async fn assistant_says(
        &mut self,
        text: &str,
        from_text: bool,
    ) -> Result<String, End> {
        let ev = self.event(EventRole::Agent, EventType::AgentMessage, text);
        let id = ev.id.to_string();
        self.record(vec![ev]).await?;
        self.feed(&ServerMessage::AssistantMessage {
            id: id.clone(),
            message: ChatMessage::text("assistant", text.to_string()),
            models: Inference::default(),
            from_text,
            is_quick_response: false,
            language: None,
        })
        .await?;
        Ok(id)
    }

    /// The sequence number the next event gets.
    pub(crate) fn next_seq(&self) -> i64 {
        self.next_seq
    }

    /// Sends a message the client is sent to the chat's observers (and holds it for the
    /// history of later ones when nothing is stored).
    pub(crate) fn observe(&mut self, text: &str) {
        if self.observers.is_empty() && self.held.is_none() {
            return;
        }
        let shared: Arc<str> = Arc::from(text);
        self.observers
            .retain(|o| o.try_send(Observed::Message(shared.clone())).is_ok());
        if let Some(held) = &mut self.held {
            let replayed = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("type").map(|t| t.to_string()))
                .is_some_and(|t| {
                    REPLAYED.contains(&t.as_str()) && !text.contains("\"interim\":true")
                });
            if replayed {
                if held.len() == HELD_MESSAGES {
                    held.pop_front();
                }
                held.push_back(shared);
            }
        }
    }

    /// The chat ended: each observer's socket closes with `reason`.
    pub(crate) fn release_observers(&mut self, reason: &str) {
        for o in self.observers.drain(..) {
            let _ = o.try_send(Observed::Ended(reason.to_string()));
        }
    }

    /// A new event with the next sequence number and a non-decreasing timestamp.
    pub(crate) fn event(&mut self, role: EventRole, event_type: EventType, text: &str) -> NewEvent {
        let seq = self.next_seq;
        self.next_seq += 1;
        NewEvent {
            id: Uuid::now_v7(),
            seq,
            timestamp: self.next_ts(),
            role,
            event_type,
            message_text: Some(text.to_string()),
            emotion_features: None,
            metadata: None,
            related_event_id: None,
        }
    }

    /// Now as an event timestamp (never before the previous one).
    pub(crate) fn next_ts(&mut self) -> i64 {
        self.last_ts = self.last_ts.max(now_ms());
        self.last_ts
    }

    /// Milliseconds since the chat started.
    pub(crate) fn offset_now(&mut self) -> i64 {
        self.next_ts() - self.start_ms
    }

    /// The events a `session_settings` message records.
    pub(crate) fn settings_events(&mut self, s: &SessionSettings) -> Vec<NewEvent> {
        let mut events = vec![self.event(
            EventRole::User,
            EventType::SessionSettings,
            &settings::event_text(s),
        )];
        if let Some(prompt) = &s.system_prompt {
            events.push(self.event(EventRole::System, EventType::SystemPrompt, prompt));
        }
        events
    }

    /// Merges new settings into the session's (given fields replace earlier ones); a new
    /// `custom_session_id` is stored in the chat's `metadata`.
    pub(crate) async fn apply_settings_and_store(&mut self, s: SessionSettings) {
        let changed = s
            .custom_session_id
            .as_ref()
            .filter(|c| self.settings.custom_session_id.as_ref() != Some(*c))
            .cloned();
        self.apply_settings(s);
        let Some(csid) = changed.filter(|_| self.who.data_retention) else {
            return;
        };
        self.chat_meta["custom_session_id"] = serde_json::Value::String(csid);
        let meta = self.chat_meta.to_string();
        if let Err(e) = self
            .state
            .store
            .set_chat_metadata(self.who.user_id, self.chat_id, &meta)
            .await
        {
            tracing::warn!(error = %e, "could not store the new custom_session_id in the chat's metadata");
        }
    }

    /// Merges new settings into the session's: given fields replace earlier ones.
    pub(crate) fn apply_settings(&mut self, s: SessionSettings) {
        let cur = &mut self.settings;
        macro_rules! take {
            ($($f:ident),*) => { $( if s.$f.is_some() { cur.$f = s.$f; } )* };
        }
        take!(
            audio,
            builtin_tools,
            context,
            custom_session_id,
            event_limit,
            language_model_api_key,
            metadata,
            system_prompt,
            tools,
            variables,
            voice_id
        );
    }

    /// Commits events (or, when nothing is retained, re-checks the key).
    pub(crate) async fn record(&mut self, events: Vec<NewEvent>) -> Result<(), End> {
        let wake = self.hooks.on_record(&self.state, &events);
        let op = if self.who.data_retention {
            WriteOp::AppendEvents {
                api_key_id: self.who.api_key_id,
                chat_id: self.chat_id,
                events,
            }
        } else {
            self.check_key_op()
        };
        let recorded = self.submit(op).await;
        if wake {
            self.state.webhooks.wake();
        }
        recorded
    }

    pub(crate) fn check_key_op(&self) -> WriteOp {
        WriteOp::CheckKey {
            api_key_id: self.who.api_key_id,
        }
    }

    /// Re-checks that the session's key is still live.
    pub(crate) async fn check_key(&mut self) -> Result<(), End> {
        self.submit(self.check_key_op()).await
    }

    /// The key check of a message that records nothing. When the engine defers them (a
    /// relayed chat forwards the message at once, a pipeline chat hands an audio chunk to
    /// turn detection at once) the check finishes in the background of the loop, so neither
    /// waits for the database; a revoked key still ends the session as soon as that check
    /// answers.
    pub(crate) async fn check_key_or_defer(&mut self) -> Result<(), End> {
        if self.defer_key_checks {
            self.key_check_due = true;
            return Ok(());
        }
        self.check_key().await
    }

    async fn submit(&mut self, op: WriteOp) -> Result<(), End> {
        let result = self.state.recorder.submit(op).await;
        self.outcome(result)
    }

    /// What a committed (or refused) operation means for the session.
    pub(crate) fn outcome(&self, result: Result<OpOutcome, RecordError>) -> Result<(), End> {
        match result {
            Ok(OpOutcome::Applied) => Ok(()),
            Ok(OpOutcome::KeyRevoked) => Err(End::KeyRevoked),
            Ok(OpOutcome::GroupNotFound) => Err(End::StoreFailed),
            Ok(OpOutcome::ChatClosed) => Err(End::ChatClosed),
            Ok(OpOutcome::TooManyChats) => Err(End::StoreFailed),
            Err(RecordError::Closed) => Err(End::Shutdown),
            Err(e) => {
                tracing::error!(error = %e, "recording failed");
                Err(End::StoreFailed)
            }
        }
    }
}
