//! Settings: defaults < TOML file < `COLLOQUY_*` environment < command-line flags.

use colloquy_speech::ServiceConfig;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Every setting of `colloquy serve`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on (`host:port`; port 0 picks a free port).
    pub listen: String,
    /// Folder for the SQLite database, the instance lock and local audio.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: `colloquy.db` inside `data_dir`.
    pub database_url: Option<String>,
    /// Base URL printed at start and used in signed links; default `http://<listen>`.
    pub public_url: Option<String>,
    /// Chat session limits.
    pub chat: ChatSettings,
    /// Database tuning.
    pub database: DatabaseSettings,
    /// Object store for audio.
    pub storage: StorageSettings,
    /// Audio capture and reconstruction.
    pub audio: AudioSettings,
    /// Logging.
    pub log: LogSettings,
    /// What answers in a chat: the client itself (default) or an upstream EVI server.
    pub engine: EngineSettings,
    /// Abuse limits: failed authentication, slow clients, per-account chats and messages.
    pub limits: LimitSettings,
}

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

/// Which speech engine answers a chat (see `docs/engines.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineMode {
    /// The client drives the chat (`user_input`, `assistant_input`…); nothing else answers.
    #[default]
    Client,
    /// Every chat is relayed to an upstream EVI-compatible socket (`[engine.relay]`).
    Relay,
    /// Colloquy answers itself through OpenAI-compatible services (`[engine.pipeline]`).
    Pipeline,
}

impl EngineMode {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineMode::Client => "client",
            EngineMode::Relay => "relay",
            EngineMode::Pipeline => "pipeline",
        }
    }
}

/// `[engine]`: the mode for every chat, and overrides per API key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// Mode of chats opened with a key that has no override.
    pub mode: EngineMode,
    /// The upstream used by `relay` mode.
    pub relay: RelaySettings,
    /// The services used by `pipeline` mode.
    pub pipeline: PipelineSettings,
    /// Emotion scores of the user's speech in `pipeline` mode (optional).
    pub expression: ExpressionSettings,
    /// Client-driven mode: whether `assistant_input` is spoken.
    pub client: ClientSettings,
    /// Per-key overrides, by API key prefix (as shown by `colloquy keys list`; compared
    /// case-insensitively; the longest matching prefix wins).
    pub keys: BTreeMap<String, KeyEngineSettings>,
}

/// `[engine.keys."<prefix>"]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEngineSettings {
    /// Mode of chats opened with a matching key.
    pub mode: EngineMode,
}

/// `[engine.relay]`: the upstream EVI-compatible chat socket.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// `ws://` or `wss://` URL of the upstream chat socket, e.g.
    /// `wss://api.hume.ai/v0/evi/chat`.
    pub url: Option<String>,
    /// Upstream API key, sent as the `X-Hume-Api-Key` header.
    pub api_key: Option<String>,
    /// Upstream access token, sent as the `access_token` query parameter.
    pub access_token: Option<String>,
    /// Seconds to open the upstream socket and receive its `chat_metadata`.
    pub connect_timeout_secs: u64,
    /// Seconds the upstream may stay completely silent (not even answering a ping) before
    /// the chat ends as `ERROR`.
    pub idle_timeout_secs: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            url: None,
            api_key: None,
            access_token: None,
            connect_timeout_secs: 10,
            idle_timeout_secs: 30,
        }
    }
}

impl fmt::Debug for RelaySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("RelaySettings")
            .field("url", &self.url)
            .field("api_key", &hidden(&self.api_key))
            .field("access_token", &hidden(&self.access_token))
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("idle_timeout_secs", &self.idle_timeout_secs)
            .finish()
    }
}

/// `[engine.client]`: the client-driven mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientSettings {
    /// Speak `assistant_input` (`audio_output` chunks, recorded as the assistant's voice)
    /// with the pipeline's voice: `[engine.pipeline.tts]`, else the built-in espeak-ng
    /// voice. Default `true`; without a voice the answer is text only.
    pub speak: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self { speak: true }
    }
}

pub use colloquy_speech::expression::ExpressionSettings;

