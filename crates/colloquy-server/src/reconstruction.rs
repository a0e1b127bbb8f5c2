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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Objects;
    use crate::signing::{UrlSigner, DOWNLOAD_PREFIX};
    use crate::state::Inner;
    use colloquy_storage::conformance::{end_chat, new_account, start_chat};
    use colloquy_storage::{GroupChoice, JobResult, Store};
    use colloquy_storage_sqlite::{SqliteSettings, SqliteStore};
    use std::sync::Arc;

    async fn state(dir: &std::path::Path) -> AppState {
        let url = format!("sqlite://{}", dir.join("r.db").display());
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&url, &SqliteSettings::default())
                .await
                .unwrap(),
        );
        AppState::new(Inner {
            recorder: crate::recorder::Recorder::start(store.clone(), 16),
            store,
            settings: Default::default(),
            instance_id: Uuid::new_v4(),
            shutdown: Default::default(),
            sessions: Default::default(),
            objects: Objects::in_memory(),
            signer: UrlSigner::new(b"secret"),
            public_base: "http://colloquy.test".into(),
            jobs_enqueued: Default::default(),
            pipeline: None,
            client_voice: None,
            account_limits: Default::default(),
            auth_failures: crate::limits::AuthFailureLimiter::new(10),
            webhooks: crate::webhooks::Webhooks::new(&Default::default()),
            live: Default::default(),
            remote: None,
            tts: Arc::new(crate::tts::TtsHandle::new(&Default::default())),
        })
    }

    #[tokio::test]
    async fn asking_queues_wakes_the_workers_and_links_finished_files() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let store = state.store.as_ref();
        let who = new_account(store, true).await;
        let (chat, _) = start_chat(
            store,
            &who,
            GroupChoice::New(Uuid::new_v4()),
            1_000,
            None,
            state.instance_id,
        )
        .await;
        end_chat(store, &who, chat, 2_000).await;

        // The first ask queues the job and wakes the workers; another user's ask, or one
        // for a chat that does not exist, finds nothing.
        let woken = state.jobs_enqueued.notified();
        let asked = request(&state, who.user_id, &[chat, Uuid::new_v4()], "")
            .await
            .unwrap();
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].record.status, ReconstructionStatus::Queued);
        assert_eq!(asked[0].link, None);
        tokio::time::timeout(std::time::Duration::from_secs(1), woken)
            .await
            .expect("the workers were woken");
        assert!(request(&state, Uuid::new_v4(), &[chat], "")
            .await
            .unwrap()
            .is_empty());

        // Once finished, each ask mints a link: absolute under REST's base, relative for
        // the UI.
        let job = store
            .claim_reconstruction("w", now_ms(), 60_000, 3)
            .await
            .unwrap()
            .unwrap();
        let filename = format!("{}/{chat}/reconstructed_audio.mp4", who.user_id);
        let done = JobResult::Complete {
            filename: filename.clone(),
            missing: None,
        };
        assert!(store
            .finish_reconstruction(job.chat_id, "w", &done, now_ms())
            .await
            .unwrap());
        for base in ["http://colloquy.test", ""] {
            let asked = request(&state, who.user_id, &[chat], base).await.unwrap();
            let link = asked[0].link.clone().expect("a link to the finished file");
            assert_eq!(asked[0].record.status, ReconstructionStatus::Complete);
            assert!(
                link.url
                    .starts_with(&format!("{base}{DOWNLOAD_PREFIX}{filename}?expires=")),
                "{}",
                link.url
            );
        }
    }
}
