//! The pipeline listening: the user's audio through turn detection; the end of an
//! utterance starts its transcription, and speech while the assistant talks interrupts it.

use super::turn::Turn;
use super::PipelineEngine;
use crate::session::core::Core;
use crate::session::ending::End;
use colloquy_audio::Linear16Format;
use colloquy_speech::expression::ExpressionClient;
use colloquy_speech::pcm::to_i16;
use colloquy_speech::{Pcm, TurnDetector, VadEvent};
use colloquy_wire::socket::ServerMessage;
use colloquy_wire::{EventRole, EventType, SocketError};

impl PipelineEngine {
    /// Feeds one accepted `audio_input` chunk to turn detection: speech while the
    /// assistant talks interrupts it; the end of an utterance starts its transcription.
    pub(super) async fn hear(&mut self, core: &mut Core, bytes: &[u8]) -> Result<(), End> {
        let now = core.offset_now();
        self.release_speech(core, Some(now)).await;
        let format = core.settings.audio.clone();
        let Some(asr) = self.services.asr.clone() else {
            return Ok(()); // no transcription service: spoken turns are not answered
        };
        let format = format.map(|a| Linear16Format {
            sample_rate: a.sample_rate,
            channels: a.channels as u16,
        });
        let pcm = match self.input.decode(bytes, format) {
            Ok(Some(chunk)) => Pcm::new(
                chunk.samples.into_iter().map(to_i16).collect(),
                chunk.sample_rate,
            ),
            Ok(None) => return Ok(()),
            Err(e) => {
                if std::mem::replace(&mut self.input.told, true) {
                    tracing::debug!(error = %e, "audio_input cannot be decoded for turn detection");
                    return Ok(());
                }
                tracing::warn!(error = %e, "audio_input cannot be decoded for turn detection; telling the client once");
                // Once per chat: the audio is still recorded, and the chat goes on.
                return core
                    .send_error(
                        SocketError::InvalidAudio,
                        format!(
                            "this audio_input could not be decoded for turn detection, so the \
                             assistant cannot hear it (it is still recorded): {e}. Send raw \
                             linear16 declared in session_settings.audio, a WebM/Opus stream, \
                             or chunks that are each a complete WAV file"
                        ),
                    )
                    .await;
            }
        };
        if pcm.samples.is_empty() {
            return Ok(());
        }
        let vad = self.services.vad.clone();
        let detector = match &mut self.detector {
            Some((rate, d)) if *rate == pcm.sample_rate => d,
            slot => {
                let d = TurnDetector::new(vad, pcm.sample_rate);
                &mut slot.insert((pcm.sample_rate, d)).1
            }
        };
        let events = detector.push(&pcm.samples);
        let (speaking, heard_ms) = (detector.is_speaking(), detector.position_ms());
        if speaking
            || events
                .iter()
                .any(|e| matches!(e, VadEvent::SpeechStart { .. }))
        {
            // The user is heard: activity for the inactivity timeout.
            core.mark_active();
        }
        let min_speech = u64::from(detector.config().min_speech_ms);
        let min_interruption = u64::from(self.min_interruption_ms);
        for event in events {
            match event {
                VadEvent::SpeechStart { at_ms } => {
                    self.user_active();
                    if min_interruption > min_speech && self.assistant_talking(core) {
                        // Not long enough yet to interrupt (`interruption.min_interruption_ms`).
                        self.pending_interrupt = Some(at_ms);
                    } else {
                        self.interrupt(core).await?
                    }
                }
                VadEvent::SpeechEnd {
                    start_ms,
                    end_ms,
                    audio,
                } => {
                    if let Some(at) = self.pending_interrupt.take() {
                        if end_ms.saturating_sub(at) < min_interruption
                            && self.assistant_talking(core)
                        {
                            // Too short to interrupt the assistant (a backchannel): ignored.
                            tracing::debug!(
                                speech_ms = end_ms - at,
                                "speech too short to interrupt"
                            );
                            continue;
                        }
                        self.interrupt(core).await?;
                    }
                    let measure = &core.state.settings.engine.expression;
                    self.stop_answer();
                    self.heard_span = (start_ms as i64, end_ms as i64);
                    if self.expression.is_none() {
                        self.expression = ExpressionClient::from_settings(measure);
                    }
                    let expression = self.expression.clone();
                    self.turn = Some(Turn::transcribe(
                        asr.clone(),
                        audio,
                        self.verbose,
                        expression,
                    ));
                }
            }
        }
        if let Some(at) = self.pending_interrupt {
            if speaking && heard_ms.saturating_sub(at) >= min_interruption {
                self.pending_interrupt = None;
                self.interrupt(core).await?;
            }
        }
        Ok(())
    }

    /// An answer is coming or its speech is still playing.
    fn assistant_talking(&mut self, core: &mut Core) -> bool {
        self.answering || self.speech_end_ms > core.offset_now()
    }

    /// The user started speaking: if the assistant is talking (an answer is coming or its
    /// speech is still playing), it stops, and the interruption is recorded and sent.
    async fn interrupt(&mut self, core: &mut Core) -> Result<(), End> {
        if !self.assistant_talking(core) {
            return Ok(());
        }
        let now = core.offset_now();
        let cut = self.last_spoken.filter(|&(_, _, end)| end > now);
        self.stop_answer();
        // The client stops playing: what had started is recorded, the rest is dropped.
        let played_end = self.release_speech(core, Some(now)).await;
        self.unplayed.clear();
        self.speech_end_ms = played_end.max(now);
        let time = crate::clock::now_ms();
        let mut ev = core.event(EventRole::User, EventType::UserInterruption, "");
        let mut meta = serde_json::json!({ "time": time, "truncated": cut.is_some() });
        if let Some((id, start, end)) = cut {
            meta["heard_ms"] = serde_json::json!(now - start);
            meta["duration_ms"] = serde_json::json!(end - start);
            ev.related_event_id = Some(id);
        }
        ev.metadata = Some(meta.to_string());
        core.record(vec![ev]).await?;
        core.send_or_end(&ServerMessage::UserInterruption { time })
            .await
    }
}
