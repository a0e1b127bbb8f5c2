//! The pipeline engine against fake OpenAI-compatible services over real HTTP: streamed
//! chat completions (text in pieces, a tool call turn, `hang_up`), transcription, and
//! speech returning a real WAV; spoken turns from espeak-ng speech, an interruption; what
//! the client receives and what is recorded.

use crate::harness::*;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use colloquy_server::capture::CapturedFormat;
use colloquy_server::config::EngineMode;
use colloquy_server::objects::Voice as Track;
use colloquy_server::Settings;
use colloquy_speech::{EspeakOptions, EspeakVoice, ServiceConfig, Voice};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Fake LLM + TTS services; keeps every chat request body.
#[derive(Clone, Default)]
pub(crate) struct Fake {
    chats: Arc<Mutex<Vec<Value>>>,
    spoken: Arc<Mutex<Vec<String>>>,
    /// The `voice` of each speech request.
    voices: Arc<Mutex<Vec<String>>>,
    /// The `Authorization` header of each chat request.
    auth: Arc<Mutex<Vec<String>>>,
    /// Length of each spoken sentence (250 ms when 0).
    speech_ms: Arc<Mutex<u32>>,
    /// What the transcription service answers, in order.
    pub(crate) transcripts: Arc<Mutex<VecDeque<String>>>,
    /// Duration (ms) of each WAV the transcription service received.
    heard_ms: Arc<Mutex<Vec<u64>>>,
}

impl Fake {
    pub(crate) async fn start() -> (Self, String) {
        let fake = Fake::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/audio/speech", post(speech))
            .route("/v1/audio/transcriptions", post(transcription))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, url)
    }
}

/// `ms` of a 300 Hz tone at 24 kHz, as the speech service's WAV.
fn spoken_wav(ms: u32) -> Vec<u8> {
    tone_wav(300.0, 24_000, ms)
}

async fn speech(State(f): State<Fake>, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(req["response_format"], "wav");
    f.spoken
        .lock()
        .unwrap()
        .push(req["input"].as_str().unwrap().to_string());
    f.voices
        .lock()
        .unwrap()
        .push(req["voice"].as_str().unwrap_or_default().to_string());
    Response::builder()
        .header("content-type", "audio/wav")
        .body(Body::from(spoken_wav(f.sentence_ms())))
        .unwrap()
}

impl Fake {
    fn sentence_ms(&self) -> u32 {
        match *self.speech_ms.lock().unwrap() {
            0 => 250,
            ms => ms,
        }
    }
}

/// Checks that the multipart upload holds a valid 16 kHz WAV; answers the next transcript.
async fn transcription(State(f): State<Fake>, body: Bytes) -> Response {
    let at = body
        .windows(4)
        .position(|w| w == b"RIFF")
        .expect("a WAV file in the upload");
    let pcm = colloquy_speech::decode_wav(&body[at..]).expect("a valid WAV");
    assert_eq!(pcm.sample_rate, 16_000);
    f.heard_ms.lock().unwrap().push(pcm.duration_ms());
    let text = f
        .transcripts
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_default();
    let wanted: &[u8] = b"name=\"stream\"\r\n\r\ntrue";
    let streamed = body.windows(wanted.len()).any(|w| w == wanted);
    if streamed {
        let (a, b) = text.split_at(text.len() / 2);
        let mut sse = String::new();
        for d in [a, b] {
            let ev = json!({"type": "transcript.text.delta", "delta": d});
            sse.push_str(&format!("data: {ev}\n\n"));
        }
        // Whisper-style servers name the language they detected.
        let done = json!({"type": "transcript.text.done", "text": text, "language": "english"});
        sse.push_str(&format!("data: {done}\n\n"));
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from(sse))
            .unwrap();
    }
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(
            json!({ "text": text, "language": "en" }).to_string(),
        ))
        .unwrap()
}

fn text_chunk(t: &str) -> Value {
    json!({"choices":[{"index":0,"delta":{"content":t}}]})
}

fn tool_chunk(id: &str, name: &str, args: &str) -> Value {
    json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":id,"type":"function","function":{"name":name,"arguments":args}}]}}]})
}

async fn chat(State(f): State<Fake>, headers: axum::http::HeaderMap, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap();
    f.auth.lock().unwrap().push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    );
    assert_eq!(req["stream"], true);
    f.chats.lock().unwrap().push(req.clone());
    let last = req["messages"].as_array().unwrap().last().unwrap().clone();
    let said = last["content"].as_str().unwrap_or_default().to_string();
    if said.starts_with("fail") {
        return Response::builder()
            .status(500)
            .body(Body::from(r#"{"error":{"message":"model crashed"}}"#))
            .unwrap();
    }
    let (chunks, finish) = if last["role"] == "tool" {
        (
            vec![text_chunk("It is sunny"), text_chunk(" in Paris.")],
            "stop",
        )
    } else if said.starts_with("weather") {
        (
            vec![
                text_chunk("Let me check."),
                tool_chunk("call-1", "get_weather", "{\"city\":"),
                json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}}]}),
            ],
            "tool_calls",
        )
    } else if said.starts_with("bye") {
        (
            vec![
                text_chunk("Goodbye!"),
                tool_chunk("call-2", "hang_up", "{}"),
            ],
            "tool_calls",
        )
    } else {
        (
            vec![
                text_chunk("Hello there! I am Col"),
                text_chunk("loquy, a pipeline. How can"),
                text_chunk(" I help?"),
            ],
            "stop",
        )
    };
    let mut body = String::new();
    for c in chunks {
        body.push_str(&format!("data: {c}\n\n"));
    }
    body.push_str(&format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"choices":[{"index":0,"delta":{},"finish_reason":finish}]})
    ));
    let pieces: Vec<Result<Bytes, std::convert::Infallible>> = body
        .as_bytes()
        .chunks(40)
        .map(|p| Ok(Bytes::copy_from_slice(p)))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures::stream::iter(pieces)))
        .unwrap()
}

