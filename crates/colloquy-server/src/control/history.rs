//! A chat's history as an observer is sent it when it attaches: the stored events turned
//! back into the server messages the chat's client received (spec `evi-platform.md` §6.2):
//! final `user_message`s, `assistant_message`s, `tool_call`s, the client's `tool_response`
//! / `tool_error`, `user_interruption`s, and `assistant_end` where the user spoke after the
//! assistant. No audio and no interim transcripts.

use crate::engine::language_in_metadata;
use colloquy_storage::{EventRecord, PageRequest, Store, StoreResult};
use colloquy_wire::socket::{
    tool_result_content, ChatMessage, Inference, MillisecondInterval, ServerMessage,
};
use colloquy_wire::EventType;
use serde_json::{json, Value};
use uuid::Uuid;

/// The replayed messages of `chat_id`'s events before sequence number `before` (the chat
/// started at `start_ms`), oldest first, as JSON text.
pub async fn replay(
    store: &dyn Store,
    chat_id: Uuid,
    start_ms: i64,
    before: i64,
) -> StoreResult<Vec<String>> {
    let mut events = Vec::new();
    for number in 0.. {
        let page = PageRequest {
            number,
            size: 100,
            ascending: true,
        };
        let got = store.list_chat_events(chat_id, page).await?;
        let last = got.items.len() < 100;
        events.extend(got.items.into_iter().filter(|e| e.seq < before));
        if last || events.last().is_some_and(|e| e.seq + 1 >= before) {
            break;
        }
    }
    Ok(messages(&events, start_ms))
}

/// The messages of `events` (in order).
pub fn messages(events: &[EventRecord], start_ms: i64) -> Vec<String> {
    let mut out = Vec::new();
    let mut assistant_spoke = false;
    for e in events {
        let text = e.message_text.clone().unwrap_or_default();
        let user_turn = matches!(
            e.event_type,
            EventType::UserMessage | EventType::UserInterruption
        );
        if user_turn && std::mem::take(&mut assistant_spoke) {
            out.push(json!({"type": "assistant_end"}).to_string());
        }
        let msg: Option<Value> = match e.event_type {
            EventType::UserMessage => {
                let at = e.timestamp - start_ms;
                let prosody = e
                    .emotion_features
                    .as_deref()
                    .and_then(|f| serde_json::from_str::<Value>(f).ok())
                    .map(|scores| json!({ "scores": scores }));
                serde_json::to_value(ServerMessage::UserMessage {
                    message: ChatMessage::text("user", text),
                    models: Inference { prosody },
                    time: MillisecondInterval { begin: at, end: at },
                    from_text: false,
                    interim: false,
                    language: language_in_metadata(e.metadata.as_deref()),
                })
                .ok()
            }
            EventType::AgentMessage => {
                assistant_spoke = true;
                serde_json::to_value(ServerMessage::AssistantMessage {
                    id: e.id.to_string(),
                    message: ChatMessage::text("assistant", text),
                    models: Inference::default(),
                    from_text: false,
                    is_quick_response: false,
                    language: language_in_metadata(e.metadata.as_deref()),
                })
                .ok()
            }
            // Recorded as the message itself: the `tool_call`, after the assistant message
            // that carries it.
            EventType::FunctionCall => {
                let call = serde_json::from_str::<Value>(&text).ok();
                if let Some(call) = call.as_ref().filter(|c| c.get("type").is_some()) {
                    let carrier =
                        ServerMessage::assistant_tool_call(e.id.to_string(), call.clone());
                    if let Ok(m) = serde_json::to_value(carrier) {
                        out.push(m.to_string());
                    }
                }
                call
            }
            // The client's `tool_response` / `tool_error` (in the metadata), then the message
            // with role `tool` that carried it to the assistant.
            EventType::FunctionCallResponse => {
                let answer = e
                    .metadata
                    .as_deref()
                    .and_then(|m| serde_json::from_str::<Value>(m).ok())
                    .filter(|a| a.get("type").is_some());
                if let Some(answer) = answer {
                    out.push(answer.to_string());
                    let content = tool_result_content(&answer);
                    let at = e.timestamp - start_ms;
                    serde_json::to_value(ServerMessage::tool_result(answer, content, at)).ok()
                } else {
                    None
                }
            }
            EventType::UserInterruption => {
                let time = e
                    .metadata
                    .as_deref()
                    .and_then(|m| serde_json::from_str::<Value>(m).ok())
                    .and_then(|m| m["time"].as_i64())
                    .unwrap_or(e.timestamp);
                serde_json::to_value(ServerMessage::UserInterruption { time }).ok()
            }
            _ => None,
        };
        if let Some(m) = msg.filter(|m| m.get("type").is_some()) {
            out.push(m.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquy_wire::EventRole;

    fn ev(seq: i64, event_type: EventType, text: &str, metadata: Option<&str>) -> EventRecord {
        EventRecord {
            id: Uuid::now_v7(),
            chat_id: Uuid::nil(),
            seq,
            timestamp: 1_000 + seq * 10,
            role: EventRole::User,
            event_type,
            message_text: Some(text.into()),
            emotion_features: None,
            metadata: metadata.map(str::to_string),
            related_event_id: None,
        }
    }

    #[test]
    fn events_become_the_messages_the_client_received() {
        let call = r#"{"type":"tool_call","name":"f","parameters":"{}","tool_call_id":"c1","tool_type":"function","response_required":true}"#;
        let answer = r#"{"type":"tool_response","tool_call_id":"c1","content":"ok"}"#;
        let events = vec![
            ev(0, EventType::ChatStartMessage, "", None),
            ev(
                1,
                EventType::UserMessage,
                "hi",
                Some(r#"{"language":"en"}"#),
            ),
            ev(2, EventType::AgentMessage, "Hello.", None),
            ev(3, EventType::FunctionCall, call, None),
            ev(4, EventType::FunctionCallResponse, "ok", Some(answer)),
            ev(5, EventType::AgentMessage, "Done.", None),
            ev(6, EventType::UserInterruption, "", Some(r#"{"time":77}"#)),
        ];
        let types: Vec<Value> = messages(&events, 1_000)
            .iter()
            .map(|m| serde_json::from_str::<Value>(m).unwrap())
            .collect();
        let kinds: Vec<&str> = types.iter().map(|m| m["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "user_message",
                "assistant_message",
                "assistant_message",
                "tool_call",
                "tool_response",
                "user_message",
                "assistant_message",
                "assistant_end",
                "user_interruption"
            ]
        );
        assert_eq!(types[0]["message"]["content"], "hi");
        assert_eq!(types[0]["time"]["begin"], 10);
        assert_eq!(types[0]["language"], "en");
        assert!(types[1].get("language").is_none());
        assert_eq!(types[1]["id"], events[2].id.to_string());
        // The call's assistant message carries it; the answer reaches the assistant as a
        // message with role `tool`.
        let call: Value = serde_json::from_str(call).unwrap();
        assert_eq!(types[2]["id"], events[3].id.to_string());
        assert_eq!(
            types[2]["message"],
            json!({"role": "assistant", "content": "", "tool_call": call})
        );
        assert_eq!(types[3], call);
        assert_eq!(
            types[5]["message"],
            json!({"role": "tool", "content": "ok", "tool_result":
                serde_json::from_str::<Value>(answer).unwrap()})
        );
        assert_eq!(types[5]["time"]["begin"], 40);
        assert_eq!(types[8]["time"], 77);
    }
}
