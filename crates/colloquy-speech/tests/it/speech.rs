//! Integration tests of colloquy-speech: the real espeak-ng voice, turn detection on its
//! speech, and the OpenAI-compatible clients against fake services over real HTTP.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use colloquy_speech::openai::{Service, ToolDefinition, TranscriptEvent};
use colloquy_speech::prompt::{build_messages, hang_up_tool};
use colloquy_speech::{
    decode_wav, encode_wav, wav_chunks, ChatClient, ChatMessage, ChatRequest, EspeakOptions,
    EspeakVoice, LlmDelta, Pcm, SentenceSplitter, ServiceConfig, ServiceError, SpeechClient,
    TranscriptionClient, TurnDetector, VadConfig, VadEvent, Voice, VoiceError,
};
use futures::StreamExt;
use serde_json::{json, Value};

fn voice() -> EspeakVoice {
    EspeakVoice::new(EspeakOptions::default()).expect("espeak-ng is installed")
}

fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

// ---- the built-in voice -------------------------------------------------------------------------

/// Lengths within 3 %.
fn similar_length(a: &Pcm, b: &Pcm) -> bool {
    let (a, b) = (a.samples.len() as f64, b.samples.len() as f64);
    let ok = (a - b).abs() <= 0.03 * a.max(b);
    if !ok {
        eprintln!("lengths differ: {a} vs {b}");
    }
    ok
}

#[tokio::test]
async fn espeak_speaks_sentences_quickly_and_in_parallel() {
    let v = voice();
    assert_eq!(v.sample_rate(), 22_050);
    let t = Instant::now();
    let pcm = v
        .synthesize("Hello, this is the built-in voice of Colloquy.")
        .await
        .unwrap();
    let took = t.elapsed();
    assert_eq!(pcm.sample_rate, 22_050);
    let ms = pcm.duration_ms();
    assert!((1500..6000).contains(&ms), "duration {ms} ms");
    assert!(rms(&pcm.samples) > 500.0, "rms {}", rms(&pcm.samples));
    eprintln!("espeak: {ms} ms of speech in {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A longer text gives longer audio; empty text gives none.
    let longer = v
        .synthesize("Hello, this is the built-in voice of Colloquy. It needs no network at all.")
        .await
        .unwrap();
    assert!(longer.samples.len() > pcm.samples.len() + 22_050 / 2);
    assert!(v.synthesize("   ").await.unwrap().is_empty());

    // Calls from many tasks are serialized onto the one engine thread; all succeed, and the
    // same text always gives about the same audio (not the same samples: espeak-ng adds
    // random noise to some sounds, and the length varies by a few milliseconds).
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let v = v.clone();
            tokio::spawn(async move { v.synthesize(&format!("Sentence number {i}.")).await })
        })
        .collect();
    let mut outputs = Vec::new();
    for t in tasks {
        outputs.push(t.await.unwrap().unwrap());
    }
    assert!(outputs.iter().all(|p| p.duration_ms() > 500));
    let again = v.synthesize("Sentence number 3.").await.unwrap();
    assert!(similar_length(&again, &outputs[3]));

    // The blocking API works outside the runtime's threads.
    let v2 = v.clone();
    let blocking =
        tokio::task::spawn_blocking(move || v2.synthesize_blocking("Sentence number 3."))
            .await
            .unwrap()
            .unwrap();
    assert!(similar_length(&blocking, &outputs[3]));
}

#[tokio::test]
async fn espeak_voice_settings() {
    let err = EspeakVoice::new(EspeakOptions {
        voice: "no-such-voice".into(),
        ..EspeakOptions::default()
    })
    .unwrap_err();
    assert!(matches!(err, VoiceError::Synthesis(_)), "{err}");
    assert!(err.to_string().contains("no-such-voice"), "{err}");

    let text = "The quick brown fox jumps over the lazy dog.";
    let normal = voice().synthesize(text).await.unwrap();
    let fast = EspeakVoice::new(EspeakOptions {
        rate_wpm: 350,
        ..EspeakOptions::default()
    })
    .unwrap()
    .synthesize(text)
    .await
    .unwrap();
    assert!(
        fast.samples.len() * 3 < normal.samples.len() * 2,
        "fast {} vs normal {}",
        fast.samples.len(),
        normal.samples.len()
    );
    // The default voice is used again afterwards (settings are per handle).
    assert!(similar_length(
        &voice().synthesize(text).await.unwrap(),
        &normal
    ));
    let german = EspeakVoice::new(EspeakOptions {
        voice: "de".into(),
        ..EspeakOptions::default()
    })
    .unwrap();
    assert!(german.synthesize("Guten Tag.").await.unwrap().duration_ms() > 300);
}

