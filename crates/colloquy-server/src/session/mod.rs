//! The chat WebSocket `/v0/evi/chat`: one connection is one chat.
//!
//! Every client message is handled in order. A message that produces events is answered
//! (echoed) only after its events are committed through the [`Recorder`]; every message,
//! recorded or not, also re-checks that the session's API key is still live. Bad input
//! gets an `error` message and the session goes on.
//!
//! What answers the client depends on the chat's engine (`crate::engine`): in client mode
//! the loop answers itself (echoes); in relay mode it forwards both ways to an upstream
//! EVI socket and records what passes (`relay.rs`).

pub mod connect;
pub mod limits;
mod pipeline;
mod relay;
pub mod settings;
mod speak;

use crate::auth::{authenticate, find_credentials};
use crate::capture::{CaptureError, CapturedFormat, VoiceRecorder};
use crate::clock::now_ms;
use crate::engine::relay::{IdMap, Upstream, UpstreamIds};
use crate::engine::EngineMode;
use crate::error::ApiError;
use crate::objects::Voice;
use crate::recorder::RecordError;
use crate::state::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use colloquy_audio::{Linear16Format, StreamProbe};
use colloquy_storage::{GroupChoice, NewChat, NewEvent, OpOutcome, Principal, WriteOp};
use colloquy_wire::socket::{
    ChatMessage, ClientMessage, Inference, MillisecondInterval, ServerMessage, SessionSettings,
};
use colloquy_wire::{ChatStatus, EventRole, EventType};
use connect::ConnectParams;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};
use uuid::Uuid;

/// How much larger than `max_message_bytes` a message may be before the transport itself
/// refuses it and closes the socket (below that, it is refused with an `error` only).
const HARD_LIMIT_FACTOR: usize = 4;

/// Background key checks a relayed or pipeline chat may have in flight before the loop waits
/// for one.
const MAX_PENDING_CHECKS: usize = 8;

/// `GET /v0/evi/chat`: authenticates the upgrade (401 on bad credentials) and runs a session.
pub async fn chat_socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let principal = match find_credentials(&headers, &pairs) {
        Ok(creds) => match authenticate(&state, creds).await {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        },
        Err(e) => return e.into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::BadRequest {
                code: "websocket_required",
                message: format!(
                    "this is the chat WebSocket; connect with a WebSocket client ({e})"
                ),
            }
            .into_response()
        }
    };
    let params = ConnectParams::parse(&pairs);
    let mode = crate::engine::mode_for(&state.settings.engine, &principal);
    let limit = state.settings.chat.max_message_bytes;
    // Every `send` flushes; a message only queued with `feed` waits in a buffer of up to
    // 16 KiB (less with a small message limit) for the next flush, so that two messages
    // leave in one write.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size((16 * 1024).min(limit))
        .max_write_buffer_size(limit.saturating_mul(2).max(1))
        .max_message_size(limit.saturating_mul(HARD_LIMIT_FACTOR))
        .max_frame_size(limit.saturating_mul(HARD_LIMIT_FACTOR))
        .on_upgrade(move |socket| {
            let sessions = state.sessions.clone();
            sessions.track_future(Session::start(
                state, principal, mode, params, pairs, socket,
            ))
        })
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ClientClosed,
    Inactivity,
    MaxDuration,
    Shutdown,
    KeyRevoked,
    StoreFailed,
    ChatClosed,
    TooBig,
    UpstreamUnavailable,
    UpstreamClosed,
    UpstreamTimeout,
    UpstreamEnded,
    /// The pipeline's model called the built-in `hang_up` tool.
    HangUp,
    /// A text frame was not valid UTF-8 (RFC 6455: close with 1007).
    InvalidUtf8,
    /// A send to the client made no progress for `chat.send_timeout_secs`: the client
    /// stopped reading.
    NotReading,
}

impl End {
    fn status(self) -> ChatStatus {
        match self {
            End::ClientClosed | End::UpstreamEnded | End::HangUp => ChatStatus::UserEnded,
            End::Inactivity => ChatStatus::InactivityTimeout,
            End::MaxDuration => ChatStatus::MaxDurationTimeout,
            End::Shutdown
            | End::KeyRevoked
            | End::StoreFailed
            | End::ChatClosed
            | End::TooBig
            | End::UpstreamUnavailable
            | End::UpstreamClosed
            | End::UpstreamTimeout
            | End::InvalidUtf8
            | End::NotReading => ChatStatus::Error,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::Inactivity => "inactivity_timeout",
            End::MaxDuration => "max_duration_timeout",
            End::Shutdown => "server_shutdown",
            End::KeyRevoked => "api_key_revoked",
            End::StoreFailed => "storage_failure",
            End::ChatClosed => "chat_closed_by_recovery",
            End::TooBig => "message_too_big",
            End::UpstreamUnavailable => "upstream_unavailable",
            End::UpstreamClosed => "upstream_closed",
            End::UpstreamTimeout => "upstream_timeout",
            End::UpstreamEnded => "upstream_ended",
            End::HangUp => "hang_up",
            End::InvalidUtf8 => "invalid_utf8",
            End::NotReading => "client_not_reading",
        }
    }

