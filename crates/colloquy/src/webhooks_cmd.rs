//! `colloquy webhooks [--status S] [--json]` and `colloquy webhooks retry <id>`: the
//! webhook outbox of every account, read from the database directly (like `keys`).

use crate::StoreArgs;
use clap::{Args, Subcommand};
use colloquy_storage::{DeliveryFilter, DeliveryStatus, PageRequest};
use serde_json::json;
use uuid::Uuid;

/// `colloquy webhooks`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    command: Option<WebhooksCommand>,
    /// Only deliveries of this status: pending, delivered or failed.
    #[arg(long)]
    status: Option<String>,
    /// Only deliveries of this chat.
    #[arg(long)]
    chat_id: Option<Uuid>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Attempt a delivery again now (a running server or worker posts it), with a new
    /// retry window.
    Retry {
        /// The delivery id (`X-Colloquy-Delivery`).
        id: Uuid,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Runs it.
pub async fn run(args: WebhooksArgs) -> anyhow::Result<()> {
    if let Some(WebhooksCommand::Retry { id, store }) = args.command {
        let settings = store.settings(None)?;
        let store = colloquy_server::open_store(&settings).await?;
        let row = store
            .retry_webhook_delivery(None, id, colloquy_server::clock::now_ms())
            .await?
            .ok_or_else(|| anyhow::anyhow!("no webhook delivery has id {id}"))?;
        println!(
            "Delivery {} ({} to {}) is pending again",
            row.id,
            row.event.as_str(),
            row.url
        );
        return Ok(());
    }
    let settings = args.store.settings(None)?;
    let store = colloquy_server::open_store(&settings).await?;
    let filter = DeliveryFilter {
        chat_id: args.chat_id,
        status: args
            .status
            .as_deref()
            .map(str::parse::<DeliveryStatus>)
            .transpose()
            .map_err(|e| anyhow::anyhow!(e))?,
    };
    let mut rows = Vec::new();
    for number in 0.. {
        let page = PageRequest::full(number, false);
        let got = store.list_webhook_deliveries(None, &filter, page).await?;
        let done = got.items.len() < page.size as usize;
        rows.extend(got.items);
        if done {
            break;
        }
    }
    if args.json {
        let out: Vec<_> = rows
            .iter()
            .map(|d| {
                json!({
                    "id": d.id, "user_id": d.user_id, "chat_id": d.chat_id,
                    "event": d.event.as_str(), "url": d.url, "status": d.status.as_str(),
                    "attempts": d.attempts, "last_status_code": d.last_status_code,
                    "last_error": d.last_error,
                    "next_attempt_at": d.next_attempt_at.filter(|_| d.status == DeliveryStatus::Pending),
                    "created_at": d.created_at,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if rows.is_empty() {
        println!("No webhook deliveries.");
    } else {
        println!(
            "{:<36} {:<12} {:<9} {:>8} {:>4} URL / LAST ERROR",
            "ID", "EVENT", "STATUS", "ATTEMPTS", "CODE"
        );
        for d in rows {
            println!(
                "{:<36} {:<12} {:<9} {:>8} {:>4} {}{}",
                d.id,
                d.event.as_str(),
                d.status.as_str(),
                d.attempts,
                d.last_status_code
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                d.url,
                d.last_error.map(|e| format!(" ({e})")).unwrap_or_default()
            );
        }
    }
    Ok(())
}
