//! `colloquy events`: the events of a chat or chat group, one per line.

use super::output::{self, Table};
use super::target::Target;
use super::Connection;
use clap::Args;
use colloquy_wire::ReturnChatEvent;

/// Arguments of `colloquy events`.
#[derive(Args)]
pub struct EventsArgs {
    /// A chat id or a chat group id.
    id: String,
    /// Print at most N events.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print a JSON array of the events (the API's `ReturnChatEvent` objects).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

/// Runs `colloquy events`.
pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let target = Target::resolve(&client, &args.id).await?;
    let start = target.start_timestamp();
    let mut events = target.events(&client).await?;
    events.truncate(args.limit.unwrap_or(usize::MAX));
    if args.json {
        return output::print_json(&events);
    }
    if events.is_empty() {
        eprintln!("No events.");
        return Ok(());
    }
    output::print(&listing(&events, start))?;
    Ok(())
}

/// One line per event: offset from `start`, role, type, text. An event without text shows
/// its metadata instead (e.g. why the chat ended).
pub fn listing(events: &[ReturnChatEvent], start: i64) -> String {
    let mut t = Table::new(&["OFFSET", "ROLE", "TYPE", "TEXT"]);
    for e in events {
        let text = e
            .message_text
            .as_deref()
            .filter(|t| !t.is_empty())
            .or(e.metadata.as_deref())
            .unwrap_or("");
        t.row(vec![
            output::offset(e.timestamp - start),
            e.role.to_string(),
            e.event_type.to_string(),
            output::one_line(text),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquy_wire::{EventRole, EventType};

    fn event(ms: i64, role: EventRole, ty: EventType, text: &str, meta: &str) -> ReturnChatEvent {
        ReturnChatEvent {
            id: "e".into(),
            chat_id: "c".into(),
            timestamp: ms,
            role,
            event_type: ty,
            message_text: Some(text.into()),
            emotion_features: Some(String::new()),
            metadata: Some(meta.into()),
            related_event_id: None,
        }
    }

    #[test]
    fn listing_shows_offsets_and_text() {
        let text = listing(
            &[
                event(
                    1_000,
                    EventRole::System,
                    EventType::ChatStartMessage,
                    "",
                    "",
                ),
                event(
                    2_500,
                    EventRole::User,
                    EventType::UserMessage,
                    "Hi\nthere",
                    "",
                ),
                event(
                    62_000,
                    EventRole::System,
                    EventType::ChatEndMessage,
                    "",
                    r#"{"status":"USER_ENDED"}"#,
                ),
            ],
            1_000,
        );
        assert_eq!(
            text,
            "OFFSET     ROLE    TYPE                TEXT\n\
             +0:00.000  SYSTEM  CHAT_START_MESSAGE\n\
             +0:01.500  USER    USER_MESSAGE        Hi there\n\
             +1:01.000  SYSTEM  CHAT_END_MESSAGE    {\"status\":\"USER_ENDED\"}\n"
        );
    }
}
