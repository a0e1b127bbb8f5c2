//! Socket fuzzing (issue 11, "hold up under hostile clients").
//!
//! A seeded generator throws malformed, mutated and valid frames at one chat socket while a
//! session of another account chats alongside. After every fuzz frame a sentinel
//! `user_input` is sent, so each frame's answer is exactly what arrives before the
//! sentinel's echo. The suite checks:
//!
//! 1. every frame gets either the normal answer of a valid message or one `error` with a
//!    documented client code (docs/decisions.md, "Socket errors"), its slug and a
//!    non-empty message, and the session is never closed because of a bad message;
//! 2. the bystander session of another account keeps getting its echoes, never an `error`;
//! 3. the stored chat is `USER_ENDED` and holds exactly the events of the accepted frames,
//!    in order, with the texts that were acknowledged (nothing refused is stored);
//! 4. `/healthz` still answers, no REST read fails, and hostile `search` strings over the
//!    fuzzed history get a page or a 400.
//!
//! Next to it: invalid UTF-8 in a text frame (E0101, close 1007, chat `ERROR`), protocol
//! violations (the chat ends, never left `ACTIVE`), and texts the database may refuse (NUL,
//! a text whose search index entry is over 1 MiB), alone and beside another account's
//! sessions.
//!
//! A run is reproducible: the seed is printed, `COLLOQUY_FUZZ_SEED=<seed>` replays it and
//! `COLLOQUY_FUZZ_CASES=<n>` changes how many frames are generated.

use crate::harness::*;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// `chat.max_message_bytes` of the fuzzed server: small, so generated frames cross it.
const LIMIT: usize = 64 * 1024;
/// Generated frames stay under this; over 4 × [`LIMIT`] the transport closes the socket
/// (documented, and tested in session.rs).
const MAX_FRAME: usize = 3 * LIMIT;
const DEFAULT_SEED: u64 = 20_110_611;
const DEFAULT_CASES: usize = 400;
/// Marks a placeholder string replaced by raw JSON text after serialization (never
/// produced by the text generator).
const MARK: char = '\u{10FFFD}';

/// The client error codes a bad frame may get, with their slugs.
const CLIENT_ERRORS: [(&str, &str); 4] = [
    ("E0100", "invalid_json"),
    ("E0101", "invalid_message"),
    ("E0102", "message_too_large"),
    ("E0104", "invalid_audio"),
];

const TYPES: [&str; 8] = [
    "user_input",
    "assistant_input",
    "session_settings",
    "audio_input",
    "tool_response",
    "tool_error",
    "pause_assistant_message",
    "resume_assistant_message",
];

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a non-negative integer (got {v:?})")),
    )
}

fn fuzz_seed() -> u64 {
    env_number("COLLOQUY_FUZZ_SEED").unwrap_or(DEFAULT_SEED)
}

