//! What resolving a config costs a connect: chats opened at a steady rate (default 100 per
//! second), alternating **without** and **with** `config_id` (a config with a prompt
//! referenced by its latest version and two tools, so resolving it reads the config
//! version, the prompt and the tools), against the real server (SQLite with
//! `sqlite_synchronous = "full"`, or PostgreSQL). Each sample is the time from the start of
//! the WebSocket handshake to the arrival of `chat_metadata`; each chat then closes. The
//! target: with a config, p99 within 2 ms of without.
//!
//! ```text
//! cargo run --release -p colloquy-bench --bin connect_latency -- --rate 100 --seconds 20
//! cargo run --release -p colloquy-bench --bin connect_latency -- --backend postgres
//! ```

use anyhow::Context;
use clap::{Parser, ValueEnum};
use colloquy_bench::stats::Summary;
use colloquy_testkit::{keyed_request, ServerThread, TestDatabase};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Parser)]
struct Args {
    /// Connects per second (both kinds together).
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Warm-up seconds.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
}

async fn post(http: &reqwest::Client, base: &str, key: &str, path: &str, body: Value) -> Value {
    let resp = http
        .post(format!("{base}{path}"))
        .header("X-Hume-Api-Key", key)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 201, "{path}");
    resp.json().await.expect("JSON")
}

/// One connect: handshake to `chat_metadata`; then the chat is closed (not timed).
async fn connect_once(url: String, key: String) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let req = keyed_request(&url, &key)?;
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let first = loop {
        match ws.next().await.context("closed before chat_metadata")?? {
            Message::Text(t) => break t,
            _ => continue,
        }
    };
    let took = started.elapsed();
    let v: Value = serde_json::from_str(&first)?;
    anyhow::ensure!(v["type"] == "chat_metadata", "first message: {v}");
    ws.close(None).await.ok();
    while let Some(Ok(_)) = ws.next().await {}
    Ok(took)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let db = match args.backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(
            TestDatabase::create()
                .await
                .context("PostgreSQL at 127.0.0.1:5432 is needed for --backend postgres")?,
        ),
    };
    let mut settings = colloquy_testkit::settings(dir.path(), db.as_ref().map(TestDatabase::url));
    settings.database.sqlite_synchronous = "full".into();
    settings.log.filter = "warn".into();
    let server = ServerThread::start(settings, args.server_threads).await?;
    let key = server.key(Some("bench"), true).await?.api_key;
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let prompt = post(
        &http,
        &base,
        &key,
        "/v0/evi/prompts",
        json!({"name": "p", "text": "You are a helpful assistant for {{name}}."}),
    )
    .await;
    let mut tools = Vec::new();
    for name in ["get_weather", "book_table"] {
        let t = post(
            &http,
            &base,
            &key,
            "/v0/evi/tools",
            json!({"name": name, "parameters": "{\"type\":\"object\"}"}),
        )
        .await;
        tools.push(json!({"id": t["id"]}));
    }
    let config = post(
        &http,
        &base,
        &key,
        "/v0/evi/configs",
        json!({"name": "bench", "evi_version": "3", "prompt": {"id": prompt["id"]},
               "tools": tools, "voice": {"provider": "HUME_AI", "name": "Ava Song"}}),
    )
    .await;
    let plain = server.ws_url();
    let configured = format!("{plain}?config_id={}", config["id"].as_str().unwrap());

    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let total = Duration::from_secs(args.warmup + args.seconds);
    let warmup = Duration::from_secs(args.warmup);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut running = Vec::new();
    let mut n = 0u64;
    while started.elapsed() < total {
        ticker.tick().await;
        let with_config = n % 2 == 1;
        n += 1;
        let url = if with_config { &configured } else { &plain };
        let measured = started.elapsed() >= warmup;
        let task = tokio::spawn(connect_once(url.clone(), key.clone()));
        running.push((with_config, measured, task));
    }
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let mut failures = 0;
    for (with_config, measured, task) in running {
        match task.await? {
            Ok(took) if measured => {
                if with_config {
                    with.push(took)
                } else {
                    without.push(took)
                }
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                eprintln!("connect failed: {e:#}");
            }
        }
    }
    let (a, b) = (
        Summary::from_durations(&without),
        Summary::from_durations(&with),
    );
    let backend = match args.backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    println!(
        "connect_latency backend={backend} rate={}/s seconds={} failures={failures}",
        args.rate, args.seconds
    );
    println!("  without config: {a}");
    println!("  with config:    {b}");
    println!(
        "  difference: p50 {:+.2} ms, p99 {:+.2} ms (target: p99 within 2 ms)",
        (b.p50_us as f64 - a.p50_us as f64) / 1000.0,
        (b.p99_us as f64 - a.p99_us as f64) / 1000.0
    );
    server.stop().await?;
    if let Some(db) = db {
        db.drop_database().await;
    }
    anyhow::ensure!(failures == 0, "{failures} connects failed");
    Ok(())
}
