//! `WSS /v0/evi/chat/{chat_id}/connect`: an observer of a live chat opened with
//! `allow_connection=true`. It gets the chat's `chat_metadata`, then its history so far
//! (from the stored events; for retention-disabled accounts what the session still holds),
//! then every server message live; it may post any client message but `audio_input`, as
//! `send` does. When the chat ends its socket closes with 1000 and the chat's end reason.
//! An observer leaving never affects the chat.

use super::history;
use crate::auth::{authenticate, find_credentials};
use crate::live::remote::RemoteObserver;
use crate::live::{Attached, Control, Observed, Unreachable, OBSERVER_QUEUE};
use crate::state::AppState;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use colloquy_storage::Principal;
use colloquy_wire::socket::ServerMessage;
use colloquy_wire::SocketError;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

/// How often an observer of a chat on another server checks that server is alive.
const OWNER_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Attaches an observer to `who`'s live chat `id`, on this server or (through the database)
/// another one; the history to send first, the live messages, and what keeps a remote
/// observer attached.
async fn attach(
    state: &AppState,
    who: &Principal,
    id: Uuid,
) -> Result<(Attached, mpsc::Receiver<Observed>, Option<RemoteObserver>), Unreachable> {
    let (tx, rx) = mpsc::channel(OBSERVER_QUEUE);
    match state.live.find(who.user_id, id, true) {
        Ok(control) => {
            let (reply, attached) = oneshot::channel();
            let _ = control.send(Control::Observe { tx, reply }).await;
            let attached = attached.await.map_err(|_| Unreachable::NotFound)?;
            Ok((attached, rx, None))
        }
        Err(Unreachable::NotFound) => match &state.remote {
            Some(remote) => {
                let (attached, guard) = remote.observe(who.user_id, id, tx).await?;
                Ok((attached, rx, Some(guard)))
            }
            None => Err(Unreachable::NotFound),
        },
        Err(e) => Err(e),
    }
}

/// Upgrades (401 on bad credentials) and runs the observer.
pub async fn connect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(chat_id): Path<String>,
    RawQuery(raw): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let who = match find_credentials(&headers, &pairs) {
        Ok(creds) => match authenticate(&state, creds).await {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        },
        Err(e) => return e.into_response(),
    };
    let span = tracing::info_span!("observer", %chat_id);
    // Small buffers, as for the chat socket: an idle observer costs little. Observers send
    // small control messages; what they receive is the chat's messages.
    let limit = state.settings.chat.max_message_bytes;
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size((16 * 1024).min(limit))
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| observe(state, who, chat_id, socket).instrument(span))
}

async fn refuse(mut socket: WebSocket, error: SocketError, message: String, request_id: &str) {
    let msg = ServerMessage::Error {
        code: error.code().into(),
        slug: error.slug().into(),
        message,
        request_id: Some(request_id.to_string()),
    };
    if let Ok(text) = serde_json::to_string(&msg) {
        let _ = socket.send(Message::Text(text.into())).await;
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: error.slug().into(),
        })))
        .await;
}

async fn observe(state: AppState, who: Principal, chat_id: String, mut socket: WebSocket) {
    let request_id = Uuid::new_v4().to_string();
    let attached = match Uuid::parse_str(&chat_id) {
        Ok(id) => attach(&state, &who, id).await.map(|a| (id, a)),
        Err(_) => Err(Unreachable::NotFound),
    };
    let (id, (attached, mut rx, remote)) = match attached {
        Ok(found) => found,
        Err(Unreachable::NotFound) => {
            let msg = format!(
                "no active chat {chat_id} in this account: observers attach only to ACTIVE \
                 chats (find one with GET /v0/evi/chats)"
            );
            return refuse(socket, SocketError::ChatNotLive, msg, &request_id).await;
        }
        Err(Unreachable::NotAllowed) => {
            let msg = "this chat was not opened with allow_connection=true, so it cannot be \
                       observed; connect the chat with allow_connection=true"
                .to_string();
            return refuse(socket, SocketError::ConnectionNotAllowed, msg, &request_id).await;
        }
    };
    let Attached {
        chat_metadata,
        next_seq,
        held,
        start_ms,
    } = attached;
    tracing::info!("observer attached");
    let mut first = vec![chat_metadata];
    if who.data_retention {
        match history::replay(state.store.as_ref(), id, start_ms, next_seq).await {
            Ok(msgs) => first.extend(msgs),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the chat's history for an observer")
            }
        }
    } else {
        first.extend(held.iter().map(|m| m.to_string()));
    }
    for text in first {
        if socket.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }
    // An observer through another server checks that the chat's server is still alive.
    let mut owner_check = tokio::time::interval(OWNER_CHECK);
    loop {
        tokio::select! {
            _ = owner_check.tick(), if remote.is_some() => {
                let alive = match &state.remote {
                    Some(r) => r.still_running(who.user_id, id).await,
                    None => false,
                };
                if !alive {
                    tracing::info!("the server running the observed chat is gone");
                    let close = CloseFrame { code: 1000, reason: "the server running this chat stopped".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    return;
                }
            }
            out = rx.recv() => match out {
                Some(Observed::Message(text)) => {
                    if socket.send(Message::Text(text.to_string().into())).await.is_err() {
                        return;
                    }
                }
                ended => {
                    let reason = match ended {
                        Some(Observed::Ended(reason)) => reason,
                        _ => "chat ended".to_string(),
                    };
                    let close = CloseFrame { code: 1000, reason: reason.into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let answer = match super::check_message(text.as_str()) {
                        Err((_, message)) => Err(message),
                        Ok(()) => match super::send::publish(&state, who.user_id, id, text.to_string()).await {
                            Ok(()) => Ok(()),
                            Err(super::ControlError::Invalid { message, .. }) => Err(message),
                            Err(super::ControlError::Api(e)) => Err(e.to_string()),
                        },
                    };
                    if let Err(message) = answer {
                        let msg = ServerMessage::Error {
                            code: SocketError::InvalidMessage.code().into(),
                            slug: SocketError::InvalidMessage.slug().into(),
                            message,
                            request_id: Some(request_id.clone()),
                        };
                        if let Ok(text) = serde_json::to_string(&msg) {
                            if socket.send(Message::Text(text.into())).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let msg = ServerMessage::Error {
                        code: SocketError::InvalidMessage.code().into(),
                        slug: SocketError::InvalidMessage.slug().into(),
                        message: "observers send JSON text frames; audio comes from the chat's own client".into(),
                        request_id: Some(request_id.clone()),
                    };
                    if let Ok(text) = serde_json::to_string(&msg) {
                        let _ = socket.send(Message::Text(text.into())).await;
                    }
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => {
                    tracing::info!("observer left");
                    return;
                }
            },
        }
    }
}
