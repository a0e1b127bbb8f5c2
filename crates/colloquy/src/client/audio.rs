//! `colloquy audio`: start the audio reconstruction of a chat (or of every chat of a group),
//! optionally wait for it, and download the MP4 from its signed URL.
//!
//! Without `--wait`, a reconstruction that is not finished yet is reported (`QUEUED` or
//! `IN_PROGRESS`) and the command exits 0 without a file: run it again later. With `--wait`
//! it polls, showing a spinner, until the reconstruction ends or `--timeout` passes. The
//! download streams to `<file>.part` (with a progress bar) and is renamed when complete.
//! Spinner and progress bar are drawn only when stderr is a terminal.

use super::output;
use super::Connection;
use anyhow::{bail, Context};
use clap::Args;
use colloquy_client::Client;
use colloquy_wire::{ReconstructionStatus, ReturnChatAudioReconstruction};
use futures::TryStreamExt;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use std::future::Future;
use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// How often `--wait` asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Arguments of `colloquy audio`.
#[derive(Args)]
pub struct AudioArgs {
    /// A chat id or a chat group id (a group: one MP4 per chat).
    id: String,
    /// Where to save: a file for a chat (`-` for stdout), a folder for a group
    /// [default: the server's `filename`, e.g. <user_id>/<chat_id>/reconstructed_audio.mp4,
    /// under the current folder].
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: Option<PathBuf>,
    /// Wait until the reconstruction finishes, then download.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    timeout: u64,
    /// Print the reconstruction record(s) as JSON on stdout (the API's
    /// `ReturnChatAudioReconstruction`; an array for a group).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

fn pending(r: &ReturnChatAudioReconstruction) -> bool {
    matches!(
        r.status,
        ReconstructionStatus::Queued | ReconstructionStatus::InProgress
    )
}

fn failed(r: &ReturnChatAudioReconstruction) -> bool {
    matches!(
        r.status,
        ReconstructionStatus::Error | ReconstructionStatus::Cancelled
    )
}

/// Runs `colloquy audio`.
pub async fn run(args: AudioArgs) -> anyhow::Result<()> {
    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    if to_stdout && args.json {
        bail!("--json and `-o -` both write to stdout; choose one");
    }
    let client = args.conn.client()?;
    match client.chat_audio(&args.id).await {
        Ok(rec) => chat(&client, &args, rec, to_stdout).await,
        Err(e) if e.is_not_found() => {
            let recs = match client.chat_group_audio(&args.id).try_collect().await {
                Ok(recs) => recs,
                Err(e) if e.is_not_found() => {
                    bail!("no chat or chat group with id {} (404)", args.id)
                }
                Err(e) => return Err(e.into()),
            };
            if to_stdout {
                bail!("`-o -` needs a chat id; for a chat group, -o names a folder");
            }
            group(&client, &args, recs).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn chat(
    client: &Client,
    args: &AudioArgs,
    mut rec: ReturnChatAudioReconstruction,
    to_stdout: bool,
) -> anyhow::Result<()> {
    let id = rec.id.clone();
    if pending(&rec) && args.wait {
        let what = format!("chat {id}");
        let recs = wait_until_done(vec![rec], Duration::from_secs(args.timeout), &what, || {
            let (client, id) = (client.clone(), id.clone());
            async move { Ok(vec![client.chat_audio(&id).await?]) }
        })
        .await?;
        rec = recs.into_iter().next().expect("one record");
    }
    if pending(&rec) {
        eprintln!(
            "The audio of chat {id} is {}; run this again later to download it, or pass --wait.",
            rec.status
        );
    } else if failed(&rec) {
        bail!(
            "the audio reconstruction of chat {id} ended as {}",
            rec.status
        );
    } else if to_stdout {
        save(client, &rec, None).await?;
    } else {
        let path = match &args.output {
            Some(p) => p.clone(),
            None => default_path(&rec),
        };
        save(client, &rec, Some(&path)).await?;
    }
    if args.json {
        output::print_json(&rec)?;
    }
    Ok(())
}

async fn group(
    client: &Client,
    args: &AudioArgs,
    mut recs: Vec<ReturnChatAudioReconstruction>,
) -> anyhow::Result<()> {
    let group_id = args.id.clone();
    if args.wait && recs.iter().any(pending) {
        let what = format!("chat group {group_id}");
        recs = wait_until_done(recs, Duration::from_secs(args.timeout), &what, || {
            let (client, id) = (client.clone(), group_id.clone());
            async move { Ok(client.chat_group_audio(&id).try_collect().await?) }
        })
        .await?;
    }
    for rec in &recs {
        if rec.status == ReconstructionStatus::Complete {
            let path = default_path(rec);
            let path = match &args.output {
                Some(dir) => dir.join(path),
                None => path,
            };
            save(client, rec, Some(&path)).await?;
        } else if pending(rec) {
            eprintln!(
                "The audio of chat {} is {}; run this again later, or pass --wait.",
                rec.id, rec.status
            );
        } else {
            eprintln!(
                "The audio reconstruction of chat {} ended as {}.",
                rec.id, rec.status
            );
        }
    }
    if args.json {
        output::print_json(&recs)?;
    }
    let bad = recs.iter().filter(|r| failed(r)).count();
    if bad > 0 {
        bail!(
            "{bad} of the {} chat(s) of group {group_id} could not be reconstructed",
            recs.len()
        );
    }
    Ok(())
}

/// Polls with `refetch` until no record is `QUEUED` or `IN_PROGRESS`, showing a spinner on a
/// terminal (and status changes as plain lines otherwise).
async fn wait_until_done<F, Fut>(
    mut recs: Vec<ReturnChatAudioReconstruction>,
    timeout: Duration,
    what: &str,
    mut refetch: F,
) -> anyhow::Result<Vec<ReturnChatAudioReconstruction>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<ReturnChatAudioReconstruction>>>,
{
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let waiting = recs.iter().filter(|r| pending(r)).count();
        if waiting == 0 {
            spinner.finish_and_clear();
            return Ok(recs);
        }
        let state = if recs.len() == 1 {
            recs[0].status.to_string()
        } else {
            let queued = recs
                .iter()
                .filter(|r| r.status == ReconstructionStatus::Queued)
                .count();
            format!(
                "{} of {} done, {} in progress, {queued} queued",
                recs.len() - waiting,
                recs.len(),
                waiting - queued
            )
        };
        let line = format!("Audio of {what}: {state}");
        if !tty && line != last {
            eprintln!("{line}");
        }
        spinner.set_message(format!("{line} ({}s)", started.elapsed().as_secs()));
        last = line;
        if started.elapsed() >= timeout {
            spinner.finish_and_clear();
            bail!(
                "gave up waiting for the audio of {what} after {} s (still {state})",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        recs = refetch().await?;
    }
}

/// The server's `filename` as a path under the current folder, when it is a plain relative
/// path (no `..`, no root); otherwise `<chat_id>.mp4`.
pub fn default_path(rec: &ReturnChatAudioReconstruction) -> PathBuf {
    let fallback = || PathBuf::from(format!("{}.mp4", sanitize(&rec.id)));
    let Some(name) = rec.filename.as_deref().filter(|n| !n.is_empty()) else {
        return fallback();
    };
    let path = Path::new(name);
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)))
        && !name.contains('\\')
        && !name.contains(':');
    if plain {
        path.to_path_buf()
    } else {
        fallback()
    }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Downloads the record's signed URL to `path` (via `<path>.part`), or to stdout when `None`.
async fn save(
    client: &Client,
    rec: &ReturnChatAudioReconstruction,
    path: Option<&Path>,
) -> anyhow::Result<()> {
    let url = rec
        .signed_audio_url
        .as_deref()
        .with_context(|| format!("the audio of chat {} is COMPLETE but has no URL", rec.id))?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("chat {}", rec.id));
    let progress = |done: u64, total: Option<u64>| {
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(done);
    };
    let Some(path) = path else {
        let mut out = tokio::io::stdout();
        client.download(url, &mut out, progress).await?;
        bar.finish_and_clear();
        return Ok(());
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("could not create {}", part.display()))?;
    let written = match client.download(url, &mut file, progress).await {
        Ok(n) => n,
        Err(e) => {
            bar.finish_and_clear();
            drop(file);
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e.into());
        }
    };
    file.sync_all()
        .await
        .with_context(|| format!("could not write {}", part.display()))?;
    drop(file);
    tokio::fs::rename(&part, path)
        .await
        .with_context(|| format!("could not rename {} to {}", part.display(), path.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "Saved the audio of chat {} to {} ({})",
        rec.id,
        path.display(),
        HumanBytes(written)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(filename: Option<&str>) -> ReturnChatAudioReconstruction {
        ReturnChatAudioReconstruction {
            id: "c1".into(),
            user_id: "u1".into(),
            status: ReconstructionStatus::Complete,
            filename: filename.map(Into::into),
            modified_at: None,
            signed_audio_url: None,
            signed_url_expiration_timestamp_millis: None,
        }
    }

    #[test]
    fn saves_under_the_servers_filename_when_it_is_safe() {
        assert_eq!(
            default_path(&rec(Some("u1/c1/reconstructed_audio.mp4"))),
            PathBuf::from("u1/c1/reconstructed_audio.mp4")
        );
        for unsafe_name in ["/etc/passwd", "../x.mp4", "u1/../../x.mp4", "C:\\x.mp4", ""] {
            assert_eq!(
                default_path(&rec(Some(unsafe_name))),
                PathBuf::from("c1.mp4"),
                "{unsafe_name}"
            );
        }
        assert_eq!(default_path(&rec(None)), PathBuf::from("c1.mp4"));
    }
}
