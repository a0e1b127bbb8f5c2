//! The chat WebSocket `/v0/evi/chat`: one connection is one chat.
//!
//! Where things are:
//! * this file: the upgrade ([`chat_socket`]), the session's start and its loop
//!   ([`Session::run`]): timers, the client's frames, the engine's output, background key
//!   checks, audio flushes;
//! * [`messages`]: what each client message does (validated, recorded, echoed, then handed
//!   to the engine);
//! * [`lifecycle`]: opening the chat and ending it; [`ending`]: every way a chat ends;
//! * [`core`]: the engine-independent state and the recording of events; [`output`]: every
//!   write to the client (with its deadline); [`audio`]: captured audio;
//! * the engines (client, relay, pipeline) are in `crate::engine`.
//!
//! Every client message is handled in order. A message that produces events is answered
//! (echoed) only after its events are committed; every message, recorded or not, also
//! re-checks that the session's API key is still live. Bad input gets an `error` message and
//! the session goes on.

mod audio;
pub mod connect;
pub mod core;
pub mod ending;
pub mod lifecycle;
pub mod messages;
mod output;
pub mod settings;

use crate::auth::{authenticate, find_credentials};
use crate::engine::client::ClientEngine;
use crate::engine::pipeline::PipelineEngine;
use crate::engine::relay::RelayEngine;
use crate::engine::{Engine, EngineMode};
use crate::error::ApiError;
use crate::live::{Attached, Control, Registration};
use crate::state::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use colloquy_storage::GroupChoice;
use colloquy_wire::SocketError;
use connect::ConnectParams;
use core::Core;
use ending::End;
use futures::stream::{FuturesUnordered, StreamExt};
use lifecycle::NotOpened;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::Instrument;

/// How much larger than `max_message_bytes` a message may be before the transport itself
/// refuses it and closes the socket (below that, it is refused with an `error` only).
const HARD_LIMIT_FACTOR: usize = 4;

/// Background key checks a relayed or pipeline chat may have in flight before the loop waits
/// for one.
const MAX_PENDING_CHECKS: usize = 8;

/// Longest `x-request-id` taken over as the session's request id.
const MAX_REQUEST_ID_LEN: usize = 128;

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
    // The request id of the upgrade (the `x-request-id` response header) is the chat's, so
    // a bug report quoting either finds the session's log lines.
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
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
            let core = Core::new(state, principal, socket, request_id);
            let span = tracing::info_span!(
                "chat",
                chat_id = %core.chat_id,
                request_id = %core.request_id,
                engine = mode.as_str(),
            );
            sessions.track_future(start(core, mode, params, pairs).instrument(span))
        })
}

/// A timer that never fires (about thirty years).
pub(crate) const NEVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// Which of the config's event messages is said.
#[derive(Debug, Clone, Copy)]
enum Said {
    Inactivity,
    MaxDuration,
}

/// One chat session: the engine-independent [`Core`] and the chat's [`Engine`].
pub struct Session {
    pub(crate) core: Core,
    pub(crate) engine: Engine,
    /// The chat's place among the live chats (`crate::live`) and its control queue, once
    /// open.
    pub(crate) live: Option<(Registration, mpsc::Receiver<Control>)>,
}