// ---- turn detection on real speech ------------------------------------------------------------

/// `lead` ms of silence, `speech`, `tail` ms of silence at `rate`, plus optional noise.
fn scene(speech: &Pcm, rate: u32, lead_ms: u32, tail_ms: u32, noise: i16) -> (Vec<i16>, u64) {
    let speech = speech.resample(rate);
    let mut out = vec![0i16; (rate * lead_ms / 1000) as usize];
    out.extend_from_slice(&speech.samples);
    out.extend(std::iter::repeat_n(0, (rate * tail_ms / 1000) as usize));
    let mut x: u32 = 7;
    for s in &mut out {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let n = ((x >> 16) as i16 as i32 * i32::from(noise)) >> 15;
        *s = s.saturating_add(n as i16);
    }
    (out, speech.duration_ms())
}

/// Feeds `samples` in 20 ms chunks; returns the events and the stream position (ms) at
/// which each was reported.
fn run_vad(vad: &mut TurnDetector, samples: &[i16], rate: u32) -> Vec<(VadEvent, u64)> {
    let chunk = (rate / 50) as usize;
    let mut events = Vec::new();
    for (i, piece) in samples.chunks(chunk).enumerate() {
        for e in vad.push(piece) {
            events.push((e, (i as u64 + 1) * 20));
        }
    }
    for e in vad.finish() {
        events.push((e, samples.len() as u64 * 1000 / u64::from(rate)));
    }
    events
}

/// Where speech really starts and ends in `pcm` (first/last 10 ms block above -40 dBFS).
fn speech_bounds(pcm: &Pcm) -> (u64, u64) {
    let block = (pcm.sample_rate / 100) as usize;
    let loud: Vec<usize> = pcm
        .samples
        .chunks(block)
        .enumerate()
        .filter(|(_, b)| rms(b) > 330.0)
        .map(|(i, _)| i)
        .collect();
    (
        *loud.first().unwrap() as u64 * 10,
        (*loud.last().unwrap() as u64 + 1) * 10,
    )
}

#[tokio::test]
async fn vad_finds_one_turn_in_synthesized_speech_at_any_rate() {
    let speech = voice()
        .synthesize("What is the weather like in Paris today?")
        .await
        .unwrap();
    let (on, off) = speech_bounds(&speech);
    for (rate, noise) in [(16_000, 0), (48_000, 0), (24_000, 600), (44_100, 0)] {
        let (samples, _) = scene(&speech, rate, 1000, 2000, noise);
        let config = VadConfig::default();
        let mut vad = TurnDetector::new(config.clone(), rate);
        let events = run_vad(&mut vad, &samples, rate);
        assert_eq!(events.len(), 2, "rate {rate} noise {noise}: {events:?}");
        let VadEvent::SpeechStart { at_ms } = events[0].0 else {
            panic!("{events:?}")
        };
        let VadEvent::SpeechEnd {
            start_ms,
            end_ms,
            ref audio,
        } = events[1].0
        else {
            panic!("{events:?}")
        };
        let (true_on, true_off) = (1000 + on, 1000 + off);
        assert!(
            at_ms.abs_diff(true_on) <= 150,
            "rate {rate}: start {at_ms} vs {true_on}"
        );
        assert_eq!(start_ms, at_ms);
        assert!(
            end_ms.abs_diff(true_off) <= 250,
            "rate {rate}: end {end_ms} vs {true_off}"
        );
        // Start is confirmed soon after it happens; the end after the hangover.
        assert!(
            events[0].1 <= at_ms + 400,
            "start reported at {}",
            events[0].1
        );
        let end_reported = events[1].1;
        assert!(
            end_reported >= end_ms + u64::from(config.hangover_ms) - 20
                && end_reported <= end_ms + u64::from(config.hangover_ms) + 60,
            "rate {rate}: end {end_ms} reported at {end_reported}"
        );
        // The utterance holds all of the speech, at 16 kHz.
        assert_eq!(audio.sample_rate, 16_000);
        let dur = audio.duration_ms();
        let spoken = off - on;
        assert!(
            dur >= spoken && dur <= spoken + 800,
            "rate {rate}: utterance {dur} ms, speech {spoken} ms"
        );
        assert!(rms(&audio.samples) > 1000.0);
        assert!(!vad.is_speaking());
    }
}

