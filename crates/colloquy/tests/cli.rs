//! The client commands end to end: a real server in-process (SQLite in a temp dir), chats
//! recorded over the real WebSocket (or, for emotion scores, written through the store), and
//! the real `colloquy` binary run against it with `--base-url` / `--api-key`.

use base64::Engine;
use chrono::{FixedOffset, TimeZone};
use colloquy_client::{Client, PageRequest};
use colloquy_server::keys::{hash_secret, CreatedKey};
use colloquy_server::Settings;
use colloquy_storage::{GroupChoice, NewChat, NewEvent, OpOutcome, WriteOp};
use colloquy_testkit::{recv_json, send_json, tone, TestServer, Ws, LINEAR16_16K_MONO};
use colloquy_wire::{ChatStatus, EventRole, EventType, ReturnChatPagedEvents};
use futures::StreamExt;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// The time zone the binary runs in (POSIX TZ string: UTC+05:30), so "local time" is checked
/// against something other than UTC.
const TZ: &str = "IST-5:30";

fn local() -> FixedOffset {
    FixedOffset::east_opt(5 * 3600 + 1800).unwrap()
}

fn local_time(ms: i64) -> String {
    local()
        .timestamp_millis_opt(ms)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The server (SQLite), one account's key, and a working directory for the binary.
struct Srv {
    server: TestServer,
    key: CreatedKey,
    /// The binary's working directory (where default output files land).
    work: tempfile::TempDir,
}

/// What a run of the binary produced.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    raw: Vec<u8>,
}

impl Out {
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "exit {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// Asserts a failure with exactly one line on stderr containing `needle`.
    fn fails_with(&self, needle: &str) {
        assert_ne!(self.code, 0, "should fail; stdout: {}", self.stdout);
        assert_eq!(
            self.stderr.trim_end().lines().count(),
            1,
            "one line: {:?}",
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "{needle:?} not in {:?}",
            self.stderr
        );
    }
}

async fn run_in(dir: &Path, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .args(args)
        .current_dir(dir)
        .env("TZ", TZ)
        .env_remove("HUME_API_KEY")
        .env_remove("COLLOQUY_BASE_URL")
        .output()
        .await
        .expect("run colloquy");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        raw: out.stdout,
    }
}

impl Srv {
    async fn start(tweak: impl FnOnce(&mut Settings)) -> Srv {
        let server = TestServer::sqlite(|settings| {
            settings.database.sqlite_synchronous = "normal".into();
            tweak(settings);
        })
        .await;
        let key = server.key_named("cli", true).await;
        Srv {
            server,
            key,
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// `http://127.0.0.1:PORT`.
    fn base(&self) -> &str {
        &self.server.base
    }

    /// Runs `colloquy <args> --base-url <server> --api-key <key>` in the work dir.
    async fn run(&self, args: &[&str]) -> Out {
        let mut all = args.to_vec();
        all.extend(["--base-url", self.base(), "--api-key", &self.key.api_key]);
        run_in(self.work.path(), &all).await
    }

    fn client(&self) -> Client {
        Client::new(self.base(), Some(self.key.api_key.clone())).unwrap()
    }

    async fn connect(&self, query: &str) -> (Ws, String, String) {
        let (ws, meta) = self.server.connect(&self.key.api_key, query).await;
        let chat = meta["chat_id"].as_str().unwrap().to_string();
        let group = meta["chat_group_id"].as_str().unwrap().to_string();
        (ws, chat, group)
    }

    /// A chat of typed turns (`user_input` / `assistant_input`), each acknowledged before the
    /// next, `gap` apart; returns (chat id, group id) once the chat has ended.
    async fn text_chat(
        &self,
        turns: &[(&str, &str)],
        gap: Duration,
        query: &str,
    ) -> (String, String) {
        let (mut ws, chat, group) = self.connect(query).await;
        for (i, (kind, text)) in turns.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            send_json(&mut ws, json!({"type": kind, "text": text})).await;
            let echo = recv_json(&mut ws).await;
            assert_eq!(echo["message"]["content"], *text, "{echo}");
            if *kind == "assistant_input" {
                // The built-in voice speaks it (audio_output chunks) before assistant_end.
                loop {
                    let m = recv_json(&mut ws).await;
                    if m["type"] == "assistant_end" {
                        break;
                    }
                    assert_eq!(m["type"], "audio_output", "{m}");
                    assert_eq!(m["id"], echo["id"], "{m}");
                }
            }
        }
        ws.close(None).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(m)) = ws.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
        self.wait_ended(&chat).await;
        (chat, group)
    }

