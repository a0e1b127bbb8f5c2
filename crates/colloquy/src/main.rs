//! `colloquy`: run the server, manage API keys, print the example configuration, and read
//! chat history from a server (the client commands in `client/`).

/// mimalloc: cheaper than glibc's malloc for a server that frees on one thread what
/// another allocated (docs/benchmarks.md, ingest).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod keys_cmd;
mod webhooks_cmd;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use colloquy_server::config::{FlagOverrides, Settings, EXAMPLE_TOML};
use std::path::PathBuf;
use std::process::ExitCode;

/// Self-hosted EVI chat history: record voice chats, read them back over the REST API.
#[derive(Parser)]
#[command(name = "colloquy", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP + WebSocket server.
    Serve(ServeArgs),
    /// Run audio reconstruction workers only (no HTTP), sharing the server's job queue.
    Worker(WorkerArgs),
    /// Create, list and revoke API keys.
    Keys {
        #[command(subcommand)]
        command: keys_cmd::KeysCommand,
    },
    /// List the webhook deliveries of every account; `retry <id>` attempts one again.
    Webhooks(webhooks_cmd::WebhooksArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Print a shell completion script, e.g. `colloquy completions bash`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a commented example TOML with every setting.
    Example,
}

/// Where the data lives; shared by every command that opens the database.
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// Folder for the SQLite database and local files [default: ./colloquy-data].
    #[arg(long, env = "COLLOQUY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL: sqlite://FILE or postgres://… [default: SQLite in the data dir].
    #[arg(long, env = "COLLOQUY_DATABASE_URL")]
    database_url: Option<String>,
    /// TOML configuration file.
    #[arg(long, env = "COLLOQUY_CONFIG")]
    config: Option<PathBuf>,
}

impl StoreArgs {
    /// Loads settings with these flags on top.
    pub fn settings(&self, listen: Option<String>) -> anyhow::Result<Settings> {
        let flags = FlagOverrides {
            listen,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
        };
        Ok(Settings::load(self.config.as_deref(), &flags)?)
    }
}

#[derive(Args)]
struct WorkerArgs {
    /// Number of concurrent workers [default: audio.workers, at least 1].
    #[arg(long)]
    workers: Option<usize>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "COLLOQUY_LISTEN")]
    listen: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Worker(args) => worker(args).await,
            Command::Keys { command } => keys_cmd::run(command).await,
            Command::Webhooks(args) => webhooks_cmd::run(args).await,
            Command::Config {
                command: ConfigCommand::Example,
            } => {
                print!("{EXAMPLE_TOML}");
                Ok(())
            }
            Command::Client(command) => client::run(command).await,
            Command::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "colloquy",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.store.settings(args.listen)?;
    colloquy_server::telemetry::init(&settings.log);
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("could not listen on {}", settings.listen))?;
    let server = colloquy_server::start(settings, listener).await?;
    let base = server.base_url();
    if server.state.store.count_accounts().await? == 0 {
        let key =
            colloquy_server::keys::create_account_key(server.state.store.as_ref(), None, true)
                .await?;
        println!(
            "\nCreated the first API key (shown only once; keep it safe):\n\n    \
             api_key:    {}\n    secret_key: {}\n    user_id:    {}\n\n\
             Point the SDKs at {base}:\n    Python:     HumeClient(api_key=..., base_url=\"{base}\")\n    \
             TypeScript: new HumeClient({{ apiKey, environment: \"{base}\" }})\n",
            key.api_key, key.secret_key, key.user_id
        );
    }
    println!("Colloquy listening on {base}");
    let token = server.shutdown_token();
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        _ = token.cancelled() => {}
    }
    server.shutdown().await;
    Ok(())
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    use colloquy_server::worker::{spawn_workers, WorkerContext};
    let settings = args.store.settings(None)?;
    colloquy_server::telemetry::init(&settings.log);
    let store = colloquy_server::open_store(&settings).await?;
    let objects = colloquy_server::objects::Objects::open(&settings.storage, &settings.data_dir)?;
    let count = args.workers.unwrap_or(settings.audio.workers).max(1);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let store_for_hooks = store.clone();
    let handles = spawn_workers(
        WorkerContext {
            store,
            objects,
            audio: settings.audio.clone(),
            wake: Default::default(),
            shutdown: shutdown.clone(),
        },
        count,
    );
    // Webhook deliveries, from the outbox every server shares.
    let delivery =
        colloquy_server::webhooks::spawn_delivery(colloquy_server::webhooks::DeliveryContext {
            store: store_for_hooks,
            hooks: colloquy_server::webhooks::Webhooks::new(&settings.webhooks),
            shutdown: shutdown.clone(),
        });
    println!(
        "Colloquy worker running {count} reconstruction worker(s) and a webhook delivery worker"
    );
    shutdown_signal().await;
    shutdown.cancel();
    for h in handles {
        h.abort();
    }
    delivery.abort();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks (unique names, valid `requires`) over every command;
    /// they would otherwise fail only when the command is run.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
