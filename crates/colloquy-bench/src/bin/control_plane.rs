//! The control plane's costs, against the real server (SQLite, `synchronous = full`, and
//! two servers on one PostgreSQL database):
//!
//! 1. `send` → the chat's client receives the message: `POST /v0/evi/chat/{id}/send` with a
//!    `user_input`, timed until the chat's client reads its `user_message` echo; one at a
//!    time over `--chats` open chats. Baseline in the same run: the same `user_input` sent
//!    by the chat's own client over its socket.
//! 2. The same across servers: the chat runs on server A, `send` goes to server B, both on
//!    one PostgreSQL database (skipped without PostgreSQL at 127.0.0.1:5432).
//! 3. Observers: the chat's own echo latency (client `user_input` → `user_message`) with
//!    no observer and with `--observers` observers attached (each reading everything),
//!    alternated over `--rounds` rounds.
//! 4. Memory: resident memory of this process (server and clients) before and after
//!    attaching `--idle-observers` idle observers to one chat.
//!
//! ```text
//! cargo run --release -p colloquy-bench --bin control_plane
//! ```

use anyhow::Context;
use clap::Parser;
use colloquy_bench::stats::Summary;
use colloquy_bench::sys::{raise_nofile_limit, rss};
use colloquy_testkit::{keyed_request, ServerThread, TestDatabase, Ws};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// Chats the `send` samples are spread over.
    #[arg(long, default_value_t = 10)]
    chats: usize,
    /// Samples per measurement.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Observers attached in the observer phase.
    #[arg(long, default_value_t = 10)]
    observers: usize,
    /// Alternations of the observer phase.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Idle observers of the memory phase.
    #[arg(long, default_value_t = 1000)]
    idle_observers: usize,
    /// Worker threads of each server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
}

async fn connect(url: &str, key: &str) -> anyhow::Result<(Ws, Value)> {
    let req = keyed_request(url, key)?;
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let meta = next_json(&mut ws).await?;
    anyhow::ensure!(meta["type"] == "chat_metadata", "{meta}");
    Ok((ws, meta))
}

async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("no message within 10 s")?
            .context("closed")??
        {
            Message::Text(t) => return Ok(serde_json::from_str(&t)?),
            _ => continue,
        }
    }
}

/// Reads until the `user_message` with `text`.
async fn until_echo(ws: &mut Ws, text: &str) -> anyhow::Result<()> {
    loop {
        let m = next_json(ws).await?;
        if m["type"] == "user_message" && m["message"]["content"] == text {
            return Ok(());
        }
    }
}

/// `send` latencies: posted to `base`, read on the chats' own sockets.
async fn send_latency(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    chats: &mut [(Ws, Value)],
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(samples);
    for n in 0..samples {
        let (ws, meta) = &mut chats[n % chats.len()];
        let text = format!("send {n}");
        let started = Instant::now();
        let resp = http
            .post(format!(
                "{base}/v0/evi/chat/{}/send",
                meta["chat_id"].as_str().unwrap()
            ))
            .header("X-Hume-Api-Key", key)
            .json(&json!({"type": "user_input", "text": text}))
            .send();
        let (resp, echoed) = tokio::join!(resp, until_echo(ws, &text));
        echoed?;
        out.push(started.elapsed());
        anyhow::ensure!(resp?.status().as_u16() == 200, "send failed");
    }
    Ok(out)
}

/// The chats' own echo latencies (the baseline of `send`).
async fn own_latency(chats: &mut [(Ws, Value)], samples: usize) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(samples);
    for n in 0..samples {
        let (ws, _) = &mut chats[n % chats.len()];
        let text = format!("own {n}");
        let started = Instant::now();
        ws.send(Message::Text(
            json!({"type": "user_input", "text": text})
                .to_string()
                .into(),
        ))
        .await?;
        until_echo(ws, &text).await?;
        out.push(started.elapsed());
    }
    Ok(out)
}

fn observer_url(base: &str, chat: &Value) -> String {
    format!(
        "{}/v0/evi/chat/{}/connect",
        base.replace("http://", "ws://"),
        chat["chat_id"].as_str().unwrap()
    )
}

/// Attaches an observer that reads everything until dropped.
async fn attach_reading(url: &str, key: &str) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(keyed_request(url, key)?).await?;
    let first = next_json(&mut ws).await?;
    anyhow::ensure!(first["type"] == "chat_metadata", "{first}");
    Ok(tokio::spawn(async move {
        while let Some(Ok(_)) = ws.next().await {}
    }))
}

