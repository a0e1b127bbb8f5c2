//! Chat events as a readable conversation: user and assistant turns, tool calls and their
//! results, interruptions, pauses, and the chat's start and end.

use super::emotions::top_scores;
use super::format::{self, Stamp};
use colloquy_storage::EventRecord;
use colloquy_wire::EventType;
use serde_json::Value;
use std::collections::HashMap;
use uuid::Uuid;

/// One entry of a transcript.
pub struct Turn {
    /// Anchor id (`event-<uuid>`).
    pub anchor: String,
    /// Layout class: `user`, `assistant`, `tool` or `note`.
    pub kind: &'static str,
    /// Extra class (`is-error`, `is-interruption`, `is-pause`), or empty.
    pub flavor: &'static str,
    /// Who or what: "User", "Assistant", "Tool call · get_weather", …
    pub who: String,
    /// What was said or what happened.
    pub text: String,
    /// Longer content shown on demand (tool arguments, settings, the system prompt).
    pub detail: Option<Detail>,
    /// When.
    pub at: Stamp,
    /// Position in the chat (`01:23`), on single-chat transcripts.
    pub offset: Option<String>,
    /// The message's three strongest emotions, `("Joy", "0.62")`.
    pub emotions: Vec<(String, String)>,
    /// Set on the first turn of each chat in a group transcript.
    pub chat_start: Option<ChatMark>,
}

/// Collapsible extra content of a turn.
pub struct Detail {
    /// Summary line.
    pub label: &'static str,
    /// Preformatted content.
    pub body: String,
}

/// Marks where a chat begins in a group transcript.
pub struct ChatMark {
    /// 1-based position of the chat in its group (0 when unknown).
    pub number: usize,
    /// Link to the chat page.
    pub href: String,
    /// Whole chat id.
    pub chat_id: String,
    /// Short chat id.
    pub short_id: String,
}

/// Pretty JSON of a stringified JSON field, or the text itself if it is not JSON.
pub fn pretty_json(s: &str) -> String {
    match serde_json::from_str::<Value>(s) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| s.to_string()),
        Err(_) => s.to_string(),
    }
}

/// A JSON object held in a string field.
fn object(s: Option<&str>) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_str::<Value>(s.filter(|s| !s.is_empty())?).ok()? {
        Value::Object(o) => Some(o),
        _ => None,
    }
}

fn metadata(e: &EventRecord) -> Option<serde_json::Map<String, Value>> {
    object(e.metadata.as_deref())
}

/// The strongest three emotions of a message with prosody scores.
fn chips(e: &EventRecord) -> Vec<(String, String)> {
    e.emotion_features
        .as_deref()
        .and_then(colloquy_wire::emotion_scores)
        .map(|scores| {
            top_scores(&scores, 3)
                .into_iter()
                .map(|(name, v)| (name, format::score(v)))
                .collect()
        })
        .unwrap_or_default()
}

fn field<'a>(m: &'a Option<serde_json::Map<String, Value>>, key: &str) -> Option<&'a str> {
    m.as_ref()?.get(key)?.as_str().filter(|s| !s.is_empty())
}

fn text_of(e: &EventRecord) -> String {
    e.message_text.clone().unwrap_or_default()
}

/// Turns events into transcript entries. `chat_start_ms` gives single-chat offsets;
/// `chat_numbers` (group transcripts) marks where each chat starts.
pub fn turns(
    events: &[EventRecord],
    chat_start_ms: Option<i64>,
    chat_numbers: Option<&dyn Fn(Uuid) -> usize>,
) -> Vec<Turn> {
    // The assistant's prosody arrives as its own event, related to the message it scores.
    let assistant_prosody: HashMap<Uuid, Vec<(String, String)>> = events
        .iter()
        .filter(|e| e.event_type == EventType::AssistantProsody)
        .filter_map(|e| Some((e.related_event_id?, chips(e))))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let mut out = Vec::with_capacity(events.len());
    let mut last_chat: Option<Uuid> = None;
    for e in events {
        let chat_start = match chat_numbers {
            Some(number) if last_chat != Some(e.chat_id) => Some(ChatMark {
                number: number(e.chat_id),
                href: format!("/ui/chats/{}", e.chat_id),
                chat_id: e.chat_id.to_string(),
                short_id: format::short_id(&e.chat_id),
            }),
            _ => None,
        };
        last_chat = Some(e.chat_id);
        let Some(mut turn) = turn(e) else {
            // Not shown in the transcript (assistant prosody); still marks a chat start.
            if let Some(mark) = chat_start {
                out.push(note(e, "Chat", String::new(), Some(mark)));
            }
            continue;
        };
        if turn.kind == "assistant" && turn.emotions.is_empty() {
            if let Some(c) = assistant_prosody.get(&e.id) {
                turn.emotions = c.clone();
            }
        }
        turn.offset = chat_start_ms.map(|s| format::offset(e.timestamp - s));
        turn.chat_start = chat_start;
        out.push(turn);
    }
    out
}

