//! Group commit: sessions submit write operations; writer tasks drain whatever has queued up
//! (up to `max_batch`) into one [`Store::apply_batch`] transaction and answer each session
//! only after the commit. Under load one fsync covers many sessions' events; when idle a
//! single operation commits at once.

use colloquy_storage::{OpOutcome, Store, WriteOp};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Why an operation was not committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    /// The database failed; the batch was rolled back.
    #[error("the database failed to commit: {0}")]
    Database(String),
    /// The recorder is shutting down.
    #[error("the server is shutting down")]
    Closed,
}

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<OpOutcome, RecordError>>,
}

/// Handle to the group-commit writers; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Job>,
}

impl Recorder {
    /// Starts `store.write_concurrency()` writer tasks on the current runtime.
    pub fn start(store: Arc<dyn Store>, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(max_batch.max(1) * 8);
        let rx = Arc::new(Mutex::new(rx));
        let max_batch = max_batch.max(1);
        for _ in 0..store.write_concurrency().max(1) {
            tokio::spawn(writer(store.clone(), rx.clone(), max_batch));
        }
        Recorder { tx }
    }

    /// Submits one operation and waits until it is committed (or refused).
    pub async fn submit(&self, op: WriteOp) -> Result<OpOutcome, RecordError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { op, reply })
            .await
            .map_err(|_| RecordError::Closed)?;
        rx.await.map_err(|_| RecordError::Closed)?
    }
}

async fn writer(store: Arc<dyn Store>, rx: Arc<Mutex<mpsc::Receiver<Job>>>, max_batch: usize) {
    let mut jobs = Vec::with_capacity(max_batch);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut jobs, max_batch).await == 0 {
                return;
            }
        }
        let (ops, replies): (Vec<WriteOp>, Vec<_>) =
            jobs.drain(..).map(|j| (j.op, j.reply)).unzip();
        match store.apply_batch(&ops).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, ops = ops.len(), "group commit failed");
                let err = RecordError::Database(e.to_string());
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}
