//! Text to speech (issue 16): the server's `/v0/tts/stream/file` and `/v0/tts/file` beside
//! the espeak-ng library called directly (`colloquy_speech::EspeakVoice`, the same engine
//! thread the server uses), in the same run:
//!
//! * time to the first audio byte of one sentence, sequential requests (p50/p90/p99),
//!   against the library's time to its first block of samples;
//! * synthesis speed (seconds of audio per second of wall time) of a long paragraph;
//! * `--streams` concurrent streamed requests, counting errors.
//!
//! The server's overhead is reported as ratios to the direct calls.
//!
//! ```text
//! cargo run --release -p colloquy-bench --bin tts_latency -- --requests 200 --streams 50
//! ```

use anyhow::Context;
use clap::Parser;
use colloquy_bench::stats::Summary;
use colloquy_speech::{EspeakOptions, EspeakVoice, SpeechPiece};
use colloquy_testkit::ServerThread;
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Sequential one-sentence requests (and direct calls) timed.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Concurrent streamed requests.
    #[arg(long, default_value_t = 50)]
    streams: usize,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Output format of the server requests: mp3, wav or pcm.
    #[arg(long, default_value = "mp3")]
    format: String,
}

const SENTENCE: &str = "The quick brown fox jumps over the lazy dog near the riverbank.";

fn paragraph() -> String {
    "Colloquy speaks with the built-in voice when no speech service is configured. \
     It streams the audio while the text is still being synthesized, so the first words \
     can be played almost at once. Each sentence becomes a snippet with its own timing. "
        .repeat(8)
}

/// Direct: time to the first block and the whole synthesis of `text`; seconds of audio.
async fn direct(voice: &EspeakVoice, text: &str) -> anyhow::Result<(Duration, Duration, f64)> {
    let started = Instant::now();
    let mut rx = voice.synthesize_stream(text)?;
    let mut first = None;
    let mut samples = 0usize;
    while let Some(piece) = rx.recv().await {
        if let SpeechPiece::Audio(s) = piece? {
            first.get_or_insert_with(|| started.elapsed());
            samples += s.len();
        }
    }
    Ok((
        first.context("no audio")?,
        started.elapsed(),
        samples as f64 / voice.sample_rate() as f64,
    ))
}

/// Through the server: time to the first byte and to the end; bytes.
async fn served(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
    text: &str,
    format: &str,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let started = Instant::now();
    let mut response = http
        .post(format!("{base}{path}"))
        .header("X-Hume-Api-Key", key)
        .json(&json!({"utterances": [{"text": text, "voice": {"name": "Colloquy", "provider": "HUME_AI"}}],
                      "format": {"type": format}}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "status {}", response.status());
    let mut first = None;
    let mut bytes = 0;
    while let Some(chunk) = response.chunk().await? {
        if !chunk.is_empty() {
            first.get_or_insert_with(|| started.elapsed());
        }
        bytes += chunk.len();
    }
    Ok((first.context("no audio")?, started.elapsed(), bytes))
}

fn ratio(a: u64, b: u64) -> String {
    format!("{:.2}x", a as f64 / b.max(1) as f64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    colloquy_bench::sys::report_background_load();
    println!("machine: {}", colloquy_bench::sys::machine());
    colloquy_bench::sys::raise_nofile_limit();
    let voice = EspeakVoice::new(EspeakOptions::default()).context("the built-in voice")?;

    // Direct library calls.
    let mut first_direct = Vec::new();
    for _ in 0..args.requests {
        first_direct.push(direct(&voice, SENTENCE).await?.0);
    }
    let long = paragraph();
    let (_, long_direct, long_audio) = direct(&voice, &long).await?;
    let rtf_direct = long_audio / long_direct.as_secs_f64();

    // The server.
    let dir = tempfile::tempdir()?;
    let settings = colloquy_testkit::settings(dir.path(), None);
    let server = ServerThread::start(settings, args.server_threads).await?;
    let key = server.key(None, true).await?.api_key;
    let http = reqwest::Client::new();
    for _ in 0..5 {
        served(
            &http,
            &server.base,
            &key,
            "/v0/tts/stream/file",
            SENTENCE,
            &args.format,
        )
        .await?;
    }
    let mut first_served = Vec::new();
    for _ in 0..args.requests {
        first_served.push(
            served(
                &http,
                &server.base,
                &key,
                "/v0/tts/stream/file",
                SENTENCE,
                &args.format,
            )
            .await?
            .0,
        );
    }
    let (_, long_served, _) = served(
        &http,
        &server.base,
        &key,
        "/v0/tts/file",
        &long,
        &args.format,
    )
    .await?;
    let rtf_served = long_audio / long_served.as_secs_f64();

    // Concurrent streams.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.streams {
        let (http, base, key, format) = (
            http.clone(),
            server.base.clone(),
            key.clone(),
            args.format.clone(),
        );
        tasks.push(tokio::spawn(async move {
            served(
                &http,
                &base,
                &key,
                "/v0/tts/stream/file",
                &paragraph()[..400],
                &format,
            )
            .await
        }));
    }
    let mut errors = 0;
    let mut firsts = Vec::new();
    for t in tasks {
        match t.await? {
            Ok((first, _, _)) => firsts.push(first),
            Err(e) => {
                errors += 1;
                eprintln!("stream failed: {e:#}");
            }
        }
    }
    let concurrent_wall = started.elapsed();
    server.stop().await?;

    let d = Summary::from_durations(&first_direct);
    let s = Summary::from_durations(&first_served);
    let c = Summary::from_durations(&firsts);
    println!(
        "one sentence ({} chars), {} requests, format {}:",
        SENTENCE.len(),
        args.requests,
        args.format
    );
    println!("  direct espeak-ng, first samples:      {d}");
    println!("  /v0/tts/stream/file, first byte:      {s}");
    println!(
        "  overhead (server / direct):           p50 {}  p90 {}",
        ratio(s.p50_us, d.p50_us),
        ratio(s.p90_us, d.p90_us)
    );
    println!("long paragraph ({:.1} s of audio):", long_audio);
    println!(
        "  direct espeak-ng:                     {:.0}x real time ({:?})",
        rtf_direct, long_direct
    );
    println!(
        "  /v0/tts/file:                         {:.0}x real time ({:?})",
        rtf_served, long_served
    );
    println!(
        "  overhead (direct speed / served):     {:.2}x",
        rtf_direct / rtf_served
    );
    println!("{} concurrent /v0/tts/stream/file:", args.streams);
    println!("  errors {errors}, all done in {concurrent_wall:?}, first byte {c}");
    anyhow::ensure!(errors == 0, "{errors} streams failed");
    Ok(())
}
