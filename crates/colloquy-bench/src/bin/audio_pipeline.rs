//! Audio through the real server:
//! * `latency`: time from `GET /v0/evi/chats/{id}/audio` on an ended chat (default 5 minutes
//!   of two-voice audio) to `COMPLETE`, with the default in-process worker;
//! * `capture`: server CPU while 100 sessions stream 16 kHz linear16 in 20 ms chunks in real
//!   time, beside the same traffic on a retention-disabled account (nothing stored) in the
//!   same run.
//!
//! ```text
//! cargo run --release -p colloquy-bench --bin audio_pipeline -- latency --chats 10
//! cargo run --release -p colloquy-bench --bin audio_pipeline -- capture --sessions 100 --seconds 20
//! ```

use anyhow::Context;
use base64::Engine;
use clap::{Parser, Subcommand};
use colloquy_bench::stats::Summary;
use colloquy_server::capture::{CapturedFormat, VoiceRecorder};
use colloquy_server::objects::{Objects, Voice};
use colloquy_testkit::{get_json, next_json, open_chat, ServerThread, LINEAR16_16K_MONO};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// GET /audio → COMPLETE on ended chats.
    Latency {
        /// Chats measured one after the other.
        #[arg(long, default_value_t = 10)]
        chats: usize,
        /// Length of each chat.
        #[arg(long, default_value_t = 5)]
        chat_minutes: u64,
    },
    /// Server CPU while sessions stream audio in real time.
    Capture {
        /// Concurrent sessions.
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        /// Measured seconds (after a 3 s warm-up).
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
}

fn chunk_b64(i: u64) -> String {
    let pcm: Vec<u8> = (0..320u64)
        .flat_map(|n| {
            let t = (i * 320 + n) as f64 / 16_000.0;
            (((2.0 * std::f64::consts::PI * 220.0 * t).sin() * 8000.0) as i16).to_le_bytes()
        })
        .collect();
    base64::engine::general_purpose::STANDARD.encode(pcm)
}

/// `ms` of a 330 Hz tone at 24 kHz as a WAV file (an assistant clip).
fn wav_clip(ms: u64) -> Vec<u8> {
    let pcm: Vec<u8> = (0..24 * ms as usize)
        .flat_map(|k| {
            let v = (2.0 * std::f64::consts::PI * 330.0 * k as f64 / 24_000.0).sin() * 8000.0;
            (v as i16).to_le_bytes()
        })
        .collect();
    colloquy_testkit::wav(&pcm, 24_000)
}

async fn latency(chats: usize, minutes: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let settings = colloquy_testkit::settings(dir.path(), None);
    let server = ServerThread::start(settings.clone(), 2).await?;
    let key = server.key(None, true).await?;
    let objects = Objects::open(&settings.storage, &settings.data_dir)?;
    let http = reqwest::Client::new();
    let clip = wav_clip(1000);
    let mut waits = Vec::new();
    let chunks = minutes * 60 * 50;
    for c in 0..chats {
        let url = format!(
            "{}?api_key={}&{LINEAR16_16K_MONO}",
            server.ws_url(),
            key.api_key
        );
        let (mut ws, meta) = open_chat(&url, None, false).await?;
        let chat_id = meta["chat_id"].as_str().context("chat_id")?.to_string();
        for i in 0..chunks {
            let msg = json!({"type": "audio_input", "data": chunk_b64(i)}).to_string();
            ws.send(Message::Text(msg.into())).await?;
        }
        ws.send(Message::Text(
            json!({"type": "user_input", "text": "done"})
                .to_string()
                .into(),
        ))
        .await?;
        while next_json(&mut ws).await?["type"] != "user_message" {}
        // The assistant speaks 1 s in every 2 s, through the recording path engines use.
        let mut rec = VoiceRecorder::new(
            objects.clone(),
            key.user_id,
            chat_id.parse()?,
            Voice::Assistant,
            CapturedFormat::WavClips,
        );
        for s in 0..minutes * 30 {
            rec.append((s * 2000) as i64, &clip).await?;
        }
        rec.flush().await?;
        ws.close(None).await?;
        while let Some(Ok(_)) = ws.next().await {}
        let started = Instant::now();
        loop {
            let path = format!("/v0/evi/chats/{chat_id}/audio");
            let (_, rec) = get_json(&http, &server.base, &key.api_key, &path).await?;
            match rec["status"].as_str() {
                Some("COMPLETE") => break,
                Some("QUEUED" | "IN_PROGRESS") => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                other => anyhow::bail!("reconstruction ended as {other:?}: {rec}"),
            }
        }
        waits.push(started.elapsed());
        println!(
            "chat {c}: COMPLETE {:.0} ms after the first GET",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    let s = Summary::from_durations(&waits);
    println!("\n| {minutes}-minute chats, GET /audio → COMPLETE | n | p50 | p90 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| in-process worker (1), SQLite, local store | {} | {} | {} | {} |",
        waits.len(),
        colloquy_bench::stats::ms(s.p50_us),
        colloquy_bench::stats::ms(s.p90_us),
        colloquy_bench::stats::ms(s.max_us)
    );
    server.stop().await
}

/// Server CPU (its own threads only) while `sessions` stream for `seconds`.
async fn capture_run(sessions: usize, seconds: u64, retention: bool) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let server = ServerThread::start(colloquy_testkit::settings(dir.path(), None), 2).await?;
    let key = server.key(None, retention).await?;
    let url = format!(
        "{}?api_key={}&{LINEAR16_16K_MONO}",
        server.ws_url(),
        key.api_key
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let (ws, _) = open_chat(&url, None, false).await?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            // Stagger the sessions across the 20 ms period, as independent clients would be.
            tokio::time::sleep(Duration::from_micros((s as u64 * 20_000) / 100)).await;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut i = 0u64;
            let (mut tx, mut rx) = ws.split();
            let drain = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let msg = json!({"type": "audio_input", "data": chunk_b64(i)}).to_string();
                if tx.send(Message::Text(msg.into())).await.is_err() {
                    break;
                }
                i += 1;
            }
            let _ = tx.close().await;
            drain.abort();
            i
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = colloquy_bench::sys::thread_cpu();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = colloquy_bench::sys::thread_cpu();
    let wall = t0.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for t in tasks {
        sent += t.await?;
    }
    let server_cpu: f64 = colloquy_bench::sys::thread_cpu_delta(&before, &after)
        .into_iter()
        .filter(|(name, _)| name.starts_with("srv") || name.starts_with("sqlx"))
        .map(|(_, d)| d.as_secs_f64())
        .sum();
    println!(
        "  retention {}: {sent} chunks sent; server threads used {:.2} s CPU in {:.1} s",
        if retention {
            "on (captured)"
        } else {
            "off (nothing stored)"
        },
        server_cpu,
        wall
    );
    server.stop().await?;
    Ok(100.0 * server_cpu / wall)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("machine: {}", colloquy_bench::sys::machine());
    let rt = colloquy_bench::client_runtime(1)?;
    rt.block_on(async move {
        match args.mode {
            Mode::Latency { chats, chat_minutes } => latency(chats, chat_minutes).await,
            Mode::Capture { sessions, seconds } => {
                let captured = capture_run(sessions, seconds, true).await?;
                let baseline = capture_run(sessions, seconds, false).await?;
                println!("\n| {sessions} sessions × 16 kHz linear16, 20 ms chunks, real time | server CPU (% of one core) |");
                println!("|---|---|");
                println!("| capture on (segments to the local object store) | {captured:.1}% |");
                println!("| baseline: same traffic, retention disabled (nothing stored) | {baseline:.1}% |");
                Ok(())
            }
        }
    })
}