pub(crate) fn pipeline_to(url: String) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.engine.mode = EngineMode::Pipeline;
        s.engine.pipeline.llm = Some(ServiceConfig::new(url.clone(), "llama3.2"));
        s.engine.pipeline.tts = Some(ServiceConfig::new(url.clone(), "tts-1"));
        s.engine.pipeline.asr = Some(ServiceConfig::new(url, "whisper-1"));
        s.engine.pipeline.system_prompt = Some("Configured prompt".into());
    }
}

/// Reads one sentence: its `assistant_message` and `audio_output` chunks (250 ms at 48 kHz
/// in 100 ms chunks: 3). Returns the message id.
async fn sentence(ws: &mut Ws, text: &str) -> String {
    sentence_of(ws, text, 3).await
}

async fn sentence_of(ws: &mut Ws, text: &str, chunks: u32) -> String {
    let m = recv_json(ws).await;
    assert_eq!(m["type"], "assistant_message", "{m}");
    assert_eq!(m["message"]["content"], text);
    let id = m["id"].as_str().unwrap().to_string();
    for index in 0..chunks {
        let a = recv_json(ws).await;
        assert_eq!(a["type"], "audio_output", "{a}");
        assert_eq!(a["id"], id.as_str());
        assert_eq!(a["index"], index);
        let pcm = wav_chunk_pcm(&a);
        assert_eq!(pcm.sample_rate, 48_000);
    }
    id
}

