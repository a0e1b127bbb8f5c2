//! Audio reconstruction records and their jobs.

use super::support::*;
use crate::*;
use colloquy_wire::ReconstructionStatus;
use uuid::Uuid;

pub async fn reconstructions(store: &dyn Store) {
    let who = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let (a, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        1,
        None,
        instance,
    )
    .await;
    let (b, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        2,
        None,
        instance,
    )
    .await;
    let first = store
        .ensure_reconstructions(who.user_id, &[a], 100)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].status, ReconstructionStatus::Queued);
    assert_eq!(first[0].modified_at, 100);
    assert_eq!(first[0].user_id, who.user_id);
    let again = store
        .ensure_reconstructions(who.user_id, &[b, a], 200)
        .await
        .unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(again[0].chat_id, b);
    assert_eq!(again[1], first[0], "a second call does not recreate");
}

/// Drains jobs left by earlier checks so a scenario sees only its own.
async fn drain_jobs(store: &dyn Store) {
    while let Some(j) = store
        .claim_reconstruction("drain", i64::MAX / 4, 1, 100)
        .await
        .unwrap()
    {
        let failed = JobResult::Failed {
            kind: FailureKind::Undecodable,
            reason: "drained".into(),
        };
        store
            .finish_reconstruction(j.chat_id, "drain", &failed, 1)
            .await
            .unwrap();
    }
}

pub async fn reconstruction_jobs(store: &dyn Store) {
    drain_jobs(store).await;
    let who = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let (chat, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        1_000,
        None,
        instance,
    )
    .await;
    store
        .ensure_reconstructions(who.user_id, &[chat], 1_100)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_reconstruction("w1", 2_000, 1_000, 3)
            .await
            .unwrap(),
        None,
        "an ACTIVE chat's job waits until the chat ends"
    );
    end_chat(store, &who, chat, 1_500).await;

    let job = store
        .claim_reconstruction("w1", 2_000, 1_000, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.chat_id, job.user_id, job.attempt),
        (chat, who.user_id, 1)
    );
    assert_eq!((job.chat_start_ms, job.chat_end_ms), (1_000, 1_500));
    let rec = status_of(store, &who, chat).await;
    assert_eq!(
        (rec.status, rec.modified_at),
        (ReconstructionStatus::InProgress, 2_000)
    );
    assert_eq!(
        store
            .claim_reconstruction("w2", 2_500, 1_000, 3)
            .await
            .unwrap(),
        None,
        "a leased job is not claimed twice"
    );
    assert!(store
        .renew_reconstruction_lease(chat, "w1", 3_500)
        .await
        .unwrap());
    assert!(!store
        .renew_reconstruction_lease(chat, "w2", 9_000)
        .await
        .unwrap());
    assert_eq!(
        store
            .claim_reconstruction("w2", 3_400, 1_000, 3)
            .await
            .unwrap(),
        None
    );

    // w1 dies: its lease runs out and w2 takes the job over.
    let again = store
        .claim_reconstruction("w2", 3_600, 1_000, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.chat_id, again.attempt), (chat, 2));
    let done = JobResult::Complete {
        filename: format!("{}/{}/reconstructed_audio.mp4", who.user_id, chat),
        missing: None,
    };
    assert!(
        !store
            .finish_reconstruction(chat, "w1", &done, 3_700)
            .await
            .unwrap(),
        "a worker that lost its lease cannot finish the job"
    );
    assert!(store
        .finish_reconstruction(chat, "w2", &done, 3_800)
        .await
        .unwrap());
    assert!(
        !store
            .finish_reconstruction(chat, "w2", &done, 3_900)
            .await
            .unwrap(),
        "exactly once"
    );
    let rec = status_of(store, &who, chat).await;
    assert_eq!(rec.status, ReconstructionStatus::Complete);
    assert_eq!(rec.modified_at, 3_800);
    assert_eq!(
        rec.filename.as_deref(),
        Some(format!("{}/{}/reconstructed_audio.mp4", who.user_id, chat).as_str())
    );
    store
        .ensure_reconstructions(who.user_id, &[chat], 5_000)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_reconstruction("w3", 9_000, 1_000, 3)
            .await
            .unwrap(),
        None,
        "a finished reconstruction is never queued again"
    );

    // A job whose every attempt dies ends as ERROR; a failed job carries its reason.
    let (flaky, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        10_000,
        None,
        instance,
    )
    .await;
    let (empty, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        10_001,
        None,
        instance,
    )
    .await;
    end_chat(store, &who, flaky, 10_100).await;
    end_chat(store, &who, empty, 10_100).await;
    store
        .ensure_reconstructions(who.user_id, &[flaky], 10_200)
        .await
        .unwrap();
    store
        .ensure_reconstructions(who.user_id, &[empty], 10_201)
        .await
        .unwrap();
    let j = store
        .claim_reconstruction("w1", 11_000, 100, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j.chat_id, flaky);
    let j2 = store
        .claim_reconstruction("w1", 11_000, 100, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j2.chat_id, empty);
    let failed = JobResult::Failed {
        kind: FailureKind::NoAudio,
        reason: "the chat has no audio".into(),
    };
    assert!(store
        .finish_reconstruction(empty, "w1", &failed, 11_050)
        .await
        .unwrap());
    assert_eq!(
        store
            .claim_reconstruction("w2", 12_000, 100, 1)
            .await
            .unwrap(),
        None
    );
    let rec = status_of(store, &who, flaky).await;
    assert_eq!(rec.status, ReconstructionStatus::Error);
    assert!(rec.error.unwrap().contains("attempted 1 times"));
    let rec = status_of(store, &who, empty).await;
    assert_eq!(
        (rec.status, rec.error.as_deref()),
        (ReconstructionStatus::Error, Some("the chat has no audio"))
    );
}

