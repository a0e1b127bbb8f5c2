//! The relay engine against an upstream EVI test server that speaks the real protocol over a
//! real WebSocket: scripted transcripts with prosody, assistant audio, a tool call, an
//! interruption, resume, and upstream failures (refused, silent, dropped mid-chat).

use crate::harness::*;
use base64::Engine;
use colloquy_server::capture::CapturedFormat;
use colloquy_server::config::{EngineMode, KeyEngineSettings};
use colloquy_server::objects::{ObjectKey, Voice};
use colloquy_server::Settings;
use futures::{SinkExt, StreamExt, TryStreamExt};
use object_store::ObjectStore;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// The 48 emotions of `EmotionScores`.
fn scores(seed: f64) -> Value {
    let m: serde_json::Map<String, Value> = colloquy_wire::EMOTION_NAMES
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                e.to_string(),
                json!(((i as f64 * seed) % 1.0 * 1000.0).round() / 1000.0),
            )
        })
        .collect();
    Value::Object(m)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// How the fake upstream treats a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Speaks EVI, scripted by the client's `user_input` texts.
    Converse,
    /// Refuses the handshake with HTTP 401.
    Refuse,
    /// Sends `chat_metadata`, then never reads or writes again (no pongs either).
    Stall,
}

/// What one upstream connection saw.
#[derive(Debug, Clone, Default)]
struct Seen {
    uri: String,
    api_key: Option<String>,
    received: Vec<String>,
}

/// An upstream EVI test server on 127.0.0.1:0.
struct FakeUpstream {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

/// The two audio chunks the upstream speaks for its first answer.
fn assistant_clips() -> [Vec<u8>; 2] {
    [
        wav(&tone(660.0, 24_000, 300), 24_000),
        wav(&tone(880.0, 24_000, 200), 24_000),
    ]
}

impl FakeUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v0/evi/chat", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let behaviour = Arc::new(Mutex::new(Behaviour::Converse));
        let (s, b) = (seen.clone(), behaviour.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, s.clone(), *b.lock().unwrap()));
            }
        });
        FakeUpstream {
            url,
            seen,
            behaviour,
        }
    }

    fn set(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    fn connections(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[allow(clippy::result_large_err)] // tungstenite's handshake callback signature
async fn serve(tcp: tokio::net::TcpStream, seen: Arc<Mutex<Vec<Seen>>>, behaviour: Behaviour) {
    let mut uri = String::new();
    let mut api_key = None;
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        uri = req.uri().to_string();
        api_key = req
            .headers()
            .get("X-Hume-Api-Key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if behaviour == Behaviour::Refuse {
            let mut err = ErrorResponse::new(Some("invalid credentials".into()));
            *err.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
            return Err(err);
        }
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async(tcp, callback).await;
    let idx = {
        let mut all = seen.lock().unwrap();
        all.push(Seen {
            uri: uri.clone(),
            api_key,
            received: Vec::new(),
        });
        all.len() - 1
    };
    let Ok(mut ws) = ws else { return };
    let query: Vec<(String, String)> =
        form_urlencoded::parse(uri.split_once('?').map_or("", |q| q.1).as_bytes())
            .into_owned()
            .collect();
    let group = query
        .iter()
        .find(|(k, _)| k == "resumed_chat_group_id")
        .map_or(format!("up-group-{idx}"), |(_, v)| v.clone());
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(json!({
        "type": "chat_metadata",
        "chat_id": format!("up-chat-{idx}"),
        "chat_group_id": group,
        "request_id": "up-request",
    })))
    .await
    .unwrap();
    if behaviour == Behaviour::Stall {
        tokio::time::sleep(Duration::from_secs(60)).await;
        return;
    }
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(t) = msg else { continue };
        seen.lock().unwrap()[idx].received.push(t.to_string());
        let m: Value = serde_json::from_str(t.as_str()).unwrap();
        let script: Vec<Value> = match (m["type"].as_str().unwrap(), m["text"].as_str()) {
            ("user_input", Some("speak")) => {
                let [a, b] = assistant_clips();
                vec![
                    json!({"type": "user_message", "message": {"role": "user", "content": "Hello"},
                           "models": {}, "time": {"begin": 0, "end": 300}, "from_text": false, "interim": true}),
                    json!({"type": "user_message", "message": {"role": "user", "content": "Hello there"},
                           "models": {"prosody": {"scores": scores(0.37)}},
                           "time": {"begin": 0, "end": 600}, "from_text": false, "interim": false}),
                    json!({"type": "assistant_message", "id": "up-msg-1",
                           "message": {"role": "assistant", "content": "Hi! How are you?"},
                           "models": {}, "from_text": false, "is_quick_response": false}),
                    json!({"type": "assistant_prosody", "id": "up-msg-1",
                           "models": {"prosody": {"scores": scores(0.11)}}}),
                    json!({"type": "audio_output", "id": "up-msg-1", "index": 0, "data": b64(&a)}),
                    json!({"type": "audio_output", "id": "up-msg-1", "index": 1, "data": b64(&b)}),
                    json!({"type": "assistant_end"}),
                ]
            }
            ("user_input", Some("weather")) => vec![json!({
                "type": "tool_call", "name": "get_weather", "parameters": "{\"city\":\"Paris\"}",
                "tool_call_id": "call-1", "tool_type": "function", "response_required": true
            })],
            ("tool_response", _) => vec![
                json!({"type": "assistant_message", "id": "up-msg-2",
                       "message": {"role": "assistant", "content": format!("It is {} in Paris.", m["content"].as_str().unwrap())},
                       "models": {}, "from_text": false, "is_quick_response": false}),
                json!({"type": "assistant_end"}),
            ],
            ("user_input", Some("interrupt")) => {
                vec![json!({"type": "user_interruption", "time": 1_700_000_000_000i64})]
            }
            // A mid-chat disconnect: the TCP connection drops without a close handshake.
            ("user_input", Some("drop")) => return,
            // The upstream ends the chat normally (as after the `hang_up` tool).
            ("user_input", Some("hang up")) => {
                let _ = ws
                    .send(Message::Close(Some(
                        tokio_tungstenite::tungstenite::protocol::CloseFrame {
                            code: 1000.into(),
                            reason: "hang_up".into(),
                        },
                    )))
                    .await;
                return;
            }
            ("user_input", Some("bye")) => {
                let _ = ws
                    .send(Message::Close(Some(
                        tokio_tungstenite::tungstenite::protocol::CloseFrame {
                            code: 1011.into(),
                            reason: "upstream is going away".into(),
                        },
                    )))
                    .await;
                return;
            }
            _ => vec![],
        };
        for v in script {
            ws.send(send(v)).await.unwrap();
        }
    }
}

