//! `colloquy groups`: every chat group of the account, or the chats of one group.

use super::output::{self, Table};
use super::Connection;
use clap::Args;
use colloquy_client::ChatGroupListQuery;
use colloquy_wire::{ChatStatus, ReturnChat, ReturnChatGroup};
use futures::{StreamExt, TryStreamExt};

/// Arguments of `colloquy groups`.
#[derive(Args)]
pub struct GroupsArgs {
    /// Show the chats of this group instead of listing groups.
    group_id: Option<String>,
    /// Only groups whose most recent chat used this config id.
    #[arg(long, conflicts_with = "group_id")]
    config_id: Option<String>,
    /// With a group id: only its chats with this status.
    #[arg(long, requires = "group_id", value_parser = super::chat_status_parser(), ignore_case = true)]
    status: Option<ChatStatus>,
    /// Print at most N rows.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Oldest first (default: newest first).
    #[arg(long)]
    oldest_first: bool,
    /// Print a JSON array (the API's `ReturnChatGroup`, or `ReturnChat` with a group id).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

/// Runs `colloquy groups`.
pub async fn run(args: GroupsArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let limit = args.limit.unwrap_or(usize::MAX);
    if let Some(group_id) = &args.group_id {
        let mut chats: Vec<ReturnChat> = client
            .chat_group_chats(group_id, args.status)
            .try_collect()
            .await?;
        if !args.oldest_first {
            chats.reverse();
        }
        chats.truncate(limit);
        return super::chats::print(&chats, args.json);
    }
    let query = ChatGroupListQuery {
        config_id: args.config_id,
    };
    let groups: Vec<ReturnChatGroup> = client
        .chat_groups(&query, args.oldest_first)
        .take(limit)
        .try_collect()
        .await?;
    if args.json {
        return output::print_json(&groups);
    }
    if groups.is_empty() {
        eprintln!("No chat groups.");
        return Ok(());
    }
    output::print(&table(&groups, output::local_date_time).render())?;
    Ok(())
}

/// The groups table; `time` formats an epoch-ms instant.
pub fn table(groups: &[ReturnChatGroup], time: impl Fn(i64) -> String) -> Table {
    let mut t = Table::new(&[
        "GROUP ID",
        "FIRST START",
        "LAST START",
        "CHATS",
        "ACTIVE",
        "LAST CHAT",
    ]);
    for g in groups {
        t.row(vec![
            g.id.clone(),
            time(g.first_start_timestamp),
            time(g.most_recent_start_timestamp),
            g.num_chats.to_string(),
            match g.active {
                Some(true) => "yes".into(),
                Some(false) => "no".into(),
                None => "".into(),
            },
            g.most_recent_chat_id.clone().unwrap_or_default(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_groups() {
        let g = ReturnChatGroup {
            id: "g1".into(),
            first_start_timestamp: 1,
            most_recent_start_timestamp: 2,
            num_chats: 3,
            most_recent_chat_id: Some("c9".into()),
            most_recent_config: None,
            active: Some(false),
        };
        assert_eq!(
            table(&[g], |ms| format!("t{ms}")).render(),
            "GROUP ID  FIRST START  LAST START  CHATS  ACTIVE  LAST CHAT\n\
             g1        t1           t2          3      no      c9\n"
        );
    }
}
