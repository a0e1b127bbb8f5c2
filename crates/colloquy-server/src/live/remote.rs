//! Live chats on other servers sharing the PostgreSQL database: control-plane requests and
//! observer streams travel as messages between servers through the database itself
//! (`NOTIFY` / `LISTEN` on one channel per server instance, [`colloquy_storage::LiveStore`]).
//!
//! A request names the chat; the server that does not run it asks the database which
//! instance owns it (an `ACTIVE` chat whose owner has a fresh heartbeat) and sends the
//! request to that instance's channel. The owner hands it to the chat's session as a local
//! request would ([`super::LiveSessions`]) and answers on the requester's channel. An
//! observer attached through another server gets the owner's stream of messages forwarded
//! the same way, in order (one sender task per server sends every message in turn).
//! Messages longer than one `NOTIFY` are split into parts and joined again on arrival.

use super::{Attached, Control, LiveSessions, Observed, ObserverTx, Unreachable, OBSERVER_QUEUE};
use base64::Engine as _;
use colloquy_storage::{Store, MAX_PAYLOAD};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How long an owner has to say whether an observer is attached.
const ATTACH_WITHIN: Duration = Duration::from_secs(10);

/// What servers send each other.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Wire {
    /// A client message for a chat of the receiver.
    Publish {
        req: Uuid,
        from: Uuid,
        user: Uuid,
        chat: Uuid,
        raw: String,
    },
    /// The answer to a publish: `None` handled, else the refusal (`not_found` or the
    /// session's `error` message).
    Reply { req: Uuid, refusal: Option<Refusal> },
    /// An observer (`obs`, on the sender) attaches to a chat of the receiver.
    Observe {
        req: Uuid,
        from: Uuid,
        user: Uuid,
        chat: Uuid,
        obs: Uuid,
    },
    /// The answer to an observe.
    Attached {
        req: Uuid,
        attached: Option<AttachedWire>,
        refusal: Option<Refusal>,
    },
    /// A message for an observer.
    Observed { obs: Uuid, msg: String },
    /// The observed chat ended.
    Ended { obs: Uuid, reason: String },
    /// The observer left.
    Unobserve { obs: Uuid },
    /// One part of a longer message (base64 of its bytes).
    Part {
        id: Uuid,
        n: u32,
        of: u32,
        data: String,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// No such live chat for the account.
    NotFound,
    /// The chat does not allow observers.
    NotAllowed,
    /// The session refused the message with this `error` message.
    Refused(String),
    /// The owner did not answer in time.
    Timeout,
}

#[derive(Debug, Serialize, Deserialize)]
struct AttachedWire {
    chat_metadata: String,
    next_seq: i64,
    start_ms: i64,
    held: Vec<String>,
}

/// This server's end of the messages between servers.
pub struct Remote {
    store: Arc<dyn Store>,
    instance_id: Uuid,
    live: Arc<LiveSessions>,
    /// Messages to send, in order: (instance, message).
    outbox: mpsc::UnboundedSender<(Uuid, String)>,
    /// Requests of this server waiting for their answer.
    pending: Mutex<HashMap<Uuid, oneshot::Sender<Wire>>>,
    /// Observers on this server of chats elsewhere.
    observers: Mutex<HashMap<Uuid, ObserverTx>>,
    /// Streams this server forwards to observers elsewhere.
    forwarders: Mutex<HashMap<Uuid, JoinHandle<()>>>,
    /// Parts of longer messages being joined: (parts so far).
    parts: Mutex<HashMap<Uuid, Vec<u8>>>,
}

/// The channel of an instance.
fn channel(instance: Uuid) -> String {
    format!("colloquy_live_{}", instance.simple())
}

