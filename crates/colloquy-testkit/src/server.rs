//! The real server on 127.0.0.1:0, in the test's runtime, against SQLite (a temp dir) or
//! PostgreSQL (a throwaway database), with keys, a chat socket and REST calls.

use crate::http::{delete_json, get_json};
use crate::socket::{keyed_request, recv_json, Ws};
use colloquy_server::keys::{create_account_key, CreatedKey};
use colloquy_server::{RunningServer, Settings};
use colloquy_storage_postgres::testing::TestDatabase;
use serde_json::Value;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

/// Where a test server keeps its chats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the server's temp data dir.
    Sqlite,
    /// A throwaway PostgreSQL database ([`TestDatabase`]).
    Postgres,
}

/// Settings of a server on 127.0.0.1:0 with its data in `data_dir` and, when given, its
/// chats in the database at `database_url` (else SQLite in `data_dir`); the rest default.
pub fn settings(data_dir: &Path, database_url: Option<&str>) -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        database_url: database_url.map(str::to_string),
        ..Settings::default()
    }
}

/// Starts the server with `settings` on a fresh listener on 127.0.0.1:0 (its `listen` is
/// not used).
pub async fn start_server(settings: Settings) -> anyhow::Result<RunningServer> {
    start_on_port_0(settings, false).await
}

/// [`start_server`]; with `listener_nodelay`, `TCP_NODELAY` is set on the listening socket,
/// which Linux copies to every accepted connection (an experiment of the benchmarks: the
/// shipped server leaves Nagle's algorithm on).
pub(crate) async fn start_on_port_0(
    settings: Settings,
    listener_nodelay: bool,
) -> anyhow::Result<RunningServer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    if listener_nodelay {
        set_nodelay(&listener)?;
    }
    colloquy_server::start(settings, listener).await
}

/// Sets `TCP_NODELAY` on a socket.
fn set_nodelay(socket: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid fd and a pointer to a c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A server started by [`TestServer::start`]; stop it with [`TestServer::stop`].
pub struct TestServer {
    /// The server (`None` once stopped).
    pub server: Option<RunningServer>,
    /// A client for REST calls.
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The data dir.
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server on `backend` (settings from [`settings`], then `tweak`); also the
    /// database to drop after it on PostgreSQL. `None` when PostgreSQL is unreachable and
    /// `COLLOQUY_TEST_POSTGRES` is not `required` (a note is on stderr).
    pub async fn start(
        backend: Backend,
        tweak: impl FnOnce(&mut Settings),
    ) -> Option<(Self, Option<TestDatabase>)> {
        let dir = tempfile::tempdir().unwrap();
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDatabase::create().await?),
        };
        let mut settings = settings(dir.path(), db.as_ref().map(TestDatabase::url));
        tweak(&mut settings);
        let server = start_server(settings).await.unwrap();
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

    /// Starts a server on SQLite (see [`TestServer::start`]).
    pub async fn sqlite(tweak: impl FnOnce(&mut Settings)) -> Self {
        let (server, _) = Self::start(Backend::Sqlite, tweak)
            .await
            .expect("SQLite needs no server");
        server
    }

    /// The running server.
    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    /// A new account with a key named `test`, with or without retention.
    pub async fn key(&self, retention: bool) -> CreatedKey {
        self.key_named("test", retention).await
    }

    /// A new account with a key named `name`, with or without retention.
    pub async fn key_named(&self, name: &str, retention: bool) -> CreatedKey {
        create_account_key(
            self.running().state.store.as_ref(),
            Some(name.into()),
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

    /// `ws://127.0.0.1:PORT/v0/evi/chat?{query}`.
    pub fn ws_url(&self, query: &str) -> String {
        format!(
            "{}/v0/evi/chat?{query}",
            self.base.replace("http://", "ws://")
        )
    }

    /// Connects with the key in the header; returns the socket and `chat_metadata`.
    pub async fn connect(&self, key: &str, query: &str) -> (Ws, Value) {
        let req = keyed_request(&self.ws_url(query), key).unwrap();
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        let meta = recv_json(&mut ws).await;
        assert_eq!(meta["type"], "chat_metadata", "first message: {meta}");
        (ws, meta)
    }

    /// `GET path` with the key; status and JSON body (`Null` when empty).
    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        get_json(&self.http, &self.base, key, path).await.unwrap()
    }

    /// `DELETE path` with the key; status and JSON body (`Null` when empty).
    pub async fn delete(&self, key: &str, path: &str) -> (u16, Value) {
        delete_json(&self.http, &self.base, key, path)
            .await
            .unwrap()
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

    /// Shuts the server down (sessions record their end), then drops `db`.
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
