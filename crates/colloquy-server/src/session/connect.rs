//! Query parameters of the chat socket (spec §6.2), including connect-time
//! `session_settings[...]` in bracket notation.

use colloquy_wire::socket::SessionSettings;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Validated connect-time parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectParams {
    /// `config_id` (UUID, canonical form).
    pub config_id: Option<String>,
    /// `config_version`.
    pub config_version: Option<i64>,
    /// `resumed_chat_group_id`.
    pub resumed_chat_group_id: Option<Uuid>,
    /// `verbose_transcription`.
    pub verbose_transcription: bool,
    /// `event_limit`.
    pub event_limit: Option<u32>,
    /// `allow_connection`.
    pub allow_connection: bool,
    /// Connect-time session settings, if any `session_settings[...]` was given.
    pub session_settings: Option<SessionSettings>,
}

/// Top-level keys accepted inside `session_settings[...]`.
const SETTINGS_KEYS: [&str; 9] = [
    "audio",
    "context",
    "custom_session_id",
    "event_limit",
    "language_model_api_key",
    "metadata",
    "system_prompt",
    "variables",
    "voice_id",
];

fn parse_bool(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "True" | "1" => Ok(true),
        "false" | "False" | "0" => Ok(false),
        _ => Err(format!(
            "query parameter {name} must be true or false (got `{v}`)"
        )),
    }
}

fn parse_int(name: &str, v: &str) -> Result<i64, String> {
    v.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("{name} must be a whole number, 0 or greater (got `{v}`)"))
}

impl ConnectParams {
    /// Parses the decoded query pairs; unknown parameters (SDK telemetry) are ignored.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut p = ConnectParams::default();
        let mut settings = Map::new();
        for (k, v) in pairs {
            if k.contains('\0') || v.contains('\0') {
                return Err(format!(
                    "query parameter `{}` contains a NUL character (%00), which cannot be \
                     stored; remove it",
                    k.replace('\0', "\\0")
                ));
            }
            match k.as_str() {
                "config_id" => {
                    p.config_id = Some(
                        Uuid::parse_str(v)
                            .map_err(|_| format!("config_id must be a UUID (got `{v}`)"))?
                            .to_string(),
                    )
                }
                "config_version" => p.config_version = Some(parse_int("config_version", v)?),
                "resumed_chat_group_id" => {
                    p.resumed_chat_group_id = Some(Uuid::parse_str(v).map_err(|_| {
                        format!("resumed_chat_group_id must be a chat group id (a UUID), got `{v}`")
                    })?)
                }
                "verbose_transcription" => p.verbose_transcription = parse_bool(k, v)?,
                "allow_connection" => p.allow_connection = parse_bool(k, v)?,
                "event_limit" => {
                    p.event_limit = Some(
                        u32::try_from(parse_int("event_limit", v)?)
                            .map_err(|_| "event_limit is too large".to_string())?,
                    )
                }
                "voice_id" => {
                    settings.insert("voice_id".into(), Value::String(v.clone()));
                }
                _ if k.starts_with("session_settings[") => insert_setting(&mut settings, k, v)?,
                _ => {}
            }
        }
        if let Some(v) = p.config_version {
            if p.config_id.is_none() {
                return Err(format!(
                    "config_version={v} was given without config_id; pass the config's id too"
                ));
            }
            if !(0..=crate::platform::MAX_VERSION).contains(&v) {
                return Err(format!(
                    "config_version must be a version number from 0 to {} (got {v})",
                    crate::platform::MAX_VERSION
                ));
            }
        }
        if !settings.is_empty() {
            let parsed: SessionSettings = serde_json::from_value(Value::Object(settings))
                .map_err(|e| format!("invalid session_settings query parameters: {e}"))?;
            super::settings::validate(&parsed)?;
            p.session_settings = Some(parsed);
        }
        Ok(p)
    }
}

