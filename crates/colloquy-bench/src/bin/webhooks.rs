//! Chat webhooks (issue 14) against a local receiver, on the real server (SQLite,
//! `sqlite_synchronous = "full"`, a server-wide `[[webhooks.subscriptions]]` entry):
//!
//! 1. latency: `--chats` (100) chats are open; all close at once; the time from each
//!    client's close frame to its `chat_ended` reaching the receiver (`--rounds` rounds);
//! 2. burst: `--burst` (2,000) open chats close at once; every `chat_ended` must arrive
//!    exactly once (distinct delivery ids, one per chat); the rate is deliveries over the
//!    time from the first close to the last arrival;
//! 3. ingest: `--chats` clients each open one chat and send `user_input` messages (awaiting
//!    each echo) for `--seconds`, with webhooks off and on (`chat_started`, `chat_ended` and
//!    `tool_call` subscribed); messages per second of each, the runs alternated twice;
//! 4. churn (a worst case, not the target): the same, but each client closes its chat after
//!    `--messages` messages and opens another, so two webhooks are written and posted for
//!    every `--messages` messages.
//!
//! ```text
//! cargo run --release -p colloquy-bench --bin webhooks
//! ```

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use clap::Parser;
use colloquy_bench::stats::Summary;
use colloquy_server::config::ServerWebhook;
use colloquy_testkit::{open_chat, ServerThread, Ws};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// Concurrent chats of the latency and ingest phases.
    #[arg(long, default_value_t = 100)]
    chats: usize,
    /// Rounds of the latency phase.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Chats ending at once in the burst phase.
    #[arg(long, default_value_t = 2000)]
    burst: usize,
    /// Measured seconds of each ingest run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Messages per chat in the ingest phase.
    #[arg(long, default_value_t = 20)]
    messages: usize,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the clients' and the receiver's runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

/// What the receiver got: per chat id, arrival instants; per delivery id, a count.
#[derive(Default)]
struct Got {
    by_chat: HashMap<String, Vec<Instant>>,
    deliveries: HashMap<String, u32>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Got>>);

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let chat = v["chat_id"].as_str().unwrap_or_default().to_string();
    let delivery = headers
        .get("x-colloquy-delivery")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut g = r.0.lock().unwrap();
    g.by_chat.entry(chat).or_default().push(at);
    *g.deliveries.entry(delivery).or_default() += 1;
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> anyhow::Result<(Receiver, String)> {
    let r = Receiver::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((r, url))
}

async fn server(
    args: &Args,
    dir: &std::path::Path,
    hooks: Option<(&str, &[&str])>,
) -> anyhow::Result<ServerThread> {
    let mut settings = colloquy_testkit::settings(dir, None);
    settings.chat.inactivity_timeout_secs = 600;
    settings.audio.workers = 0;
    if let Some((url, events)) = hooks {
        settings.webhooks.subscriptions = vec![ServerWebhook {
            url: url.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            signing_key: "bench".into(),
        }];
    }
    ServerThread::start(settings, args.server_threads).await
}

/// Opens `n` chats, `conc` at a time.
async fn open_many(url: &str, key: &str, n: usize) -> anyhow::Result<Vec<(Ws, String)>> {
    let opened = futures::stream::iter(0..n)
        .map(|_| async move {
            let (ws, meta) = open_chat(url, Some(key), true).await?;
            anyhow::Ok((ws, meta["chat_id"].as_str().unwrap_or_default().to_string()))
        })
        .buffer_unordered(100)
        .collect::<Vec<_>>()
        .await;
    opened.into_iter().collect()
}

/// Closes every chat at once; each chat's close instant.
async fn close_all(chats: Vec<(Ws, String)>) -> HashMap<String, Instant> {
    let closing = chats.into_iter().map(|(mut ws, id)| async move {
        let at = Instant::now();
        let _ = ws.send(Message::Close(None)).await;
        tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
        (id, at)
    });
    futures::future::join_all(closing)
        .await
        .into_iter()
        .collect()
}