/// After speech, silence that is truly quiet ends the turn the configured hangover after
/// the last audible frame: the model alone would keep scoring ~80–100 ms of it as voiced.
/// Over audible noise the model decides, as before.
#[tokio::test]
async fn vad_ends_a_turn_the_hangover_after_speech_when_quiet_follows() {
    let speech = voice()
        .synthesize("What is the weather like in Paris today?")
        .await
        .unwrap()
        .resample(16_000);
    // The last sample above −60 dBFS-ish: where the gate sees the speech end.
    let last_audible = speech
        .samples
        .iter()
        .rposition(|s| s.unsigned_abs() > 33)
        .unwrap() as u64
        * 1000
        / 16_000;
    let config = VadConfig::default();
    let (samples, _) = scene(&speech, 16_000, 1000, 2000, 0);
    let mut vad = TurnDetector::new(config.clone(), 16_000);
    let events = run_vad(&mut vad, &samples, 16_000);
    assert_eq!(events.len(), 2, "{events:?}");
    let VadEvent::SpeechEnd { end_ms, .. } = events[1].0 else {
        panic!("{events:?}")
    };
    let quiet_from = 1000 + last_audible;
    assert!(
        end_ms <= quiet_from + 32,
        "the turn's speech ends at {end_ms} ms, the audio went quiet at {quiet_from} ms"
    );
    let reported = events[1].1;
    assert!(
        reported <= quiet_from + u64::from(config.hangover_ms) + 40,
        "reported at {reported} ms: more than the hangover after the quiet at {quiet_from} ms"
    );

    // Over noise at about −35 dBFS the model's own decision ends the turn, later.
    let (noisy, _) = scene(&speech, 16_000, 1000, 2000, 600);
    let mut vad = TurnDetector::new(config.clone(), 16_000);
    let events = run_vad(&mut vad, &noisy, 16_000);
    assert_eq!(events.len(), 2, "{events:?}");
    let VadEvent::SpeechEnd {
        end_ms: noisy_end, ..
    } = events[1].0
    else {
        panic!("{events:?}")
    };
    assert!(
        noisy_end > end_ms,
        "noise {noisy_end} ms vs quiet {end_ms} ms"
    );
}

#[tokio::test]
async fn vad_separates_two_turns_and_ignores_a_click() {
    let v = voice();
    let first = v.synthesize("Hello there.").await.unwrap().resample(16_000);
    let second = v
        .synthesize("Can you hear me now?")
        .await
        .unwrap()
        .resample(16_000);
    let mut samples = vec![0i16; 8_000];
    // A 30 ms click is not speech.
    samples.extend((0..480).map(|i| if i % 2 == 0 { 12_000 } else { -12_000 }));
    samples.extend(vec![0; 8_000]);
    samples.extend_from_slice(&first.samples);
    samples.extend(vec![0; 16_000 * 3 / 2]);
    samples.extend_from_slice(&second.samples);
    samples.extend(vec![0; 16_000]);
    let mut vad = TurnDetector::new(VadConfig::default(), 16_000);
    let events: Vec<VadEvent> = run_vad(&mut vad, &samples, 16_000)
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            VadEvent::SpeechStart { .. } => "start",
            VadEvent::SpeechEnd { .. } => "end",
        })
        .collect();
    assert_eq!(kinds, ["start", "end", "start", "end"], "{events:?}");
    let VadEvent::SpeechStart { at_ms } = events[0] else {
        unreachable!()
    };
    assert!(at_ms >= 1000, "the click started a turn at {at_ms}");
}