    /// Waits until the chat is no longer ACTIVE; returns page 0 of its events.
    async fn wait_ended(&self, chat: &str) -> ReturnChatPagedEvents {
        for _ in 0..100 {
            let page = self
                .client()
                .chat_events_page(chat, PageRequest::full(0, true))
                .await
                .unwrap();
            if page.status != ChatStatus::Active {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chat {chat} did not end");
    }

    async fn stop(self) {
        self.server.stop(None).await;
    }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_and_groups_are_paged_to_exhaustion() {
    let srv = Srv::start(|_| {}).await;
    let created: Vec<(String, String)> = futures::stream::iter(0..130)
        .map(|i| {
            let srv = &srv;
            async move {
                let text = if i == 7 {
                    "I would like an apple pie".to_string()
                } else {
                    format!("chat number {i}")
                };
                srv.text_chat(&[("user_input", &text)], Duration::ZERO, "")
                    .await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(created.len(), 130);

    // Newest first by default; every chat, across two pages of 100.
    let all = srv.run(&["chats", "--json"]).await.ok().json();
    let listed = ids(&all);
    assert_eq!(listed.len(), 130);
    let mut unique = listed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 130);
    let starts: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["start_timestamp"].as_i64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "USER_ENDED"));

    let oldest = srv
        .run(&["chats", "--json", "--oldest-first"])
        .await
        .ok()
        .json();
    let mut reversed = ids(&oldest);
    reversed.reverse();
    assert_eq!(reversed.len(), 130);
    assert_eq!(reversed[0], listed[0], "same set, other order");

    let limited = srv
        .run(&["chats", "--json", "--limit", "105"])
        .await
        .ok()
        .json();
    assert_eq!(ids(&limited), listed[..105]);

    // The table: a header and one row per chat, the newest first.
    let table = srv.run(&["chats", "--limit", "5"]).await.ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    for col in [
        "CHAT ID", "STARTED", "DURATION", "EVENTS", "STATUS", "GROUP",
    ] {
        assert!(lines[0].contains(col), "{}", lines[0]);
    }
    let first = &all[0];
    let row = lines[1];
    assert!(row.starts_with(first["id"].as_str().unwrap()), "{row}");
    assert!(
        row.contains(&local_time(first["start_timestamp"].as_i64().unwrap())),
        "local start time in {row}"
    );
    assert!(row.contains("USER_ENDED"), "{row}");
    assert!(
        row.contains(first["chat_group_id"].as_str().unwrap()),
        "{row}"
    );
    assert!(
        row.contains(&format!(" {} ", first["event_count"])),
        "event count in {row}"
    );

    // Filters.
    let active = srv
        .run(&["chats", "--json", "--status", "active"])
        .await
        .ok();
    assert_eq!(active.json(), json!([]));
    let ended = srv
        .run(&["chats", "--json", "--status", "USER_ENDED", "--limit", "3"])
        .await
        .ok();
    assert_eq!(ids(&ended.json()).len(), 3);
    let found = srv
        .run(&["chats", "--json", "--search", "apple pie"])
        .await
        .ok()
        .json();
    assert_eq!(ids(&found).len(), 1, "only the apple-pie chat: {found}");
    let events = srv
        .run(&["events", &ids(&found)[0], "--json"])
        .await
        .ok()
        .json();
    assert!(events
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["message_text"] == "I would like an apple pie"));

    // Groups: one per chat here.
    let groups = srv.run(&["groups", "--json"]).await.ok().json();
    assert_eq!(ids(&groups).len(), 130);
    let group_ids: Vec<&String> = created.iter().map(|(_, g)| g).collect();
    assert!(ids(&groups).iter().all(|g| group_ids.contains(&g)));
    let gtable = srv.run(&["groups", "--limit", "2"]).await.ok().stdout;
    assert_eq!(gtable.lines().count(), 3, "{gtable}");
    assert!(gtable.lines().next().unwrap().starts_with("GROUP ID"));
    assert!(gtable.lines().nth(1).unwrap().starts_with(&ids(&groups)[0]));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_in_every_format_for_chats_and_groups() {
    let srv = Srv::start(|_| {}).await;
    let gap = Duration::from_millis(300);
    let (chat, group) = srv
        .text_chat(
            &[
                ("user_input", "Hello there"),
                ("assistant_input", "Hi! How can I help?\nAsk away."),
                ("user_input", "Tell me a <joke> & more"),
            ],
            gap,
            "",
        )
        .await;
    let page = srv.wait_ended(&chat).await;
    let start = page.start_timestamp;
    let end = page.end_timestamp.unwrap();
    let msgs: Vec<(i64, &str)> = page
        .events_page
        .iter()
        .filter(|e| {
            matches!(
                e.event_type,
                EventType::UserMessage | EventType::AgentMessage
            )
        })
        .map(|e| (e.timestamp, e.message_text.as_deref().unwrap()))
        .collect();
    assert_eq!(msgs.len(), 3);

    // txt, to the default file name.
    let out = srv.run(&["transcript", &chat]).await.ok();
    assert!(
        out.stderr.contains(&format!("transcript_{chat}.txt")),
        "{}",
        out.stderr
    );
    let txt =
        std::fs::read_to_string(srv.work.path().join(format!("transcript_{chat}.txt"))).unwrap();
    assert_eq!(
        txt,
        format!(
            "[{}] User: Hello there\n[{}] Assistant: Hi! How can I help? Ask away.\n[{}] User: Tell me a <joke> & more\n",
            local_time(msgs[0].0),
            local_time(msgs[1].0),
            local_time(msgs[2].0)
        )
    );

    // Cue times: from the chat start; each cue until the next message, the last until the end.
    let off: Vec<i64> = msgs.iter().map(|(t, _)| t - start).collect();
    assert!(off[1] - off[0] >= 250 && off[2] - off[1] >= 250, "{off:?}");
    let last_end = (end - start).min(off[2] + 10_000);
    let last_end = if last_end > off[2] {
        last_end
    } else {
        off[2] + 3_000
    };
    let clock = |ms: i64, sep: char| {
        format!(
            "{:02}:{:02}:{:02}{sep}{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    };

    let vtt = srv
        .run(&["transcript", &chat, "--format", "vtt", "-o", "-"])
        .await
        .ok()
        .stdout;
    assert_eq!(
        vtt,
        format!(
            "WEBVTT\n\n1\n{} --> {}\nUser: Hello there\n\n2\n{} --> {}\nAssistant: Hi! How can I help?\nAsk away.\n\n3\n{} --> {}\nUser: Tell me a &lt;joke&gt; &amp; more\n",
            clock(off[0], '.'),
            clock(off[1], '.'),
            clock(off[1], '.'),
            clock(off[2], '.'),
            clock(off[2], '.'),
            clock(last_end, '.'),
        )
    );

    srv.run(&["transcript", &chat, "--format", "srt", "-o", "subs/out.srt"])
        .await
        .fails_with("could not write subs/out.srt");
    std::fs::create_dir(srv.work.path().join("subs")).unwrap();
    srv.run(&["transcript", &chat, "--format", "srt", "-o", "subs/out.srt"])
        .await
        .ok();
    let srt = std::fs::read_to_string(srv.work.path().join("subs/out.srt")).unwrap();
    assert_eq!(
        srt,
        format!(
            "1\n{} --> {}\nUser: Hello there\n\n2\n{} --> {}\nAssistant: Hi! How can I help?\nAsk away.\n\n3\n{} --> {}\nUser: Tell me a <joke> & more\n",
            clock(off[0], ','),
            clock(off[1], ','),
            clock(off[1], ','),
            clock(off[2], ','),
            clock(off[2], ','),
            clock(last_end, ','),
        )
    );

    srv.run(&["transcript", &chat, "--format", "json"])
        .await
        .ok();
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(srv.work.path().join(format!("transcript_{chat}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(doc["id"], chat.as_str());
    assert_eq!(doc["kind"], "chat");
    assert_eq!(doc["start_timestamp"], start);
    let m = doc["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[1]["speaker"], "Assistant");
    assert_eq!(m[1]["text"], "Hi! How can I help?\nAsk away.");
    assert_eq!(m[2]["offset_ms"], off[2]);
    assert_eq!(m[2]["timestamp"], msgs[2].0);
    assert_eq!(m[0]["chat_id"], chat.as_str());

    // A group: a second chat resumes it; times count from the group's first chat.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (chat2, group2) = srv
        .text_chat(
            &[("user_input", "I am back")],
            gap,
            &format!("resumed_chat_group_id={group}"),
        )
        .await;
    assert_eq!(group2, group);
    let page2 = srv.wait_ended(&chat2).await;
    let back = page2
        .events_page
        .iter()
        .find(|e| e.event_type == EventType::UserMessage)
        .unwrap()
        .timestamp;
    let gvtt = srv
        .run(&["transcript", &group, "--format", "vtt", "-o", "-"])
        .await
        .ok()
        .stdout;
    assert_eq!(gvtt.matches(" --> ").count(), 4, "{gvtt}");
    assert!(
        gvtt.contains(&format!("\n4\n{} --> ", clock(back - start, '.'))),
        "group cue timed from the first chat's start: {gvtt}"
    );
    srv.run(&["transcript", &group]).await.ok();
    let gtxt =
        std::fs::read_to_string(srv.work.path().join(format!("transcript_{group}.txt"))).unwrap();
    assert_eq!(gtxt.lines().count(), 4);
    assert_eq!(
        gtxt.lines().last().unwrap(),
        format!("[{}] User: I am back", local_time(back))
    );

    // events: a readable listing, or the wire objects.
    let listing = srv.run(&["events", &chat]).await.ok().stdout;
    let lines: Vec<&str> = listing.lines().collect();
    assert!(lines[0].starts_with("OFFSET"), "{listing}");
    assert_eq!(lines.len(), 1 + page.events_page.len(), "{listing}");
    let hello = lines
        .iter()
        .find(|l| l.contains("USER_MESSAGE") && l.contains("Hello there"))
        .unwrap_or_else(|| panic!("{listing}"));
    let shown = format!("+0:{:02}.{:03}", off[0] / 1000, off[0] % 1000);
    assert!(hello.starts_with(&shown), "{hello} (offset {shown})");
    assert!(hello.contains("USER"));
    assert!(lines
        .iter()
        .any(|l| l.contains("CHAT_END_MESSAGE") && l.contains("USER_ENDED")));
    let evjson = srv.run(&["events", &chat, "--json"]).await.ok().json();
    assert_eq!(
        serde_json::from_value::<Vec<colloquy_wire::ReturnChatEvent>>(evjson).unwrap(),
        page.events_page
    );
    let gev = srv
        .run(&["events", &group, "--json", "--limit", "2"])
        .await
        .ok()
        .json();
    assert_eq!(gev.as_array().unwrap().len(), 2);
    srv.stop().await;
}

/// A finished chat whose user messages carry prosody scores, written through the store
/// (the typed socket input has none).
async fn chat_with_scores(srv: &Srv) -> String {
    let store = srv.server.running().state.store.clone();
    let who = store
        .principal_by_key_hash(&hash_secret(&srv.key.api_key))
        .await
        .unwrap()
        .unwrap();
    let chat_id = Uuid::now_v7();
    let start = colloquy_server::clock::now_ms() - 60_000;
    let ev = |seq: i64, ms: i64, ty: EventType, text: &str, features: &str| NewEvent {
        id: Uuid::now_v7(),
        seq,
        timestamp: start + ms,
        role: match ty {
            EventType::AgentMessage => EventRole::Agent,
            EventType::UserMessage => EventRole::User,
            _ => EventRole::System,
        },
        event_type: ty,
        message_text: Some(text.into()),
        emotion_features: Some(features.into()),
        metadata: Some(String::new()),
        related_event_id: None,
    };
    let outcomes = store
        .apply_batch(&[
            WriteOp::StartChat {
                api_key_id: who.api_key_id,
                chat: NewChat {
                    id: chat_id,
                    user_id: who.user_id,
                    group: GroupChoice::New(Uuid::now_v7()),
                    start_timestamp: start,
                    metadata: None,
                    config_id: None,
                    config_version: None,
                    instance_id: Uuid::new_v4(),
                    webhooks: Vec::new(),
                },
                events: vec![
                    ev(0, 0, EventType::ChatStartMessage, "", ""),
                    ev(
                        1,
                        1_500,
                        EventType::UserMessage,
                        "What a day, \"really\"",
                        r#"{"Joy": 0.9, "Calmness": 0.2, "Anger": 0.1, "Interest": 0.5}"#,
                    ),
                    ev(2, 2_000, EventType::AgentMessage, "Tell me more", ""),
                    ev(
                        3,
                        4_250,
                        EventType::UserMessage,
                        "It was fine",
                        r#"{"Joy": 0.5, "Calmness": 0.4, "Anger": 0.0, "Interest": 0.3}"#,
                    ),
                    ev(4, 5_000, EventType::UserMessage, "typed", ""),
                ],
                max_active_chats: None,
            },
            WriteOp::EndChat {
                api_key_id: who.api_key_id,
                chat_id,
                status: ChatStatus::UserEnded,
                end_timestamp: start + 6_000,
                events: vec![ev(5, 6_000, EventType::ChatEndMessage, "", "")],
            },
        ])
        .await
        .unwrap();
    assert_eq!(outcomes, [OpOutcome::Applied, OpOutcome::Applied]);
    chat_id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emotions_are_averaged_over_user_messages() {
    let srv = Srv::start(|_| {}).await;
    let chat = chat_with_scores(&srv).await;

    let out = srv.run(&["emotions", &chat]).await.ok();
    assert_eq!(
        out.stdout,
        "Top 3 emotion(s), averaged over 2 of 3 user message(s):\n  Joy       0.700\n  Interest  0.400\n  Calmness  0.300\n"
    );
    let two = srv
        .run(&["emotions", &chat, "--top", "2", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(two["user_messages"], 3);
    assert_eq!(two["scored_messages"], 2);
    let top = two["top"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(top[0]["emotion"], "Joy");
    assert!((top[0]["score"].as_f64().unwrap() - 0.7).abs() < 1e-9);
    assert_eq!(top[1]["emotion"], "Interest");

    let page = srv
        .client()
        .chat_events_page(&chat, PageRequest::full(0, true))
        .await
        .unwrap();
    let ts: Vec<i64> = page
        .events_page
        .iter()
        .filter(|e| e.event_type == EventType::UserMessage)
        .map(|e| e.timestamp)
        .collect();
    let rfc = |ms: i64| {
        local()
            .timestamp_millis_opt(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
    };
    let csv = srv
        .run(&["emotions", &chat, "--timeline"])
        .await
        .ok()
        .stdout;
    assert_eq!(
        csv,
        format!(
            "timestamp,offset_s,text,Anger,Calmness,Interest,Joy\n\
             {},1.500,\"What a day, \"\"really\"\"\",0.1,0.2,0.5,0.9\n\
             {},4.250,It was fine,0,0.4,0.3,0.5\n",
            rfc(ts[0]),
            rfc(ts[1])
        )
    );
    assert!(rfc(ts[0]).ends_with("+05:30"), "local time zone");

    // A typed chat has no scores: said plainly, exit 0, nothing on stdout.
    let (typed, _) = srv
        .text_chat(&[("user_input", "just typing")], Duration::ZERO, "")
        .await;
    let none = srv.run(&["emotions", &typed]).await.ok();
    assert_eq!(none.stdout, "");
    assert!(none.stderr.contains("No emotion scores"), "{}", none.stderr);
    assert!(none.stderr.contains("1 user message"), "{}", none.stderr);
    let none = srv.run(&["emotions", &typed, "--timeline"]).await.ok();
    assert_eq!(none.stdout, "");
    let none = srv.run(&["emotions", &typed, "--json"]).await.ok().json();
    assert_eq!(none["top"], json!([]));
    assert_eq!(none["scored_messages"], 0);
    srv.stop().await;
}

/// A chat with one second of user audio; returns (chat id, group id).
async fn chat_with_audio(srv: &Srv) -> (String, String) {
    let (mut ws, chat, group) = srv.connect(LINEAR16_16K_MONO).await;
    for chunk in tone(440.0, 16_000, 1000).chunks(640) {
        let data = base64::engine::general_purpose::STANDARD.encode(chunk);
        send_json(&mut ws, json!({"type": "audio_input", "data": data})).await;
    }
    send_json(&mut ws, json!({"type": "user_input", "text": "done"})).await;
    recv_json(&mut ws).await;
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
    srv.wait_ended(&chat).await;
    (chat, group)
}

fn assert_mp4(bytes: &[u8]) {
    assert!(bytes.len() > 1000, "{} bytes", bytes.len());
    assert_eq!(&bytes[4..8], b"ftyp", "an MP4 starts with its ftyp box");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_is_reconstructed_and_downloaded() {
    let srv = Srv::start(|_| {}).await;
    let (chat, group) = chat_with_audio(&srv).await;

    let out = srv.run(&["audio", &chat, "--wait"]).await.ok();
    let path = srv
        .work
        .path()
        .join(srv.key.user_id.to_string())
        .join(&chat)
        .join("reconstructed_audio.mp4");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}: {}", out.stderr));
    assert_mp4(&bytes);
    assert!(
        out.stderr.contains("Saved the audio of chat"),
        "{}",
        out.stderr
    );
    assert!(!path.with_extension("mp4.part").exists());
    // An independent decoder agrees it is about one second of AAC.
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name:format=duration",
            "-of",
            "json",
        ])
        .arg(&path)
        .output();
    if let Ok(probe) = probe {
        let v: Value = serde_json::from_slice(&probe.stdout).unwrap();
        assert_eq!(v["streams"][0]["codec_name"], "aac", "{v}");
        let secs: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
        assert!((0.8..1.5).contains(&secs), "{secs}");
    }

    // Already complete: no --wait needed; -o names the file; --json prints the record.
    let out = srv
        .run(&["audio", &chat, "-o", "mine.mp4", "--json"])
        .await
        .ok();
    assert_eq!(out.json()["status"], "COMPLETE");
    assert_eq!(out.json()["id"], chat.as_str());
    assert_eq!(
        std::fs::read(srv.work.path().join("mine.mp4")).unwrap(),
        bytes
    );
    let piped = srv.run(&["audio", &chat, "-o", "-"]).await.ok();
    assert_eq!(piped.raw, bytes);

    // A group: one file per chat under the -o folder.
    srv.run(&["audio", &group, "--wait", "-o", "grp"])
        .await
        .ok();
    let in_dir = srv
        .work
        .path()
        .join("grp")
        .join(srv.key.user_id.to_string())
        .join(&chat)
        .join("reconstructed_audio.mp4");
    assert_eq!(std::fs::read(in_dir).unwrap(), bytes);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_without_workers_reports_the_queue() {
    let srv = Srv::start(|s| s.audio.workers = 0).await;
    let (chat, _) = chat_with_audio(&srv).await;
    let out = srv.run(&["audio", &chat]).await.ok();
    assert!(out.stderr.contains("is QUEUED"), "{}", out.stderr);
    assert!(out.stderr.contains("--wait"), "{}", out.stderr);
    assert!(!srv.work.path().join(srv.key.user_id.to_string()).exists());
    let out = srv.run(&["audio", &chat, "--json"]).await.ok();
    assert_eq!(out.json()["status"], "QUEUED");
    assert_eq!(out.json()["signed_audio_url"], Value::Null);
    let out = srv.run(&["audio", &chat, "--wait", "--timeout", "1"]).await;
    assert_ne!(out.code, 0);
    let last = out.stderr.trim_end().lines().last().unwrap_or("");
    assert!(
        last.contains("gave up waiting") && last.contains("QUEUED"),
        "{}",
        out.stderr
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_and_exit_non_zero() {
    let srv = Srv::start(|_| {}).await;
    let unknown = Uuid::now_v7().to_string();

    let bad_key = run_in(
        srv.work.path(),
        &["chats", "--base-url", srv.base(), "--api-key", "not-a-key"],
    )
    .await;
    bad_key.fails_with("the API key was rejected (401): ");

    // The key from the environment works too.
    let via_env = tokio::process::Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .args(["chats", "--json"])
        .env("COLLOQUY_BASE_URL", srv.base())
        .env("HUME_API_KEY", &srv.key.api_key)
        .output()
        .await
        .unwrap();
    assert!(via_env.status.success());
    assert_eq!(String::from_utf8_lossy(&via_env.stdout).trim(), "[]");

    for cmd in ["events", "transcript", "emotions", "audio"] {
        srv.run(&[cmd, &unknown])
            .await
            .fails_with(&format!("no chat or chat group with id {unknown} (404)"));
    }
    srv.run(&["groups", &unknown])
        .await
        .fails_with(&format!("no chat group with id {unknown} (404)"));
    srv.run(&["events", "not-a-uuid"])
        .await
        .fails_with("the server answered 400: ");

    let missing = run_in(srv.work.path(), &["chats", "--base-url", srv.base()]).await;
    missing.fails_with("no API key: pass --api-key or set HUME_API_KEY");

    // Nothing listens on a port just released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let down = run_in(
        srv.work.path(),
        &["chats", "--base-url", &base, "--api-key", "k"],
    )
    .await;
    down.fails_with(&format!("could not reach {base}: "));
    assert!(
        down.stderr.to_lowercase().contains("refused"),
        "{}",
        down.stderr
    );

    let bad_url = run_in(
        srv.work.path(),
        &["chats", "--base-url", "localhost:8080", "--api-key", "k"],
    )
    .await;
    bad_url.fails_with("invalid base URL `localhost:8080`");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_completions_cover_the_client_commands() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = run_in(dir.path(), &["completions", shell]).await.ok();
        for word in [
            "chats",
            "transcript",
            "emotions",
            "audio",
            "configs",
            "prompts",
            "tools",
            "--base-url",
            "serve",
        ] {
            assert!(
                out.stdout.contains(word.trim_start_matches('-')),
                "{shell}: {word}"
            );
        }
    }
    let fish = run_in(dir.path(), &["completions", "fish"])
        .await
        .ok()
        .stdout;
    assert!(fish.contains("vtt"), "format values complete");
    assert!(fish.contains("USER_ENDED"), "status values complete");
    let bad = run_in(dir.path(), &["completions", "tcsh"]).await;
    assert_eq!(bad.code, 2);
}

/// The cells of a table row (columns are two or more spaces apart).
fn cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// The config body of `configs create --file` (the JSON `POST /v0/evi/configs` takes).
fn harbour_config(name: &str, tool_id: &str, prompt: &str, inactivity: i64) -> Value {
    json!({
        "name": name,
        "evi_version": "3",
        "version_description": format!("inactivity {inactivity}"),
        "prompt": {"text": prompt},
        "voice": {"provider": "HUME_AI", "name": "Ava Song"},
        "language_model": {"model_provider": "ANTHROPIC", "model_resource": "claude-3-7-sonnet-latest", "temperature": 0.5},
        "tools": [{"id": tool_id}],
        "builtin_tools": [{"name": "hang_up"}],
        "event_messages": {"on_new_chat": {"enabled": true, "text": "Ahoy!"}},
        "timeouts": {"inactivity": {"enabled": true, "duration_secs": inactivity},
                     "max_duration": {"enabled": false, "duration_secs": 900}},
        "webhooks": [{"url": "https://hooks.example.com/evi", "events": ["chat_ended"]}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_prompts_and_tools_are_listed_and_created_from_a_file() {
    use colloquy_client::Resource;
    use colloquy_wire::{ReturnConfig, ReturnUserDefinedTool};

    let srv = Srv::start(|_| {}).await;
    let client = srv.client();
    let params = r#"{"type":"object","properties":{"port":{"type":"string"}},"required":["port"]}"#;
    let tool: ReturnUserDefinedTool = client
        .create_resource(
            Resource::Tools,
            &json!({"name": "get_tide_times", "description": "Tide times for a port",
                    "parameters": params}),
        )
        .await
        .unwrap();
    let _: ReturnUserDefinedTool = client
        .create_version(
            Resource::Tools,
            &tool.id,
            &json!({"description": "Tide times, v1", "parameters": params,
                    "version_description": "clearer"}),
        )
        .await
        .unwrap();
    // Nothing yet: an empty table is a note on stderr, an empty array with --json.
    let none = srv.run(&["configs"]).await.ok();
    assert_eq!(
        (none.stdout.as_str(), none.stderr.trim()),
        ("", "No configs.")
    );
    assert_eq!(srv.run(&["configs", "--json"]).await.ok().json(), json!([]));

    // `configs create --file`: the body as the API takes it; the created config printed.
    let file = srv.work.path().join("harbour.json");
    let prompt_v0 = "You are a harbour guide.\nSpeak of tides and boats.";
    std::fs::write(
        &file,
        harbour_config("Harbour guide", &tool.id, prompt_v0, 300).to_string(),
    )
    .unwrap();
    let created = srv
        .run(&["configs", "create", "--file", "harbour.json"])
        .await
        .ok();
    let harbour_id = created
        .stderr
        .strip_prefix("Created config Harbour guide (")
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("{}", created.stderr))
        .to_string();
    let details = &created.stdout;
    for line in [
        format!("Config:              Harbour guide ({harbour_id})"),
        "Version:             0".to_string(),
        "Voice:               Ava Song (HUME_AI".to_string(),
        "Language model:      ANTHROPIC, claude-3-7-sonnet-latest, temperature 0.5".into(),
        format!(
            "Tools:               get_tide_times ({}) version 1 LATEST: Tide times, v1",
            tool.id
        ),
        "Built-in tools:      hang_up".into(),
        "Greeting:            on: \"Ahoy!\"".into(),
        "Inactivity timeout:  on, after 300 s".into(),
        "Max duration:        off (900 s)".into(),
        "Webhooks:            https://hooks.example.com/evi (chat_ended)".into(),
        "Prompt text:\n    You are a harbour guide.\n    Speak of tides and boats.\n".into(),
    ] {
        assert!(details.contains(&line), "{line:?} not in\n{details}");
    }
    // A second version (through the API), and a second config from the same file as JSON.
    let v1: ReturnConfig = client
        .create_version(
            Resource::Configs,
            &harbour_id,
            &harbour_config("ignored", &tool.id, "Version two of the guide.", 600),
        )
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    std::fs::write(
        &file,
        harbour_config("Lighthouse keeper", &tool.id, "Keep the light.", 120).to_string(),
    )
    .unwrap();
    let second = srv
        .run(&["configs", "create", "--file", "harbour.json", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(second["name"], "Lighthouse keeper");
    assert_eq!(second["version"], 0);
    assert_eq!(second["prompt"]["text"], "Keep the light.");
    assert_eq!(second["timeouts"]["inactivity"]["duration_secs"], 120);

    // The list: the newest version of each, oldest config first.
    let table = srv.run(&["configs"]).await.ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for col in [
        "CONFIG ID",
        "NAME",
        "VERSION",
        "MODIFIED",
        "PROMPT",
        "VOICE",
        "TOOLS",
    ] {
        assert!(lines[0].contains(col), "{}", lines[0]);
    }
    let row = cells(lines[1]);
    assert_eq!(
        row[..3],
        [harbour_id.as_str(), "Harbour guide", "1"],
        "newest version: {table}"
    );
    assert_eq!(
        row[4..],
        [
            "Version two of the guide.",
            "Ava Song",
            "get_tide_times, hang_up"
        ]
    );
    assert_eq!(cells(lines[2])[1..3], ["Lighthouse keeper", "0"], "{table}");
    let listed = srv.run(&["configs", "--json"]).await.ok().json();
    assert_eq!(
        ids(&listed),
        vec![harbour_id.clone(), second["id"].as_str().unwrap().into()]
    );

    // One config: its versions; `--version N`: that version in full.
    let versions = srv.run(&["configs", &harbour_id]).await.ok().stdout;
    let vlines: Vec<&str> = versions.lines().collect();
    assert_eq!(vlines.len(), 3, "{versions}");
    assert!(vlines[0].starts_with("VERSION") && vlines[0].contains("DESCRIPTION"));
    assert!(
        vlines[1].starts_with("0 ") && vlines[1].contains("inactivity 300"),
        "{versions}"
    );
    assert!(
        vlines[2].starts_with("1 ") && vlines[2].contains("inactivity 600"),
        "{versions}"
    );
    let v0 = srv
        .run(&["configs", &harbour_id, "--version", "0", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(v0["version"], 0);
    assert_eq!(v0["prompt"]["text"], prompt_v0);
    let v1_text = srv
        .run(&["configs", &harbour_id, "--version", "1"])
        .await
        .ok()
        .stdout;
    assert!(
        v1_text.contains("Inactivity timeout:  on, after 600 s"),
        "{v1_text}"
    );
    assert!(
        v1_text.contains("    Version two of the guide."),
        "{v1_text}"
    );
    srv.run(&["configs", &harbour_id, "--version", "9"])
        .await
        .fails_with(&format!(
            "no config with id {harbour_id} and version 9 (404)"
        ));
    let unknown = Uuid::new_v4().to_string();
    srv.run(&["configs", &unknown])
        .await
        .fails_with(&format!("no config with id {unknown} (404)"));

    // Prompts: the two made from the configs' `text` (named after them), and their versions.
    let prompts = srv.run(&["prompts", "--json"]).await.ok().json();
    let names: Vec<&str> = prompts
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Harbour guide", "Harbour guide", "Lighthouse keeper"]
    );
    let ptable = srv.run(&["prompts"]).await.ok().stdout;
    assert!(ptable.starts_with("PROMPT ID"), "{ptable}");
    assert!(
        ptable.contains("You are a harbour guide. Speak of tides and boats."),
        "one line: {ptable}"
    );
    let pid = prompts[0]["id"].as_str().unwrap();
    let pversions = srv.run(&["prompts", pid]).await.ok().stdout;
    assert_eq!(pversions.lines().count(), 2, "{pversions}");
    assert!(pversions.starts_with("VERSION"), "{pversions}");

    // Tools: the newest version of each, and every version of one.
    let ttable = srv.run(&["tools"]).await.ok().stdout;
    let tlines: Vec<&str> = ttable.lines().collect();
    assert_eq!(tlines.len(), 2, "{ttable}");
    let row = cells(tlines[1]);
    assert_eq!(
        row[..3],
        [tool.id.as_str(), "get_tide_times", "1"],
        "{ttable}"
    );
    assert_eq!(row[4], "Tide times, v1", "{ttable}");
    let tversions = srv.run(&["tools", &tool.id, "--json"]).await.ok().json();
    let tv: Vec<i64> = tversions
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["version"].as_i64().unwrap())
        .collect();
    assert_eq!(tv, [0, 1]);
    let tvtable = srv.run(&["tools", &tool.id]).await.ok().stdout;
    assert!(
        tvtable.contains(
            r#"{"type":"object","properties":{"port":{"type":"string"}},"required":["port"]}"#
        ),
        "{tvtable}"
    );

    // Refusals: the server's 400 message, naming the field; a file that is not JSON.
    let mut bad = harbour_config("Bad", &tool.id, "x", 29);
    bad["evi_version"] = json!("3");
    std::fs::write(&file, bad.to_string()).unwrap();
    srv.run(&["configs", "create", "--file", "harbour.json"])
        .await
        .fails_with(
            "the server refused the config in harbour.json (400 invalid_parameter): \
             timeouts.inactivity.duration_secs must be between 30 and 1800 inclusive (got 29)",
        );
    std::fs::write(&file, "{\"name\": ").unwrap();
    srv.run(&["configs", "create", "--file", "harbour.json"])
        .await
        .fails_with("harbour.json is not valid JSON");
    srv.run(&["configs", "create", "--file", "missing.json"])
        .await
        .fails_with("could not read missing.json");
    let listed = srv.run(&["configs", "--json"]).await.ok().json();
    assert_eq!(ids(&listed).len(), 2, "nothing stored by the refusals");
    srv.stop().await;
}
