//! Unit tests of [`super`]: every refusal names its field and what it accepts.

use super::*;
use crate::platform::configs::CONFIG_OBJECTS;
use crate::platform::parse_body;

fn message(e: ApiError) -> (String, String) {
    match e {
        ApiError::BadRequest { code, message } => (code.to_string(), message),
        other => panic!("expected a 400, got {other:?}"),
    }
}

fn refused(json: &str) -> (String, String) {
    let posted: PostedConfigVersion = match parse_body(json.as_bytes(), CONFIG_OBJECTS) {
        Ok(p) => p,
        Err(e) => return message(e),
    };
    message(check_config(posted, None, None).expect_err(json))
}

fn accepted(json: &str) -> CheckedConfig {
    let posted: PostedConfigVersion = parse_body(json.as_bytes(), CONFIG_OBJECTS).expect(json);
    check_config(posted, None, None).expect(json)
}

#[test]
fn names() {
    assert!(check_name("name", "Weather").is_ok());
    assert!(check_name("name", &"é".repeat(256)).is_ok());
    let (_, m) = message(check_name("name", &"x".repeat(257)).unwrap_err());
    assert_eq!(m, "name must be at most 256 characters long (got 257)");
    let (code, m) = message(check_name("name", " \t\u{feff}").unwrap_err());
    assert_eq!(
        (code.as_str(), m.as_str()),
        ("invalid_parameter", "name must not be empty or blank")
    );
    assert!(check_name("name", "").is_err());
}

