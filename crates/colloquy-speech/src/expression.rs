//! Emotion scores of the user's speech from an expression-measurement service speaking
//! Hume's **streaming** Expression Measurement protocol (`[engine.expression]`), e.g. the
//! hosted `wss://api.hume.ai/v0/stream/models`.
//!
//! The protocol, as followed here (Hume's "Real-time measurement streaming" docs,
//! dev.hume.ai/docs/expression-measurement/websocket, and the generated types of the Hume
//! Python SDK, `hume/expression_measurement/stream/stream/types/`:
//! `StreamModelsEndpointPayload`, `StreamModelPredictions`,
//! `StreamModelPredictionsProsodyPredictionsItem`, `StreamErrorMessage`,
//! `StreamWarningMessage`; `SubscribeEvent` is the union of the last three):
//!
//! * The client authenticates with the `X-Hume-Api-Key` header and sends one JSON text
//!   message per piece of audio:
//!   `{"models": {"prosody": {}}, "data": "<base64 of a WAV file>", "raw_text": false,
//!   "payload_id": "…"}` (the prosody model takes no options in the streaming API; pieces
//!   of at most 5 s are recommended).
//! * The service answers each payload with one message, echoing `payload_id`:
//!   predictions `{"prosody": {"predictions": [{"time": {"begin", "end"}, "emotions":
//!   [{"name": "Joy", "score": 0.12}, …]}]}}`, an error `{"error": "…", "code": "…"}`, or a
//!   warning `{"warning": "…", "code": "…"}`. A model-level warning such as "No speech
//!   detected." comes as `{"prosody": {"warning": "…", "code": "…"}}` (the SDK's models
//!   allow extra fields); warnings mean "no predictions for this piece".
//!
//! One socket per chat, opened at the first utterance and reused; any failure drops it
//! and the next utterance opens a new one. A failure never produces scores: the caller
//! gets `None` and the user's message goes out without prosody (see `docs/engines.md`).

use crate::{encode_wav, Pcm};
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// `[engine.expression]`: an expression-measurement service speaking Hume's streaming
/// protocol (e.g. `wss://api.hume.ai/v0/stream/models`), which scores the emotions of the
/// user's speech in pipeline chats. Without `url` there are no scores.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpressionSettings {
    /// `ws://` or `wss://` URL of the streaming socket.
    pub url: Option<String>,
    /// Sent as the `X-Hume-Api-Key` header.
    pub api_key: Option<String>,
    /// Seconds to open the socket.
    pub connect_timeout_secs: u64,
    /// Seconds to measure one utterance (the `user_message` waits at most this long
    /// after its transcript; without an answer it goes out without scores).
    pub timeout_secs: u64,
}

impl Default for ExpressionSettings {
    fn default() -> Self {
        Self {
            url: None,
            api_key: None,
            connect_timeout_secs: 5,
            timeout_secs: 5,
        }
    }
}

impl fmt::Debug for ExpressionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpressionSettings")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// Emotion name → score (the EVI `EmotionScores` shape when the service measures the 48
/// prosody emotions).
pub type Scores = BTreeMap<String, f64>;

/// Longest piece of audio sent in one message (the streaming API recommends ≤ 5 s).
pub const MAX_PIECE_MS: u64 = 5_000;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A chat's expression-measurement client. Clones share the socket.
#[derive(Clone)]
pub struct ExpressionClient {
    settings: Arc<ExpressionSettings>,
    socket: Arc<Mutex<Option<Socket>>>,
}

/// One answer of the service to one payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Prosody predictions: the emotions of each predicted span.
    Predictions(Vec<Scores>),
    /// A warning (e.g. "No speech detected."): no predictions for this payload.
    Warning(String),
}

impl ExpressionClient {
    /// A client for `[engine.expression]`; `None` when no `url` is configured.
    pub fn from_settings(settings: &ExpressionSettings) -> Option<Self> {
        settings.url.as_ref()?;
        Some(Self {
            settings: Arc::new(settings.clone()),
            socket: Arc::new(Mutex::new(None)),
        })
    }