/// `[engine.pipeline]`: OpenAI-compatible services that answer the chat.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSettings {
    /// Speech to text (`/audio/transcriptions`); without it spoken turns are not answered.
    pub asr: Option<ServiceConfig>,
    /// The language model (streamed `/chat/completions`); required for `pipeline` mode.
    pub llm: Option<ServiceConfig>,
    /// Text to speech (`/audio/speech`); without it answers are spoken by the built-in
    /// espeak-ng voice when the system has it, else they are text only.
    pub tts: Option<ServiceConfig>,
    /// Voice name sent to the TTS service.
    pub tts_voice: String,
    /// System prompt used when the client sends none (`session_settings.system_prompt`).
    pub system_prompt: Option<String>,
    /// Earlier events of a resumed chat group given to the model as history.
    pub event_limit: usize,
    /// Milliseconds of silence that end a spoken turn.
    pub vad_silence_ms: u32,
    /// Voiced milliseconds before speech counts as a turn (and interrupts the assistant).
    pub vad_min_speech_ms: u32,
    /// Voice-activity threshold, 0–1 (higher: fewer false starts in noise).
    pub vad_threshold: f32,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            asr: None,
            llm: None,
            tts: None,
            tts_voice: "alloy".into(),
            system_prompt: None,
            event_limit: colloquy_speech::prompt::DEFAULT_EVENT_LIMIT,
            vad_silence_ms: 600,
            vad_min_speech_ms: 160,
            vad_threshold: 0.5,
        }
    }
}

impl EngineSettings {
    /// The mode for a chat opened with the key whose prefix is `key_prefix` (`None` when
    /// unknown): the override with the longest matching prefix, else `mode`.
    pub fn mode_for(&self, key_prefix: Option<&str>) -> EngineMode {
        let Some(prefix) = key_prefix else {
            return self.mode;
        };
        let prefix = prefix.to_ascii_lowercase();
        self.keys
            .iter()
            .filter(|(k, _)| !k.is_empty() && prefix.starts_with(&k.to_ascii_lowercase()))
            .max_by_key(|(k, _)| k.len())
            .map_or(self.mode, |(_, o)| o.mode)
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

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./colloquy-data"),
            database_url: None,
            public_url: None,
            chat: ChatSettings::default(),
            database: DatabaseSettings::default(),
            storage: StorageSettings::default(),
            audio: AudioSettings::default(),
            log: LogSettings::default(),
            engine: EngineSettings::default(),
            limits: LimitSettings::default(),
        }
    }
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            inactivity_timeout_secs: 120,
            max_duration_secs: 1800,
            max_message_bytes: 16 * 1024 * 1024,
            send_timeout_secs: 10,
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