fn fuzz_cases() -> usize {
    env_number("COLLOQUY_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as usize)
}

fn fuzz_settings(s: &mut colloquy_server::Settings) {
    s.chat.max_message_bytes = LIMIT;
    // Text-only answers: speaking 60 KiB of random text would measure espeak, not the socket.
    s.engine.client.speak = false;
}

/// One generated frame.
struct Case {
    generator: &'static str,
    frame: Message,
    /// A valid message the server must accept (when under the size limit).
    must_accept: bool,
    /// Sent instead of `frame`: `frame`'s text cut into fragments (control frames between).
    fragments: Option<Vec<Message>>,
}

/// What the generator knows how to write into a message, later spliced into its JSON text.
#[derive(Default)]
struct Splices {
    /// Raw JSON replacing the placeholder string `MARK{i}MARK`.
    raw: Vec<String>,
    /// `"key": <raw json>` members added before (`true`) or after the others.
    duplicates: Vec<(String, String, bool)>,
}

struct Gen {
    rng: StdRng,
    wav_b64: String,
    pcm_b64: String,
}

impl Gen {
    fn new(seed: u64) -> Self {
        let pcm = tone(440.0, 16_000, 20);
        let b64 = base64::engine::general_purpose::STANDARD;
        Gen {
            rng: StdRng::seed_from_u64(seed),
            wav_b64: b64.encode(wav(&pcm, 16_000)),
            pcm_b64: b64.encode(&pcm),
        }
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items.choose(&mut self.rng).unwrap().clone()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    /// One character of a hostile mix (never NUL, which has its own test, nor [`MARK`]).
    fn any_char(&mut self) -> char {
        let c = match self.rng.gen_range(0..13) {
            0..=3 => self.rng.gen_range(' '..='~'),
            4 => self.pick(&[
                '\t', '\n', '\r', '\u{1}', '\u{7}', '\u{8}', '\u{1b}', '\u{7f}', '\u{85}', '\u{a0}',
            ]),
            5 => char::from_u32(self.rng.gen_range(0x1F300..0x1FAFF)).unwrap_or('😀'),
            6 => match self.rng.gen_range(0..3) {
                0 => self.pick(&['\u{202E}', '\u{202B}', '\u{200F}', '\u{2067}', '\u{061C}']),
                1 => self.rng.gen_range('\u{5D0}'..='\u{5EA}'),
                _ => self.rng.gen_range('\u{627}'..='\u{64A}'),
            },
            7 => self.rng.gen_range('\u{300}'..='\u{36F}'),
            8 => self.pick(&[
                '\u{200B}',
                '\u{200D}',
                '\u{FEFF}',
                '\u{2028}',
                '\u{2029}',
                '\u{FFFC}',
                '\u{FFFD}',
                '\u{FFFE}',
                '\u{FFFF}',
                '\u{E000}',
                '\u{10FFFF}',
            ]),
            9 => self.rng.gen_range('\u{4E00}'..='\u{9FFF}'),
            10 => self.pick(&['"', '\\', '{', '}', '[', ']', ':', ',', '/', '\'']),
            11 => self.rng.gen_range('\u{10000}'..='\u{10FFFF}'),
            _ => self.rng.gen::<char>(),
        };
        if c == '\0' || c == MARK {
            '?'
        } else {
            c
        }
    }

    /// A string of at most about `max_bytes` bytes of hostile characters.
    fn text_bytes(&mut self, max_bytes: usize) -> String {
        let mut s = String::new();
        let target = self.rng.gen_range(0..=max_bytes);
        while s.len() < target {
            let c = self.any_char();
            if self.chance(0.02) {
                // Zalgo: one letter under a pile of combining marks.
                s.push('Z');
                for _ in 0..self.rng.gen_range(10..200) {
                    s.push(self.rng.gen_range('\u{300}'..='\u{36F}'));
                }
            } else if self.chance(0.01) {
                s.push_str("👩\u{200D}👩\u{200D}👧\u{200D}👦");
            } else {
                s.push(c);
            }
        }
        s
    }

    /// Mostly short text, sometimes long, rarely near or over the message limit.
    fn text(&mut self) -> String {
        match self.rng.gen_range(0..20) {
            0..=13 => self.text_bytes(40),
            14..=17 => self.text_bytes(2_000),
            18 => self.text_bytes(20_000),
            _ => {
                let n = self.rng.gen_range(LIMIT - 100..LIMIT + 2_000);
                let c = self.pick(&["x", "é", "😀", "\u{5D0}", " "]);
                c.repeat(n / c.len())
            }
        }
    }

    fn raw_fragment(&mut self) -> String {
        match self.rng.gen_range(0..12) {
            0 | 1 => {
                let depth = self.pick(&[127usize, 128, 129, 1_000, 10_000]);
                format!("{}{}", "[".repeat(depth), "]".repeat(depth))
            }
            2 => {
                let depth = self.pick(&[127usize, 129, 10_000]);
                format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
            }
            3 => "\"\\ud800\"".into(),
            4 => "\"a\\udc00b\"".into(),
            5 => "\"\\ud83d\\ude00 \\u05d0\\u0301\"".into(),
            6 => "1e400".into(),
            7 => "-123456789012345678901234567890".into(),
            8 => "-0".into(),
            9 => "\"\\u0041\\t\\/\\\"\\\\\"".into(),
            10 => "\"\\ud800\\ud800\"".into(),
            _ => "1.0e-400".into(),
        }
    }

    fn placeholder(&mut self, sp: &mut Splices) -> Value {
        let raw = self.raw_fragment();
        sp.raw.push(raw);
        Value::String(format!("{MARK}{}{MARK}", sp.raw.len() - 1))
    }

    /// A value of any JSON type, often one no field expects.
    fn weird_value(&mut self, sp: &mut Splices) -> Value {
        match self.rng.gen_range(0..24) {
            0 => Value::Null,
            1 => json!(self.chance(0.5)),
            2 => json!(0),
            3 => json!(-1),
            4 => json!(i64::MIN),
            5 => json!(u64::MAX),
            6 => json!(1u64 << 32),
            7 => json!(u32::MAX),
            8 => json!(1.5),
            9 => json!(-0.0),
            10 => json!(1e308),
            11 => json!(f64::MIN_POSITIVE),
            12 => json!(""),
            13 | 14 => Value::String(self.text()),
            15 => json!([]),
            16 => json!({}),
            17 => json!([1, "a", null, true, {"k": []}]),
            18 => json!({"text": self.text_bytes(20), "type": "persistent", "x": [1, 2]}),
            19 | 20 => self.placeholder(sp),
            21 => json!(-1.0e-7),
            22 => json!([self.text_bytes(10), 5]),
            _ => json!(42),
        }
    }

    fn base64_data(&mut self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        match self.rng.gen_range(0..13) {
            0 | 1 => self.wav_b64.clone(),
            2 | 3 => self.pcm_b64.clone(),
            4 => String::new(),
            5 => self
                .pick(&["%%%", "not base64!", "====", "A", "AAA", "😀"])
                .into(),
            6 => "AAAA".into(),
            7 => {
                let n = self.rng.gen_range(1..3_000);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.gen()).collect();
                b64.encode(bytes)
            }
            8 => {
                let s = self.wav_b64.clone();
                let chunks: Vec<String> = s
                    .as_bytes()
                    .chunks(76)
                    .map(|c| String::from_utf8(c.to_vec()).unwrap())
                    .collect();
                chunks.join("\n")
            }
            9 => base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode((0..300).map(|i| (i * 7 % 256) as u8).collect::<Vec<u8>>()),
            10 => format!("  \n{}\t ", self.pcm_b64),
            11 => format!("data:audio/wav;base64,{}", self.wav_b64),
            _ => {
                // A large chunk of raw PCM, under the limit once encoded.
                let pcm = tone(220.0, 16_000, 2_000);
                b64.encode(&pcm[..40_000])
            }
        }
    }

    fn audio_settings(&mut self) -> Value {
        let channels = self.pick(&[
            json!(0),
            json!(1),
            json!(2),
            json!(8),
            json!(9),
            json!(-1),
            json!(1u64 << 32),
            json!(1.5),
            json!("1"),
            Value::Null,
        ]);
        let rate = self.pick(&[
            json!(0),
            json!(1),
            json!(7_999),
            json!(8_000),
            json!(16_000),
            json!(48_000),
            json!(192_000),
            json!(192_001),
            json!(u32::MAX),
            json!(1u64 << 32),
            json!(-16_000),
            json!(16_000.0),
            json!(1e9),
        ]);
        let encoding = self.pick(&[
            json!("linear16"),
            json!("linear16"),
            json!("LINEAR16"),
            json!("opus"),
            json!(""),
            Value::Null,
            json!(16),
        ]);
        let mut a = Map::new();
        a.insert("channels".into(), channels);
        a.insert("sample_rate".into(), rate);
        a.insert("encoding".into(), encoding);
        if self.chance(0.2) {
            a.insert("codec".into(), json!(self.text_bytes(10)));
        }
        let keys: Vec<String> = a.keys().cloned().collect();
        for k in keys {
            if self.chance(0.1) {
                a.remove(&k);
            }
        }
        Value::Object(a)
    }

    fn variables(&mut self) -> Value {
        let all = [
            ("s", json!("text")),
            ("n", json!(30)),
            ("f", json!(30.0)),
            ("b", json!(true)),
            ("neg", json!(-5)),
            ("big", json!(1e308)),
            ("huge", json!(u64::MAX)),
            ("u", json!("😀 \u{5D0}\u{301}")),
            ("null", Value::Null),
            ("arr", json!([1])),
            ("obj", json!({"a": 1})),
            ("empty", json!("")),
        ];
        let mut m = Map::new();
        for (k, v) in all {
            if self.chance(0.4) {
                m.insert(k.into(), v);
            }
        }
        if self.chance(0.2) {
            let k = self.text_bytes(30);
            m.insert(k, json!(self.text_bytes(30)));
        }
        Value::Object(m)
    }

    fn event_limit(&mut self) -> Value {
        self.pick(&[
            json!(0),
            json!(1),
            json!(100),
            json!(u32::MAX),
            json!(1u64 << 32),
            json!(-1),
            json!(1.5),
            json!(1e308),
            json!("5"),
            Value::Null,
        ])
    }

    /// A valid message of type `ty`, with random optional fields.
    fn message(&mut self, ty: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("type".into(), json!(ty));
        match ty {
            "user_input" | "assistant_input" => {
                m.insert("text".into(), json!(self.text()));
            }
            "session_settings" => {
                if self.chance(0.4) {
                    m.insert("system_prompt".into(), json!(self.text()));
                }
                if self.chance(0.4) {
                    let vars: Map<String, Value> = [
                        ("name".to_string(), json!(self.text_bytes(20))),
                        ("n".to_string(), json!(self.rng.gen_range(-5..5))),
                        ("ok".to_string(), json!(self.chance(0.5))),
                    ]
                    .into_iter()
                    .collect();
                    m.insert("variables".into(), Value::Object(vars));
                }
                if self.chance(0.2) {
                    m.insert(
                        "context".into(),
                        json!({"text": self.text_bytes(50), "type": self.pick(&["persistent", "temporary"])}),
                    );
                }
                if self.chance(0.2) {
                    m.insert("custom_session_id".into(), json!(self.text_bytes(30)));
                }
                if self.chance(0.2) {
                    m.insert("event_limit".into(), json!(self.rng.gen::<u32>()));
                }
                if self.chance(0.2) {
                    // A voice of the library (an unknown id is refused: the voice stays).
                    let kora = colloquy_server::tts::library_voice_id("Kora");
                    let id = self.pick(&[colloquy_server::tts::AVA_SONG_ID, kora.as_str()]);
                    m.insert("voice_id".into(), json!(id));
                }
                if self.chance(0.2) {
                    m.insert("language_model_api_key".into(), json!("sk-fuzz"));
                }
                if self.chance(0.2) {
                    m.insert(
                        "metadata".into(),
                        json!({"k": self.text_bytes(20), "n": [1, {"deep": null}]}),
                    );
                }
                if self.chance(0.15) {
                    m.insert(
                        "tools".into(),
                        json!([{"type": "function", "name": self.text_bytes(15),
                                "parameters": "{\"type\":\"object\"}",
                                "description": self.text_bytes(30)}]),
                    );
                }
                if self.chance(0.15) {
                    m.insert(
                        "builtin_tools".into(),
                        json!([{"name": self.pick(&["web_search", "hang_up"])}]),
                    );
                }
            }
            "audio_input" => {
                m.insert("data".into(), json!(self.base64_data()));
            }
            "tool_response" => {
                m.insert("tool_call_id".into(), json!(self.text_bytes(20)));
                m.insert("content".into(), json!(self.text()));
                if self.chance(0.3) {
                    m.insert("tool_name".into(), json!(self.text_bytes(15)));
                }
                if self.chance(0.3) {
                    m.insert(
                        "tool_type".into(),
                        json!(self.pick(&["function", "builtin"])),
                    );
                }
            }
            "tool_error" => {
                m.insert("tool_call_id".into(), json!(self.text_bytes(20)));
                m.insert("error".into(), json!(self.text()));
                for f in ["code", "content", "level", "tool_type"] {
                    if self.chance(0.3) {
                        m.insert(f.into(), json!(self.text_bytes(20)));
                    }
                }
            }
            _ => {}
        }
        m
    }

    /// Fields a message of `ty` has (mutation targets).
    fn fields(ty: &str) -> &'static [&'static str] {
        match ty {
            "user_input" | "assistant_input" => &["text"],
            "session_settings" => &[
                "audio",
                "builtin_tools",
                "context",
                "custom_session_id",
                "event_limit",
                "language_model_api_key",
                "metadata",
                "system_prompt",
                "tools",
                "variables",
                "voice_id",
            ],
            "audio_input" => &["data"],
            "tool_response" => &["tool_call_id", "content", "tool_name", "tool_type"],
            "tool_error" => &[
                "tool_call_id",
                "error",
                "code",
                "content",
                "level",
                "tool_type",
            ],
            _ => &["custom_session_id"],
        }
    }

    /// Applies one to three mutations to a valid message.
    fn mutate(&mut self, ty: &str, m: &mut Map<String, Value>, sp: &mut Splices) {
        for _ in 0..self.rng.gen_range(1..=3) {
            match self.rng.gen_range(0..10) {
                0 => {
                    let keys: Vec<String> = m.keys().cloned().collect();
                    if let Some(k) = keys.choose(&mut self.rng) {
                        m.remove(k);
                    }
                }
                1..=3 => {
                    let f = self.pick(Self::fields(ty));
                    let v = self.weird_value(sp);
                    m.insert(f.into(), v);
                }
                4 => {
                    let k = if self.chance(0.5) {
                        format!("x_{}", self.rng.gen::<u16>())
                    } else {
                        self.text_bytes(30)
                    };
                    let v = self.weird_value(sp);
                    m.insert(k, v);
                }
                5 => {
                    let t = match self.rng.gen_range(0..6) {
                        0 => json!(ty.to_uppercase()),
                        1 => json!(format!(" {ty}")),
                        2 => json!(format!("{ty}\u{301}")),
                        3 => json!(""),
                        4 => json!([ty]),
                        _ => self.weird_value(sp),
                    };
                    m.insert("type".into(), t);
                }
                6 => {
                    let v = self.weird_value(sp);
                    m.insert("custom_session_id".into(), v);
                }
                7 => {
                    // A repeated key, before or after the original (serde_json keeps the last).
                    let k = if self.chance(0.5) {
                        "type".to_string()
                    } else {
                        self.pick(Self::fields(ty)).to_string()
                    };
                    let v = if self.chance(0.5) {
                        json!(self.pick(&TYPES)).to_string()
                    } else {
                        json!(self.text_bytes(20)).to_string()
                    };
                    let front = self.chance(0.5);
                    sp.duplicates.push((k, v, front));
                }
                _ if ty == "session_settings" => match self.rng.gen_range(0..4) {
                    0 => {
                        let a = self.audio_settings();
                        m.insert("audio".into(), a);
                    }
                    1 => {
                        let v = self.variables();
                        m.insert("variables".into(), v);
                    }
                    2 => {
                        let v = self.event_limit();
                        m.insert("event_limit".into(), v);
                    }
                    _ => {
                        let v = self.weird_value(sp);
                        let f = self.pick(&["type", "text", "bogus"]);
                        m.insert("context".into(), json!({ f: v }));
                    }
                },
                _ => {
                    let f = self.pick(Self::fields(ty));
                    let v = Value::String(self.text());
                    m.insert(f.into(), v);
                }
            }
        }
    }

    /// Serializes `m` and applies the splices.
    fn render(m: &Map<String, Value>, sp: &Splices) -> String {
        let mut s = Value::Object(m.clone()).to_string();
        for (i, raw) in sp.raw.iter().enumerate() {
            s = s.replace(&format!("\"{MARK}{i}{MARK}\""), raw);
        }
        for (k, v, front) in &sp.duplicates {
            let member = format!("{}:{v}", json!(k));
            if s == "{}" {
                s = format!("{{{member}}}");
            } else if *front {
                s = format!("{{{member},{}", &s[1..]);
            } else {
                s = format!("{},{member}}}", &s[..s.len() - 1]);
            }
        }
        s
    }

    /// Breaks valid JSON: truncation, deletions, insertions, swaps.
    fn garble(&mut self, text: &str) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        if chars.is_empty() {
            return "{".into();
        }
        if self.chance(0.5) {
            let at = self.rng.gen_range(0..chars.len());
            chars.truncate(at);
            return chars.into_iter().collect();
        }
        for _ in 0..self.rng.gen_range(1..5) {
            if chars.is_empty() {
                break;
            }
            let at = self.rng.gen_range(0..chars.len());
            match self.rng.gen_range(0..3) {
                0 => {
                    chars.remove(at);
                }
                1 => {
                    let c = self.pick(&['"', '{', '}', '[', ']', ',', ':', '\\', 'x', '0', ' ']);
                    chars.insert(at, c);
                }
                _ => {
                    let other = self.rng.gen_range(0..chars.len());
                    chars.swap(at, other);
                }
            }
        }
        chars.into_iter().collect()
    }

    /// `bytes` as one text message in 1 to 60 fragments, sometimes with pings between.
    fn fragments(&mut self, bytes: &[u8]) -> Vec<Message> {
        let n = self.rng.gen_range(1..=60).min(bytes.len().max(1));
        let mut cuts: Vec<usize> = (0..n - 1)
            .map(|_| self.rng.gen_range(0..=bytes.len()))
            .collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut from = 0;
        for (k, to) in cuts.into_iter().chain([bytes.len()]).enumerate() {
            let last = k == n - 1;
            let opcode = if k == 0 { Data::Text } else { Data::Continue };
            out.push(raw_text(&bytes[from..to], opcode, last));
            if !last && self.chance(0.1) {
                out.push(Message::Ping(b"mid-message".to_vec().into()));
            }
            from = to;
        }
        out
    }

    fn case(&mut self) -> Case {
        loop {
            let case = self.case_unbounded();
            if case.frame.len() <= MAX_FRAME {
                return case;
            }
        }
    }

    fn case_unbounded(&mut self) -> Case {
        let text = |generator, s: String| Case {
            generator,
            frame: Message::Text(s.into()),
            must_accept: false,
            fragments: None,
        };
        match self.rng.gen_range(0..100) {
            0..=6 => {
                let s = self.text_bytes(300);
                text("random_text", s)
            }
            7..=10 => {
                let n = self.rng.gen_range(0..2_000);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.gen()).collect();
                Case {
                    generator: "binary",
                    frame: Message::Binary(bytes.into()),
                    must_accept: false,
                    fragments: None,
                }
            }
            11..=20 => {
                let ty = self.pick(&TYPES);
                let m = self.message(ty);
                let s = Self::render(&m, &Splices::default());
                let g = self.garble(&s);
                text("garbled_json", g)
            }
            21..=25 => {
                let s = match self.rng.gen_range(0..8) {
                    0 => json!([{"type": "user_input", "text": "in an array"}]).to_string(),
                    1 => json!("user_input").to_string(),
                    2 => json!(12).to_string(),
                    3 => "null".into(),
                    4 => "true".into(),
                    5 => json!(-1.5e300).to_string(),
                    6 => "[]".into(),
                    _ => self.raw_fragment(),
                };
                text("wrong_top_level", s)
            }
            26..=59 => {
                let ty = self.pick(&TYPES);
                let mut m = self.message(ty);
                let mut sp = Splices::default();
                self.mutate(ty, &mut m, &mut sp);
                text("mutated_message", Self::render(&m, &sp))
            }
            60..=65 => {
                // A message (valid or mutated) in fragments cut at random bytes, even inside
                // a character, with pings between them.
                let ty = self.pick(&TYPES);
                let mut m = self.message(ty);
                let mut sp = Splices::default();
                let valid = self.chance(0.5);
                if !valid {
                    self.mutate(ty, &mut m, &mut sp);
                }
                let s = Self::render(&m, &sp);
                let fragments = self.fragments(s.as_bytes());
                Case {
                    generator: "fragmented",
                    frame: Message::Text(s.into()),
                    must_accept: valid && ty != "audio_input",
                    fragments: Some(fragments),
                }
            }
            66..=81 => {
                let ty = self.pick(&TYPES);
                let m = self.message(ty);
                let s = Self::render(&m, &Splices::default());
                Case {
                    generator: "valid_message",
                    frame: Message::Text(s.into()),
                    // Audio depends on the session's format so far; everything else is fine.
                    must_accept: ty != "audio_input",
                    fragments: None,
                }
            }
            82..=85 => {
                let mut m = self.message("session_settings");
                match self.rng.gen_range(0..3) {
                    0 => m.insert("audio".into(), self.audio_settings()),
                    1 => m.insert("variables".into(), self.variables()),
                    _ => m.insert("event_limit".into(), self.event_limit()),
                };
                text(
                    "session_settings_extremes",
                    Self::render(&m, &Splices::default()),
                )
            }
            86..=89 => {
                let depth = self.pick(&[129usize, 1_000, 10_000]);
                let deep = if self.chance(0.5) {
                    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
                } else {
                    format!("{}null{}", "{\"a\":".repeat(depth), "}".repeat(depth))
                };
                let ty = self.pick(&TYPES);
                let f = self.pick(Self::fields(ty));
                let s = if self.chance(0.2) {
                    deep
                } else {
                    format!("{{\"type\":{},{}:{deep}}}", json!(ty), json!(f))
                };
                text("deep_nesting", s)
            }
            90..=93 => {
                let n = self.rng.gen_range(0..=125);
                let payload: Vec<u8> = (0..n).map(|_| self.rng.gen()).collect();
                Case {
                    generator: "ping",
                    frame: if self.chance(0.8) {
                        Message::Ping(payload.into())
                    } else {
                        Message::Pong(payload.into())
                    },
                    must_accept: true,
                    fragments: None,
                }
            }
            _ => {
                // A user_input of exactly the limit, or one byte over.
                let skeleton = json!({"type": "user_input", "text": ""}).to_string();
                let over = self.chance(0.5);
                let n = LIMIT - skeleton.len() + usize::from(over);
                let s = json!({"type": "user_input", "text": "L".repeat(n)}).to_string();
                assert_eq!(s.len(), LIMIT + usize::from(over));
                Case {
                    generator: "size_limit",
                    frame: Message::Text(s.into()),
                    must_accept: !over,
                    fragments: None,
                }
            }
        }
    }
}

