//! The chat's captured audio: the user's `audio_input` chunks and the assistant's speech,
//! written through [`VoiceRecorder`]s (failed writes are retried; audio finally lost is
//! told to the client and noted for the reconstruction).

use super::core::Core;
use crate::capture::{CaptureError, CapturedFormat, VoiceRecorder};
use crate::objects::Voice;

/// RMS (of full scale) from which a chunk of the user's audio counts as activity in chats
/// without turn detection (client and relay modes): about −40 dBFS, above a quiet room's
/// noise and far below speech.
pub const HEARD_RMS: f32 = 0.01;

impl Core {
    /// Whether an accepted `audio_input` chunk is loud enough to count as the user's
    /// activity, for engines without turn detection (the pipeline's turn detector decides
    /// in pipeline chats). Silence keeps the inactivity timer running.
    pub(crate) fn audio_is_heard(&mut self, bytes: &[u8]) -> bool {
        let format = self
            .settings
            .audio
            .as_ref()
            .map(|a| colloquy_audio::Linear16Format {
                sample_rate: a.sample_rate,
                channels: a.channels as u16,
            });
        let decoder = self.loudness.get_or_insert_with(Default::default);
        match decoder.decode(bytes, format) {
            Ok(Some(chunk)) if !chunk.samples.is_empty() => {
                let energy: f32 = chunk.samples.iter().map(|s| s * s).sum();
                (energy / chunk.samples.len() as f32).sqrt() >= HEARD_RMS
            }
            _ => false,
        }
    }

    /// Captures one accepted user chunk that arrived `offset` ms after the start.
    pub(crate) async fn capture_user_audio(&mut self, offset: i64, bytes: &[u8]) {
        if !self.who.data_retention {
            return;
        }
        let format = match &self.settings.audio {
            Some(a) => CapturedFormat::Linear16(colloquy_audio::Linear16Format {
                sample_rate: a.sample_rate,
                channels: a.channels as u16,
            }),
            None => CapturedFormat::Container,
        };
        let (objects, user, chat) = (self.state.objects.clone(), self.who.user_id, self.chat_id);
        let recorder = self
            .user_audio
            .get_or_insert_with(|| VoiceRecorder::new(objects, user, chat, Voice::User, format));
        if let Err(e) = recorder.append(offset, bytes).await {
            self.capture_failed(e);
        }
    }

    /// Records one WAV clip of the assistant's voice at `offset` (ms from the chat's start),
    /// whichever engine produced it.
    pub(crate) async fn record_assistant_clip(&mut self, offset: i64, wav: &[u8]) {
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

    /// When buffered audio must next be written, if any waits.
    pub(crate) fn audio_flush_deadline(&self) -> Option<tokio::time::Instant> {
        [&self.user_audio, &self.assistant_audio]
            .into_iter()
            .filter_map(|r| r.as_ref().and_then(VoiceRecorder::flush_deadline))
            .min()
    }

    /// Writes buffered audio to the object store (one attempt; failed writes stay buffered
    /// and are retried at the recorder's next deadline).
    pub(crate) async fn flush_audio(&mut self) {
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
    pub(crate) fn capture_failed(&mut self, e: CaptureError) {
        match e {
            CaptureError::Store(e) => {
                tracing::warn!(error = %e, "audio write failed; it stays buffered and is retried");
            }
            lost @ CaptureError::Lost { .. } => {
                tracing::error!(error = %lost, "captured audio lost");
                self.capture_notices.push(format!(
                    "{lost}; the chat goes on, and its audio reconstruction will report the gap"
                ));
            }
        }
    }
}
