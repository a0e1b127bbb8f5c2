//! Building the router, starting and stopping the server.

use crate::config::{redact_url, Settings};
use crate::error::ApiError;
use crate::limits::AuthFailureLimiter;
use crate::objects::Objects;
use crate::recorder::Recorder;
use crate::signing::UrlSigner;
use crate::state::{AppState, Inner};
use crate::worker::{spawn_workers, WorkerContext};
use crate::{auth, download, limits, openapi, platform, rest, session, telemetry, tts, ui};
use anyhow::Context;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::routing::{get, post};
use axum::serve::{Listener, ListenerExt};
use axum::{Json, Router};
use colloquy_storage::Store;
use colloquy_storage_postgres::{PostgresSettings, PostgresStore};
use colloquy_storage_sqlite::{SqliteSettings, SqliteStore};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use uuid::Uuid;

/// How often a server records that it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// A server silent this long is presumed dead; its `ACTIVE` chats are closed as `ERROR`.
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// How long shutdown waits for sessions to record their end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Opens the backend named by the database URL's scheme and applies its migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let url = settings.effective_database_url();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::open(
            &url,
            &PostgresSettings {
                max_connections: settings.database.postgres_max_connections,
            },
        )
        .await
        .with_context(|| format!("could not open PostgreSQL database {}", redact_url(&url)))?;
        Ok(Arc::new(store))
    } else {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(dir) = Path::new(path).parent() {
                std::fs::create_dir_all(dir).ok();
            }
        }
        let store = SqliteStore::open(
            &url,
            &SqliteSettings {
                synchronous_full: settings.database.sqlite_synchronous == "full",
                max_batch: settings.database.max_batch,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("could not open SQLite database {url}"))?;
        Ok(Arc::new(store))
    }
}

/// `GET /healthz`: 200 once the server accepts requests.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi::document())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no endpoint at {}; GET /openapi.json lists them",
        uri.path()
    ))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{method} is not supported on {}; GET /openapi.json lists the methods",
        uri.path()
    ))
}

/// The whole HTTP + WebSocket application.
pub fn build_router(state: AppState) -> Router {
    // Routes that take credentials, behind the failed-authentication limit.
    let authenticated = Router::new()
        .route("/oauth2-cc/token", post(auth::token))
        .route("/v0/evi/chat", get(session::chat_socket))
        .route("/v0/assistant/chat", get(session::chat_socket))
        .route(
            "/v0/evi/chat/{chat_id}/send",
            post(crate::control::send::send),
        )
        .route(
            "/v0/evi/chat/{chat_id}/connect",
            get(crate::control::observe::connect),
        )
        .route("/v0/evi/chats", get(rest::list_chats))
        .route(
            "/v0/evi/chats/{id}",
            get(rest::list_chat_events).delete(rest::delete_chat),
        )
        .route("/v0/evi/chats/{id}/audio", get(rest::get_chat_audio))
        .route("/v0/evi/chat_groups", get(rest::list_chat_groups))
        .route(
            "/v0/evi/chat_groups/{id}",
            get(rest::get_chat_group).delete(rest::delete_chat_group),
        )
        .route(
            "/v0/evi/chat_groups/{id}/events",
            get(rest::list_chat_group_events),
        )
        .route(
            "/v0/evi/chat_groups/{id}/audio",
            get(rest::get_chat_group_audio),
        )
        .merge(platform::router())
        .merge(crate::webhooks::routes::router())
        .merge(tts::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::limit_auth_failures,
        ));
    Router::new()
        .route("/", get(ui::home))
        .route("/ui/", get(ui::home))
        .nest("/ui", ui::router())
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi_json))
        .merge(authenticated)
        .route("/v0/evi/audio/{*key}", get(download::download))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(telemetry::request_span))
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// Serves `app` on `listener` over HTTP/1.1 until `shutdown` is cancelled, then waits for
/// the open connections to finish their requests.
///
/// Like `axum::serve`, plus what it cannot be configured for: a client must send a request's
/// headers within `header_read_timeout` of the connection opening or of the previous response
/// (`None`: no limit), so slow-header clients (slowloris) cannot hold connections open. The
/// timeout ends once the headers are in: request bodies, long responses and upgraded
/// WebSockets are not limited by it. Each request carries the peer's
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Option<Duration>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // No Nagle: socket replies are small frames written back to back (assistant_message
    // then assistant_end), which Nagle would hold for the peer's delayed ACK (~40 ms).
    let mut listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connections = TaskTracker::new();
    loop {
        // `accept` retries transient errors (e.g. too many open files) itself.
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request.map(Body::new))
        });
        let http = http.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let connection = http
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::trace!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// A running server.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// Shared state (store, settings).
    pub state: AppState,
    tracker: TaskTracker,
    task: JoinHandle<std::io::Result<()>>,
    heartbeat: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    _lock: File,
}

impl RunningServer {
    /// `http://<addr>` or the configured public URL.
    pub fn base_url(&self) -> String {
        self.state.public_base.clone()
    }

    /// Ends every session (recording its end), stops accepting requests, and releases the
    /// instance.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions did not end within the shutdown grace period");
        }
        let _ = self.task.await;
        self.heartbeat.abort();
        // A job cut short here is retried by any worker once its lease runs out.
        for w in &self.workers {
            w.abort();
        }
        if let Err(e) = self
            .state
            .store
            .remove_instance(self.state.instance_id)
            .await
        {
            tracing::warn!(error = %e, "could not remove the instance record");
        }
    }

    /// The token whose cancellation stops the server (sessions, HTTP, workers).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }
}