/// A readable excerpt of a frame, for reports.
fn preview(frame: &Message) -> String {
    match frame {
        Message::Text(t) => {
            let t = t.as_str();
            let head: String = t.chars().take(200).collect();
            format!(
                "text ({} bytes): {head:?}{}",
                t.len(),
                if head.len() < t.len() { "…" } else { "" }
            )
        }
        Message::Binary(b) => format!(
            "binary ({} bytes): {:02x?}…",
            b.len(),
            &b[..b.len().min(16)]
        ),
        Message::Ping(p) => format!("ping ({} bytes)", p.len()),
        Message::Pong(p) => format!("pong ({} bytes)", p.len()),
        other => format!("{other:?}"),
    }
}

/// An event the chat must hold: its type and, where the message carries one, its text.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    kind: &'static str,
    text: Option<String>,
}

fn expect(kind: &'static str, text: Option<&str>) -> Expected {
    Expected {
        kind,
        text: text.map(str::to_string),
    }
}

/// The fuzz session's bookkeeping.
struct Tally {
    events: Vec<Expected>,
    /// Texts of every `user_message` echo, in order.
    acked: Vec<String>,
    /// `assistant_message.id` → its text.
    agent_ids: Vec<(String, String)>,
    audio_accepted: usize,
    violations: Vec<String>,
    outcomes: BTreeMap<String, usize>,
}

