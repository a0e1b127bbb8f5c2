//! Settings: defaults < TOML file < `COLLOQUY_*` environment < command-line flags.

mod engine;
mod example;
mod sections;
#[cfg(test)]
mod tests;
mod tts;

pub use engine::*;
pub use example::EXAMPLE_TOML;
pub use sections::*;
pub use tts::*;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
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
    /// Chat webhooks: delivery and server-wide subscriptions.
    pub webhooks: WebhookSettings,
    /// Text to speech: the voice library and generations.
    pub tts: TtsSettings,
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
            webhooks: WebhookSettings::default(),
            tts: TtsSettings::default(),
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
        if self.webhooks.timeout_secs == 0 {
            return bad("webhooks.timeout_secs must be at least 1".into());
        }
        if self.webhooks.max_in_flight == 0 {
            return bad("webhooks.max_in_flight must be at least 1".into());
        }
        for (i, w) in self.webhooks.subscriptions.iter().enumerate() {
            if let Err(e) = crate::webhooks::check_subscription(&w.url, &w.events) {
                return bad(format!("webhooks.subscriptions[{i}]: {e}"));
            }
            if w.signing_key.is_empty() {
                return bad(format!("webhooks.subscriptions[{i}].signing_key is empty"));
            }
        }
        self.tts.validate().map_err(ConfigError::Invalid)?;
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
            .field("webhooks", &self.webhooks)
            .field("tts", &self.tts)
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
