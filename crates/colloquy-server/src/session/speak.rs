//! Client-driven mode speaks `assistant_input` when `[engine.client] speak` (the default) is
//! on and a voice is available (`[engine.pipeline.tts]`, else the built-in espeak-ng
//! voice): after the `assistant_message`, the text's speech goes out as `audio_output`
//! chunks (complete WAV files, `id` = the message's id, `index` from 0), then
//! `assistant_end`. The chunks are sent as soon as they are synthesized — the client
//! plays them — and recorded as the assistant's voice one after another from the moment
//! the first is sent. See `docs/engines.md`.

use super::{End, Session};
use base64::Engine;
use colloquy_speech::{decode_wav, Voice};
use colloquy_wire::socket::ServerMessage;
use std::sync::Arc;

/// The voice of a client-driven chat and where its speech sent so far ends.
pub(super) struct ClientVoice {
    voice: Arc<dyn Voice>,
    /// End of the speech sent so far, in ms from the chat's start.
    speech_end_ms: i64,
}

impl ClientVoice {
    /// Speaks with the voice shared by client-driven chats (see
    /// [`crate::engine::pipeline::shared_engines`]).
    pub(super) fn new(voice: Arc<dyn Voice>) -> Self {
        Self {
            voice,
            speech_end_ms: 0,
        }
    }
}

impl Session {
    /// Speaks one `assistant_input` (whose `assistant_message` went out with `id`): sends its
    /// `audio_output` chunks and records them. Nothing without a voice.
    pub(super) async fn speak_assistant_input(&mut self, id: &str, text: &str) -> Result<(), End> {
        let Some(voice) = self.client_voice.as_ref().map(|v| v.voice.clone()) else {
            return Ok(());
        };
        let chunks = crate::engine::pipeline::speak(voice.as_ref(), text).await;
        for (index, chunk) in chunks.iter().enumerate() {
            self.capture_client_speech(chunk).await;
            self.send_or_end(&ServerMessage::AudioOutput {
                id: id.to_string(),
                index: index as u32,
                data: base64::engine::general_purpose::STANDARD.encode(chunk),
            })
            .await?;
        }
        Ok(())
    }

    /// Records one chunk where the client plays it: now, or after the speech sent before.
    async fn capture_client_speech(&mut self, wav: &[u8]) {
        let now = self.offset_now();
        let Some(v) = self.client_voice.as_mut() else {
            return;
        };
        let (offset, _) = place_after(&mut v.speech_end_ms, now, wav);
        if !self.who.data_retention {
            return;
        }
        self.record_assistant_clip(offset, wav).await;
    }
}

/// Places a WAV clip on the timeline where the client plays it: now, or after the speech
/// sent before it (which ends at `speech_end_ms`, moved past the clip). Its offset and length
/// in ms.
pub(super) fn place_after(speech_end_ms: &mut i64, now: i64, wav: &[u8]) -> (i64, i64) {
    let offset = (*speech_end_ms).max(now);
    let ms = decode_wav(wav).map(|pcm| pcm.duration_ms()).unwrap_or(0) as i64;
    *speech_end_ms = offset + ms;
    (offset, ms)
}
