//! `colloquy tools [ID]`: the account's user-defined tools (the newest version of each), or
//! every version of one, as a table or JSON.

use super::output::{self, Table};
use super::Connection;
use clap::Args;
use colloquy_wire::ReturnUserDefinedTool;
use futures::TryStreamExt;

/// Arguments of `colloquy tools`.
#[derive(Args)]
pub struct ToolsArgs {
    /// List every version of this tool instead of the newest version of each.
    id: Option<String>,
    /// Print a JSON array (the API's `ReturnUserDefinedTool` objects).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

/// Runs `colloquy tools`.
pub async fn run(args: ToolsArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let tools: Vec<ReturnUserDefinedTool> = client.tools(args.id.as_deref()).try_collect().await?;
    if args.json {
        return output::print_json(&tools);
    }
    if tools.is_empty() {
        eprintln!("No tools.");
        return Ok(());
    }
    let t = match args.id {
        None => table(&tools, output::local_date_time),
        Some(_) => versions_table(&tools, output::local_date_time),
    };
    output::print(&t.render())?;
    Ok(())
}

/// The tools table (the newest version of each); `time` formats an epoch-ms instant.
pub fn table(tools: &[ReturnUserDefinedTool], time: impl Fn(i64) -> String) -> Table {
    let mut t = Table::new(&["TOOL ID", "NAME", "VERSION", "MODIFIED", "DESCRIPTION"]);
    for tool in tools {
        t.row(vec![
            tool.id.clone(),
            tool.name.clone(),
            tool.version.to_string(),
            time(tool.modified_on),
            output::excerpt(tool.description.as_deref().unwrap_or_default(), 60),
        ]);
    }
    t
}

/// The versions of one tool, with their parameters on one line.
pub fn versions_table(tools: &[ReturnUserDefinedTool], time: impl Fn(i64) -> String) -> Table {
    let mut t = Table::new(&[
        "VERSION",
        "MODIFIED",
        "DESCRIPTION",
        "VERSION DESCRIPTION",
        "PARAMETERS",
    ]);
    for tool in tools {
        t.row(vec![
            tool.version.to_string(),
            time(tool.modified_on),
            output::excerpt(tool.description.as_deref().unwrap_or_default(), 40),
            tool.version_description.clone().unwrap_or_default(),
            output::one_line(&tool.parameters),
        ]);
    }
    t
}