impl Tally {
    fn violation(&mut self, i: usize, case: &Case, what: String) {
        self.violations.push(format!(
            "case #{i} [{}] {}: {what}",
            case.generator,
            preview(&case.frame)
        ));
    }
}

/// What a frame must get if refused, given its content: `None` when any client code fits.
fn required_code(frame: &Message) -> Option<&'static str> {
    match frame {
        Message::Binary(_) => Some("E0101"),
        Message::Text(t) if t.len() > LIMIT => Some("E0102"),
        Message::Text(t) => match serde_json::from_str::<Value>(t.as_str()) {
            Err(_) => Some("E0100"),
            Ok(Value::Object(m)) => match m.get("type") {
                Some(Value::String(ty)) if TYPES.contains(&ty.as_str()) => None,
                _ => Some("E0101"),
            },
            Ok(_) => Some("E0101"),
        },
        _ => None,
    }
}

/// Sends one frame then a sentinel `user_input`; everything received before the sentinel's
/// echo (`Err` if the socket ended first).
async fn exchange(ws: &mut Ws, case: &Case, sentinel: &str) -> Result<Vec<Message>, String> {
    match &case.fragments {
        None => ws.send(case.frame.clone()).await,
        Some(frames) => {
            for f in frames {
                ws.feed(f.clone())
                    .await
                    .map_err(|e| format!("send failed: {e}"))?;
            }
            ws.flush().await
        }
    }
    .map_err(|e| format!("send failed: {e}"))?;
    ws.send(Message::Text(
        json!({"type": "user_input", "text": sentinel})
            .to_string()
            .into(),
    ))
    .await
    .map_err(|e| format!("sentinel send failed: {e}"))?;
    let mut replies = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .map_err(|_| "no answer within 15 s".to_string())?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                    if v["type"] == "user_message" && v["message"]["content"] == sentinel {
                        return Ok(replies);
                    }
                }
                replies.push(Message::Text(t));
            }
            Some(Ok(Message::Close(c))) => {
                return Err(format!(
                    "the server closed the socket: {c:?}; before: {replies:?}"
                ))
            }
            Some(Ok(m)) => replies.push(m),
            Some(Err(e)) => return Err(format!("socket error: {e}")),
            None => return Err("the socket ended".into()),
        }
    }
}

/// Checks the answer to one frame and notes the events it must have stored.
fn judge(i: usize, case: &Case, replies: Vec<Message>, request_id: &Value, t: &mut Tally) {
    let mut texts = Vec::new();
    let mut pongs = Vec::new();
    for r in replies {
        match r {
            Message::Text(s) => match serde_json::from_str::<Value>(s.as_str()) {
                Ok(v) => texts.push(v),
                Err(_) => t.violation(i, case, format!("the server sent non-JSON text {s:?}")),
            },
            Message::Pong(p) => pongs.push(p),
            other => t.violation(
                i,
                case,
                format!("unexpected frame from the server: {other:?}"),
            ),
        }
    }
    let errors: Vec<&Value> = texts.iter().filter(|v| v["type"] == "error").collect();
    if let [err] = errors[..] {
        let code = err["code"].as_str().unwrap_or("");
        *t.outcomes.entry(code.to_string()).or_default() += 1;
        match CLIENT_ERRORS.iter().find(|(c, _)| *c == code) {
            None => t.violation(
                i,
                case,
                format!("error code outside the client table: {err}"),
            ),
            Some((_, slug)) if err["slug"] != *slug => {
                t.violation(i, case, format!("slug does not match the code: {err}"))
            }
            Some(_) => {}
        }
        if err["message"].as_str().is_none_or(|m| m.trim().is_empty()) {
            t.violation(i, case, format!("the error has no message: {err}"));
        }
        if &err["request_id"] != request_id {
            t.violation(
                i,
                case,
                format!("the error's request_id is not the chat's: {err}"),
            );
        }
        if let Some(want) = required_code(&case.frame) {
            if code != want {
                t.violation(i, case, format!("expected {want}, got {err}"));
            }
        } else if code == "E0104" && !is_type(&case.frame, "audio_input") {
            t.violation(
                i,
                case,
                format!("E0104 for a message that is not audio: {err}"),
            );
        } else if code == "E0100" || code == "E0102" {
            t.violation(
                i,
                case,
                format!("{code} for a JSON object under the limit: {err}"),
            );
        }
        if texts.len() > 1 {
            t.violation(i, case, format!("a refused frame also got {texts:?}"));
        }
        if case.must_accept && required_code(&case.frame).is_none() {
            t.violation(i, case, format!("a valid message was refused: {err}"));
        }
        return;
    }
    if errors.len() > 1 {
        t.violation(i, case, format!("several errors for one frame: {errors:?}"));
        return;
    }
    *t.outcomes.entry("accepted".into()).or_default() += 1;
    let parsed = match &case.frame {
        Message::Ping(p) => {
            if pongs.iter().all(|q| q != p) {
                t.violation(
                    i,
                    case,
                    format!("no pong with the ping's payload (got {pongs:?})"),
                );
            }
            if !texts.is_empty() {
                t.violation(i, case, format!("a ping got {texts:?}"));
            }
            return;
        }
        Message::Pong(_) => {
            if !texts.is_empty() {
                t.violation(i, case, format!("a pong got {texts:?}"));
            }
            return;
        }
        Message::Binary(_) => {
            t.violation(i, case, "a binary frame was not refused".into());
            return;
        }
        Message::Text(s) => serde_json::from_str::<Value>(s.as_str()),
        _ => return,
    };
    let Ok(Value::Object(m)) = parsed else {
        t.violation(i, case, "accepted a frame that is not a JSON object".into());
        return;
    };
    if let Some(want) = required_code(&case.frame) {
        t.violation(i, case, format!("accepted a frame that deserves {want}"));
        return;
    }
    let ty = m["type"].as_str().unwrap_or_default();
    let field = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    let silent = |t: &mut Tally, texts: &[Value]| {
        if !texts.is_empty() {
            t.violation(i, case, format!("`{ty}` got {texts:?}"));
        }
    };
    match ty {
        "user_input" => {
            let Some(text) = field("text") else {
                t.violation(
                    i,
                    case,
                    "accepted a user_input without a string text".into(),
                );
                return;
            };
            match &texts[..] {
                [echo]
                    if echo["type"] == "user_message"
                        && echo["message"]["content"] == text.as_str()
                        && echo["message"]["role"] == "user"
                        && echo["from_text"] == true
                        && echo["interim"] == false => {}
                other => t.violation(i, case, format!("user_input answered with {other:?}")),
            }
            t.acked.push(text.clone());
            t.events.push(expect("USER_MESSAGE", Some(&text)));
        }
        "assistant_input" => {
            let Some(text) = field("text") else {
                t.violation(
                    i,
                    case,
                    "accepted an assistant_input without a string text".into(),
                );
                return;
            };
            match &texts[..] {
                [msg, end]
                    if msg["type"] == "assistant_message"
                        && msg["message"]["content"] == text.as_str()
                        && msg["id"].is_string()
                        && end["type"] == "assistant_end"
                        && end.as_object().is_some_and(|o| {
                            o.keys().all(|k| k == "type" || k == "custom_session_id")
                        }) =>
                {
                    let id = msg["id"].as_str().unwrap().to_string();
                    t.agent_ids.push((id, text.clone()));
                }
                other => t.violation(i, case, format!("assistant_input answered with {other:?}")),
            }
            t.events.push(expect("AGENT_MESSAGE", Some(&text)));
        }
        "session_settings" => {
            silent(t, &texts);
            t.events.push(expect("SESSION_SETTINGS", None));
            if let Some(p) = field("system_prompt") {
                t.events.push(expect("SYSTEM_PROMPT", Some(&p)));
            }
        }
        "audio_input" => {
            silent(t, &texts);
            if t.audio_accepted == 0 {
                t.events
                    .push(expect("USER_RECORDING_START_MESSAGE", Some("")));
            }
            t.audio_accepted += 1;
        }
        "tool_response" => {
            silent(t, &texts);
            t.events.push(expect(
                "FUNCTION_CALL_RESPONSE",
                field("content").as_deref(),
            ));
        }
        "tool_error" => {
            silent(t, &texts);
            t.events
                .push(expect("FUNCTION_CALL_RESPONSE", field("error").as_deref()));
        }
        "pause_assistant_message" => {
            silent(t, &texts);
            t.events.push(expect("PAUSE_ONSET", Some("")));
        }
        "resume_assistant_message" => {
            silent(t, &texts);
            t.events.push(expect("RESUME_ONSET", Some("")));
        }
        _ => t.violation(i, case, "accepted an unknown type".into()),
    }
}

