//! Audio end to end: capture over the socket, reconstruction by the workers, signed downloads.

use crate::harness::*;
use base64::Engine;
use colloquy_server::capture::{CapturedFormat, VoiceRecorder};
use colloquy_server::objects::Voice;
use serde_json::{json, Value};
use std::time::Duration;

/// Polls `GET /v0/evi/chats/{id}/audio` until it leaves QUEUED / IN_PROGRESS.
async fn wait_for_audio(srv: &TestServer, key: &str, chat_id: &str) -> Value {
    let mut seen = Vec::new();
    for _ in 0..150 {
        let (status, rec) = srv
            .get(key, &format!("/v0/evi/chats/{chat_id}/audio"))
            .await;
        assert_eq!(status, 200, "{rec}");
        let s = rec["status"].as_str().unwrap().to_string();
        if !seen.contains(&s) {
            seen.push(s.clone());
        }
        if s != "QUEUED" && s != "IN_PROGRESS" {
            return rec;
        }
        assert_eq!(
            rec["signed_audio_url"],
            Value::Null,
            "no URL before COMPLETE"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("reconstruction did not finish; statuses seen: {seen:?}");
}

/// Runs a chat with 1 s of 440 Hz user audio and a 0.5 s 880 Hz assistant clip at 1.5 s.
async fn chat_with_audio(srv: &TestServer, key: &colloquy_server::keys::CreatedKey) -> String {
    let (mut ws, meta) = srv
        .connect(
            &key.api_key,
            "session_settings[audio][encoding]=linear16&session_settings[audio][sample_rate]=16000\
             &session_settings[audio][channels]=1",
        )
        .await;
    let chat_id = meta["chat_id"].as_str().unwrap().to_string();
    for chunk in tone(440.0, 16_000, 1000).chunks(640) {
        let data = base64::engine::general_purpose::STANDARD.encode(chunk);
        send_json(&mut ws, json!({"type": "audio_input", "data": data})).await;
    }
    // Messages are handled in order: once this echo arrives, every chunk was captured.
    send_json(&mut ws, json!({"type": "user_input", "text": "done"})).await;
    recv_json(&mut ws).await;
    // Assistant audio goes through the recording path a speech engine uses.
    let state = &srv.running().state;
    let mut assistant = VoiceRecorder::new(
        state.objects.clone(),
        key.user_id,
        uuid::Uuid::parse_str(&chat_id).unwrap(),
        Voice::Assistant,
        CapturedFormat::WavClips,
    );
    assistant
        .append(1500, &wav(&tone(880.0, 24_000, 500), 24_000))
        .await
        .unwrap();
    assistant.flush().await.unwrap();
    futures::SinkExt::close(&mut ws).await.unwrap();
    let _ = recv_close(&mut ws).await;
    chat_id
}

#[tokio::test]
async fn audio_is_reconstructed_and_served_through_signed_urls() {
    on_each_backend(
        |_| {},
        |srv| async move {
            let key = srv.key(true).await;
            let chat_id = chat_with_audio(&srv, &key).await;
            let rec = wait_for_audio(&srv, &key.api_key, &chat_id).await;
            assert_eq!(rec["status"], "COMPLETE", "{rec}");
            let filename = format!("{}/{chat_id}/reconstructed_audio.mp4", key.user_id);
            assert_eq!(rec["filename"], filename.as_str());
            let expires = rec["signed_url_expiration_timestamp_millis"]
                .as_i64()
                .unwrap();
            let now = colloquy_server::clock::now_ms();
            assert!(
                (expires - (now + 3_600_000)).abs() < 10_000,
                "valid 60 minutes"
            );
            let url = rec["signed_audio_url"].as_str().unwrap().to_string();

            let resp = srv.http.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["content-type"], "audio/mp4");
            assert_eq!(resp.headers()["accept-ranges"], "bytes");
            let body = resp.bytes().await.unwrap();
            assert_eq!(&body[4..8], b"ftyp");
            let mp4 =
                mp4::Mp4Reader::read_header(std::io::Cursor::new(body.to_vec()), body.len() as u64)
                    .expect("a valid MP4");
            let track = mp4.tracks().values().next().expect("one audio track");
            assert_eq!(track.media_type().unwrap(), mp4::MediaType::AAC);
            let secs = mp4.duration().as_secs_f64();
            assert!((2.0..2.6).contains(&secs), "1.5 s + 0.5 s clip, got {secs}");

            let part = srv
                .http
                .get(&url)
                .header("Range", "bytes=0-99")
                .send()
                .await
                .unwrap();
            assert_eq!(part.status(), 206);
            assert_eq!(
                part.headers()["content-range"],
                format!("bytes 0-99/{}", body.len()).as_str()
            );
            assert_eq!(part.bytes().await.unwrap(), body.slice(0..100));
            let bad = srv
                .http
                .get(&url)
                .header("Range", "bytes=999999999-")
                .send()
                .await
                .unwrap();
            assert_eq!(bad.status(), 416);

            // Tampered, expired and foreign links get 403 and no bytes.
            let tampered = {
                // flip the signature's last hex digit (always to a different one)
                let last = if url.ends_with('0') { "1" } else { "0" };
                format!("{}{last}", &url[..url.len() - 1])
            };
            let other_chat = url.replace(&chat_id, &uuid::Uuid::new_v4().to_string());
            let state = &srv.running().state;
            let expired = state.signer.url(&state.public_base, &filename, now - 1);
            let foreign = colloquy_server::signing::UrlSigner::new(b"another server").url(
                &state.public_base,
                &filename,
                now + 60_000,
            );
            for link in [tampered, other_chat, expired, foreign] {
                let r = srv.http.get(&link).send().await.unwrap();
                assert_eq!(r.status(), 403, "{link}");
                let err: Value = r.json().await.unwrap();
                assert_eq!(err["code"], "forbidden");
                assert!(err["message"].as_str().unwrap().contains("link"));
            }

            // Every GET mints a fresh URL; the group endpoint lists the same record.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let (_, again) = srv
                .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}/audio"))
                .await;
            assert!(
                again["signed_url_expiration_timestamp_millis"]
                    .as_i64()
                    .unwrap()
                    > expires
            );
            assert_ne!(again["signed_audio_url"], rec["signed_audio_url"]);
            let (_, chat) = srv
                .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}"))
                .await;
            let group = chat["chat_group_id"].as_str().unwrap();
            let (_, ga) = srv
                .get(&key.api_key, &format!("/v0/evi/chat_groups/{group}/audio"))
                .await;
            assert_eq!(ga["audio_reconstructions_page"][0]["status"], "COMPLETE");
            assert_eq!(
                ga["audio_reconstructions_page"][0]["filename"],
                filename.as_str()
            );
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn a_chat_without_audio_ends_in_error() {
    let Some((srv, _)) = TestServer::start(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let key = srv.key(true).await;
    let (mut ws, meta) = srv.connect(&key.api_key, "").await;
    futures::SinkExt::close(&mut ws).await.unwrap();
    let _ = recv_close(&mut ws).await;
    let rec = wait_for_audio(&srv, &key.api_key, meta["chat_id"].as_str().unwrap()).await;
    assert_eq!(rec["status"], "ERROR");
    assert_eq!(rec["filename"], Value::Null);
    assert_eq!(rec["signed_audio_url"], Value::Null);
    let chat_id = uuid::Uuid::parse_str(meta["chat_id"].as_str().unwrap()).unwrap();
    let stored = srv
        .running()
        .state
        .store
        .ensure_reconstructions(key.user_id, &[chat_id], 0)
        .await
        .unwrap();
    assert!(stored[0].error.as_deref().unwrap().contains("no audio"));
    srv.stop(None).await;
}

#[tokio::test]
async fn a_dead_workers_job_is_taken_over_and_finishes_once() {
    on_each_backend(
        |s| {
            s.audio.workers = 0;
            s.audio.job_lease_secs = 3;
        },
        |srv| async move {
            let key = srv.key(true).await;
            let chat_id = chat_with_audio(&srv, &key).await;
            let (_, rec) = srv
                .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}/audio"))
                .await;
            assert_eq!(rec["status"], "QUEUED", "no worker runs in this server");
            let state = &srv.running().state;
            // A worker claims the job and dies without finishing.
            let now = colloquy_server::clock::now_ms();
            let job = state
                .store
                .claim_reconstruction("dead-worker", now, 3_000, 3)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(job.chat_id.to_string(), chat_id);
            let (_, rec) = srv
                .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}/audio"))
                .await;
            assert_eq!(rec["status"], "IN_PROGRESS");
            // A live worker takes it over once the lease runs out.
            let shutdown = tokio_util::sync::CancellationToken::new();
            let handles = colloquy_server::worker::spawn_workers(
                colloquy_server::worker::WorkerContext {
                    store: state.store.clone(),
                    objects: state.objects.clone(),
                    audio: state.settings.audio.clone(),
                    wake: Default::default(),
                    shutdown: shutdown.clone(),
                },
                2,
            );
            let rec = wait_for_audio(&srv, &key.api_key, &chat_id).await;
            assert_eq!(rec["status"], "COMPLETE");
            let late = colloquy_storage::JobResult::Failed {
                kind: colloquy_storage::FailureKind::Undecodable,
                reason: "late".into(),
            };
            assert!(
                !state
                    .store
                    .finish_reconstruction(job.chat_id, "dead-worker", &late, now)
                    .await
                    .unwrap(),
                "the dead worker cannot finish it again"
            );
            let (_, rec) = srv
                .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}/audio"))
                .await;
            assert_eq!(rec["status"], "COMPLETE");
            shutdown.cancel();
            for h in handles {
                h.abort();
            }
            srv
        },
    )
    .await;
}