fn relay_to(url: String) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.engine.mode = EngineMode::Relay;
        s.engine.relay.url = Some(url);
        s.engine.relay.api_key = Some("upstream-secret".into());
    }
}

/// The captured records `(offset_ms, bytes)` of one voice, and its format.
pub async fn captured(
    srv: &TestServer,
    user: Uuid,
    chat: &str,
    voice: Voice,
) -> (CapturedFormat, Vec<(i64, Vec<u8>)>) {
    let chat = Uuid::parse_str(chat).unwrap();
    let store = &srv.running().state.objects.store;
    let fmt_key = ObjectKey::VoiceFormat {
        user_id: user,
        chat_id: chat,
        voice,
    };
    let fmt = store
        .get(&fmt_key.path())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let fmt: CapturedFormat = serde_json::from_slice(&fmt).unwrap();
    let mut segs: Vec<_> = store
        .list(Some(&ObjectKey::segments_prefix(user, chat, voice)))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap();
    segs.sort();
    let mut out = Vec::new();
    for s in segs {
        let body = store.get(&s).await.unwrap().bytes().await.unwrap();
        let mut rest = &body[..];
        while !rest.is_empty() {
            let off = i64::from_le_bytes(rest[..8].try_into().unwrap());
            let len = u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize;
            out.push((off, rest[12..12 + len].to_vec()));
            rest = &rest[12 + len..];
        }
    }
    (fmt, out)
}

