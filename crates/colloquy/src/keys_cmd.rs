//! `colloquy keys create | list | revoke | signing-key`: works on the database directly.

use crate::StoreArgs;
use clap::Subcommand;
use colloquy_server::keys;
use serde_json::json;

/// Key management commands.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an account with a new API key; prints {"user_id","api_key","secret_key",
    /// "webhook_signing_key"} as JSON.
    Create {
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
        /// Disable data retention for the account: its chats run but nothing is stored.
        #[arg(long)]
        no_retention: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List keys (prefix, account, state); never shows whole keys.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key, given whole or by a unique prefix. Takes effect at once, also on open
    /// chat sockets.
    Revoke {
        /// The API key or its prefix (at least 4 characters).
        key: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the webhook signing key of a key's account (receivers verify
    /// X-Hume-AI-Webhook-Signature with it); --rotate replaces it first.
    SigningKey {
        /// The API key or its prefix (at least 4 characters).
        key: String,
        /// Replace the account's signing key with a new one (deliveries are signed with it
        /// within 5 seconds).
        #[arg(long)]
        rotate: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Runs a keys command.
pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create {
            name,
            no_retention,
            store,
        } => {
            let settings = store.settings(None)?;
            let store = colloquy_server::open_store(&settings).await?;
            let created = keys::create_account_key(store.as_ref(), name, !no_retention).await?;
            println!("{}", serde_json::to_string(&created)?);
        }
        KeysCommand::List { json, store } => {
            let settings = store.settings(None)?;
            let store = colloquy_server::open_store(&settings).await?;
            let list = store.list_api_keys().await?;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|k| {
                        json!({
                            "prefix": k.prefix, "user_id": k.user_id, "name": k.name,
                            "created_at": k.created_at, "revoked_at": k.revoked_at,
                            "data_retention": k.data_retention,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if list.is_empty() {
                println!("No API keys yet. Create one with `colloquy keys create`.");
            } else {
                println!(
                    "{:<10} {:<36} {:<8} {:<9} NAME",
                    "PREFIX", "USER ID", "STATE", "RETENTION"
                );
                for k in list {
                    println!(
                        "{:<10} {:<36} {:<8} {:<9} {}",
                        k.prefix,
                        k.user_id,
                        if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "live"
                        },
                        if k.data_retention { "on" } else { "off" },
                        k.name.unwrap_or_default()
                    );
                }
            }
        }
        KeysCommand::Revoke { key, store } => {
            let settings = store.settings(None)?;
            let store = colloquy_server::open_store(&settings).await?;
            let revoked = keys::revoke(store.as_ref(), &key).await?;
            println!(
                "Revoked key {}… of account {}",
                revoked.prefix, revoked.user_id
            );
        }
        KeysCommand::SigningKey { key, rotate, store } => {
            let settings = store.settings(None)?;
            let store = colloquy_server::open_store(&settings).await?;
            let (_, signing) = keys::signing_key(store.as_ref(), &key, rotate).await?;
            println!("{signing}");
        }
    }
    Ok(())
}