/// A failed reconstruction keeps the kind of its failure; a finished or waiting one has none.
pub async fn failure_kinds(store: &dyn Store) {
    drain_jobs(store).await;
    let who = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let mut chats = Vec::new();
    for start in 0..4 {
        let (chat, _) = start_chat(
            store,
            &who,
            GroupChoice::New(Uuid::new_v4()),
            1_000 + start,
            None,
            instance,
        )
        .await;
        end_chat(store, &who, chat, 1_500).await;
        store
            .ensure_reconstructions(who.user_id, &[chat], 2_000 + start)
            .await
            .unwrap();
        chats.push(chat);
    }
    let [silent, garbled, doomed, done] = chats[..] else {
        unreachable!()
    };
    let (waiting, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        1_100,
        None,
        instance,
    )
    .await;
    let failed = |kind, reason: &str| JobResult::Failed {
        kind,
        reason: reason.into(),
    };
    while let Some(job) = store
        .claim_reconstruction("w1", 3_000, 100, 1)
        .await
        .unwrap()
    {
        let result = match job.chat_id {
            c if c == silent => failed(FailureKind::NoAudio, "the chat has no audio"),
            c if c == garbled => failed(
                FailureKind::Undecodable,
                "the captured audio could not be decoded: bad opus",
            ),
            c if c == done => JobResult::Complete {
                filename: format!("{}/{done}/reconstructed_audio.mp4", who.user_id),
                missing: Some("missing audio: user audio from 1.0 s to 2.0 s".into()),
            },
            // Its worker dies.
            _ => continue,
        };
        assert!(store
            .finish_reconstruction(job.chat_id, "w1", &result, 3_050)
            .await
            .unwrap());
    }
    // The dead worker's lease runs out with no attempt left.
    assert_eq!(
        store
            .claim_reconstruction("w2", 5_000, 100, 1)
            .await
            .unwrap(),
        None
    );
    let kind_of = |rec: ReconstructionRecord| (rec.status, rec.error_kind);
    assert_eq!(
        kind_of(status_of(store, &who, silent).await),
        (ReconstructionStatus::Error, Some(FailureKind::NoAudio))
    );
    let rec = status_of(store, &who, garbled).await;
    assert_eq!(
        rec.error.as_deref(),
        Some("the captured audio could not be decoded: bad opus"),
        "the kind comes with the reason, not instead of it"
    );
    assert_eq!(
        kind_of(rec),
        (ReconstructionStatus::Error, Some(FailureKind::Undecodable))
    );
    let rec = status_of(store, &who, doomed).await;
    assert!(rec.error.as_deref().unwrap().contains("attempted 1 times"));
    assert_eq!(
        kind_of(rec),
        (
            ReconstructionStatus::Error,
            Some(FailureKind::AttemptsExhausted)
        )
    );
    let rec = status_of(store, &who, done).await;
    assert!(
        rec.error.is_some(),
        "a finished file's note on missing audio"
    );
    assert_eq!(kind_of(rec), (ReconstructionStatus::Complete, None));
    assert_eq!(
        kind_of(status_of(store, &who, waiting).await),
        (ReconstructionStatus::Queued, None)
    );
}