/// Places `session_settings[a][b]=v` into the JSON tree, typing the known numeric keys.
fn insert_setting(root: &mut Map<String, Value>, key: &str, value: &str) -> Result<(), String> {
    let rest = &key["session_settings".len()..];
    let mut path = Vec::new();
    let mut s = rest;
    while !s.is_empty() {
        let inner = s
            .strip_prefix('[')
            .and_then(|t| t.split_once(']'))
            .ok_or_else(|| format!("malformed query parameter `{key}`: use session_settings[key] or session_settings[key][subkey]"))?;
        if inner.0.is_empty() {
            return Err(format!(
                "malformed query parameter `{key}`: empty [] segment"
            ));
        }
        path.push(inner.0.to_string());
        s = inner.1;
    }
    if path.is_empty() || path.len() > 2 {
        return Err(format!(
            "malformed query parameter `{key}`: use session_settings[key] or session_settings[key][subkey]"
        ));
    }
    if !SETTINGS_KEYS.contains(&path[0].as_str()) {
        return Err(format!(
            "unknown session setting `{}`; accepted: {}",
            path[0],
            SETTINGS_KEYS.join(", ")
        ));
    }
    let typed = match (path[0].as_str(), path.get(1).map(String::as_str)) {
        ("audio", Some("channels" | "sample_rate")) | ("event_limit", None) => Value::from(
            parse_int(&format!("session_settings[{}]", path.join("][")), value)?,
        ),
        _ => Value::String(value.to_string()),
    };
    match path.as_slice() {
        [leaf] => {
            root.insert(leaf.clone(), typed);
        }
        [parent, leaf] => {
            let entry = root
                .entry(parent.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            match entry {
                Value::Object(m) => {
                    m.insert(leaf.clone(), typed);
                }
                _ => {
                    return Err(format!(
                        "session_settings[{parent}] is given both as a value and with subkeys"
                    ))
                }
            }
        }
        _ => unreachable!("path length checked above"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    #[test]
    fn parses_the_python_sdk_wire_form() {
        let q = "config_id=1b4e28ba-2fa1-11d2-883f-0016d3cca427&config_version=2&event_limit=50&verbose_transcription=true\
            &session_settings%5Baudio%5D%5Bchannels%5D=1&session_settings%5Baudio%5D%5Bencoding%5D=linear16\
            &session_settings%5Baudio%5D%5Bsample_rate%5D=16000&session_settings%5Bsystem_prompt%5D=Be%20kind\
            &session_settings%5Bvariables%5D%5Bage%5D=30.0&session_settings%5Bvariables%5D%5Bok%5D=true\
            &session_settings%5Bcontext%5D%5Btext%5D=hi&session_settings%5Bcontext%5D%5Btype%5D=persistent\
            &fernSdkLanguage=JavaScript";
        let p = ConnectParams::parse(&pairs(q)).unwrap();
        assert_eq!(p.config_version, Some(2));
        assert!(p.verbose_transcription);
        let s = p.session_settings.unwrap();
        let audio = s.audio.unwrap();
        assert_eq!((audio.channels, audio.sample_rate), (1, 16000));
        assert_eq!(s.system_prompt.as_deref(), Some("Be kind"));
        let vars = s.variables.unwrap();
        assert_eq!(vars["age"], Value::String("30.0".into()));
        assert_eq!(vars["ok"], Value::String("true".into()));
    }

    #[test]
    fn explains_bad_parameters() {
        let err = ConnectParams::parse(&pairs("resumed_chat_group_id=abc")).unwrap_err();
        assert!(err.contains("resumed_chat_group_id"), "{err}");
        let err = ConnectParams::parse(&pairs("session_settings[colour]=red")).unwrap_err();
        assert!(err.contains("unknown session setting `colour`"), "{err}");
        let err =
            ConnectParams::parse(&pairs("session_settings[audio][sample_rate]=fast")).unwrap_err();
        assert!(err.contains("sample_rate"), "{err}");
        let err = ConnectParams::parse(&pairs("session_settings[audio][encoding]=mp3&session_settings[audio][channels]=1&session_settings[audio][sample_rate]=8000")).unwrap_err();
        assert!(err.contains("linear16"), "{err}");
        assert!(ConnectParams::parse(&pairs("fernSdkVersion=1&api_key=x")).is_ok());
    }

    #[test]
    fn nul_characters_are_refused_naming_the_parameter() {
        let pairs = vec![(
            "session_settings[system_prompt]".to_string(),
            "a\0b".to_string(),
        )];
        let err = ConnectParams::parse(&pairs).unwrap_err();
        assert!(err.contains("`session_settings[system_prompt]`"), "{err}");
        assert!(err.contains("NUL"), "{err}");
    }
}
