//! The chat page's audio player: starts the chat's reconstruction if there is none (as the
//! first `GET /v0/evi/chats/{id}/audio` does), shows its progress while htmx polls this
//! fragment, then plays the MP4 from a freshly signed URL (the download route answers
//! `Range`, so the player can seek).

use crate::state::AppState;
use askama::Template;
use colloquy_storage::{ChatRecord, FailureKind, ReconstructionRecord};
use colloquy_wire::{ChatStatus, ReconstructionStatus};

/// The audio fragment (`#audio`), polled while the reconstruction is pending.
#[derive(Template)]
#[template(path = "ui/_audio.html")]
pub struct AudioPanel {
    /// Chat id.
    pub chat_id: String,
    /// Wire status of the reconstruction.
    pub status: &'static str,
    /// `pending`, `waiting` (chat still active), `ready`, `none` (no audio), `failed`,
    /// `cancelled`.
    pub state: &'static str,
    /// What to tell the user.
    pub message: String,
    /// Signed URL of the MP4 once ready.
    pub url: Option<String>,
    /// Poll interval while pending (htmx `every …`), or empty.
    pub poll: &'static str,
    /// Queued → in progress → ready steps: (label, done, current).
    pub steps: Vec<(&'static str, bool, bool)>,
    /// A finished file's note on audio that could not be stored (silent in the file).
    pub missing: Option<String>,
}

/// Reads (creating if needed) the chat's reconstruction and shapes the panel.
pub async fn panel(state: &AppState, chat: &ChatRecord) -> Result<AudioPanel, super::UiError> {
    let requested = crate::reconstruction::request(state, chat.user_id, &[chat.id], "")
        .await?
        .pop()
        .ok_or_else(|| super::UiError::NotFound("This chat no longer exists.".into()))?;
    Ok(shape(chat, requested.record, requested.link.map(|l| l.url)))
}

fn shape(chat: &ChatRecord, r: ReconstructionRecord, url: Option<String>) -> AudioPanel {
    use ReconstructionStatus::*;
    let active = chat.status == ChatStatus::Active;
    let missing = match r.status {
        Complete => r.error.clone(),
        _ => None,
    };
    let (state, message, poll): (&'static str, String, &'static str) = match r.status {
        Queued if active => (
            "waiting",
            "The chat is still going on: its audio will be assembled when it ends.".into(),
            "every 3s",
        ),
        Queued => (
            "pending",
            "Queued: the audio of this chat will be assembled in a moment.".into(),
            "every 1s",
        ),
        InProgress => (
            "pending",
            "Assembling the user's and the assistant's audio into one file…".into(),
            "every 1s",
        ),
        Complete if url.is_some() => ("ready", String::new(), ""),
        Complete => (
            "failed",
            "The audio file is ready but no link could be made for it; try again later.".into(),
            "",
        ),
        Error => {
            let reason = r.error.unwrap_or_default();
            let no_audio = match r.error_kind {
                Some(kind) => kind == FailureKind::NoAudio,
                // Recorded before failures had a kind: told by its text.
                None => reason.contains("no audio"),
            };
            if no_audio {
                (
                    "none",
                    "No audio was recorded in this chat (it was text only).".into(),
                    "",
                )
            } else if reason.is_empty() {
                ("failed", "The audio could not be assembled.".into(), "")
            } else {
                (
                    "failed",
                    format!("The audio could not be assembled: {reason}"),
                    "",
                )
            }
        }
        Cancelled => (
            "failed",
            "The audio reconstruction was cancelled.".into(),
            "",
        ),
    };
    let at = match r.status {
        Queued => 0,
        InProgress => 1,
        _ => 2,
    };
    let steps = ["Queued", "In progress", "Ready"]
        .into_iter()
        .enumerate()
        .map(|(i, label)| (label, i < at, i == at))
        .collect();
    AudioPanel {
        chat_id: chat.id.to_string(),
        status: r.status.as_str(),
        state,
        message,
        url,
        poll,
        steps,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn chat(status: ChatStatus) -> ChatRecord {
        ChatRecord {
            id: Uuid::nil(),
            user_id: Uuid::nil(),
            chat_group_id: Uuid::nil(),
            status,
            start_timestamp: 0,
            end_timestamp: None,
            event_count: 0,
            metadata: None,
            config_id: None,
            config_version: None,
        }
    }

    fn rec(status: ReconstructionStatus, error: Option<&str>) -> ReconstructionRecord {
        ReconstructionRecord {
            chat_id: Uuid::nil(),
            user_id: Uuid::nil(),
            status,
            filename: None,
            modified_at: 0,
            error: error.map(Into::into),
            error_kind: None,
        }
    }

    #[test]
    fn failures_are_told_apart_by_their_kind() {
        let ended = chat(ChatStatus::UserEnded);
        // The kind decides, whatever the text says.
        for (kind, error, state) in [
            (FailureKind::NoAudio, "the chat has no audio", "none"),
            (FailureKind::NoAudio, "nothing was said", "none"),
            (
                FailureKind::Undecodable,
                "the captured audio could not be decoded: invalid WebM: no audio track",
                "failed",
            ),
            (
                FailureKind::AttemptsExhausted,
                "reconstruction was attempted 3 times and the worker stopped each time",
                "failed",
            ),
        ] {
            let r = ReconstructionRecord {
                error_kind: Some(kind),
                ..rec(ReconstructionStatus::Error, Some(error))
            };
            let p = shape(&ended, r, None);
            assert_eq!((p.state, p.poll), (state, ""), "{kind:?}");
            if state == "failed" {
                assert!(p.message.ends_with(error), "{}", p.message);
            }
        }
    }

    #[test]
    fn states() {
        let ended = chat(ChatStatus::UserEnded);
        let p = shape(&ended, rec(ReconstructionStatus::Queued, None), None);
        assert_eq!((p.state, p.poll), ("pending", "every 1s"));
        assert!(p.steps[0].2);
        let p = shape(
            &chat(ChatStatus::Active),
            rec(ReconstructionStatus::Queued, None),
            None,
        );
        assert_eq!(p.state, "waiting");
        let p = shape(&ended, rec(ReconstructionStatus::InProgress, None), None);
        assert!(p.steps[0].1 && p.steps[1].2);
        let p = shape(
            &ended,
            rec(ReconstructionStatus::Complete, None),
            Some("/v0/evi/audio/x".into()),
        );
        assert_eq!((p.state, p.poll), ("ready", ""));
        let p = shape(
            &ended,
            rec(ReconstructionStatus::Error, Some("the chat has no audio")),
            None,
        );
        assert_eq!(p.state, "none");
        let p = shape(
            &ended,
            rec(ReconstructionStatus::Error, Some("bad opus")),
            None,
        );
        assert_eq!(p.state, "failed");
        assert!(p.message.contains("bad opus"));
    }
}
