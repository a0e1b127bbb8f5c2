//! Response latency of the pipeline engine: from the end of the user's speech to the first
//! `audio_output` chunk, minus the time the (fake) services themselves take.
//!
//! `--chats` concurrent pipeline chats each speak `--turns` turns to the real server
//! (SQLite, recording everything) whose `[engine.pipeline]` points at in-process fake
//! OpenAI-compatible services over real HTTP: transcription (answers `Turn N: …` after
//! `--asr-ms`), chat completions (streams one sentence after `--llm-ms`) and speech (a
//! 300 ms WAV after `--tts-ms`). Each fake service measures its own handling time per
//! request, tagged with the turn number `N`, so every turn subtracts exactly its services.
//!
//! A turn: espeak-ng speech (16 kHz linear16, trailing silence trimmed) sent in real time
//! in 20 ms `audio_input` chunks, then real-time silence until the answer comes.
//! **End of user speech** is the instant the chunk holding the last speech sample was
//! sent. Then:
//!
//! * total = first `audio_output` arrives − end of user speech;
//! * engine = total − the VAD's silence hangover (`vad_silence_ms`, which the engine must
//!   wait by design; reported separately) − the turn's three service times.
//!
//! The baseline, in the same run: the same services called directly in sequence by the
//! benchmark through the same clients (transcription → chat stream until the first
//! sentence → speech), with the same concurrency.
//!
//! ```text
//! nice -n -19 cargo run --release -p colloquy-bench --bin pipeline_latency -- --chats 4 --turns 20
//! ```

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use base64::Engine;
use clap::Parser;
use colloquy_server::config::EngineMode;
use colloquy_speech::{
    encode_wav, ChatClient, ChatMessage, ChatRequest, EspeakOptions, EspeakVoice, LlmDelta, Pcm,
    SentenceSplitter, ServiceConfig, SpeechClient, TranscriptionClient, TurnDetector, VadConfig,
    VadEvent,
};
use colloquy_testkit::{next_json, open_chat, ServerThread, LINEAR16_16K_MONO};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Clone)]
struct Args {
    /// Concurrent chats.
    #[arg(long, default_value_t = 4)]
    chats: usize,
    /// Spoken turns per chat (one after another).
    #[arg(long, default_value_t = 20)]
    turns: usize,
    /// Fixed processing time of the fake transcription service, ms.
    #[arg(long, default_value_t = 20)]
    asr_ms: u64,
    /// Fixed time of the fake language model before its answer, ms.
    #[arg(long, default_value_t = 30)]
    llm_ms: u64,
    /// Fixed processing time of the fake speech service, ms.
    #[arg(long, default_value_t = 20)]
    tts_ms: u64,
    /// The engine's `vad_silence_ms` (silence that ends a turn).
    #[arg(long, default_value_t = 600)]
    vad_silence_ms: u32,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the runtime running the clients and the fake services.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

/// What the fake services measured: per turn number, µs spent in each service.
#[derive(Default)]
struct Fakes {
    asr_ms: u64,
    llm_ms: u64,
    tts_ms: u64,
    next_turn: AtomicU64,
    /// turn → [asr, llm, tts] handling time, µs.
    times: Mutex<HashMap<u64, [u64; 3]>>,
    wav: Vec<u8>,
}

impl Fakes {
    fn note(&self, turn: u64, service: usize, started: Instant) {
        let us = started.elapsed().as_micros() as u64;
        self.times.lock().unwrap().entry(turn).or_default()[service] = us;
    }

