//! Audio reconstruction workers. They run inside `colloquy serve` (`audio.workers`) and as
//! `colloquy worker` processes; all of them share the job queue in the database.
//!
//! A worker claims a job with a lease, renews the lease while it works, downloads the
//! chat's captured segments to a temp dir (streaming, through [`Objects`]), reconstructs
//! the MP4 on a blocking thread, uploads it (streaming) and finishes the job, all in a
//! `reconstruction` span carrying the chat id. A job that fails for good records the
//! [`FailureKind`] with its reason. A worker that dies stops renewing;
//! its lease runs out and another worker takes the job. Only the lease holder can finish a
//! job, so each finishes exactly once.

use crate::clock::now_ms;
use crate::config::AudioSettings;
use crate::objects::{Objects, Voice};
use anyhow::Context;
use colloquy_audio::{MixOptions, VoiceFormat, VoiceInput};
use colloquy_storage::{ClaimedJob, FailureKind, JobResult, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// How often an idle worker looks for jobs (it is also woken when a job is enqueued here).
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What a worker needs.
#[derive(Clone)]
pub struct WorkerContext {
    /// Job queue.
    pub store: Arc<dyn Store>,
    /// Captured audio and outputs.
    pub objects: Objects,
    /// Settings.
    pub audio: AudioSettings,
    /// Wakes idle workers.
    pub wake: Arc<Notify>,
    /// Stops the workers.
    pub shutdown: CancellationToken,
}

/// Starts `count` workers; each has its own id `<prefix>-<n>`.
pub fn spawn_workers(ctx: WorkerContext, count: usize) -> Vec<JoinHandle<()>> {
    let prefix = Uuid::new_v4().simple().to_string();
    (0..count)
        .map(|n| {
            let ctx = ctx.clone();
            let id = format!("{}-{n}", &prefix[..12]);
            tokio::spawn(async move { run_worker(ctx, id).await })
        })
        .collect()
}

async fn run_worker(ctx: WorkerContext, id: String) {
    let lease_ms = ctx.audio.job_lease_secs as i64 * 1000;
    loop {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        let claimed = ctx
            .store
            .claim_reconstruction(&id, now_ms(), lease_ms, ctx.audio.job_max_attempts as i64)
            .await;
        match claimed {
            Ok(Some(job)) => {
                let span = tracing::info_span!("reconstruction", chat_id = %job.chat_id);
                process(&ctx, &id, job).instrument(span).await
            }
            Ok(None) => {
                tokio::select! {
                    _ = ctx.wake.notified() => {}
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                    _ = ctx.shutdown.cancelled() => return,
                }
            }
            Err(e) => {
                tracing::warn!(worker = %id, error = %e, "could not claim a job");
                tokio::time::sleep(POLL_INTERVAL * 4).await;
            }
        }
    }
}

async fn process(ctx: &WorkerContext, worker: &str, job: ClaimedJob) {
    let started = std::time::Instant::now();
    tracing::info!(worker, chat_id = %job.chat_id, attempt = job.attempt, "reconstructing audio");
    let lease = Duration::from_secs(ctx.audio.job_lease_secs);
    let renewer = {
        let (store, worker, chat_id) = (ctx.store.clone(), worker.to_string(), job.chat_id);
        tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    let until = now_ms() + lease.as_millis() as i64;
                    match store
                        .renew_reconstruction_lease(chat_id, &worker, until)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(%chat_id, "lost the lease on a reconstruction job");
                            return;
                        }
                        Err(e) => tracing::warn!(%chat_id, error = %e, "could not renew a lease"),
                    }
                }
            }
            .in_current_span(),
        )
    };
    let outcome = reconstruct_chat(ctx, &job).await;
    renewer.abort();
    let result = match outcome {
        Ok(result) => result,
        Err(e) => {
            // Infrastructure trouble (store, disk): leave the job; it is retried when the
            // lease runs out, up to `job_max_attempts` times.
            tracing::error!(chat_id = %job.chat_id, error = %format!("{e:#}"), "reconstruction failed; will retry");
            return;
        }
    };
    if let JobResult::Failed { kind, reason } = &result {
        tracing::warn!(chat_id = %job.chat_id, kind = kind.as_str(), %reason, "reconstruction ended in ERROR");
    }
    match ctx
        .store
        .finish_reconstruction(job.chat_id, worker, &result, now_ms())
        .await
    {
        Ok(true) => tracing::info!(
            chat_id = %job.chat_id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconstruction finished"
        ),
        Ok(false) => match ctx.store.get_chat(job.user_id, job.chat_id).await {
            // The chat was deleted meanwhile: the job was cancelled; discard our output.
            Ok(None) => {
                tracing::info!(chat_id = %job.chat_id, "reconstruction cancelled: the chat was deleted");
                if let Err(e) = ctx.objects.erase_chat(job.user_id, job.chat_id).await {
                    tracing::warn!(chat_id = %job.chat_id, error = %e, "could not discard the output");
                }
            }
            _ => tracing::warn!(chat_id = %job.chat_id, "another worker finished this job"),
        },
        Err(e) => {
            tracing::error!(chat_id = %job.chat_id, error = %e, "could not record the result")
        }
    }
}

