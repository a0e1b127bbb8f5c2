//! A chat's start (refusals, the stored chat, `chat_metadata`) and its end (the recorded
//! end, the farewell `error`, the close), including ends that could not be written at once
//! and are finished in the background.

use super::connect::ConnectParams;
use super::core::Core;
use super::ending::End;
use super::Session;
use crate::capture::VoiceRecorder;
use crate::engine::EngineMode;
use crate::platform::chat_config::{self, Unresolved};
use crate::recorder::RecordError;
use crate::state::AppState;
use colloquy_storage::{GroupChoice, NewChat, OpOutcome, WriteOp};
use colloquy_wire::socket::ServerMessage;
use colloquy_wire::{ChatStatus, EventRole, EventType, SocketError};
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// How a chat could not be opened.
pub enum NotOpened {
    /// Refused with an `error`; nothing is stored.
    Refused,
    /// The chat was stored but the client was gone before `chat_metadata` reached it; it
    /// must be ended this way.
    ClientGone(End),
}

impl Core {
    /// Resolves `config_id` (and `config_version`) before anything is stored; false (after
    /// refusing) when the account has no such config or version.
    ///
    /// A relayed chat's `config_id` that the account does not have is the upstream's: it
    /// is forwarded and recorded as given.
    pub(crate) async fn resolve_config(
        &mut self,
        params: &ConnectParams,
        mode: EngineMode,
    ) -> bool {
        let Some(id) = params.config_id.as_deref() else {
            return true;
        };
        let Ok(id) = Uuid::parse_str(id) else {
            // `ConnectParams::parse` only keeps UUIDs.
            return true;
        };
        match chat_config::resolve(&self.state, self.who.user_id, id, params.config_version).await {
            Ok(config) => {
                tracing::debug!(config_id = %config.id, config_version = config.version, "config resolved");
                self.set_config(config);
                true
            }
            Err(Unresolved::NotFound(_)) if mode == EngineMode::Relay => {
                tracing::debug!(config_id = %id, "not a config of this account: the upstream's");
                true
            }
            Err(Unresolved::NotFound(message)) => {
                self.refuse(SocketError::ConfigNotFound, message).await;
                false
            }
            Err(Unresolved::Store(e)) => {
                tracing::error!(error = ?e, "could not read the chat's config");
                self.refuse(
                    SocketError::StorageFailure,
                    "the server could not read the config; try again later (details are in                      the server log)"
                        .into(),
                )
                .await;
                false
            }
        }
    }