impl Remote {
    /// Starts listening on this instance's channel; `None` when the database is not shared
    /// (SQLite) or cannot be listened to.
    pub async fn start(
        store: Arc<dyn Store>,
        instance_id: Uuid,
        live: Arc<LiveSessions>,
    ) -> Option<Arc<Self>> {
        if !store.shared() {
            return None;
        }
        let mut incoming = match store.listen(&channel(instance_id)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for other servers; the control plane reaches this server's chats only");
                return None;
            }
        };
        let (outbox, mut queue) = mpsc::unbounded_channel::<(Uuid, String)>();
        let remote = Arc::new(Remote {
            store: store.clone(),
            instance_id,
            live,
            outbox,
            pending: Mutex::default(),
            observers: Mutex::default(),
            forwarders: Mutex::default(),
            parts: Mutex::default(),
        });
        tokio::spawn(async move {
            while let Some((to, msg)) = queue.recv().await {
                for payload in split(&msg) {
                    if let Err(e) = store.notify(&channel(to), &payload).await {
                        tracing::warn!(error = %e, "could not reach another server");
                    }
                }
            }
        });
        let weak = Arc::downgrade(&remote);
        tokio::spawn(async move {
            while let Some(payload) = incoming.next().await {
                let Some(remote) = weak.upgrade() else { return };
                remote.receive(&payload);
            }
        });
        Some(remote)
    }

    fn send(&self, to: Uuid, msg: &Wire) {
        if let Ok(text) = serde_json::to_string(msg) {
            let _ = self.outbox.send((to, text));
        }
    }

    /// The instance running `user_id`'s chat `chat_id`, if another live one does.
    pub async fn owner(&self, user_id: Uuid, chat_id: Uuid) -> Option<Uuid> {
        let owner = self.store.live_chat_owner(user_id, chat_id).await.ok()??;
        let fresh = owner.heartbeat_at.is_some_and(|at| {
            crate::clock::now_ms() - at < crate::server::STALE_AFTER.as_millis() as i64
        });
        (fresh && owner.instance_id != self.instance_id).then_some(owner.instance_id)
    }

    /// Whether `user_id`'s chat `chat_id` still runs on a live server other than this one.
    pub async fn still_running(&self, user_id: Uuid, chat_id: Uuid) -> bool {
        self.owner(user_id, chat_id).await.is_some()
    }

    async fn request(&self, to: Uuid, req: Uuid, msg: Wire, within: Duration) -> Option<Wire> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().ok()?.insert(req, tx);
        self.send(to, &msg);
        let answer = tokio::time::timeout(within, rx)
            .await
            .ok()
            .and_then(Result::ok);
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&req);
        }
        answer
    }

    /// Posts `raw` into a chat running on server `to` (its [`Self::owner`]); waits for it
    /// to be handled.
    pub async fn publish(
        &self,
        to: Uuid,
        user_id: Uuid,
        chat_id: Uuid,
        raw: String,
        within: Duration,
    ) -> Result<(), Refusal> {
        let req = Uuid::new_v4();
        let msg = Wire::Publish {
            req,
            from: self.instance_id,
            user: user_id,
            chat: chat_id,
            raw,
        };
        match self.request(to, req, msg, within).await {
            Some(Wire::Reply { refusal: None, .. }) => Ok(()),
            Some(Wire::Reply {
                refusal: Some(r), ..
            }) => Err(r),
            _ => Err(Refusal::Timeout),
        }
    }

    /// Attaches `tx` as an observer of a chat running on another server. The returned
    /// guard detaches it when dropped.
    pub async fn observe(
        self: &Arc<Self>,
        user_id: Uuid,
        chat_id: Uuid,
        tx: ObserverTx,
    ) -> Result<(Attached, RemoteObserver), Unreachable> {
        let to = self
            .owner(user_id, chat_id)
            .await
            .ok_or(Unreachable::NotFound)?;
        let (req, obs) = (Uuid::new_v4(), Uuid::new_v4());
        if let Ok(mut o) = self.observers.lock() {
            o.insert(obs, tx);
        }
        let guard = RemoteObserver {
            remote: self.clone(),
            owner: to,
            obs,
        };
        let msg = Wire::Observe {
            req,
            from: self.instance_id,
            user: user_id,
            chat: chat_id,
            obs,
        };
        match self.request(to, req, msg, ATTACH_WITHIN).await {
            Some(Wire::Attached {
                attached: Some(a), ..
            }) => Ok((
                Attached {
                    chat_metadata: a.chat_metadata,
                    next_seq: a.next_seq,
                    start_ms: a.start_ms,
                    held: a.held.into_iter().map(Arc::from).collect(),
                },
                guard,
            )),
            Some(Wire::Attached {
                refusal: Some(Refusal::NotAllowed),
                ..
            }) => Err(Unreachable::NotAllowed),
            _ => Err(Unreachable::NotFound),
        }
    }

    /// One message from another server.
    fn receive(self: &Arc<Self>, payload: &str) {
        let msg: Wire = match serde_json::from_str(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable message from another server");
                return;
            }
        };
        match msg {
            Wire::Part { id, n, of, data } => {
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
                    return;
                };
                let whole = {
                    let Ok(mut parts) = self.parts.lock() else {
                        return;
                    };
                    let buf = parts.entry(id).or_default();
                    buf.extend_from_slice(&bytes);
                    if n + 1 < of {
                        return;
                    }
                    parts.remove(&id)
                };
                if let Some(text) = whole.and_then(|b| String::from_utf8(b).ok()) {
                    self.receive(&text);
                }
            }
            Wire::Reply { req, .. } | Wire::Attached { req, .. } => {
                let waiting = self.pending.lock().ok().and_then(|mut p| p.remove(&req));
                if let Some(tx) = waiting {
                    let _ = tx.send(msg);
                }
            }
            Wire::Observed { obs, msg } => self.to_observer(obs, Observed::Message(Arc::from(msg))),
            Wire::Ended { obs, reason } => self.to_observer(obs, Observed::Ended(reason)),
            Wire::Unobserve { obs } => {
                if let Some(task) = self.forwarders.lock().ok().and_then(|mut f| f.remove(&obs)) {
                    task.abort();
                }
            }
            Wire::Publish {
                req,
                from,
                user,
                chat,
                raw,
            } => {
                let remote = self.clone();
                tokio::spawn(async move {
                    let refusal = match remote.live.find(user, chat, false) {
                        Err(_) => Some(Refusal::NotFound),
                        Ok(tx) => {
                            let (reply, handled) = oneshot::channel();
                            if tx.send(Control::Publish { raw, reply }).await.is_err() {
                                Some(Refusal::NotFound)
                            } else {
                                match handled.await {
                                    Ok(Ok(())) => None,
                                    Ok(Err(m)) => Some(Refusal::Refused(m)),
                                    Err(_) => Some(Refusal::NotFound),
                                }
                            }
                        }
                    };
                    remote.send(from, &Wire::Reply { req, refusal });
                });
            }
            Wire::Observe {
                req,
                from,
                user,
                chat,
                obs,
            } => {
                let remote = self.clone();
                tokio::spawn(async move { remote.forward(req, from, user, chat, obs).await });
            }
        }
    }

    fn to_observer(&self, obs: Uuid, item: Observed) {
        let ended = matches!(item, Observed::Ended(_));
        let Ok(mut observers) = self.observers.lock() else {
            return;
        };
        if let Some(tx) = observers.get(&obs) {
            if tx.try_send(item).is_err() || ended {
                observers.remove(&obs);
            }
        }
    }

    /// Attaches a local observer to this server's chat for an observer on `from`, and
    /// forwards what it receives.
    async fn forward(self: Arc<Self>, req: Uuid, from: Uuid, user: Uuid, chat: Uuid, obs: Uuid) {
        let refuse = |refusal| Wire::Attached {
            req,
            attached: None,
            refusal: Some(refusal),
        };
        let control = match self.live.find(user, chat, true) {
            Ok(c) => c,
            Err(Unreachable::NotAllowed) => return self.send(from, &refuse(Refusal::NotAllowed)),
            Err(Unreachable::NotFound) => return self.send(from, &refuse(Refusal::NotFound)),
        };
        let (tx, mut rx) = mpsc::channel(OBSERVER_QUEUE);
        let (reply, attached) = oneshot::channel();
        if control.send(Control::Observe { tx, reply }).await.is_err() {
            return self.send(from, &refuse(Refusal::NotFound));
        }
        let Ok(a) = attached.await else {
            return self.send(from, &refuse(Refusal::NotFound));
        };
        self.send(
            from,
            &Wire::Attached {
                req,
                attached: Some(AttachedWire {
                    chat_metadata: a.chat_metadata,
                    next_seq: a.next_seq,
                    start_ms: a.start_ms,
                    held: a.held.iter().map(|m| m.to_string()).collect(),
                }),
                refusal: None,
            },
        );
        let remote = self.clone();
        let task = tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                let msg = match item {
                    Observed::Message(m) => Wire::Observed {
                        obs,
                        msg: m.to_string(),
                    },
                    Observed::Ended(reason) => Wire::Ended { obs, reason },
                };
                remote.send(from, &msg);
            }
        });
        if let Ok(mut f) = self.forwarders.lock() {
            f.insert(obs, task);
        }
    }
}

