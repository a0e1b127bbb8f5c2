//! Everything sent to the client goes through [`Core::write`], which gives every write a
//! deadline, so a client that stops reading cannot hold a session open.

use super::core::Core;
use super::ending::End;
use axum::extract::ws::{CloseFrame, Message};
use colloquy_wire::socket::ServerMessage;
use colloquy_wire::SocketError;
use std::time::Duration;
use tokio::time::Instant;

impl Core {
    /// Writes one frame. A write that makes no progress for `chat.send_timeout_secs` (the
    /// client stopped reading and its socket buffers are full) abandons the socket; so does
    /// one still blocked when the inactivity or max-duration limit comes, so those limits
    /// fire on time. `flush: false` only queues the frame (the next flushing write sends
    /// both in one write).
    pub(crate) async fn write(&mut self, msg: Message, flush: bool) -> Result<(), End> {
        if let Message::Text(text) = &msg {
            self.observe(text.as_str());
        }
        if flush {
            self.with_deadline(|socket| futures::SinkExt::send(socket, msg))
                .await
        } else {
            self.with_deadline(|socket| futures::SinkExt::feed(socket, msg))
                .await
        }
    }

    /// Runs one socket operation under the write deadline (see [`Self::write`]).
    async fn with_deadline<'a, F, Fut>(&'a mut self, op: F) -> Result<(), End>
    where
        F: FnOnce(&'a mut axum::extract::ws::WebSocket) -> Fut,
        Fut: std::future::Future<Output = Result<(), axum::Error>> + 'a,
    {
        if self.stalled {
            return Err(End::NotReading);
        }
        let give_up =
            Instant::now() + Duration::from_secs(self.state.settings.chat.send_timeout_secs);
        let deadline = give_up.min(self.idle_at).min(self.max_at);
        let (idle_at, max_at) = (self.idle_at, self.max_at);
        let done = tokio::time::timeout_at(deadline, op(&mut self.socket)).await;
        match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::ClientClosed),
            Err(_) => {
                self.stalled = true;
                let end = if deadline == max_at {
                    End::MaxDuration
                } else if deadline == idle_at {
                    End::Inactivity
                } else {
                    End::NotReading
                };
                tracing::info!(
                    reason = end.reason(),
                    "a send to the client made no progress; abandoning the socket"
                );
                Err(end)
            }
        }
    }

    /// A message as sent: with the session's `custom_session_id`, once set (every server
    /// message has the field).
    pub(crate) fn text_of(&self, msg: &ServerMessage) -> Result<String, End> {
        let mut text = serde_json::to_string(msg).map_err(|_| End::ClientClosed)?;
        if let Some(csid) = &self.settings.custom_session_id {
            if text.ends_with('}') {
                text.pop();
                text.push_str(",\"custom_session_id\":");
                text.push_str(&serde_json::to_string(csid).map_err(|_| End::ClientClosed)?);
                text.push('}');
            }
        }
        Ok(text)
    }

    /// Queues a message without flushing the socket; the next flushing write sends both.
    pub(crate) async fn feed(&mut self, msg: &ServerMessage) -> Result<(), End> {
        let text = self.text_of(msg)?;
        self.write(Message::Text(text.into()), false).await
    }

    /// Sends a message now.
    pub(crate) async fn send_or_end(&mut self, msg: &ServerMessage) -> Result<(), End> {
        let text = self.text_of(msg)?;
        self.write(Message::Text(text.into()), true).await
    }

    /// Sends what [`Self::feed`] queued.
    pub(crate) async fn flush(&mut self) -> Result<(), End> {
        self.with_deadline(futures::SinkExt::flush).await
    }

    /// Sends an `error` message.
    pub(crate) async fn send_error(
        &mut self,
        error: SocketError,
        message: String,
    ) -> Result<(), End> {
        let request_id = Some(self.request_id.clone());
        self.send_or_end(&ServerMessage::Error {
            code: error.code().into(),
            slug: error.slug().into(),
            message,
            request_id,
        })
        .await
    }

    /// Answers a bad client message with an `error`; the session goes on.
    pub(crate) async fn client_error(
        &mut self,
        error: SocketError,
        message: String,
    ) -> Result<(), End> {
        tracing::debug!(code = error.code(), %message, "bad client message");
        self.rejected = true;
        self.last_refusal = Some(message.clone());
        self.send_error(error, message).await
    }

    /// Sends a close frame (after the socket's deadline, as any write).
    pub(crate) async fn close(&mut self, code: u16, reason: &str) {
        let _ = self
            .write(
                Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.to_string().into(),
                })),
                true,
            )
            .await;
    }

    /// Refuses the chat at connect: an `error`, then the close, and no chat is left behind.
    /// Refusals that a retry cannot fix close with 1000 (the TypeScript SDK reconnects on
    /// any other code); the others with 1011.
    pub(crate) async fn refuse(&mut self, error: SocketError, message: String) {
        tracing::info!(code = error.code(), slug = error.slug(), %message, "chat refused");
        let close = if error.retry_may_help() { 1011 } else { 1000 };
        if self.send_error(error, message).await.is_ok() {
            self.close(close, error.slug()).await;
        }
    }
}
