//! Asking for chats' audio, as REST (`GET /v0/evi/chats/{id}/audio` and a group's
//! `/audio`) and the web UI's audio panel both do: make sure each chat has its
//! reconstruction (the first ask creates the record and queues its job), wake the workers
//! while any is to be done, and give each finished file a fresh download link.

use crate::clock::now_ms;
use crate::objects::DownloadLink;
use crate::state::AppState;
use colloquy_storage::{ReconstructionRecord, StoreResult};
use colloquy_wire::ReconstructionStatus;
use uuid::Uuid;

/// A chat's reconstruction as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedAudio {
    /// The stored record.
    pub record: ReconstructionRecord,
    /// Once `COMPLETE`, a link to the MP4 minted now (`None` also when none could be made).
    pub link: Option<DownloadLink>,
}

/// The reconstructions of `user_id`'s chats `chat_ids`, in that order (chats that do not
/// exist for the user are left out), created and queued where there were none. Local links
/// are made under `base` (empty: relative to the host the browser used).
pub async fn request(
    state: &AppState,
    user_id: Uuid,
    chat_ids: &[Uuid],
    base: &str,
) -> StoreResult<Vec<RequestedAudio>> {
    let records = state
        .store
        .ensure_reconstructions(user_id, chat_ids, now_ms())
        .await?;
    if records.iter().any(|r| {
        matches!(
            r.status,
            ReconstructionStatus::Queued | ReconstructionStatus::InProgress
        )
    }) {
        state.jobs_enqueued.notify_waiters();
    }
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let link = match (record.status, &record.filename) {
            (ReconstructionStatus::Complete, Some(key)) => {
                state.objects.download_link(&state.signer, base, key).await
            }
            _ => None,
        };
        out.push(RequestedAudio { record, link });
    }
    Ok(out)
}
