//! How a chat ends: each ending's stored status and reason, its close frame and the `error`
//! message that explains it, described once (the table is in `docs/decisions.md`).

use colloquy_wire::{ChatStatus, SocketError};

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed the socket, or the connection dropped.
    ClientClosed,
    /// No client activity for `chat.inactivity_timeout_secs`.
    Inactivity,
    /// `chat.max_duration_secs` reached.
    MaxDuration,
    /// The server is shutting down.
    Shutdown,
    /// The session's API key was revoked.
    KeyRevoked,
    /// The database failed.
    StoreFailed,
    /// Crash recovery closed the chat, or it was deleted.
    ChatClosed,
    /// A message over 4× `chat.max_message_bytes`.
    TooBig,
    /// Relay: the upstream could not be reached.
    UpstreamUnavailable,
    /// Relay: the upstream closed abnormally.
    UpstreamClosed,
    /// Relay: the upstream went silent.
    UpstreamTimeout,
    /// Relay: the upstream closed normally.
    UpstreamEnded,
    /// The pipeline's model called the built-in `hang_up` tool.
    HangUp,
    /// A text frame was not valid UTF-8 (RFC 6455: close with 1007).
    InvalidUtf8,
    /// A send to the client made no progress for `chat.send_timeout_secs`: the client
    /// stopped reading.
    NotReading,
    /// The client broke the WebSocket protocol (a reserved opcode, a bad control frame, a
    /// bad fragment): RFC 6455 closes with 1002.
    ProtocolError,
}

/// What one ending looks like from outside.
pub struct Ending {
    /// The chat's final status.
    pub status: ChatStatus,
    /// `reason` in the `CHAT_END_MESSAGE` metadata.
    pub reason: &'static str,
    /// The close frame's code and reason.
    pub close: (u16, &'static str),
    /// The `error` sent before the close frame, if any. Its message is [`End::farewell`]'s.
    pub farewell: Option<SocketError>,
}

impl End {
    /// The description of this ending.
    pub fn describe(self) -> Ending {
        use ChatStatus::{Error, InactivityTimeout, MaxDurationTimeout, UserEnded};
        let (status, reason, close, farewell) = match self {
            End::ClientClosed => (UserEnded, "client_closed", (1000, "chat ended"), None),
            End::Inactivity => (
                InactivityTimeout,
                "inactivity_timeout",
                (1000, "inactivity timeout"),
                None,
            ),
            End::MaxDuration => (
                MaxDurationTimeout,
                "max_duration_timeout",
                (1000, "maximum chat duration reached"),
                None,
            ),
            End::Shutdown => (Error, "server_shutdown", (1012, "server restarting"), None),
            // Reconnecting cannot help: 1000, so the TypeScript SDK does not reconnect.
            End::KeyRevoked => (
                Error,
                "api_key_revoked",
                (1000, "API key revoked"),
                Some(SocketError::ApiKeyRevoked),
            ),
            End::StoreFailed => (
                Error,
                "storage_failure",
                (1011, "storage failure"),
                Some(SocketError::StorageFailure),
            ),
            End::ChatClosed => (
                Error,
                "chat_closed_by_recovery",
                (1011, "chat closed by the server"),
                Some(SocketError::ChatClosed),
            ),
            End::TooBig => (
                Error,
                "message_too_big",
                (1009, "message too big"),
                Some(SocketError::MessageTooLarge),
            ),
            End::UpstreamUnavailable => (
                Error,
                "upstream_unavailable",
                (1011, "upstream failure"),
                Some(SocketError::UpstreamUnavailable),
            ),
            End::UpstreamClosed => (
                Error,
                "upstream_closed",
                (1011, "upstream failure"),
                Some(SocketError::UpstreamClosed),
            ),
            End::UpstreamTimeout => (
                Error,
                "upstream_timeout",
                (1011, "upstream failure"),
                Some(SocketError::UpstreamTimeout),
            ),
            End::UpstreamEnded => (
                UserEnded,
                "upstream_ended",
                (1000, "chat ended by the upstream"),
                None,
            ),
            End::HangUp => (
                UserEnded,
                "hang_up",
                (1000, "chat ended by the assistant"),
                None,
            ),
            End::InvalidUtf8 => (
                Error,
                "invalid_utf8",
                (1007, "a text frame was not valid UTF-8"),
                Some(SocketError::InvalidMessage),
            ),
            End::NotReading => (
                Error,
                "client_not_reading",
                (1008, "the client stopped reading"),
                None,
            ),
            End::ProtocolError => (
                Error,
                "protocol_error",
                (1002, "WebSocket protocol error"),
                Some(SocketError::InvalidMessage),
            ),
        };
        Ending {
            status,
            reason,
            close,
            farewell,
        }
    }