fn is_type(frame: &Message, ty: &str) -> bool {
    match frame {
        Message::Text(s) => serde_json::from_str::<Value>(s.as_str())
            .is_ok_and(|v| v.get("type").and_then(Value::as_str) == Some(ty)),
        _ => false,
    }
}

/// Compares the stored events of a chat with what the socket acknowledged.
fn compare_events(stored: &[Value], want: &[Expected], out: &mut Vec<String>) {
    let got: Vec<&str> = stored
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect();
    let wanted: Vec<&str> = want.iter().map(|e| e.kind).collect();
    if got != wanted {
        let first = got
            .iter()
            .zip(&wanted)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(wanted.len()));
        out.push(format!(
            "stored event types differ from the acknowledged ones ({} stored, {} expected); \
             first difference at #{first}: stored {:?}, expected {:?}",
            got.len(),
            wanted.len(),
            &got[first..(first + 5).min(got.len())],
            &wanted[first..(first + 5).min(wanted.len())],
        ));
        // Texts of misaligned events say nothing more.
        return;
    }
    let ts: Vec<i64> = stored
        .iter()
        .filter_map(|e| e["timestamp"].as_i64())
        .collect();
    if ts.len() != stored.len() || ts.windows(2).any(|w| w[0] > w[1]) {
        out.push("event timestamps are missing or go back in time".into());
    }
    for (n, (e, w)) in stored.iter().zip(want).enumerate() {
        if let Some(text) = &w.text {
            if e["message_text"] != text.as_str() {
                out.push(format!(
                    "event #{n} ({}) stored text {:?}, acknowledged {:?}",
                    w.kind,
                    e["message_text"]
                        .as_str()
                        .map(|s| s.chars().take(80).collect::<String>()),
                    text.chars().take(80).collect::<String>()
                ));
            }
        }
        if w.kind == "SESSION_SETTINGS" {
            let v: Value = serde_json::from_str(e["message_text"].as_str().unwrap_or(""))
                .unwrap_or(Value::Null);
            if v["type"] != "session_settings" {
                out.push(format!(
                    "event #{n}: SESSION_SETTINGS text is not the settings: {v}"
                ));
            }
            if let Some(vars) = v["variables"].as_object() {
                if !vars.values().all(Value::is_string) {
                    out.push(format!("event #{n}: variables not stored as strings: {v}"));
                }
            }
            if v.get("language_model_api_key").is_some()
                && v["language_model_api_key"] != "[redacted]"
            {
                out.push(format!("event #{n}: a language model key was stored: {v}"));
            }
        }
    }
}

