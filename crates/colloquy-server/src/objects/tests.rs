//! The door's own tests, against the in-memory store and a local folder.

use super::*;
use colloquy_audio::Linear16Format;

#[test]
fn keys_have_stable_paths() {
    let u = Uuid::nil();
    let c = Uuid::from_u128(1);
    assert_eq!(
        ObjectKey::Reconstruction {
            user_id: u,
            chat_id: c
        }
        .to_string(),
        format!("{u}/{c}/reconstructed_audio.mp4")
    );
    let seg = ObjectKey::Segment {
        user_id: u,
        chat_id: c,
        voice: Voice::User,
        index: 7,
    };
    assert_eq!(
        seg.to_string(),
        format!("capture/{u}/{c}/user/segments/00000007.rec")
    );
    assert!(seg
        .to_string()
        .starts_with(ObjectKey::segments_prefix(u, c, Voice::User).as_ref()));
}

async fn collect(stream: ByteStream) -> Vec<u8> {
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    chunks.concat()
}

#[test]
fn stored_formats_read_as_they_were_written() {
    for (json, format, voice) in [
        (
            r#"{"format":"linear16","sample_rate":16000,"channels":1}"#,
            CapturedFormat::Linear16(colloquy_audio::Linear16Format {
                sample_rate: 16_000,
                channels: 1,
            }),
            VoiceFormat::Linear16(Linear16Format {
                sample_rate: 16_000,
                channels: 1,
            }),
        ),
        (
            r#"{"format":"container"}"#,
            CapturedFormat::Container,
            VoiceFormat::Container,
        ),
        (
            r#"{"format":"wav_clips"}"#,
            CapturedFormat::WavClips,
            VoiceFormat::WavClips,
        ),
    ] {
        assert_eq!(
            serde_json::from_str::<CapturedFormat>(json).unwrap(),
            format
        );
        assert_eq!(serde_json::to_string(&format).unwrap(), json);
        assert_eq!(format, voice);
    }
    assert_eq!(Voice::User.as_str(), "user");
    assert_eq!(Voice::Assistant.as_str(), "assistant");
}

#[tokio::test]
async fn captured_voices_come_back_for_the_reconstruction() {
    let objects = Objects::in_memory();
    let (u, c) = (Uuid::new_v4(), Uuid::new_v4());
    let format = CapturedFormat::Linear16(colloquy_audio::Linear16Format {
        sample_rate: 24_000,
        channels: 2,
    });
    objects
        .write_format(u, c, Voice::User, format)
        .await
        .unwrap();
    // Written out of order; read back in segment order, all of them.
    for (index, body) in [(1u32, &b"second"[..]), (0, b"first-"), (10, b"-last")] {
        objects
            .write_segment(u, c, Voice::User, index, Bytes::from_static(body))
            .await
            .unwrap();
    }
    let lost = [MissingSpan {
        from_ms: 100,
        to_ms: 250,
    }];
    objects
        .write_missing(u, c, Voice::User, &lost)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (got, path) = objects
        .fetch_voice(u, c, Voice::User, dir.path())
        .await
        .unwrap()
        .expect("the user's voice");
    assert_eq!(got, format);
    assert_eq!(path, dir.path().join("user.rec"));
    assert_eq!(std::fs::read(&path).unwrap(), b"first-second-last");
    assert_eq!(objects.missing_spans(u, c, Voice::User).await, lost);
    // A voice that said nothing has no audio and no note.
    assert!(objects
        .fetch_voice(u, c, Voice::Assistant, dir.path())
        .await
        .unwrap()
        .is_none());
    assert!(objects
        .missing_spans(u, c, Voice::Assistant)
        .await
        .is_empty());
    // What was stored is where the keys say, in the stored formats.
    let key = ObjectKey::VoiceFormat {
        user_id: u,
        chat_id: c,
        voice: Voice::User,
    };
    let raw = objects.read(&key.to_string(), None).await;
    assert_eq!(
        collect(raw.unwrap().unwrap()).await,
        br#"{"format":"linear16","sample_rate":24000,"channels":2}"#
    );
    // Another chat of the same user is another folder.
    assert!(objects
        .fetch_voice(u, Uuid::new_v4(), Voice::User, dir.path())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn an_uploaded_file_is_read_whole_or_in_ranges_and_erased_with_its_chat() {
    let objects = Objects::in_memory();
    let (u, c) = (Uuid::new_v4(), Uuid::new_v4());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.mp4");
    let body: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    std::fs::write(&file, &body).unwrap();
    let key = objects.upload_reconstruction(u, c, &file).await.unwrap();
    assert_eq!(key, format!("{u}/{c}/reconstructed_audio.mp4"));
    assert_eq!(objects.size(&key).await.unwrap(), Some(10_000));
    let whole = objects.read(&key, None).await.unwrap().unwrap();
    assert_eq!(collect(whole).await, body);
    let part = objects.read(&key, Some(10..20)).await.unwrap().unwrap();
    assert_eq!(collect(part).await, &body[10..20]);
    objects
        .write_segment(u, c, Voice::Assistant, 0, Bytes::from_static(b"x"))
        .await
        .unwrap();
    objects.erase_chat(u, c).await.unwrap();
    assert_eq!(objects.size(&key).await.unwrap(), None);
    assert!(objects.read(&key, None).await.unwrap().is_none());
    assert!(objects
        .fetch_voice(u, c, Voice::Assistant, dir.path())
        .await
        .unwrap()
        .is_none());
    // Erasing what is already gone is no error.
    objects.erase_chat(u, c).await.unwrap();
}

#[tokio::test]
async fn local_links_go_through_the_signed_download_route() {
    let objects = Objects::in_memory();
    let signer = UrlSigner::new(b"secret");
    let key = "u/c/reconstructed_audio.mp4";
    let before = now_ms();
    let link = objects
        .download_link(&signer, "http://colloquy.test", key)
        .await
        .unwrap();
    assert!((before + URL_LIFETIME_MS..=now_ms() + URL_LIFETIME_MS).contains(&link.expires_ms));
    let path = format!("{}{key}", crate::signing::DOWNLOAD_PREFIX);
    assert_eq!(
        link.url,
        format!(
            "http://colloquy.test{path}?expires={}&signature={}",
            link.expires_ms,
            signer.sign(&path, link.expires_ms)
        )
    );
    // Under an empty base the link is relative to the host.
    let relative = objects.download_link(&signer, "", key).await.unwrap();
    assert!(relative.url.starts_with(&format!("{path}?expires=")));
}

#[tokio::test]
async fn s3_links_are_presigned_by_the_store() {
    let settings = StorageSettings {
        bucket: Some("audio".into()),
        endpoint: Some("http://127.0.0.1:9".into()),
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some("secret".into()),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let objects = Objects::open(&settings, dir.path()).unwrap();
    let signer = UrlSigner::new(b"secret");
    let before = now_ms();
    let link = objects
        .download_link(
            &signer,
            "http://colloquy.test",
            "u/c/reconstructed_audio.mp4",
        )
        .await
        .unwrap();
    assert!(
        link.url
            .starts_with("http://127.0.0.1:9/audio/u/c/reconstructed_audio.mp4?"),
        "{}",
        link.url
    );
    assert!(link.url.contains("X-Amz-Expires=3600"), "{}", link.url);
    assert!(link.url.contains("X-Amz-Signature="), "{}", link.url);
    assert!(!link.url.contains(crate::signing::DOWNLOAD_PREFIX));
    assert!(link.expires_ms >= before + URL_LIFETIME_MS);
}
