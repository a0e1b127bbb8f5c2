//! `colloquy configs`: the account's EVI configs (the newest version of each), the versions
//! of one (`configs ID`), one version in full (`configs ID --version N`), and
//! `configs create --file config.json`, which posts the file as the body of
//! `POST /v0/evi/configs` (so configs can be kept in version control).

use super::output::{self, Table};
use super::Connection;
use anyhow::Context;
use clap::{Args, Subcommand};
use colloquy_client::{ClientError, Resource};
use colloquy_wire::{ReturnConfig, ReturnEventMessageSpec, ReturnTimeoutSpec};
use futures::TryStreamExt;
use std::path::PathBuf;

/// Arguments of `colloquy configs`.
#[derive(Args)]
// `--version` is the config version here, not the program's (`colloquy --version`).
#[command(args_conflicts_with_subcommands = true, disable_version_flag = true)]
pub struct ConfigsArgs {
    #[command(subcommand)]
    command: Option<ConfigsCommand>,
    /// List the versions of this config instead of the newest version of each.
    id: Option<String>,
    /// With a config id: print this version in full (prompt, tools, voice, timeouts, …).
    #[arg(long, value_name = "N", requires = "id")]
    version: Option<i64>,
    /// Print JSON (the API's `ReturnConfig` objects: an array, or one with --version).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

/// `colloquy configs create`.
#[derive(Subcommand)]
pub enum ConfigsCommand {
    /// Create a config from a JSON file: the body of `POST /v0/evi/configs`.
    Create(CreateArgs),
}

/// Arguments of `colloquy configs create`.
#[derive(Args)]
pub struct CreateArgs {
    /// The config as JSON, as the API takes it (`-` reads stdin).
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
    /// Print the created config as JSON (the API's `ReturnConfig`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

/// Runs `colloquy configs`.
pub async fn run(args: ConfigsArgs) -> anyhow::Result<()> {
    if let Some(ConfigsCommand::Create(create)) = args.command {
        return run_create(create).await;
    }
    let client = args.conn.client()?;
    match (&args.id, args.version) {
        (Some(id), Some(version)) => {
            let config = client.config_version(id, version).await.map_err(|e| {
                if e.is_not_found() {
                    anyhow::anyhow!("no config with id {id} and version {version} (404)")
                } else {
                    e.into()
                }
            })?;
            if args.json {
                return output::print_json(&config);
            }
            output::print(&details(&config, output::local_date_time))?;
            Ok(())
        }
        (id, _) => {
            let configs: Vec<ReturnConfig> = client.configs(id.as_deref()).try_collect().await?;
            if args.json {
                return output::print_json(&configs);
            }
            if configs.is_empty() {
                eprintln!("No configs.");
                return Ok(());
            }
            let t = match id {
                None => table(&configs, output::local_date_time),
                Some(_) => versions_table(&configs, output::local_date_time),
            };
            output::print(&t.render())?;
            Ok(())
        }
    }
}

async fn run_create(args: CreateArgs) -> anyhow::Result<()> {
    let shown = args.file.display().to_string();
    let text = if shown == "-" {
        std::io::read_to_string(std::io::stdin()).context("could not read the config from stdin")?
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("could not read {shown}"))?
    };
    let body: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{shown} is not valid JSON: {e}"))?;
    let client = args.conn.client()?;
    let created: ReturnConfig = client
        .create_resource(Resource::Configs, &body)
        .await
        .map_err(|e| match e {
            ClientError::Http {
                status: 400,
                code,
                message,
            } => anyhow::anyhow!(
                "the server refused the config in {shown} (400{}): {message}",
                code.map(|c| format!(" {c}")).unwrap_or_default()
            ),
            other => other.into(),
        })?;
    if args.json {
        return output::print_json(&created);
    }
    eprintln!(
        "Created config {} ({}), version {}.",
        created.name, created.id, created.version
    );
    output::print(&details(&created, output::local_date_time))?;
    Ok(())
}

/// The configs table (the newest version of each); `time` formats an epoch-ms instant.
pub fn table(configs: &[ReturnConfig], time: impl Fn(i64) -> String) -> Table {
    let mut t = Table::new(&[
        "CONFIG ID",
        "NAME",
        "VERSION",
        "MODIFIED",
        "PROMPT",
        "VOICE",
        "TOOLS",
    ]);
    for c in configs {
        t.row(vec![
            c.id.clone(),
            c.name.clone(),
            c.version.to_string(),
            time(c.modified_on),
            c.prompt
                .as_ref()
                .map(|p| output::excerpt(&p.text, 40))
                .unwrap_or_default(),
            c.voice.as_ref().map(|v| v.name.clone()).unwrap_or_default(),
            tool_names(c),
        ]);
    }
    t
}

/// The versions of one config.
pub fn versions_table(configs: &[ReturnConfig], time: impl Fn(i64) -> String) -> Table {
    let mut t = Table::new(&[
        "VERSION",
        "CREATED",
        "MODIFIED",
        "DESCRIPTION",
        "VOICE",
        "TOOLS",
    ]);
    for c in configs {
        t.row(vec![
            c.version.to_string(),
            time(c.created_on),
            time(c.modified_on),
            c.version_description.clone().unwrap_or_default(),
            c.voice.as_ref().map(|v| v.name.clone()).unwrap_or_default(),
            tool_names(c),
        ]);
    }
    t
}

fn tool_names(c: &ReturnConfig) -> String {
    let mut names: Vec<&str> = c.tools.iter().map(|t| t.name.as_str()).collect();
    names.extend(c.builtin_tools.iter().map(|b| b.name.as_str()));
    names.join(", ")
}

fn event_message(m: Option<&ReturnEventMessageSpec>) -> String {
    match m {
        Some(m) if m.enabled => match m.text.as_deref().filter(|t| !t.is_empty()) {
            Some(text) => format!("on: {text:?}"),
            None => "on (no text)".into(),
        },
        _ => "off".into(),
    }
}

fn timeout(t: &ReturnTimeoutSpec) -> String {
    let secs = t
        .duration_secs
        .map(|s| format!("{s} s"))
        .unwrap_or_else(|| "default duration".into());
    if t.enabled {
        format!("on, after {secs}")
    } else {
        format!("off ({secs})")
    }
}

fn or_default<T: std::fmt::Display>(v: Option<T>, unit: &str) -> String {
    v.map(|v| format!("{v}{unit}"))
        .unwrap_or_else(|| "default".into())
}

/// One config version in full, as `Label: value` lines (the prompt's text indented below).
pub fn details(c: &ReturnConfig, time: impl Fn(i64) -> String) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut add = |label: &str, value: String| lines.push((label.to_string(), value));
    add("Config", format!("{} ({})", c.name, c.id));
    add("Version", c.version.to_string());
    add(
        "Description",
        c.version_description.clone().unwrap_or_default(),
    );
    add("Created", time(c.created_on));
    add("Modified", time(c.modified_on));
    add("EVI version", c.evi_version.clone());
    add(
        "Prompt",
        match &c.prompt {
            Some(p) => format!(
                "{} ({}) version {} {}",
                p.name, p.id, p.version, p.version_type
            ),
            None => "none".into(),
        },
    );
    add(
        "Voice",
        match &c.voice {
            Some(v) => format!("{} ({}, id {})", v.name, v.provider, v.id),
            None => "none".into(),
        },
    );
    add(
        "Language model",
        match &c.language_model {
            Some(m) => {
                let mut parts: Vec<String> = Vec::new();
                if let Some(p) = m.model_provider {
                    parts.push(p.to_string());
                }
                if let Some(r) = &m.model_resource {
                    parts.push(r.clone());
                }
                if let Some(t) = m.temperature {
                    parts.push(format!("temperature {t}"));
                }
                parts.join(", ")
            }
            None => "none".into(),
        },
    );
    add(
        "Short responses",
        if c.ellm_model.allow_short_responses {
            "on"
        } else {
            "off"
        }
        .into(),
    );
    let tools: Vec<String> = c
        .tools
        .iter()
        .map(|t| {
            format!(
                "{} ({}) version {} {}: {}; parameters {}",
                t.name,
                t.id,
                t.version,
                t.version_type,
                t.description.as_deref().unwrap_or(""),
                output::one_line(&t.parameters)
            )
        })
        .collect();
    add(
        "Tools",
        if tools.is_empty() {
            "none".into()
        } else {
            tools.join("\n")
        },
    );
    let builtin: Vec<&str> = c.builtin_tools.iter().map(|b| b.name.as_str()).collect();
    add(
        "Built-in tools",
        if builtin.is_empty() {
            "none".into()
        } else {
            builtin.join(", ")
        },
    );
    let e = &c.event_messages;
    add("Greeting", event_message(e.on_new_chat.as_ref()));
    add(
        "On inactivity",
        event_message(e.on_inactivity_timeout.as_ref()),
    );
    add(
        "On max duration",
        event_message(e.on_max_duration_timeout.as_ref()),
    );
    add("Inactivity timeout", timeout(&c.timeouts.inactivity));
    add("Max duration", timeout(&c.timeouts.max_duration));
    add(
        "Nudges",
        match &c.nudges {
            Some(n) if n.enabled => format!("on, every {}", or_default(n.interval_secs, " s")),
            Some(_) => "off".into(),
            None => "not set".into(),
        },
    );
    add(
        "Interruption",
        match &c.interruption {
            Some(i) => format!("minimum {}", or_default(i.min_interruption_ms, " ms")),
            None => "not set".into(),
        },
    );
    add(
        "Turn detection",
        match &c.turn_detection {
            Some(t) => format!(
                "silence {}, prefix padding {}, threshold {}",
                or_default(t.end_of_turn_silence_ms, " ms"),
                or_default(t.prefix_padding_ms, " ms"),
                or_default(t.speech_detection_threshold, "")
            ),
            None => "not set".into(),
        },
    );
    let hooks: Vec<String> = c
        .webhooks
        .iter()
        .flatten()
        .map(|w| {
            let events: Vec<&str> = w.events.iter().map(|e| e.as_str()).collect();
            format!("{} ({})", w.url, events.join(", "))
        })
        .collect();
    add(
        "Webhooks",
        if hooks.is_empty() {
            "none".into()
        } else {
            hooks.join("\n")
        },
    );
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (label, value) in &lines {
        for (i, line) in value.split('\n').enumerate() {
            let head = if i == 0 {
                format!("{label}:")
            } else {
                String::new()
            };
            out.push_str(format!("{head:<width$}  {line}").trim_end());
            out.push('\n');
        }
    }
    if let Some(p) = &c.prompt {
        out.push_str("\nPrompt text:\n");
        for line in p.text.lines() {
            out.push_str(format!("    {line}").trim_end());
            out.push('\n');
        }
    }
    out
}