async fn wait_for(r: &Receiver, ids: &[String], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        {
            let g = r.0.lock().unwrap();
            if ids.iter().all(|id| g.by_chat.contains_key(id)) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

async fn ingest(args: &Args, hooks: Option<&str>, per_chat: usize) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let events: &[&str] = &["chat_started", "chat_ended", "tool_call"];
    let srv = server(args, dir.path(), hooks.map(|u| (u, events))).await?;
    let key = srv.key(None, true).await?.api_key;
    let url = srv.ws_url();
    let messages = Arc::new(AtomicU64::new(0));
    let chats = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let clients = (0..args.chats).map(|_| {
        let (url, key, messages, chats, n) = (
            url.clone(),
            key.clone(),
            messages.clone(),
            chats.clone(),
            per_chat,
        );
        tokio::spawn(async move {
            while Instant::now() < end {
                let (mut ws, _) = open_chat(&url, Some(&key), true).await?;
                for i in 0..n {
                    if Instant::now() >= end {
                        break;
                    }
                    let text = json!({"type": "user_input", "text": format!("message {i}")});
                    ws.send(Message::Text(text.to_string().into())).await?;
                    loop {
                        let m = colloquy_testkit::next_json(&mut ws).await?;
                        if m["type"] == "user_message" {
                            break;
                        }
                    }
                    messages.fetch_add(1, Ordering::Relaxed);
                }
                ws.send(Message::Close(None)).await?;
                while let Some(Ok(_)) = ws.next().await {}
                chats.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        })
    });
    for c in futures::future::join_all(clients).await {
        c??;
    }
    let secs = start.elapsed().as_secs_f64();
    srv.stop().await?;
    Ok((
        messages.load(Ordering::Relaxed) as f64 / secs,
        chats.load(Ordering::Relaxed) as f64 / secs,
    ))
}

async fn run(args: Args) -> anyhow::Result<()> {
    colloquy_bench::init_server_logging();
    colloquy_bench::sys::raise_nofile_limit();
    println!("machine: {}", colloquy_bench::sys::machine());
    let (rx, hook_url) = start_receiver().await?;

    // 1. Latency.
    let dir = tempfile::tempdir()?;
    let srv = server(&args, dir.path(), Some((&hook_url, &["chat_ended"]))).await?;
    let key = srv.key(None, true).await?.api_key;
    let url = srv.ws_url();
    let mut samples = Vec::new();
    for _ in 0..args.rounds {
        let chats = open_many(&url, &key, args.chats).await?;
        let ids: Vec<String> = chats.iter().map(|(_, id)| id.clone()).collect();
        let closed = close_all(chats).await;
        anyhow::ensure!(
            wait_for(&rx, &ids, Duration::from_secs(30)).await,
            "chat_ended did not arrive"
        );
        let g = rx.0.lock().unwrap();
        for id in &ids {
            samples.push(g.by_chat[id][0].duration_since(closed[id]));
        }
    }
    let lat = Summary::from_durations(&samples);
    println!(
        "latency, close → chat_ended at the receiver, {} chats × {} rounds: {lat}",
        args.chats, args.rounds
    );

    // 2. Burst.
    let chats = open_many(&url, &key, args.burst)
        .await
        .context("opening the burst")?;
    let ids: Vec<String> = chats.iter().map(|(_, id)| id.clone()).collect();
    let t0 = Instant::now();
    close_all(chats).await;
    anyhow::ensure!(
        wait_for(&rx, &ids, Duration::from_secs(120)).await,
        "the burst was not delivered"
    );
    let (last, once) = {
        let g = rx.0.lock().unwrap();
        let last = ids.iter().map(|id| g.by_chat[id][0]).max().unwrap();
        (last, ids.iter().all(|id| g.by_chat[id].len() == 1))
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (dup_deliveries, total) = {
        let g = rx.0.lock().unwrap();
        (
            g.deliveries.values().filter(|&&n| n > 1).count(),
            g.deliveries.len(),
        )
    };
    let secs = last.duration_since(t0).as_secs_f64();
    println!(
        "burst: {} chat ends, every one delivered once: {} (duplicated deliveries: {dup_deliveries}, \
         distinct delivery ids so far: {total}); {:.0} deliveries/s ({:.2} s from the first close to \
         the last arrival)",
        args.burst,
        once && dup_deliveries == 0,
        args.burst as f64 / secs,
        secs
    );
    srv.stop().await?;

    // 3. Ingest, and 4. churn, with webhooks off and on (alternated twice).
    for (what, per_chat) in [("ingest", usize::MAX), ("churn", args.messages)] {
        let mut off = Vec::new();
        let mut on = Vec::new();
        for _ in 0..2 {
            off.push(ingest(&args, None, per_chat).await?);
            on.push(ingest(&args, Some(&hook_url), per_chat).await?);
        }
        let mean = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
            v.iter().map(f).sum::<f64>() / v.len() as f64
        };
        let (m_off, m_on) = (mean(&off, |x| x.0), mean(&on, |x| x.0));
        println!(
            "{what} ({} clients, {} messages per chat, {} s): webhooks off {:.0} msg/s ({:.1} chats/s), \
             on {:.0} msg/s ({:.1} chats/s): {:+.1}% (runs off {:?}, on {:?})",
            args.chats,
            if per_chat == usize::MAX { "all".to_string() } else { per_chat.to_string() },
            args.seconds,
            m_off,
            mean(&off, |x| x.1),
            m_on,
            mean(&on, |x| x.1),
            (m_on / m_off - 1.0) * 100.0,
            off.iter().map(|x| x.0.round()).collect::<Vec<_>>(),
            on.iter().map(|x| x.0.round()).collect::<Vec<_>>(),
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = colloquy_bench::client_runtime(args.client_threads)?;
    rt.block_on(run(args))
}