#[tokio::test]
async fn a_pipeline_chat_answers_typed_turns_with_tools_and_hangs_up() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (fake, url) = Fake::start().await;
        let Some((srv, db)) = TestServer::start(backend, pipeline_to(url)).await else {
            continue;
        };
        let key = srv.key(true).await;
        let (mut ws, meta) = srv.connect(&key.api_key, "").await;
        let chat_id = meta["chat_id"].as_str().unwrap().to_string();
        send_json(
            &mut ws,
            json!({
                "type": "session_settings",
                "system_prompt": "Be brief, {{name}}.",
                "variables": {"name": "Ada"},
                "context": {"text": "The user is in Paris.", "type": "persistent"},
                "tools": [{"type": "function", "name": "get_weather",
                           "parameters": "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}",
                           "description": "Weather of a city"}],
                "builtin_tools": [{"name": "hang_up"}],
            }),
        )
        .await;

        // A typed turn: the answer comes sentence by sentence, each spoken.
        send_json(&mut ws, json!({"type": "user_input", "text": "hello"})).await;
        let heard = recv_json(&mut ws).await;
        assert_eq!(
            (heard["type"].as_str(), heard["message"]["content"].as_str()),
            (Some("user_message"), Some("hello"))
        );
        let first = sentence(&mut ws, "Hello there!").await;
        sentence(&mut ws, "I am Colloquy, a pipeline.").await;
        sentence(&mut ws, "How can I help?").await;
        assert_eq!(recv_json(&mut ws).await, json!({"type": "assistant_end"}));
        let req = fake.chats.lock().unwrap()[0].clone();
        assert_eq!(req["model"], "llama3.2");
        assert_eq!(
            req["messages"][0],
            json!({"role": "system", "content": "Be brief, Ada."})
        );
        assert_eq!(
            req["messages"][1],
            json!({"role": "user", "content": "hello\n\nThe user is in Paris."})
        );
        let tools: Vec<&str> = req["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(tools, ["get_weather", "hang_up"]);

        // A tool call waits for the client's answer, then the model goes on.
        send_json(&mut ws, json!({"type": "user_input", "text": "weather"})).await;
        assert_eq!(recv_json(&mut ws).await["type"], "user_message");
        sentence(&mut ws, "Let me check.").await;
        let want_call = json!({"type": "tool_call", "name": "get_weather",
            "parameters": "{\"city\":\"Paris\"}", "tool_call_id": "call-1",
            "tool_type": "function", "response_required": true});
        // The turn's assistant message carries the call, then the call itself.
        let carrier = recv_json(&mut ws).await;
        assert_eq!(carrier["type"], "assistant_message", "{carrier}");
        assert_eq!(
            carrier["message"],
            json!({"role": "assistant", "content": "", "tool_call": want_call})
        );
        let call = recv_json(&mut ws).await;
        assert_eq!(call, want_call);
        send_json(
            &mut ws,
            json!({"type": "tool_response", "tool_call_id": "call-1", "content": "sunny"}),
        )
        .await;
        // The answer goes to the assistant as a message with role `tool`.
        let result = recv_json(&mut ws).await;
        assert_eq!(result["type"], "user_message", "{result}");
        assert_eq!(
            result["message"],
            json!({"role": "tool", "content": "sunny", "tool_result":
                {"type": "tool_response", "tool_call_id": "call-1", "content": "sunny"}})
        );
        assert_eq!(result["from_text"], true);
        assert_eq!(result["interim"], false);
        sentence(&mut ws, "It is sunny in Paris.").await;
        assert_eq!(recv_json(&mut ws).await, json!({"type": "assistant_end"}));
        let req = fake.chats.lock().unwrap()[2].clone();
        let msgs = req["messages"].as_array().unwrap();
        let n = msgs.len();
        assert_eq!(msgs[n - 2]["role"], "assistant");
        assert_eq!(msgs[n - 2]["content"], "Let me check.");
        assert_eq!(msgs[n - 2]["tool_calls"][0]["id"], "call-1");
        assert_eq!(
            msgs[n - 1],
            json!({"role": "tool", "content": "sunny", "tool_call_id": "call-1"})
        );
        assert_eq!(
            msgs[2]["content"],
            "Hello there! I am Colloquy, a pipeline. How can I help?"
        );

        // The model hangs up: the chat ends as USER_ENDED.
        send_json(&mut ws, json!({"type": "user_input", "text": "bye"})).await;
        assert_eq!(recv_json(&mut ws).await["type"], "user_message");
        sentence(&mut ws, "Goodbye!").await;
        assert_eq!(recv_close(&mut ws).await, Some(1000));

        let (_, chat) = srv
            .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}"))
            .await;
        assert_eq!(chat["status"], "USER_ENDED", "{chat}");
        let metadata: Value = serde_json::from_str(chat["metadata"].as_str().unwrap()).unwrap();
        assert_eq!(metadata["engine"], "pipeline");
        let events = srv.all_events(&key.api_key, &chat_id, 100).await;
        assert_eq!(
            types(&events),
            vec![
                "CHAT_START_MESSAGE",
                "SYSTEM_PROMPT",
                "SESSION_SETTINGS",
                "SYSTEM_PROMPT",
                "USER_MESSAGE",
                "AGENT_MESSAGE",
                "AGENT_MESSAGE",
                "AGENT_MESSAGE",
                "USER_MESSAGE",
                "AGENT_MESSAGE",
                "FUNCTION_CALL",
                "FUNCTION_CALL_RESPONSE",
                "AGENT_MESSAGE",
                "USER_MESSAGE",
                "AGENT_MESSAGE",
                "FUNCTION_CALL",
                "CHAT_END_MESSAGE",
            ]
        );
        assert_eq!(events[1]["message_text"], "Configured prompt");
        assert_eq!(events[5]["id"], first.as_str());
        assert_eq!(events[5]["emotion_features"], "", "no invented scores");
        let call: Value =
            serde_json::from_str(events[10]["message_text"].as_str().unwrap()).unwrap();
        assert_eq!(call["tool_call_id"], "call-1");
        assert_eq!(events[11]["message_text"], "sunny");
        let hang: Value =
            serde_json::from_str(events[15]["message_text"].as_str().unwrap()).unwrap();
        assert_eq!(
            (hang["name"].as_str(), hang["tool_type"].as_str()),
            (Some("hang_up"), Some("builtin"))
        );
        let end: Value = serde_json::from_str(events[16]["metadata"].as_str().unwrap()).unwrap();
        assert_eq!(end["reason"], "hang_up");
        assert_eq!(fake.spoken.lock().unwrap().len(), 6);

        // The assistant's voice is recorded and reconstructs.
        let rec = srv.audio_when_done(&key.api_key, &chat_id).await;
        assert_eq!(rec["status"], "COMPLETE", "{rec}");
        srv.stop(db).await;
    }
}

/// `text` spoken by espeak-ng, as 16 kHz linear16 bytes.
pub(crate) async fn speech_16k(text: &str) -> Vec<u8> {
    let voice = EspeakVoice::new(EspeakOptions::default()).expect("espeak-ng is installed");
    let pcm = voice.synthesize(text).await.unwrap().resample(16_000);
    pcm.samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Sends linear16 bytes as `audio_input` chunks of 100 ms.
pub(crate) async fn send_audio(ws: &mut Ws, pcm: &[u8]) {
    for chunk in pcm.chunks(3_200) {
        let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, chunk);
        send_json(ws, json!({"type": "audio_input", "data": data})).await;
    }
}

