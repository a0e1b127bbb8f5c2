//! The API's enums with their exact wire spellings (spec §3.6).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// Declares a string enum with its wire names, `as_str`, `FromStr` and `ALL`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire,)+ }
            }
        }

        // Written by hand: the derive does not see `serde(rename)` through the macro.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($wire,)+]))
                    .into()
            }
        }

        impl ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        value: s.to_string(),
                        expected: &[$($wire,)+],
                    }),
                }
            }
        }
    };
}

/// A string that is not one of an enum's wire values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    /// What was given.
    pub value: String,
    /// The accepted spellings.
    pub expected: &'static [&'static str],
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not one of {}",
            self.value,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for UnknownValue {}

wire_enum! {
    /// Status of a chat (`ReturnChatStatus`).
    ChatStatus {
        Active = "ACTIVE",
        UserEnded = "USER_ENDED",
        UserTimeout = "USER_TIMEOUT",
        MaxDurationTimeout = "MAX_DURATION_TIMEOUT",
        InactivityTimeout = "INACTIVITY_TIMEOUT",
        Error = "ERROR",
    }
}

wire_enum! {
    /// Who produced a chat event (`ReturnChatEventRole`).
    EventRole {
        User = "USER",
        Agent = "AGENT",
        System = "SYSTEM",
        Tool = "TOOL",
    }
}

wire_enum! {
    /// Kind of a chat event (`ReturnChatEventType`).
    EventType {
        AgentMessage = "AGENT_MESSAGE",
        AssistantProsody = "ASSISTANT_PROSODY",
        ChatStartMessage = "CHAT_START_MESSAGE",
        ChatEndMessage = "CHAT_END_MESSAGE",
        FunctionCall = "FUNCTION_CALL",
        FunctionCallResponse = "FUNCTION_CALL_RESPONSE",
        PauseOnset = "PAUSE_ONSET",
        ResumeOnset = "RESUME_ONSET",
        SessionSettings = "SESSION_SETTINGS",
        SystemPrompt = "SYSTEM_PROMPT",
        UserInterruption = "USER_INTERRUPTION",
        UserMessage = "USER_MESSAGE",
        UserRecordingStartMessage = "USER_RECORDING_START_MESSAGE",
    }
}

wire_enum! {
    /// Status of an audio reconstruction (`ReturnChatAudioReconstructionStatus`).
    ReconstructionStatus {
        Queued = "QUEUED",
        InProgress = "IN_PROGRESS",
        Complete = "COMPLETE",
        Error = "ERROR",
        Cancelled = "CANCELLED",
    }
}

wire_enum! {
    /// Sort direction echoed in every paged response.
    PaginationDirection {
        Asc = "ASC",
        Desc = "DESC",
    }
}

impl PaginationDirection {
    /// `ASC` for ascending order, `DESC` otherwise.
    pub fn from_ascending(ascending: bool) -> Self {
        if ascending {
            Self::Asc
        } else {
            Self::Desc
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spellings_round_trip() {
        for s in ChatStatus::ALL {
            assert_eq!(s.as_str().parse::<ChatStatus>().unwrap(), *s);
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(EventType::ALL.len(), 13);
        assert_eq!(ReconstructionStatus::Cancelled.as_str(), "CANCELLED");
    }

    #[test]
    fn openapi_uses_wire_spellings() {
        let schema = serde_json::to_value(<ChatStatus as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["enum"][1], "USER_ENDED");
        let schema =
            serde_json::to_value(<PaginationDirection as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(["ASC", "DESC"]));
    }

    #[test]
    fn unknown_value_lists_the_choices() {
        let err = "DONE".parse::<ChatStatus>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`DONE` is not one of ACTIVE, USER_ENDED, USER_TIMEOUT, MAX_DURATION_TIMEOUT, INACTIVITY_TIMEOUT, ERROR"
        );
    }
}
