//! A full disk under a running server: the data dir (SQLite database and local audio) on a
//! small tmpfs, filled while chats write. Acknowledged events are never lost, clients are
//! told, and once space returns every chat is closed within seconds, without a restart.
//!
//! Needs root (it mounts a tmpfs). Elsewhere it is skipped with a note, unless `CI` is set,
//! where skipping would hide the test: then it fails.

use crate::harness::{recv_json, send_json, Backend, TestServer};
use base64::Engine;
use colloquy_storage::{ChatFilter, PageRequest};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size_mb: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap().keep();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let note = "disk_full: cannot mount a tmpfs (needs root)";
            assert!(std::env::var_os("CI").is_none(), "{note}");
            eprintln!("{note}; skipped");
            return None;
        }
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `dir` until a write fails; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0xA5u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    // Squeeze out the last partial blocks too.
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.flush();
    path
}

/// One client's view: texts whose `user_message` echo arrived (acknowledged = committed),
/// and the `error` codes it was sent.
#[derive(Default)]
struct Seen {
    chat_id: String,
    acked: Vec<String>,
    errors: Vec<String>,
    closed: Option<u16>,
}

#[tokio::test]
async fn a_full_disk_loses_no_acknowledged_event_and_leaves_no_active_chat() {
    let Some(tmpfs) = Tmpfs::mount(40) else {
        return;
    };
    let data_dir = tmpfs.0.join("data");
    let (srv, _) = TestServer::start(Backend::Sqlite, move |s| {
        s.data_dir = data_dir;
        s.engine.client.speak = false;
    })
    .await
    .unwrap();
    let key = srv.key(true).await;
    let store = srv.running().state.store.clone();
    let user_id = key.user_id;

    let text = |i: usize, n: usize| format!("chat {i} message {n} {}", "y".repeat(48 * 1024));
    let pcm = crate::harness::tone(440.0, 16_000, 100);
    let audio = base64::engine::general_purpose::STANDARD.encode(&pcm);
    let mut socks = Vec::new();
    for _ in 0..4 {
        let (mut ws, meta) = srv.connect(&key.api_key, "").await;
        send_json(
            &mut ws,
            json!({"type": "session_settings",
                   "audio": {"encoding": "linear16", "sample_rate": 16000, "channels": 1}}),
        )
        .await;
        let seen = Seen {
            chat_id: meta["chat_id"].as_str().unwrap().to_string(),
            ..Seen::default()
        };
        socks.push((ws, seen));
    }

    // Writes succeed first; then the disk is filled while the chats keep writing.
    let mut filler = None;
    let mut n = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(40) {
        if n == 5 {
            filler = Some(fill(&tmpfs.0));
        }
        let mut open = 0;
        for (i, (ws, seen)) in socks.iter_mut().enumerate() {
            if seen.closed.is_some() {
                continue;
            }
            open += 1;
            let t = text(i, n);
            let _ = ws
                .send(Message::Text(
                    json!({"type": "audio_input", "data": audio})
                        .to_string()
                        .into(),
                ))
                .await;
            if ws
                .send(Message::Text(
                    json!({"type": "user_input", "text": t}).to_string().into(),
                ))
                .await
                .is_err()
            {
                seen.closed = Some(1006);
                continue;
            }
            // Read until this message's echo, an error, or the close.
            loop {
                match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                    Ok(Some(Ok(Message::Text(m)))) => {
                        let v: Value = serde_json::from_str(m.as_str()).unwrap();
                        match v["type"].as_str() {
                            Some("user_message") => {
                                let got = v["message"]["content"].as_str().unwrap().to_string();
                                let mine = got == t;
                                seen.acked.push(got);
                                if mine {
                                    break;
                                }
                            }
                            Some("error") => {
                                seen.errors.push(v["code"].as_str().unwrap().to_string());
                                assert!(!v["message"].as_str().unwrap().is_empty());
                            }
                            _ => {}
                        }
                    }
                    Ok(Some(Ok(Message::Close(c)))) => {
                        seen.closed = Some(c.map_or(1005, |c| u16::from(c.code)));
                        break;
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(_) => {
                        seen.closed = Some(1006);
                        break;
                    }
                    Err(_) => panic!("no answer within 10 s"),
                }
            }
        }
        n += 1;
        if open == 0 || (filler.is_some() && socks.iter().all(|(_, s)| !s.errors.is_empty())) {
            break;
        }
    }
    let filler = filler.expect("the disk was filled");
    let told: Vec<_> = socks.iter().flat_map(|(_, s)| s.errors.clone()).collect();
    assert!(
        told.iter().any(|c| c == "I0100"),
        "a client was told that its chat could not be stored: {told:?}"
    );

    // The server runs on; space comes back.
    for (ws, _) in socks.iter_mut() {
        let _ = ws.close(None).await;
    }
    // While the disk is still full the chats cannot be ended: they stay ACTIVE (their ends
    // are retried in the background), which is what must resolve once space returns.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still_active = store
        .list_chats(
            user_id,
            &ChatFilter {
                status: Some(colloquy_wire::ChatStatus::Active),
                ..ChatFilter::default()
            },
            PageRequest {
                number: 0,
                size: 100,
                ascending: true,
            },
        )
        .await
        .unwrap();
    assert!(
        !still_active.items.is_empty(),
        "the full disk kept chat ends from being written"
    );
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    loop {
        let active = store
            .list_chats(
                user_id,
                &ChatFilter {
                    status: Some(colloquy_wire::ChatStatus::Active),
                    ..ChatFilter::default()
                },
                PageRequest {
                    number: 0,
                    size: 100,
                    ascending: true,
                },
            )
            .await
            .unwrap();
        if freed.elapsed() < Duration::from_millis(50) {
            eprintln!(
                "disk full: clients were told {told:?}; {} chats ACTIVE when space returned",
                active.items.len()
            );
        }
        if active.items.is_empty() {
            eprintln!("no chat ACTIVE {:?} after space returned", freed.elapsed());
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(10),
            "{} chats still ACTIVE 10 s after space returned",
            active.items.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every acknowledged message is stored, in order, with its text.
    for (_, seen) in &socks {
        let events = srv.all_events(&key.api_key, &seen.chat_id, 100).await;
        let stored: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "USER_MESSAGE")
            .map(|e| e["message_text"].as_str().unwrap())
            .collect();
        let acked: Vec<&str> = seen.acked.iter().map(String::as_str).collect();
        assert!(
            stored.starts_with(&acked) && stored.len() >= acked.len(),
            "chat {}: {} acknowledged, {} stored",
            seen.chat_id,
            acked.len(),
            stored.len()
        );
        assert!(
            !acked.is_empty(),
            "writes succeeded before the disk was full"
        );
        let (_, chat) = srv
            .get(
                &key.api_key,
                &format!("/v0/evi/chats/{}?page_size=1", seen.chat_id),
            )
            .await;
        assert_ne!(chat["status"], "ACTIVE", "{chat}");
    }

    // New chats work again.
    let (mut ws, _) = srv.connect(&key.api_key, "").await;
    send_json(
        &mut ws,
        json!({"type": "user_input", "text": "space is back"}),
    )
    .await;
    let echo = recv_json(&mut ws).await;
    assert_eq!(echo["message"]["content"], "space is back", "{echo}");
    srv.stop(None).await;
    drop(tmpfs);
}