#[tokio::test]
async fn spoken_turns_are_transcribed_and_the_user_can_interrupt() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (fake, url) = Fake::start().await;
        *fake.speech_ms.lock().unwrap() = 3_000;
        fake.transcripts
            .lock()
            .unwrap()
            .extend(["hello".to_string(), "bye".to_string()]);
        let Some((srv, db)) = TestServer::start(backend, pipeline_to(url)).await else {
            continue;
        };
        let key = srv.key(true).await;
        let (mut ws, meta) = srv
            .connect(
                &key.api_key,
                "verbose_transcription=true&session_settings[audio][encoding]=linear16\
                 &session_settings[audio][sample_rate]=16000&session_settings[audio][channels]=1",
            )
            .await;
        send_json(
            &mut ws,
            json!({"type": "session_settings", "builtin_tools": [{"name": "hang_up"}]}),
        )
        .await;
        let chat_id = meta["chat_id"].as_str().unwrap().to_string();
        let silence = vec![0u8; 32_000]; // 1 s
        let first = speech_16k("Hello, how are you doing today?").await;
        let second = speech_16k("Wait, stop talking please.").await;

        // An utterance, then silence: the turn ends and is transcribed.
        send_audio(&mut ws, &first).await;
        send_audio(&mut ws, &silence).await;
        // verbose_transcription: interim text first (sent, not recorded), then the final.
        let interim = recv_json(&mut ws).await;
        assert_eq!(interim["type"], "user_message", "{interim}");
        assert_eq!(interim["interim"], true);
        assert_eq!(interim["message"]["content"], "he");
        let interim = recv_json(&mut ws).await;
        assert_eq!(
            (
                interim["interim"].as_bool(),
                interim["message"]["content"].as_str()
            ),
            (Some(true), Some("hello"))
        );
        let heard = recv_json(&mut ws).await;
        assert_eq!(heard["type"], "user_message", "{heard}");
        assert_eq!(heard["message"]["content"], "hello");
        assert_eq!(heard["from_text"], false);
        assert_eq!(heard["interim"], false);
        // The language the recognizer detected, as ISO 639-1 ("english" → "en").
        assert_eq!(heard["language"], "en", "{heard}");
        assert!(interim.get("language").is_none());
        let utterance_ms = fake.heard_ms.lock().unwrap()[0];
        assert!(
            utterance_ms > 1_000,
            "the whole utterance: {utterance_ms} ms"
        );

        // The answer's first sentence (3 s of speech: 30 chunks); the next one waits until
        // that speech has nearly played, and the user talks over it.
        let cut_id = sentence_of(&mut ws, "Hello there!", 30).await;
        send_audio(&mut ws, &second).await;
        let interruption = recv_json(&mut ws).await;
        assert_eq!(interruption["type"], "user_interruption", "{interruption}");
        send_audio(&mut ws, &silence).await;
        let mut heard = recv_json(&mut ws).await;
        while heard["interim"] == true {
            heard = recv_json(&mut ws).await;
        }
        assert_eq!(heard["message"]["content"], "bye", "{heard}");
        sentence_of(&mut ws, "Goodbye!", 30).await;
        assert_eq!(recv_close(&mut ws).await, Some(1000));

        // The model heard only what was said before the interruption.
        let req = fake.chats.lock().unwrap()[1].clone();
        assert_eq!(
            req["messages"],
            json!([
                {"role": "system", "content": "Configured prompt"},
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "Hello there!"},
                {"role": "user", "content": "bye"},
            ])
        );

        let events = srv.all_events(&key.api_key, &chat_id, 100).await;
        assert_eq!(
            types(&events),
            vec![
                "CHAT_START_MESSAGE",
                "SESSION_SETTINGS",
                "SYSTEM_PROMPT",
                "SESSION_SETTINGS",
                "USER_RECORDING_START_MESSAGE",
                "USER_MESSAGE",
                "AGENT_MESSAGE",
                "USER_INTERRUPTION",
                "USER_MESSAGE",
                "AGENT_MESSAGE",
                "FUNCTION_CALL",
                "CHAT_END_MESSAGE",
            ]
        );
        let heard_meta: Value =
            serde_json::from_str(events[5]["metadata"].as_str().unwrap()).unwrap();
        assert_eq!(heard_meta, json!({"language": "en"}));
        assert_eq!(events[6]["id"], cut_id.as_str());
        assert_eq!(events[6]["message_text"], "Hello there!");
        let cut = &events[7];
        assert_eq!(cut["related_event_id"], cut_id.as_str());
        let cut_meta: Value = serde_json::from_str(cut["metadata"].as_str().unwrap()).unwrap();
        assert_eq!(cut_meta["truncated"], true, "{cut_meta}");
        assert_eq!(cut_meta["duration_ms"], 3_000);
        assert!(cut_meta["heard_ms"].as_i64().unwrap() < 3_000, "{cut_meta}");
        assert_eq!(cut_meta["time"], interruption["time"]);
        assert!(
            !events
                .iter()
                .any(|e| e["message_text"] == "I am Colloquy, a pipeline."),
            "sentences never sent are never recorded"
        );
        let end: Value = serde_json::from_str(events[11]["metadata"].as_str().unwrap()).unwrap();
        assert_eq!(
            (end["status"].as_str(), end["reason"].as_str()),
            (Some("USER_ENDED"), Some("hang_up"))
        );

        // Both voices are recorded and reconstruct into one file.
        let (ufmt, user) = crate::relay::captured(&srv, key.user_id, &chat_id, Track::User).await;
        assert_eq!(
            ufmt,
            CapturedFormat::Linear16(colloquy_audio::Linear16Format {
                sample_rate: 16_000,
                channels: 1,
            })
        );
        let user_bytes: usize = user.iter().map(|r| r.1.len()).sum();
        assert_eq!(user_bytes, first.len() + second.len() + 2 * silence.len());
        let (afmt, assistant) =
            crate::relay::captured(&srv, key.user_id, &chat_id, Track::Assistant).await;
        assert_eq!(afmt, CapturedFormat::WavClips);
        // The cut sentence only as far as it had started playing, then all of the goodbye.
        let heard_chunks = assistant.len() - 30;
        assert!((1..30).contains(&heard_chunks), "{heard_chunks}");
        let offsets: Vec<i64> = assistant.iter().map(|r| r.0).collect();
        assert!(
            offsets.windows(2).all(|w| w[1] >= w[0] + 100),
            "played one after another: {offsets:?}"
        );
        let heard_ms = cut_meta["heard_ms"].as_i64().unwrap();
        assert!(
            heard_chunks as i64 * 100 >= heard_ms,
            "{heard_chunks} chunks, {heard_ms} ms"
        );
        let rec = srv.audio_when_done(&key.api_key, &chat_id).await;
        assert_eq!(rec["status"], "COMPLETE", "{rec}");
        srv.stop(db).await;
    }
}

