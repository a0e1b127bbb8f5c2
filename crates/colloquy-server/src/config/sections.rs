//! The plain sections of the settings: `[limits]`, `[chat]`, `[database]`, `[storage]`,
//! `[audio]` and `[log]`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `[limits]`: protections against hostile or runaway clients. On by default with generous
/// values; the per-account limits are off (0) unless set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Failed authentication attempts one client address may make per minute; past that,
    /// its failing attempts are answered with 429 (and `Retry-After`) instead of 401 until
    /// the minute window has room again. Correct credentials keep working from every
    /// address, that one included. 0 turns the limit off.
    pub auth_failures_per_minute: u32,
    /// Seconds a client has to send a request's headers once the connection is open (or
    /// between two requests of a kept-alive connection); then the connection is closed.
    /// Upgraded chat sockets are not affected.
    pub header_read_timeout_secs: u64,
    /// Most chats one account may have open at once (all servers sharing the database);
    /// 0: no limit. A chat over the limit is refused with `E0203`.
    pub max_concurrent_chats_per_account: u32,
    /// Most client messages per second one account may send over all its chats on one
    /// server; a message over the limit is refused with `E0105` and dropped. 0: no limit.
    pub max_messages_per_second_per_account: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            auth_failures_per_minute: 60,
            header_read_timeout_secs: 10,
            max_concurrent_chats_per_account: 0,
            max_messages_per_second_per_account: 0,
        }
    }
}

/// Where audio objects live: `<data_dir>/objects` unless `bucket` is set (S3-compatible).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// S3 bucket; setting it selects the S3 store.
    pub bucket: Option<String>,
    /// S3 endpoint URL, for S3-compatible servers (MinIO, Ceph, moto…).
    pub endpoint: Option<String>,
    /// S3 region (default `us-east-1`).
    pub region: Option<String>,
    /// S3 access key id.
    pub access_key_id: Option<String>,
    /// S3 secret access key.
    pub secret_access_key: Option<String>,
    /// Secret for signing local download URLs; default: generated once into
    /// `<data_dir>/signing.key`. Servers sharing one database must share it.
    pub signing_secret: Option<String>,
}

impl fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("StorageSettings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("signing_secret", &hidden(&self.signing_secret))
            .finish()
    }
}

/// Audio capture and reconstruction.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioSettings {
    /// Reconstruction workers inside `colloquy serve` (0: only `colloquy worker` processes).
    pub workers: usize,
    /// Put the user on the left channel and the assistant on the right.
    pub stereo_split: bool,
    /// A worker's claim on a job lasts this long unless renewed (it renews every third).
    pub job_lease_secs: u64,
    /// Attempts before a job whose worker keeps dying ends as `ERROR`.
    pub job_max_attempts: u32,
}

impl Default for AudioSettings {
    fn default() -> Self {
        Self {
            workers: 1,
            stereo_split: false,
            job_lease_secs: 30,
            job_max_attempts: 3,
        }
    }
}

/// Chat session limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatSettings {
    /// End a chat as `INACTIVITY_TIMEOUT` after this long without a client message.
    pub inactivity_timeout_secs: u64,
    /// End a chat as `MAX_DURATION_TIMEOUT` after this long.
    pub max_duration_secs: u64,
    /// Largest accepted socket message; bigger ones get an `error` and are dropped.
    pub max_message_bytes: usize,
    /// Seconds a send to the client may make no progress (a client that stopped reading)
    /// before the chat ends as `ERROR` (reason `client_not_reading`).
    pub send_timeout_secs: u64,
    /// After a config's `on_inactivity_timeout` message is said, how long the user has to
    /// answer before the chat ends as `INACTIVITY_TIMEOUT` (Hume's EVI waits 15 s).
    pub inactivity_grace_secs: u64,
}

/// Database tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// SQLite `synchronous`: `full` (fsync each commit) or `normal`.
    pub sqlite_synchronous: String,
    /// Connections of the PostgreSQL pool.
    pub postgres_max_connections: u32,
    /// Most operations group-committed in one transaction.
    pub max_batch: usize,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// `tracing` filter, e.g. `info` or `colloquy_server=debug,info`.
    pub filter: String,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            inactivity_timeout_secs: 120,
            max_duration_secs: 1800,
            max_message_bytes: 16 * 1024 * 1024,
            send_timeout_secs: 10,
            inactivity_grace_secs: 15,
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            sqlite_synchronous: "full".into(),
            postgres_max_connections: 16,
            max_batch: 512,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

/// `[webhooks]`: delivery of chat webhooks, and server-wide subscriptions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Refuse targets on loopback, private, link-local and unique-local networks (for
    /// multi-tenant servers); a refused delivery is marked failed at once.
    pub deny_private_targets: bool,
    /// Seconds an attempt may take (connect to the end of the response).
    pub timeout_secs: u64,
    /// Seconds a delivery is retried after it was written (or retried by hand), then it is
    /// marked failed.
    pub retry_for_secs: u64,
    /// Deliveries one process has in flight at once.
    pub max_in_flight: usize,
    /// Seconds between two looks at the outbox when nothing wakes the worker (deliveries
    /// written by other processes, retries coming due).
    pub poll_interval_ms: u64,
    /// Server-wide subscriptions: every chat of every account (`[[webhooks.subscriptions]]`).
    pub subscriptions: Vec<ServerWebhook>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            deny_private_targets: false,
            timeout_secs: 10,
            retry_for_secs: 24 * 3600,
            max_in_flight: 64,
            poll_interval_ms: 1000,
            subscriptions: Vec::new(),
        }
    }
}

/// One `[[webhooks.subscriptions]]` entry.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerWebhook {
    /// Target (http or https).
    pub url: String,
    /// `chat_started`, `chat_ended`, `tool_call`.
    pub events: Vec<String>,
    /// The key its deliveries are signed with (instead of the account's).
    pub signing_key: String,
}

impl fmt::Debug for ServerWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerWebhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("signing_key", &"***")
            .finish()
    }
}
