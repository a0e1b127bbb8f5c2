//! The relay engine: the chat is relayed to an upstream EVI-compatible socket.
//!
//! [`connect`] opens the upstream socket with the client's own query parameters (minus its
//! Colloquy credentials, with `resumed_chat_group_id` mapped to the upstream group) and
//! waits for the upstream's `chat_metadata`. The session loop then forwards every client
//! message up and every upstream message down, recording both ways; the helpers here map
//! upstream message ids to Colloquy's event ids and pull prosody scores out of messages.

use crate::config::RelaySettings;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// Query parameters that are the client's credentials for Colloquy, never sent upstream.
const COLLOQUY_ONLY_PARAMS: [&str; 3] = ["api_key", "access_token", "resumed_chat_group_id"];

/// Why the upstream could not be used; the text is what the client and the chat's
/// `CHAT_END_MESSAGE` are told.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting, the handshake or the first message failed.
    #[error("{0}")]
    Unavailable(String),
    /// The upstream closed the socket or the connection dropped during the chat.
    #[error("{0}")]
    Closed(String),
    /// The upstream stayed silent (not even answering pings) for too long.
    #[error("{0}")]
    Timeout(String),
    /// The upstream ended the chat normally (close code 1000, e.g. after `hang_up`).
    #[error("{0}")]
    Ended(String),
}

/// The ids the upstream gave its side of the chat (its `chat_metadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamIds {
    /// Upstream chat id.
    pub chat_id: String,
    /// Upstream chat group id.
    pub chat_group_id: String,
    /// Upstream request id, if it sent one.
    pub request_id: Option<String>,
}

impl UpstreamIds {
    /// The `upstream` object stored in the chat's metadata.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "chat_id": self.chat_id,
            "chat_group_id": self.chat_group_id,
        });
        if let Some(r) = &self.request_id {
            v["request_id"] = Value::String(r.clone());
        }
        v
    }

    /// The upstream group recorded in a chat's metadata (stringified JSON), if any.
    pub fn group_in_metadata(metadata: &str) -> Option<String> {
        let v: Value = serde_json::from_str(metadata).ok()?;
        v.get("upstream")?
            .get("chat_group_id")?
            .as_str()
            .map(str::to_string)
    }
}

/// An open upstream chat socket.
pub struct Upstream {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Its `chat_metadata` ids.
    pub ids: UpstreamIds,
    /// Where it is (scheme, host, path; never credentials), for messages.
    pub endpoint: String,
    idle_timeout: Duration,
    last_heard: Instant,
    last_ping: Instant,
}

/// What the upstream sent.
pub enum Incoming {
    /// A text frame.
    Text(String),
    /// A binary frame (not part of the protocol; forwarded unchanged).
    Binary(Vec<u8>),
}

impl Upstream {
    /// Next frame worth handling; pings and pongs only count as signs of life.
    pub async fn recv(&mut self) -> Result<Incoming, UpstreamError> {
        loop {
            let next = self.ws.next().await;
            self.last_heard = Instant::now();
            match next {
                Some(Ok(Message::Text(t))) => return Ok(Incoming::Text(t.as_str().to_string())),
                Some(Ok(Message::Binary(b))) => return Ok(Incoming::Binary(b.to_vec())),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => {
                    if let Some(f) = frame.as_ref().filter(|f| f.code == CloseCode::Normal) {
                        return Err(UpstreamError::Ended(format!(
                            "the upstream EVI server {} ended the chat ({})",
                            self.endpoint,
                            if f.reason.is_empty() {
                                "code 1000"
                            } else {
                                f.reason.as_str()
                            }
                        )));
                    }
                    let how = match frame {
                        Some(f) if f.reason.is_empty() => format!(" (code {})", u16::from(f.code)),
                        Some(f) => format!(" (code {}: {})", u16::from(f.code), f.reason),
                        None => String::new(),
                    };
                    return Err(UpstreamError::Closed(format!(
                        "the upstream EVI server {} closed the chat{how}",
                        self.endpoint
                    )));
                }
                Some(Err(e)) => {
                    return Err(UpstreamError::Closed(format!(
                        "the connection to the upstream EVI server {} failed: {e}",
                        self.endpoint
                    )))
                }
                None => {
                    return Err(UpstreamError::Closed(format!(
                        "the connection to the upstream EVI server {} was lost",
                        self.endpoint
                    )))
                }
            }
        }
    }

    /// Sends a frame up.
    pub async fn send(&mut self, msg: Message) -> Result<(), UpstreamError> {
        self.ws.send(msg).await.map_err(|e| {
            UpstreamError::Closed(format!(
                "could not send to the upstream EVI server {}: {e}",
                self.endpoint
            ))
        })
    }

    /// When the upstream must next be pinged (a third of the idle timeout after it was
    /// last heard from or pinged) or declared dead, whichever comes first.
    pub fn next_check(&self) -> Instant {
        let ping = self.last_heard.max(self.last_ping) + self.idle_timeout / 3;
        ping.min(self.last_heard + self.idle_timeout)
    }