/// Locks the data dir so two servers never share it, and returns the previous instance id
/// recorded there (that process is known to be dead since the lock was free).
fn lock_data_dir(dir: &Path) -> anyhow::Result<(File, Option<Uuid>)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("could not create data dir {}", dir.display()))?;
    let lock = File::create(dir.join("colloquy.lock"))
        .with_context(|| format!("could not create the lock file in {}", dir.display()))?;
    lock.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another colloquy process is using data dir {}; give each server its own --data-dir",
            dir.display()
        )
    })?;
    let previous = std::fs::read_to_string(dir.join("instance"))
        .ok()
        .and_then(|s| Uuid::parse_str(s.trim()).ok());
    Ok((lock, previous))
}

/// Starts serving on `listener`: opens the store, recovers from a crash, starts the writers
/// and the heartbeat.
pub async fn start(settings: Settings, listener: TcpListener) -> anyhow::Result<RunningServer> {
    let (lock, previous) = lock_data_dir(&settings.data_dir)?;
    let store = open_store(&settings).await?;
    let instance_id = Uuid::new_v4();
    if let Some(prev) = previous {
        store.remove_instance(prev).await?;
    }
    std::fs::write(settings.data_dir.join("instance"), instance_id.to_string())
        .context("could not record the instance id in the data dir")?;
    let now = crate::clock::now_ms();
    store.heartbeat_instance(instance_id, now).await?;
    let closed = store
        .close_orphaned_chats(now - STALE_AFTER.as_millis() as i64)
        .await?;
    if closed > 0 {
        tracing::warn!(
            closed,
            "closed chats left ACTIVE by a crashed server as ERROR"
        );
    }
    let recorder = Recorder::start(store.clone(), settings.database.max_batch);
    let objects = Objects::open(&settings.storage, &settings.data_dir)?;
    let signer = UrlSigner::load_or_create(&settings.storage, &settings.data_dir)?;
    let addr = listener.local_addr()?;
    let public_base = settings
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{addr}"));
    let (pipeline, client_voice) = crate::engine::pipeline::turn::shared_engines(&settings.engine);
    let auth_failures_per_minute = settings.limits.auth_failures_per_minute;
    let webhook_settings = settings.webhooks.clone();
    // The control plane reaches this server's chats, and through the database those of
    // other servers sharing it.
    let live = Arc::new(crate::live::LiveSessions::default());
    let remote = crate::live::remote::Remote::start(store.clone(), instance_id, live.clone()).await;
    let tts = Arc::new(crate::tts::TtsHandle::new(&settings));
    let state = AppState::new(Inner {
        store: store.clone(),
        recorder,
        settings,
        instance_id,
        shutdown: CancellationToken::new(),
        sessions: TaskTracker::new(),
        objects,
        signer,
        public_base,
        jobs_enqueued: Arc::new(Notify::new()),
        pipeline,
        client_voice,
        account_limits: Arc::default(),
        auth_failures: AuthFailureLimiter::new(auth_failures_per_minute),
        webhooks: crate::webhooks::Webhooks::new(&webhook_settings),
        live,
        remote,
        tts,
    });
    let heartbeat = tokio::spawn(heartbeat(store.clone(), instance_id));
    let mut workers = spawn_workers(
        WorkerContext {
            store,
            objects: state.objects.clone(),
            audio: state.settings.audio.clone(),
            wake: state.jobs_enqueued.clone(),
            shutdown: state.shutdown.clone(),
        },
        state.settings.audio.workers,
    );
    // Chats closed by the crash recovery above may have enqueued `chat_ended`.
    workers.push(crate::webhooks::spawn_delivery(
        crate::webhooks::DeliveryContext {
            store: state.store.clone(),
            hooks: state.webhooks.clone(),
            shutdown: state.shutdown.clone(),
        },
    ));
    let tracker = state.sessions.clone();
    let app = build_router(state.clone());
    let token = state.shutdown.clone();
    let header_read_timeout = match state.settings.limits.header_read_timeout_secs {
        0 => None,
        secs => Some(Duration::from_secs(secs)),
    };
    let task = tokio::spawn(serve(listener, app, header_read_timeout, token));
    tracing::info!(%addr, backend = state.store.backend(), %instance_id, "listening");
    Ok(RunningServer {
        addr,
        state,
        tracker,
        task,
        heartbeat,
        workers,
        _lock: lock,
    })
}

async fn heartbeat(store: Arc<dyn Store>, instance_id: Uuid) {
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        tick.tick().await;
        let now = crate::clock::now_ms();
        if let Err(e) = store.heartbeat_instance(instance_id, now).await {
            tracing::warn!(error = %e, "heartbeat failed");
            continue;
        }
        match store
            .close_orphaned_chats(now - STALE_AFTER.as_millis() as i64)
            .await
        {
            Ok(0) => {}
            // (Their `chat_ended` webhooks are picked up at the worker's next poll.)
            Ok(n) => tracing::warn!(
                closed = n,
                "closed chats of a server that stopped responding"
            ),
            Err(e) => tracing::warn!(error = %e, "orphaned-chat sweep failed"),
        }
    }
}