fn base(e: &EventRecord, kind: &'static str, who: impl Into<String>, text: String) -> Turn {
    Turn {
        anchor: format!("event-{}", e.id),
        kind,
        flavor: "",
        who: who.into(),
        text,
        detail: None,
        at: format::stamp(e.timestamp),
        offset: None,
        emotions: Vec::new(),
        chat_start: None,
    }
}

fn note(e: &EventRecord, who: &str, text: String, mark: Option<ChatMark>) -> Turn {
    let mut t = base(e, "note", who, text);
    t.chat_start = mark;
    t
}

/// One event as a transcript entry; `None` for events not shown there.
fn turn(e: &EventRecord) -> Option<Turn> {
    let meta = metadata(e);
    let t = match e.event_type {
        EventType::UserMessage => {
            let mut t = base(e, "user", "User", text_of(e));
            t.emotions = chips(e);
            t
        }
        EventType::AgentMessage => {
            let mut t = base(e, "assistant", "Assistant", text_of(e));
            t.emotions = chips(e);
            t
        }
        EventType::FunctionCall => {
            // The call is in the metadata, or (relayed chats) the text is the `tool_call`
            // message itself.
            let text = text_of(e);
            let call = meta.clone().or_else(|| object(Some(&text)));
            let name = field(&call, "name")
                .or_else(|| field(&call, "tool_name"))
                .unwrap_or("tool");
            let args = field(&call, "parameters").map(pretty_json);
            let shown = match (args, &call) {
                (Some(args), _) => args,
                (None, None) if !text.is_empty() => text.clone(),
                _ => "(no arguments)".into(),
            };
            let mut t = base(e, "tool", format!("Tool call · {name}"), shown);
            if let Some(call) = &call {
                t.detail = Some(Detail {
                    label: "Call",
                    body: serde_json::to_string_pretty(call).unwrap_or_default(),
                });
            }
            t
        }
        EventType::FunctionCallResponse => {
            let is_error =
                field(&meta, "type") == Some("tool_error") || field(&meta, "error").is_some();
            let name = field(&meta, "tool_name")
                .or_else(|| field(&meta, "tool_call_id"))
                .unwrap_or("tool");
            let who = if is_error {
                format!("Tool error · {name}")
            } else {
                format!("Tool result · {name}")
            };
            let mut t = base(e, "tool", who, text_of(e));
            if is_error {
                t.flavor = "is-error";
            }
            if let Some(m) = &meta {
                t.detail = Some(Detail {
                    label: "Message",
                    body: serde_json::to_string_pretty(m).unwrap_or_default(),
                });
            }
            t
        }
        EventType::UserInterruption => {
            let mut t = base(
                e,
                "note",
                "Interruption",
                "The user interrupted the assistant".into(),
            );
            t.flavor = "is-interruption";
            t
        }
        EventType::PauseOnset => {
            let mut t = base(e, "note", "Pause", "Assistant paused".into());
            t.flavor = "is-pause";
            t
        }
        EventType::ResumeOnset => {
            let mut t = base(e, "note", "Resume", "Assistant resumed".into());
            t.flavor = "is-pause";
            t
        }
        EventType::ChatStartMessage => base(e, "note", "Start", "Chat started".into()),
        EventType::ChatEndMessage => {
            let status = field(&meta, "status");
            let reason = field(&meta, "reason");
            let text = match (status, reason) {
                (Some(s), Some(r)) => format!("Chat ended: {s} ({})", r.replace('_', " ")),
                (Some(s), None) => format!("Chat ended: {s}"),
                _ => "Chat ended".into(),
            };
            base(e, "note", "End", text)
        }
        EventType::UserRecordingStartMessage => base(
            e,
            "note",
            "Audio",
            "The user's microphone audio starts".into(),
        ),
        EventType::SessionSettings => {
            let mut t = base(e, "note", "Settings", "Session settings applied".into());
            t.detail = Some(Detail {
                label: "Settings",
                body: pretty_json(&text_of(e)),
            });
            t
        }
        EventType::SystemPrompt => {
            let mut t = base(e, "note", "Prompt", "System prompt set".into());
            t.detail = Some(Detail {
                label: "System prompt",
                body: text_of(e),
            });
            t
        }
        EventType::AssistantProsody => return None,
    };
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquy_wire::EventRole;

    fn ev(seq: i64, ty: EventType, text: &str, meta: &str, emotions: &str) -> EventRecord {
        EventRecord {
            id: Uuid::from_u128(seq as u128),
            chat_id: Uuid::from_u128(1000),
            seq,
            timestamp: 1_000_000 + seq * 1000,
            role: EventRole::User,
            event_type: ty,
            message_text: Some(text.into()),
            emotion_features: Some(emotions.into()),
            metadata: Some(meta.into()),
            related_event_id: None,
        }
    }

    #[test]
    fn conversation_reads_as_turns() {
        let events = vec![
            ev(0, EventType::ChatStartMessage, "", "", ""),
            ev(
                1,
                EventType::UserMessage,
                "hello there",
                "",
                r#"{"Joy":0.7,"Calmness":0.2,"Anger":0.01,"Awe":0.3}"#,
            ),
            ev(2, EventType::AgentMessage, "hi!", "", ""),
            ev(
                3,
                EventType::FunctionCallResponse,
                "sunny",
                r#"{"type":"tool_response","tool_call_id":"c1","tool_name":"weather","content":"sunny"}"#,
                "",
            ),
            ev(
                4,
                EventType::FunctionCallResponse,
                "boom",
                r#"{"type":"tool_error","tool_call_id":"c2","error":"boom"}"#,
                "",
            ),
            ev(5, EventType::PauseOnset, "", "", ""),
            ev(6, EventType::AssistantProsody, "", "", ""),
            ev(7, EventType::UserInterruption, "", "", ""),
            ev(
                8,
                EventType::ChatEndMessage,
                "",
                r#"{"status":"USER_ENDED","reason":"client_closed"}"#,
                "",
            ),
        ];
        let t = turns(&events, Some(1_000_000), None);
        assert_eq!(t.len(), 8, "prosody is not a turn");
        assert_eq!(
            (t[1].kind, t[1].who.as_str(), t[1].text.as_str()),
            ("user", "User", "hello there")
        );
        assert_eq!(t[1].offset.as_deref(), Some("00:01"));
        let names: Vec<_> = t[1].emotions.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Joy", "Awe", "Calmness"]);
        assert_eq!(t[1].emotions[0].1, "0.70");
        assert_eq!(t[2].kind, "assistant");
        assert_eq!(t[3].who, "Tool result · weather");
        assert_eq!(t[4].who, "Tool error · c2", "no tool name: its call id");
        assert_eq!(t[4].flavor, "is-error");
        assert_eq!(t[5].text, "Assistant paused");
        assert_eq!(t[6].flavor, "is-interruption");
        assert_eq!(t[7].text, "Chat ended: USER_ENDED (client closed)");
    }

    #[test]
    fn relayed_tool_calls_and_assistant_prosody() {
        let call = r#"{"type":"tool_call","name":"get_weather","parameters":"{\"city\":\"Paris\"}","tool_call_id":"c1"}"#;
        let mut prosody = ev(
            3,
            EventType::AssistantProsody,
            "",
            "",
            r#"{"Calmness":0.3}"#,
        );
        prosody.related_event_id = Some(Uuid::from_u128(4));
        let events = vec![
            ev(0, EventType::FunctionCall, call, "", ""),
            ev(
                1,
                EventType::AgentMessage,
                "It is sunny",
                "",
                r#"{"Joy":0.4,"Pride":0.2}"#,
            ),
            ev(2, EventType::FunctionCall, "", r#"{"name":"noop"}"#, ""),
            ev(4, EventType::AgentMessage, "Scored separately", "", ""),
            prosody,
        ];
        let t = turns(&events, None, None);
        assert_eq!(t.len(), 4);
        assert_eq!(
            t[3].emotions,
            [("Calmness".to_string(), "0.30".to_string())]
        );
        assert_eq!(t[0].who, "Tool call · get_weather");
        assert_eq!(t[0].text, "{\n  \"city\": \"Paris\"\n}");
        assert!(t[0]
            .detail
            .as_ref()
            .unwrap()
            .body
            .contains("\"tool_call_id\": \"c1\""));
        assert_eq!(t[1].emotions.len(), 2);
        assert_eq!(
            (t[2].who.as_str(), t[2].text.as_str()),
            ("Tool call · noop", "(no arguments)")
        );
    }

    #[test]
    fn group_transcripts_mark_each_chat() {
        let mut a = ev(0, EventType::ChatStartMessage, "", "", "");
        let mut b = ev(1, EventType::UserMessage, "one", "", "");
        let mut c = ev(2, EventType::ChatStartMessage, "", "", "");
        a.chat_id = Uuid::from_u128(1);
        b.chat_id = Uuid::from_u128(1);
        c.chat_id = Uuid::from_u128(2);
        let number = |id: Uuid| id.as_u128() as usize;
        let t = turns(&[a, b, c], None, Some(&number));
        assert_eq!(t[0].chat_start.as_ref().unwrap().number, 1);
        assert!(t[1].chat_start.is_none());
        assert_eq!(t[2].chat_start.as_ref().unwrap().number, 2);
        assert!(t[0].offset.is_none());
    }
}
