//! `POST /v0/evi/chat/{chat_id}/send`: one client message into a live chat, handled by its
//! session as if its client had sent it; answered once its events are committed.

use super::ControlError;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::live::remote::Refusal;
use crate::live::Control;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// How long a posted message may wait for the session to handle it.
const HANDLED_WITHIN: Duration = Duration::from_secs(30);

/// The same for a chat on another server (a server that died answers nothing; its chats are
/// 404 once its heartbeat is stale).
const REMOTE_HANDLED_WITHIN: Duration = Duration::from_secs(10);

/// The 404 of a chat that is not live for the caller.
pub(crate) fn not_live(chat_id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no active chat {chat_id} in this account: the chat is unknown, another account's, or \
         has ended (control-plane messages reach only ACTIVE chats)"
    ))
}

/// Posts a message into an active chat: the chat's session validates, records and echoes
/// it (to the chat's client and observers) exactly as one from its own client, and the
/// engine reacts (a pipeline chat answers a `user_input`, a `tool_response` resumes a
/// waiting tool call, `session_settings` change the chat from then on). Any client message
/// type but `audio_input`. `200` with an empty body once committed; `404` for a chat that
/// is unknown, another account's or not `ACTIVE`; `422` for a body that is not such a
/// message.
#[utoipa::path(post, path = "/v0/evi/chat/{chat_id}/send", tag = "control_plane",
    params(("chat_id" = Uuid, Path, description = "An ACTIVE chat of the account")),
    request_body(content = Object, description = "One client message (`type` required), any type but `audio_input`"),
    responses((status = 200, description = "Handled (empty body)"),
              (status = 401, body = colloquy_wire::ErrorResponse),
              (status = 404, body = colloquy_wire::ErrorResponse),
              (status = 422, body = colloquy_wire::HttpValidationError)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn send(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(chat_id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let Ok(id) = Uuid::parse_str(&chat_id) else {
        return Err(not_live(&chat_id).into());
    };
    // The chat first: a message for no live chat is a 404, whatever it holds.
    let Some(to) = route(&state, who.user_id, id).await else {
        return Err(not_live(&chat_id).into());
    };
    let raw = std::str::from_utf8(&body).map_err(|_| ControlError::Invalid {
        loc: vec!["body"],
        message: "the body must be one JSON client message (UTF-8)".into(),
    })?;
    super::check_message(raw).map_err(|(loc, message)| ControlError::Invalid { loc, message })?;
    deliver(&state, to, who.user_id, id, raw.to_string()).await?;
    Ok(StatusCode::OK)
}

/// Where a live chat runs.
pub(crate) enum Route {
    /// On this server: its session's control queue.
    Here(mpsc::Sender<Control>),
    /// On another server sharing the database: that instance.
    There(Uuid),
}

/// Where `user_id`'s chat `chat_id` runs (this server, or another one sharing the
/// database); `None` when it is not live.
pub(crate) async fn route(state: &AppState, user_id: Uuid, chat_id: Uuid) -> Option<Route> {
    if let Ok(tx) = state.live.find(user_id, chat_id, false) {
        return Some(Route::Here(tx));
    }
    state
        .remote
        .as_ref()?
        .owner(user_id, chat_id)
        .await
        .map(Route::There)
}

/// Hands `raw` to the live chat `chat_id` of `user_id` and waits until it is handled.
pub(crate) async fn publish(
    state: &AppState,
    user_id: Uuid,
    chat_id: Uuid,
    raw: String,
) -> Result<(), ControlError> {
    match route(state, user_id, chat_id).await {
        Some(to) => deliver(state, to, user_id, chat_id, raw).await,
        None => Err(not_live(&chat_id.to_string()).into()),
    }
}

/// Hands `raw` to the chat where it runs and waits until it is handled.
async fn deliver(
    state: &AppState,
    to: Route,
    user_id: Uuid,
    chat_id: Uuid,
    raw: String,
) -> Result<(), ControlError> {
    let gone = || ControlError::from(not_live(&chat_id.to_string()));
    let invalid = |message| ControlError::Invalid {
        loc: vec!["body"],
        message,
    };
    let tx = match to {
        Route::Here(tx) => tx,
        Route::There(owner) => {
            let Some(remote) = &state.remote else {
                return Err(gone());
            };
            return match remote
                .publish(owner, user_id, chat_id, raw, REMOTE_HANDLED_WITHIN)
                .await
            {
                Ok(()) => Ok(()),
                Err(Refusal::Refused(message)) => Err(invalid(message)),
                Err(Refusal::Timeout) => Err(too_slow()),
                Err(Refusal::NotFound | Refusal::NotAllowed) => Err(gone()),
            };
        }
    };
    let (reply, handled) = oneshot::channel();
    if tx.send(Control::Publish { raw, reply }).await.is_err() {
        return Err(gone());
    }
    match tokio::time::timeout(HANDLED_WITHIN, handled).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(message))) => Err(invalid(message)),
        // The chat ended before handling it.
        Ok(Err(_)) => Err(gone()),
        Err(_) => Err(too_slow()),
    }
}

fn too_slow() -> ControlError {
    ApiError::Unavailable("the chat did not handle the message in time; try again".into()).into()
}
