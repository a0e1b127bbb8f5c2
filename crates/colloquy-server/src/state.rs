//! State shared by every request and session.

use crate::config::Settings;
use crate::engine::pipeline::turn::Services;
use crate::limits::AuthFailureLimiter;
use crate::objects::Objects;
use crate::recorder::Recorder;
use crate::signing::UrlSigner;
use colloquy_speech::Voice;
use colloquy_storage::Store;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Cheap-to-clone handle on the server's shared state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] holds.
pub struct Inner {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Group-commit writer for session events.
    pub recorder: Recorder,
    /// Settings in effect.
    pub settings: Settings,
    /// This process's instance id (owner of its sessions' chats).
    pub instance_id: Uuid,
    /// Cancelled when the server shuts down; sessions end themselves.
    pub shutdown: CancellationToken,
    /// Running chat sessions, awaited at shutdown.
    pub sessions: TaskTracker,
    /// Object store for captured audio and reconstructions.
    pub objects: Objects,
    /// Signs local download URLs.
    pub signer: UrlSigner,
    /// Base URL clients reach this server at (for links).
    pub public_base: String,
    /// Wakes in-process reconstruction workers when a job is enqueued.
    pub jobs_enqueued: Arc<Notify>,
    /// The pipeline engine's services, shared by its chats (`None` when no key uses it).
    pub pipeline: Option<Services>,
    /// The voice speaking `assistant_input` in client mode (`None`: text only).
    pub client_voice: Option<Arc<dyn Voice>>,
    /// Per-account message rate and open chats of this server (`[limits]`).
    pub account_limits: Arc<crate::limits::AccountLimits>,
    /// Failed authentications per client address (`[limits] auth_failures_per_minute`).
    pub auth_failures: AuthFailureLimiter,
    /// Chat webhooks: settings, the delivery worker's bell, the HTTP client.
    pub webhooks: crate::webhooks::Webhooks,
    /// The chats running on this server, for the control plane.
    pub live: Arc<crate::live::LiveSessions>,
    /// The chats of other servers sharing the database (`None` on SQLite).
    pub remote: Option<Arc<crate::live::remote::Remote>>,
    /// Text to speech: the voice library and engines (`crate::tts`).
    pub tts: Arc<crate::tts::TtsHandle>,
}

impl AppState {
    /// Wraps the parts.
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
