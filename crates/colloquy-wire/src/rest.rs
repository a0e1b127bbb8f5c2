//! REST response schemas (spec §3). Optional fields are sent as `null` when unset.

use crate::enums::{ChatStatus, EventRole, EventType, PaginationDirection, ReconstructionStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `ReturnConfigSpec`: the EVI config a chat used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnConfigSpec {
    /// Config id (UUID).
    pub id: String,
    /// Config version; `null` means the latest.
    pub version: Option<i64>,
}

/// `ReturnChat`: one chat (one WebSocket session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnChat {
    /// Chat id (UUID).
    pub id: String,
    /// The chat group the chat belongs to (UUID).
    pub chat_group_id: String,
    /// Chat status.
    pub status: ChatStatus,
    /// Epoch milliseconds when the socket was accepted.
    pub start_timestamp: i64,
    /// Epoch milliseconds when the chat ended; `null` while `ACTIVE`.
    pub end_timestamp: Option<i64>,
    /// Number of events stored for the chat so far.
    pub event_count: Option<i64>,
    /// Stringified JSON object (see docs/decisions.md).
    pub metadata: Option<String>,
    /// Config the chat used; `null` for the default config.
    pub config: Option<ReturnConfigSpec>,
}

/// `ReturnChatEvent`: one immutable chat event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnChatEvent {
    /// Event id (UUID).
    pub id: String,
    /// Chat the event belongs to (UUID).
    pub chat_id: String,
    /// Epoch milliseconds.
    pub timestamp: i64,
    /// Who produced the event.
    pub role: EventRole,
    /// What kind of event it is.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub event_type: EventType,
    /// Content; meaning depends on `type`.
    pub message_text: Option<String>,
    /// Stringified JSON object of the 48 prosody scores, or `""` when there are none.
    pub emotion_features: Option<String>,
    /// Stringified JSON, or `""` when there is none.
    pub metadata: Option<String>,
    /// For `ASSISTANT_PROSODY`: the `AGENT_MESSAGE` event the scores belong to.
    pub related_event_id: Option<String>,
}

/// `ReturnChatGroup`: a chat group summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnChatGroup {
    /// Chat group id (UUID).
    pub id: String,
    /// Start of the group's first chat, epoch ms.
    pub first_start_timestamp: i64,
    /// Start of the group's most recent chat, epoch ms.
    pub most_recent_start_timestamp: i64,
    /// Number of chats in the group.
    pub num_chats: i64,
    /// Id of the group's most recent chat.
    pub most_recent_chat_id: Option<String>,
    /// Config of the group's most recent chat.
    pub most_recent_config: Option<ReturnConfigSpec>,
    /// True while any chat of the group is `ACTIVE`.
    pub active: Option<bool>,
}

/// `ReturnChatAudioReconstruction`: the audio reconstruction of one chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnChatAudioReconstruction {
    /// The chat id (UUID).
    pub id: String,
    /// The owner's id (UUID).
    pub user_id: String,
    /// Reconstruction status.
    pub status: ReconstructionStatus,
    /// `<user_id>/<chat_id>/reconstructed_audio.mp4` once the file exists.
    pub filename: Option<String>,
    /// Epoch ms of the last status change.
    pub modified_at: Option<i64>,
    /// Download URL valid for 60 minutes, once `COMPLETE`.
    pub signed_audio_url: Option<String>,
    /// Expiry of `signed_audio_url`, epoch ms.
    pub signed_url_expiration_timestamp_millis: Option<i64>,
}

/// `ReturnPagedChats`: response of `GET /v0/evi/chats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReturnPagedChats {
    /// Zero-based page index, as requested.
    pub page_number: i64,
    /// Page size, as requested.
    pub page_size: i64,
    /// Number of pages at this page size.
    pub total_pages: i64,
    /// `ASC` or `DESC`.
    pub pagination_direction: PaginationDirection,
    /// The chats of this page.
    pub chats_page: Vec<ReturnChat>,
}

