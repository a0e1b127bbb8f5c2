//! `colloquy emotions`: the prosody scores of the user's messages (`emotion_features`, a
//! stringified JSON object of emotion name → score), averaged, or as a per-message CSV.
//!
//! Messages typed with `user_input` carry no prosody; when no user message has scores the
//! command says so on stderr and exits 0 with nothing on stdout (`--json`: an empty result).

use super::output;
use super::target::Target;
use super::Connection;
use chrono::{Local, TimeZone};
use clap::Args;
use colloquy_wire::{EventType, ReturnChatEvent, EMOTION_NAMES};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};

/// Arguments of `colloquy emotions`.
#[derive(Args)]
pub struct EmotionsArgs {
    /// A chat id or a chat group id.
    id: String,
    /// How many emotions to print, strongest first.
    #[arg(long, default_value_t = 3, value_name = "N")]
    top: usize,
    /// Print every scored user message as CSV instead: timestamp, offset (seconds), text,
    /// one column per emotion.
    #[arg(long)]
    timeline: bool,
    /// Print JSON: {"id", "user_messages", "scored_messages", "top": [{"emotion", "score"}]},
    /// or with --timeline an array of {"timestamp", "offset_ms", "text", "scores"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

/// A user message and its scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    /// Epoch ms.
    pub timestamp: i64,
    /// Milliseconds since the start.
    pub offset_ms: i64,
    /// What the user said.
    pub text: String,
    /// Emotion name → score.
    pub scores: BTreeMap<String, f64>,
}

/// The `USER_MESSAGE` events that carry scores, in order.
pub fn scored_user_messages(events: &[ReturnChatEvent], start: i64) -> Vec<Scored> {
    events
        .iter()
        .filter(|e| e.event_type == EventType::UserMessage)
        .filter_map(|e| {
            Some(Scored {
                timestamp: e.timestamp,
                offset_ms: e.timestamp - start,
                text: e.message_text.clone().unwrap_or_default(),
                scores: colloquy_wire::emotion_scores(e.emotion_features.as_deref()?)?,
            })
        })
        .collect()
}

/// Each emotion's mean over the messages that score it, strongest first (ties by name).
pub fn averages(messages: &[Scored]) -> Vec<(String, f64)> {
    colloquy_wire::mean_emotions(messages.iter().map(|m| &m.scores))
}

/// The emotion columns: the known 48 in the API's order, then any others by name.
fn columns(messages: &[Scored]) -> Vec<String> {
    let mut seen: Vec<String> = EMOTION_NAMES
        .iter()
        .filter(|n| messages.iter().any(|m| m.scores.contains_key(**n)))
        .map(|n| n.to_string())
        .collect();
    let mut extra: Vec<String> = messages
        .iter()
        .flat_map(|m| m.scores.keys())
        .filter(|k| !EMOTION_NAMES.contains(&k.as_str()))
        .cloned()
        .collect();
    extra.sort();
    extra.dedup();
    seen.extend(extra);
    seen
}

/// One CSV field, quoted when it has to be (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The timeline CSV: `timestamp` (RFC 3339 in `tz`), `offset_s`, `text`, then one column per
/// emotion (empty when a message lacks that score).
pub fn timeline_csv<Tz: TimeZone>(messages: &[Scored], tz: &Tz) -> String
where
    Tz::Offset: Display,
{
    let cols = columns(messages);
    let mut out = String::from("timestamp,offset_s,text");
    for c in &cols {
        out.push(',');
        out.push_str(&csv_field(c));
    }
    out.push('\n');
    for m in messages {
        let _ = write!(
            out,
            "{},{:.3},{}",
            output::rfc3339_in(tz, m.timestamp),
            m.offset_ms as f64 / 1000.0,
            csv_field(&m.text)
        );
        for c in &cols {
            out.push(',');
            if let Some(v) = m.scores.get(c) {
                let _ = write!(out, "{v}");
            }
        }
        out.push('\n');
    }
    out
}