/// A session of another account that chats until `stop`; its chat id, the texts echoed to
/// it, and what went wrong.
async fn bystander(
    url: String,
    stop: Arc<AtomicBool>,
    pause: Duration,
) -> (String, Vec<String>, Vec<String>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let meta = recv_json(&mut ws).await;
    let chat_id = meta["chat_id"].as_str().unwrap().to_string();
    let mut acked = Vec::new();
    let mut problems = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let text = format!("bystander {n} ✓");
        n += 1;
        let sent = json!({"type": "user_input", "text": text}).to_string();
        if let Err(e) = ws.send(Message::Text(sent.into())).await {
            problems.push(format!("bystander send failed: {e}"));
            break;
        }
        let reply = loop {
            match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => break Ok(t.to_string()),
                Ok(Some(Ok(Message::Close(c)))) => break Err(format!("closed: {c:?}")),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => break Err(format!("socket error: {e}")),
                Ok(None) => break Err("socket ended".into()),
                Err(_) => break Err("no echo within 15 s".into()),
            }
        };
        match reply {
            Ok(t) => {
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                if v["type"] != "user_message" || v["message"]["content"] != text.as_str() {
                    problems.push(format!("bystander sent {text:?}, got {t}"));
                    break;
                }
                acked.push(text);
            }
            Err(e) => {
                problems.push(format!("bystander after {text:?}: {e}"));
                break;
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    let _ = ws.close(None).await;
    let _ = recv_until_close(&mut ws, Duration::from_secs(5)).await;
    (chat_id, acked, problems)
}

/// Sends many tiny frames without waiting, reading the answers at the same time; returns
/// the answers (text messages) received before `sentinel`'s echo.
async fn burst(ws: Ws, frames: Vec<String>, sentinel: &str) -> (Ws, Result<Vec<Value>, String>) {
    let (mut tx, mut rx) = ws.split();
    let send = async {
        for f in frames {
            tx.feed(Message::Text(f.into())).await.unwrap();
        }
        let s = json!({"type": "user_input", "text": sentinel}).to_string();
        tx.send(Message::Text(s.into())).await.unwrap();
    };
    let read = async {
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(15), rx.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["type"] == "user_message" && v["message"]["content"] == sentinel {
                        return Ok(got);
                    }
                    got.push(v);
                }
                Ok(Some(Ok(Message::Close(c)))) => return Err(format!("closed: {c:?}")),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => return Err(format!("socket error: {e}")),
                Ok(None) => return Err("socket ended".into()),
                Err(_) => return Err(format!("stuck after {} answers", got.len())),
            }
        }
    };
    let ((), result) = tokio::join!(send, read);
    (tx.reunite(rx).unwrap(), result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_socket_frames_get_answers_and_nothing_acknowledged_is_lost() {
    let seed = fuzz_seed();
    let cases = fuzz_cases();
    println!("socket fuzz: COLLOQUY_FUZZ_SEED={seed} COLLOQUY_FUZZ_CASES={cases}");
    on_each_backend(fuzz_settings, |srv| async move {
        let started = std::time::Instant::now();
        let fuzzer = srv.key(true).await;
        let other = srv.key(true).await;
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = tokio::spawn(bystander(
            srv.ws_url(&format!("api_key={}", other.api_key)),
            stop.clone(),
            Duration::from_millis(5),
        ));

        let (mut ws, meta) = srv.connect(&fuzzer.api_key, "").await;
        let request_id = meta["request_id"].clone();
        let chat_id = meta["chat_id"].as_str().unwrap().to_string();
        let mut gen = Gen::new(seed);
        let mut t = Tally {
            events: vec![expect("CHAT_START_MESSAGE", Some(""))],
            acked: Vec::new(),
            agent_ids: Vec::new(),
            audio_accepted: 0,
            violations: Vec::new(),
            outcomes: BTreeMap::new(),
        };
        let mut per_generator: BTreeMap<&str, usize> = BTreeMap::new();
        let mut alive = true;
        for i in 0..cases {
            let case = gen.case();
            *per_generator.entry(case.generator).or_default() += 1;
            let sentinel = format!("sentinel {seed}/{i}");
            match exchange(&mut ws, &case, &sentinel).await {
                Ok(replies) => judge(i, &case, replies, &request_id, &mut t),
                Err(e) => {
                    t.violation(i, &case, format!("the session did not survive: {e}"));
                    alive = false;
                    break;
                }
            }
            t.acked.push(sentinel.clone());
            t.events.push(expect("USER_MESSAGE", Some(&sentinel)));
        }

        if alive {
            // Very many tiny frames, pipelined: bad ones, echoes and silent ones.
            let bad = [
                "",
                "{",
                "1",
                "[]",
                "{}",
                "null",
                "\"x\"",
                "{\"type\":1}",
                "\u{FEFF}{}",
            ];
            let frames: Vec<String> = (0..900).map(|i| bad[i % bad.len()].to_string()).collect();
            let (back, result) = burst(ws, frames.clone(), "after bad burst").await;
            ws = back;
            match result {
                Ok(answers) => {
                    let codes: Vec<&str> = answers
                        .iter()
                        .map(|a| a["code"].as_str().unwrap_or("?"))
                        .collect();
                    let want: Vec<&str> = frames
                        .iter()
                        .map(|f| required_code(&Message::Text(f.clone().into())).unwrap_or("?"))
                        .collect();
                    if codes != want {
                        t.violations.push(format!(
                            "burst of {} tiny bad frames got {} answers, codes differ: {:?}…",
                            frames.len(),
                            answers.len(),
                            &codes[..codes.len().min(12)]
                        ));
                    }
                }
                Err(e) => {
                    t.violations
                        .push(format!("the session did not survive a bad burst: {e}"));
                    alive = false;
                }
            }
            t.acked.push("after bad burst".into());
            t.events
                .push(expect("USER_MESSAGE", Some("after bad burst")));
        }
        if alive {
            let mut frames = Vec::new();
            for i in 0..200 {
                let f = match i % 4 {
                    0 => json!({"type": "pause_assistant_message"}),
                    1 => json!({"type": "resume_assistant_message"}),
                    _ => json!({"type": "user_input", "text": format!("b{i}")}),
                };
                frames.push(f.to_string());
            }
            let (back, result) = burst(ws, frames, "after good burst").await;
            ws = back;
            let mut want_echoes = Vec::new();
            for i in 0..200 {
                match i % 4 {
                    0 => t.events.push(expect("PAUSE_ONSET", Some(""))),
                    1 => t.events.push(expect("RESUME_ONSET", Some(""))),
                    _ => {
                        let text = format!("b{i}");
                        t.events.push(expect("USER_MESSAGE", Some(&text)));
                        t.acked.push(text.clone());
                        want_echoes.push(text);
                    }
                }
            }
            match result {
                Ok(answers) => {
                    let got: Vec<&str> = answers
                        .iter()
                        .map(|a| a["message"]["content"].as_str().unwrap_or("?"))
                        .collect();
                    if got != want_echoes {
                        t.violations.push(format!(
                            "burst of valid tiny messages: {} echoes for {} user_inputs: {:?}…",
                            got.len(),
                            want_echoes.len(),
                            &answers[..answers.len().min(3)]
                        ));
                    }
                }
                Err(e) => {
                    t.violations
                        .push(format!("the session did not survive a valid burst: {e}"));
                    alive = false;
                }
            }
            t.acked.push("after good burst".into());
            t.events
                .push(expect("USER_MESSAGE", Some("after good burst")));
        }

        // (1) still alive: a normal message with a unique text is echoed.
        if alive {
            let last = format!("still here after seed {seed}");
            send_json(&mut ws, json!({"type": "user_input", "text": last})).await;
            let echo = recv_json(&mut ws).await;
            assert_eq!(echo["type"], "user_message", "{echo}");
            assert_eq!(echo["message"]["content"], last.as_str(), "{echo}");
            t.acked.push(last.clone());
            t.events.push(expect("USER_MESSAGE", Some(&last)));
            ws.close(None).await.unwrap();
            let _ = recv_close(&mut ws).await;
        }
        let fuzz_time = started.elapsed();

        // (2) The bystander of another account never noticed.
        stop.store(true, Ordering::Relaxed);
        let (other_chat, other_acked, problems) = watcher.await.unwrap();
        t.violations.extend(problems);
        if other_acked.is_empty() {
            t.violations.push("the bystander got no echo at all".into());
        }
        let other_events = srv.all_events(&other.api_key, &other_chat, 100).await;
        let mut want = vec![expect("CHAT_START_MESSAGE", Some(""))];
        want.extend(other_acked.iter().map(|s| expect("USER_MESSAGE", Some(s))));
        want.push(expect("CHAT_END_MESSAGE", Some("")));
        let mut bystander_problems = Vec::new();
        compare_events(&other_events, &want, &mut bystander_problems);
        t.violations.extend(
            bystander_problems
                .into_iter()
                .map(|p| format!("bystander chat: {p}")),
        );
        let (status, chat) = srv
            .get(&other.api_key, &format!("/v0/evi/chats/{other_chat}"))
            .await;
        assert_eq!(status, 200, "{chat}");
        if chat["status"] != "USER_ENDED" {
            t.violations
                .push(format!("the bystander's chat ended as {}", chat["status"]));
        }

        // (3) The fuzz chat holds exactly what was acknowledged.
        if alive {
            let events = srv.all_events(&fuzzer.api_key, &chat_id, 100).await;
            t.events.push(expect("CHAT_END_MESSAGE", Some("")));
            let mut problems = Vec::new();
            compare_events(&events, &t.events, &mut problems);
            t.violations.extend(problems);
            let stored_users: Vec<&str> = events
                .iter()
                .filter(|e| e["type"] == "USER_MESSAGE")
                .map(|e| e["message_text"].as_str().unwrap_or("?"))
                .collect();
            let acked: Vec<&str> = t.acked.iter().map(String::as_str).collect();
            if stored_users != acked {
                t.violations.push(format!(
                    "{} user_message echoes but {} USER_MESSAGE events (or their texts differ)",
                    acked.len(),
                    stored_users.len()
                ));
            }
            for (id, text) in &t.agent_ids {
                if !events
                    .iter()
                    .any(|e| e["id"] == id.as_str() && e["message_text"] == text.as_str())
                {
                    t.violations
                        .push(format!("assistant_message {id} has no AGENT_MESSAGE event"));
                }
            }
            let end = events.last().cloned().unwrap_or(Value::Null);
            let end_meta: Value =
                serde_json::from_str(end["metadata"].as_str().unwrap_or("")).unwrap_or_default();
            if end_meta["status"] != "USER_ENDED" || end_meta["reason"] != "client_closed" {
                t.violations.push(format!("the chat's end: {end}"));
            }
            let (status, chat) = srv
                .get(&fuzzer.api_key, &format!("/v0/evi/chats/{chat_id}"))
                .await;
            assert_eq!(status, 200, "{chat}");
            if chat["status"] != "USER_ENDED" {
                t.violations
                    .push(format!("the fuzz chat ended as {}", chat["status"]));
            }
            let (status, list) = srv.get(&fuzzer.api_key, "/v0/evi/chats").await;
            assert_eq!(status, 200, "{list}");
            if list["chats_page"][0]["event_count"] != events.len() {
                t.violations.push(format!(
                    "event_count {} but {} events listed",
                    list["chats_page"][0]["event_count"],
                    events.len()
                ));
            }
        }

        // (4) The server still answers: hostile search strings over the fuzzed history get
        // a page or a 400, never a 5xx.
        for _ in 0..20 {
            let words = gen.text_bytes(1_200);
            let resp = srv
                .http
                .get(format!("{}/v0/evi/chats", srv.base))
                .query(&[("search", words.as_str())])
                .header("X-Hume-Api-Key", &fuzzer.api_key)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            if status != 200 && status != 400 {
                t.violations.push(format!(
                    "GET /v0/evi/chats?search={words:?} answered {status}: {}",
                    resp.text().await.unwrap_or_default()
                ));
            }
        }

        let health = srv
            .http
            .get(format!("{}/healthz", srv.base))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);

        println!(
            "socket fuzz: {cases} cases + bursts in {fuzz_time:?} (whole check {:?}); \
             generators {per_generator:?}; outcomes {:?}; bystander echoes {}",
            started.elapsed(),
            t.outcomes,
            other_acked.len()
        );
        assert!(
            t.violations.is_empty(),
            "seed {seed}: {} violations:\n{}",
            t.violations.len(),
            t.violations
                .iter()
                .take(30)
                .map(|v| v.chars().take(1_500).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n")
        );
        srv
    })
    .await;
}

/// Sends raw frame bytes as one text message (or a fragment of one).
fn raw_text(bytes: &[u8], opcode: Data, fin: bool) -> Message {
    Message::Frame(Frame::message(bytes.to_vec(), OpCode::Data(opcode), fin))
}

#[tokio::test]
async fn fuzz_invalid_utf8_text_ends_the_chat_with_1007() {
    on_each_backend(fuzz_settings, |srv| async move {
        let key = srv.key(true).await;
        // A valid character split across two fragments is fine.
        let (mut ws, _) = srv.connect(&key.api_key, "").await;
        let whole = json!({"type": "user_input", "text": "split €"}).to_string();
        let cut = whole.find('€').unwrap() + 1;
        ws.send(raw_text(&whole.as_bytes()[..cut], Data::Text, false))
            .await
            .unwrap();
        ws.send(raw_text(&whole.as_bytes()[cut..], Data::Continue, true))
            .await
            .unwrap();
        let echo = recv_json(&mut ws).await;
        assert_eq!(echo["message"]["content"], "split €", "{echo}");
        ws.close(None).await.unwrap();
        let _ = recv_close(&mut ws).await;

        let bad: [(&str, Vec<u8>); 5] = [
            (
                "invalid byte",
                b"{\"type\":\"user_input\",\"text\":\"\xff\"}".to_vec(),
            ),
            (
                "overlong NUL",
                b"{\"type\":\"user_input\",\"text\":\"\xc0\x80\"}".to_vec(),
            ),
            (
                "UTF-8 surrogate",
                b"{\"type\":\"user_input\",\"text\":\"\xed\xa0\x80\"}".to_vec(),
            ),
            (
                "cut at the end",
                b"{\"type\":\"user_input\",\"text\":\"\xe2\x82".to_vec(),
            ),
            ("past U+10FFFF", b"\xf4\x90\x80\x80".to_vec()),
        ];
        for (what, bytes) in bad {
            let (mut ws, meta) = srv.connect(&key.api_key, "").await;
            send_json(&mut ws, json!({"type": "user_input", "text": "before"})).await;
            assert_eq!(recv_json(&mut ws).await["message"]["content"], "before");
            ws.send(raw_text(&bytes, Data::Text, true)).await.unwrap();
            let err = recv_json(&mut ws).await;
            assert_eq!(err["type"], "error", "{what}: {err}");
            assert_eq!(err["code"], "E0101", "{what}: {err}");
            assert_eq!(err["slug"], "invalid_message", "{what}: {err}");
            assert!(
                err["message"].as_str().unwrap().contains("UTF-8"),
                "{what}: {err}"
            );
            assert_eq!(recv_close(&mut ws).await, Some(1007), "{what}");
            let chat_id = meta["chat_id"].as_str().unwrap();
            let (status, chat) = srv
                .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}"))
                .await;
            assert_eq!(status, 200, "{chat}");
            assert_eq!(chat["status"], "ERROR", "{what}: {chat}");
            let events = srv.all_events(&key.api_key, chat_id, 100).await;
            assert_eq!(
                types(&events),
                ["CHAT_START_MESSAGE", "USER_MESSAGE", "CHAT_END_MESSAGE"],
                "{what}"
            );
            let end: Value = serde_json::from_str(events[2]["metadata"].as_str().unwrap()).unwrap();
            assert_eq!(end["status"], "ERROR", "{what}: {end}");
            assert_eq!(end["reason"], "invalid_utf8", "{what}: {end}");
        }
        srv
    })
    .await;
}