#[tokio::test]
async fn vad_ends_an_open_turn_when_the_stream_ends() {
    let speech = voice().synthesize("I am still talking").await.unwrap();
    let (samples, _) = scene(&speech, 16_000, 500, 100, 0);
    let mut vad = TurnDetector::new(VadConfig::default(), 16_000);
    let mut events = Vec::new();
    for piece in samples.chunks(320) {
        events.extend(vad.push(piece));
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(vad.is_speaking());
    let end = vad.finish();
    assert!(
        matches!(end.as_slice(), [VadEvent::SpeechEnd { .. }]),
        "{end:?}"
    );
}

// ---- fake OpenAI-compatible services ------------------------------------------------------------

/// A multipart form field: name and bytes.
type Field = (String, Vec<u8>);

#[derive(Default)]
struct Seen {
    transcriptions: Vec<Vec<Field>>,
    chats: Vec<Value>,
    speech: Vec<Value>,
    speech_sent: Vec<Pcm>,
}

#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Seen>>,
    voice: EspeakVoice,
}

/// Parses a multipart/form-data body into (field name, bytes), independently of reqwest.
fn parse_multipart(headers: &HeaderMap, body: &[u8]) -> Vec<Field> {
    let ct = headers["content-type"].to_str().unwrap();
    let boundary = ct
        .split("boundary=")
        .nth(1)
        .expect("boundary")
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let text = body;
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut pos = find(text, delim.as_bytes(), 0).expect("first boundary") + delim.len();
    while text[pos..].starts_with(b"\r\n") {
        let head_end = find(text, b"\r\n\r\n", pos).unwrap();
        let head = String::from_utf8_lossy(&text[pos + 2..head_end]).to_string();
        let next = find(text, format!("\r\n{delim}").as_bytes(), head_end).unwrap();
        let name = head
            .split("name=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        parts.push((name, text[head_end + 4..next].to_vec()));
        pos = next + 2 + delim.len();
    }
    parts
}

async fn transcriptions(State(f): State<Fake>, headers: HeaderMap, body: Bytes) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sk-test") {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"message":"Incorrect API key provided"}}"#,
        )
            .into_response();
    }
    let parts = parse_multipart(&headers, &body);
    let file = parts
        .iter()
        .find(|(n, _)| n == "file")
        .map(|(_, b)| b.clone())
        .unwrap_or_default();
    let valid = file.len() > 44 && &file[0..4] == b"RIFF" && &file[8..12] == b"WAVE";
    let field = |n: &str| parts.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let streams = field("model").as_deref() == Some(&b"streaming-asr"[..])
        && field("stream").as_deref() == Some(&b"true"[..]);
    f.seen.lock().unwrap().transcriptions.push(parts);
    if valid && streams {
        let mut body = String::new();
        for d in ["What is", " the weather", " in Paris?"] {
            body.push_str(&format!(
                "data: {}\n\n",
                json!({"type": "transcript.text.delta", "delta": d})
            ));
        }
        body.push_str(&format!(
            "data: {}\n\n",
            json!({"type": "transcript.text.done", "text": "What is the weather in Paris?"})
        ));
        return sse_response(body.into_bytes(), 5, Duration::from_millis(1));
    }
    if !valid {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"error":{"message":"file is not a WAV"}}"#,
        )
            .into_response();
    }
    axum::Json(json!({"text": " What is the weather in Paris? "})).into_response()
}

