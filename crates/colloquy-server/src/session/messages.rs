//! What each client message does: validated, recorded (committed before any answer), echoed
//! where the protocol echoes, then handed to the engine ([`Engine::on_client`]). A refused
//! message gets an `error` and reaches neither the store nor the engine.
//!
//! [`Engine::on_client`]: crate::engine::Engine::on_client

use super::ending::End;
use super::Session;
use crate::engine::{Accepted, ClientEvent};
use base64::Engine as _;
use colloquy_audio::{Linear16Format, StreamProbe};
use colloquy_wire::socket::{
    ChatMessage, ClientMessage, Inference, MillisecondInterval, ServerMessage,
};
use colloquy_wire::{EventRole, EventType, SocketError};
use serde_json::json;

/// Longest `user_input` / `assistant_input` text accepted, in bytes. What was said is
/// full-text indexed, and PostgreSQL cannot index a text whose words take more than 1 MiB,
/// so longer texts are refused on every backend alike.
pub const MAX_TEXT_BYTES: usize = 256 * 1024;

impl Session {
    /// One text frame from the client.
    pub(super) async fn handle_text(&mut self, text: &str) -> Result<(), End> {
        let core = &mut self.core;
        let limit = core.state.settings.chat.max_message_bytes;
        if text.len() > limit {
            core.check_key().await?;
            return core
                .client_error(
                    SocketError::MessageTooLarge,
                    format!(
                        "the message is {} bytes; the limit is {limit} bytes (chat.max_message_bytes). \
                         Send audio in smaller chunks (about 20-100 ms each)",
                        text.len()
                    ),
                )
                .await;
        }
        let msg = match ClientMessage::parse(text) {
            Ok((m, _)) => {
                // Audio counts as activity only where the user is heard (below).
                if !matches!(m, ClientMessage::AudioInput(_)) {
                    core.mark_active();
                }
                m
            }
            Err(e) => {
                core.check_key().await?;
                return core.client_error(e.error(), e.message().to_string()).await;
            }
        };
        let said = match &msg {
            ClientMessage::UserInput(i) => Some(("user_input", &i.text)),
            ClientMessage::AssistantInput(i) => Some(("assistant_input", &i.text)),
            _ => None,
        };
        if let Some((kind, said)) = said.filter(|(_, t)| t.len() > MAX_TEXT_BYTES) {
            core.check_key().await?;
            return core
                .client_error(
                    SocketError::InvalidMessage,
                    format!(
                        "`{kind}.text` is {} bytes; at most {MAX_TEXT_BYTES} bytes of text are \
                         accepted in one message, so split it into several",
                        said.len()
                    ),
                )
                .await;
        }
        let accepted = |event| Accepted { raw: text, event };
        if self.engine.records_inputs_itself() {
            if let ClientMessage::UserInput(_) | ClientMessage::AssistantInput(_) = msg {
                // The engine records its own replies (the upstream's user_message /
                // assistant_message).
                core.check_key_or_defer().await?;
                return self
                    .engine
                    .on_client(core, accepted(ClientEvent::Unrecorded))
                    .await;
            }
        }
        match msg {
            ClientMessage::UserInput(input) => {
                let offset = core.offset_now();
                let ev = core.event(EventRole::User, EventType::UserMessage, &input.text);
                core.record(vec![ev]).await?;
                core.send_or_end(&ServerMessage::UserMessage {
                    message: ChatMessage::text("user", input.text.clone()),
                    models: Inference::default(),
                    time: MillisecondInterval {
                        begin: offset,
                        end: offset,
                    },
                    from_text: true,
                    interim: false,
                    language: None,
                })
                .await?;
                self.engine
                    .on_client(core, accepted(ClientEvent::UserText(&input.text)))
                    .await
            }
            ClientMessage::AssistantInput(input) => {
                // Queued: without speech it leaves with `assistant_end` in one write; an
                // engine that speaks sends it first.
                let id = core.assistant_says(&input.text, true).await?;
                let event = ClientEvent::AssistantText {
                    id: &id,
                    text: &input.text,
                };
                self.engine.on_client(core, accepted(event)).await?;
                core.send_or_end(&ServerMessage::AssistantEnd {}).await
            }
            ClientMessage::SessionSettings(s) => {
                if let Err(msg) = super::settings::validate(&s) {
                    core.check_key().await?;
                    return core.client_error(SocketError::InvalidMessage, msg).await;
                }
                if s.audio.is_some() && s.audio != core.settings.audio && core.user_chunks > 0 {
                    core.check_key().await?;
                    return core
                        .client_error(
                            SocketError::InvalidMessage,
                            "session_settings.audio cannot change once audio has been sent in \
                             this chat; reconnect (resuming the chat group) to use another format"
                                .into(),
                        )
                        .await;
                }
                // `voice_id` picks a voice of the library or the account's saved voices
                // (a relayed chat's is the upstream's); an unknown one changes nothing.
                let mut voice = None;
                if let Some(id) = s
                    .voice_id
                    .as_deref()
                    .filter(|_| !self.engine.records_inputs_itself())
                {
                    match core.voice_by_id(id).await {
                        Ok(v) => voice = v,
                        Err(message) => {
                            core.check_key().await?;
                            return core
                                .client_error(SocketError::InvalidMessage, message)
                                .await;
                        }
                    }
                }
                let events = core.settings_events(&s);
                core.record(events).await?;
                core.apply_settings_and_store(s).await;
                if let Some(voice) = voice {
                    self.engine.set_voice(voice);
                }
                self.engine
                    .on_client(core, accepted(ClientEvent::Settings))
                    .await
            }
            ClientMessage::AudioInput(audio) => {
                let bytes = match base64::engine::general_purpose::STANDARD
                    .decode(audio.data.trim())
                {
                    Ok(b) if !b.is_empty() => b,
                    Ok(_) => {
                        core.check_key().await?;
                        return core
                            .client_error(
                                SocketError::InvalidAudio,
                                "audio_input.data is empty; send base64-encoded audio".into(),
                            )
                            .await;
                    }
                    Err(e) => {
                        core.check_key().await?;
                        return core
                            .client_error(
                                SocketError::InvalidAudio,
                                format!("audio_input.data is not valid base64 ({e}); encode the audio bytes with standard base64"),
                            )
                            .await;
                    }
                };
                let expected = core.settings.audio.as_ref().map(|a| Linear16Format {
                    sample_rate: a.sample_rate,
                    channels: a.channels as u16,
                });
                let probe = core
                    .user_probe
                    .get_or_insert_with(|| StreamProbe::new(expected));
                if let Err(e) = probe.feed(&bytes) {
                    core.check_key().await?;
                    return core
                        .client_error(
                            SocketError::InvalidAudio,
                            format!(
                                "this audio_input chunk could not be decoded and was not recorded: {e}"
                            ),
                        )
                        .await;
                }
                let offset = core.offset_now();
                if core.user_chunks == 0 {
                    let ev = core.event(EventRole::User, EventType::UserRecordingStartMessage, "");
                    core.record(vec![ev]).await?;
                } else {
                    core.check_key_or_defer().await?;
                }
                core.user_chunks += 1;
                if !self.engine.detects_turns() && core.audio_is_heard(&bytes) {
                    core.mark_active();
                }
                // A capture failure is not a bad message: the engine still gets the chunk.
                core.capture_user_audio(offset, &bytes).await;
                self.engine
                    .on_client(core, accepted(ClientEvent::Audio(&bytes)))
                    .await
            }
            ClientMessage::ToolResponse(r) => {
                let message = tagged(&r, "tool_response");
                self.tool_answer(text, &r.tool_call_id, &r.content, message)
                    .await
            }
            ClientMessage::ToolError(r) => {
                let message = tagged(&r, "tool_error");
                self.tool_answer(text, &r.tool_call_id, &r.error, message)
                    .await
            }
            ClientMessage::PauseAssistantMessage | ClientMessage::ResumeAssistantMessage => {
                let paused = matches!(msg, ClientMessage::PauseAssistantMessage);
                let ty = if paused {
                    EventType::PauseOnset
                } else {
                    EventType::ResumeOnset
                };
                let ev = core.event(EventRole::User, ty, "");
                core.record(vec![ev]).await?;
                self.engine
                    .on_client(core, accepted(ClientEvent::Pause(paused)))
                    .await
            }
        }
    }