    /// The chat's final status.
    pub fn status(self) -> ChatStatus {
        self.describe().status
    }

    /// `reason` in the `CHAT_END_MESSAGE` metadata.
    pub fn reason(self) -> &'static str {
        self.describe().reason
    }

    /// The message of the farewell `error`. `detail`: what went wrong (upstream failures);
    /// `deleted`: the chat was deleted while it ran; `limit`: the hard message-size limit.
    pub fn farewell_message(self, detail: Option<&str>, deleted: bool, limit: usize) -> String {
        match self {
            End::KeyRevoked => "this API key was revoked; the chat has ended".into(),
            End::StoreFailed => "the server could not store this chat; it has ended".into(),
            End::ChatClosed if deleted => {
                "this chat was deleted; reconnect to start a new one".into()
            }
            End::ChatClosed => "the server closed this chat during crash recovery; reconnect \
                                (with resumed_chat_group_id to continue the conversation)"
                .into(),
            End::UpstreamUnavailable | End::UpstreamClosed | End::UpstreamTimeout => {
                detail.unwrap_or_default().to_string()
            }
            End::TooBig => format!(
                "a message exceeded {limit} bytes, so the connection was closed; send audio in \
                 smaller chunks"
            ),
            End::InvalidUtf8 => "a text frame was not valid UTF-8, so the connection was closed \
                                 (RFC 6455 requires UTF-8 text); send JSON as UTF-8 text frames"
                .into(),
            End::ProtocolError => format!(
                "the connection broke the WebSocket protocol ({}), so it was closed",
                detail.unwrap_or("a bad frame")
            ),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [End; 16] = [
        End::ClientClosed,
        End::Inactivity,
        End::MaxDuration,
        End::Shutdown,
        End::KeyRevoked,
        End::StoreFailed,
        End::ChatClosed,
        End::TooBig,
        End::UpstreamUnavailable,
        End::UpstreamClosed,
        End::UpstreamTimeout,
        End::UpstreamEnded,
        End::HangUp,
        End::InvalidUtf8,
        End::NotReading,
        End::ProtocolError,
    ];

    /// The chat-lifecycle table of `docs/decisions.md` names each ending's reason, status and
    /// close code as the type describes them.
    #[test]
    fn the_documented_endings_match_the_type() {
        let doc = include_str!("../../../../docs/decisions.md");
        let table = doc
            .split("| Ending | Status (`reason`) | Close code |")
            .nth(1)
            .expect("the chat lifecycle table");
        let rows: Vec<&str> = table
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect();
        for end in ALL {
            let e = end.describe();
            if matches!(end, End::Inactivity | End::MaxDuration) {
                // Their status says the reason.
                assert!(
                    rows.iter()
                        .any(|r| r.contains(&format!("`{}`", e.status.as_str()))
                            && r.contains(&format!("| {}", e.close.0))),
                    "{end:?}"
                );
                continue;
            }
            let row = rows
                .iter()
                .find(|r| r.contains(&format!("(`{}`)", e.reason)))
                .unwrap_or_else(|| panic!("no row for {end:?} ({})", e.reason));
            assert!(
                row.contains(&format!("`{}`", e.status.as_str())),
                "{end:?}: {row}"
            );
            assert!(row.contains(&format!("| {}", e.close.0)), "{end:?}: {row}");
        }
    }

    #[test]
    fn every_error_ending_that_explains_itself_has_a_message() {
        for end in ALL {
            if end.describe().farewell.is_some()
                && !matches!(
                    end,
                    End::UpstreamUnavailable | End::UpstreamClosed | End::UpstreamTimeout
                )
            {
                assert!(!end.farewell_message(None, false, 1).is_empty(), "{end:?}");
            }
        }
    }
}