/// A chat-completions answer with text and a tool call whose arguments arrive in pieces,
/// sent as SSE in 7-byte pieces (so events and UTF-8 are split across network chunks).
fn chat_sse() -> String {
    let chunks = [
        json!({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}),
        json!({"choices":[{"index":0,"delta":{"content":"It is sunny in Par"}}]}),
        json!({"choices":[{"index":0,"delta":{"content":"is, about 21.5 °C. Dr. Weather"}}]}),
        json!({"choices":[{"index":0,"delta":{"content":" says so! Goodbye."}}]}),
        json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"ci"}}]}}]}),
        json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\": \"Par"}}]}}]}),
        json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"is\"}"}}]}}]}),
        json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"hang_up","arguments":"{}"}}]}}]}),
        json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
    ];
    let mut body = String::from(": comment\n\n");
    for c in chunks {
        body.push_str(&format!("data: {c}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    body
}

fn sse_response(body: Vec<u8>, piece: usize, delay: Duration) -> Response {
    let pieces: Vec<Bytes> = body.chunks(piece).map(Bytes::copy_from_slice).collect();
    let stream = futures::stream::iter(pieces).then(move |p| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, std::convert::Infallible>(p)
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn chat(State(f): State<Fake>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap();
    let model = request["model"].as_str().unwrap_or_default().to_string();
    f.seen.lock().unwrap().chats.push(request);
    match model.as_str() {
        "truncated" => {
            let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
            sse_response(body.into(), 1000, Duration::ZERO)
        }
        "stall" => {
            let first = Bytes::from_static(
                b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            );
            let stream =
                futures::stream::once(async move { Ok::<_, std::convert::Infallible>(first) })
                    .chain(futures::stream::pending());
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        "missing" => (
            StatusCode::NOT_FOUND,
            r#"{"error":{"message":"model 'missing' not found"}}"#,
        )
            .into_response(),
        _ => sse_response(chat_sse().into_bytes(), 7, Duration::from_millis(1)),
    }
}

async fn speech(State(f): State<Fake>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap();
    f.seen.lock().unwrap().speech.push(request.clone());
    if request["response_format"] != "wav" {
        return (StatusCode::BAD_REQUEST, "only wav here").into_response();
    }
    if request["input"] == "mp3 please" {
        return (
            [("content-type", "audio/mpeg")],
            vec![0xFFu8, 0xFB, 0x90, 0x00],
        )
            .into_response();
    }
    let pcm = f
        .voice
        .synthesize(request["input"].as_str().unwrap())
        .await
        .unwrap();
    let wav = encode_wav(&pcm);
    f.seen.lock().unwrap().speech_sent.push(pcm);
    ([("content-type", "audio/wav")], wav).into_response()
}

async fn start_fake() -> (String, Arc<Mutex<Seen>>) {
    let fake = Fake {
        seen: Arc::default(),
        voice: voice(),
    };
    let seen = fake.seen.clone();
    let app = Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/audio/speech", post(speech))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), seen)
}

fn config(base: &str, model: &str) -> ServiceConfig {
    ServiceConfig {
        api_key: Some("sk-test".into()),
        timeout_secs: 1,
        ..ServiceConfig::new(base, model)
    }
}

async fn collect(
    client: &ChatClient,
    request: &ChatRequest,
) -> Vec<Result<LlmDelta, ServiceError>> {
    client.stream(request).await.unwrap().collect().await
}

#[tokio::test]
async fn transcription_uploads_a_wav_and_returns_the_text() {
    let (base, seen) = start_fake().await;
    let audio = voice()
        .synthesize("What is the weather in Paris?")
        .await
        .unwrap()
        .resample(16_000);
    let client = TranscriptionClient::new(config(&base, "whisper-1"));
    let text = client.transcribe(&audio, Some("en")).await.unwrap();
    assert_eq!(text, "What is the weather in Paris?");
    {
        let seen = seen.lock().unwrap();
        let parts = &seen.transcriptions[0];
        let field = |n: &str| {
            parts
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(field("model"), b"whisper-1");
        assert_eq!(field("language"), b"en");
        let wav = decode_wav(&field("file")).unwrap();
        assert!(wav == audio, "the service received exactly the audio");
    }

    // A wrong key: the error names the service, the status and the body.
    let mut bad = config(&base, "whisper-1");
    bad.api_key = Some("sk-wrong".into());
    let err = TranscriptionClient::new(bad)
        .transcribe(&audio, None)
        .await
        .unwrap_err();
    match &err {
        ServiceError::Status {
            service,
            status,
            body,
            ..
        } => {
            assert_eq!(*service, Service::Transcription);
            assert_eq!(*status, 401);
            assert!(body.contains("Incorrect API key"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    let shown = err.to_string();
    assert!(
        shown.contains("transcription service") && shown.contains("401"),
        "{shown}"
    );
    assert!(shown.contains("/v1/audio/transcriptions"), "{shown}");
}

#[tokio::test]
async fn streamed_transcription_gives_interim_then_final_text() {
    let (base, seen) = start_fake().await;
    let audio = voice()
        .synthesize("What is the weather in Paris?")
        .await
        .unwrap();
    let events: Vec<TranscriptEvent> = TranscriptionClient::new(config(&base, "streaming-asr"))
        .transcribe_stream(&audio, None)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(
        events,
        [
            TranscriptEvent::Interim("What is".into()),
            TranscriptEvent::Interim("What is the weather".into()),
            TranscriptEvent::Interim("What is the weather in Paris?".into()),
            TranscriptEvent::Final("What is the weather in Paris?".into()),
        ]
    );
    // A service that does not stream answers JSON: just the final text.
    let events: Vec<TranscriptEvent> = TranscriptionClient::new(config(&base, "whisper-1"))
        .transcribe_stream(&audio, None)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(
        events,
        [TranscriptEvent::Final(
            "What is the weather in Paris?".into()
        )]
    );
    let seen = seen.lock().unwrap();
    assert!(seen.transcriptions[1]
        .iter()
        .any(|(k, v)| k == "stream" && v == b"true"));
}

#[tokio::test]
async fn chat_stream_yields_text_sentences_and_assembled_tool_calls() {
    let (base, seen) = start_fake().await;
    let client = ChatClient::new(config(&base, "llama3.2"));
    let tools: Vec<ToolDefinition> = vec![
        ToolDefinition {
            name: "get_weather".into(),
            description: Some("Weather for a city".into()),
            parameters: json!({"type":"object","properties":{"city":{"type":"string"}}}),
        },
        hang_up_tool(),
    ];
    let vars = serde_json::from_value(json!({"name": "Ada"})).unwrap();
    let request = ChatRequest {
        messages: build_messages(
            "You are talking to {{name}}.",
            &vars,
            &[],
            &[ChatMessage::user("Weather?")],
            None,
        ),
        tools,
        ..ChatRequest::default()
    };
    let items = collect(&client, &request).await;
    let deltas: Vec<LlmDelta> = items.into_iter().map(Result::unwrap).collect();

    let mut splitter = SentenceSplitter::new();
    let mut sentences = Vec::new();
    let mut calls = Vec::new();
    let mut done = None;
    for d in &deltas {
        match d {
            LlmDelta::Text(t) => sentences.extend(splitter.push(t)),
            LlmDelta::ToolCall {
                id,
                name,
                arguments,
            } => calls.push((id.clone(), name.clone(), arguments.clone())),
            LlmDelta::Done { finish_reason } => done = Some(finish_reason.clone()),
        }
    }
    sentences.extend(splitter.finish());
    assert_eq!(
        sentences,
        [
            "It is sunny in Paris, about 21.5 °C.",
            "Dr. Weather says so!",
            "Goodbye."
        ]
    );
    assert_eq!(
        calls,
        [
            (
                "call_1".to_string(),
                "get_weather".to_string(),
                r#"{"city": "Paris"}"#.to_string()
            ),
            (
                "call_2".to_string(),
                "hang_up".to_string(),
                "{}".to_string()
            ),
        ]
    );
    assert_eq!(done, Some(Some("tool_calls".to_string())));
    assert!(matches!(deltas.last(), Some(LlmDelta::Done { .. })));

    let seen = seen.lock().unwrap();
    let req = &seen.chats[0];
    assert_eq!(req["model"], "llama3.2");
    assert_eq!(req["stream"], true);
    assert_eq!(
        req["messages"][0],
        json!({"role": "system", "content": "You are talking to Ada."})
    );
    assert_eq!(
        req["messages"][1],
        json!({"role": "user", "content": "Weather?"})
    );
    assert_eq!(req["tools"][0]["type"], "function");
    assert_eq!(req["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(req["tools"][1]["function"]["name"], "hang_up");
}

#[tokio::test]
async fn chat_stream_failures_are_reported() {
    let (base, _) = start_fake().await;
    let request = ChatRequest {
        messages: vec![ChatMessage::user("hi")],
        ..ChatRequest::default()
    };

    // HTTP error before streaming.
    let err = ChatClient::new(config(&base, "missing"))
        .stream(&request)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, ServiceError::Status { status: 404, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("model 'missing' not found"),
        "{err}"
    );

    // The stream stops before the model finished.
    let items = collect(&ChatClient::new(config(&base, "truncated")), &request).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap(), &LlmDelta::Text("Hel".into()));
    let err = items[1].as_ref().unwrap_err();
    assert!(
        matches!(err, ServiceError::Invalid { .. }) && err.to_string().contains("ended"),
        "{err}"
    );

    // The stream stalls: the idle timeout ends it.
    let t = Instant::now();
    let items = collect(&ChatClient::new(config(&base, "stall")), &request).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(
        matches!(items[1], Err(ServiceError::Timeout { secs: 1, .. })),
        "{items:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));

    // Nothing listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = ChatClient::new(config(&format!("http://{closed}/v1"), "m"))
        .stream(&request)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ServiceError::Unreachable {
                service: Service::ChatCompletions,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn speech_service_returns_wav_decoded_to_pcm() {
    let (base, seen) = start_fake().await;
    let client = SpeechClient::new(config(&base, "tts-1"), "alloy");
    let text = "Hello from the speech service.";
    let pcm = client.synthesize(text).await.unwrap();
    assert!(
        pcm == seen.lock().unwrap().speech_sent[0],
        "the WAV decodes to what was sent"
    );
    assert!(pcm.duration_ms() > 1000);
    assert_eq!(
        seen.lock().unwrap().speech[0],
        json!({"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"})
    );
    let err = client.speak("mp3 please").await.unwrap_err();
    assert!(
        matches!(
            err,
            ServiceError::Invalid {
                service: Service::Speech,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("audio/mpeg"), "{err}");
}

/// The whole turn with real HTTP and the built-in voice: speech → turn detection →
/// transcription → streamed answer → sentences → speech → `audio_output` WAV chunks.
#[tokio::test]
async fn a_whole_turn() {
    let (base, seen) = start_fake().await;
    let v = voice();
    let user = v.synthesize("What is the weather in Paris?").await.unwrap();
    let rate = 48_000;
    let (samples, _) = scene(&user, rate, 500, 1500, 0);
    let mut vad = TurnDetector::new(VadConfig::default(), rate);
    let mut utterance = None;
    for piece in samples.chunks(rate as usize / 50) {
        for e in vad.push(piece) {
            if let VadEvent::SpeechEnd { audio, .. } = e {
                utterance = Some((audio, Instant::now()));
            }
        }
        if utterance.is_some() {
            break;
        }
    }
    let (audio, ended) = utterance.expect("the turn ended");
    let text = TranscriptionClient::new(config(&base, "whisper-1"))
        .transcribe(&audio, None)
        .await
        .unwrap();
    let request = ChatRequest {
        messages: build_messages(
            "Be brief.",
            &Default::default(),
            &[],
            &[ChatMessage::user(text)],
            None,
        ),
        ..ChatRequest::default()
    };
    let mut stream = ChatClient::new(config(&base, "llama3.2"))
        .stream(&request)
        .await
        .unwrap();
    let mut splitter = SentenceSplitter::new();
    let mut first_chunk_after = None;
    let mut chunks = Vec::new();
    while let Some(delta) = stream.next().await {
        if let LlmDelta::Text(t) = delta.unwrap() {
            for sentence in splitter.push(&t) {
                let pcm = v.synthesize(&sentence).await.unwrap().resample(48_000);
                let wavs = wav_chunks(&pcm, 500);
                first_chunk_after.get_or_insert_with(|| ended.elapsed());
                chunks.extend(wavs);
            }
        }
    }
    assert!(!chunks.is_empty());
    for c in &chunks {
        let pcm = decode_wav(c).unwrap();
        assert_eq!(pcm.sample_rate, 48_000);
        assert!(pcm.duration_ms() <= 500);
    }
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.chats[0]["messages"][1]["content"],
        "What is the weather in Paris?"
    );
    eprintln!(
        "end of speech → first audio_output chunk: {:?} (fake services included)",
        first_chunk_after.unwrap()
    );
}
