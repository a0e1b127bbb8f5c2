//! The relay engine: the chat is forwarded to an upstream EVI socket ([`upstream`]).
//!
//! Client messages are validated and recorded exactly as in client mode, then forwarded
//! unchanged (a refused message is not forwarded). Upstream messages are recorded, then
//! forwarded with their ids rewritten: the client only ever sees Colloquy's ids. See
//! `docs/engines.md` for the event mapping.

pub mod upstream;

use super::{language_metadata, Output};
use crate::session::core::Core;
use crate::session::ending::End;
use axum::extract::ws::Message;
use base64::Engine as _;
use colloquy_storage::{GroupChoice, PageRequest};
use colloquy_wire::{EventRole, EventType, SocketError};
use serde_json::{json, Value};
use upstream::{
    connect, content, prosody_scores, IdMap, Incoming, Upstream, UpstreamError, UpstreamIds,
};

/// A relayed chat: its upstream socket and the id mapping of what it sent.
pub struct RelayEngine {
    /// `None` when the upstream could not be opened (the chat then ends at once).
    upstream: Option<Upstream>,
    /// The upstream's ids of its side of the chat.
    ids: Option<UpstreamIds>,
    /// Why the upstream could not be opened.
    failed: Option<End>,
    /// Upstream assistant-message ids → Colloquy's `AGENT_MESSAGE` ids.
    relay_ids: IdMap,
    /// The last `AGENT_MESSAGE` recorded (for `assistant_prosody` without an id).
    last_agent_event: Option<uuid::Uuid>,
}

