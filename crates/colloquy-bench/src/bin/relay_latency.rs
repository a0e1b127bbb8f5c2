//! Added latency of the relay engine: 100 concurrent chats stream audio to an upstream EVI
//! test server, once **directly** and once **through Colloquy's relay** (the real server,
//! SQLite with `sqlite_synchronous = "full"`, recording everything), in the same run.
//!
//! Every message carries its send time (µs on a clock shared by client and upstream, in the
//! `custom_session_id` field every EVI message may carry, which the relay forwards
//! unchanged), so each forwarded message's one-way latency is measured in each direction:
//!
//! * up: client `audio_input` (20 ms of 16 kHz PCM; every 10th message a `user_input`
//!   instead) → upstream;
//! * down: upstream `audio_output` (a 20 ms WAV clip, captured as assistant audio by the
//!   relay) answering each chunk, or a final `user_message` with 48 prosody scores
//!   (recorded as a `USER_MESSAGE` event, committed before it is forwarded) answering each
//!   `user_input` → client.
//!
//! The added latency is the relayed percentile minus the direct percentile.
//!
//! ```text
//! cargo run --release -p colloquy-bench --bin relay_latency -- --chats 100 --seconds 15
//! ```

use anyhow::Context;
use base64::Engine;
use clap::Parser;
use colloquy_bench::stats::{ms, Summary};
use colloquy_server::config::EngineMode;
use colloquy_testkit::{open_chat, ServerThread, LINEAR16_16K_MONO};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// Concurrent chats.
    #[arg(long, default_value_t = 100)]
    chats: usize,
    /// Measured seconds per phase (after the warm-up).
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Warm-up seconds per phase.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Milliseconds between two messages of one chat (20 ms = real-time audio chunks).
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// SQLite durability of the server: `full` (default, fsync per group commit) or `normal`.
    #[arg(long, default_value = "full")]
    sqlite_synchronous: String,
    /// Diagnostic: relay for a retention-disabled account (nothing is recorded).
    #[arg(long)]
    no_retention: bool,
    /// Worker threads of the runtime running the clients and the upstream.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Samples of the current phase; only collected while `measuring`. Messages that become
/// events (`user_input` up, `user_message` down) are also kept apart, since the relay
/// commits their event before forwarding them.
#[derive(Default)]
struct Samples {
    measuring: AtomicBool,
    up: Mutex<Vec<u64>>,
    down: Mutex<Vec<u64>>,
    up_text: Mutex<Vec<u64>>,
    down_event: Mutex<Vec<u64>>,
}

/// One phase's summaries: all messages up and down, then the text/event subsets.
struct Phase {
    up: Summary,
    down: Summary,
    up_text: Summary,
    down_event: Summary,
    busy: f64,
}

impl Samples {
    fn note(&self, down: bool, text: bool, sent_us: u64) {
        if self.measuring.load(Ordering::Relaxed) {
            let d = now_us().saturating_sub(sent_us);
            let (all, sub) = if down {
                (&self.down, &self.down_event)
            } else {
                (&self.up, &self.up_text)
            };
            all.lock().unwrap().push(d);
            if text {
                sub.lock().unwrap().push(d);
            }
        }
    }

    fn take(&self, busy: f64) -> Phase {
        let take =
            |m: &Mutex<Vec<u64>>| Summary::from_micros(std::mem::take(&mut *m.lock().unwrap()));
        Phase {
            up: take(&self.up),
            down: take(&self.down),
            up_text: take(&self.up_text),
            down_event: take(&self.down_event),
            busy,
        }
    }
}