/// Runs `colloquy emotions`.
pub async fn run(args: EmotionsArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let target = Target::resolve(&client, &args.id).await?;
    let (kind, id) = (target.kind(), target.id().to_string());
    let start = target.start_timestamp();
    let events = target.events(&client).await?;
    let user_messages = events
        .iter()
        .filter(|e| e.event_type == EventType::UserMessage)
        .count();
    let scored = scored_user_messages(&events, start);
    if scored.is_empty() {
        eprintln!(
            "No emotion scores: none of the {user_messages} user message(s) of {kind} {id} \
             has any (typed text carries no prosody; scores come from spoken audio)."
        );
    }
    if args.timeline {
        if args.json {
            return output::print_json(&scored);
        }
        if !scored.is_empty() {
            output::print(&timeline_csv(&scored, &Local))?;
        }
        return Ok(());
    }
    let mut top = averages(&scored);
    top.truncate(args.top);
    if args.json {
        #[derive(Serialize)]
        struct Top {
            emotion: String,
            score: f64,
        }
        #[derive(Serialize)]
        struct Doc {
            id: String,
            user_messages: usize,
            scored_messages: usize,
            top: Vec<Top>,
        }
        return output::print_json(&Doc {
            id,
            user_messages,
            scored_messages: scored.len(),
            top: top
                .into_iter()
                .map(|(emotion, score)| Top { emotion, score })
                .collect(),
        });
    }
    if scored.is_empty() {
        return Ok(());
    }
    output::print(&summary(&top, scored.len(), user_messages))?;
    Ok(())
}

/// The human summary: a heading, then one `name  score` line per emotion.
pub fn summary(top: &[(String, f64)], scored: usize, user_messages: usize) -> String {
    let width = top
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "Top {} emotion(s), averaged over {scored} of {user_messages} user message(s):\n",
        top.len()
    );
    for (name, score) in top {
        let _ = writeln!(out, "  {name:<width$}  {score:.3}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use colloquy_wire::EventRole;

    fn user(ms: i64, text: &str, features: &str) -> ReturnChatEvent {
        ReturnChatEvent {
            id: format!("e{ms}"),
            chat_id: "c".into(),
            timestamp: 1_716_244_940_000 + ms,
            role: EventRole::User,
            event_type: EventType::UserMessage,
            message_text: Some(text.into()),
            emotion_features: Some(features.into()),
            metadata: Some(String::new()),
            related_event_id: None,
        }
    }

    fn sample() -> Vec<Scored> {
        scored_user_messages(
            &[
                user(1_000, "typed", ""),
                user(
                    2_000,
                    "Great, \"really\"",
                    r#"{"Joy": 0.8, "Anger": 0.1, "Calmness": 0.3}"#,
                ),
                user(
                    5_500,
                    "meh",
                    r#"{"Joy": 0.2, "Anger": 0.5, "Calmness": 0.3, "Zest": 1}"#,
                ),
                user(6_000, "broken", "not json"),
            ],
            1_716_244_940_000,
        )
    }

    #[test]
    fn only_messages_with_scores_count() {
        let s = sample();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].offset_ms, 2_000);
    }

    #[test]
    fn averages_rank_strongest_first() {
        let avg = averages(&sample());
        let names: Vec<&str> = avg.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Zest", "Joy", "Anger", "Calmness"]);
        assert!((avg[1].1 - 0.5).abs() < 1e-9);
        assert!((avg[2].1 - 0.3).abs() < 1e-9);
        assert_eq!(
            summary(&avg[1..3], 2, 4),
            "Top 2 emotion(s), averaged over 2 of 4 user message(s):\n  Joy    0.500\n  Anger  0.300\n"
        );
    }

    #[test]
    fn timeline_has_a_column_per_emotion() {
        assert_eq!(
            timeline_csv(&sample(), &Utc),
            "timestamp,offset_s,text,Anger,Calmness,Joy,Zest\n\
             2024-05-20T22:42:22.000+00:00,2.000,\"Great, \"\"really\"\"\",0.1,0.3,0.8,\n\
             2024-05-20T22:42:25.500+00:00,5.500,meh,0.5,0.3,0.2,1\n"
        );
    }
}