    /// Pings a quiet upstream; an error once it has been silent for the idle timeout.
    pub async fn keep_alive(&mut self) -> Result<(), UpstreamError> {
        let now = Instant::now();
        if now >= self.last_heard + self.idle_timeout {
            return Err(UpstreamError::Timeout(format!(
                "the upstream EVI server {} sent nothing and did not answer pings for {} s \
                 (engine.relay.idle_timeout_secs)",
                self.endpoint,
                self.idle_timeout.as_secs()
            )));
        }
        if now >= self.last_ping + self.idle_timeout / 3 {
            self.last_ping = now;
            self.send(Message::Ping(Vec::new().into())).await?;
        }
        Ok(())
    }

    /// Closes the upstream socket politely (best effort, bounded in time).
    pub async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "chat ended".into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.ws.close(Some(frame)).await;
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// The upstream URL without query or credentials, for messages and logs.
pub fn endpoint_of(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => no_query.to_string(),
    }
}

/// The upstream URL: the configured one, plus the client's query parameters except its
/// Colloquy credentials, plus the upstream group to resume and the upstream access token.
pub fn upstream_url(
    relay: &RelaySettings,
    client_query: &[(String, String)],
    upstream_group: Option<&str>,
) -> String {
    let base = relay.url.as_deref().unwrap_or_default();
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in client_query {
        if !COLLOQUY_ONLY_PARAMS.contains(&k.as_str()) {
            q.append_pair(k, v);
        }
    }
    if let Some(g) = upstream_group {
        q.append_pair("resumed_chat_group_id", g);
    }
    if let Some(t) = &relay.access_token {
        q.append_pair("access_token", t);
    }
    let query = q.finish();
    if query.is_empty() {
        base.to_string()
    } else if base.contains('?') {
        format!("{base}&{query}")
    } else {
        format!("{base}?{query}")
    }
}

/// Opens the upstream socket and waits for its `chat_metadata`, all within
/// `connect_timeout_secs`.
pub async fn connect(
    relay: &RelaySettings,
    client_query: &[(String, String)],
    upstream_group: Option<&str>,
    max_message_bytes: usize,
) -> Result<Upstream, UpstreamError> {
    let url = upstream_url(relay, client_query, upstream_group);
    let endpoint = endpoint_of(relay.url.as_deref().unwrap_or_default());
    let timeout = Duration::from_secs(relay.connect_timeout_secs);
    let unavailable = |why: String| {
        UpstreamError::Unavailable(format!(
            "could not open the upstream EVI chat at {endpoint}: {why}"
        ))
    };
    let mut req = url
        .into_client_request()
        .map_err(|e| unavailable(format!("invalid engine.relay.url ({e})")))?;
    if let Some(key) = &relay.api_key {
        let value = key
            .parse()
            .map_err(|_| unavailable("engine.relay.api_key is not a valid header value".into()))?;
        req.headers_mut().insert("X-Hume-Api-Key", value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message_bytes.saturating_mul(4)))
        .max_frame_size(Some(max_message_bytes.saturating_mul(4)));
    let attempt = async {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
            .await
            .map_err(|e| unavailable(describe_connect_error(&e)))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let ids = parse_chat_metadata(t.as_str()).map_err(unavailable)?;
                    return Ok((ws, ids));
                }
                Some(Ok(Message::Close(f))) => {
                    let why = f.map_or(String::new(), |f| {
                        format!(" (code {}: {})", u16::from(f.code), f.reason)
                    });
                    return Err(unavailable(format!(
                        "it closed the socket before chat_metadata{why}"
                    )));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(unavailable(format!("{e}"))),
                None => return Err(unavailable("it closed the connection".into())),
            }
        }
    };
    let (ws, ids) = tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        unavailable(format!(
            "no chat_metadata within {} s (engine.relay.connect_timeout_secs)",
            timeout.as_secs()
        ))
    })??;
    let now = Instant::now();
    Ok(Upstream {
        ws,
        ids,
        endpoint,
        idle_timeout: Duration::from_secs(relay.idle_timeout_secs),
        last_heard: now,
        last_ping: now,
    })
}

fn describe_connect_error(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => {
            let status = resp.status();
            let hint = match status.as_u16() {
                401 | 403 => " (check engine.relay.api_key / access_token)",
                404 => " (check the path of engine.relay.url)",
                _ => "",
            };
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned())
                .filter(|b| !b.trim().is_empty())
                .map_or(String::new(), |b| format!(": {}", b.trim()));
            format!("it refused the connection with HTTP {status}{hint}{body}")
        }
        tungstenite::Error::Io(io) => format!("{io}"),
        other => format!("{other}"),
    }
}