/// Every file under the local object store whose path mentions `needle`.
fn stored_files(srv: &TestServer, needle: &str) -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    let mut all = Vec::new();
    walk(&srv.dir.path().join("objects"), &mut all);
    all.into_iter().filter(|p| p.contains(needle)).collect()
}

#[tokio::test]
async fn deleting_erases_everything_everywhere() {
    on_each_backend(
        |_| {},
        |srv| async move {
            let key = srv.key(true).await;
            let other = srv.key(true).await;
            let chat_id = chat_with_audio(&srv, &key).await;
            let rec = wait_for_audio(&srv, &key.api_key, &chat_id).await;
            assert_eq!(rec["status"], "COMPLETE");
            let url = rec["signed_audio_url"].as_str().unwrap().to_string();
            assert!(!stored_files(&srv, &chat_id).is_empty(), "audio was stored");
            let (_, chat) = srv
                .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}"))
                .await;
            let group = chat["chat_group_id"].as_str().unwrap().to_string();

            let del = |k: &str, path: String| {
                srv.http
                    .delete(format!("{}{path}", srv.base))
                    .header("X-Hume-Api-Key", k.to_string())
                    .send()
            };
            assert_eq!(
                del(&other.api_key, format!("/v0/evi/chats/{chat_id}"))
                    .await
                    .unwrap()
                    .status(),
                404,
                "another account's chat"
            );
            assert_eq!(
                del(&key.api_key, "/v0/evi/chats/nope".into())
                    .await
                    .unwrap()
                    .status(),
                400
            );
            assert_eq!(
                del(&key.api_key, format!("/v0/evi/chats/{chat_id}"))
                    .await
                    .unwrap()
                    .status(),
                204
            );
            for path in [
                format!("/v0/evi/chats/{chat_id}"),
                format!("/v0/evi/chats/{chat_id}/audio"),
                format!("/v0/evi/chat_groups/{group}"),
                format!("/v0/evi/chat_groups/{group}/events"),
            ] {
                assert_eq!(srv.get(&key.api_key, &path).await.0, 404, "{path}");
            }
            assert_eq!(
                srv.http.get(&url).send().await.unwrap().status(),
                404,
                "the file is gone"
            );
            assert_eq!(
                stored_files(&srv, &chat_id),
                Vec::<String>::new(),
                "no object remains"
            );
            assert_eq!(
                del(&key.api_key, format!("/v0/evi/chats/{chat_id}"))
                    .await
                    .unwrap()
                    .status(),
                404
            );

            // A group: both chats go, including an active one whose session is told.
            let (mut ws1, meta1) = srv.connect(&key.api_key, "").await;
            futures::SinkExt::close(&mut ws1).await.unwrap();
            let _ = recv_close(&mut ws1).await;
            let g = meta1["chat_group_id"].as_str().unwrap().to_string();
            let (mut ws2, meta2) = srv
                .connect(&key.api_key, &format!("resumed_chat_group_id={g}"))
                .await;
            assert_eq!(
                del(&other.api_key, format!("/v0/evi/chat_groups/{g}"))
                    .await
                    .unwrap()
                    .status(),
                404
            );
            assert_eq!(
                del(&key.api_key, format!("/v0/evi/chat_groups/{g}"))
                    .await
                    .unwrap()
                    .status(),
                204
            );
            send_json(
                &mut ws2,
                json!({"type": "user_input", "text": "still there?"}),
            )
            .await;
            let err = recv_json(&mut ws2).await;
            assert_eq!(err["code"], "I0102", "{err}");
            assert!(err["message"].as_str().unwrap().contains("deleted"));
            for id in [&meta1["chat_id"], &meta2["chat_id"]] {
                let (status, _) = srv
                    .get(
                        &key.api_key,
                        &format!("/v0/evi/chats/{}", id.as_str().unwrap()),
                    )
                    .await;
                assert_eq!(status, 404);
            }
            assert_eq!(
                srv.get(&key.api_key, &format!("/v0/evi/chat_groups/{g}"))
                    .await
                    .0,
                404
            );
            let (_, chats) = srv.get(&key.api_key, "/v0/evi/chats").await;
            assert_eq!(chats["chats_page"], json!([]));
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn audio_that_could_not_be_stored_is_reported_by_the_reconstruction() {
    let (srv, _) = TestServer::start(Backend::Sqlite, |_| {}).await.unwrap();
    let key = srv.key(true).await;
    let chat_id = chat_with_audio(&srv, &key).await;
    // What a recorder leaves when the store refused its writes for too long.
    let state = &srv.running().state;
    let note = colloquy_server::objects::ObjectKey::VoiceMissing {
        user_id: key.user_id,
        chat_id: uuid::Uuid::parse_str(&chat_id).unwrap(),
        voice: Voice::User,
    };
    let spans = vec![colloquy_server::capture::MissingSpan {
        from_ms: 2_000,
        to_ms: 3_500,
    }];
    state
        .objects
        .store
        .put(&note.path(), serde_json::to_vec(&spans).unwrap().into())
        .await
        .unwrap();
    let rec = wait_for_audio(&srv, &key.api_key, &chat_id).await;
    assert_eq!(rec["status"], "COMPLETE", "{rec}");
    let stored = state
        .store
        .ensure_reconstructions(key.user_id, &[uuid::Uuid::parse_str(&chat_id).unwrap()], 0)
        .await
        .unwrap()
        .remove(0);
    let said = stored.error.expect("a note on the missing audio");
    assert!(said.contains("user audio from 2.0 s to 3.5 s"), "{said}");
    srv.stop(None).await;
}