    fn close_frame(self) -> (u16, &'static str) {
        match self {
            End::ClientClosed => (1000, "chat ended"),
            End::Inactivity => (1000, "inactivity timeout"),
            End::MaxDuration => (1000, "maximum chat duration reached"),
            End::Shutdown => (1012, "server restarting"),
            // Reconnecting cannot help: 1000, so the TypeScript SDK does not reconnect.
            End::KeyRevoked => (1000, "API key revoked"),
            End::StoreFailed => (1011, "storage failure"),
            End::ChatClosed => (1011, "chat closed by the server"),
            End::TooBig => (1009, "message too big"),
            End::UpstreamUnavailable | End::UpstreamClosed | End::UpstreamTimeout => {
                (1011, "upstream failure")
            }
            End::UpstreamEnded => (1000, "chat ended by the upstream"),
            End::HangUp => (1000, "chat ended by the assistant"),
            End::InvalidUtf8 => (1007, "a text frame was not valid UTF-8"),
            End::NotReading => (1008, "the client stopped reading"),
        }
    }
}

struct Session {
    state: AppState,
    socket: WebSocket,
    who: Principal,
    chat_id: Uuid,
    group_id: Uuid,
    request_id: String,
    start_ms: i64,
    last_ts: i64,
    next_seq: i64,
    settings: SessionSettings,
    user_chunks: u64,
    user_probe: Option<StreamProbe>,
    user_audio: Option<VoiceRecorder>,
    /// Assistant speech (`audio_output` of an engine).
    assistant_audio: Option<VoiceRecorder>,
    /// The chat is relayed to an upstream (relay engine).
    relayed: bool,
    /// Upstream assistant-message ids → Colloquy's `AGENT_MESSAGE` ids.
    relay_ids: IdMap,
    /// The last `AGENT_MESSAGE` recorded (for `assistant_prosody` without an id).
    last_agent_event: Option<Uuid>,
    /// Set when the current client message was refused with an `error`.
    rejected: bool,
    /// The current client message still needs its key check (see `check_key_or_defer`).
    key_check_due: bool,
    /// What went wrong, for endings that need explaining (upstream failures).
    end_detail: Option<String>,
    /// The pipeline engine's conversation (pipeline mode).
    pipeline: Option<pipeline::Pipeline>,
    /// The voice that speaks `assistant_input` (client mode with `[engine.client] speak`).
    client_voice: Option<speak::ClientVoice>,
    /// When the chat ends for inactivity unless the client does something first.
    idle_at: Instant,
    /// When the chat reaches `chat.max_duration_secs`.
    max_at: Instant,
    /// A send to the client timed out: the socket is abandoned, nothing more is sent.
    stalled: bool,
    /// Captured audio that was lost, to tell the client (`I0101`).
    capture_notices: Vec<String>,
    /// Counts this chat among its account's open chats on this server, for
    /// retention-disabled accounts under `limits.max_concurrent_chats_per_account`.
    _counted: Option<limits::OpenChat>,
}

impl Session {
    async fn start(
        state: AppState,
        who: Principal,
        mode: EngineMode,
        params: Result<ConnectParams, String>,
        query: Vec<(String, String)>,
        socket: WebSocket,
    ) {
        let chat_id = Uuid::now_v7();
        let start_ms = now_ms();
        let mut s = Session {
            user_chunks: 0,
            user_probe: None,
            user_audio: None,
            assistant_audio: None,
            relayed: mode == EngineMode::Relay,
            relay_ids: IdMap::default(),
            last_agent_event: None,
            rejected: false,
            key_check_due: false,
            end_detail: None,
            pipeline: None,
            client_voice: None,
            idle_at: Instant::now()
                + Duration::from_secs(state.settings.chat.inactivity_timeout_secs),
            max_at: Instant::now() + Duration::from_secs(state.settings.chat.max_duration_secs),
            stalled: false,
            capture_notices: Vec::new(),
            _counted: None,
            state,
            socket,
            who,
            chat_id,
            group_id: Uuid::now_v7(),
            request_id: Uuid::new_v4().to_string(),
            start_ms,
            last_ts: start_ms,
            next_seq: 0,
            settings: SessionSettings::default(),
        };
        let params = match params {
            Ok(p) => p,
            Err(msg) => return s.refuse("E0200", "invalid_connect_parameters", msg).await,
        };
        let Some(group) = s.group_choice(&params).await else {
            return;
        };
        let max_chats = s.state.settings.limits.max_concurrent_chats_per_account;
        if max_chats > 0 && !s.who.data_retention {
            // Nothing of this account is stored: its open chats are counted here.
            match s.state.account_limits.open_chat(s.who.user_id, max_chats) {
                Some(counted) => s._counted = Some(counted),
                None => return s.refuse_too_many_chats().await,
            }
        }
        match mode {
            EngineMode::Client => {
                s.client_voice = s.state.client_voice.clone().map(speak::ClientVoice::new);
                if !s.open(params, group, None).await {
                    return;
                }
                let end = s.run(None).await;
                s.finish(end).await;
            }
            EngineMode::Relay => s.relay(params, group, &query).await,
            EngineMode::Pipeline => {
                let Some(services) = s.state.pipeline.clone() else {
                    return s
                        .refuse(
                            "I0300",
                            "pipeline_unavailable",
                            "the pipeline engine has no [engine.pipeline.llm] configured".into(),
                        )
                        .await;
                };
                let mut pipe = pipeline::Pipeline::new(services);
                pipe.verbose = params.verbose_transcription;
                s.pipeline = Some(pipe);
                let resumed = matches!(group, GroupChoice::Resume(_));
                if !s.open(params, group, None).await {
                    return;
                }
                if resumed {
                    s.load_pipeline_history().await;
                }
                let end = s.run(None).await;
                s.finish(end).await;
            }
        }
    }