    /// The prosody scores of one utterance, averaged per emotion over every prediction of
    /// every piece. `None` when the service failed or timed out (logged), or predicted
    /// nothing (e.g. no speech detected).
    pub async fn measure(&self, audio: &Pcm) -> Option<Scores> {
        let timeout = Duration::from_secs(self.settings.timeout_secs);
        let url = self.settings.url.as_deref().unwrap_or_default();
        match tokio::time::timeout(timeout, self.try_measure(audio)).await {
            Ok(Ok(scores)) => scores,
            Ok(Err(e)) => {
                tracing::warn!(url, error = %e, "expression measurement failed; the utterance has no emotion scores");
                None
            }
            Err(_) => {
                tracing::warn!(url, timeout_secs = timeout.as_secs(), "expression measurement timed out (engine.expression.timeout_secs); the utterance has no emotion scores");
                None
            }
        }
    }

    async fn try_measure(&self, audio: &Pcm) -> Result<Option<Scores>, String> {
        let pieces = pieces(audio);
        if pieces.is_empty() {
            return Ok(None);
        }
        let mut slot = self.socket.lock().await;
        // The socket is taken out while in use: if this future is dropped half-way (the
        // utterance was cancelled), the socket is closed with it instead of being reused
        // with an answer still pending.
        let (mut ws, reused) = match slot.take() {
            Some(ws) => (ws, true),
            None => (self.connect().await?, false),
        };
        let answers = match exchange(&mut ws, &pieces).await {
            Ok(a) => a,
            Err(Failure::Socket(e)) if reused => {
                // The idle socket may have been closed by the service: one fresh try.
                tracing::debug!(error = %e, "expression socket failed; reconnecting");
                ws = self.connect().await?;
                exchange(&mut ws, &pieces)
                    .await
                    .map_err(Failure::into_message)?
            }
            Err(e) => return Err(e.into_message()),
        };
        *slot = Some(ws);
        Ok(average(&answers))
    }

    async fn connect(&self) -> Result<Socket, String> {
        let url = self.settings.url.as_deref().unwrap_or_default();
        let mut req = url
            .into_client_request()
            .map_err(|e| format!("invalid engine.expression.url ({e})"))?;
        if let Some(key) = &self.settings.api_key {
            let value = key
                .parse()
                .map_err(|_| "engine.expression.api_key is not a valid header value")?;
            req.headers_mut().insert("X-Hume-Api-Key", value);
        }
        let connect = tokio_tungstenite::connect_async(req);
        let timeout = Duration::from_secs(self.settings.connect_timeout_secs);
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(format!("could not connect to {url}: {e}")),
            Err(_) => Err(format!(
                "could not connect to {url} within {} s (engine.expression.connect_timeout_secs)",
                timeout.as_secs()
            )),
        }
    }
}

/// Why an exchange failed: the socket (worth one retry on a fresh one), or the service's
/// answer (an error message, or one that cannot be read).
enum Failure {
    Socket(String),
    Answer(String),
}

impl Failure {
    fn into_message(self) -> String {
        match self {
            Failure::Socket(m) | Failure::Answer(m) => m,
        }
    }
}

