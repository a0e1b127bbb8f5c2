//! The relay engine inside the session loop: the chat is forwarded to an upstream EVI socket.
//!
//! Client messages are validated and recorded exactly as in client mode, then forwarded
//! unchanged (a refused message is not forwarded). Upstream messages are recorded, then
//! forwarded with their ids rewritten: the client only ever sees Colloquy's ids. See
//! `docs/engines.md` for the event mapping.

use super::{End, Session};
use crate::engine::relay::{connect, content, prosody_scores, Incoming, Upstream, UpstreamError};
use axum::extract::ws::Message;
use base64::Engine;
use colloquy_storage::{GroupChoice, PageRequest};
use colloquy_wire::{EventRole, EventType};
use serde_json::{json, Value};

use super::connect::ConnectParams;
use crate::engine::relay::UpstreamIds;

impl Session {
    /// Runs a relayed chat: connects upstream, opens the chat, relays until it ends.
    /// A failed upstream still leaves a chat behind, ended as `ERROR` with the reason.
    pub(super) async fn relay(
        &mut self,
        params: ConnectParams,
        group: GroupChoice,
        query: &[(String, String)],
    ) {
        let upstream_group = match group {
            GroupChoice::Resume(g) => match self.upstream_group(g).await {
                Some(found) => found,
                None => return,
            },
            GroupChoice::New(_) => None,
        };
        let state = self.state.clone();
        let connected = connect(
            &state.settings.engine.relay,
            query,
            upstream_group.as_deref(),
            state.settings.chat.max_message_bytes,
        )
        .await;
        match connected {
            Ok(mut up) => {
                tracing::info!(
                    chat_id = %self.chat_id,
                    upstream_chat_id = %up.ids.chat_id,
                    upstream_chat_group_id = %up.ids.chat_group_id,
                    "relaying chat"
                );
                let ids = up.ids.clone();
                if !self.open(params, group, Some(&ids)).await {
                    up.close().await;
                    return;
                }
                let end = self.run(Some(&mut up)).await;
                self.finish(end).await;
                match end {
                    End::UpstreamClosed | End::UpstreamTimeout | End::UpstreamEnded => drop(up),
                    _ => up.close().await,
                }
            }
            Err(e) => {
                let end = self.upstream_failed(e);
                if self.open(params, group, None).await {
                    self.finish(end).await;
                }
            }
        }
    }

    /// The upstream group matching a Colloquy group: the one recorded in the metadata of
    /// its most recent relayed chat (`Some(None)`: none was relayed, so a new upstream group
    /// starts). `None` once the resume was refused.
    async fn upstream_group(&mut self, group: uuid::Uuid) -> Option<Option<String>> {
        let store = self.state.store.clone();
        let newest_first = PageRequest {
            number: 0,
            size: 100,
            ascending: false,
        };
        let chats = match store.get_chat_group(self.who.user_id, group).await {
            Ok(Some(_)) => store.list_group_chats(group, None, newest_first).await,
            Ok(None) => {
                self.refuse_unknown_group().await;
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
                self.refuse(
                    "I0100",
                    "storage_failure",
                    "the server could not read the chat group; try again later".into(),
                )
                .await;
                None
            }
        }
    }

    /// Notes why the upstream failed; the ending that goes with it.
    pub(super) fn upstream_failed(&mut self, e: UpstreamError) -> End {
        tracing::warn!(chat_id = %self.chat_id, error = %e, "upstream failed");
        let end = match e {
            UpstreamError::Unavailable(_) => End::UpstreamUnavailable,
            UpstreamError::Closed(_) => End::UpstreamClosed,
            UpstreamError::Timeout(_) => End::UpstreamTimeout,
            UpstreamError::Ended(_) => End::UpstreamEnded,
        };
        self.end_detail = Some(e.to_string());
        end
    }

