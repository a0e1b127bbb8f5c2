//! `colloquy transcript`: the user and assistant messages of a chat or chat group, as text,
//! JSON, or WebVTT / SRT captions timed from the chat's start (so they line up with the
//! chat's reconstructed MP4; for a group, from the start of its first chat).

use super::output;
use super::target::Target;
use super::Connection;
use anyhow::Context;
use chrono::{Local, TimeZone};
use clap::{Args, ValueEnum};
use colloquy_wire::{EventType, ReturnChatEvent};
use serde::Serialize;
use std::fmt::{Display, Write as _};
use std::path::PathBuf;

/// A cue lasts until the next message starts, but never longer than this.
pub const MAX_CUE_MS: i64 = 10_000;
/// Length of a cue with nothing after it to end it (last message, same-millisecond messages).
pub const DEFAULT_CUE_MS: i64 = 3_000;

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `[date time] User: text`, one line per message (local time).
    Txt,
    /// A JSON object with the messages, their timestamps and offsets.
    Json,
    /// WebVTT captions.
    Vtt,
    /// SubRip captions.
    Srt,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Txt => "txt",
            Format::Json => "json",
            Format::Vtt => "vtt",
            Format::Srt => "srt",
        }
    }
}

/// Arguments of `colloquy transcript`.
#[derive(Args)]
pub struct TranscriptArgs {
    /// A chat id or a chat group id.
    id: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Txt)]
    format: Format,
    /// Output file [default: transcript_<ID>.<format>]; `-` for stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<String>,
    #[command(flatten)]
    conn: Connection,
}

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Speaker {
    /// A `USER_MESSAGE`.
    User,
    /// An `AGENT_MESSAGE`.
    Assistant,
}

impl Speaker {
    fn as_str(self) -> &'static str {
        match self {
            Speaker::User => "User",
            Speaker::Assistant => "Assistant",
        }
    }
}

/// One message of the transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    /// The chat it was said in.
    pub chat_id: String,
    /// The event it comes from.
    pub event_id: String,
    /// Epoch ms.
    pub timestamp: i64,
    /// Milliseconds since the chat (or the group's first chat) started.
    pub offset_ms: i64,
    /// `User` or `Assistant`.
    pub speaker: Speaker,
    /// What was said.
    pub text: String,
}