/// Runs a session from the accepted socket to its end.
async fn start(
    mut core: Core,
    mode: EngineMode,
    params: Result<ConnectParams, String>,
    query: Vec<(String, String)>,
) {
    let params = match params {
        Ok(p) => p,
        Err(msg) => {
            return core
                .refuse(SocketError::InvalidConnectParameters, msg)
                .await
        }
    };
    core.connect_event_limit = params.event_limit;
    if !core.resolve_config(&params, mode).await {
        return;
    }
    let Some(group) = core.group_choice(&params).await else {
        return;
    };
    if !core.count_open_chat().await {
        return;
    }
    let engine = match mode {
        EngineMode::Client => Engine::Client(ClientEngine::new(core.state.client_voice.clone())),
        EngineMode::Relay => match RelayEngine::connect(&mut core, &group, &query).await {
            Some(relay) => Engine::Relay(Box::new(relay)),
            None => return,
        },
        EngineMode::Pipeline => match core.state.pipeline.clone() {
            Some(services) => Engine::Pipeline(Box::new(PipelineEngine::new(
                services,
                params.verbose_transcription,
                core.config.as_deref(),
            ))),
            None => {
                return core
                    .refuse(
                        SocketError::PipelineUnavailable,
                        "the pipeline engine has no [engine.pipeline.llm] configured".into(),
                    )
                    .await
            }
        },
    };
    let mut engine = engine;
    let mut voice_refusal = None;
    if !matches!(engine, Engine::Relay(_)) {
        // The voice of the config, then the connect-time `voice_id`, from the voice
        // library (a relayed chat's voice is the upstream's).
        if let Some(voice) = core.config_voice().await {
            engine.set_voice(voice);
        }
        let voice_id = params
            .session_settings
            .as_ref()
            .and_then(|s| s.voice_id.clone());
        if let Some(id) = voice_id {
            match core.voice_by_id(&id).await {
                Ok(Some(voice)) => engine.set_voice(voice),
                Ok(None) => {}
                // Told right after `chat_metadata`; the chat goes on with its voice.
                Err(message) => voice_refusal = Some(message),
            }
        }
    }
    core.defer_key_checks = engine.defers_key_checks();
    let resumed = matches!(group, GroupChoice::Resume(_));
    let failed_at_start = match &engine {
        Engine::Relay(r) => r.start_failure(),
        _ => None,
    };
    let mut session = Session {
        core,
        engine,
        live: None,
    };
    let end = match session.open(params, group).await {
        Err(NotOpened::Refused) => return session.engine.close(End::ClientClosed).await,
        Err(NotOpened::ClientGone(end)) => end,
        Ok(()) => match failed_at_start {
            Some(end) => end,
            None => {
                session.engine.opened(&mut session.core, resumed).await;
                let told = match voice_refusal {
                    Some(message) => {
                        session
                            .core
                            .send_error(SocketError::InvalidMessage, message)
                            .await
                    }
                    None => Ok(()),
                };
                let ready = match told {
                    Ok(()) => session.greet().await,
                    Err(end) => Err(end),
                };
                match ready {
                    Ok(()) => session.run().await,
                    Err(end) => end,
                }
            }
        },
    };
    session.finish(end).await;
    let Session { engine, .. } = session;
    engine.close(end).await;
}