/// Sends each piece and reads its answer.
async fn exchange(ws: &mut Socket, pieces: &[Vec<u8>]) -> Result<Vec<Answer>, Failure> {
    let mut answers = Vec::with_capacity(pieces.len());
    for wav in pieces {
        let payload_id = uuid::Uuid::now_v7().to_string();
        let msg = payload(wav, &payload_id);
        ws.send(Message::Text(msg.to_string().into()))
            .await
            .map_err(|e| Failure::Socket(format!("could not send audio: {e}")))?;
        loop {
            let text = match ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(f))) => {
                    let why = f.map_or(String::new(), |f| {
                        format!(" (code {}: {})", u16::from(f.code), f.reason)
                    });
                    return Err(Failure::Socket(format!(
                        "the service closed the socket{why}"
                    )));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(Failure::Socket(format!("{e}"))),
                None => return Err(Failure::Socket("the service closed the connection".into())),
            };
            let v: Value = serde_json::from_str(text.as_str()).map_err(|e| {
                Failure::Answer(format!("the service sent something that is not JSON: {e}"))
            })?;
            // An answer to an earlier, abandoned payload is skipped.
            if v.get("payload_id")
                .and_then(Value::as_str)
                .is_some_and(|id| id != payload_id)
            {
                continue;
            }
            answers.push(parse_answer(&v).map_err(Failure::Answer)?);
            break;
        }
    }
    Ok(answers)
}

/// The message carrying one WAV piece to the prosody model.
pub fn payload(wav: &[u8], payload_id: &str) -> Value {
    json!({
        "models": {"prosody": {}},
        "data": base64::engine::general_purpose::STANDARD.encode(wav),
        "raw_text": false,
        "payload_id": payload_id,
    })
}

/// Reads one message of the service: predictions, a warning, or an error (`Err`).
pub fn parse_answer(v: &Value) -> Result<Answer, String> {
    if let Some(error) = v.get("error").filter(|e| !e.is_null()) {
        let text = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_string);
        let code = v.get("code").and_then(Value::as_str).unwrap_or("no code");
        return Err(format!("the service answered an error ({code}): {text}"));
    }
    let warning = |w: &Value| {
        w.get("warning")
            .and_then(Value::as_str)
            .map(|w| Answer::Warning(w.to_string()))
    };
    if let Some(w) = warning(v) {
        return Ok(w);
    }
    let Some(prosody) = v.get("prosody").filter(|p| !p.is_null()) else {
        return Err(format!(
            "the service answered without prosody predictions: {}",
            snippet(v)
        ));
    };
    if let Some(w) = warning(prosody) {
        return Ok(w);
    }
    let predictions = prosody
        .get("predictions")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("prosody without predictions: {}", snippet(v)))?;
    let mut out = Vec::with_capacity(predictions.len());
    for p in predictions {
        let emotions = p
            .get("emotions")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("a prediction without emotions: {}", snippet(p)))?;
        let mut scores = Scores::new();
        for e in emotions {
            let (Some(name), Some(score)) = (
                e.get("name").and_then(Value::as_str),
                e.get("score").and_then(Value::as_f64),
            ) else {
                return Err(format!("an emotion without name or score: {e}"));
            };
            scores.insert(name.to_string(), score);
        }
        out.push(scores);
    }
    Ok(Answer::Predictions(out))
}

/// Each emotion's mean over every prediction in `answers`; `None` without predictions.
pub fn average(answers: &[Answer]) -> Option<Scores> {
    let mut sums: BTreeMap<&str, (f64, u32)> = BTreeMap::new();
    for answer in answers {
        if let Answer::Predictions(predictions) = answer {
            for p in predictions {
                for (name, score) in p {
                    let s = sums.entry(name).or_default();
                    s.0 += score;
                    s.1 += 1;
                }
            }
        }
    }
    if sums.is_empty() {
        return None;
    }
    Some(
        sums.into_iter()
            .map(|(name, (sum, n))| (name.to_string(), sum / f64::from(n)))
            .collect(),
    )
}

/// `models.prosody` of a `user_message` from averaged scores: `{"scores": {…}}`.
pub fn prosody_inference(scores: &Scores) -> Value {
    json!({ "scores": scores })
}

/// The utterance as WAV files of at most [`MAX_PIECE_MS`], of equal length (so the last
/// piece is not a sliver too short to measure).
pub fn pieces(audio: &Pcm) -> Vec<Vec<u8>> {
    let total = audio.samples.len();
    if total == 0 || audio.sample_rate == 0 {
        return Vec::new();
    }
    let max = (u64::from(audio.sample_rate) * MAX_PIECE_MS / 1000).max(1) as usize;
    let count = total.div_ceil(max);
    let size = total.div_ceil(count);
    audio
        .samples
        .chunks(size)
        .map(|c| encode_wav(&Pcm::new(c.to_vec(), audio.sample_rate)))
        .collect()
}

