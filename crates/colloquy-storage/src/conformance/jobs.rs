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

pub async fn reconstruction_jobs(store: &dyn Store) {
    // Drain jobs left by earlier checks so this one sees only its own.
    while let Some(j) = store
        .claim_reconstruction("drain", i64::MAX / 4, 1, 100)
        .await
        .unwrap()
    {
        let failed = JobResult::Failed {
            reason: "drained".into(),
        };
        store
            .finish_reconstruction(j.chat_id, "drain", &failed, 1)
            .await
            .unwrap();
    }
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