/// Reads what a message got before `sentinel`'s echo, as JSON; `Err` with what was seen if
/// the session ended instead.
async fn answer_then_sentinel(ws: &mut Ws, sentinel: &str) -> Result<Vec<Value>, String> {
    send_json(ws, json!({"type": "user_input", "text": sentinel})).await;
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                if v["type"] == "user_message" && v["message"]["content"] == sentinel {
                    return Ok(got);
                }
                got.push(v);
            }
            Ok(Some(Ok(Message::Close(c)))) => {
                return Err(format!(
                    "the server closed the socket ({c:?}) after {got:?}"
                ))
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(format!("socket error {e} after {got:?}")),
            Ok(None) => return Err(format!("the socket ended after {got:?}")),
            Err(_) => return Err(format!("no echo of the sentinel within 30 s after {got:?}")),
        }
    }
}

/// Checks one text-carrying message: refused with `E0101` naming `field`, or answered and
/// stored with the text unchanged; either way the session goes on and nothing else is
/// stored. `stored`: the event type holding the text, and whether the text is the event's
/// `message_text` (else it is inside the JSON of `message_text` or `metadata`).
async fn text_round_trip(
    srv: &TestServer,
    key: &str,
    msg: Value,
    field: &str,
    text: &str,
    stored: (&str, bool),
) -> Result<String, String> {
    let (mut ws, meta) = srv.connect(key, "").await;
    let chat_id = meta["chat_id"].as_str().unwrap().to_string();
    let label = format!("{} {field}", msg["type"].as_str().unwrap());
    send_json(&mut ws, msg.clone()).await;
    let answer = answer_then_sentinel(&mut ws, "sentinel")
        .await
        .map_err(|e| format!("{label}: the session did not survive: {e}"))?;
    ws.close(None).await.unwrap();
    let _ = recv_close(&mut ws).await;
    let (status, _) = srv.get(key, &format!("/v0/evi/chats/{chat_id}")).await;
    if status != 200 {
        return Err(format!("{label}: GET chat answered {status}"));
    }
    let events = srv.all_events(key, &chat_id, 100).await;
    let kinds = types(&events);
    if let [err] = &answer[..] {
        if err["type"] == "error" {
            let message = err["message"].as_str().unwrap_or("");
            if err["code"] != "E0101" || !message.contains(field) {
                return Err(format!(
                    "{label}: refused, but not with E0101 naming `{field}`: {err}"
                ));
            }
            if kinds != ["CHAT_START_MESSAGE", "USER_MESSAGE", "CHAT_END_MESSAGE"] {
                return Err(format!("{label}: refused, yet stored {kinds:?}"));
            }
            return Ok(format!("{label}: refused: {message}"));
        }
    }
    // user_input: its echo; assistant_input: its message and assistant_end; else nothing.
    let answered = match msg["type"].as_str().unwrap() {
        "user_input" => answer.len() == 1 && answer[0]["message"]["content"] == text,
        "assistant_input" => answer.len() == 2 && answer[0]["message"]["content"] == text,
        _ => answer.is_empty(),
    };
    if !answered {
        return Err(format!("{label}: answered with {answer:?}"));
    }
    let Some(ev) = events.iter().find(|e| e["type"] == stored.0) else {
        return Err(format!(
            "{label}: accepted, but no {} event: {kinds:?}",
            stored.0
        ));
    };
    let round_trips = if stored.1 {
        ev["message_text"] == text
    } else {
        // Inside the stored JSON (settings in message_text, tool answers in metadata).
        [&ev["message_text"], &ev["metadata"]].iter().any(|s| {
            let v: Value = serde_json::from_str(s.as_str().unwrap_or("")).unwrap_or_default();
            v[field] == text || v["variables"][field] == text
        })
    };
    if !round_trips {
        return Err(format!("{label}: accepted, but stored as {ev}"));
    }
    Ok(format!("{label}: accepted and stored unchanged"))
}