/// Values given as command-line flags; `None` leaves the lower layers in charge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlagOverrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named config file does not exist.
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    /// A layer holds an invalid value.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads the layers in order: defaults, `config_file` (TOML), `COLLOQUY_*` environment
    /// variables (nested keys with `__`, e.g. `COLLOQUY_CHAT__MAX_DURATION_SECS`), then flags.
    pub fn load(config_file: Option<&Path>, flags: &FlagOverrides) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = config_file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig
            .merge(
                Env::prefixed("COLLOQUY_")
                    .ignore(&["CONFIG", "BASE_URL", "TEST_POSTGRES", "TEST_POSTGRES_URL"])
                    .split("__"),
            )
            .merge(Serialized::defaults(flags));
        let settings: Settings = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.chat.inactivity_timeout_secs == 0 {
            return bad("chat.inactivity_timeout_secs must be at least 1".into());
        }
        if self.chat.max_duration_secs == 0 {
            return bad("chat.max_duration_secs must be at least 1".into());
        }
        if self.chat.send_timeout_secs == 0 {
            return bad("chat.send_timeout_secs must be at least 1".into());
        }
        if self.limits.header_read_timeout_secs == 0 {
            return bad("limits.header_read_timeout_secs must be at least 1".into());
        }
        if self.chat.max_message_bytes < 1024 {
            return bad("chat.max_message_bytes must be at least 1024".into());
        }
        if !["full", "normal"].contains(&self.database.sqlite_synchronous.as_str()) {
            return bad(format!(
                "database.sqlite_synchronous must be `full` or `normal`, not `{}`",
                self.database.sqlite_synchronous
            ));
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return bad(format!(
                "log.format must be `text` or `json`, not `{}`",
                self.log.format
            ));
        }
        if self.audio.job_lease_secs < 3 {
            return bad("audio.job_lease_secs must be at least 3".into());
        }
        if self.audio.job_max_attempts == 0 {
            return bad("audio.job_max_attempts must be at least 1".into());
        }
        if self.storage.bucket.is_none()
            && (self.storage.endpoint.is_some() || self.storage.access_key_id.is_some())
        {
            return bad("storage.endpoint and storage.access_key_id need storage.bucket".into());
        }
        if self.database.max_batch == 0 {
            return bad("database.max_batch must be at least 1".into());
        }
        self.validate_engine()?;
        if let Some(url) = &self.database_url {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return bad(format!(
                    "database_url must start with sqlite:, postgres:// or postgresql:// (got `{}`)",
                    redact_url(url)
                ));
            }
            if url.starts_with("sqlite:") && colloquy_storage_sqlite::is_in_memory_url(url) {
                return bad(format!(
                    "database_url `{url}` is an in-memory SQLite database, which the server's \
                     connections cannot share (each would see its own empty database); give a \
                     file, e.g. sqlite://./colloquy-data/colloquy.db"
                ));
            }
        }
        Ok(())
    }

    fn validate_engine(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let e = &self.engine;
        for k in e.keys.keys() {
            if k.len() < 4 {
                return bad(format!(
                    "engine.keys.\"{k}\": give at least 4 characters of the key prefix \
                     (see `colloquy keys list`)"
                ));
            }
        }
        let relayed =
            e.mode == EngineMode::Relay || e.keys.values().any(|o| o.mode == EngineMode::Relay);
        let r = &e.relay;
        if let Some(url) = &r.url {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return bad(format!(
                    "engine.relay.url must start with ws:// or wss:// (got `{url}`)"
                ));
            }
        } else if relayed {
            return bad(
                "engine mode `relay` needs engine.relay.url, e.g. wss://api.hume.ai/v0/evi/chat"
                    .into(),
            );
        }
        for (name, secs) in [
            ("connect_timeout_secs", r.connect_timeout_secs),
            ("idle_timeout_secs", r.idle_timeout_secs),
        ] {
            if secs == 0 {
                return bad(format!("engine.relay.{name} must be at least 1 (got 0)"));
            }
        }
        let piped = e.mode == EngineMode::Pipeline
            || e.keys.values().any(|o| o.mode == EngineMode::Pipeline);
        if piped && e.pipeline.llm.is_none() {
            return bad(
                "engine mode `pipeline` needs [engine.pipeline.llm] (base_url and model of an \
                 OpenAI-compatible chat-completions service, e.g. http://127.0.0.1:11434/v1)"
                    .into(),
            );
        }
        let p = &e.pipeline;
        for (name, svc) in [("asr", &p.asr), ("llm", &p.llm), ("tts", &p.tts)] {
            if let Some(svc) = svc {
                if !(svc.base_url.starts_with("http://") || svc.base_url.starts_with("https://")) {
                    return bad(format!(
                        "engine.pipeline.{name}.base_url must start with http:// or https:// (got `{}`)",
                        svc.base_url
                    ));
                }
                if svc.timeout_secs == 0 {
                    return bad(format!(
                        "engine.pipeline.{name}.timeout_secs must be at least 1"
                    ));
                }
            }
        }
        let x = &e.expression;
        if let Some(url) = &x.url {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return bad(format!(
                    "engine.expression.url must start with ws:// or wss:// (got `{url}`)"
                ));
            }
        }
        for (name, secs) in [
            ("connect_timeout_secs", x.connect_timeout_secs),
            ("timeout_secs", x.timeout_secs),
        ] {
            if secs == 0 {
                return bad(format!(
                    "engine.expression.{name} must be at least 1 (got 0)"
                ));
            }
        }
        if !(0.0..=1.0).contains(&p.vad_threshold) {
            return bad(format!(
                "engine.pipeline.vad_threshold must be within 0-1 (got {})",
                p.vad_threshold
            ));
        }
        if p.vad_silence_ms == 0 {
            return bad("engine.pipeline.vad_silence_ms must be at least 1 (got 0)".into());
        }
        Ok(())
    }

    /// The database URL in effect.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("colloquy.db").display()),
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("public_url", &self.public_url)
            .field("chat", &self.chat)
            .field("database", &self.database)
            .field("storage", &self.storage)
            .field("audio", &self.audio)
            .field("log", &self.log)
            .field("engine", &self.engine)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Hides the password of a `scheme://user:password@host` URL.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((creds, host)) = rest.rsplit_once('@') {
            if let Some((user, _)) = creds.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

/// A commented example configuration with every setting at its default.
pub const EXAMPLE_TOML: &str = r#"# Colloquy configuration. Every setting is optional; shown values are the defaults.
# Precedence: defaults < this file (--config / COLLOQUY_CONFIG) < COLLOQUY_* environment
# variables (nested keys joined with "__", e.g. COLLOQUY_CHAT__MAX_DURATION_SECS=600)
# < command-line flags.

# Address to listen on. Port 0 picks a free port (the real address is printed).
listen = "127.0.0.1:8080"                # COLLOQUY_LISTEN, --listen

# Folder for the SQLite database, the instance lock and local audio files.
data_dir = "./colloquy-data"             # COLLOQUY_DATA_DIR, --data-dir

# Database. Default: SQLite at <data_dir>/colloquy.db. A postgres:// URL selects PostgreSQL.
# database_url = "postgres://colloquy:secret@127.0.0.1:5432/colloquy"   # COLLOQUY_DATABASE_URL

# Base URL printed at start-up and used for links; default http://<listen>.
# public_url = "https://colloquy.example.com"

[chat]
# End a chat as INACTIVITY_TIMEOUT after this many seconds without a client message.
inactivity_timeout_secs = 120
# End a chat as MAX_DURATION_TIMEOUT after this many seconds.
max_duration_secs = 1800
# Largest accepted socket message in bytes; larger ones are refused with an `error` message
# and the session goes on (messages over 4x this size close the socket with code 1009).
max_message_bytes = 16777216
# A send to the client that makes no progress for this many seconds (the client stopped
# reading) ends the chat as ERROR with reason client_not_reading.
send_timeout_secs = 10

[limits]
# Failed authentication attempts (wrong API key, secret or token) one client address may
# make per minute; over that, its failing attempts get 429 with Retry-After instead of 401
# until the window has room again. Correct credentials keep working from every address.
# Counted per server process, IPv6 per /64. 0: off.
auth_failures_per_minute = 60
# Seconds a client has to send a request's headers, on a new connection or between two
# requests of a kept-alive one; then the connection is closed (chat sockets are not affected).
header_read_timeout_secs = 10
# Most chats one account may have open at once over every server sharing the database
# (0: no limit). A connect over the limit is refused with socket error E0203.
max_concurrent_chats_per_account = 0
# Most client messages per second one account may send over all its chats on one server
# (0: no limit). Messages over the limit get socket error E0105 and are dropped.
max_messages_per_second_per_account = 0

[database]
# SQLite durability: "full" fsyncs every group commit; "normal" survives process crashes only.
sqlite_synchronous = "full"
# Size of the PostgreSQL connection pool.
postgres_max_connections = 16
# Most socket operations group-committed in one transaction.
max_batch = 512

[storage]
# Audio objects (captured segments, reconstructed MP4s). Default: <data_dir>/objects.
# Setting a bucket selects an S3-compatible store:
# bucket = "colloquy-audio"
# endpoint = "http://127.0.0.1:9000"     # omit for AWS S3
# region = "us-east-1"
# access_key_id = "..."
# secret_access_key = "..."
# Secret for signing local download URLs. Default: generated once into <data_dir>/signing.key.
# Servers that share a database must share this secret.
# signing_secret = "..."

[audio]
# Reconstruction workers inside `colloquy serve` (0 leaves the work to `colloquy worker`).
workers = 1
# Stereo output with the user on the left and the assistant on the right (default: mono mix).
stereo_split = false
# A worker's claim on a job lasts this long unless renewed; a crashed worker's job is retried.
job_lease_secs = 30
# Attempts before a job whose worker keeps dying ends as ERROR.
job_max_attempts = 3

[log]
# "text" or "json".
format = "text"
# tracing filter, e.g. "info" or "colloquy_server=debug,info". RUST_LOG overrides it.
filter = "info"

[engine]
# What answers in a chat (see docs/engines.md):
#   "client": the client drives the chat itself (user_input, assistant_input, ...).
#   "relay":  every chat is relayed to the upstream EVI socket of [engine.relay] and
#             recorded both ways.
mode = "client"                          # COLLOQUY_ENGINE__MODE

[engine.relay]
# Upstream EVI-compatible chat socket, e.g. the hosted EVI API:
# url = "wss://api.hume.ai/v0/evi/chat"  # COLLOQUY_ENGINE__RELAY__URL
# Upstream credentials: an API key (sent as X-Hume-Api-Key) or an access token.
# api_key = "..."                        # COLLOQUY_ENGINE__RELAY__API_KEY
# access_token = "..."
# Seconds to connect and receive the upstream's chat_metadata.
connect_timeout_secs = 10
# Seconds the upstream may stay silent, not even answering a ping, before the chat ends as ERROR.
idle_timeout_secs = 30

[engine.client]
# Speak assistant_input in client-driven chats (audio_output chunks, recorded as the
# assistant's voice) with the voice of [engine.pipeline]: its TTS service, else the
# built-in espeak-ng voice (needs the libespeak-ng1 and espeak-ng-data packages; without
# them, or with speak = false, assistant_input is answered with text only).
speak = true                             # COLLOQUY_ENGINE__CLIENT__SPEAK

[engine.pipeline]
# Used by mode "pipeline": Colloquy answers through OpenAI-compatible services.
# Voice name sent to the TTS service.
tts_voice = "alloy"
# System prompt when the client sends none.
# system_prompt = "You are a helpful voice assistant. Answer briefly."
# Events of a resumed chat group given to the model as history.
event_limit = 300
# Turn detection on the user's audio: silence that ends a turn, the voiced time before
# speech counts (and interrupts the assistant), and the voice-activity threshold (0-1).
vad_silence_ms = 600
vad_min_speech_ms = 160
vad_threshold = 0.5
# The language model (required for mode "pipeline"): streamed /chat/completions.
# [engine.pipeline.llm]
# base_url = "http://127.0.0.1:11434/v1"   # COLLOQUY_ENGINE__PIPELINE__LLM__BASE_URL
# model = "llama3.2"
# api_key = "..."
# timeout_secs = 30
# Speech to text (/audio/transcriptions) and text to speech (/audio/speech), same fields:
# [engine.pipeline.asr]
# [engine.pipeline.tts]

[engine.expression]
# Emotion scores of the user's speech in pipeline chats, from a service speaking Hume's
# streaming expression-measurement protocol. Without url: no scores (never invented).
# url = "wss://api.hume.ai/v0/stream/models"   # COLLOQUY_ENGINE__EXPRESSION__URL
# api_key = "..."                              # sent as X-Hume-Api-Key
# Seconds to open the socket, and to measure one utterance (then it has no scores).
connect_timeout_secs = 5
timeout_secs = 5

# Per-key overrides, by API key prefix as shown by `colloquy keys list`:
# [engine.keys."AbCd1234"]
# mode = "relay"
"#;

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn example_parses_to_the_defaults() {
        let parsed: Settings = toml::from_str(EXAMPLE_TOML).unwrap();
        let defaults = Settings::default();
        assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "listen = \"0.0.0.0:1\"\ndata_dir = \"/from-file\"\n[chat]\nmax_duration_secs = 60\n",
            )?;
            jail.set_env("COLLOQUY_DATA_DIR", "/from-env");
            jail.set_env("COLLOQUY_CHAT__INACTIVITY_TIMEOUT_SECS", "7");
            let flags = FlagOverrides {
                listen: Some("127.0.0.1:9".into()),
                ..Default::default()
            };
            let s = Settings::load(Some(Path::new("c.toml")), &flags).unwrap();
            assert_eq!(s.listen, "127.0.0.1:9", "flag beats file");
            assert_eq!(s.data_dir, PathBuf::from("/from-env"), "env beats file");
            assert_eq!(s.chat.max_duration_secs, 60, "file beats default");
            assert_eq!(s.chat.inactivity_timeout_secs, 7);
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_explained() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[log]\nformat = \"xml\"\n")?;
            let err = Settings::load(Some(Path::new("c.toml")), &Default::default()).unwrap_err();
            assert!(err.to_string().contains("log.format"), "{err}");
            jail.create_file("d.toml", "lisen = \"x\"\n")?;
            let err = Settings::load(Some(Path::new("d.toml")), &Default::default()).unwrap_err();
            assert!(err.to_string().contains("lisen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn an_in_memory_sqlite_database_is_refused() {
        figment::Jail::expect_with(|jail| {
            for url in [
                "sqlite::memory:",
                "sqlite://:memory:",
                "sqlite://x.db?mode=memory",
                "sqlite://",
            ] {
                jail.set_env("COLLOQUY_DATABASE_URL", url);
                let err = Settings::load(None, &Default::default()).unwrap_err();
                assert!(err.to_string().contains("in-memory SQLite"), "{url}: {err}");
                assert!(err.to_string().contains("give a file"), "{url}: {err}");
            }
            jail.set_env("COLLOQUY_DATABASE_URL", "sqlite://./memory.db?mode=rwc");
            Settings::load(None, &Default::default()).unwrap();
            Ok(())
        });
    }

    #[test]
    fn client_mode_speaks_unless_turned_off() {
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(None, &Default::default()).unwrap();
            assert!(s.engine.client.speak, "speaking is the default");
            jail.set_env("COLLOQUY_ENGINE__CLIENT__SPEAK", "false");
            let s = Settings::load(None, &Default::default()).unwrap();
            assert!(!s.engine.client.speak);
            Ok(())
        });
    }

    #[test]
    fn engine_modes_per_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[engine.relay]\nurl = \"wss://up.example/v0/evi/chat\"\napi_key = \"sekrit\"\n\
                 [engine.keys.\"AbCd\"]\nmode = \"relay\"\n[engine.keys.\"abcd12\"]\nmode = \"client\"\n",
            )?;
            let s = Settings::load(Some(Path::new("c.toml")), &Default::default()).unwrap();
            let e = &s.engine;
            assert_eq!(e.mode_for(None), EngineMode::Client);
            assert_eq!(e.mode_for(Some("ABCDxyzw")), EngineMode::Relay);
            assert_eq!(
                e.mode_for(Some("abcd1234")),
                EngineMode::Client,
                "longest prefix wins"
            );
            assert_eq!(e.mode_for(Some("zzzz1234")), EngineMode::Client);
            assert!(!format!("{s:?}").contains("sekrit"));
            jail.set_env("COLLOQUY_ENGINE__MODE", "relay");
            let s = Settings::load(Some(Path::new("c.toml")), &Default::default()).unwrap();
            assert_eq!(s.engine.mode_for(Some("zzzz1234")), EngineMode::Relay);
            Ok(())
        });
    }

    #[test]
    fn pipeline_needs_an_llm() {
        figment::Jail::expect_with(|jail| {
            // A key override needs the services too.
            jail.set_env("COLLOQUY_ENGINE__KEYS__ABCD1234__MODE", "pipeline");
            let err = Settings::load(None, &Default::default()).unwrap_err();
            assert!(err.to_string().contains("[engine.pipeline.llm]"), "{err}");
            jail.set_env("COLLOQUY_ENGINE__MODE", "pipeline");
            let err = Settings::load(None, &Default::default()).unwrap_err();
            assert!(err.to_string().contains("[engine.pipeline.llm]"), "{err}");
            jail.set_env("COLLOQUY_ENGINE__PIPELINE__LLM__BASE_URL", "ollama:11434");
            jail.set_env("COLLOQUY_ENGINE__PIPELINE__LLM__MODEL", "llama3.2");
            let err = Settings::load(None, &Default::default()).unwrap_err();
            assert!(err.to_string().contains("http://"), "{err}");
            jail.set_env(
                "COLLOQUY_ENGINE__PIPELINE__LLM__BASE_URL",
                "http://127.0.0.1:11434/v1",
            );
            jail.set_env("COLLOQUY_ENGINE__PIPELINE__LLM__API_KEY", "sekrit");
            let s = Settings::load(None, &Default::default()).unwrap();
            assert_eq!(s.engine.mode, EngineMode::Pipeline);
            assert_eq!(s.engine.mode_for(Some("abcd1234XY")), EngineMode::Pipeline);
            let llm = s.engine.pipeline.llm.as_ref().unwrap();
            assert_eq!((llm.model.as_str(), llm.timeout_secs), ("llama3.2", 30));
            assert!(!format!("{s:?}").contains("sekrit"));
            Ok(())
        });
    }

    #[test]
    fn relay_needs_a_url() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("COLLOQUY_ENGINE__MODE", "relay");
            let err = Settings::load(None, &Default::default()).unwrap_err();
            assert!(err.to_string().contains("engine.relay.url"), "{err}");
            jail.set_env("COLLOQUY_ENGINE__RELAY__URL", "https://x");
            let err = Settings::load(None, &Default::default()).unwrap_err();
            assert!(err.to_string().contains("ws://"), "{err}");
            jail.set_env("COLLOQUY_ENGINE__MODE", "pipeline");
            assert!(Settings::load(None, &Default::default()).is_err());
            Ok(())
        });
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        let s = Settings {
            database_url: Some("postgres://u:pw@h/db".into()),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("pw"));
    }
}
