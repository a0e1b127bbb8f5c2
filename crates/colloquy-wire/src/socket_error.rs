//! The `error` codes Colloquy sends on the chat socket: one type, used wherever an `error`
//! message is sent, and checked against the table in `docs/decisions.md` by a test.
//!
//! `E…` codes are the client's to fix (a bad message, bad connect parameters, a limit);
//! `I…` codes are the server's side (storage, audio capture, upstreams, speech services).

/// One socket error: its code and slug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketError {
    /// The frame is not JSON.
    InvalidJson,
    /// Wrong shape, unknown `type`, a missing or bad field, a binary frame.
    InvalidMessage,
    /// A message over `chat.max_message_bytes`.
    MessageTooLarge,
    /// `audio_input` that is empty, not base64, or not decodable.
    InvalidAudio,
    /// The account sends more messages per second than allowed.
    RateLimited,
    /// A bad query parameter at connect.
    InvalidConnectParameters,
    /// `resumed_chat_group_id` is unknown or another account's.
    ChatGroupNotFound,
    /// Resuming on a retention-disabled account.
    ResumeUnavailable,
    /// The account has as many open chats as allowed.
    TooManyChats,
    /// `config_id` (or its `config_version`) is unknown or another account's.
    ConfigNotFound,
    /// Control plane: no active chat of the account has this id.
    ChatNotLive,
    /// Control plane: the chat was not opened with `allow_connection=true`.
    ConnectionNotAllowed,
    /// The API key was revoked.
    ApiKeyRevoked,
    /// The database failed.
    StorageFailure,
    /// Captured audio could not be stored.
    AudioCaptureFailed,
    /// Crash recovery closed the chat, or it was deleted.
    ChatClosed,
    /// Relay: the upstream could not be reached.
    UpstreamUnavailable,
    /// Relay: the upstream closed abnormally.
    UpstreamClosed,
    /// Relay: the upstream went silent.
    UpstreamTimeout,
    /// Pipeline: no language model is configured.
    PipelineUnavailable,
    /// Pipeline: the language model or the voice service failed.
    PipelineServiceFailed,
}

impl SocketError {
    /// Every socket error, in the order of the documentation's table.
    pub const ALL: [SocketError; 21] = [
        SocketError::InvalidJson,
        SocketError::InvalidMessage,
        SocketError::MessageTooLarge,
        SocketError::InvalidAudio,
        SocketError::RateLimited,
        SocketError::InvalidConnectParameters,
        SocketError::ChatGroupNotFound,
        SocketError::ResumeUnavailable,
        SocketError::TooManyChats,
        SocketError::ConfigNotFound,
        SocketError::ChatNotLive,
        SocketError::ConnectionNotAllowed,
        SocketError::ApiKeyRevoked,
        SocketError::StorageFailure,
        SocketError::AudioCaptureFailed,
        SocketError::ChatClosed,
        SocketError::UpstreamUnavailable,
        SocketError::UpstreamClosed,
        SocketError::UpstreamTimeout,
        SocketError::PipelineUnavailable,
        SocketError::PipelineServiceFailed,
    ];

    /// The `code` field.
    pub fn code(self) -> &'static str {
        match self {
            SocketError::InvalidJson => "E0100",
            SocketError::InvalidMessage => "E0101",
            SocketError::MessageTooLarge => "E0102",
            SocketError::InvalidAudio => "E0104",
            SocketError::RateLimited => "E0105",
            SocketError::InvalidConnectParameters => "E0200",
            SocketError::ChatGroupNotFound => "E0201",
            SocketError::ResumeUnavailable => "E0202",
            SocketError::TooManyChats => "E0203",
            SocketError::ConfigNotFound => "E0204",
            SocketError::ChatNotLive => "E0205",
            SocketError::ConnectionNotAllowed => "E0206",
            SocketError::ApiKeyRevoked => "E0300",
            SocketError::StorageFailure => "I0100",
            SocketError::AudioCaptureFailed => "I0101",
            SocketError::ChatClosed => "I0102",
            SocketError::UpstreamUnavailable => "I0200",
            SocketError::UpstreamClosed => "I0201",
            SocketError::UpstreamTimeout => "I0202",
            SocketError::PipelineUnavailable | SocketError::PipelineServiceFailed => "I0300",
        }
    }

    /// The `slug` field.
    pub fn slug(self) -> &'static str {
        match self {
            SocketError::InvalidJson => "invalid_json",
            SocketError::InvalidMessage => "invalid_message",
            SocketError::MessageTooLarge => "message_too_large",
            SocketError::InvalidAudio => "invalid_audio",
            SocketError::RateLimited => "rate_limited",
            SocketError::InvalidConnectParameters => "invalid_connect_parameters",
            SocketError::ChatGroupNotFound => "chat_group_not_found",
            SocketError::ResumeUnavailable => "resume_unavailable",
            SocketError::TooManyChats => "too_many_chats",
            SocketError::ConfigNotFound => "config_not_found",
            SocketError::ChatNotLive => "chat_not_active",
            SocketError::ConnectionNotAllowed => "connection_not_allowed",
            SocketError::ApiKeyRevoked => "api_key_revoked",
            SocketError::StorageFailure => "storage_failure",
            SocketError::AudioCaptureFailed => "audio_capture_failed",
            SocketError::ChatClosed => "chat_closed",
            SocketError::UpstreamUnavailable => "upstream_unavailable",
            SocketError::UpstreamClosed => "upstream_closed",
            SocketError::UpstreamTimeout => "upstream_timeout",
            SocketError::PipelineUnavailable => "pipeline_unavailable",
            SocketError::PipelineServiceFailed => "pipeline_service_failed",
        }
    }

    /// Whether a refusal at connect with this error can succeed when simply retried: decides
    /// the close code (1000 when it cannot, so the TypeScript SDK does not reconnect).
    pub fn retry_may_help(self) -> bool {
        matches!(
            self,
            SocketError::StorageFailure
                | SocketError::UpstreamUnavailable
                | SocketError::UpstreamClosed
                | SocketError::UpstreamTimeout
        )
    }
}

impl std::fmt::Display for SocketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code(), self.slug())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The socket-error table of `docs/decisions.md` lists exactly these codes and slugs.
    #[test]
    fn the_documented_table_matches_the_type() {
        let doc = include_str!("../../../docs/decisions.md");
        let section = doc
            .split("## Socket errors")
            .nth(1)
            .expect("a `## Socket errors` section");
        let section = section.split("\n## ").next().unwrap();
        let documented: BTreeSet<(String, String)> = section
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let slug = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((code.to_string(), slug.to_string()))
            })
            .collect();
        let typed: BTreeSet<(String, String)> = SocketError::ALL
            .iter()
            .map(|e| (e.code().to_string(), e.slug().to_string()))
            .collect();
        assert_eq!(documented, typed);
    }

    #[test]
    fn codes_and_slugs_are_distinct() {
        let slugs: BTreeSet<_> = SocketError::ALL.iter().map(|e| e.slug()).collect();
        assert_eq!(slugs.len(), SocketError::ALL.len());
    }
}