    /// The group the chat starts or joins; `None` (after refusing) if it cannot resume.
    async fn group_choice(&mut self, params: &ConnectParams) -> Option<GroupChoice> {
        let group = match params.resumed_chat_group_id {
            Some(_) if !self.who.data_retention => {
                self.refuse(
                    "E0202",
                    "resume_unavailable",
                    "resuming a chat group is not available because data retention is disabled \
                     for this account; connect without resumed_chat_group_id"
                        .into(),
                )
                .await;
                return None;
            }
            Some(g) => GroupChoice::Resume(g),
            None => GroupChoice::New(self.group_id),
        };
        if let GroupChoice::Resume(g) = group {
            self.group_id = g;
        }
        Some(group)
    }

    /// Creates the chat (or joins the group) and sends `chat_metadata`; false if refused, or
    /// if the client was gone before `chat_metadata` reached it (the chat is then ended).
    /// `upstream`: the relay's upstream ids, kept in the chat's metadata.
    async fn open(
        &mut self,
        params: ConnectParams,
        group: GroupChoice,
        upstream: Option<&UpstreamIds>,
    ) -> bool {
        let mut events = vec![self.event(EventRole::System, EventType::ChatStartMessage, "")];
        if let Some(s) = params.session_settings {
            events.extend(self.settings_events(&s));
            self.apply_settings(s);
        }
        if self.pipeline.is_some() && self.settings.system_prompt.is_none() {
            // The configured prompt the model gets, recorded like a client's.
            if let Some(prompt) = self.state.settings.engine.pipeline.system_prompt.clone() {
                events.push(self.event(EventRole::System, EventType::SystemPrompt, &prompt));
            }
        }
        let mut metadata = json!({ "request_id": self.request_id });
        if let Some(csid) = &self.settings.custom_session_id {
            metadata["custom_session_id"] = json!(csid);
        }
        if self.pipeline.is_some() {
            metadata["engine"] = json!(EngineMode::Pipeline.as_str());
        }
        if self.relayed {
            metadata["engine"] = json!(EngineMode::Relay.as_str());
            if let Some(up) = upstream {
                metadata["upstream"] = up.to_json();
            }
        }
        let op = if self.who.data_retention {
            WriteOp::StartChat {
                api_key_id: self.who.api_key_id,
                chat: NewChat {
                    id: self.chat_id,
                    user_id: self.who.user_id,
                    group,
                    start_timestamp: self.start_ms,
                    metadata: Some(metadata.to_string()),
                    config_id: params.config_id.clone(),
                    config_version: params.config_version,
                    instance_id: self.state.instance_id,
                },
                events,
                max_active_chats: Some(self.state.settings.limits.max_concurrent_chats_per_account)
                    .filter(|&max| max > 0),
            }
        } else {
            WriteOp::CheckKey {
                api_key_id: self.who.api_key_id,
            }
        };
        match self.state.recorder.submit(op).await {
            Ok(OpOutcome::Applied) => {}
            Ok(OpOutcome::GroupNotFound) => {
                self.refuse_unknown_group().await;
                return false;
            }
            Ok(OpOutcome::TooManyChats) => {
                self.refuse_too_many_chats().await;
                return false;
            }
            Ok(OpOutcome::ChatClosed) => {
                self.refuse(
                    "I0100",
                    "storage_failure",
                    "the chat could not be created".into(),
                )
                .await;
                return false;
            }
            Ok(OpOutcome::KeyRevoked) => {
                self.refuse(
                    "E0300",
                    "api_key_revoked",
                    "this API key was revoked".into(),
                )
                .await;
                return false;
            }
            Err(e) => {
                self.refuse("I0100", "storage_failure", storage_message(&e))
                    .await;
                return false;
            }
        }
        tracing::info!(chat_id = %self.chat_id, chat_group_id = %self.group_id, "chat started");
        let meta = ServerMessage::ChatMetadata {
            chat_id: self.chat_id.to_string(),
            chat_group_id: self.group_id.to_string(),
            request_id: self.request_id.clone(),
        };
        match self.send_or_end(&meta).await {
            Ok(()) => true,
            Err(end) => {
                // The chat exists: end it now rather than leaving it ACTIVE.
                self.finish(end).await;
                false
            }
        }
    }

    async fn refuse_too_many_chats(&mut self) {
        let max = self.state.settings.limits.max_concurrent_chats_per_account;
        let msg = format!(
            "this account already has {max} open chats, the most allowed at once \
             (limits.max_concurrent_chats_per_account); end one before starting another"
        );
        self.refuse("E0203", "too_many_chats", msg).await;
    }

    async fn refuse_unknown_group(&mut self) {
        let msg = format!(
            "chat group {} was not found for this account; pass the chat_group_id from a \
             previous chat_metadata message or from GET /v0/evi/chat_groups",
            self.group_id
        );
        self.refuse("E0201", "chat_group_not_found", msg).await;
    }

