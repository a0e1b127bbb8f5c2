//! The delivery worker: claims due deliveries from the outbox under a lease, posts them
//! (at most `webhooks.max_in_flight` at once), and records the attempts in batches.
//!
//! One runs in every `colloquy serve` and `colloquy worker`. It is woken as soon as this
//! process commits a delivery, and otherwise looks at the outbox every
//! `webhooks.poll_interval_ms` (deliveries written by other processes, retries coming due,
//! leases of killed processes running out). A claim is a lease of `timeout_secs + 30` s:
//! several processes on one database never hold the same delivery at once, and a killed
//! process's deliveries are claimed again when their lease runs out.
//!
//! Each attempt is signed afresh (new timestamp); the body and `X-Colloquy-Delivery` stay
//! the same. 2xx is delivered; anything else (another status, a timeout, a refused
//! connection) is retried after [`retry_delay_ms`] until `retry_for_secs` after the delivery
//! was written, then failed. Redirects are not followed (a 3xx is a failed attempt).

use super::signing::{sign, DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::targets::{parse_target, refused_literal, PublicOnly};
use super::Webhooks;
use crate::clock::now_ms;
use crate::config::WebhookSettings;
use colloquy_storage::webhooks::retry_delay_ms;
use colloquy_storage::{AttemptReport, ClaimedDelivery, DeliveryStatus, NewDelivery, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long an account's signing key is reused before it is read again (a rotated key is
/// used from then on).
const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// How long a woken worker waits for more commits before it claims.
const COALESCE: Duration = Duration::from_millis(3);

/// The HTTP client and the cache of signing keys, shared by the worker and the
/// retention-disabled sends.
pub struct Poster {
    client: reqwest::Client,
    keys: Mutex<HashMap<Uuid, (String, Instant)>>,
    settings: Arc<WebhookSettings>,
}

impl Poster {
    /// A client that never follows redirects, with the attempt timeout, refusing private
    /// targets when asked to.
    pub fn new(settings: Arc<WebhookSettings>) -> Self {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(settings.timeout_secs))
            .connect_timeout(Duration::from_secs(settings.timeout_secs))
            .pool_max_idle_per_host(settings.max_in_flight)
            .user_agent(concat!("colloquy-webhooks/", env!("CARGO_PKG_VERSION")));
        if settings.deny_private_targets {
            b = b.dns_resolver(Arc::new(PublicOnly));
        }
        Poster {
            client: b.build().expect("the webhook HTTP client builds"),
            keys: Mutex::new(HashMap::new()),
            settings,
        }
    }

    async fn key(
        &self,
        store: &dyn Store,
        user_id: Uuid,
        server_wide: bool,
        url: &str,
    ) -> Result<String, String> {
        if server_wide {
            return self
                .settings
                .subscriptions
                .iter()
                .find(|s| s.url == url)
                .map(|s| s.signing_key.clone())
                .ok_or_else(|| {
                    "this server-wide subscription is no longer in [[webhooks.subscriptions]]"
                        .to_string()
                });
        }
        if let Some((k, at)) = self.keys.lock().unwrap().get(&user_id) {
            if at.elapsed() < KEY_CACHE_TTL {
                return Ok(k.clone());
            }
        }
        let key = store
            .webhook_signing_key(user_id, &super::signing::new_signing_key())
            .await
            .map_err(|e| format!("could not read the account's signing key: {e}"))?
            .ok_or_else(|| "the account no longer exists".to_string())?;
        self.keys
            .lock()
            .unwrap()
            .insert(user_id, (key.clone(), Instant::now()));
        Ok(key)
    }

    /// One attempt. `Ok(code)` on 2xx; otherwise the status (if any), why, and whether to
    /// give up at once (a refused target).
    async fn post(
        &self,
        store: &dyn Store,
        d: &ClaimedDelivery,
    ) -> Result<i64, (Option<i64>, String, bool)> {
        let url = parse_target(&d.url).map_err(|e| (None, e, true))?;
        if self.settings.deny_private_targets {
            if let Some(why) = refused_literal(&url) {
                return Err((None, why, true));
            }
        }
        let key = self
            .key(store, d.user_id, d.server_wide, &d.url)
            .await
            .map_err(|e| (None, e, false))?;
        let ts = (now_ms() / 1000).to_string();
        let sig = sign(&key, d.body.as_bytes(), &ts);
        let res = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, &ts)
            .header(SIGNATURE_HEADER, sig)
            .header(DELIVERY_HEADER, d.id.to_string())
            .body(d.body.clone())
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => Ok(i64::from(r.status().as_u16())),
            Ok(r) => {
                let code = r.status().as_u16();
                Err((
                    Some(i64::from(code)),
                    format!("the target answered HTTP {code}"),
                    false,
                ))
            }
            Err(e) => Err((None, error_chain(&e), false)),
        }
    }

    /// An attempt and what it makes of the delivery.
    pub async fn attempt(&self, store: &dyn Store, d: &ClaimedDelivery) -> AttemptReport {
        match self.post(store, d).await {
            Ok(code) => AttemptReport {
                id: d.id,
                status: DeliveryStatus::Delivered,
                status_code: Some(code),
                error: None,
                next_attempt_at: None,
            },
            Err((code, error, give_up)) => {
                let now = now_ms();
                let next = now + retry_delay_ms(d.attempts + 1);
                let window_end = d.window_start + self.settings.retry_for_secs as i64 * 1000;
                let failed = give_up || next > window_end;
                tracing::warn!(delivery = %d.id, url = %d.url, attempt = d.attempts + 1, %error, failed, "webhook attempt failed");
                AttemptReport {
                    id: d.id,
                    status: if failed {
                        DeliveryStatus::Failed
                    } else {
                        DeliveryStatus::Pending
                    },
                    status_code: code,
                    error: Some(error),
                    next_attempt_at: (!failed).then_some(next),
                }
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// What the delivery worker needs.
#[derive(Clone)]
pub struct DeliveryContext {
    /// The outbox.
    pub store: Arc<dyn Store>,
    /// Settings, the bell and the HTTP client.
    pub hooks: Webhooks,
    /// Stops the worker.
    pub shutdown: CancellationToken,
}

/// Starts this process's delivery worker.
pub fn spawn_delivery(ctx: DeliveryContext) -> JoinHandle<()> {
    let id = format!("hooks-{}", &Uuid::new_v4().simple().to_string()[..12]);
    tokio::spawn(run(ctx, id))
}

async fn run(ctx: DeliveryContext, worker: String) {
    let settings = ctx.hooks.settings.clone();
    let lease_ms = (settings.timeout_secs as i64 + 30) * 1000;
    let poll = Duration::from_millis(settings.poll_interval_ms.max(10));
    let slots = Arc::new(Semaphore::new(settings.max_in_flight));
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    let reporter = tokio::spawn(report(ctx.store.clone(), worker.clone(), report_rx));
    loop {
        // Wait for one free slot, then take every free one.
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("never closed"),
            _ = ctx.shutdown.cancelled() => break,
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let limit = permits.len() as u32;
        let claimed = match ctx
            .store
            .claim_webhook_deliveries(&worker, now_ms(), lease_ms, limit)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%worker, error = %e, "could not claim webhook deliveries");
                drop(permits);
                tokio::select! {
                    _ = tokio::time::sleep(poll * 2) => continue,
                    _ = ctx.shutdown.cancelled() => break,
                }
            }
        };
        let full = claimed.len() as u32 == limit;
        for d in claimed {
            let permit = permits.pop().expect("one permit per claimed delivery");
            let (store, poster, tx) = (
                ctx.store.clone(),
                ctx.hooks.poster.clone(),
                report_tx.clone(),
            );
            tokio::spawn(async move {
                let r = poster.attempt(store.as_ref(), &d).await;
                let _ = tx.send(r);
                drop(permit);
            });
        }
        drop(permits);
        if !full {
            tokio::select! {
                _ = ctx.hooks.wake.notified() => {
                    // Let the commits of the next few milliseconds join this claim: one
                    // claim transaction for many chats ending at once.
                    tokio::time::sleep(COALESCE).await;
                }
                _ = tokio::time::sleep(poll) => {}
                _ = ctx.shutdown.cancelled() => break,
            }
        }
    }
    drop(report_tx);
    let _ = reporter.await;
}

