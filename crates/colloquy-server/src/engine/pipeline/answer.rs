//! The pipeline's answer as the client gets it: each [`TurnOutput`] recorded, then sent;
//! the assistant's speech placed on the timeline where the client plays it and recorded
//! once its playback has started.

use super::turn::TurnOutput;
use super::PipelineEngine;
use crate::engine::{language_metadata, place_after};
use crate::session::core::Core;
use crate::session::ending::End;
use base64::Engine as _;
use colloquy_speech::expression::prosody_inference;
use colloquy_speech::prompt::HANG_UP_TOOL_NAME;
use colloquy_speech::ChatMessage;
use colloquy_wire::socket::{
    ChatMessage as WireMessage, Inference, MillisecondInterval, ServerMessage,
};
use colloquy_wire::{EventRole, EventType, SocketError};

impl PipelineEngine {
    /// Records and sends one output of the running answer.
    pub(in crate::engine) async fn on_turn_output(
        &mut self,
        core: &mut Core,
        out: Option<TurnOutput>,
    ) -> Result<(), End> {
        let now = core.offset_now();
        self.release_speech(core, Some(now)).await;
        let Some(out) = out else {
            // The task ended without a last word (it cannot, short of a panic).
            self.turn = None;
            self.answering = false;
            return Ok(());
        };
        match out {
            TurnOutput::Sentence { text, audio } => self.say_sentence(core, text, audio).await,
            TurnOutput::HeardSoFar(text) => {
                let (begin, end) = self.heard_span;
                // Interim transcripts are sent, not recorded (as in the hosted API).
                core.send_or_end(&ServerMessage::UserMessage {
                    message: WireMessage::text("user", text),
                    models: Inference::default(),
                    time: MillisecondInterval { begin, end },
                    from_text: false,
                    interim: true,
                    language: None,
                })
                .await
            }
            TurnOutput::Heard {
                text,
                scores,
                language,
            } => {
                self.turn = None;
                let (begin, end) = self.heard_span;
                if text.trim().is_empty() {
                    return Ok(()); // noise, or nothing the service understood
                }
                // Scores only when the expression service measured this utterance.
                let models = Inference {
                    prosody: scores.as_ref().map(prosody_inference),
                };
                let mut ev = core.event(EventRole::User, EventType::UserMessage, &text);
                ev.emotion_features = scores.as_ref().and_then(|s| serde_json::to_string(s).ok());
                ev.metadata = language_metadata(language.as_deref());
                core.record(vec![ev]).await?;
                core.send_or_end(&ServerMessage::UserMessage {
                    message: WireMessage::text("user", text.clone()),
                    models,
                    time: MillisecondInterval { begin, end },
                    from_text: false,
                    interim: false,
                    language,
                })
                .await?;
                self.user_turn(core, text).await
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
                let ev = core.event(EventRole::Tool, EventType::FunctionCall, &text);
                let event_id = ev.id.to_string();
                core.record(vec![ev]).await?;
                if builtin {
                    tracing::info!("the model hung up");
                    return Err(End::HangUp);
                }
                let said = std::mem::take(&mut self.answer);
                match self.turns.last_mut() {
                    Some(last) if !self.pending_tools.is_empty() => {
                        let mut call = ChatMessage::assistant_tool_call(&id, &name, &arguments);
                        last.tool_calls.append(&mut call.tool_calls);
                    }
                    _ => {
                        let mut call = ChatMessage::assistant_tool_call(&id, &name, &arguments);
                        if !said.trim().is_empty() {
                            call.content = Some(said.trim().to_string());
                        }
                        self.turns.push(call);
                    }
                }
                self.pending_tools.push(id);
                // The turn's assistant message carries the call (`message.tool_call`).
                let call = serde_json::to_value(&msg).unwrap_or_default();
                core.send_or_end(&ServerMessage::assistant_tool_call(event_id, call))
                    .await?;
                core.send_or_end(&msg).await
            }
            TurnOutput::Done => {
                self.turn = None;
                self.answering = false;
                if !self.pending_tools.is_empty() {
                    return Ok(()); // the answer goes on after the tool results
                }
                let said = std::mem::take(&mut self.answer);
                if !said.trim().is_empty() {
                    self.turns.push(ChatMessage::assistant(said.trim()));
                }
                self.wait_for_user(core);
                core.send_or_end(&ServerMessage::AssistantEnd {}).await
            }
            TurnOutput::Failed(detail) => {
                tracing::warn!(error = %detail, "pipeline answer failed");
                let spoke = self.sentences > 0;
                self.stop_answer();
                core.send_error(
                    SocketError::PipelineServiceFailed,
                    format!("the assistant could not answer: {detail}"),
                )
                .await?;
                if spoke {
                    core.send_or_end(&ServerMessage::AssistantEnd {}).await?;
                }
                Ok(())
            }
        }
    }

    /// One sentence: `AGENT_MESSAGE` committed, then `assistant_message` and its audio.
    pub(super) async fn say_sentence(
        &mut self,
        core: &mut Core,
        text: String,
        audio: Vec<Vec<u8>>,
    ) -> Result<(), End> {
        let ev = core.event(EventRole::Agent, EventType::AgentMessage, &text);
        let id = ev.id.to_string();
        core.record(vec![ev]).await?;
        if !self.answer.is_empty() {
            self.answer.push(' ');
        }
        self.answer.push_str(text.trim());
        self.sentences += 1;
        core.send_or_end(&ServerMessage::AssistantMessage {
            id: id.clone(),
            message: WireMessage::text("assistant", text),
            models: Inference::default(),
            from_text: false,
            is_quick_response: false,
            language: None,
        })
        .await?;
        let start = self.speech_end_ms.max(core.offset_now());
        for (index, chunk) in audio.iter().enumerate() {
            self.capture_speech(core, chunk).await;
            if let Ok(uuid) = uuid::Uuid::parse_str(&id) {
                self.last_spoken = Some((uuid, start, self.speech_end_ms));
            }
            core.send_or_end(&ServerMessage::AudioOutput {
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
    async fn capture_speech(&mut self, core: &mut Core, wav: &[u8]) {
        let now = core.offset_now();
        let (offset, ms) = place_after(&mut self.speech_end_ms, now, wav);
        self.unplayed.push_back((offset, ms, wav.to_vec()));
    }

    /// Records the speech whose playback started by `upto` (ms from the chat's start; `None`:
    /// all of it). Returns where the recorded speech ends.
    pub(in crate::engine) async fn release_speech(
        &mut self,
        core: &mut Core,
        upto: Option<i64>,
    ) -> i64 {
        let mut ready = Vec::new();
        while let Some((offset, _, _)) = self.unplayed.front() {
            if upto.is_some_and(|t| *offset > t) {
                break;
            }
            if let Some(chunk) = self.unplayed.pop_front() {
                self.played_end_ms = chunk.0 + chunk.1;
                ready.push(chunk);
            }
        }
        let played_end = self.played_end_ms;
        if !core.who.data_retention || ready.is_empty() {
            return played_end;
        }
        for (offset, _, wav) in ready {
            core.record_assistant_clip(offset, &wav).await;
        }
        played_end
    }
}