#[tokio::test]
async fn a_relayed_chat_is_forwarded_both_ways_and_recorded() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let up = FakeUpstream::start().await;
        let Some((srv, db)) = TestServer::start(backend, relay_to(up.url.clone())).await else {
            continue;
        };
        let key = srv.key(true).await;
        let config_id = Uuid::new_v4();
        let (mut ws, meta) = srv
            .connect(
                &key.api_key,
                &format!(
                    "config_id={config_id}&verbose_transcription=true&api_key={}\
                     &session_settings[system_prompt]=Be%20brief\
                     &session_settings[audio][encoding]=linear16\
                     &session_settings[audio][sample_rate]=16000&session_settings[audio][channels]=1",
                    key.api_key
                ),
            )
            .await;
        let chat_id = meta["chat_id"].as_str().unwrap().to_string();
        let group_id = meta["chat_group_id"].as_str().unwrap().to_string();
        assert!(
            Uuid::parse_str(&chat_id).is_ok(),
            "Colloquy's own ids: {meta}"
        );
        assert_ne!(group_id, "up-group-0");

        // The upstream was opened with the client's query, minus its Colloquy credentials.
        let conn = up.connections().remove(0);
        assert_eq!(conn.api_key.as_deref(), Some("upstream-secret"));
        assert!(conn.uri.starts_with("/v0/evi/chat?"), "{}", conn.uri);
        assert!(conn.uri.contains(&format!("config_id={config_id}")));
        assert!(conn.uri.contains("verbose_transcription=true"));
        assert!(
            conn.uri
                .contains("session_settings%5Bsystem_prompt%5D=Be+brief"),
            "{}",
            conn.uri
        );
        assert!(!conn.uri.contains(&key.api_key), "credentials stay here");

        // User audio: 10 chunks of 20 ms, forwarded unchanged and captured.
        let pcm = tone(440.0, 16_000, 200);
        let mut sent = Vec::new();
        for chunk in pcm.chunks(640) {
            let m = json!({"type": "audio_input", "data": b64(chunk)}).to_string();
            ws.send(Message::Text(m.clone().into())).await.unwrap();
            sent.push(m);
        }
        // Bad input is answered here and never reaches the upstream.
        ws.send(Message::Text("not json".into())).await.unwrap();
        let err = recv_json(&mut ws).await;
        assert_eq!(err["code"], "E0100", "{err}");

        let speak = json!({"type": "user_input", "text": "speak"}).to_string();
        ws.send(Message::Text(speak.clone().into())).await.unwrap();
        sent.push(speak);
        let interim = recv_json(&mut ws).await;
        assert_eq!(
            (interim["type"].as_str(), interim["interim"].as_bool()),
            (Some("user_message"), Some(true))
        );
        let heard = recv_json(&mut ws).await;
        assert_eq!(heard["message"]["content"], "Hello there");
        assert_eq!(
            heard["models"]["prosody"]["scores"],
            scores(0.37),
            "forwarded unchanged"
        );
        let said = recv_json(&mut ws).await;
        assert_eq!(said["type"], "assistant_message");
        assert_eq!(said["message"]["content"], "Hi! How are you?");
        let said_id = said["id"].as_str().unwrap().to_string();
        assert!(
            Uuid::parse_str(&said_id).is_ok(),
            "the upstream id is replaced: {said}"
        );
        let prosody = recv_json(&mut ws).await;
        assert_eq!(prosody["type"], "assistant_prosody");
        assert_eq!(prosody["id"], said_id.as_str());
        let clips = assistant_clips();
        for (i, clip) in clips.iter().enumerate() {
            let a = recv_json(&mut ws).await;
            assert_eq!(a["type"], "audio_output");
            assert_eq!(a["id"], said_id.as_str());
            assert_eq!(a["index"], i);
            assert_eq!(a["data"], b64(clip));
        }
        assert_eq!(recv_json(&mut ws).await, json!({"type": "assistant_end"}));
        // Acknowledged means committed: the transcript is readable before the chat ends.
        let events = srv.all_events(&key.api_key, &chat_id, 100).await;
        assert!(events
            .iter()
            .any(|e| e["message_text"] == "Hi! How are you?"));

        // A tool call and its answer.
        let weather = json!({"type": "user_input", "text": "weather"}).to_string();
        ws.send(Message::Text(weather.clone().into()))
            .await
            .unwrap();
        sent.push(weather);
        let call = recv_json(&mut ws).await;
        assert_eq!(call["type"], "tool_call");
        assert_eq!(call["tool_call_id"], "call-1");
        assert_eq!(call["parameters"], "{\"city\":\"Paris\"}");
        let answer =
            json!({"type": "tool_response", "tool_call_id": "call-1", "content": "sunny", "tool_name": "get_weather"})
                .to_string();
        ws.send(Message::Text(answer.clone().into())).await.unwrap();
        sent.push(answer);
        let sunny = recv_json(&mut ws).await;
        assert_eq!(sunny["message"]["content"], "It is sunny in Paris.");
        assert_eq!(recv_json(&mut ws).await["type"], "assistant_end");

        // An interruption.
        let cut = json!({"type": "user_input", "text": "interrupt"}).to_string();
        ws.send(Message::Text(cut.clone().into())).await.unwrap();
        sent.push(cut);
        let interruption = recv_json(&mut ws).await;
        assert_eq!(
            interruption,
            json!({"type": "user_interruption", "time": 1_700_000_000_000i64})
        );

        // The upstream drops mid-chat: the chat ends as ERROR and the client is told why.
        let drop = json!({"type": "user_input", "text": "drop"}).to_string();
        ws.send(Message::Text(drop.clone().into())).await.unwrap();
        sent.push(drop);
        let err = recv_json(&mut ws).await;
        assert_eq!(err["type"], "error");
        assert_eq!(err["code"], "I0201", "{err}");
        assert_eq!(err["slug"], "upstream_closed");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains(&up.url.replace("ws://", "")),
            "{err}"
        );
        assert_eq!(recv_close(&mut ws).await, Some(1011));

        // Every accepted client message reached the upstream unchanged, in order.
        assert_eq!(up.connections()[0].received, sent);

        let (_, chat) = srv
            .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}"))
            .await;
        assert_eq!(chat["status"], "ERROR", "{chat}");
        let metadata: Value = serde_json::from_str(chat["metadata"].as_str().unwrap()).unwrap();
        assert_eq!(metadata["engine"], "relay");
        assert_eq!(metadata["upstream"]["chat_id"], "up-chat-0");
        assert_eq!(metadata["upstream"]["chat_group_id"], "up-group-0");
        assert_eq!(chat["config"]["id"], config_id.to_string());

        let events = srv.all_events(&key.api_key, &chat_id, 100).await;
        assert_eq!(
            types(&events),
            vec![
                "CHAT_START_MESSAGE",
                "SESSION_SETTINGS",
                "SYSTEM_PROMPT",
                "USER_RECORDING_START_MESSAGE",
                "USER_MESSAGE",
                "AGENT_MESSAGE",
                "ASSISTANT_PROSODY",
                "FUNCTION_CALL",
                "FUNCTION_CALL_RESPONSE",
                "AGENT_MESSAGE",
                "USER_INTERRUPTION",
                "CHAT_END_MESSAGE",
            ]
        );
        let user = &events[4];
        assert_eq!(
            (user["role"].as_str(), user["message_text"].as_str()),
            (Some("USER"), Some("Hello there"))
        );
        let features: Value =
            serde_json::from_str(user["emotion_features"].as_str().unwrap()).unwrap();
        assert_eq!(features, scores(0.37), "the upstream's real scores");
        assert_eq!(features.as_object().unwrap().len(), 48);
        let agent = &events[5];
        assert_eq!(
            agent["id"],
            said_id.as_str(),
            "assistant_message.id is the AGENT_MESSAGE id"
        );
        assert_eq!(agent["emotion_features"], "", "no scores came with it");
        let pros = &events[6];
        assert_eq!(pros["role"], "AGENT");
        assert_eq!(pros["related_event_id"], said_id.as_str());
        let pf: Value = serde_json::from_str(pros["emotion_features"].as_str().unwrap()).unwrap();
        assert_eq!(pf, scores(0.11));
        let call_ev: Value =
            serde_json::from_str(events[7]["message_text"].as_str().unwrap()).unwrap();
        assert_eq!(
            (events[7]["role"].as_str(), call_ev["tool_call_id"].as_str()),
            (Some("TOOL"), Some("call-1"))
        );
        assert_eq!(events[8]["message_text"], "sunny");
        assert_eq!(events[9]["message_text"], "It is sunny in Paris.");
        assert_eq!(events[10]["role"], "USER");
        let end: Value = serde_json::from_str(events[11]["metadata"].as_str().unwrap()).unwrap();
        assert_eq!(end["status"], "ERROR");
        assert_eq!(end["reason"], "upstream_closed");
        assert_eq!(end["error"], err["message"]);
        let ts: Vec<i64> = events
            .iter()
            .map(|e| e["timestamp"].as_i64().unwrap())
            .collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");

        // The audio timeline: the user's chunks, then the assistant's clips, in order.
        let (ufmt, user_audio) = captured(&srv, key.user_id, &chat_id, Voice::User).await;
        assert_eq!(
            ufmt,
            CapturedFormat::Linear16(colloquy_audio::Linear16Format {
                sample_rate: 16_000,
                channels: 1,
            })
        );
        assert_eq!(
            user_audio
                .iter()
                .map(|r| r.1.clone())
                .collect::<Vec<_>>()
                .concat(),
            pcm
        );
        let (afmt, assistant_audio) = captured(&srv, key.user_id, &chat_id, Voice::Assistant).await;
        assert_eq!(afmt, CapturedFormat::WavClips);
        assert_eq!(
            assistant_audio
                .iter()
                .map(|r| r.1.clone())
                .collect::<Vec<_>>(),
            clips.to_vec()
        );
        let offsets: Vec<i64> = user_audio
            .iter()
            .chain(&assistant_audio)
            .map(|r| r.0)
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
        let chat_ms =
            events[11]["timestamp"].as_i64().unwrap() - events[0]["timestamp"].as_i64().unwrap();
        assert!(
            offsets.iter().all(|o| (0..=chat_ms).contains(o)),
            "{offsets:?} within {chat_ms} ms"
        );
        // Both voices reconstruct into one file.
        let rec = srv.audio_when_done(&key.api_key, &chat_id).await;
        assert_eq!(rec["status"], "COMPLETE", "{rec}");

        srv.stop(db).await;
    }
}