    /// Sends an `error` and closes without leaving a chat behind. Refusals that a retry
    /// cannot fix close with 1000 (the TypeScript SDK reconnects on any other code); a
    /// storage failure closes with 1011, since reconnecting may succeed.
    async fn refuse(&mut self, code: &str, slug: &str, message: String) {
        tracing::info!(code, slug, %message, "chat refused");
        let close = if code == "I0100" { 1011 } else { 1000 };
        if self.send_error(code, slug, message).await.is_ok() {
            let _ = self
                .write(
                    Message::Close(Some(CloseFrame {
                        code: close,
                        reason: slug.to_string().into(),
                    })),
                    true,
                )
                .await;
        }
    }

    /// Runs the chat until it ends; with `up`, also relays the upstream's messages.
    async fn run(&mut self, mut up: Option<&mut Upstream>) -> End {
        let inactivity = Duration::from_secs(self.state.settings.chat.inactivity_timeout_secs);
        self.idle_at = Instant::now() + inactivity;
        let max_duration = sleep_until(self.max_at);
        let idle = sleep_until(self.idle_at);
        tokio::pin!(max_duration, idle);
        let shutdown = self.state.shutdown.clone();
        // Key checks of messages that record nothing (relayed messages, pipeline audio chunks),
        // running while the loop goes on.
        let mut checks = FuturesUnordered::new();
        loop {
            for notice in std::mem::take(&mut self.capture_notices) {
                if let Err(end) = self
                    .send_error("I0101", "audio_capture_failed", notice)
                    .await
                {
                    return end;
                }
            }
            let flush_at = [&self.user_audio, &self.assistant_audio]
                .into_iter()
                .filter_map(|r| r.as_ref().and_then(VoiceRecorder::flush_deadline))
                .min();
            let flush_due = async move {
                match flush_at {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let check_at = up.as_deref().map(Upstream::next_check);
            let upstream_check = async move {
                match check_at {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let upstream_next = async {
                match up.as_deref_mut() {
                    Some(u) => u.recv().await,
                    None => std::future::pending().await,
                }
            };
            let pace = self
                .pipeline
                .as_ref()
                .and_then(|p| p.pace(now_ms() - self.start_ms))
                .map(|d| Instant::now() + d);
            let turn_rx = self
                .pipeline
                .as_mut()
                .and_then(pipeline::Pipeline::receiver);
            let pipeline_next = async move {
                match turn_rx {
                    Some(rx) => {
                        if let Some(at) = pace {
                            sleep_until(at).await;
                        }
                        rx.recv().await
                    }
                    None => std::future::pending().await,
                }
            };
            let msg = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Shutdown,
                _ = &mut max_duration => return End::MaxDuration,
                _ = &mut idle => return End::Inactivity,
                _ = flush_due => {
                    self.flush_audio().await;
                    continue;
                }
                Some(checked) = checks.next(), if !checks.is_empty() => {
                    if let Err(end) = self.outcome(checked) {
                        return end;
                    }
                    continue;
                }
                _ = upstream_check => {
                    if let Some(u) = up.as_deref_mut() {
                        if let Err(e) = u.keep_alive().await {
                            return self.upstream_failed(e);
                        }
                    }
                    continue;
                }
                incoming = upstream_next => {
                    let step = match incoming {
                        Ok(m) => self.handle_upstream(m).await,
                        Err(e) => Err(self.upstream_failed(e)),
                    };
                    if let Err(end) = step {
                        return end;
                    }
                    continue;
                }
                out = pipeline_next => {
                    if let Err(end) = self.on_turn_output(out).await {
                        return end;
                    }
                    continue;
                }
                msg = self.socket.recv() => msg,
            };
            let step =
                match msg {
                    None | Some(Ok(Message::Close(_))) => return End::ClientClosed,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "socket read failed");
                        return if is_capacity_error(&e) {
                            End::TooBig
                        } else if is_utf8_error(&e) {
                            End::InvalidUtf8
                        } else {
                            End::ClientClosed
                        };
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_) | Message::Text(_))) if !self.within_rate() => {
                        self.client_error(
                            "E0105",
                            "rate_limited",
                            format!(
                            "this account sent more than {} messages per second over its chats \
                             (limits.max_messages_per_second_per_account); this message was \
                             dropped, slow down",
                            self.state.settings.limits.max_messages_per_second_per_account
                        ),
                        )
                        .await
                    }
                    Some(Ok(Message::Binary(b))) => {
                        self.idle_at = Instant::now() + inactivity;
                        idle.as_mut().reset(self.idle_at);
                        self.check_key().await.and(
                            self.client_error(
                                "E0101",
                                "invalid_message",
                                format!(
                                "binary frames ({} bytes) are not accepted; send JSON text frames \
                                 (audio goes base64-encoded in an audio_input message)",
                                b.len()
                            ),
                            )
                            .await,
                        )
                    }
                    Some(Ok(Message::Text(t))) => {
                        self.idle_at = Instant::now() + inactivity;
                        idle.as_mut().reset(self.idle_at);
                        self.rejected = false;
                        let step = self.handle_text(t.as_str()).await;
                        if std::mem::take(&mut self.key_check_due) && step.is_ok() {
                            let recorder = self.state.recorder.clone();
                            let op = WriteOp::CheckKey {
                                api_key_id: self.who.api_key_id,
                            };
                            checks.push(async move { recorder.submit(op).await });
                            if checks.len() > MAX_PENDING_CHECKS {
                                if let Some(checked) = checks.next().await {
                                    if let Err(end) = self.outcome(checked) {
                                        return end;
                                    }
                                }
                            }
                        }
                        match up.as_deref_mut() {
                            Some(u) if step.is_ok() && !self.rejected => {
                                self.forward_up(u, t.as_str()).await
                            }
                            _ => step,
                        }
                    }
                };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Takes one client message from the account's rate budget.
    fn within_rate(&self) -> bool {
        let per_second = self
            .state
            .settings
            .limits
            .max_messages_per_second_per_account;
        self.state
            .account_limits
            .allow_message(self.who.user_id, per_second)
    }

    async fn handle_text(&mut self, text: &str) -> Result<(), End> {
        let limit = self.state.settings.chat.max_message_bytes;
        if text.len() > limit {
            self.check_key().await?;
            return self
                .client_error(
                    "E0102",
                    "message_too_large",
                    format!(
                        "the message is {} bytes; the limit is {limit} bytes (chat.max_message_bytes). \
                         Send audio in smaller chunks (about 20-100 ms each)",
                        text.len()
                    ),
                )
                .await;
        }
        let msg = match ClientMessage::parse(text) {
            Ok((m, _)) => m,
            Err(e) => {
                self.check_key().await?;
                return self
                    .client_error(e.code(), e.slug(), e.message().to_string())
                    .await;
            }
        };
        if self.relayed {
            if let ClientMessage::UserInput(_) | ClientMessage::AssistantInput(_) = msg {
                // The upstream answers (user_message / assistant_message), recorded then.
                return self.check_key_or_defer().await;
            }
        }
        match msg {
            ClientMessage::UserInput(input) => {
                let offset = self.offset_now();
                let ev = self.event(EventRole::User, EventType::UserMessage, &input.text);
                self.record(vec![ev]).await?;
                self.send_or_end(&ServerMessage::UserMessage {
                    message: ChatMessage {
                        role: "user".into(),
                        content: Some(input.text.clone()),
                    },
                    models: Inference::default(),
                    time: MillisecondInterval {
                        begin: offset,
                        end: offset,
                    },
                    from_text: true,
                    interim: false,
                })
                .await?;
                self.pipeline_user_turn(input.text).await
            }
            ClientMessage::AssistantInput(input) => {
                let ev = self.event(EventRole::Agent, EventType::AgentMessage, &input.text);
                let id = ev.id.to_string();
                self.record(vec![ev]).await?;
                let message = ServerMessage::AssistantMessage {
                    id: id.clone(),
                    message: ChatMessage {
                        role: "assistant".into(),
                        content: Some(input.text.clone()),
                    },
                    models: Inference::default(),
                    from_text: true,
                    is_quick_response: false,
                };
                if self.client_voice.is_some() {
                    // The text goes out at once, before the speech is synthesized.
                    self.send_or_end(&message).await?;
                    self.speak_assistant_input(&id, &input.text).await?;
                } else {
                    self.feed(&message).await?;
                }
                // Flushes `assistant_message` too when it was only queued: one write.
                self.send_or_end(&ServerMessage::AssistantEnd {}).await
            }
            ClientMessage::SessionSettings(s) => {
                if let Err(msg) = settings::validate(&s) {
                    self.check_key().await?;
                    return self.client_error("E0101", "invalid_message", msg).await;
                }
                if s.audio.is_some() && s.audio != self.settings.audio && self.user_chunks > 0 {
                    self.check_key().await?;
                    return self
                        .client_error(
                            "E0101",
                            "invalid_message",
                            "session_settings.audio cannot change once audio has been sent in \
                             this chat; reconnect (resuming the chat group) to use another format"
                                .into(),
                        )
                        .await;
                }
                let events = self.settings_events(&s);
                self.record(events).await?;
                self.apply_settings(s);
                Ok(())
            }
            ClientMessage::AudioInput(audio) => {
                let bytes = match base64::engine::general_purpose::STANDARD
                    .decode(audio.data.trim())
                {
                    Ok(b) if !b.is_empty() => b,
                    Ok(_) => {
                        self.check_key().await?;
                        return self
                            .client_error(
                                "E0104",
                                "invalid_audio",
                                "audio_input.data is empty; send base64-encoded audio".into(),
                            )
                            .await;
                    }
                    Err(e) => {
                        self.check_key().await?;
                        return self
                            .client_error(
                                "E0104",
                                "invalid_audio",
                                format!("audio_input.data is not valid base64 ({e}); encode the audio bytes with standard base64"),
                            )
                            .await;
                    }
                };
                let expected = self.settings.audio.as_ref().map(|a| Linear16Format {
                    sample_rate: a.sample_rate,
                    channels: a.channels as u16,
                });
                let probe = self
                    .user_probe
                    .get_or_insert_with(|| StreamProbe::new(expected));
                if let Err(e) = probe.feed(&bytes) {
                    self.check_key().await?;
                    return self
                        .client_error(
                            "E0104",
                            "invalid_audio",
                            format!(
                                "this audio_input chunk could not be decoded and was not recorded: {e}"
                            ),
                        )
                        .await;
                }
                let offset = self.offset_now();
                if self.user_chunks == 0 {
                    let ev = self.event(EventRole::User, EventType::UserRecordingStartMessage, "");
                    self.record(vec![ev]).await?;
                } else {
                    self.check_key_or_defer().await?;
                }
                self.user_chunks += 1;
                if self.who.data_retention {
                    let format = match &self.settings.audio {
                        Some(a) => CapturedFormat::Linear16 {
                            sample_rate: a.sample_rate,
                            channels: a.channels as u16,
                        },
                        None => CapturedFormat::Container,
                    };
                    let (objects, user, chat) =
                        (self.state.objects.clone(), self.who.user_id, self.chat_id);
                    let recorder = self.user_audio.get_or_insert_with(|| {
                        VoiceRecorder::new(objects, user, chat, Voice::User, format)
                    });
                    if let Err(e) = recorder.append(offset, &bytes).await {
                        // Not a bad message: a relayed chat still forwards the chunk.
                        self.capture_failed(e);
                    }
                }
                self.pipeline_audio(&bytes).await
            }
            ClientMessage::ToolResponse(r) => {
                let meta = serde_json::to_value(&r).map(|mut v| {
                    v["type"] = json!("tool_response");
                    v.to_string()
                });
                let mut ev =
                    self.event(EventRole::Tool, EventType::FunctionCallResponse, &r.content);
                ev.metadata = meta.ok();
                self.record(vec![ev]).await?;
                self.pipeline_tool_result(&r.tool_call_id, r.content).await
            }
            ClientMessage::ToolError(r) => {
                let meta = serde_json::to_value(&r).map(|mut v| {
                    v["type"] = json!("tool_error");
                    v.to_string()
                });
                let mut ev = self.event(EventRole::Tool, EventType::FunctionCallResponse, &r.error);
                ev.metadata = meta.ok();
                self.record(vec![ev]).await?;
                let said = format!("error: {}", r.error);
                self.pipeline_tool_result(&r.tool_call_id, said).await
            }
            ClientMessage::PauseAssistantMessage => {
                let ev = self.event(EventRole::User, EventType::PauseOnset, "");
                self.record(vec![ev]).await?;
                if let Some(p) = self.pipeline.as_mut() {
                    p.paused = true;
                }
                Ok(())
            }
            ClientMessage::ResumeAssistantMessage => {
                let ev = self.event(EventRole::User, EventType::ResumeOnset, "");
                self.record(vec![ev]).await?;
                if let Some(p) = self.pipeline.as_mut() {
                    p.paused = false;
                }
                Ok(())
            }
        }
    }

    /// Ends the chat: records the end, then lets the close handshake finish.
    async fn finish(&mut self, end: End) {
        let deleted = end == End::ChatClosed
            && matches!(
                self.state
                    .store
                    .get_chat(self.who.user_id, self.chat_id)
                    .await,
                Ok(None)
            );
        if deleted {
            // The chat was deleted while it ran: drop its audio instead of writing more.
            self.user_audio = None;
            self.assistant_audio = None;
            if let Err(e) = self
                .state
                .objects
                .erase_chat(self.who.user_id, self.chat_id)
                .await
            {
                tracing::warn!(chat_id = %self.chat_id, error = %e, "could not erase the audio of a deleted chat");
            }
        }
        // Pipeline speech sent but not played yet: the client has it, so it is recorded.
        self.release_speech(None).await;
        // From here on, sends to the client only have the send timeout (the inactivity or
        // max-duration deadline that ended the chat may have passed).
        let grace =
            Instant::now() + Duration::from_secs(self.state.settings.chat.send_timeout_secs);
        (self.idle_at, self.max_at) = (grace, grace);
        self.flush_audio().await;
        let end_ts = self.next_ts();
        let end_op = self.who.data_retention.then(|| {
            let mut ev = self.event(EventRole::System, EventType::ChatEndMessage, "");
            ev.timestamp = end_ts;
            let mut meta = json!({ "status": end.status().as_str(), "reason": end.reason() });
            if let Some(detail) = self
                .end_detail
                .as_ref()
                .filter(|_| end.status() == ChatStatus::Error)
            {
                meta["error"] = json!(detail);
            }
            ev.metadata = Some(meta.to_string());
            WriteOp::EndChat {
                api_key_id: self.who.api_key_id,
                chat_id: self.chat_id,
                status: end.status(),
                end_timestamp: end_ts,
                events: vec![ev],
            }
        });
        let unwritten: Vec<VoiceRecorder> = [self.user_audio.take(), self.assistant_audio.take()]
            .into_iter()
            .flatten()
            .filter(VoiceRecorder::has_pending)
            .collect();
        if !unwritten.is_empty() {
            // The store refuses writes: keep retrying in the background, then record the end
            // (the chat stays ACTIVE until then, so no reconstruction starts without it).
            self.state.sessions.spawn(finish_in_background(
                self.state.clone(),
                self.chat_id,
                unwritten,
                end_op,
            ));
        } else if let Some(op) = end_op {
            match self.state.recorder.submit(op.clone()).await {
                Err(RecordError::Database(e)) => {
                    tracing::error!(chat_id = %self.chat_id, error = %e, "could not record the end of the chat; retrying in the background");
                    self.state.sessions.spawn(finish_in_background(
                        self.state.clone(),
                        self.chat_id,
                        Vec::new(),
                        Some(op),
                    ));
                }
                Err(RecordError::Closed) => {
                    tracing::warn!(chat_id = %self.chat_id, "shutting down before the end of the chat was recorded; the next start closes it");
                }
                Ok(_) => {}
            }
        }
        tracing::info!(chat_id = %self.chat_id, status = %end.status(), reason = end.reason(), "chat ended");
        let farewell = match end {
            End::KeyRevoked => Some((
                "E0300",
                "api_key_revoked",
                "this API key was revoked; the chat has ended".to_string(),
            )),
            End::StoreFailed => Some((
                "I0100",
                "storage_failure",
                "the server could not store this chat; it has ended".to_string(),
            )),
            End::ChatClosed if deleted => Some((
                "I0102",
                "chat_closed",
                "this chat was deleted; reconnect to start a new one".to_string(),
            )),
            End::ChatClosed => Some((
                "I0102",
                "chat_closed",
                "the server closed this chat during crash recovery; reconnect (with \
                 resumed_chat_group_id to continue the conversation)"
                    .to_string(),
            )),
            End::UpstreamUnavailable => Some((
                "I0200",
                "upstream_unavailable",
                self.end_detail.clone().unwrap_or_default(),
            )),
            End::UpstreamClosed => Some((
                "I0201",
                "upstream_closed",
                self.end_detail.clone().unwrap_or_default(),
            )),
            End::UpstreamTimeout => Some((
                "I0202",
                "upstream_timeout",
                self.end_detail.clone().unwrap_or_default(),
            )),
            End::InvalidUtf8 => Some((
                "E0101",
                "invalid_message",
                "a text frame was not valid UTF-8, so the connection was closed (RFC 6455 \
                 requires UTF-8 text); send JSON as UTF-8 text frames"
                    .to_string(),
            )),
            End::TooBig => Some((
                "E0102",
                "message_too_large",
                format!(
                    "a message exceeded {} bytes, so the connection was closed; send audio in \
                     smaller chunks",
                    self.state.settings.chat.max_message_bytes * HARD_LIMIT_FACTOR
                ),
            )),
            _ => None,
        };
        if let Some((code, slug, message)) = farewell {
            if self.send_error(code, slug, message).await.is_err() {
                return;
            }
        }
        let (code, reason) = end.close_frame();
        let _ = self
            .write(
                Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })),
                true,
            )
            .await;
    }

    /// Writes buffered audio to the object store (one attempt; failed writes stay buffered
    /// and are retried at the recorder's next deadline).
    async fn flush_audio(&mut self) {
        let mut failures = Vec::new();
        for rec in [&mut self.user_audio, &mut self.assistant_audio]
            .into_iter()
            .flatten()
        {
            if let Err(e) = rec.flush().await {
                failures.push(e);
            }
        }
        for e in failures {
            self.capture_failed(e);
        }
    }

    /// Notes a failed audio write: a retried one is only logged; audio that had to be
    /// dropped is told to the client (`I0101`) at the loop's next turn.
    fn capture_failed(&mut self, e: CaptureError) {
        match e {
            CaptureError::Store(e) => {
                tracing::warn!(chat_id = %self.chat_id, error = %e, "audio write failed; it stays buffered and is retried");
            }
            lost @ CaptureError::Lost { .. } => {
                tracing::error!(chat_id = %self.chat_id, error = %lost, "captured audio lost");
                self.capture_notices.push(format!(
                    "{lost}; the chat goes on, and its audio reconstruction will report the gap"
                ));
            }
        }
    }

    /// Commits events (or, when nothing is retained, re-checks the key).
    async fn record(&mut self, events: Vec<NewEvent>) -> Result<(), End> {
        let op = if self.who.data_retention {
            WriteOp::AppendEvents {
                api_key_id: self.who.api_key_id,
                chat_id: self.chat_id,
                events,
            }
        } else {
            WriteOp::CheckKey {
                api_key_id: self.who.api_key_id,
            }
        };
        self.submit(op).await
    }

    async fn check_key(&mut self) -> Result<(), End> {
        self.submit(WriteOp::CheckKey {
            api_key_id: self.who.api_key_id,
        })
        .await
    }

    /// The key check of a message that records nothing. A relayed chat forwards the message
    /// at once, and a pipeline chat hands an audio chunk to turn detection at once; the check
    /// finishes in the background of the loop (at most [`MAX_PENDING_CHECKS`] at a time), so
    /// neither waits for the database. A revoked key still ends the session as soon as that
    /// check answers.
    async fn check_key_or_defer(&mut self) -> Result<(), End> {
        if self.relayed || self.pipeline.is_some() {
            self.key_check_due = true;
            return Ok(());
        }
        self.check_key().await
    }

    async fn submit(&mut self, op: WriteOp) -> Result<(), End> {
        let result = self.state.recorder.submit(op).await;
        self.outcome(result)
    }

    fn outcome(&self, result: Result<OpOutcome, RecordError>) -> Result<(), End> {
        match result {
            Ok(OpOutcome::Applied) => Ok(()),
            Ok(OpOutcome::KeyRevoked) => Err(End::KeyRevoked),
            Ok(OpOutcome::GroupNotFound) => Err(End::StoreFailed),
            Ok(OpOutcome::ChatClosed) => Err(End::ChatClosed),
            Ok(OpOutcome::TooManyChats) => Err(End::StoreFailed),
            Err(RecordError::Closed) => Err(End::Shutdown),
            Err(e) => {
                tracing::error!(chat_id = %self.chat_id, error = %e, "recording failed");
                Err(End::StoreFailed)
            }
        }
    }

    fn settings_events(&mut self, s: &SessionSettings) -> Vec<NewEvent> {
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

    /// Merges new settings into the session's: given fields replace earlier ones.
    fn apply_settings(&mut self, s: SessionSettings) {
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

    /// A new event with the next sequence number and a non-decreasing timestamp.
    fn event(&mut self, role: EventRole, event_type: EventType, text: &str) -> NewEvent {
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

    fn next_ts(&mut self) -> i64 {
        self.last_ts = self.last_ts.max(now_ms());
        self.last_ts
    }

    /// Records one WAV clip of the assistant's voice at `offset` (ms from the chat's start),
    /// whichever engine produced it; a failure is logged and the chat goes on.
    async fn record_assistant_clip(&mut self, offset: i64, wav: &[u8]) {
        let (objects, user, chat) = (self.state.objects.clone(), self.who.user_id, self.chat_id);
        let rec = self.assistant_audio.get_or_insert_with(|| {
            VoiceRecorder::new(
                objects,
                user,
                chat,
                Voice::Assistant,
                CapturedFormat::WavClips,
            )
        });
        if let Err(e) = rec.append(offset, wav).await {
            self.capture_failed(e);
        }
    }

    fn offset_now(&mut self) -> i64 {
        self.next_ts() - self.start_ms
    }

    /// Every frame to the client goes through here. A write that makes no progress for
    /// `chat.send_timeout_secs` (the client stopped reading and its socket buffers are
    /// full) abandons the socket; so does one still blocked when the inactivity or
    /// max-duration limit comes, so those limits fire on time. `flush: false` only queues
    /// the frame (the next flushing write sends both in one write).
    async fn write(&mut self, msg: Message, flush: bool) -> Result<(), End> {
        if self.stalled {
            return Err(End::NotReading);
        }
        let give_up =
            Instant::now() + Duration::from_secs(self.state.settings.chat.send_timeout_secs);
        let deadline = give_up.min(self.idle_at).min(self.max_at);
        let sent = if flush {
            tokio::time::timeout_at(deadline, self.socket.send(msg)).await
        } else {
            tokio::time::timeout_at(deadline, futures::SinkExt::feed(&mut self.socket, msg)).await
        };
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::ClientClosed),
            Err(_) => {
                self.stalled = true;
                let end = if deadline == self.max_at {
                    End::MaxDuration
                } else if deadline == self.idle_at {
                    End::Inactivity
                } else {
                    End::NotReading
                };
                tracing::info!(chat_id = %self.chat_id, reason = end.reason(), "a send to the client made no progress; abandoning the socket");
                Err(end)
            }
        }
    }

    /// Queues a message without flushing the socket; the next [`Self::send`] writes both.
    async fn feed(&mut self, msg: &ServerMessage) -> Result<(), End> {
        let text = serde_json::to_string(msg).map_err(|_| End::ClientClosed)?;
        self.write(Message::Text(text.into()), false).await
    }

    async fn send_or_end(&mut self, msg: &ServerMessage) -> Result<(), End> {
        let text = serde_json::to_string(msg).map_err(|_| End::ClientClosed)?;
        self.write(Message::Text(text.into()), true).await
    }

    async fn send_error(&mut self, code: &str, slug: &str, message: String) -> Result<(), End> {
        let request_id = Some(self.request_id.clone());
        self.send_or_end(&ServerMessage::Error {
            code: code.into(),
            slug: slug.into(),
            message,
            request_id,
        })
        .await
    }

    /// Answers a bad client message with an `error`; the session goes on.
    async fn client_error(&mut self, code: &str, slug: &str, message: String) -> Result<(), End> {
        tracing::debug!(chat_id = %self.chat_id, code, %message, "bad client message");
        self.rejected = true;
        self.send_error(code, slug, message).await
    }
}