/// Records attempts as they come, as many per transaction as are waiting.
async fn report(
    store: Arc<dyn Store>,
    worker: String,
    mut rx: mpsc::UnboundedReceiver<AttemptReport>,
) {
    let mut batch = Vec::new();
    while let Some(r) = rx.recv().await {
        batch.push(r);
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(100);
        loop {
            match store
                .finish_webhook_deliveries(&worker, &batch, now_ms())
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    // The leases run out meanwhile: the deliveries are then attempted again.
                    tracing::warn!(%worker, error = %e, "could not record webhook attempts; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    if delay >= Duration::from_secs(5) {
                        break;
                    }
                }
            }
        }
        batch.clear();
    }
}

/// Posts a retention-disabled account's webhooks from memory (nothing is stored): retried
/// on the same schedule while this process runs, never listed.
pub fn send_unstored(state: &crate::state::AppState, deliveries: Vec<NewDelivery>) {
    for d in deliveries {
        let store = state.store.clone();
        let poster = state.webhooks.poster.clone();
        let shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            let mut claimed = ClaimedDelivery {
                id: d.id,
                user_id: d.user_id,
                event: d.event,
                url: d.url,
                server_wide: d.server_wide,
                body: d.body,
                attempts: 0,
                window_start: d.created_at,
            };
            loop {
                let r = poster.attempt(store.as_ref(), &claimed).await;
                let Some(next) = r.next_attempt_at else {
                    return;
                };
                claimed.attempts += 1;
                let wait = Duration::from_millis((next - now_ms()).max(0) as u64);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
}