impl Session {
    /// Runs the chat until it ends.
    async fn run(&mut self) -> End {
        // A disabled inactivity timeout (by the chat's config) never fires.
        let inactivity = self.core.inactivity().unwrap_or(NEVER);
        self.core.idle_at = Instant::now() + inactivity;
        let max_duration = sleep_until(self.core.max_at);
        let idle = sleep_until(self.core.idle_at);
        tokio::pin!(max_duration, idle);
        let shutdown = self.core.state.shutdown.clone();
        // Key checks of messages that record nothing (relayed messages, pipeline audio
        // chunks), running while the loop goes on.
        let mut checks = FuturesUnordered::new();
        loop {
            for notice in std::mem::take(&mut self.core.capture_notices) {
                if let Err(end) = self
                    .core
                    .send_error(SocketError::AudioCaptureFailed, notice)
                    .await
                {
                    return end;
                }
            }
            let flush_at = self.core.audio_flush_deadline();
            let flush_due = async move {
                match flush_at {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let start_ms = self.core.start_ms;
            let msg = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Shutdown,
                _ = &mut max_duration => {
                    return match self.say_event_message(Said::MaxDuration).await {
                        Ok(()) => End::MaxDuration,
                        Err(end) => end,
                    };
                }
                _ = &mut idle => {
                    if self.core.warned_inactive || self.core.config.as_ref().is_none_or(|c| c.on_inactivity.is_none()) {
                        return End::Inactivity;
                    }
                    // Said once; the user has a grace period to answer.
                    if let Err(end) = self.say_event_message(Said::Inactivity).await {
                        return end;
                    }
                    self.core.warned_inactive = true;
                    let grace = Duration::from_secs(self.core.state.settings.chat.inactivity_grace_secs);
                    self.core.idle_at = Instant::now() + grace;
                    idle.as_mut().reset(self.core.idle_at);
                    continue;
                }
                _ = flush_due => {
                    self.core.flush_audio().await;
                    continue;
                }
                Some(checked) = checks.next(), if !checks.is_empty() => {
                    if let Err(end) = self.core.outcome(checked) {
                        return end;
                    }
                    continue;
                }
                out = self.engine.next(start_ms) => {
                    if let Err(end) = self.engine.on_output(&mut self.core, out).await {
                        return end;
                    }
                    continue;
                }
                Some(control) = next_control(&mut self.live) => {
                    let step = match control {
                        Control::Publish { raw, reply } => {
                            // A control-plane message is user activity, like the client's.
                            self.core.mark_active();
                            idle.as_mut().reset(self.core.idle_at);
                            self.core.rejected = false;
                            self.core.last_refusal = None;
                            let step = self.handle_text(&raw).await;
                            if std::mem::take(&mut self.core.key_check_due) && step.is_ok() {
                                let checked = self.core.check_key().await;
                                let _ = reply.send(match (&checked, self.core.last_refusal.take()) {
                                    (Ok(()), Some(refusal)) => Err(refusal),
                                    _ => Ok(()),
                                });
                                checked
                            } else {
                                let _ = reply.send(match self.core.last_refusal.take() {
                                    Some(refusal) => Err(refusal),
                                    None => Ok(()),
                                });
                                step
                            }
                        }
                        Control::Observe { tx, reply } => {
                            let attached = Attached {
                                chat_metadata: self.core.chat_metadata.clone(),
                                next_seq: self.core.next_seq(),
                                start_ms: self.core.start_ms,
                                held: self.core.held.iter().flatten().cloned().collect(),
                            };
                            if reply.send(attached).is_ok() {
                                self.core.observers.push(tx);
                            }
                            Ok(())
                        }
                    };
                    if let Err(end) = step {
                        return end;
                    }
                    continue;
                }
                msg = self.core.socket.recv() => msg,
            };
            let text = match msg {
                None | Some(Ok(Message::Close(_))) => return End::ClientClosed,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "socket read failed");
                    return if is_capacity_error(&e) {
                        End::TooBig
                    } else if is_utf8_error(&e) {
                        End::InvalidUtf8
                    } else if let Some(what) = protocol_error(&e) {
                        self.core.end_detail = Some(what);
                        End::ProtocolError
                    } else {
                        End::ClientClosed
                    };
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(frame)) => frame,
            };
            let step = if !self.within_rate() {
                self.core
                    .client_error(
                        SocketError::RateLimited,
                        format!(
                            "this account sent more than {} messages per second over its chats \
                             (limits.max_messages_per_second_per_account); this message was \
                             dropped, slow down",
                            self.core
                                .state
                                .settings
                                .limits
                                .max_messages_per_second_per_account
                        ),
                    )
                    .await
            } else {
                match text {
                    Message::Text(t) => {
                        self.core.rejected = false;
                        self.core.active = false;
                        let step = self.handle_text(t.as_str()).await;
                        if std::mem::take(&mut self.core.active) {
                            // User activity (not silent audio): the inactivity timer
                            // started over (`Core::mark_active`).
                            idle.as_mut().reset(self.core.idle_at);
                        }
                        if std::mem::take(&mut self.core.key_check_due) && step.is_ok() {
                            let recorder = self.core.state.recorder.clone();
                            let op = self.core.check_key_op();
                            checks.push(async move { recorder.submit(op).await });
                            if checks.len() > MAX_PENDING_CHECKS {
                                if let Some(checked) = checks.next().await {
                                    if let Err(end) = self.core.outcome(checked) {
                                        return end;
                                    }
                                }
                            }
                        }
                        step
                    }
                    Message::Binary(b) => self.binary_frame(b.len()).await,
                    _ => Ok(()),
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// The config's `on_new_chat` greeting, right after `chat_metadata` (relayed chats leave
    /// greetings to the upstream).
    async fn greet(&mut self) -> Result<(), End> {
        if matches!(self.engine, Engine::Relay(_)) {
            return Ok(());
        }
        let Some(text) = self.core.config.as_ref().and_then(|c| c.greeting.clone()) else {
            return Ok(());
        };
        self.engine.say(&mut self.core, &text).await
    }

    /// Says the config's message for a timeout that fired, if it has one enabled.
    async fn say_event_message(&mut self, which: Said) -> Result<(), End> {
        let text = self.core.config.as_ref().and_then(|c| match which {
            Said::Inactivity => c.on_inactivity.clone(),
            Said::MaxDuration => c.on_max_duration.clone(),
        });
        if text.is_some() {
            // The deadline that fired no longer bounds the sends of the message itself.
            let grace = Instant::now()
                + Duration::from_secs(self.core.state.settings.chat.send_timeout_secs);
            match which {
                Said::Inactivity => self.core.idle_at = grace,
                Said::MaxDuration => self.core.max_at = grace,
            }
        }
        match text {
            Some(text) => self.engine.say(&mut self.core, &text).await,
            None => Ok(()),
        }
    }

    /// Takes one client message from the account's rate budget.
    fn within_rate(&self) -> bool {
        let per_second = self
            .core
            .state
            .settings
            .limits
            .max_messages_per_second_per_account;
        self.core
            .state
            .account_limits
            .allow_message(self.core.who.user_id, per_second)
    }
}

/// The next control-plane request of an open chat (never, before it is open).
async fn next_control(
    live: &mut Option<(Registration, mpsc::Receiver<Control>)>,
) -> Option<Control> {
    match live {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A text frame (or a close reason) that is not valid UTF-8 (tungstenite's `Error::Utf8`).
fn is_utf8_error(e: &axum::Error) -> bool {
    e.to_string().contains("UTF-8")
}

/// What a frame that broke the WebSocket protocol did (tungstenite's `Error::Protocol`).
fn protocol_error(e: &axum::Error) -> Option<String> {
    let text = e.to_string();
    let what = text.strip_prefix("WebSocket protocol error: ")?;
    Some(what.to_string())
}

fn is_capacity_error(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded")
        || text.contains("too long")
        || text.contains("Message too big")
}