/// How long an unrecorded chat end waits before it is tried again (doubling up to
/// [`END_RETRY_MAX`]).
const END_RETRY_FIRST: Duration = Duration::from_millis(250);
const END_RETRY_MAX: Duration = Duration::from_secs(2);

/// Finishes a chat whose end could not be written at once: writes its remaining audio
/// (retried until written or given up), then records the end, retried until it is stored
/// or the server shuts down (then the next start's crash recovery closes the chat). So no
/// chat stays `ACTIVE` once the database and the object store accept writes again.
async fn finish_in_background(
    state: AppState,
    chat_id: Uuid,
    recorders: Vec<VoiceRecorder>,
    end_op: Option<WriteOp>,
) {
    for mut rec in recorders {
        if let Err(e) = rec.flush_until_done().await {
            tracing::error!(%chat_id, error = %e, "captured audio lost at the end of the chat");
        }
    }
    let Some(op) = end_op else { return };
    let mut delay = END_RETRY_FIRST;
    loop {
        match state.recorder.submit(op.clone()).await {
            Ok(_) => {
                tracing::info!(%chat_id, "the end of the chat is recorded");
                return;
            }
            Err(RecordError::Closed) => return,
            Err(RecordError::Database(e)) => {
                tracing::warn!(%chat_id, error = %e, retry_in_ms = delay.as_millis() as u64, "could not record the end of the chat; retrying");
            }
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(END_RETRY_MAX);
    }
}

fn storage_message(e: &RecordError) -> String {
    match e {
        RecordError::Closed => "the server is shutting down; reconnect in a moment".into(),
        RecordError::Database(_) => {
            "the server could not store the chat; try again later (details are in the server log)"
                .into()
        }
    }
}

/// A text frame (or a close reason) that is not valid UTF-8 (tungstenite's `Error::Utf8`).
fn is_utf8_error(e: &axum::Error) -> bool {
    e.to_string().contains("UTF-8")
}

fn is_capacity_error(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded")
        || text.contains("too long")
        || text.contains("Message too big")
}