#[tokio::test]
async fn resuming_a_group_resumes_the_upstream_group() {
    let up = FakeUpstream::start().await;
    let Some((srv, db)) = TestServer::start(Backend::Sqlite, relay_to(up.url.clone())).await else {
        return;
    };
    let key = srv.key(true).await;
    let (mut ws, meta) = srv.connect(&key.api_key, "").await;
    let group = meta["chat_group_id"].as_str().unwrap().to_string();
    ws.close(None).await.unwrap();
    let _ = recv_close(&mut ws).await;

    let (mut ws, meta) = srv
        .connect(&key.api_key, &format!("resumed_chat_group_id={group}"))
        .await;
    assert_eq!(meta["chat_group_id"], group.as_str(), "Colloquy's group");
    let second = meta["chat_id"].as_str().unwrap().to_string();
    let conns = up.connections();
    assert!(
        !conns[0].uri.contains("resumed_chat_group_id"),
        "{}",
        conns[0].uri
    );
    assert!(
        conns[1].uri.contains("resumed_chat_group_id=up-group-0"),
        "the upstream group is resumed: {}",
        conns[1].uri
    );
    // An upstream that closes the chat itself ends it as ERROR too.
    send_json(&mut ws, json!({"type": "user_input", "text": "bye"})).await;
    let err = recv_json(&mut ws).await;
    assert_eq!(err["code"], "I0201");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("code 1011: upstream is going away"),
        "{err}"
    );
    assert_eq!(recv_close(&mut ws).await, Some(1011));
    let (_, chat) = srv
        .get(&key.api_key, &format!("/v0/evi/chats/{second}"))
        .await;
    assert_eq!(chat["status"], "ERROR");
    let metadata: Value = serde_json::from_str(chat["metadata"].as_str().unwrap()).unwrap();
    assert_eq!(metadata["upstream"]["chat_group_id"], "up-group-0");

    // An upstream that ends the chat normally (hang_up) ends it as USER_ENDED.
    let (mut ws, meta) = srv
        .connect(&key.api_key, &format!("resumed_chat_group_id={group}"))
        .await;
    let third = meta["chat_id"].as_str().unwrap().to_string();
    send_json(&mut ws, json!({"type": "user_input", "text": "hang up"})).await;
    assert_eq!(recv_close(&mut ws).await, Some(1000));
    let (_, chat) = srv
        .get(&key.api_key, &format!("/v0/evi/chats/{third}"))
        .await;
    assert_eq!(chat["status"], "USER_ENDED", "{chat}");
    let events = chat["events_page"].as_array().unwrap();
    let end: Value =
        serde_json::from_str(events.last().unwrap()["metadata"].as_str().unwrap()).unwrap();
    assert_eq!(end["reason"], "upstream_ended");
    assert!(
        up.connections()[2]
            .uri
            .contains("resumed_chat_group_id=up-group-0"),
        "still the same upstream group"
    );

    // An unknown group is refused here, before any upstream connection.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        srv.ws_url(&format!("resumed_chat_group_id={}", Uuid::new_v4())),
    )
    .unwrap();
    req.headers_mut()
        .insert("X-Hume-Api-Key", key.api_key.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(recv_json(&mut ws).await["code"], "E0201");
    assert_eq!(up.connections().len(), 3);
    srv.stop(db).await;
}