#[tokio::test]
async fn resumed_pipeline_chats_have_history_pauses_hold_output_and_failures_are_told() {
    let (fake, url) = Fake::start().await;
    let Some((srv, db)) = TestServer::start(Backend::Sqlite, pipeline_to(url)).await else {
        return;
    };
    let key = srv.key(true).await;
    let (mut ws, meta) = srv.connect(&key.api_key, "").await;
    let group = meta["chat_group_id"].as_str().unwrap().to_string();
    send_json(&mut ws, json!({"type": "user_input", "text": "hello"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "user_message");
    sentence(&mut ws, "Hello there!").await;
    sentence(&mut ws, "I am Colloquy, a pipeline.").await;
    sentence(&mut ws, "How can I help?").await;
    assert_eq!(recv_json(&mut ws).await["type"], "assistant_end");
    futures::SinkExt::close(&mut ws).await.unwrap();
    drop(ws);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Resuming: the group's earlier chat is the model's history.
    let (mut ws, _) = srv
        .connect(&key.api_key, &format!("resumed_chat_group_id={group}"))
        .await;
    // Paused: the answer waits.
    send_json(&mut ws, json!({"type": "pause_assistant_message"})).await;
    send_json(
        &mut ws,
        json!({"type": "user_input", "text": "hello again"}),
    )
    .await;
    assert_eq!(recv_json(&mut ws).await["type"], "user_message");
    let quiet = tokio::time::timeout(
        Duration::from_millis(600),
        futures::StreamExt::next(&mut ws),
    )
    .await;
    assert!(quiet.is_err(), "nothing while paused: {quiet:?}");
    send_json(&mut ws, json!({"type": "resume_assistant_message"})).await;
    sentence(&mut ws, "Hello there!").await;
    sentence(&mut ws, "I am Colloquy, a pipeline.").await;
    sentence(&mut ws, "How can I help?").await;
    assert_eq!(recv_json(&mut ws).await["type"], "assistant_end");
    let req = fake.chats.lock().unwrap()[1].clone();
    assert_eq!(
        req["messages"],
        json!([
            {"role": "system", "content": "Configured prompt"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "Hello there! I am Colloquy, a pipeline. How can I help?"},
            {"role": "user", "content": "hello again"},
        ])
    );

    // A failing model: the client is told, the chat goes on.
    send_json(&mut ws, json!({"type": "user_input", "text": "fail"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "user_message");
    let err = recv_json(&mut ws).await;
    assert_eq!(
        (err["code"].as_str(), err["slug"].as_str()),
        (Some("I0300"), Some("pipeline_service_failed")),
        "{err}"
    );
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("500") && msg.contains("model crashed"),
        "{msg}"
    );
    send_json(&mut ws, json!({"type": "user_input", "text": "hello"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "user_message");
    sentence(&mut ws, "Hello there!").await;
    srv.stop(db).await;
}

/// The built-in voice speaks when no TTS service is configured.
#[tokio::test]
async fn the_built_in_voice_speaks_without_a_tts_service() {
    let (fake, url) = Fake::start().await;
    let Some((srv, db)) = TestServer::start(Backend::Sqlite, |s: &mut Settings| {
        pipeline_to(url)(s);
        s.engine.pipeline.tts = None;
    })
    .await
    else {
        return;
    };
    let key = srv.key(true).await;
    let (mut ws, _) = srv.connect(&key.api_key, "").await;
    send_json(&mut ws, json!({"type": "user_input", "text": "hello"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "user_message");
    let said = recv_json(&mut ws).await;
    assert_eq!(said["message"]["content"], "Hello there!");
    let mut ms = 0;
    loop {
        let m = recv_json(&mut ws).await;
        if m["type"] != "audio_output" {
            assert_eq!(m["type"], "assistant_message", "{m}");
            break;
        }
        assert_eq!(m["id"], said["id"]);
        let pcm = wav_chunk_pcm(&m);
        assert_eq!(pcm.sample_rate, 48_000);
        ms += pcm.duration_ms();
    }
    assert!(ms > 400, "espeak-ng spoke the sentence: {ms} ms");
    assert!(
        fake.spoken.lock().unwrap().is_empty(),
        "no TTS service was asked"
    );
    srv.stop(db).await;
}

/// 16 kHz mono linear16 encoded by ffmpeg (libopus) as WebM written to a pipe, like a
/// browser's MediaRecorder stream (unknown-size Segment, no Cues).
fn webm_opus(pcm16k: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("ffmpeg")
        .args([
            "-v", "error", "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", "pipe:0",
        ])
        .args(["-c:a", "libopus", "-b:a", "32k", "-f", "webm", "pipe:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg with libopus is installed (scripts/setup-system)");
    let mut stdin = child.stdin.take().unwrap();
    let input = pcm16k.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Sends a WebM stream as MediaRecorder does: `audio_input` slices of 100–250 ms of it.
async fn send_webm(ws: &mut Ws, webm: &[u8], duration_ms: usize) {
    let per_ms = webm.len() / duration_ms;
    let mut rest = webm;
    for ms in [100, 250, 150, 200].iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, r) = rest.split_at((ms * per_ms).min(rest.len()));
        rest = r;
        let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, chunk);
        send_json(ws, json!({"type": "audio_input", "data": data})).await;
    }
}

/// Reads the answer to a spoken "hello" up to `assistant_end`; no `error` on the way.
async fn hello_answer(ws: &mut Ws) {
    let mut said = Vec::new();
    loop {
        let m = recv_json(ws).await;
        match m["type"].as_str() {
            Some("assistant_message") => said.push(m["message"]["content"].clone()),
            Some("audio_output") => {}
            Some("assistant_end") => break,
            _ => panic!("unexpected {m}"),
        }
    }
    assert_eq!(said[0], "Hello there!", "{said:?}");
}

#[tokio::test]
async fn spoken_turns_are_heard_in_webm_opus_as_browsers_send_it() {
    let (fake, url) = Fake::start().await;
    fake.transcripts.lock().unwrap().push_back("hello".into());
    let Some((srv, db)) = TestServer::start(Backend::Sqlite, pipeline_to(url)).await else {
        return;
    };
    let key = srv.key(true).await;
    // No session_settings.audio: the stream's format comes from its first bytes.
    let (mut ws, meta) = srv.connect(&key.api_key, "").await;
    let chat_id = meta["chat_id"].as_str().unwrap().to_string();
    let speech = speech_16k("Hello, how are you doing today?").await;
    let silence = vec![0u8; 48_000]; // 1.5 s
    let pcm = [speech.clone(), silence].concat();
    let webm = webm_opus(&pcm);
    send_webm(&mut ws, &webm, pcm.len() / 32).await;

    let heard = recv_json(&mut ws).await;
    assert_eq!(heard["type"], "user_message", "{heard}");
    assert_eq!(heard["message"]["content"], "hello");
    assert_eq!(heard["from_text"], false);
    let utterance_ms = fake.heard_ms.lock().unwrap()[0];
    let spoken_ms = (speech.len() / 32) as u64;
    assert!(
        utterance_ms > 1_000 && utterance_ms < spoken_ms + 1_000,
        "the whole utterance ({spoken_ms} ms spoken): {utterance_ms} ms"
    );
    let begin = heard["time"]["begin"].as_i64().unwrap();
    let end = heard["time"]["end"].as_i64().unwrap();
    assert!(begin < 500 && end > begin + 1_000, "{heard}");
    hello_answer(&mut ws).await;

    // The WebM bytes are recorded unchanged.
    ws.close(None).await.unwrap();
    recv_until_close(&mut ws, Duration::from_secs(5)).await;
    let (ufmt, user) = crate::relay::captured(&srv, key.user_id, &chat_id, Track::User).await;
    assert_eq!(ufmt, CapturedFormat::Container);
    let recorded: Vec<u8> = user.into_iter().flat_map(|r| r.1).collect();
    assert!(recorded == webm, "the stream is recorded as sent");
    srv.stop(db).await;
}

#[tokio::test]
async fn undecodable_audio_gets_one_error_and_the_chat_goes_on() {
    let (fake, url) = Fake::start().await;
    fake.transcripts.lock().unwrap().push_back("hello".into());
    let Some((srv, db)) = TestServer::start(Backend::Sqlite, pipeline_to(url)).await else {
        return;
    };
    let key = srv.key(true).await;
    let (mut ws, _) = srv.connect(&key.api_key, "").await;
    // Valid WebM headers and a little silence, then garbage in the same stream.
    let quiet = webm_opus(&vec![0u8; 16_000]);
    send_webm(&mut ws, &quiet, 500).await;
    for _ in 0..3 {
        let data = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            b"this is not audio at all",
        );
        send_json(&mut ws, json!({"type": "audio_input", "data": data})).await;
    }
    let err = recv_json(&mut ws).await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "E0104");
    assert_eq!(err["slug"], "invalid_audio");
    assert!(
        err["message"].as_str().unwrap().contains("turn detection"),
        "{err}"
    );

    // The chat goes on: a new stream is heard and answered, with no second error.
    let pcm = [
        speech_16k("Hello, how are you doing today?").await,
        vec![0u8; 48_000],
    ]
    .concat();
    send_webm(&mut ws, &webm_opus(&pcm), pcm.len() / 32).await;
    let heard = recv_json(&mut ws).await;
    assert_eq!(heard["type"], "user_message", "{heard}");
    assert_eq!(heard["message"]["content"], "hello");
    hello_answer(&mut ws).await;
    srv.stop(db).await;
}

/// Audio chunks of a pipeline chat reach turn detection without waiting for their key
/// check, which finishes in the background: revoking the key still ends the chat at the
/// next chunk, with the revocation error, and the chat is closed as `ERROR`.
#[tokio::test]
async fn revoking_the_key_ends_a_pipeline_chat_while_audio_streams() {
    let (_fake, url) = Fake::start().await;
    let Some((srv, db)) = TestServer::start(Backend::Sqlite, pipeline_to(url)).await else {
        return;
    };
    let key = srv.key(true).await;
    let (mut ws, meta) = srv.connect(&key.api_key, "").await;
    // Two seconds of silence (it compresses to little), in chunks.
    let quiet = webm_opus(&vec![0u8; 64_000]);
    let chunks: Vec<&[u8]> = quiet.chunks(quiet.len().div_ceil(8)).collect();
    let send = |chunk: &[u8]| {
        let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, chunk);
        json!({"type": "audio_input", "data": data})
    };
    for chunk in &chunks[..4] {
        send_json(&mut ws, send(chunk)).await;
    }
    colloquy_server::keys::revoke(srv.running().state.store.as_ref(), &key.api_key[..8])
        .await
        .unwrap();
    // One more chunk: its check answers in the background and ends the chat.
    send_json(&mut ws, send(chunks[4])).await;
    let err = recv_json(&mut ws).await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "E0300", "{err}");
    assert_eq!(recv_close(&mut ws).await, Some(1000));
    let chat = srv.stored_chat(&key, &meta).await;
    assert_eq!(chat.status, colloquy_wire::ChatStatus::Error);
    srv.stop(db).await;
}

/// A pipeline chat connected with a config: the config's greeting (spoken with its voice),
/// prompt (with the session's variables), model, temperature and tools reach the services;
/// a silent user is nudged once after the nudge interval.
#[tokio::test]
async fn a_pipeline_chat_follows_its_config() {
    let (fake, url) = Fake::start().await;
    let to_fake = pipeline_to(url);
    let srv = TestServer::sqlite(|s| {
        to_fake(s);
        // The TTS service's voices, in the voice library.
        s.tts.service_voices = vec!["ember".into(), "sage".into()];
    })
    .await;
    let key = srv.key(true).await;
    let k = key.api_key.as_str();
    let (status, tool) = crate::configs::post(
        &srv,
        k,
        "/v0/evi/tools",
        json!({"name": "get_weather", "description": "Weather of a city",
               "parameters": "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}"}),
    )
    .await;
    assert_eq!(status, 201, "{tool}");
    let cfg = crate::configs::config(
        &srv,
        k,
        None,
        json!({"name": "Weather", "evi_version": "3",
               "prompt": {"text": "You forecast for {{name}}."},
               "voice": {"provider": "HUME_AI", "name": "ember"},
               "language_model": {"model_provider": "OPEN_AI", "model_resource": "gpt-config",
                                  "temperature": 0.3},
               "tools": [{"id": tool["id"]}],
               "builtin_tools": [{"name": "hang_up"}],
               "nudges": {"enabled": true, "interval_secs": 1},
               "event_messages": {"on_new_chat": {"enabled": true, "text": "Hi from the config."}}}),
    )
    .await;
    let id = cfg["id"].as_str().unwrap();
    let (mut ws, meta) = srv
        .connect(
            k,
            &format!("config_id={id}&session_settings[variables][name]=Ada"),
        )
        .await;
    sentence(&mut ws, "Hi from the config.").await;
    assert_eq!(recv_json(&mut ws).await, json!({"type": "assistant_end"}));
    assert_eq!(fake.voices.lock().unwrap().as_slice(), ["ember"]);

    send_json(&mut ws, json!({"type": "user_input", "text": "hello"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "user_message");
    sentence(&mut ws, "Hello there!").await;
    sentence(&mut ws, "I am Colloquy, a pipeline.").await;
    sentence(&mut ws, "How can I help?").await;
    assert_eq!(recv_json(&mut ws).await, json!({"type": "assistant_end"}));
    let req = fake.chats.lock().unwrap()[0].clone();
    assert_eq!(req["model"], "gpt-config");
    assert!(
        (req["temperature"].as_f64().unwrap() - 0.3).abs() < 1e-6,
        "{req}"
    );
    assert_eq!(
        req["messages"][0],
        json!({"role": "system", "content": "You forecast for Ada."})
    );
    assert_eq!(
        req["messages"][1],
        json!({"role": "assistant", "content": "Hi from the config."})
    );
    let tools: Vec<&str> = req["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["get_weather", "hang_up"]);
    assert_eq!(
        req["tools"][0]["function"]["description"],
        "Weather of a city"
    );

    // Silence after the answer: one nudge (the model is asked to invite the user back).
    let started = std::time::Instant::now();
    sentence(&mut ws, "Hello there!").await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "nudged after {waited:?}"
    );
    sentence(&mut ws, "I am Colloquy, a pipeline.").await;
    sentence(&mut ws, "How can I help?").await;
    assert_eq!(recv_json(&mut ws).await, json!({"type": "assistant_end"}));
    let nudge = fake.chats.lock().unwrap()[1].clone();
    let last = nudge["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["role"], "system");
    assert_eq!(
        last["content"],
        colloquy_server::engine::pipeline::NUDGE_INSTRUCTION
    );
    // Only one nudge per silence.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(fake.chats.lock().unwrap().len(), 2);

    // session_settings.voice_id switches the voice (a library id); an unknown one is an
    // error and changes nothing.
    let sage = colloquy_server::tts::library_voice_id("sage");
    send_json(
        &mut ws,
        json!({"type": "session_settings", "voice_id": "no-such-voice"}),
    )
    .await;
    let err = recv_json(&mut ws).await;
    assert_eq!(err["code"], "E0101", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("voice_id"),
        "{err}"
    );
    send_json(
        &mut ws,
        json!({"type": "session_settings", "voice_id": sage}),
    )
    .await;
    let voices_before = fake.voices.lock().unwrap().len();
    send_json(&mut ws, json!({"type": "user_input", "text": "hello"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "user_message");
    for s in [
        "Hello there!",
        "I am Colloquy, a pipeline.",
        "How can I help?",
    ] {
        sentence(&mut ws, s).await;
    }
    assert_eq!(recv_json(&mut ws).await["type"], "assistant_end");
    let voices = fake.voices.lock().unwrap().clone();
    assert_eq!(
        voices[voices_before..],
        ["sage", "sage", "sage"],
        "{voices:?}"
    );
    ws.close(None).await.unwrap();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let chat_id = meta["chat_id"].as_str().unwrap();
    let events = srv.all_events(k, chat_id, 100).await;
    assert_eq!(
        types(&events)[..4],
        [
            "CHAT_START_MESSAGE",
            "SESSION_SETTINGS",
            "SYSTEM_PROMPT",
            "AGENT_MESSAGE"
        ]
    );
    assert_eq!(events[2]["message_text"], "You forecast for {{name}}.");
    assert_eq!(events[3]["message_text"], "Hi from the config.");
    srv.stop(None).await;
}

/// A backend answers the model's tool call through the control plane (`send`), without the
/// client: the pipeline goes on with the result.
#[tokio::test]
async fn a_tool_call_is_answered_through_the_control_plane() {
    let (fake, url) = Fake::start().await;
    let srv = TestServer::sqlite(pipeline_to(url)).await;
    let key = srv.key(true).await;
    let k = key.api_key.as_str();
    let (mut ws, meta) = srv.connect(k, "").await;
    let chat = meta["chat_id"].as_str().unwrap();
    let (status, _) = crate::control::send(
        &srv,
        k,
        chat,
        json!({"type": "session_settings",
               "tools": [{"type": "function", "name": "get_weather",
                          "parameters": "{\"type\":\"object\"}"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = crate::control::send(
        &srv,
        k,
        chat,
        json!({"type": "user_input", "text": "weather"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(recv_json(&mut ws).await["type"], "user_message");
    sentence(&mut ws, "Let me check.").await;
    let carrier = recv_json(&mut ws).await;
    assert_eq!(carrier["message"]["tool_call"]["tool_call_id"], "call-1");
    let call = recv_json(&mut ws).await;
    assert_eq!(call["tool_call_id"], "call-1");
    // A tool_error's content is what the model is told (its error is not).
    let (status, _) = crate::control::send(
        &srv,
        k,
        chat,
        json!({"type": "tool_error", "tool_call_id": "call-1", "error": "timeout 504",
               "content": "sunny"}),
    )
    .await;
    assert_eq!(status, 200);
    let result = recv_json(&mut ws).await;
    assert_eq!(result["message"]["role"], "tool");
    assert_eq!(result["message"]["content"], "sunny");
    assert_eq!(result["message"]["tool_result"]["type"], "tool_error");
    assert_eq!(result["message"]["tool_result"]["error"], "timeout 504");
    sentence(&mut ws, "It is sunny in Paris.").await;
    assert_eq!(recv_json(&mut ws).await, json!({"type": "assistant_end"}));
    let req = fake.chats.lock().unwrap()[1].clone();
    let last = req["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        json!({"role": "tool", "content": "sunny", "tool_call_id": "call-1"})
    );
    srv.stop(None).await;
}

/// The connect query's `event_limit` bounds a resumed chat's history (a
/// `session_settings.event_limit` would win), and `language_model_api_key` is the key the
/// model is called with for that chat only, never stored.
#[tokio::test]
async fn the_event_limit_query_and_the_language_model_key_are_used() {
    let (fake, url) = Fake::start().await;
    let srv = TestServer::sqlite(pipeline_to(url)).await;
    let key = srv.key(true).await;
    let k = key.api_key.as_str();
    let (mut ws, meta) = srv.connect(k, "").await;
    let group = meta["chat_group_id"].as_str().unwrap().to_string();
    send_json(&mut ws, json!({"type": "user_input", "text": "hello"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "user_message");
    for s in [
        "Hello there!",
        "I am Colloquy, a pipeline.",
        "How can I help?",
    ] {
        sentence(&mut ws, s).await;
    }
    assert_eq!(recv_json(&mut ws).await["type"], "assistant_end");
    ws.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (mut ws, meta) = srv
        .connect(
            k,
            &format!(
                "resumed_chat_group_id={group}&event_limit=1\
                 &session_settings[language_model_api_key]=sk-chat-only"
            ),
        )
        .await;
    send_json(&mut ws, json!({"type": "user_input", "text": "again"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "user_message");
    for s in [
        "Hello there!",
        "I am Colloquy, a pipeline.",
        "How can I help?",
    ] {
        sentence(&mut ws, s).await;
    }
    assert_eq!(recv_json(&mut ws).await["type"], "assistant_end");
    let req = fake.chats.lock().unwrap()[1].clone();
    assert_eq!(
        req["messages"],
        json!([
            {"role": "system", "content": "Configured prompt"},
            {"role": "user", "content": "again"},
        ]),
        "one event of history (the earlier chat's end): no earlier turns"
    );
    let auth = fake.auth.lock().unwrap().clone();
    assert_eq!(auth[0], "", "the first chat: the service's own (no) key");
    assert_eq!(auth[1], "Bearer sk-chat-only");
    ws.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = srv
        .all_events(k, meta["chat_id"].as_str().unwrap(), 100)
        .await;
    assert!(
        !serde_json::to_string(&events)
            .unwrap()
            .contains("sk-chat-only"),
        "the key is never stored"
    );
    srv.stop(None).await;
}
