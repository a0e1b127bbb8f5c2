//! Validation of `session_settings` and the JSON recorded in `SESSION_SETTINGS` events.

use colloquy_wire::socket::SessionSettings;
use serde_json::Value;

/// Checks the values the schema alone cannot; the message says what to fix.
pub fn validate(s: &SessionSettings) -> Result<(), String> {
    if let Some(a) = &s.audio {
        if a.encoding != "linear16" {
            return Err(format!(
                "session_settings.audio.encoding must be `linear16` (got `{}`)",
                a.encoding
            ));
        }
        if !(1..=8).contains(&a.channels) {
            return Err(format!(
                "session_settings.audio.channels must be between 1 and 8 (got {})",
                a.channels
            ));
        }
        if !(8_000..=192_000).contains(&a.sample_rate) {
            return Err(format!(
                "session_settings.audio.sample_rate must be between 8000 and 192000 Hz (got {})",
                a.sample_rate
            ));
        }
    }
    if let Some(ctx) = &s.context {
        let Value::Object(m) = ctx else {
            return Err(
                "session_settings.context must be an object with `text` (or null to clear it)"
                    .into(),
            );
        };
        if !matches!(m.get("text"), Some(Value::String(_))) {
            return Err("session_settings.context.text must be a string".into());
        }
        match m.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t == "persistent" || t == "temporary" => {}
            Some(other) => {
                return Err(format!(
                "session_settings.context.type must be `persistent` or `temporary` (got {other})"
            ))
            }
        }
    }
    if let Some(vars) = &s.variables {
        for (k, v) in vars {
            if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                return Err(format!(
                    "session_settings.variables.{k} must be a string, number or boolean"
                ));
            }
        }
    }
    for t in s.tools.iter().flatten() {
        if t.tool_type != "function" && t.tool_type != "builtin" {
            return Err(format!(
                "tool `{}`: type must be `function` or `builtin` (got `{}`)",
                t.name, t.tool_type
            ));
        }
        if serde_json::from_str::<Value>(&t.parameters).is_err() {
            return Err(format!(
                "tool `{}`: parameters must be a JSON schema serialized as a string",
                t.name
            ));
        }
    }
    for b in s.builtin_tools.iter().flatten() {
        if b.name != "web_search" && b.name != "hang_up" {
            return Err(format!(
                "builtin tool `{}` does not exist; use `web_search` or `hang_up`",
                b.name
            ));
        }
    }
    Ok(())
}

/// What a recorded `language_model_api_key` is replaced with.
pub const REDACTED: &str = "[redacted]";

/// `message_text` of a `SESSION_SETTINGS` event: the settings in wire form with
/// `"type":"session_settings"`, every `variables` value as a string, and the
/// `language_model_api_key` redacted (chat history must not leak credentials).
pub fn event_text(s: &SessionSettings) -> String {
    let mut v = serde_json::to_value(s).unwrap_or_else(|_| Value::Object(Default::default()));
    if let Value::Object(m) = &mut v {
        m.insert("type".into(), Value::String("session_settings".into()));
        if m.contains_key("language_model_api_key") {
            m.insert(
                "language_model_api_key".into(),
                Value::String(REDACTED.into()),
            );
        }
        if let Some(Value::Object(vars)) = m.get_mut("variables") {
            for val in vars.values_mut() {
                if !val.is_string() {
                    *val = Value::String(val.to_string());
                }
            }
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_recorded_as_strings() {
        let s: SessionSettings = serde_json::from_str(
            r#"{"variables":{"name":"John","age":30.0,"n":30,"ok":true},"event_limit":5}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&event_text(&s)).unwrap();
        assert_eq!(v["type"], "session_settings");
        assert_eq!(v["variables"]["name"], "John");
        assert_eq!(v["variables"]["age"], "30.0");
        assert_eq!(v["variables"]["n"], "30");
        assert_eq!(v["variables"]["ok"], "true");
        assert_eq!(v["event_limit"], 5);
    }

    #[test]
    fn credentials_are_not_recorded() {
        let s: SessionSettings =
            serde_json::from_str(r#"{"language_model_api_key":"sk-secret","voice_id":"v"}"#)
                .unwrap();
        let text = event_text(&s);
        assert!(!text.contains("sk-secret"), "{text}");
        assert!(text.contains(REDACTED));
    }

    #[test]
    fn rejects_bad_values() {
        let s: SessionSettings =
            serde_json::from_str(r#"{"audio":{"channels":0,"sample_rate":16000}}"#).unwrap();
        assert!(validate(&s).unwrap_err().contains("channels"));
        let s: SessionSettings = serde_json::from_str(r#"{"variables":{"x":[1]}}"#).unwrap();
        assert!(validate(&s).unwrap_err().contains("variables.x"));
        let s: SessionSettings =
            serde_json::from_str(r#"{"context":{"text":"a","type":"forever"}}"#).unwrap();
        assert!(validate(&s).is_err());
    }
}