    /// A `tool_response` / `tool_error` (`message`, `type` included): recorded as a
    /// `FUNCTION_CALL_RESPONSE` saying `text` with the message in its metadata, then handed
    /// to the engine (`raw`: the frame as received).
    async fn tool_answer(
        &mut self,
        raw: &str,
        tool_call_id: &str,
        text: &str,
        message: serde_json::Value,
    ) -> Result<(), End> {
        let core = &mut self.core;
        let mut ev = core.event(EventRole::Tool, EventType::FunctionCallResponse, text);
        ev.metadata = Some(message.to_string());
        core.record(vec![ev]).await?;
        let event = ClientEvent::ToolResult {
            tool_call_id,
            message,
        };
        let accepted = Accepted { raw, event };
        self.engine.on_client(core, accepted).await
    }

    /// A binary frame: refused (audio goes base64-encoded in `audio_input`).
    pub(super) async fn binary_frame(&mut self, len: usize) -> Result<(), End> {
        let checked = self.core.check_key().await;
        let told = self
            .core
            .client_error(
                SocketError::InvalidMessage,
                format!(
                    "binary frames ({len} bytes) are not accepted; send JSON text frames \
                     (audio goes base64-encoded in an audio_input message)"
                ),
            )
            .await;
        checked.and(told)
    }
}

/// `value` as JSON with its `type`.
fn tagged(value: &impl serde::Serialize, kind: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(value).unwrap_or_default();
    v["type"] = json!(kind);
    v
}