    fn service_us(&self, turn: u64) -> Option<[u64; 3]> {
        self.times.lock().unwrap().get(&turn).copied()
    }
}

/// The turn number in a text containing `Turn N` / `turn N`.
fn turn_of(text: &str) -> u64 {
    let lower = text.to_lowercase();
    lower
        .split("turn ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn transcription(State(f): State<Arc<Fakes>>, _body: Bytes) -> Response {
    let started = Instant::now();
    let turn = f.next_turn.fetch_add(1, Ordering::Relaxed) + 1;
    tokio::time::sleep(Duration::from_millis(f.asr_ms)).await;
    let body = json!({ "text": format!("Turn {turn}: what is the weather like today?") });
    f.note(turn, 0, started);
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn chat(State(f): State<Arc<Fakes>>, body: Bytes) -> Response {
    let started = Instant::now();
    let req: Value = serde_json::from_slice(&body).unwrap_or_default();
    let last = req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string();
    let turn = turn_of(&last);
    tokio::time::sleep(Duration::from_millis(f.llm_ms)).await;
    let mut sse = String::new();
    for piece in [
        format!("It is sunny for turn {turn}."),
        " Anything else?".into(),
    ] {
        let c = json!({"choices":[{"index":0,"delta":{"content":piece}}]});
        sse.push_str(&format!("data: {c}\n\n"));
    }
    let done = json!({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]});
    sse.push_str(&format!("data: {done}\n\ndata: [DONE]\n\n"));
    f.note(turn, 1, started);
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(sse))
        .unwrap()
}

async fn speech(State(f): State<Arc<Fakes>>, body: Bytes) -> Response {
    let started = Instant::now();
    let req: Value = serde_json::from_slice(&body).unwrap_or_default();
    let turn = turn_of(req["input"].as_str().unwrap_or_default());
    tokio::time::sleep(Duration::from_millis(f.tts_ms)).await;
    let wav = f.wav.clone();
    if turn != 0 {
        // Only the first sentence ("… turn N.") counts; "Anything else?" comes later.
        f.note(turn, 2, started);
    }
    Response::builder()
        .header("content-type", "audio/wav")
        .body(Body::from(wav))
        .unwrap()
}

/// 300 ms of a 220 Hz tone at 24 kHz, as a WAV file.
fn answer_wav() -> Vec<u8> {
    let rate = 24_000u32;
    let samples = (0..rate * 3 / 10)
        .map(|i| {
            let v = (2.0 * std::f64::consts::PI * 220.0 * f64::from(i) / f64::from(rate)).sin();
            (v * 0.3 * f64::from(i16::MAX)) as i16
        })
        .collect();
    encode_wav(&Pcm::new(samples, rate))
}

/// One measured turn, µs.
#[derive(Debug, Clone, Copy)]
struct TurnSample {
    /// End of user speech → final `user_message`.
    heard_us: i64,
    /// End of user speech → first `audio_output`.
    total_us: i64,
    service: [u64; 3],
    /// 20 ms silence chunks sent after the speech, in all.
    silence_chunks: usize,
    /// Stream µs after the last speech chunk at which the engine's VAD ended the turn
    /// (filled in by [`vad_end`] replaying the chat's audio; -1 if it did not).
    vad_us: i64,
}

/// Where the engine's turn detection ended each turn: the chat's audio (the same 20 ms
/// chunks, speech then the silence actually sent) replayed through the same detector the
/// server runs, one per chat as on the server. For each turn: stream time of silence
/// after the last speech chunk until `SpeechEnd` — the hangover, plus the frames after
/// the speech that the VAD model still scores as voiced, plus frame rounding.
fn vad_end(
    speech: &[i16],
    turns: &mut [TurnSample],
    s: &colloquy_server::config::PipelineSettings,
) {
    let config = VadConfig {
        threshold: s.vad_threshold,
        min_speech_ms: s.vad_min_speech_ms,
        hangover_ms: s.vad_silence_ms,
        ..VadConfig::default()
    };
    let mut det = TurnDetector::new(config, 16_000);
    for turn in turns {
        for chunk in speech.chunks(320) {
            det.push(chunk);
        }
        turn.vad_us = -1;
        for i in 1..=turn.silence_chunks {
            let events = det.push(&[0i16; 320]);
            let ended = events
                .iter()
                .any(|e| matches!(e, VadEvent::SpeechEnd { .. }));
            if ended && turn.vad_us < 0 {
                turn.vad_us = i as i64 * 20_000;
            }
        }
    }
}

/// The user's utterance as 16 kHz samples, trailing (and leading) near-silence trimmed.
fn utterance() -> anyhow::Result<Vec<i16>> {
    let voice = EspeakVoice::new(EspeakOptions::default())
        .context("espeak-ng is needed for the user's speech")?;
    let pcm = voice
        .synthesize_blocking("What is the weather like today in Lisbon?")?
        .resample(16_000);
    let loud = |s: &i16| s.unsigned_abs() > 300;
    let first = pcm.samples.iter().position(loud).unwrap_or(0);
    let last = pcm.samples.iter().rposition(loud).unwrap_or(0);
    Ok(pcm.samples[first..=last].to_vec())
}

fn audio_msg(samples: &[i16]) -> Message {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    Message::Text(
        json!({"type": "audio_input", "data": data})
            .to_string()
            .into(),
    )
}

/// One pipeline chat speaking `turns` turns.
async fn pipeline_chat(
    url: String,
    turns: usize,
    speech: Arc<Vec<i16>>,
    fakes: Arc<Fakes>,
) -> anyhow::Result<Vec<TurnSample>> {
    let (mut ws, _) = open_chat(&url, None, false).await?;
    const CHUNK: usize = 320; // 20 ms at 16 kHz
    let silence = [0i16; CHUNK];
    let mut out = Vec::new();
    for _ in 0..turns {
        // Speech in real time.
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut end = Instant::now();
        for chunk in speech.chunks(CHUNK) {
            tick.tick().await;
            ws.send(audio_msg(chunk)).await?;
            end = Instant::now();
        }
        // Silence in real time until the first audio_output.
        let mut heard = None;
        let mut turn = 0;
        let mut silence_chunks = 0;
        let first_audio = loop {
            tokio::select! {
                _ = tick.tick() => {
                    ws.send(audio_msg(&silence)).await?;
                    silence_chunks += 1;
                }
                msg = next_json(&mut ws) => {
                    let msg = msg?;
                    match msg["type"].as_str() {
                        Some("user_message") if msg["interim"] == false => {
                            heard = Some(end.elapsed());
                            turn = turn_of(msg["message"]["content"].as_str().unwrap_or_default());
                        }
                        Some("audio_output") => break end.elapsed(),
                        Some("error") => anyhow::bail!("server error: {msg}"),
                        _ => {}
                    }
                }
            }
        };
        // The rest of the answer, still sending silence, then its playback.
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    ws.send(audio_msg(&silence)).await?;
                    silence_chunks += 1;
                }
                msg = next_json(&mut ws) => {
                    if next_is_end(&msg?) { break; }
                }
            }
        }
        let played = Instant::now() + Duration::from_millis(800);
        while Instant::now() < played {
            tick.tick().await;
            ws.send(audio_msg(&silence)).await?;
            silence_chunks += 1;
        }
        let service = fakes
            .service_us(turn)
            .with_context(|| format!("no service times for turn {turn}"))?;
        out.push(TurnSample {
            heard_us: heard.map(|d| d.as_micros() as i64).unwrap_or(-1),
            total_us: first_audio.as_micros() as i64,
            service,
            silence_chunks,
            vad_us: 0,
        });
    }
    let _ = ws.close(None).await;
    Ok(out)
}

