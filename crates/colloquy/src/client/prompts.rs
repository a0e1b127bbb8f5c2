//! `colloquy prompts [ID]`: the account's prompts (the newest version of each), or every
//! version of one, as a table or JSON.

use super::output::{self, Table};
use super::Connection;
use clap::Args;
use colloquy_wire::ReturnPrompt;
use futures::TryStreamExt;

/// Arguments of `colloquy prompts`.
#[derive(Args)]
pub struct PromptsArgs {
    /// List every version of this prompt instead of the newest version of each.
    id: Option<String>,
    /// Print a JSON array (the API's `ReturnPrompt` objects).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

/// Runs `colloquy prompts`.
pub async fn run(args: PromptsArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let prompts: Vec<ReturnPrompt> = client.prompts(args.id.as_deref()).try_collect().await?;
    if args.json {
        return output::print_json(&prompts);
    }
    if prompts.is_empty() {
        eprintln!("No prompts.");
        return Ok(());
    }
    let t = match args.id {
        None => table(&prompts, output::local_date_time),
        Some(_) => versions_table(&prompts, output::local_date_time),
    };
    output::print(&t.render())?;
    Ok(())
}

/// The prompts table (the newest version of each); `time` formats an epoch-ms instant.
pub fn table(prompts: &[ReturnPrompt], time: impl Fn(i64) -> String) -> Table {
    let mut t = Table::new(&["PROMPT ID", "NAME", "VERSION", "MODIFIED", "TEXT"]);
    for p in prompts {
        t.row(vec![
            p.id.clone(),
            p.name.clone(),
            p.version.to_string(),
            time(p.modified_on),
            output::excerpt(&p.text, 60),
        ]);
    }
    t
}

/// The versions of one prompt.
pub fn versions_table(prompts: &[ReturnPrompt], time: impl Fn(i64) -> String) -> Table {
    let mut t = Table::new(&["VERSION", "MODIFIED", "DESCRIPTION", "TEXT"]);
    for p in prompts {
        t.row(vec![
            p.version.to_string(),
            time(p.modified_on),
            p.version_description.clone().unwrap_or_default(),
            output::excerpt(&p.text, 60),
        ]);
    }
    t
}
