//! The client commands of `colloquy` (`chats`, `groups`, `events`, `transcript`, `emotions`,
//! `audio`, and `configs`, `prompts`, `tools`): they read chat history and the account's EVI
//! configs over the REST API of any server that speaks it — Colloquy, or the hosted EVI API —
//! through `colloquy-client`. `configs create` is the one command that writes.
//!
//! Output conventions: results go to stdout (a table or listing, or JSON with `--json`);
//! progress, notes and errors go to stderr. Every error is one line and exits non-zero.

mod audio;
mod chats;
mod configs;
mod emotions;
mod events;
mod groups;
mod output;
mod prompts;
mod target;
mod tools;
mod transcript;
mod tts;

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use colloquy_client::{Client, DEFAULT_BASE_URL};
use colloquy_wire::ChatStatus;

/// Where the server is and how to authenticate; flattened into every client command.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// Base URL of the server: Colloquy, or https://api.hume.ai.
    #[arg(long, env = "COLLOQUY_BASE_URL", default_value = DEFAULT_BASE_URL)]
    base_url: String,
    /// API key, sent as the X-Hume-Api-Key header.
    #[arg(long, env = "HUME_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

impl Connection {
    /// A client for these settings; the key is required.
    fn client(&self) -> anyhow::Result<Client> {
        let key = self
            .api_key
            .clone()
            .filter(|k| !k.trim().is_empty())
            .context("no API key: pass --api-key or set HUME_API_KEY")?;
        Ok(Client::new(&self.base_url, Some(key))?)
    }
}

/// The client subcommands (flattened into the top-level command list).
#[derive(Subcommand)]
pub enum ClientCommand {
    /// List chats, newest first (a table, or JSON with --json).
    Chats(chats::ChatsArgs),
    /// List chat groups, newest first; or, given a group id, the chats of that group.
    Groups(groups::GroupsArgs),
    /// List the events of a chat or chat group: offset, role, type, text.
    Events(events::EventsArgs),
    /// Write the transcript of a chat or chat group (txt, json, vtt or srt).
    Transcript(transcript::TranscriptArgs),
    /// Average the emotion scores of the user's messages and print the strongest.
    Emotions(emotions::EmotionsArgs),
    /// Reconstruct and download the audio (MP4) of a chat or of every chat of a group.
    Audio(audio::AudioArgs),
    /// List EVI configs; given an id, its versions (`--version N`: one in full); or
    /// `configs create --file config.json`.
    Configs(configs::ConfigsArgs),
    /// List prompts (the newest version of each); given an id, its versions.
    Prompts(prompts::PromptsArgs),
    /// List user-defined tools (the newest version of each); given an id, its versions.
    Tools(tools::ToolsArgs),
    /// Speak text with a voice of the library (POST /v0/tts/file) into an audio file.
    Tts(tts::TtsArgs),
    /// List the voices: the library's and your saved ones (a table, or JSON with --json).
    Voices(tts::VoicesArgs),
}

/// Runs a client command.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    let result = match cmd {
        ClientCommand::Chats(a) => chats::run(a).await,
        ClientCommand::Groups(a) => groups::run(a).await,
        ClientCommand::Events(a) => events::run(a).await,
        ClientCommand::Transcript(a) => transcript::run(a).await,
        ClientCommand::Emotions(a) => emotions::run(a).await,
        ClientCommand::Audio(a) => audio::run(a).await,
        ClientCommand::Configs(a) => configs::run(a).await,
        ClientCommand::Prompts(a) => prompts::run(a).await,
        ClientCommand::Tools(a) => tools::run(a).await,
        ClientCommand::Tts(a) => tts::run_tts(a).await,
        ClientCommand::Voices(a) => tts::run_voices(a).await,
    };
    match result {
        // `colloquy chats | head`: the reader left; that is not a failure.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `--status` values: the wire spellings, any case.
fn chat_status_parser() -> impl TypedValueParser<Value = ChatStatus> {
    PossibleValuesParser::new(ChatStatus::ALL.iter().map(|s| s.as_str())).map(|s| {
        s.to_ascii_uppercase()
            .parse::<ChatStatus>()
            .expect("a possible value")
    })
}