/// The `USER_MESSAGE` and `AGENT_MESSAGE` events, in order, with offsets from `start`.
pub fn messages(events: &[ReturnChatEvent], start: i64) -> Vec<Message> {
    events
        .iter()
        .filter_map(|e| {
            let speaker = match e.event_type {
                EventType::UserMessage => Speaker::User,
                EventType::AgentMessage => Speaker::Assistant,
                _ => return None,
            };
            Some(Message {
                chat_id: e.chat_id.clone(),
                event_id: e.id.clone(),
                timestamp: e.timestamp,
                offset_ms: e.timestamp - start,
                speaker,
                text: e.message_text.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// `[2024-05-20 15:42:20] User: text` per message, times in `tz`; each message on one line.
pub fn to_txt<Tz: TimeZone>(messages: &[Message], tz: &Tz) -> String
where
    Tz::Offset: Display,
{
    let mut out = String::new();
    for m in messages {
        let _ = writeln!(
            out,
            "[{}] {}: {}",
            output::date_time_in(tz, m.timestamp),
            m.speaker.as_str(),
            output::one_line(&m.text)
        );
    }
    out
}

/// The JSON transcript: the id, its kind, when it started, and the messages.
pub fn to_json(kind: &str, id: &str, start: i64, messages: &[Message]) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        id: &'a str,
        kind: &'a str,
        start_timestamp: i64,
        messages: &'a [Message],
    }
    let mut s = serde_json::to_string_pretty(&Doc {
        id,
        kind: if kind == "chat" { "chat" } else { "chat_group" },
        start_timestamp: start,
        messages,
    })
    .expect("plain data serialises");
    s.push('\n');
    s
}

/// Start and end (ms from the start) of each message's caption: from its offset until the
/// next message's (or the chat's end for the last one), at most [`MAX_CUE_MS`]; when that
/// leaves no time (same instant, or no end known), [`DEFAULT_CUE_MS`].
pub fn cue_times(messages: &[Message], end_offset: Option<i64>) -> Vec<(i64, i64)> {
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let start = m.offset_ms.max(0);
            let next = match messages.get(i + 1) {
                Some(n) => Some(n.offset_ms),
                None => end_offset,
            };
            let end = match next {
                Some(n) if n > start => n.min(start + MAX_CUE_MS),
                _ => start + DEFAULT_CUE_MS,
            };
            (start, end)
        })
        .collect()
}

/// `HH:MM:SS.mmm` (VTT) or `HH:MM:SS,mmm` (SRT).
fn cue_clock(ms: i64, sep: char) -> String {
    let (s, milli) = (ms / 1000, ms % 1000);
    format!(
        "{:02}:{:02}:{:02}{sep}{milli:03}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Caption text: no blank lines (a blank line ends a cue in both formats).
fn cue_text(m: &Message) -> String {
    let text: Vec<&str> = m
        .text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!("{}: {}", m.speaker.as_str(), text.join("\n"))
}

/// WebVTT captions; `end_offset` is the chat's end (ms from the start), if it has ended.
pub fn to_vtt(messages: &[Message], end_offset: Option<i64>) -> String {
    let mut out = String::from("WEBVTT\n");
    for (i, (m, (start, end))) in messages
        .iter()
        .zip(cue_times(messages, end_offset))
        .enumerate()
    {
        let text = cue_text(m)
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let _ = write!(
            out,
            "\n{}\n{} --> {}\n{text}\n",
            i + 1,
            cue_clock(start, '.'),
            cue_clock(end, '.')
        );
    }
    out
}

/// SubRip captions; `end_offset` as for [`to_vtt`].
pub fn to_srt(messages: &[Message], end_offset: Option<i64>) -> String {
    let mut out = String::new();
    for (i, (m, (start, end))) in messages
        .iter()
        .zip(cue_times(messages, end_offset))
        .enumerate()
    {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{}\n{} --> {}\n{}",
            i + 1,
            cue_clock(start, ','),
            cue_clock(end, ','),
            cue_text(m)
        );
    }
    out
}

/// Runs `colloquy transcript`.
pub async fn run(args: TranscriptArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let target = Target::resolve(&client, &args.id).await?;
    let (kind, id) = (target.kind(), target.id().to_string());
    let start = target.start_timestamp();
    let end_offset = target.end_timestamp().map(|e| e - start);
    let events = target.events(&client).await?;
    let messages = messages(&events, start);
    let text = match args.format {
        Format::Txt => to_txt(&messages, &Local),
        Format::Json => to_json(kind, &id, start, &messages),
        Format::Vtt => to_vtt(&messages, end_offset),
        Format::Srt => to_srt(&messages, end_offset),
    };
    if messages.is_empty() {
        eprintln!("note: {kind} {id} has no user or assistant messages");
    }
    match args.output.as_deref() {
        Some("-") => output::print(&text)?,
        other => {
            let path = match other {
                Some(p) => PathBuf::from(p),
                None => PathBuf::from(format!("transcript_{id}.{}", args.format.extension())),
            };
            std::fs::write(&path, text)
                .with_context(|| format!("could not write {}", path.display()))?;
            eprintln!(
                "Wrote {} message(s) of {kind} {id} to {}",
                messages.len(),
                path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use colloquy_wire::EventRole;

    const START: i64 = 1_716_244_940_000; // 2024-05-20 22:42:20 UTC

    fn event(ms: i64, ty: EventType, text: &str) -> ReturnChatEvent {
        ReturnChatEvent {
            id: format!("e{ms}"),
            chat_id: "c1".into(),
            timestamp: START + ms,
            role: match ty {
                EventType::AgentMessage => EventRole::Agent,
                EventType::ChatStartMessage => EventRole::System,
                _ => EventRole::User,
            },
            event_type: ty,
            message_text: Some(text.into()),
            emotion_features: Some(String::new()),
            metadata: Some(String::new()),
            related_event_id: None,
        }
    }

    fn sample() -> Vec<Message> {
        messages(
            &[
                event(0, EventType::ChatStartMessage, ""),
                event(1_250, EventType::UserMessage, "Hello <there> & you"),
                event(4_000, EventType::AgentMessage, "Hi!\n\nHow can I help?"),
                event(4_000, EventType::UserMessage, "Same instant"),
                event(30_000, EventType::SessionSettings, "{}"),
                event(30_000, EventType::UserMessage, "Later"),
            ],
            START,
        )
    }

    #[test]
    fn keeps_user_and_assistant_messages_only() {
        let m = sample();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].speaker, Speaker::User);
        assert_eq!(m[1].speaker, Speaker::Assistant);
        assert_eq!(m[0].offset_ms, 1_250);
    }

    #[test]
    fn txt_has_one_dated_line_per_message() {
        assert_eq!(
            to_txt(&sample(), &Utc),
            "[2024-05-20 22:42:21] User: Hello <there> & you\n\
             [2024-05-20 22:42:24] Assistant: Hi! How can I help?\n\
             [2024-05-20 22:42:24] User: Same instant\n\
             [2024-05-20 22:42:50] User: Later\n"
        );
    }

    #[test]
    fn cues_run_to_the_next_message_capped_and_never_empty() {
        assert_eq!(
            cue_times(&sample(), Some(31_000)),
            vec![
                (1_250, 4_000),
                (4_000, 7_000),   // next message at the same instant: default length
                (4_000, 14_000),  // capped at 10 s
                (30_000, 31_000), // ends with the chat
            ]
        );
        assert_eq!(cue_times(&sample()[3..], None), vec![(30_000, 33_000)]);
    }

    #[test]
    fn vtt_cues() {
        assert_eq!(
            to_vtt(&sample(), Some(31_000)),
            "WEBVTT\n\
             \n1\n00:00:01.250 --> 00:00:04.000\nUser: Hello &lt;there&gt; &amp; you\n\
             \n2\n00:00:04.000 --> 00:00:07.000\nAssistant: Hi!\nHow can I help?\n\
             \n3\n00:00:04.000 --> 00:00:14.000\nUser: Same instant\n\
             \n4\n00:00:30.000 --> 00:00:31.000\nUser: Later\n"
        );
        assert_eq!(to_vtt(&[], None), "WEBVTT\n");
    }

    #[test]
    fn srt_cues() {
        let long = Message {
            offset_ms: 3_723_004,
            ..sample()[3].clone()
        };
        assert_eq!(
            to_srt(&[sample()[0].clone(), long], None),
            "1\n00:00:01,250 --> 00:00:11,250\nUser: Hello <there> & you\n\
             \n2\n01:02:03,004 --> 01:02:06,004\nUser: Later\n"
        );
    }

    #[test]
    fn json_lists_messages_with_offsets() {
        let v: serde_json::Value =
            serde_json::from_str(&to_json("chat group", "g1", START, &sample()[..1])).unwrap();
        assert_eq!(v["kind"], "chat_group");
        assert_eq!(v["start_timestamp"], START);
        assert_eq!(v["messages"][0]["speaker"], "User");
        assert_eq!(v["messages"][0]["offset_ms"], 1_250);
        assert_eq!(v["messages"][0]["text"], "Hello <there> & you");
    }
}
