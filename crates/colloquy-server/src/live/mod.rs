//! The chats running on this server, reachable by id for the control plane
//! (`crate::control`): a message posted into a chat, and observers attached to it.
//!
//! A session registers itself once its chat is open ([`LiveSessions::register`]) and is
//! removed when its [`Registration`] is dropped. Each one has a queue of [`Control`]
//! requests that its loop handles in order with the client's own messages, so a posted
//! message is validated, recorded and echoed exactly like one from the client.

pub mod remote;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Requests a live session takes from its queue (at most this many waiting).
pub const CONTROL_QUEUE: usize = 64;

/// Messages an observer may fall behind by before it is dropped (the chat never waits for
/// an observer).
pub const OBSERVER_QUEUE: usize = 1024;

/// What an observer receives.
#[derive(Debug, Clone)]
pub enum Observed {
    /// A server message, as the chat's client received it (JSON text).
    Message(Arc<str>),
    /// The chat ended: the observer's socket closes (1000) with this reason.
    Ended(String),
}

/// An observer attached to a chat; the session fans its messages out to these.
pub type ObserverTx = mpsc::Sender<Observed>;

/// What a control request asks of a live session.
pub enum Control {
    /// A client message posted through `POST /v0/evi/chat/{id}/send` or an observer; the
    /// answer comes once it is handled (its events committed and echoed).
    Publish {
        /// The message (already checked to parse as a client message other than audio).
        raw: String,
        /// `Ok` once handled; `Err` with the `error` message if the session refused it.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// An observer attaches; the answer is the sequence number of the chat's next event
    /// (the stored events before it are the history the observer is sent first), and the
    /// `chat_metadata` of the chat.
    Observe {
        /// Where the session sends its messages from now on.
        tx: ObserverTx,
        /// The answer.
        reply: oneshot::Sender<Attached>,
    },
}

/// What an observer gets when it attaches.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The chat's `chat_metadata` message, as its client received it.
    pub chat_metadata: String,
    /// Stored events with a smaller sequence number are the history so far.
    pub next_seq: i64,
    /// Epoch ms the chat started (for the history's `user_message` times).
    pub start_ms: i64,
    /// For retention-disabled accounts (nothing stored): the messages the session still
    /// holds, oldest first.
    pub held: Vec<Arc<str>>,
}

/// One live chat as the registry knows it.
#[derive(Clone)]
struct Entry {
    user_id: Uuid,
    allow_connection: bool,
    tx: mpsc::Sender<Control>,
}

/// Why a chat cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// No such live chat for this account (unknown, another account's, or ended).
    NotFound,
    /// The chat was not opened with `allow_connection=true` (observers only).
    NotAllowed,
}

/// The live chats of this server.
#[derive(Default)]
pub struct LiveSessions {
    chats: Mutex<HashMap<Uuid, Entry>>,
}

/// A session's place in the registry; dropping it removes the chat.
pub struct Registration {
    live: Arc<LiveSessions>,
    chat_id: Uuid,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut chats) = self.live.chats.lock() {
            chats.remove(&self.chat_id);
        }
    }
}

impl LiveSessions {
    /// Registers a chat; its control requests arrive on the returned receiver.
    pub fn register(
        self: &Arc<Self>,
        chat_id: Uuid,
        user_id: Uuid,
        allow_connection: bool,
    ) -> (Registration, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        if let Ok(mut chats) = self.chats.lock() {
            chats.insert(
                chat_id,
                Entry {
                    user_id,
                    allow_connection,
                    tx,
                },
            );
        }
        let registration = Registration {
            live: self.clone(),
            chat_id,
        };
        (registration, rx)
    }

    /// The control queue of `user_id`'s live chat `chat_id`; `observing`: for an observer
    /// (which needs `allow_connection`).
    pub fn find(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
        observing: bool,
    ) -> Result<mpsc::Sender<Control>, Unreachable> {
        let chats = self.chats.lock().map_err(|_| Unreachable::NotFound)?;
        match chats.get(&chat_id) {
            Some(e) if e.user_id == user_id => {
                if observing && !e.allow_connection {
                    Err(Unreachable::NotAllowed)
                } else {
                    Ok(e.tx.clone())
                }
            }
            _ => Err(Unreachable::NotFound),
        }
    }

    /// How many chats are live here.
    pub fn len(&self) -> usize {
        self.chats.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Whether no chat is live here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chats_are_found_by_their_account_only_while_registered() {
        let live = Arc::new(LiveSessions::default());
        let (chat, user, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (reg, _rx) = live.register(chat, user, false);
        assert!(live.find(user, chat, false).is_ok());
        assert_eq!(
            live.find(user, chat, true).unwrap_err(),
            Unreachable::NotAllowed
        );
        assert_eq!(
            live.find(other, chat, false).unwrap_err(),
            Unreachable::NotFound
        );
        drop(reg);
        assert_eq!(
            live.find(user, chat, false).unwrap_err(),
            Unreachable::NotFound
        );
        assert!(live.is_empty());
    }
}