    /// Forwards an accepted client message, unchanged.
    pub(super) async fn forward_up(&mut self, up: &mut Upstream, text: &str) -> Result<(), End> {
        match up.send(tungstenite_text(text)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.upstream_failed(e)),
        }
    }

    /// Records what an upstream message means, then forwards it to the client.
    pub(super) async fn handle_upstream(&mut self, incoming: Incoming) -> Result<(), End> {
        let text = match incoming {
            Incoming::Text(t) => t,
            Incoming::Binary(b) => {
                return self.send_frame(Message::Binary(b.into())).await;
            }
        };
        let mut v: Value = match serde_json::from_str(&text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                tracing::warn!(chat_id = %self.chat_id, "the upstream sent a frame that is not a JSON object; forwarded unrecorded");
                return self.send_frame(Message::Text(text.into())).await;
            }
        };
        let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            // The client already has Colloquy's ids; a repeated one is dropped.
            "chat_metadata" => Ok(()),
            "user_message" => {
                if v.get("interim").and_then(Value::as_bool) != Some(true) {
                    let mut ev = self.event(EventRole::User, EventType::UserMessage, &content(&v));
                    ev.emotion_features = prosody_scores(&v);
                    self.record(vec![ev]).await?;
                }
                self.send_frame(Message::Text(text.into())).await
            }
            "assistant_message" => {
                let local = match v.get("id").and_then(Value::as_str) {
                    Some(id) => self.relay_ids.local(id),
                    None => uuid::Uuid::now_v7(),
                };
                let mut ev = self.event(EventRole::Agent, EventType::AgentMessage, &content(&v));
                ev.id = local;
                ev.emotion_features = prosody_scores(&v);
                self.record(vec![ev]).await?;
                self.last_agent_event = Some(local);
                v["id"] = json!(local.to_string());
                self.send_value(&v).await
            }
            "assistant_prosody" => {
                let upstream_id = v.get("id").and_then(Value::as_str).map(str::to_string);
                let related = match &upstream_id {
                    Some(id) => Some(self.relay_ids.local(id)),
                    None => self.last_agent_event,
                };
                let mut ev = self.event(EventRole::Agent, EventType::AssistantProsody, "");
                ev.emotion_features = prosody_scores(&v);
                ev.related_event_id = related;
                self.record(vec![ev]).await?;
                if let (Some(_), Some(local)) = (upstream_id, related) {
                    v["id"] = json!(local.to_string());
                }
                self.send_value(&v).await
            }
            "audio_output" => {
                if let Some(id) = v.get("id").and_then(Value::as_str) {
                    let local = self.relay_ids.local(id);
                    v["id"] = json!(local.to_string());
                }
                self.capture_assistant_audio(v.get("data").and_then(Value::as_str))
                    .await;
                self.send_value(&v).await
            }
            "tool_call" => {
                let ev = self.event(EventRole::Tool, EventType::FunctionCall, &text);
                self.record(vec![ev]).await?;
                self.send_frame(Message::Text(text.into())).await
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
                let mut ev = self.event(EventRole::Tool, EventType::FunctionCallResponse, &said);
                ev.metadata = Some(text.clone());
                self.record(vec![ev]).await?;
                self.send_frame(Message::Text(text.into())).await
            }
            "user_interruption" => {
                let mut ev = self.event(EventRole::User, EventType::UserInterruption, "");
                if let Some(t) = v.get("time") {
                    ev.metadata = Some(json!({ "time": t }).to_string());
                }
                self.record(vec![ev]).await?;
                self.send_frame(Message::Text(text.into())).await
            }
            "error" => {
                if v.get("request_id").is_some() {
                    v["request_id"] = json!(self.request_id);
                }
                self.send_value(&v).await
            }
            // assistant_end, interim transcripts, session_settings, anything newer.
            _ => self.send_frame(Message::Text(text.into())).await,
        }
    }

    /// Captures one `audio_output` chunk (a complete WAV file) as assistant audio.
    async fn capture_assistant_audio(&mut self, data: Option<&str>) {
        if !self.who.data_retention {
            return;
        }
        let bytes = data.and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
        let Some(bytes) = bytes.filter(|b| b.starts_with(b"RIFF")) else {
            tracing::warn!(chat_id = %self.chat_id, "an upstream audio_output chunk is not base64 WAV; forwarded but not recorded");
            return;
        };
        let offset = self.offset_now();
        self.record_assistant_clip(offset, &bytes).await;
    }

    async fn send_value(&mut self, v: &Value) -> Result<(), End> {
        self.send_frame(Message::Text(v.to_string().into())).await
    }

    async fn send_frame(&mut self, msg: Message) -> Result<(), End> {
        self.write(msg, true).await
    }
}

fn tungstenite_text(text: &str) -> tokio_tungstenite::tungstenite::Message {
    tokio_tungstenite::tungstenite::Message::Text(text.into())
}