    /// The group the chat starts or joins; `None` (after refusing) if it cannot resume.
    pub(crate) async fn group_choice(&mut self, params: &ConnectParams) -> Option<GroupChoice> {
        let group = match params.resumed_chat_group_id {
            Some(_) if !self.who.data_retention => {
                self.refuse(
                    SocketError::ResumeUnavailable,
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

    /// Counts the chat against `limits.max_concurrent_chats_per_account` where the database
    /// cannot (retention-disabled accounts); false after refusing it.
    pub(crate) async fn count_open_chat(&mut self) -> bool {
        let max = self.state.settings.limits.max_concurrent_chats_per_account;
        if max == 0 || self.who.data_retention {
            return true;
        }
        match self.state.account_limits.open_chat(self.who.user_id, max) {
            Some(counted) => {
                self.counted = Some(counted);
                true
            }
            None => {
                self.refuse_too_many_chats().await;
                false
            }
        }
    }

    pub(crate) async fn refuse_too_many_chats(&mut self) {
        let max = self.state.settings.limits.max_concurrent_chats_per_account;
        let msg = format!(
            "this account already has {max} open chats, the most allowed at once \
             (limits.max_concurrent_chats_per_account); end one before starting another"
        );
        self.refuse(SocketError::TooManyChats, msg).await;
    }

    pub(crate) async fn refuse_unknown_group(&mut self) {
        let msg = format!(
            "chat group {} was not found for this account; pass the chat_group_id from a \
             previous chat_metadata message or from GET /v0/evi/chat_groups",
            self.group_id
        );
        self.refuse(SocketError::ChatGroupNotFound, msg).await;
    }
}

impl Session {
    /// Creates the chat (or joins the group) and sends `chat_metadata`.
    pub(crate) async fn open(
        &mut self,
        params: ConnectParams,
        group: GroupChoice,
    ) -> Result<(), NotOpened> {
        let core = &mut self.core;
        let mut events = vec![core.event(EventRole::System, EventType::ChatStartMessage, "")];
        if let Some(s) = params.session_settings {
            events.extend(core.settings_events(&s));
            core.apply_settings(s);
        }
        if core.settings.system_prompt.is_none() {
            // The config's prompt, unless the client's connect-time settings replaced it.
            if let Some(prompt) = core.config.as_ref().and_then(|c| c.prompt.clone()) {
                events.push(core.event(EventRole::System, EventType::SystemPrompt, &prompt));
            }
        }
        let mut metadata = json!({ "request_id": core.request_id });
        if let Some(csid) = &core.settings.custom_session_id {
            metadata["custom_session_id"] = json!(csid);
        }
        self.engine.on_open(core, &mut events, &mut metadata);
        core.chat_meta = metadata.clone();
        // The resolved config; a relayed chat's unresolved one (the upstream's) as given.
        let (config_id, config_version) = match &core.config {
            Some(c) => (Some(c.id.to_string()), Some(c.version)),
            None => (params.config_id.clone(), params.config_version),
        };
        // Issue 14: the chat's webhook subscriptions, its config's and the server's.
        let config_webhooks = core.config.as_ref().map_or(&[][..], |c| &c.webhooks[..]);
        let chat = NewChat {
            id: core.chat_id,
            user_id: core.who.user_id,
            group,
            start_timestamp: core.start_ms,
            metadata: Some(metadata.to_string()),
            config_id: config_id.clone(),
            config_version,
            instance_id: core.state.instance_id,
            webhooks: crate::webhooks::subscriptions(
                &core.state.settings.webhooks,
                config_webhooks,
            ),
        };
        core.hooks.prepare(&chat, &events, core.who.data_retention);
        let op = if core.who.data_retention {
            WriteOp::StartChat {
                api_key_id: core.who.api_key_id,
                chat,
                events,
                max_active_chats: Some(core.state.settings.limits.max_concurrent_chats_per_account)
                    .filter(|&max| max > 0),
            }
        } else {
            core.check_key_op()
        };
        let refusal = match core.state.recorder.submit(op).await {
            Ok(OpOutcome::Applied) => None,
            Ok(OpOutcome::GroupNotFound) => {
                core.refuse_unknown_group().await;
                return Err(NotOpened::Refused);
            }
            Ok(OpOutcome::TooManyChats) => {
                core.refuse_too_many_chats().await;
                return Err(NotOpened::Refused);
            }
            Ok(OpOutcome::ChatClosed) => Some((
                SocketError::StorageFailure,
                "the chat could not be created".to_string(),
            )),
            Ok(OpOutcome::KeyRevoked) => Some((
                SocketError::ApiKeyRevoked,
                "this API key was revoked".to_string(),
            )),
            Err(e) => Some((SocketError::StorageFailure, storage_message(&e))),
        };
        if let Some((error, message)) = refusal {
            core.refuse(error, message).await;
            return Err(NotOpened::Refused);
        }
        core.hooks.opened(&core.state);
        tracing::info!(chat_group_id = %core.group_id, "chat started");
        let meta = ServerMessage::ChatMetadata {
            chat_id: core.chat_id.to_string(),
            chat_group_id: core.group_id.to_string(),
            request_id: core.request_id.clone(),
        };
        core.chat_metadata = core.text_of(&meta).unwrap_or_default();
        core.send_or_end(&meta)
            .await
            .map_err(NotOpened::ClientGone)?;
        // Reachable through the control plane from now on.
        if params.allow_connection && !core.who.data_retention {
            core.held = Some(Default::default());
        }
        let (registration, control) =
            core.state
                .live
                .register(core.chat_id, core.who.user_id, params.allow_connection);
        self.live = Some((registration, control));
        Ok(())
    }

    /// Ends the chat: records the end, then lets the close handshake finish.
    pub(crate) async fn finish(&mut self, end: End) {
        // Speech the engine sent but has not recorded yet (the client has it).
        self.engine.before_end(&mut self.core).await;
        let core = &mut self.core;
        let deleted = end == End::ChatClosed
            && matches!(
                core.state
                    .store
                    .get_chat(core.who.user_id, core.chat_id)
                    .await,
                Ok(None)
            );
        if deleted {
            // The chat was deleted while it ran: drop its audio instead of writing more.
            core.user_audio = None;
            core.assistant_audio = None;
            if let Err(e) = core
                .state
                .objects
                .erase_chat(core.who.user_id, core.chat_id)
                .await
            {
                tracing::warn!(error = %e, "could not erase the audio of a deleted chat");
            }
        }
        // From here on, sends to the client only have the send timeout (the inactivity or
        // max-duration deadline that ended the chat may have passed).
        let grace =
            Instant::now() + Duration::from_secs(core.state.settings.chat.send_timeout_secs);
        (core.idle_at, core.max_at) = (grace, grace);
        core.flush_audio().await;
        let ending = end.describe();
        let end_ts = core.next_ts();
        let end_op = core.who.data_retention.then(|| {
            let mut ev = core.event(EventRole::System, EventType::ChatEndMessage, "");
            ev.timestamp = end_ts;
            let mut meta = json!({ "status": ending.status.as_str(), "reason": ending.reason });
            if let Some(detail) = core
                .end_detail
                .as_ref()
                .filter(|_| ending.status == ChatStatus::Error)
            {
                meta["error"] = json!(detail);
            }
            ev.metadata = Some(meta.to_string());
            WriteOp::EndChat {
                api_key_id: core.who.api_key_id,
                chat_id: core.chat_id,
                status: ending.status,
                end_timestamp: end_ts,
                events: vec![ev],
            }
        });
        let unwritten: Vec<VoiceRecorder> = [core.user_audio.take(), core.assistant_audio.take()]
            .into_iter()
            .flatten()
            .filter(VoiceRecorder::has_pending)
            .collect();
        if !unwritten.is_empty() {
            // The store refuses writes: keep retrying in the background, then record the end
            // (the chat stays ACTIVE until then, so no reconstruction starts without it).
            core.state.sessions.spawn(finish_in_background(
                core.state.clone(),
                core.chat_id,
                unwritten,
                end_op,
            ));
        } else if let Some(op) = end_op {
            match core.state.recorder.submit(op.clone()).await {
                Err(RecordError::Database(e)) => {
                    tracing::error!(error = %e, "could not record the end of the chat; retrying in the background");
                    core.state.sessions.spawn(finish_in_background(
                        core.state.clone(),
                        core.chat_id,
                        Vec::new(),
                        Some(op),
                    ));
                }
                Err(RecordError::Closed) => {
                    tracing::warn!("shutting down before the end of the chat was recorded; the next start closes it");
                }
                Ok(_) => core.hooks.ended(&core.state, ending.status, end_ts),
            }
        } else if !core.who.data_retention {
            core.hooks.ended(&core.state, ending.status, end_ts);
        }
        tracing::info!(status = %ending.status, reason = ending.reason, "chat ended");
        // Not reachable any more; observers' sockets close with the chat's end reason.
        self.live = None;
        let core = &mut self.core;
        core.release_observers(ending.reason);
        if let Some(error) = ending.farewell {
            let limit = core.state.settings.chat.max_message_bytes * super::HARD_LIMIT_FACTOR;
            let message = end.farewell_message(core.end_detail.as_deref(), deleted, limit);
            if core.send_error(error, message).await.is_err() {
                return;
            }
        }
        let (code, reason) = ending.close;
        core.close(code, reason).await;
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
                state.webhooks.wake();
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

/// What a client is told when the chat could not be stored.
pub(crate) fn storage_message(e: &RecordError) -> String {
    match e {
        RecordError::Closed => "the server is shutting down; reconnect in a moment".into(),
        RecordError::Database(_) => {
            "the server could not store the chat; try again later (details are in the server log)"
                .into()
        }
    }
}