/// An observer of a chat on another server; detaches when dropped.
pub struct RemoteObserver {
    remote: Arc<Remote>,
    owner: Uuid,
    obs: Uuid,
}

impl Drop for RemoteObserver {
    fn drop(&mut self) {
        if let Ok(mut o) = self.remote.observers.lock() {
            o.remove(&self.obs);
        }
        self.remote
            .send(self.owner, &Wire::Unobserve { obs: self.obs });
    }
}

/// `msg` as `NOTIFY` payloads: itself, or [`Wire::Part`]s.
fn split(msg: &str) -> Vec<String> {
    if msg.len() <= MAX_PAYLOAD {
        return vec![msg.to_string()];
    }
    // base64 makes 4 characters of 3 bytes; leave room for the envelope.
    const PART_BYTES: usize = (MAX_PAYLOAD - 200) / 4 * 3;
    let id = Uuid::new_v4();
    let chunks: Vec<&[u8]> = msg.as_bytes().chunks(PART_BYTES).collect();
    let of = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .filter_map(|(n, c)| {
            serde_json::to_string(&Wire::Part {
                id,
                n: n as u32,
                of,
                data: base64::engine::general_purpose::STANDARD.encode(c),
            })
            .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_split_into_parts_that_fit() {
        let long = serde_json::to_string(&Wire::Observed {
            obs: Uuid::nil(),
            msg: "é".repeat(20_000),
        })
        .unwrap();
        let parts = split(&long);
        assert!(parts.len() > 1);
        let mut joined = Vec::new();
        for p in &parts {
            assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
            let Wire::Part { data, .. } = serde_json::from_str(p).unwrap() else {
                panic!("a part")
            };
            joined.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap(),
            );
        }
        assert_eq!(String::from_utf8(joined).unwrap(), long);
        assert_eq!(split("{\"t\":\"unobserve\"}").len(), 1);
    }
}
