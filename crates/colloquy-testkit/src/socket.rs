//! Chat sockets: opening one (with the key in the header or the URL) and JSON frames.
//!
//! The `recv_*` helpers are for tests: they panic, and give up after 10 s. [`next_json`] and
//! [`open_chat`] return errors and never time out, for the benchmarks.

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::Message;

/// A client WebSocket (to the server, or to a fake upstream).
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long the `recv_*` helpers wait.
const WAIT: Duration = Duration::from_secs(10);

/// A request for `url` with `key` in the `X-Hume-Api-Key` header.
pub fn keyed_request(url: &str, key: &str) -> anyhow::Result<Request> {
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("X-Hume-Api-Key", key.parse()?);
    Ok(req)
}

/// The client's socket settings: a 4 KiB read buffer, as the server's own. tungstenite's
/// default (128 KiB) is zeroed before every read, which cost the `ingest` benchmark's
/// clients 5% of the machine's CPU (docs/benchmarks.md, session 10).
fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4 * 1024)
}

/// Opens the chat socket `url` (with `key` in the header, or none when the URL carries the
/// credentials) and reads its first message, which must be `chat_metadata`; `nodelay` sets
/// `TCP_NODELAY` on the client's side. The socket and that message.
pub async fn open_chat(url: &str, key: Option<&str>, nodelay: bool) -> anyhow::Result<(Ws, Value)> {
    let req = match key {
        Some(key) => keyed_request(url, key)?,
        None => url.into_client_request()?,
    };
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(req, Some(client_config()), nodelay)
            .await
            .with_context(|| format!("connecting to {url}"))?;
    let meta = next_json(&mut ws).await?;
    anyhow::ensure!(meta["type"] == "chat_metadata", "first message: {meta}");
    Ok((ws, meta))
}

/// The next JSON text message of a socket, skipping pings and binary frames.
pub async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        match ws.next().await.context("the socket closed")?? {
            Message::Text(t) => return Ok(serde_json::from_str(t.as_str())?),
            Message::Close(c) => anyhow::bail!("the server closed the chat: {c:?}"),
            _ => {}
        }
    }
}

/// Sends `v` as a text frame.
pub async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Next text message as JSON (fails after 10 s, or when the socket closes).
pub async fn recv_json(ws: &mut Ws) -> Value {
    tokio::time::timeout(WAIT, next_json(ws))
        .await
        .expect("timed out waiting for a message")
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Waits for the server's close frame; returns its code.
pub async fn recv_close(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Close(c)))) => return c.map(|c| u16::from(c.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return None,
            Err(_) => panic!("timed out waiting for close"),
        }
    }
}

/// Reads for up to `wait`; the close code if the server closed the socket meanwhile.
pub async fn recv_until_close(ws: &mut Ws, wait: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Close(c)))) => {
                return Some(c.map(|c| u16::from(c.code)).unwrap_or(1005))
            }
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return Some(1006),
        }
    }
}

/// The `type` of each event (or message).
pub fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}