/// `ReturnChatPagedEvents`: response of `GET /v0/evi/chats/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReturnChatPagedEvents {
    /// Chat id (UUID).
    pub id: String,
    /// The chat's group (UUID).
    pub chat_group_id: String,
    /// Chat status.
    pub status: ChatStatus,
    /// Epoch ms.
    pub start_timestamp: i64,
    /// Epoch ms; `null` while `ACTIVE`.
    pub end_timestamp: Option<i64>,
    /// Stringified JSON object.
    pub metadata: Option<String>,
    /// Config the chat used.
    pub config: Option<ReturnConfigSpec>,
    /// Zero-based page index.
    pub page_number: i64,
    /// Page size.
    pub page_size: i64,
    /// Number of pages at this page size.
    pub total_pages: i64,
    /// `ASC` or `DESC`.
    pub pagination_direction: PaginationDirection,
    /// The events of this page, ordered by `timestamp`.
    pub events_page: Vec<ReturnChatEvent>,
}

/// `ReturnPagedChatGroups`: response of `GET /v0/evi/chat_groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReturnPagedChatGroups {
    /// Zero-based page index.
    pub page_number: i64,
    /// Page size.
    pub page_size: i64,
    /// Number of pages at this page size.
    pub total_pages: i64,
    /// `ASC` or `DESC`.
    pub pagination_direction: PaginationDirection,
    /// The chat groups of this page.
    pub chat_groups_page: Vec<ReturnChatGroup>,
}

/// `ReturnChatGroupPagedChats`: response of `GET /v0/evi/chat_groups/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReturnChatGroupPagedChats {
    /// Chat group id (UUID).
    pub id: String,
    /// Epoch ms.
    pub first_start_timestamp: i64,
    /// Epoch ms.
    pub most_recent_start_timestamp: i64,
    /// Total chats in the group (not only this page).
    pub num_chats: i64,
    /// True while any chat of the group is `ACTIVE`.
    pub active: Option<bool>,
    /// Zero-based page index.
    pub page_number: i64,
    /// Page size.
    pub page_size: i64,
    /// Number of pages at this page size.
    pub total_pages: i64,
    /// `ASC` or `DESC`.
    pub pagination_direction: PaginationDirection,
    /// The chats of this page.
    pub chats_page: Vec<ReturnChat>,
}

/// `ReturnChatGroupPagedEvents`: response of `GET /v0/evi/chat_groups/{id}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReturnChatGroupPagedEvents {
    /// Chat group id (UUID).
    pub id: String,
    /// Zero-based page index.
    pub page_number: i64,
    /// Page size.
    pub page_size: i64,
    /// Number of pages at this page size.
    pub total_pages: i64,
    /// `ASC` or `DESC`.
    pub pagination_direction: PaginationDirection,
    /// Events of every chat of the group, ordered by `timestamp`.
    pub events_page: Vec<ReturnChatEvent>,
}

/// `ReturnChatGroupPagedAudioReconstructions`: response of `GET /v0/evi/chat_groups/{id}/audio`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReturnChatGroupPagedAudioReconstructions {
    /// Chat group id (UUID).
    pub id: String,
    /// The owner's id (UUID).
    pub user_id: String,
    /// Total chats in the group.
    pub num_chats: i64,
    /// Zero-based page index.
    pub page_number: i64,
    /// Page size.
    pub page_size: i64,
    /// Number of pages at this page size.
    pub total_pages: i64,
    /// `ASC` or `DESC`.
    pub pagination_direction: PaginationDirection,
    /// One reconstruction record per chat of this page.
    pub audio_reconstructions_page: Vec<ReturnChatAudioReconstruction>,
}

/// Response of `POST /oauth2-cc/token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccessTokenResponse {
    /// Bearer token for REST (`Authorization: Bearer`) and sockets (`access_token` query).
    pub access_token: String,
    /// Lifetime in seconds (1800).
    pub expires_in: i64,
    /// Always `Bearer`.
    pub token_type: String,
    /// Epoch seconds when the token was issued.
    pub issued_at: i64,
}