fn sent_at(v: &Value) -> Option<u64> {
    v.get("custom_session_id")?.as_str()?.parse().ok()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `ms` of a quiet 220 Hz tone, 16-bit mono PCM samples.
fn tone(rate: u32, ms: u32) -> colloquy_speech::Pcm {
    let n = rate as usize * ms as usize / 1000;
    let samples = (0..n)
        .map(|i| {
            let v = (2.0 * std::f64::consts::PI * 220.0 * i as f64 / rate as f64).sin() * 0.2;
            (v * i16::MAX as f64) as i16
        })
        .collect();
    colloquy_speech::Pcm::new(samples, rate)
}

/// Little-endian bytes of PCM samples (`audio_input` as linear16).
fn linear16(pcm: &colloquy_speech::Pcm) -> Vec<u8> {
    pcm.samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// The upstream EVI test server: answers every `audio_input` with an `audio_output` clip and
/// every `user_input` with a final `user_message` carrying prosody scores.
async fn upstream(listener: TcpListener, samples: Arc<Samples>) {
    let clip = b64(&colloquy_speech::encode_wav(&tone(24_000, 20)));
    let scores: serde_json::Map<String, Value> = colloquy_wire::EMOTION_NAMES
        .iter()
        .enumerate()
        .map(|(i, e)| (e.to_string(), json!((i as f64 * 0.0203) % 1.0)))
        .collect();
    let scores = Value::Object(scores);
    let mut n = 0u64;
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        n += 1;
        let (samples, clip, scores) = (samples.clone(), clip.clone(), scores.clone());
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let meta = json!({"type": "chat_metadata", "chat_id": format!("up-chat-{n}"),
                              "chat_group_id": format!("up-group-{n}"), "request_id": "up"});
            if ws
                .send(Message::Text(meta.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
            let mut index = 0u64;
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(t) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                if let Some(sent) = sent_at(&v) {
                    samples.note(false, v["type"] == "user_input", sent);
                }
                index += 1;
                let reply = match v["type"].as_str() {
                    Some("user_input") => json!({
                        "type": "user_message",
                        "message": {"role": "user", "content": v["text"]},
                        "models": {"prosody": {"scores": scores}},
                        "time": {"begin": 0, "end": 20}, "from_text": false, "interim": false,
                        "custom_session_id": now_us().to_string(),
                    }),
                    _ => json!({
                        "type": "audio_output", "id": format!("msg-{}", index / 50),
                        "index": index, "data": clip,
                        "custom_session_id": now_us().to_string(),
                    }),
                };
                if ws
                    .send(Message::Text(reply.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

/// One client chat: sends a message every `interval` until `stop`, counting replies.
async fn chat(url: String, interval: Duration, samples: Arc<Samples>, stop: Arc<AtomicBool>) {
    let (ws, _) = match open_chat(&url, None, false).await {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("no chat: {e:#}");
            return;
        }
    };
    let (mut tx, mut rx) = ws.split();
    let reader_samples = samples.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            if let Message::Text(t) = msg {
                if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                    if let Some(sent) = sent_at(&v) {
                        reader_samples.note(true, v["type"] == "user_message", sent);
                    }
                }
            }
        }
    });
    let chunk = b64(&linear16(&tone(16_000, 20)));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        i += 1;
        let msg = if i % 10 == 0 {
            json!({"type": "user_input", "text": colloquy_bench::sentence(i),
                   "custom_session_id": now_us().to_string()})
        } else {
            json!({"type": "audio_input", "data": chunk,
                   "custom_session_id": now_us().to_string()})
        };
        if tx
            .send(Message::Text(msg.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = tx.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
}

/// Runs one phase: `chats` chats against `url` for warm-up + measured seconds.
async fn phase(args: &Args, url: &str, samples: &Arc<Samples>) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..args.chats {
        tasks.push(tokio::spawn(chat(
            url.to_string(),
            Duration::from_millis(args.interval_ms),
            samples.clone(),
            stop.clone(),
        )));
        // Stagger the chats over one interval so their ticks do not all coincide.
        tokio::time::sleep(Duration::from_micros(
            args.interval_ms * 1000 / args.chats.max(1) as u64,
        ))
        .await;
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let cpu = colloquy_bench::sys::SystemCpu::now();
    samples.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    samples.measuring.store(false, Ordering::Relaxed);
    let busy = cpu.busy_since(&colloquy_bench::sys::SystemCpu::now());
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    samples.take(busy)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    colloquy_bench::client_runtime(args.client_threads)?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    now_us();
    colloquy_bench::init_server_logging();
    colloquy_bench::sys::report_background_load();
    println!("machine: {}", colloquy_bench::sys::machine());
    colloquy_bench::sys::raise_nofile_limit();

    let samples = Arc::new(Samples::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream_url = format!("ws://{}/v0/evi/chat", listener.local_addr()?);
    tokio::spawn(upstream(listener, samples.clone()));

    let dir = tempfile::tempdir()?;
    let mut settings = colloquy_testkit::settings(dir.path(), None);
    settings.engine.mode = EngineMode::Relay;
    settings.engine.relay.url = Some(upstream_url.clone());
    settings.chat.inactivity_timeout_secs = 600;
    settings.database.sqlite_synchronous = args.sqlite_synchronous.clone();
    let server = ServerThread::start(settings, args.server_threads)
        .await
        .context("starting the server")?;
    let key = server.key(None, !args.no_retention).await?;
    let query = LINEAR16_16K_MONO;

    println!(
        "{} chats, one message every {} ms each ({:.0} msg/s up and down), {} s measured after {} s warm-up; \
         server threads {}, client+upstream threads {}",
        args.chats,
        args.interval_ms,
        args.chats as f64 * 1000.0 / args.interval_ms as f64,
        args.seconds,
        args.warmup,
        args.server_threads,
        args.client_threads
    );
    let d = phase(&args, &format!("{upstream_url}?{query}"), &samples).await;
    println!("direct   up:   {}", d.up);
    println!(
        "direct   down: {}   (machine {:.0}% busy)",
        d.down,
        d.busy * 100.0
    );
    let relay_url = format!("{}?api_key={}&{query}", server.ws_url(), key.api_key);
    let r = phase(&args, &relay_url, &samples).await;
    println!("relayed  up:   {}", r.up);
    println!(
        "relayed  down: {}   (machine {:.0}% busy)",
        r.down,
        r.busy * 100.0
    );

    let added = |r: u64, d: u64| r.saturating_sub(d);
    println!();
    println!("| messages | direct p50 | direct p99 | relayed p50 | relayed p99 | added p50 | added p99 |");
    println!("|---|---|---|---|---|---|---|");
    let rows = [
        ("all client → upstream", d.up, r.up),
        ("all upstream → client", d.down, r.down),
        ("`user_input` (no event)", d.up_text, r.up_text),
        (
            "`user_message` (event committed first)",
            d.down_event,
            r.down_event,
        ),
    ];
    for (name, d, r) in rows {
        println!(
            "| {name} | {} | {} | {} | {} | **{}** | **{}** |",
            ms(d.p50_us),
            ms(d.p99_us),
            ms(r.p50_us),
            ms(r.p99_us),
            ms(added(r.p50_us, d.p50_us)),
            ms(added(r.p99_us, d.p99_us))
        );
    }
    let worst_p50 = added(r.up.p50_us, d.up.p50_us).max(added(r.down.p50_us, d.down.p50_us));
    let worst_p99 = added(r.up.p99_us, d.up.p99_us).max(added(r.down.p99_us, d.down.p99_us));
    println!(
        "\ntarget: added p50 ≤ 1 ms and p99 ≤ 5 ms per forwarded message → worst direction: p50 {} ({}), p99 {} ({})",
        ms(worst_p50),
        if worst_p50 <= 1000 { "met" } else { "NOT met" },
        ms(worst_p99),
        if worst_p99 <= 5000 { "met" } else { "NOT met" },
    );
    server.stop().await?;
    Ok(())
}