fn report(name: &str, samples: &[Duration]) -> Summary {
    let s = Summary::from_durations(samples);
    println!("  {name:<44} {s}");
    s
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_nofile_limit();
    let http = reqwest::Client::new();

    println!("## one server (SQLite, synchronous = full)");
    let dir = tempfile::tempdir()?;
    let mut settings = colloquy_testkit::settings(dir.path(), None);
    settings.log.filter = "warn".into();
    let server = ServerThread::start(settings, args.server_threads).await?;
    let key = server.key(Some("bench"), true).await?.api_key;
    let url = format!("{}?allow_connection=true", server.ws_url());
    let mut chats = Vec::new();
    for _ in 0..args.chats {
        chats.push(connect(&url, &key).await?);
    }
    own_latency(&mut chats, 100).await?; // warm-up
    let own = report(
        "own user_input -> echo (baseline)",
        &own_latency(&mut chats, args.samples).await?,
    );
    let sent = report(
        "send -> the client reads it",
        &send_latency(&http, &server.base, &key, &mut chats, args.samples).await?,
    );
    println!(
        "  send over the baseline: p50 {:+.2} ms, p99 {:+.2} ms (target: send p99 <= 5 ms)",
        (sent.p50_us as f64 - own.p50_us as f64) / 1000.0,
        (sent.p99_us as f64 - own.p99_us as f64) / 1000.0
    );

    println!("\n## observers (one chat; alternated rounds)");
    let (mut single, meta) = connect(&url, &key).await?;
    let obs_url = observer_url(&server.base, &meta);
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        let mut one = vec![(single, meta.clone())];
        without.extend(own_latency(&mut one, args.samples / args.rounds).await?);
        let mut readers = Vec::new();
        for _ in 0..args.observers {
            readers.push(attach_reading(&obs_url, &key).await?);
        }
        with.extend(own_latency(&mut one, args.samples / args.rounds).await?);
        for r in readers {
            r.abort();
        }
        single = one.pop().unwrap().0;
    }
    let a = report("echo, no observer", &without);
    let b = report(&format!("echo, {} observers", args.observers), &with);
    println!(
        "  observers add: p50 {:+.2} ms, p99 {:+.2} ms (target: p99 <= +2 ms)",
        (b.p50_us as f64 - a.p50_us as f64) / 1000.0,
        (b.p99_us as f64 - a.p99_us as f64) / 1000.0
    );

    println!("\n## memory of idle observers (this process: server and clients)");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss(std::process::id())?;
    let mut idle = Vec::with_capacity(args.idle_observers);
    // Small client buffers, so the reading is mostly the server's side.
    let small = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    for _ in 0..args.idle_observers {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
            keyed_request(&obs_url, &key)?,
            Some(small),
            false,
        )
        .await?;
        let first = next_json(&mut ws).await?;
        anyhow::ensure!(first["type"] == "chat_metadata");
        idle.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss(std::process::id())?;
    let mb = (after.vm_rss_kib as f64 - before.vm_rss_kib as f64) / 1024.0;
    println!(
        "  {} idle observers: {:.1} MB ({:.1} KiB each, server and client side together; target <= 50 MB)",
        args.idle_observers,
        mb,
        mb * 1024.0 / args.idle_observers as f64
    );
    // One message reaches all of them.
    single
        .send(Message::Text(
            json!({"type": "user_input", "text": "to all"})
                .to_string()
                .into(),
        ))
        .await?;
    let started = Instant::now();
    for ws in &mut idle {
        until_echo(ws, "to all").await?;
    }
    println!(
        "  one message to {} observers: all read it within {:.1} ms",
        args.idle_observers,
        started.elapsed().as_secs_f64() * 1000.0
    );
    drop(idle);
    drop(chats);
    server.stop().await?;

    println!("\n## across two servers on one PostgreSQL database");
    let Some(db) = TestDatabase::create().await else {
        println!("  skipped: no PostgreSQL at 127.0.0.1:5432");
        return Ok(());
    };
    let mut servers = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir()?;
        let mut settings = colloquy_testkit::settings(dir.path(), Some(db.url()));
        settings.log.filter = "warn".into();
        servers.push((
            ServerThread::start(settings, args.server_threads).await?,
            dir,
        ));
    }
    let key = servers[0].0.key(Some("bench"), true).await?.api_key;
    let url = format!("{}?allow_connection=true", servers[0].0.ws_url());
    let mut chats = Vec::new();
    for _ in 0..args.chats {
        chats.push(connect(&url, &key).await?);
    }
    send_latency(&http, &servers[0].0.base, &key, &mut chats, 100).await?;
    let own = report(
        "send to the chat's own server (A)",
        &send_latency(&http, &servers[0].0.base, &key, &mut chats, args.samples).await?,
    );
    send_latency(&http, &servers[1].0.base, &key, &mut chats, 100).await?;
    let far = report(
        "send to the other server (B)",
        &send_latency(&http, &servers[1].0.base, &key, &mut chats, args.samples).await?,
    );
    println!(
        "  across servers over same server: p50 {:+.2} ms, p99 {:+.2} ms (target: p99 <= 25 ms)",
        (far.p50_us as f64 - own.p50_us as f64) / 1000.0,
        (far.p99_us as f64 - own.p99_us as f64) / 1000.0
    );
    drop(chats);
    for (s, _) in servers {
        s.stop().await?;
    }
    db.drop_database().await;
    Ok(())
}