/// Connects and expects `chat_metadata`, then an upstream error and the close; returns the
/// error and the chat's stored record.
async fn failed_chat(srv: &TestServer, key: &str) -> (Value, Value) {
    let (mut ws, meta) = srv.connect(key, "").await;
    let err = recv_json(&mut ws).await;
    assert_eq!(recv_close(&mut ws).await, Some(1011));
    let chat_id = meta["chat_id"].as_str().unwrap();
    let (_, chat) = srv.get(key, &format!("/v0/evi/chats/{chat_id}")).await;
    (err, chat)
}

#[tokio::test]
async fn upstream_failures_end_the_chat_with_error() {
    let up = FakeUpstream::start().await;
    let Some((srv, db)) = TestServer::start(Backend::Sqlite, |s: &mut Settings| {
        relay_to(up.url.clone())(s);
        s.engine.relay.idle_timeout_secs = 1;
    })
    .await
    else {
        return;
    };
    let key = srv.key(true).await;

    // Silent but alive: an upstream that answers pings keeps the chat open past the idle
    // timeout.
    let (mut ws, _) = srv.connect(&key.api_key, "").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    send_json(&mut ws, json!({"type": "user_input", "text": "interrupt"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "user_interruption");
    ws.close(None).await.unwrap();
    let _ = recv_close(&mut ws).await;

    // Refused: the upstream answers the handshake with 401.
    up.set(Behaviour::Refuse);
    let (err, chat) = failed_chat(&srv, &key.api_key).await;
    assert_eq!(
        (err["code"].as_str(), err["slug"].as_str()),
        (Some("I0200"), Some("upstream_unavailable"))
    );
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("HTTP 401") && msg.contains("engine.relay.api_key"),
        "{msg}"
    );
    assert_eq!(chat["status"], "ERROR");
    let events = chat["events_page"].as_array().unwrap();
    let end: Value =
        serde_json::from_str(events.last().unwrap()["metadata"].as_str().unwrap()).unwrap();
    assert_eq!(end["reason"], "upstream_unavailable");
    assert_eq!(end["error"], msg);

    // Slow: the upstream stops answering (not even pings) for idle_timeout_secs.
    up.set(Behaviour::Stall);
    let started = std::time::Instant::now();
    let (err, chat) = failed_chat(&srv, &key.api_key).await;
    assert_eq!(err["code"], "I0202", "{err}");
    assert!(err["message"].as_str().unwrap().contains("1 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(chat["status"], "ERROR");
    srv.stop(db).await;

    // Refused at the TCP level: nothing listens at the URL.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("ws://{}/v0/evi/chat", closed.local_addr().unwrap());
    drop(closed);
    let (srv, db) = TestServer::start(Backend::Sqlite, relay_to(dead))
        .await
        .unwrap();
    let key = srv.key(true).await;
    let (err, chat) = failed_chat(&srv, &key.api_key).await;
    assert_eq!(err["code"], "I0200");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "{err}"
    );
    assert_eq!(chat["status"], "ERROR");
    srv.stop(db).await;
}

#[tokio::test]
async fn the_engine_is_chosen_per_api_key() {
    let up = FakeUpstream::start().await;
    // Keys are created against the data dir first, then the server starts with an override
    // for one of them (the global mode stays `client`).
    let dir = tempfile::tempdir().unwrap();
    let store = colloquy_server::open_store(&Settings {
        data_dir: dir.path().to_path_buf(),
        ..Settings::default()
    })
    .await
    .unwrap();
    let relayed = colloquy_server::keys::create_account_key(store.as_ref(), None, true)
        .await
        .unwrap();
    let direct = colloquy_server::keys::create_account_key(store.as_ref(), None, true)
        .await
        .unwrap();
    drop(store);
    let mut settings = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    settings.engine.relay.url = Some(up.url.clone());
    settings.engine.keys.insert(
        relayed.api_key[..8].to_string(),
        KeyEngineSettings {
            mode: EngineMode::Relay,
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = colloquy_server::start(settings, listener).await.unwrap();
    let base = server.base_url().replace("http://", "ws://");
    for (key, expect_relay) in [(&direct.api_key, false), (&relayed.api_key, true)] {
        let url = format!("{base}/v0/evi/chat?api_key={key}");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(recv_json(&mut ws).await["type"], "chat_metadata");
        send_json(&mut ws, json!({"type": "assistant_input", "text": "Hi"})).await;
        if expect_relay {
            // Forwarded: the scripted upstream does not answer assistant_input.
            send_json(&mut ws, json!({"type": "user_input", "text": "interrupt"})).await;
            assert_eq!(recv_json(&mut ws).await["type"], "user_interruption");
        } else {
            assert_eq!(recv_json(&mut ws).await["type"], "assistant_message");
        }
        ws.close(None).await.unwrap();
        let _ = recv_close(&mut ws).await;
    }
    let conns = up.connections();
    assert_eq!(conns.len(), 1, "only the overridden key is relayed");
    assert_eq!(
        conns[0].received[0],
        json!({"type": "assistant_input", "text": "Hi"}).to_string()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn revoking_the_key_ends_a_relayed_chat_at_the_next_message() {
    let up = FakeUpstream::start().await;
    let Some((srv, db)) = TestServer::start(Backend::Sqlite, relay_to(up.url.clone())).await else {
        return;
    };
    let key = srv.key(true).await;
    let (mut ws, meta) = srv.connect(&key.api_key, "").await;
    send_json(&mut ws, json!({"type": "user_input", "text": "interrupt"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "user_interruption");
    colloquy_server::keys::revoke(srv.running().state.store.as_ref(), &key.api_key[..8])
        .await
        .unwrap();
    send_json(&mut ws, json!({"type": "user_input", "text": "after"})).await;
    let err = recv_json(&mut ws).await;
    assert_eq!(err["code"], "E0300", "{err}");
    assert_eq!(recv_close(&mut ws).await, Some(1000));
    let chat = srv.stored_chat(&key, &meta).await;
    assert_eq!(chat.status, colloquy_wire::ChatStatus::Error);
    srv.stop(db).await;
}

/// A config of the account is Colloquy's: resolved and recorded, its prompt recorded, and
/// not forwarded to the upstream (which has configs of its own); a `config_id` the account
/// does not have is the upstream's, forwarded and recorded as given.
#[tokio::test]
async fn a_relayed_chat_keeps_colloquy_configs_to_itself() {
    let up = FakeUpstream::start().await;
    let Some((srv, db)) = TestServer::start(Backend::Sqlite, relay_to(up.url.clone())).await else {
        return;
    };
    let key = srv.key(true).await;
    let k = key.api_key.as_str();
    let cfg = crate::configs::config(
        &srv,
        k,
        None,
        json!({"name": "Relayed", "evi_version": "3", "prompt": {"text": "Local prompt."},
               "event_messages": {"on_new_chat": {"enabled": true, "text": "Hi!"}}}),
    )
    .await;
    let id = cfg["id"].as_str().unwrap();
    let (mut ws, meta) = srv
        .connect(k, &format!("config_id={id}&config_version=0"))
        .await;
    ws.close(None).await.unwrap();
    let _ = recv_close(&mut ws).await;
    let theirs = Uuid::new_v4();
    let (mut ws2, meta2) = srv.connect(k, &format!("config_id={theirs}")).await;
    ws2.close(None).await.unwrap();
    let _ = recv_close(&mut ws2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let conns = up.connections();
    assert!(!conns[0].uri.contains("config"), "{}", conns[0].uri);
    assert!(
        conns[1].uri.contains(&format!("config_id={theirs}")),
        "{}",
        conns[1].uri
    );
    let chat = meta["chat_id"].as_str().unwrap();
    let (_, c) = srv.get(k, &format!("/v0/evi/chats/{chat}")).await;
    assert_eq!(c["config"], json!({"id": id, "version": 0}));
    let events = srv.all_events(k, chat, 100).await;
    let texts: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["message_text"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        texts.contains(&("SYSTEM_PROMPT", "Local prompt.")),
        "{texts:?}"
    );
    assert!(
        !texts.iter().any(|(t, _)| *t == "AGENT_MESSAGE"),
        "the greeting is the upstream's: {texts:?}"
    );
    let (_, c2) = srv
        .get(
            k,
            &format!("/v0/evi/chats/{}", meta2["chat_id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(c2["config"]["id"], theirs.to_string());
    assert!(c2["config"]["version"].is_null(), "{c2}");
    srv.stop(db).await;
}