fn next_is_end(msg: &Value) -> bool {
    msg["type"] == "assistant_end"
}

/// The baseline: the same services in sequence, called directly. Returns (total, service).
async fn direct_turns(
    base: String,
    turns: usize,
    speech: Arc<Vec<i16>>,
    fakes: Arc<Fakes>,
) -> anyhow::Result<Vec<(i64, u64)>> {
    let asr = TranscriptionClient::new(ServiceConfig::new(base.clone(), "whisper-1"));
    let llm = ChatClient::new(ServiceConfig::new(base.clone(), "llama3.2"));
    let tts = SpeechClient::new(ServiceConfig::new(base, "tts-1"), "alloy");
    let pcm = Pcm::new(speech.to_vec(), 16_000);
    let mut out = Vec::new();
    for _ in 0..turns {
        let started = Instant::now();
        let text = asr.transcribe(&pcm, None).await?;
        let turn = turn_of(&text);
        let request = ChatRequest {
            messages: vec![ChatMessage::user(text)],
            ..ChatRequest::default()
        };
        let mut stream = llm.stream(&request).await?;
        let mut splitter = SentenceSplitter::new();
        let mut first = None;
        while let Some(delta) = stream.next().await {
            if let LlmDelta::Text(t) = delta? {
                if let Some(s) = splitter.push(&t).into_iter().next() {
                    first = Some(s);
                    break;
                }
            }
        }
        let first = first.context("no sentence")?;
        drop(stream);
        tts.speak(&first).await?;
        let total = started.elapsed().as_micros() as i64;
        let s = fakes.service_us(turn).context("no service times")?;
        out.push((total, s.iter().sum()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(out)
}

/// Nearest-rank percentiles of signed samples (µs), printed in ms.
fn pct(mut v: Vec<i64>) -> String {
    if v.is_empty() {
        return "n=0".into();
    }
    v.sort_unstable();
    let at = |p: f64| colloquy_bench::stats::percentile(&v, p) as f64 / 1000.0;
    format!(
        "n={} p50={:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms",
        v.len(),
        at(50.0),
        at(90.0),
        at(99.0),
        *v.last().unwrap() as f64 / 1000.0
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    colloquy_bench::client_runtime(args.client_threads)?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    colloquy_bench::init_server_logging();
    colloquy_bench::sys::report_background_load();
    println!("machine: {}", colloquy_bench::sys::machine());

    let fakes = Arc::new(Fakes {
        asr_ms: args.asr_ms,
        llm_ms: args.llm_ms,
        tts_ms: args.tts_ms,
        wav: answer_wav(),
        ..Fakes::default()
    });
    let app = Router::new()
        .route("/v1/audio/transcriptions", post(transcription))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/audio/speech", post(speech))
        .with_state(fakes.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/v1", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let speech = Arc::new(utterance()?);
    let dir = tempfile::tempdir()?;
    let mut settings = colloquy_testkit::settings(dir.path(), None);
    settings.engine.mode = EngineMode::Pipeline;
    let p = &mut settings.engine.pipeline;
    p.asr = Some(ServiceConfig::new(base.clone(), "whisper-1"));
    p.llm = Some(ServiceConfig::new(base.clone(), "llama3.2"));
    p.tts = Some(ServiceConfig::new(base.clone(), "tts-1"));
    p.vad_silence_ms = args.vad_silence_ms;
    settings.chat.inactivity_timeout_secs = 600;
    let pipeline_settings = settings.engine.pipeline.clone();
    let server = ServerThread::start(settings, args.server_threads)
        .await
        .context("starting the server")?;
    let key = server.key(None, true).await?;
    let url = format!(
        "{}?api_key={}&{LINEAR16_16K_MONO}",
        server.ws_url(),
        key.api_key
    );
    println!(
        "{} chats x {} turns; user speech {} ms (espeak-ng, 16 kHz); fake services: asr {} ms, \
         llm {} ms, tts {} ms; vad_silence_ms {}; server threads {}, client+services threads {}",
        args.chats,
        args.turns,
        speech.len() / 16,
        args.asr_ms,
        args.llm_ms,
        args.tts_ms,
        args.vad_silence_ms,
        args.server_threads,
        args.client_threads
    );

    // Baseline: the services called directly, same concurrency.
    let mut tasks = Vec::new();
    for _ in 0..args.chats {
        tasks.push(tokio::spawn(direct_turns(
            base.clone(),
            args.turns,
            speech.clone(),
            fakes.clone(),
        )));
    }
    let mut direct = Vec::new();
    for t in tasks {
        direct.extend(t.await??);
    }

    // The pipeline engine.
    let mut tasks = Vec::new();
    for i in 0..args.chats {
        let (url, speech, fakes, turns) = (url.clone(), speech.clone(), fakes.clone(), args.turns);
        tasks.push(tokio::spawn(async move {
            // Staggered, so the chats' turns do not all end at the same instant.
            tokio::time::sleep(Duration::from_millis(150 * i as u64)).await;
            pipeline_chat(url, turns, speech, fakes).await
        }));
    }
    let mut turns = Vec::new();
    for t in tasks {
        let mut chat = t.await??;
        vad_end(&speech, &mut chat, &pipeline_settings);
        turns.extend(chat);
    }
    server.stop().await?;

    let hang = i64::from(args.vad_silence_ms) * 1000;
    let svc = |t: &TurnSample| t.service.iter().sum::<u64>() as i64;
    println!();
    println!("baseline (services called directly in sequence: asr -> llm first sentence -> tts):");
    println!(
        "  total                         {}",
        pct(direct.iter().map(|d| d.0).collect())
    );
    println!(
        "  service time                  {}",
        pct(direct.iter().map(|d| d.1 as i64).collect())
    );
    println!(
        "  total - service (client/HTTP) {}",
        pct(direct.iter().map(|d| d.0 - d.1 as i64).collect())
    );
    println!();
    println!("pipeline engine (end of user speech -> first audio_output):");
    println!(
        "  total                         {}",
        pct(turns.iter().map(|t| t.total_us).collect())
    );
    println!(
        "  total - service               {}",
        pct(turns.iter().map(|t| t.total_us - svc(t)).collect())
    );
    println!("  VAD hangover (configured)     {} ms", args.vad_silence_ms);
    println!(
        "  total - hangover - service    {}",
        pct(turns.iter().map(|t| t.total_us - hang - svc(t)).collect())
    );
    println!(
        "  VAD end of turn (stream time) {}",
        pct(turns.iter().map(|t| t.vad_us).collect())
    );
    println!("    (silence after the last speech chunk until the VAD ended the turn: hangover + frames the model still scores as voiced + rounding)");
    println!(
        "  total - VAD end - service     {}   <- engine processing",
        pct(turns
            .iter()
            .map(|t| t.total_us - t.vad_us - svc(t))
            .collect())
    );
    println!("breakdown:");
    println!(
        "  speech end -> user_message - VAD end - asr    {}",
        pct(turns
            .iter()
            .map(|t| t.heard_us - t.vad_us - t.service[0] as i64)
            .collect())
    );
    println!(
        "  user_message -> audio_output - llm - tts      {}",
        pct(turns
            .iter()
            .map(|t| t.total_us - t.heard_us - (t.service[1] + t.service[2]) as i64)
            .collect())
    );
    println!(
        "  service asr                   {}",
        pct(turns.iter().map(|t| t.service[0] as i64).collect())
    );
    println!(
        "  service llm                   {}",
        pct(turns.iter().map(|t| t.service[1] as i64).collect())
    );
    println!(
        "  service tts                   {}",
        pct(turns.iter().map(|t| t.service[2] as i64).collect())
    );
    Ok(())
}