/// Reconstructs one chat; `Err` only for failures worth retrying.
async fn reconstruct_chat(ctx: &WorkerContext, job: &ClaimedJob) -> anyhow::Result<JobResult> {
    let dir = tempfile::tempdir().context("could not create a temp dir")?;
    let (objects, user_id, chat_id) = (&ctx.objects, job.user_id, job.chat_id);
    let user = objects
        .fetch_voice(user_id, chat_id, Voice::User, dir.path())
        .await?;
    let assistant = objects
        .fetch_voice(user_id, chat_id, Voice::Assistant, dir.path())
        .await?;
    if user.is_none() && assistant.is_none() {
        return Ok(JobResult::Failed {
            kind: FailureKind::NoAudio,
            reason: "the chat has no audio: no audio_input was received and no audio was spoken"
                .into(),
        });
    }
    let out_path = dir.path().join("reconstructed_audio.mp4");
    let opts = MixOptions {
        stereo_split: ctx.audio.stereo_split,
        min_duration_ms: Some((job.chat_end_ms - job.chat_start_ms).max(0) as u64),
        ..MixOptions::default()
    };
    let out = out_path.clone();
    let mixed = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let open = |v: Option<(VoiceFormat, PathBuf)>| -> anyhow::Result<_> {
            v.map(|(format, p)| {
                Ok(VoiceInput {
                    format,
                    records: std::io::BufReader::new(std::fs::File::open(p)?),
                })
            })
            .transpose()
        };
        let file = std::fs::File::create(&out)?;
        Ok(colloquy_audio::reconstruct(
            open(user)?,
            open(assistant)?,
            &opts,
            std::io::BufWriter::new(file),
        ))
    })
    .await??;
    match mixed {
        Ok(summary) => tracing::debug!(?summary, "mixed"),
        Err(colloquy_audio::AudioError::NoAudio) => {
            return Ok(JobResult::Failed {
                kind: FailureKind::NoAudio,
                reason: "the chat has no audio".into(),
            })
        }
        Err(e) => {
            return Ok(JobResult::Failed {
                kind: FailureKind::Undecodable,
                reason: format!("the captured audio could not be decoded: {e}"),
            })
        }
    }
    let filename = objects
        .upload_reconstruction(user_id, chat_id, &out_path)
        .await?;
    Ok(JobResult::Complete {
        filename,
        missing: missing_note(&ctx.objects, job).await,
    })
}

/// Says which audio was received but could not be stored (from each voice's
/// `missing.json`); it is silence in the file.
async fn missing_note(objects: &Objects, job: &ClaimedJob) -> Option<String> {
    let mut parts = Vec::new();
    for voice in [Voice::User, Voice::Assistant] {
        for s in objects.missing_spans(job.user_id, job.chat_id, voice).await {
            parts.push(format!(
                "{} audio from {:.1} s to {:.1} s",
                voice.as_str(),
                s.from_ms as f64 / 1000.0,
                s.to_ms as f64 / 1000.0
            ));
        }
    }
    (!parts.is_empty()).then(|| {
        format!(
            "missing audio: {} could not be stored when it was received and is silent in this file",
            parts.join(", ")
        )
    })
}
