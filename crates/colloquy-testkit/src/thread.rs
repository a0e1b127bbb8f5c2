//! The real server on a multi-thread runtime and OS threads of its own (`srv-worker`), so a
//! benchmark's clients, on another runtime, compete with it only for CPU, as two processes
//! would.

use crate::server::start_on_port_0;
use anyhow::Context;
use colloquy_server::keys::{create_account_key, CreatedKey};
use colloquy_server::Settings;
use colloquy_storage::Store;
use std::future::Future;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A server started by [`ServerThread::start`]; stop it with [`ServerThread::stop`].
pub struct ServerThread {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The server's store (the same connections the request handlers use).
    pub store: Arc<dyn Store>,
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl ServerThread {
    /// Starts the server on 127.0.0.1:0 with `settings` (its `listen` is ignored) on a runtime
    /// of `worker_threads` threads.
    pub async fn start(settings: Settings, worker_threads: usize) -> anyhow::Result<Self> {
        Self::start_with(settings, worker_threads, false).await
    }

    /// Like [`ServerThread::start`]; with `listener_nodelay`, `TCP_NODELAY` is set on the
    /// listening socket, which Linux copies to every accepted connection. That is an
    /// experiment (the shipped server leaves Nagle's algorithm on), not the default.
    pub async fn start_with(
        settings: Settings,
        worker_threads: usize,
        listener_nodelay: bool,
    ) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("srv-main".into())
            .spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(worker_threads.max(1))
                    .thread_name("srv-worker")
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let server = match start_on_port_0(settings, listener_nodelay).await {
                        Ok(s) => s,
                        Err(e) => {
                            let msg = format!("{e:#}");
                            let _ = ready_tx.send(Err(e));
                            anyhow::bail!("server did not start: {msg}");
                        }
                    };
                    let _ = ready_tx.send(Ok((
                        server.base_url(),
                        server.state.store.clone(),
                        Handle::current(),
                    )));
                    let _ = stop_rx.await;
                    server.shutdown().await;
                    Ok(())
                })
            })
            .context("could not spawn the server thread")?;
        let (base, store, handle) = ready_rx
            .await
            .context("the server thread ended before it started")??;
        Ok(ServerThread {
            base,
            store,
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `ws://127.0.0.1:PORT/v0/evi/chat`.
    pub fn ws_url(&self) -> String {
        format!("{}/v0/evi/chat", self.base.replace("http://", "ws://"))
    }

    /// A new account with a key (named `name`, if given), with or without retention; made
    /// on the server's runtime.
    pub async fn key(&self, name: Option<&str>, retention: bool) -> anyhow::Result<CreatedKey> {
        let store = self.store.clone();
        let name = name.map(str::to_string);
        Ok(self
            .run(async move { create_account_key(store.as_ref(), name, retention).await })
            .await??)
    }

    /// Runs `fut` on the server's runtime and waits for its output.
    pub async fn run<F>(&self, fut: F) -> anyhow::Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Ok(self.handle.spawn(fut).await?)
    }

    /// Shuts the server down (sessions record their end) and joins its thread.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
        }
        Ok(())
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