/// The text-carrying fields with a NUL inside. NUL is being made a refusal (`E0101` naming
/// the field); storing it unchanged is acceptable too. Both backends must agree with one of
/// the two, and the session must go on.
#[tokio::test]
async fn fuzz_nul_text_is_refused_or_stored_identically() {
    on_each_backend(fuzz_settings, |srv| async move {
        let key = srv.key(true).await;
        let nul = "before\u{0}after";
        let lone = "\u{0}";
        let cases: Vec<(Value, &str, (&str, bool))> = vec![
            (
                json!({"type": "user_input", "text": nul}),
                "text",
                ("USER_MESSAGE", true),
            ),
            (
                json!({"type": "user_input", "text": lone}),
                "text",
                ("USER_MESSAGE", true),
            ),
            (
                json!({"type": "assistant_input", "text": nul}),
                "text",
                ("AGENT_MESSAGE", true),
            ),
            (
                json!({"type": "tool_response", "tool_call_id": "t", "content": nul}),
                "content",
                ("FUNCTION_CALL_RESPONSE", true),
            ),
            (
                json!({"type": "tool_error", "tool_call_id": "t", "error": nul}),
                "error",
                ("FUNCTION_CALL_RESPONSE", true),
            ),
            (
                json!({"type": "session_settings", "system_prompt": nul}),
                "system_prompt",
                ("SYSTEM_PROMPT", true),
            ),
            (
                json!({"type": "tool_response", "tool_call_id": nul, "content": "c"}),
                "tool_call_id",
                ("FUNCTION_CALL_RESPONSE", false),
            ),
            (
                json!({"type": "session_settings", "voice_id": nul}),
                "voice_id",
                ("SESSION_SETTINGS", false),
            ),
            (
                json!({"type": "session_settings", "variables": {"v": nul}}),
                "v",
                ("SESSION_SETTINGS", false),
            ),
        ];
        let mut report = Vec::new();
        let mut failures = Vec::new();
        for (msg, field, stored) in cases {
            let text = if msg["text"] == lone { lone } else { nul };
            match text_round_trip(&srv, &key.api_key, msg, field, text, stored).await {
                Ok(r) => report.push(r),
                Err(e) => failures.push(e),
            }
        }
        // Connect-time settings carry text too: refused (E0200 naming the parameter, no chat)
        // or stored unchanged.
        let mut req = srv
            .ws_url("session_settings[system_prompt]=before%00after")
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("X-Hume-Api-Key", key.api_key.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let first = recv_json(&mut ws).await;
        if first["type"] == "chat_metadata" {
            ws.close(None).await.unwrap();
            let _ = recv_close(&mut ws).await;
            let chat_id = first["chat_id"].as_str().unwrap();
            let events = srv.all_events(&key.api_key, chat_id, 100).await;
            match events.iter().find(|e| e["type"] == "SYSTEM_PROMPT") {
                Some(e) if e["message_text"] == nul => {
                    report.push("connect-time system_prompt: stored unchanged".into())
                }
                other => failures.push(format!(
                    "connect-time system_prompt: accepted, but stored as {other:?}"
                )),
            }
        } else if first["code"] == "E0200"
            && first["message"]
                .as_str()
                .unwrap_or("")
                .contains("system_prompt")
        {
            report.push(format!("connect-time system_prompt: refused: {first}"));
        } else {
            failures.push(format!(
                "connect-time system_prompt: neither a chat nor E0200 naming the parameter: \
                 {first}, then {:?}",
                recv_until_close(&mut ws, Duration::from_secs(5)).await
            ));
        }
        let backend = backend_name(&srv);
        println!("NUL texts on {backend}: {report:#?}");
        assert!(
            failures.is_empty(),
            "NUL texts on {backend}:\n{}",
            failures.join("\n")
        );
        srv
    })
    .await;
}

/// Which backend a test server runs on, for failure messages.
fn backend_name(srv: &TestServer) -> &'static str {
    if srv.running().state.settings.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

/// `n` distinct words: text whose full-text index entry is large.
fn distinct_words(n: usize) -> String {
    (0..n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A message under the default limit (16 MiB) whose text has 200,000 distinct words
/// (1.5 MB). PostgreSQL indexes `to_tsvector('simple', message_text)`, which cannot exceed
/// 1 MiB; the message must still be stored unchanged or refused with a client error, and
/// the session must go on.
#[tokio::test]
async fn fuzz_huge_text_is_stored_or_refused() {
    on_each_backend(
        |s| s.engine.client.speak = false,
        |srv| async move {
            let key = srv.key(true).await;
            let text = distinct_words(200_000);
            let mut failures = Vec::new();
            for (msg, stored) in [
                (json!({"type": "user_input", "text": text}), "USER_MESSAGE"),
                (
                    json!({"type": "assistant_input", "text": text}),
                    "AGENT_MESSAGE",
                ),
            ] {
                if let Err(e) =
                    text_round_trip(&srv, &key.api_key, msg, "text", &text, (stored, true)).await
                {
                    failures.push(e.chars().take(600).collect::<String>());
                }
            }
            assert!(
                failures.is_empty(),
                "huge texts on {}:\n{}",
                backend_name(&srv),
                failures.join("\n")
            );
            srv
        },
    )
    .await;
}

/// One account's message that the database cannot store must not end the chats of another
/// account whose writes happened to share its batch (group commit). Three sessions of one
/// account chat without pause while another account sends texts PostgreSQL refuses (a NUL,
/// a text whose search index entry is over 1 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_a_bad_write_ends_no_other_accounts_chat() {
    on_each_backend(
        |s| s.engine.client.speak = false,
        |srv| async move {
            let attacker = srv.key(true).await;
            let victim = srv.key(true).await;
            let stop = Arc::new(AtomicBool::new(false));
            let victims: Vec<_> = (0..3)
                .map(|_| {
                    tokio::spawn(bystander(
                        srv.ws_url(&format!("api_key={}", victim.api_key)),
                        stop.clone(),
                        Duration::ZERO,
                    ))
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let huge = distinct_words(200_000);
            let mut attacker_saw = Vec::new();
            for text in [
                "nul \u{0} inside",
                huge.as_str(),
                "nul \u{0} again",
                huge.as_str(),
            ] {
                let (mut ws, _) = srv.connect(&attacker.api_key, "").await;
                send_json(&mut ws, json!({"type": "user_input", "text": text})).await;
                let seen = answer_then_sentinel(&mut ws, "sentinel").await;
                attacker_saw.push(match seen {
                    Ok(a) => format!("{} answers", a.len()),
                    Err(e) => e.chars().take(300).collect(),
                });
                let _ = ws.close(None).await;
                let _ = recv_until_close(&mut ws, Duration::from_secs(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.store(true, Ordering::Relaxed);
            let mut failures = Vec::new();
            for v in victims {
                let (chat_id, acked, problems) = v.await.unwrap();
                failures.extend(problems);
                let (_, chat) = srv
                    .get(&victim.api_key, &format!("/v0/evi/chats/{chat_id}"))
                    .await;
                if chat["status"] != "USER_ENDED" {
                    failures.push(format!(
                        "the other account's chat {chat_id} ended as {} after {} echoes",
                        chat["status"],
                        acked.len()
                    ));
                }
            }
            assert!(
                failures.is_empty(),
                "{}: the attacker saw {attacker_saw:?}; the other account's sessions:\n{}",
                backend_name(&srv),
                failures.join("\n")
            );
            srv
        },
    )
    .await;
}

/// Frames that break the WebSocket protocol itself (a reserved opcode, a control frame
/// over 125 bytes, a continuation with no message to continue, a new message inside a
/// fragmented one): the client is told (`E0101`), the connection closes with 1002 (RFC 6455)
/// and the chat ends as `ERROR` with reason `protocol_error`.
#[tokio::test]
async fn fuzz_protocol_violations_end_the_chat() {
    on_each_backend(fuzz_settings, |srv| async move {
        let key = srv.key(true).await;
        let violations: Vec<(&str, Vec<Message>)> = vec![
            (
                "reserved data opcode",
                vec![Message::Frame(Frame::message(
                    b"{}".to_vec(),
                    OpCode::Data(Data::Reserved(3)),
                    true,
                ))],
            ),
            (
                "ping over 125 bytes",
                vec![Message::Frame(Frame::ping(vec![7u8; 126]))],
            ),
            (
                "fragmented ping",
                vec![Message::Frame({
                    let mut f = Frame::ping(b"p".to_vec());
                    f.header_mut().is_final = false;
                    f
                })],
            ),
            (
                "continuation of nothing",
                vec![raw_text(b"{}", Data::Continue, true)],
            ),
            (
                "new message inside a fragmented one",
                vec![
                    raw_text(b"{\"type\":", Data::Text, false),
                    raw_text(b"{}", Data::Text, true),
                ],
            ),
        ];
        for (what, frames) in violations {
            let (mut ws, meta) = srv.connect(&key.api_key, "").await;
            send_json(&mut ws, json!({"type": "user_input", "text": "before"})).await;
            assert_eq!(recv_json(&mut ws).await["message"]["content"], "before");
            for f in frames {
                let _ = ws.send(f).await;
            }
            // An `error` naming the violation, then the close with 1002.
            let mut told = None;
            let mut code = None;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
                match m {
                    Message::Text(t) => {
                        told = Some(serde_json::from_str::<Value>(t.as_str()).unwrap())
                    }
                    Message::Close(c) => {
                        code = Some(c.map_or(1005, |c| u16::from(c.code)));
                        break;
                    }
                    _ => {}
                }
            }
            let told = told.unwrap_or_else(|| panic!("{what}: no error before the close"));
            assert_eq!(told["code"], "E0101", "{what}: {told}");
            assert!(
                told["message"]
                    .as_str()
                    .unwrap()
                    .contains("WebSocket protocol"),
                "{what}: {told}"
            );
            assert_eq!(code, Some(1002), "{what}");
            let chat_id = meta["chat_id"].as_str().unwrap();
            let mut chat = Value::Null;
            for _ in 0..50 {
                chat = srv
                    .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}"))
                    .await
                    .1;
                if chat["status"] != "ACTIVE" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let events = srv.all_events(&key.api_key, chat_id, 100).await;
            println!(
                "{what}: close {code:?}, status {}, end {}",
                chat["status"],
                events.last().unwrap()["metadata"]
            );
            assert_eq!(chat["status"], "ERROR", "{what}: {chat}");
            let end: Value =
                serde_json::from_str(events.last().unwrap()["metadata"].as_str().unwrap()).unwrap();
            assert_eq!(end["reason"], "protocol_error", "{what}: {end}");
            assert_eq!(
                types(&events),
                ["CHAT_START_MESSAGE", "USER_MESSAGE", "CHAT_END_MESSAGE"],
                "{what}"
            );
        }
        srv
    })
    .await;
}