/// Reads the upstream's first message, which must be `chat_metadata`.
fn parse_chat_metadata(text: &str) -> Result<UpstreamIds, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("its first message is not JSON ({e})"))?;
    match v.get("type").and_then(Value::as_str) {
        Some("chat_metadata") => {}
        Some("error") => {
            return Err(format!(
                "it answered with error {} ({}): {}",
                v["code"].as_str().unwrap_or("?"),
                v["slug"].as_str().unwrap_or("?"),
                v["message"].as_str().unwrap_or("")
            ))
        }
        other => {
            return Err(format!(
                "its first message is `{}`, not chat_metadata",
                other.unwrap_or("(no type)")
            ))
        }
    }
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("its chat_metadata has no {k}"))
    };
    Ok(UpstreamIds {
        chat_id: field("chat_id")?,
        chat_group_id: field("chat_group_id")?,
        request_id: v
            .get("request_id")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// Upstream assistant-message ids mapped to the ids of Colloquy's `AGENT_MESSAGE` events,
/// so `assistant_message`, `assistant_prosody` and `audio_output` keep pointing at each
/// other after the ids are rewritten.
#[derive(Debug, Default)]
pub struct IdMap {
    ids: HashMap<String, Uuid>,
}

impl IdMap {
    /// Colloquy's id for an upstream message id (minted on first sight).
    pub fn local(&mut self, upstream: &str) -> Uuid {
        *self
            .ids
            .entry(upstream.to_string())
            .or_insert_with(Uuid::now_v7)
    }
}

/// `models.prosody.scores` of a message as stringified JSON (for `emotion_features`), if
/// the upstream sent scores.
pub fn prosody_scores(msg: &Value) -> Option<String> {
    let scores = msg.get("models")?.get("prosody")?.get("scores")?;
    match scores {
        Value::Object(m) if !m.is_empty() => Some(scores.to_string()),
        _ => None,
    }
}

/// `message.content` of a `user_message` / `assistant_message`.
pub fn content(msg: &Value) -> String {
    msg.get("message")
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn relay(url: &str) -> RelaySettings {
        RelaySettings {
            url: Some(url.into()),
            ..Default::default()
        }
    }

    #[test]
    fn upstream_url_keeps_the_query_but_not_colloquy_credentials() {
        let q: Vec<(String, String)> = form_urlencoded::parse(
            b"api_key=mine&config_id=c1&resumed_chat_group_id=ours&session_settings%5Bvariables%5D%5Bage%5D=30.0",
        )
        .into_owned()
        .collect();
        let url = upstream_url(&relay("wss://up.example/v0/evi/chat"), &q, Some("theirs"));
        assert_eq!(
            url,
            "wss://up.example/v0/evi/chat?config_id=c1&session_settings%5Bvariables%5D%5Bage%5D=30.0&resumed_chat_group_id=theirs"
        );
        let mut r = relay("ws://h/chat?x=1");
        r.access_token = Some("tok".into());
        assert_eq!(
            upstream_url(&r, &[], None),
            "ws://h/chat?x=1&access_token=tok"
        );
        assert_eq!(
            upstream_url(&relay("ws://h/chat"), &[], None),
            "ws://h/chat"
        );
    }

    #[test]
    fn endpoints_hide_credentials() {
        assert_eq!(
            endpoint_of("wss://u:p@api.hume.ai/v0/evi/chat?access_token=x"),
            "wss://api.hume.ai/v0/evi/chat"
        );
    }

    #[test]
    fn first_message_must_be_chat_metadata() {
        let ids = parse_chat_metadata(
            r#"{"type":"chat_metadata","chat_id":"c","chat_group_id":"g","request_id":"r"}"#,
        )
        .unwrap();
        assert_eq!(ids.chat_group_id, "g");
        let meta = json!({ "upstream": ids.to_json() }).to_string();
        assert_eq!(UpstreamIds::group_in_metadata(&meta).as_deref(), Some("g"));
        let err = parse_chat_metadata(
            r#"{"type":"error","code":"E0700","slug":"bad_key","message":"nope"}"#,
        )
        .unwrap_err();
        assert!(err.contains("E0700") && err.contains("nope"), "{err}");
        assert!(parse_chat_metadata("{}").is_err());
    }

    #[tokio::test]
    async fn wss_urls_get_tls_and_failures_are_explained() {
        // A plain TCP server: the TLS handshake fails, with an error rather than a panic
        // (the rustls crypto provider is available).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let mut r = relay(&format!("wss://localhost:{}/v0/evi/chat", addr.port()));
        r.connect_timeout_secs = 5;
        let err = connect(&r, &[], None, 1 << 20)
            .await
            .err()
            .expect("no TLS server");
        assert!(matches!(err, UpstreamError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("wss://localhost"), "{err}");
        assert!(!err.to_string().contains("not compiled"), "{err}");
    }

    #[test]
    fn scores_and_ids() {
        let m = json!({"models": {"prosody": {"scores": {"Joy": 0.5}}}});
        assert_eq!(prosody_scores(&m).as_deref(), Some(r#"{"Joy":0.5}"#));
        assert_eq!(prosody_scores(&json!({"models": {}})), None);
        let mut ids = IdMap::default();
        let a = ids.local("up-1");
        assert_eq!(ids.local("up-1"), a);
        assert_ne!(ids.local("up-2"), a);
    }
}