fn snippet(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_are_read_and_averaged_per_emotion() {
        let v = json!({"payload_id": "p", "prosody": {"predictions": [
            {"time": {"begin": 0.0, "end": 1.5}, "emotions": [
                {"name": "Joy", "score": 0.5}, {"name": "Calmness", "score": 0.25}]},
            {"time": {"begin": 1.5, "end": 2.0}, "emotions": [
                {"name": "Joy", "score": 0.25}, {"name": "Calmness", "score": 0.75}]},
        ]}});
        let a = parse_answer(&v).unwrap();
        let Answer::Predictions(p) = &a else {
            panic!("{a:?}")
        };
        assert_eq!(p.len(), 2);
        assert_eq!(p[0]["Joy"], 0.5);
        let second = parse_answer(&json!({"prosody": {"predictions": [
            {"time": {"begin": 0.0, "end": 1.0}, "emotions": [
                {"name": "Joy", "score": 0.0}, {"name": "Calmness", "score": 0.5}]}]}}))
        .unwrap();
        let avg = average(&[a, Answer::Warning("No speech detected.".into()), second]).unwrap();
        assert_eq!(avg["Joy"], 0.25);
        assert_eq!(avg["Calmness"], 0.5);
        assert_eq!(
            prosody_inference(&avg),
            json!({"scores": {"Calmness": 0.5, "Joy": 0.25}})
        );
    }

    #[test]
    fn warnings_mean_no_scores_and_errors_fail() {
        let w =
            parse_answer(&json!({"prosody": {"warning": "No speech detected.", "code": "W0105"}}));
        assert_eq!(w, Ok(Answer::Warning("No speech detected.".into())));
        let w = parse_answer(&json!({"warning": "Audio too short.", "code": "W0101"}));
        assert_eq!(w, Ok(Answer::Warning("Audio too short.".into())));
        assert_eq!(average(&[w.unwrap()]), None);
        assert_eq!(average(&[Answer::Predictions(vec![])]), None);

        let e = parse_answer(&json!({"error": "Invalid API key", "code": "E0300"})).unwrap_err();
        assert!(e.contains("E0300") && e.contains("Invalid API key"), "{e}");
        assert!(parse_answer(&json!({"face": {"predictions": []}})).is_err());
        assert!(parse_answer(
            &json!({"prosody": {"predictions": [{"emotions": [{"name": "Joy"}]}]}})
        )
        .is_err());
    }

    #[test]
    fn long_utterances_are_sent_in_equal_pieces_of_at_most_5_s() {
        let audio = Pcm::new(vec![7; 16_000 * 11], 16_000); // 11 s
        let wavs = pieces(&audio);
        assert_eq!(wavs.len(), 3);
        let lens: Vec<usize> = wavs
            .iter()
            .map(|w| crate::decode_wav(w).unwrap().samples.len())
            .collect();
        // 11 s in three pieces of 3.67 s, not 5 + 5 + 1.
        assert!(
            lens.iter().all(|&n| (58_000..=80_000).contains(&n)),
            "{lens:?}"
        );
        assert_eq!(lens.iter().sum::<usize>(), 16_000 * 11);
        assert_eq!(pieces_of_ms(2_000), 1);
        assert!(pieces(&Pcm::new(vec![], 16_000)).is_empty());

        let p = payload(b"RIFF", "id-1");
        assert_eq!(p["models"], json!({"prosody": {}}));
        assert_eq!(p["data"], "UklGRg==");
        assert_eq!(p["raw_text"], false);
    }

    fn pieces_of_ms(ms: usize) -> usize {
        pieces(&Pcm::new(vec![1; 16 * ms], 16_000)).len()
    }
}
