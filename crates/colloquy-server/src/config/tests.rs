//! The layering, validation and example of the settings.
#![allow(clippy::result_large_err)] // figment::Jail's closure signature

use super::*;

#[test]
fn example_parses_to_the_defaults() {
    let parsed: Settings = toml::from_str(EXAMPLE_TOML).unwrap();
    let defaults = Settings::default();
    assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
}

#[test]
fn layers_apply_in_order() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "listen = \"0.0.0.0:1\"\ndata_dir = \"/from-file\"\n[chat]\nmax_duration_secs = 60\n",
        )?;
        jail.set_env("COLLOQUY_DATA_DIR", "/from-env");
        jail.set_env("COLLOQUY_CHAT__INACTIVITY_TIMEOUT_SECS", "7");
        let flags = FlagOverrides {
            listen: Some("127.0.0.1:9".into()),
            ..Default::default()
        };
        let s = Settings::load(Some(Path::new("c.toml")), &flags).unwrap();
        assert_eq!(s.listen, "127.0.0.1:9", "flag beats file");
        assert_eq!(s.data_dir, PathBuf::from("/from-env"), "env beats file");
        assert_eq!(s.chat.max_duration_secs, 60, "file beats default");
        assert_eq!(s.chat.inactivity_timeout_secs, 7);
        Ok(())
    });
}

#[test]
fn bad_values_are_explained() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("c.toml", "[log]\nformat = \"xml\"\n")?;
        let err = Settings::load(Some(Path::new("c.toml")), &Default::default()).unwrap_err();
        assert!(err.to_string().contains("log.format"), "{err}");
        jail.create_file("d.toml", "lisen = \"x\"\n")?;
        let err = Settings::load(Some(Path::new("d.toml")), &Default::default()).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        Ok(())
    });
}

#[test]
fn an_in_memory_sqlite_database_is_refused() {
    figment::Jail::expect_with(|jail| {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://x.db?mode=memory",
            "sqlite://",
        ] {
            jail.set_env("COLLOQUY_DATABASE_URL", url);
            let err = Settings::load(None, &Default::default()).unwrap_err();
            assert!(err.to_string().contains("in-memory SQLite"), "{url}: {err}");
            assert!(err.to_string().contains("give a file"), "{url}: {err}");
        }
        jail.set_env("COLLOQUY_DATABASE_URL", "sqlite://./memory.db?mode=rwc");
        Settings::load(None, &Default::default()).unwrap();
        Ok(())
    });
}

#[test]
fn client_mode_speaks_unless_turned_off() {
    figment::Jail::expect_with(|jail| {
        let s = Settings::load(None, &Default::default()).unwrap();
        assert!(s.engine.client.speak, "speaking is the default");
        jail.set_env("COLLOQUY_ENGINE__CLIENT__SPEAK", "false");
        let s = Settings::load(None, &Default::default()).unwrap();
        assert!(!s.engine.client.speak);
        Ok(())
    });
}

#[test]
fn engine_modes_per_key() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "[engine.relay]\nurl = \"wss://up.example/v0/evi/chat\"\napi_key = \"sekrit\"\n\
             [engine.keys.\"AbCd\"]\nmode = \"relay\"\n[engine.keys.\"abcd12\"]\nmode = \"client\"\n",
        )?;
        let s = Settings::load(Some(Path::new("c.toml")), &Default::default()).unwrap();
        let e = &s.engine;
        assert_eq!(e.mode_for(None), EngineMode::Client);
        assert_eq!(e.mode_for(Some("ABCDxyzw")), EngineMode::Relay);
        assert_eq!(
            e.mode_for(Some("abcd1234")),
            EngineMode::Client,
            "longest prefix wins"
        );
        assert_eq!(e.mode_for(Some("zzzz1234")), EngineMode::Client);
        assert!(!format!("{s:?}").contains("sekrit"));
        jail.set_env("COLLOQUY_ENGINE__MODE", "relay");
        let s = Settings::load(Some(Path::new("c.toml")), &Default::default()).unwrap();
        assert_eq!(s.engine.mode_for(Some("zzzz1234")), EngineMode::Relay);
        Ok(())
    });
}

#[test]
fn pipeline_needs_an_llm() {
    figment::Jail::expect_with(|jail| {
        // A key override needs the services too.
        jail.set_env("COLLOQUY_ENGINE__KEYS__ABCD1234__MODE", "pipeline");
        let err = Settings::load(None, &Default::default()).unwrap_err();
        assert!(err.to_string().contains("[engine.pipeline.llm]"), "{err}");
        jail.set_env("COLLOQUY_ENGINE__MODE", "pipeline");
        let err = Settings::load(None, &Default::default()).unwrap_err();
        assert!(err.to_string().contains("[engine.pipeline.llm]"), "{err}");
        jail.set_env("COLLOQUY_ENGINE__PIPELINE__LLM__BASE_URL", "ollama:11434");
        jail.set_env("COLLOQUY_ENGINE__PIPELINE__LLM__MODEL", "llama3.2");
        let err = Settings::load(None, &Default::default()).unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
        jail.set_env(
            "COLLOQUY_ENGINE__PIPELINE__LLM__BASE_URL",
            "http://127.0.0.1:11434/v1",
        );
        jail.set_env("COLLOQUY_ENGINE__PIPELINE__LLM__API_KEY", "sekrit");
        let s = Settings::load(None, &Default::default()).unwrap();
        assert_eq!(s.engine.mode, EngineMode::Pipeline);
        assert_eq!(s.engine.mode_for(Some("abcd1234XY")), EngineMode::Pipeline);
        let llm = s.engine.pipeline.llm.as_ref().unwrap();
        assert_eq!((llm.model.as_str(), llm.timeout_secs), ("llama3.2", 30));
        assert!(!format!("{s:?}").contains("sekrit"));
        Ok(())
    });
}

#[test]
fn relay_needs_a_url() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("COLLOQUY_ENGINE__MODE", "relay");
        let err = Settings::load(None, &Default::default()).unwrap_err();
        assert!(err.to_string().contains("engine.relay.url"), "{err}");
        jail.set_env("COLLOQUY_ENGINE__RELAY__URL", "https://x");
        let err = Settings::load(None, &Default::default()).unwrap_err();
        assert!(err.to_string().contains("ws://"), "{err}");
        jail.set_env("COLLOQUY_ENGINE__MODE", "pipeline");
        assert!(Settings::load(None, &Default::default()).is_err());
        Ok(())
    });
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(
        redact_url("postgres://u:pw@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    let s = Settings {
        database_url: Some("postgres://u:pw@h/db".into()),
        ..Default::default()
    };
    assert!(!format!("{s:?}").contains("pw"));
}
