//! `colloquy chats`: every chat of the account (filtered), as a table or JSON.

use super::output::{self, Table};
use super::Connection;
use clap::Args;
use colloquy_client::ChatListQuery;
use colloquy_wire::{ChatStatus, ReturnChat};
use futures::{StreamExt, TryStreamExt};

/// Arguments of `colloquy chats`.
#[derive(Args)]
pub struct ChatsArgs {
    /// Only chats with this status.
    #[arg(long, value_parser = super::chat_status_parser(), ignore_case = true)]
    status: Option<ChatStatus>,
    /// Only chats that used this config id.
    #[arg(long)]
    config_id: Option<String>,
    /// Only chats whose messages contain all of these words (full-text search).
    #[arg(long, value_name = "WORDS")]
    search: Option<String>,
    /// Print at most N chats.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Oldest first (default: newest first).
    #[arg(long)]
    oldest_first: bool,
    /// Print a JSON array of the chats (the API's `ReturnChat` objects).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

/// Runs `colloquy chats`.
pub async fn run(args: ChatsArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let query = ChatListQuery {
        status: args.status,
        config_id: args.config_id,
        search: args.search,
    };
    let chats: Vec<ReturnChat> = client
        .chats(&query, args.oldest_first)
        .take(args.limit.unwrap_or(usize::MAX))
        .try_collect()
        .await?;
    print(&chats, args.json)
}

/// Prints `chats` as JSON or as the table (`No chats.` on stderr when there are none).
pub fn print(chats: &[ReturnChat], json: bool) -> anyhow::Result<()> {
    if json {
        return output::print_json(chats);
    }
    if chats.is_empty() {
        eprintln!("No chats.");
        return Ok(());
    }
    output::print(&table(chats, output::local_date_time).render())?;
    Ok(())
}

/// The chats table; `time` formats an epoch-ms instant.
pub fn table(chats: &[ReturnChat], time: impl Fn(i64) -> String) -> Table {
    let mut t = Table::new(&[
        "CHAT ID", "STARTED", "DURATION", "EVENTS", "STATUS", "GROUP",
    ]);
    for c in chats {
        t.row(vec![
            c.id.clone(),
            time(c.start_timestamp),
            match c.end_timestamp {
                Some(end) => output::duration(end - c.start_timestamp),
                None => "-".into(),
            },
            c.event_count.map(|n| n.to_string()).unwrap_or_default(),
            c.status.to_string(),
            c.chat_group_id.clone(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_duration_events_status_and_group() {
        let chat = |id: &str, end: Option<i64>, status| ReturnChat {
            id: id.into(),
            chat_group_id: format!("g-{id}"),
            status,
            start_timestamp: 1_000,
            end_timestamp: end,
            event_count: Some(12),
            metadata: None,
            config: None,
        };
        let text = table(
            &[
                chat("c1", Some(65_500), ChatStatus::UserEnded),
                chat("c2", None, ChatStatus::Active),
            ],
            |ms| format!("t{ms}"),
        )
        .render();
        assert_eq!(
            text,
            "CHAT ID  STARTED  DURATION  EVENTS  STATUS      GROUP\n\
             c1       t1000    1:04      12      USER_ENDED  g-c1\n\
             c2       t1000    -         12      ACTIVE      g-c2\n"
        );
    }
}