impl RelayEngine {
    /// Connects upstream with the client's query (a resumed Colloquy group resumes the
    /// matching upstream group). `None` once the chat was refused (nothing stored); a
    /// failed upstream still gives an engine, whose chat is opened and ended as `ERROR`
    /// with the reason ([`Self::start_failure`]).
    pub async fn connect(
        core: &mut Core,
        group: &GroupChoice,
        query: &[(String, String)],
    ) -> Option<Self> {
        let upstream_group = match group {
            GroupChoice::Resume(g) => upstream_group(core, *g).await?,
            GroupChoice::New(_) => None,
        };
        let state = core.state.clone();
        // A config of this account is Colloquy's own, not the upstream's: not forwarded.
        let query: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| {
                core.config.is_none()
                    || (k.as_str() != "config_id" && k.as_str() != "config_version")
            })
            .cloned()
            .collect();
        let connected = connect(
            &state.settings.engine.relay,
            &query,
            upstream_group.as_deref(),
            state.settings.chat.max_message_bytes,
        )
        .await;
        let mut engine = RelayEngine {
            upstream: None,
            ids: None,
            failed: None,
            relay_ids: IdMap::default(),
            last_agent_event: None,
        };
        match connected {
            Ok(up) => {
                tracing::info!(
                    upstream_chat_id = %up.ids.chat_id,
                    upstream_chat_group_id = %up.ids.chat_group_id,
                    "relaying chat"
                );
                engine.ids = Some(up.ids.clone());
                engine.upstream = Some(up);
            }
            Err(e) => engine.failed = Some(upstream_failed(core, e)),
        }
        Some(engine)
    }

    /// How the chat must end at once because the upstream could not be opened.
    pub fn start_failure(&self) -> Option<End> {
        self.failed
    }

    pub(super) fn on_open(&self, metadata: &mut Value) {
        if let Some(up) = &self.ids {
            metadata["upstream"] = up.to_json();
        }
    }

    /// Forwards an accepted client message, unchanged.
    pub(super) async fn forward_up(&mut self, core: &mut Core, text: &str) -> Result<(), End> {
        let Some(up) = self.upstream.as_mut() else {
            return Ok(());
        };
        match up
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => Err(upstream_failed(core, e)),
        }
    }

    /// The upstream's next message, or the time to check it is alive.
    pub(super) async fn next(&mut self) -> Output {
        let Some(up) = self.upstream.as_mut() else {
            return std::future::pending().await;
        };
        let check_at = up.next_check();
        tokio::select! {
            incoming = up.recv() => Output::Upstream(incoming),
            _ = tokio::time::sleep_until(check_at) => Output::KeepAlive,
        }
    }

    pub(super) async fn keep_alive(&mut self, core: &mut Core) -> Result<(), End> {
        if let Some(up) = self.upstream.as_mut() {
            if let Err(e) = up.keep_alive().await {
                return Err(upstream_failed(core, e));
            }
        }
        Ok(())
    }

    pub(super) async fn on_upstream(
        &mut self,
        core: &mut Core,
        incoming: Result<Incoming, UpstreamError>,
    ) -> Result<(), End> {
        match incoming {
            Ok(m) => self.relay_down(core, m).await,
            Err(e) => Err(upstream_failed(core, e)),
        }
    }

    /// Closes the upstream, unless it is the one that ended the chat.
    pub(super) async fn close(self, end: End) {
        if let Some(up) = self.upstream {
            match end {
                End::UpstreamClosed | End::UpstreamTimeout | End::UpstreamEnded => drop(up),
                _ => up.close().await,
            }
        }
    }

    /// Records what an upstream message means, then forwards it to the client.
    async fn relay_down(&mut self, core: &mut Core, incoming: Incoming) -> Result<(), End> {
        let text = match incoming {
            Incoming::Text(t) => t,
            Incoming::Binary(b) => {
                return send_frame(core, Message::Binary(b.into())).await;
            }
        };
        let mut v: Value = match serde_json::from_str(&text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                tracing::warn!(
                    "the upstream sent a frame that is not a JSON object; forwarded unrecorded"
                );
                return send_frame(core, Message::Text(text.into())).await;
            }
        };
        let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            // The client already has Colloquy's ids; a repeated one is dropped.
            "chat_metadata" => Ok(()),
            "user_message" => {
                if v.get("interim").and_then(Value::as_bool) != Some(true) {
                    let mut ev = core.event(EventRole::User, EventType::UserMessage, &content(&v));
                    ev.emotion_features = prosody_scores(&v);
                    ev.metadata = language_metadata(reported_language(&v).as_deref());
                    core.record(vec![ev]).await?;
                }
                send_frame(core, Message::Text(text.into())).await
            }
            "assistant_message" => {
                let local = match v.get("id").and_then(Value::as_str) {
                    Some(id) => self.relay_ids.local(id),
                    None => uuid::Uuid::now_v7(),
                };
                let mut ev = core.event(EventRole::Agent, EventType::AgentMessage, &content(&v));
                ev.id = local;
                ev.emotion_features = prosody_scores(&v);
                ev.metadata = language_metadata(reported_language(&v).as_deref());
                core.record(vec![ev]).await?;
                self.last_agent_event = Some(local);
                v["id"] = json!(local.to_string());
                send_value(core, &v).await
            }
            "assistant_prosody" => {
                let upstream_id = v.get("id").and_then(Value::as_str).map(str::to_string);
                let related = match &upstream_id {
                    Some(id) => Some(self.relay_ids.local(id)),
                    None => self.last_agent_event,
                };
                let mut ev = core.event(EventRole::Agent, EventType::AssistantProsody, "");
                ev.emotion_features = prosody_scores(&v);
                ev.related_event_id = related;
                core.record(vec![ev]).await?;
                if let (Some(_), Some(local)) = (upstream_id, related) {
                    v["id"] = json!(local.to_string());
                }
                send_value(core, &v).await
            }
            "audio_output" => {
                if let Some(id) = v.get("id").and_then(Value::as_str) {
                    let local = self.relay_ids.local(id);
                    v["id"] = json!(local.to_string());
                }
                capture_assistant_audio(core, v.get("data").and_then(Value::as_str)).await;
                send_value(core, &v).await
            }
            "tool_call" => {
                let ev = core.event(EventRole::Tool, EventType::FunctionCall, &text);
                core.record(vec![ev]).await?;
                send_frame(core, Message::Text(text.into())).await
            }
            // Built-in tools answered by the upstream itself.
            "tool_response" | "tool_error" => {
                let field = if kind == "tool_response" {
                    "content"
                } else {
                    "error"
                };
                let said = v
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let mut ev = core.event(EventRole::Tool, EventType::FunctionCallResponse, &said);
                ev.metadata = Some(text.clone());
                core.record(vec![ev]).await?;
                send_frame(core, Message::Text(text.into())).await
            }
            "user_interruption" => {
                let mut ev = core.event(EventRole::User, EventType::UserInterruption, "");
                if let Some(t) = v.get("time") {
                    ev.metadata = Some(json!({ "time": t }).to_string());
                }
                core.record(vec![ev]).await?;
                send_frame(core, Message::Text(text.into())).await
            }
            "error" => {
                if v.get("request_id").is_some() {
                    v["request_id"] = json!(core.request_id);
                }
                send_value(core, &v).await
            }
            // assistant_end, interim transcripts, session_settings, anything newer.
            _ => send_frame(core, Message::Text(text.into())).await,
        }
    }
}

