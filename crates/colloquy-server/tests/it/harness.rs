//! Starts the real server on 127.0.0.1:0 against SQLite (temp dir) or PostgreSQL (a
//! throwaway database) and gives tests a socket client and a REST client.

use colloquy_server::keys::{create_account_key, CreatedKey};
use colloquy_server::{RunningServer, Settings};
use colloquy_storage_postgres::testing::TestDatabase;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::future::Future;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub http: reqwest::Client,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(
        backend: Backend,
        tweak: impl FnOnce(&mut Settings),
    ) -> Option<(Self, Option<TestDatabase>)> {
        let dir = tempfile::tempdir().unwrap();
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDatabase::create().await?),
        };
        let mut settings = Settings {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            database_url: db.as_ref().map(|d| d.url().to_string()),
            ..Settings::default()
        };
        tweak(&mut settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = colloquy_server::start(settings, listener).await.unwrap();
        let base = server.base_url();
        Some((
            TestServer {
                server: Some(server),
                http: reqwest::Client::new(),
                base,
                dir,
            },
            db,
        ))
    }

    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    pub async fn key(&self, retention: bool) -> CreatedKey {
        create_account_key(
            self.running().state.store.as_ref(),
            Some("test".into()),
            retention,
        )
        .await
        .unwrap()
    }

    /// The stored chat of a session, from its `chat_metadata` message.
    pub async fn stored_chat(
        &self,
        key: &CreatedKey,
        meta: &Value,
    ) -> colloquy_storage::ChatRecord {
        let chat_id = uuid::Uuid::parse_str(meta["chat_id"].as_str().unwrap()).unwrap();
        self.running()
            .state
            .store
            .get_chat(key.user_id, chat_id)
            .await
            .unwrap()
            .expect("the chat is stored")
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!(
            "{}/v0/evi/chat?{query}",
            self.base.replace("http://", "ws://")
        )
    }

    /// Connects with the key in the header; returns the socket and `chat_metadata`.
    pub async fn connect(&self, key: &str, query: &str) -> (Ws, Value) {
        let mut req = self.ws_url(query).into_client_request().unwrap();
        req.headers_mut()
            .insert("X-Hume-Api-Key", key.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        let meta = recv_json(&mut ws).await;
        assert_eq!(meta["type"], "chat_metadata", "first message: {meta}");
        (ws, meta)
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("X-Hume-Api-Key", key)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// `DELETE path` with the key; status and JSON body (`Null` when empty).
    pub async fn delete(&self, key: &str, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .delete(format!("{}{path}", self.base))
            .header("X-Hume-Api-Key", key)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Every event of a chat, oldest first, paging with `page_size`.
    pub async fn all_events(&self, key: &str, chat_id: &str, page_size: u32) -> Vec<Value> {
        let mut out = Vec::new();
        for page in 0.. {
            let (status, body) = self
                .get(
                    key,
                    &format!("/v0/evi/chats/{chat_id}?page_size={page_size}&page_number={page}"),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let items = body["events_page"].as_array().unwrap().clone();
            if items.is_empty() {
                break;
            }
            out.extend(items);
        }
        out
    }

    /// Polls `GET /v0/evi/chats/{id}/audio` (up to 15 s) until it leaves QUEUED / IN_PROGRESS;
    /// the last body.
    pub async fn audio_when_done(&self, key: &str, chat_id: &str) -> Value {
        let mut rec = Value::Null;
        for _ in 0..150 {
            rec = self
                .get(key, &format!("/v0/evi/chats/{chat_id}/audio"))
                .await
                .1;
            if rec["status"] != "QUEUED" && rec["status"] != "IN_PROGRESS" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rec
    }

    pub async fn stop(mut self, db: Option<TestDatabase>) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        if let Some(db) = db {
            db.drop_database().await;
        }
    }
}

/// Runs `body` against a fresh server on each backend (PostgreSQL is skipped with a note when
/// unreachable, unless `COLLOQUY_TEST_POSTGRES=required`).
pub async fn on_each_backend<F, Fut>(tweak: fn(&mut Settings), body: F)
where
    F: Fn(TestServer) -> Fut,
    Fut: Future<Output = TestServer>,
{
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((server, db)) = TestServer::start(backend, tweak).await else {
            continue;
        };
        let server = body(server).await;
        server.stop(db).await;
    }
}

pub async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Reads for up to `wait`; the close code if the server closed the socket meanwhile.
pub async fn recv_until_close(ws: &mut Ws, wait: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Close(c)))) => {
                return Some(c.map(|c| u16::from(c.code)).unwrap_or(1005))
            }
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return Some(1006),
        }
    }
}

/// Next text message as JSON (fails after 10 s).
pub async fn recv_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("socket closed")
            .expect("socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(c) => panic!("socket closed: {c:?}"),
            _ => continue,
        }
    }
}

/// Waits for the server's close frame; returns its code.
pub async fn recv_close(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(c)))) => return c.map(|c| u16::from(c.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return None,
            Err(_) => panic!("timed out waiting for close"),
        }
    }
}

/// The `type` of each event.
pub fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// `ms` of a sine tone as 16-bit little-endian mono PCM.
pub fn tone(freq: f64, rate: u32, ms: u32) -> Vec<u8> {
    let n = rate as usize * ms as usize / 1000;
    (0..n)
        .flat_map(|i| {
            let v = (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() * 0.5;
            ((v * i16::MAX as f64) as i16).to_le_bytes()
        })
        .collect()
}

/// A mono 16-bit WAV file around `pcm`.
pub fn wav(pcm: &[u8], rate: u32) -> Vec<u8> {
    let mut w = Vec::with_capacity(44 + pcm.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    w.extend_from_slice(pcm);
    w
}

/// `ms` of a sine tone at 0.4 of full scale, as a WAV file (what the fake speech services
/// answer).
pub fn tone_wav(freq: f64, rate: u32, ms: u32) -> Vec<u8> {
    let samples = (0..rate * ms / 1000)
        .map(|i| {
            let v = (2.0 * std::f64::consts::PI * freq * f64::from(i) / f64::from(rate)).sin();
            (v * 0.4 * f64::from(i16::MAX)) as i16
        })
        .collect();
    colloquy_speech::encode_wav(&colloquy_speech::Pcm::new(samples, rate))
}

/// The audio of a base64 WAV chunk (`audio_output` and `audio_input` messages' `data`).
pub fn wav_chunk_pcm(msg: &Value) -> colloquy_speech::Pcm {
    let wav = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        msg["data"].as_str().unwrap(),
    )
    .expect("base64 data");
    colloquy_speech::decode_wav(&wav).expect("a WAV chunk")
}

/// Reads the answer to an `assistant_input` with `text`: its `assistant_message`, the
/// `audio_output` chunks of its speech (each checked: the message's `id`, `index` 0, 1, …;
/// with the default configuration the built-in voice speaks), up to `assistant_end`.
/// Returns the message and the decoded chunks.
pub async fn recv_answer(ws: &mut Ws, text: &str) -> (Value, Vec<colloquy_speech::Pcm>) {
    let message = recv_json(ws).await;
    assert_eq!(message["type"], "assistant_message", "{message}");
    assert_eq!(message["message"]["content"], text, "{message}");
    let mut chunks = Vec::new();
    loop {
        let m = recv_json(ws).await;
        if m == serde_json::json!({"type": "assistant_end"}) {
            return (message, chunks);
        }
        assert_eq!(m["type"], "audio_output", "{m}");
        assert_eq!(m["id"], message["id"], "{m}");
        assert_eq!(m["index"], chunks.len(), "{m}");
        chunks.push(wav_chunk_pcm(&m));
    }
}
