//! The client-driven engine: the client drives the chat and the session answers it itself.
//!
//! `assistant_input` is spoken when `[engine.client] speak` (the default) is on and a voice
//! is available (`[engine.pipeline.tts]`, else the built-in espeak-ng voice): after the
//! `assistant_message`, the text's speech goes out as `audio_output` chunks (complete WAV
//! files, `id` = the message's id, `index` from 0), then `assistant_end`. The chunks are
//! sent as soon as they are synthesized — the client plays them — and recorded as the
//! assistant's voice one after another from the moment the first is sent. See
//! `docs/engines.md`.

use super::{place_after, ClientEvent};
use crate::session::core::Core;
use crate::session::ending::End;
use base64::Engine as _;
use colloquy_speech::Voice;
use colloquy_wire::socket::ServerMessage;
use std::sync::Arc;

/// A client-driven chat: its voice (if any) and where the speech sent so far ends.
pub struct ClientEngine {
    voice: Option<Arc<dyn Voice>>,
    /// End of the speech sent so far, in ms from the chat's start.
    speech_end_ms: i64,
}

impl ClientEngine {
    /// Speaks with the voice shared by client-driven chats (see
    /// [`super::pipeline::turn::shared_engines`]); `None`: text only.
    pub fn new(voice: Option<Arc<dyn Voice>>) -> Self {
        Self {
            voice,
            speech_end_ms: 0,
        }
    }

    /// Speaks with `voice` from now on, if this chat speaks at all (`[engine.client] speak`
    /// and a voice available at start).
    pub(super) fn set_voice(&mut self, voice: Arc<dyn Voice>) {
        if self.voice.is_some() {
            self.voice = Some(voice);
        }
    }

    pub(super) async fn on_client(
        &mut self,
        core: &mut Core,
        event: ClientEvent<'_>,
    ) -> Result<(), End> {
        match event {
            ClientEvent::AssistantText { id, text } => self.speak(core, id, text).await,
            _ => Ok(()),
        }
    }

    /// Speaks one `assistant_input` (whose `assistant_message` is queued with `id`): sends its
    /// `audio_output` chunks and records them. Nothing without a voice.
    pub(super) async fn speak(&mut self, core: &mut Core, id: &str, text: &str) -> Result<(), End> {
        let Some(voice) = self.voice.clone() else {
            return Ok(());
        };
        // The text goes out at once, before the speech is synthesized.
        core.flush().await?;
        let chunks = super::pipeline::turn::speak(voice.as_ref(), text).await;
        for (index, chunk) in chunks.iter().enumerate() {
            let now = core.offset_now();
            let (offset, _) = place_after(&mut self.speech_end_ms, now, chunk);
            if core.who.data_retention {
                core.record_assistant_clip(offset, chunk).await;
            }
            core.send_or_end(&ServerMessage::AudioOutput {
                id: id.to_string(),
                index: index as u32,
                data: base64::engine::general_purpose::STANDARD.encode(chunk),
            })
            .await?;
        }
        Ok(())
    }
}