/// Notes why the upstream failed; the ending that goes with it.
fn upstream_failed(core: &mut Core, e: UpstreamError) -> End {
    tracing::warn!(error = %e, "upstream failed");
    let end = match e {
        UpstreamError::Unavailable(_) => End::UpstreamUnavailable,
        UpstreamError::Closed(_) => End::UpstreamClosed,
        UpstreamError::Timeout(_) => End::UpstreamTimeout,
        UpstreamError::Ended(_) => End::UpstreamEnded,
    };
    core.end_detail = Some(e.to_string());
    end
}

/// The upstream group matching a Colloquy group: the one recorded in the metadata of
/// its most recent relayed chat (`Some(None)`: none was relayed, so a new upstream group
/// starts). `None` once the resume was refused.
async fn upstream_group(core: &mut Core, group: uuid::Uuid) -> Option<Option<String>> {
    let store = core.state.store.clone();
    let newest_first = PageRequest {
        number: 0,
        size: 100,
        ascending: false,
    };
    let chats = match store.get_chat_group(core.who.user_id, group).await {
        Ok(Some(_)) => store.list_group_chats(group, None, newest_first).await,
        Ok(None) => {
            core.refuse_unknown_group().await;
            return None;
        }
        Err(e) => Err(e),
    };
    match chats {
        Ok(page) => Some(
            page.items
                .iter()
                .filter_map(|c| c.metadata.as_deref())
                .find_map(UpstreamIds::group_in_metadata),
        ),
        Err(e) => {
            tracing::error!(error = %e, "could not read the chat group to resume");
            core.refuse(
                SocketError::StorageFailure,
                "the server could not read the chat group; try again later".into(),
            )
            .await;
            None
        }
    }
}

/// Captures one `audio_output` chunk (a complete WAV file) as assistant audio.
async fn capture_assistant_audio(core: &mut Core, data: Option<&str>) {
    if !core.who.data_retention {
        return;
    }
    let bytes = data.and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
    let Some(bytes) = bytes.filter(|b| b.starts_with(b"RIFF")) else {
        tracing::warn!(
            "an upstream audio_output chunk is not base64 WAV; forwarded but not recorded"
        );
        return;
    };
    let offset = core.offset_now();
    core.record_assistant_clip(offset, &bytes).await;
}

async fn send_value(core: &mut Core, v: &Value) -> Result<(), End> {
    send_frame(core, Message::Text(v.to_string().into())).await
}

async fn send_frame(core: &mut Core, msg: Message) -> Result<(), End> {
    core.write(msg, true).await
}

/// The `language` an upstream `user_message` / `assistant_message` reports, as ISO 639-1.
fn reported_language(v: &Value) -> Option<String> {
    v.get("language")
        .and_then(Value::as_str)
        .and_then(colloquy_speech::openai::iso639_1)
}