#[test]
fn tool_names_and_parameters() {
    for ok in ["get_weather", "a", "A-9_z", &"x".repeat(64)] {
        assert!(check_tool_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", "get weather", "naïve", "a.b", &"x".repeat(65), "a\n"] {
        let (_, m) = message(check_tool_name(bad).unwrap_err());
        assert!(m.contains("^[a-zA-Z0-9_-]{1,64}$"), "{m}");
    }
    assert!(check_parameters(r#"{"type":"object","properties":{}}"#).is_ok());
    let (code, m) = message(check_parameters("[1]").unwrap_err());
    assert_eq!(code, "invalid_json");
    assert!(
        m.starts_with("parameters must be a JSON Schema object"),
        "{m}"
    );
    assert!(m.contains("not an object (got [1])"), "{m}");
    let (_, m) = message(check_parameters("{nope").unwrap_err());
    assert!(m.contains("it is not JSON"), "{m}");
}

#[test]
fn webhook_urls() {
    for ok in [
        "https://example.com/hook",
        "http://127.0.0.1:8080",
        "HTTPS://a",
        "https://a/b@c?d#e",
    ] {
        assert!(check_webhook_url("u", ok).is_ok(), "{ok}");
    }
    for bad in [
        "ftp://a",
        "https://",
        "https:///x",
        "https://a b",
        "example.com",
        "https://@a",
        "https://a\u{7f}",
        "https://\u{4}a",
        "https://a/\u{3000}",
    ] {
        let (_, m) = message(check_webhook_url("webhooks[0].url", bad).unwrap_err());
        assert!(
            m.starts_with("webhooks[0].url must be an http:// or https:// URL"),
            "{m}"
        );
    }
    assert!(check_webhook_url("u", &format!("https://a/{}", "x".repeat(2040))).is_err());
    // As in the OpenAPI pattern: U+0085 is no `\s` in ECMAScript, U+FEFF is.
    assert!(check_webhook_url("u", "https://a/\u{85}").is_ok());
    assert!(check_webhook_url("u", "https://a/\u{feff}").is_err());
}

#[test]
fn body_errors_name_the_field_and_the_allowed_values() {
    let (_, m) = refused(r#"{"evi_version":"2"}"#);
    assert!(
        m.starts_with("`evi_version`: unknown variant `2`, expected `3` or `4-mini`"),
        "{m}"
    );
    let (_, m) = refused(r#"{}"#);
    assert!(m.contains("missing field `evi_version`"), "{m}");
    let (_, m) = refused(r#"{"evi_version":"3","builtin_tools":[{"name":"dance"}]}"#);
    assert!(
        m.starts_with(
            "`builtin_tools[0].name`: unknown variant `dance`, expected `web_search` or `hang_up`"
        ),
        "{m}"
    );
    let (_, m) =
        refused(r#"{"evi_version":"3","webhooks":[{"url":"https://a","events":["chat_paused"]}]}"#);
    assert!(m.contains("`webhooks[0].events[0]`: unknown variant `chat_paused`, expected one of `chat_started`, `chat_ended`, `tool_call`"), "{m}");
    let (_, m) = refused(r#"{"evi_version":"3","voice":{"name":"x","provider":"ELEVEN"}}"#);
    assert!(
        m.contains(
            "`voice.provider`: unknown variant `ELEVEN`, expected `HUME_AI` or `CUSTOM_VOICE`"
        ),
        "{m}"
    );
    let (_, m) = refused(r#"{"evi_version":"3","language_model":{"model_provider":"ACME"}}"#);
    assert!(
        m.contains("`language_model.model_provider`: unknown variant `ACME`"),
        "{m}"
    );
    let (_, m) = refused(r#"{"evi_version":"3","timeouts":{"inactivity":{"duration_secs":60}}}"#);
    assert!(
        m.contains("`timeouts.inactivity`: missing field `enabled`"),
        "{m}"
    );
    let (_, m) = refused(r#"{"evi_version":"3"} x"#);
    assert!(
        m.starts_with("the request body is not valid: trailing characters"),
        "{m}"
    );
}

#[test]
fn ranges() {
    let cases = [
        (r#""timeouts":{"inactivity":{"enabled":true,"duration_secs":29}}"#, "timeouts.inactivity.duration_secs must be between 30 and 1800 inclusive (got 29)"),
        (r#""timeouts":{"max_duration":{"enabled":false,"duration_secs":1801}}"#, "timeouts.max_duration.duration_secs must be between 30 and 1800 inclusive (got 1801)"),
        (r#""interruption":{"min_interruption_ms":49}"#, "interruption.min_interruption_ms must be between 50 and 2000 inclusive (got 49)"),
        (r#""interruption":{"min_interruption_ms":2001}"#, "interruption.min_interruption_ms must be between 50 and 2000 inclusive (got 2001)"),
        (r#""turn_detection":{"end_of_turn_silence_ms":499}"#, "turn_detection.end_of_turn_silence_ms must be between 500 and 3000 inclusive (got 499)"),
        (r#""turn_detection":{"prefix_padding_ms":1001}"#, "turn_detection.prefix_padding_ms must be between 0 and 1000 inclusive (got 1001)"),
        (r#""turn_detection":{"speech_detection_threshold":1.5}"#, "turn_detection.speech_detection_threshold must be between 0 and 1 inclusive (got 1.5)"),
        (r#""language_model":{"temperature":-0.1}"#, "language_model.temperature must be between 0 and 1 inclusive (got -0.1)"),
        (r#""nudges":{"interval_secs":0}"#, "nudges.interval_secs must be between 1 and 1800 inclusive (got 0)"),
        (r#""prompt":{"id":"5bb7de05-c8fe-426a-8fcc-ba4fc4ce9f9c","version":-1}"#, "prompt.version must be between 0 and 2147483647 inclusive (got -1)"),
        (r#""tools":[{"id":"5bb7de05-c8fe-426a-8fcc-ba4fc4ce9f9c","version":-2}]"#, "tools[0].version must be between 0 and 2147483647 inclusive (got -2)"),
        (r#""tools":[{"id":"tid"}]"#, "tools[0].id must be a UUID (got \"tid\")"),
        (r#""webhooks":[{"url":"https://a","events":[]}]"#, "webhooks[0].events must name at least one of chat_started, chat_ended, tool_call"),
    ];
    for (field, expected) in cases {
        let (code, m) = refused(&format!(r#"{{"evi_version":"3",{field}}}"#));
        assert_eq!((code.as_str(), m.as_str()), ("invalid_parameter", expected));
    }
    let edges = accepted(
        r#"{"evi_version":"4-mini","timeouts":{"inactivity":{"enabled":true,"duration_secs":30},
        "max_duration":{"enabled":true,"duration_secs":1800}},"interruption":{"min_interruption_ms":50},
        "turn_detection":{"end_of_turn_silence_ms":3000,"prefix_padding_ms":0,"speech_detection_threshold":1.0},
        "language_model":{"temperature":0}}"#,
    );
    assert_eq!(edges.stored.evi_version, "4-mini");
}

#[test]
fn combinations() {
    let id = "5bb7de05-c8fe-426a-8fcc-ba4fc4ce9f9c";
    let cases = [
        (
            format!(r#""prompt":{{"id":"{id}","text":"hi"}}"#),
            "prompt: give either id",
        ),
        (r#""prompt":{}"#.to_string(), "prompt: give id"),
        (
            r#""prompt":{"text":"hi","version":1}"#.to_string(),
            "prompt.version goes with prompt.id",
        ),
        (
            format!(r#""prompt":{{"id":"{id}","prompt_expansion":{{"enabled":false}}}}"#),
            "prompt.prompt_expansion applies to a new prompt",
        ),
        (
            format!(r#""tools":[{{"id":"{id}"}},null,{{"id":"{id}","version":1}}]"#),
            "tools[2].id repeats tools[0].id",
        ),
        (
            r#""builtin_tools":[{"name":"hang_up"},{"name":"hang_up"}]"#.to_string(),
            "builtin_tools[1].name repeats hang_up",
        ),
    ];
    for (field, start) in cases {
        let (code, m) = refused(&format!(r#"{{"evi_version":"3",{field}}}"#));
        assert_eq!(code, INVALID_COMBINATION, "{m}");
        assert!(m.starts_with(start), "{m}");
    }
}

#[test]
fn a_full_config_is_stored_as_checked() {
    let tool = Uuid::new_v4();
    let c = accepted(&format!(
        r#"{{"evi_version":"3","prompt":{{"text":"You help.","prompt_expansion":{{"enabled":false}}}},
        "tools":[null,{{"id":"{tool}","version":2}}],"builtin_tools":[{{"name":"web_search"}},null],
        "nudges":{{"interval_secs":9}},"webhooks":[null,{{"url":"https://x.org/h","events":["tool_call"]}}]}}"#
    ));
    let new = c.new_prompt.clone().expect("a new prompt");
    assert_eq!(new.text, "You help.");
    assert_eq!(
        c.stored.prompt,
        Some(StoredRef {
            id: new.id,
            version: Some(0)
        })
    );
    assert_eq!(
        c.stored.tools,
        vec![StoredRef {
            id: tool,
            version: Some(2)
        }]
    );
    assert_eq!(
        c.references.len(),
        1,
        "the new prompt is referenced by the store itself"
    );
    assert_eq!(c.references[0].1, "tools[1].id");
    assert_eq!(c.stored.builtin_tools.len(), 1);
    assert_eq!(
        c.stored.nudges,
        Some(ReturnNudgeSpec {
            enabled: true,
            interval_secs: Some(9)
        })
    );
    assert_eq!(c.stored.webhooks.as_ref().unwrap().len(), 1);
    assert!(
        !c.stored.ellm_model.allow_short_responses,
        "new configs default to false"
    );
}

#[test]
fn allow_short_responses_is_inherited_unless_given() {
    let posted = |json: &str| parse_body::<PostedConfigVersion>(json.as_bytes(), &[""]).unwrap();
    let omitted = posted(r#"{"evi_version":"3"}"#);
    let given = posted(r#"{"evi_version":"3","ellm_model":{"allow_short_responses":false}}"#);
    let inherit = |p, prev| {
        check_config(p, prev, None)
            .unwrap()
            .stored
            .ellm_model
            .allow_short_responses
    };
    assert!(inherit(omitted.clone(), Some(true)));
    assert!(!inherit(omitted, None));
    assert!(!inherit(given, Some(true)));
}

#[test]
fn arrays_are_not_objects_and_whole_numbers_may_have_a_zero_fraction() {
    let (_, m) = refused(r#"{"evi_version":"3","timeouts":[null,null]}"#);
    assert_eq!(m, "`timeouts`: invalid type: sequence, expected an object");
    let (_, m) = refused(r#"{"evi_version":"3","timeouts":{"inactivity":[true,60]}}"#);
    assert_eq!(
        m,
        "`timeouts.inactivity`: invalid type: sequence, expected an object"
    );
    let (_, m) =
        refused(r#"{"evi_version":"3","tools":[null,["5bb7de05-c8fe-426a-8fcc-ba4fc4ce9f9c"]]}"#);
    assert_eq!(m, "`tools[1]`: invalid type: sequence, expected an object");
    let (_, m) = refused(r#"["3"]"#);
    assert_eq!(
        m,
        "the request body is not valid: it must be a JSON object, not an array"
    );
    let c = accepted(r#"{"evi_version":"3","interruption":{"min_interruption_ms":807.0},"x":[1]}"#);
    assert_eq!(
        c.stored.interruption.unwrap().min_interruption_ms,
        Some(807)
    );
    let (_, m) = refused(r#"{"evi_version":"3","interruption":{"min_interruption_ms":807.5}}"#);
    assert_eq!(
        m,
        "`interruption.min_interruption_ms`: invalid value: 807.5, expected a whole number"
    );
    let (_, m) = refused(r#"{"evi_version":"3","nudges":{"interval_secs":"5"}}"#);
    assert!(
        m.starts_with("`nudges.interval_secs`: invalid type: string"),
        "{m}"
    );
}
