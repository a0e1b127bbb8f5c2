//! The chat page's webhook deliveries (issue 14): event, target, status, attempts, the last
//! answer or error, the next attempt.

use super::format::{stamp, Stamp};
use crate::state::AppState;
use askama::Template;
use colloquy_storage::{ChatRecord, DeliveryFilter, DeliveryStatus, PageRequest};

/// One delivery row.
pub struct Row {
    id: String,
    event: &'static str,
    url: String,
    status: &'static str,
    attempts: i64,
    last: String,
    next: Option<Stamp>,
}

/// The deliveries section (`#webhooks`).
#[derive(Template)]
#[template(path = "ui/_webhooks.html")]
pub struct WebhooksPanel {
    rows: Vec<Row>,
    total: u64,
}

/// The chat's deliveries, oldest first (at most 100).
pub async fn panel(state: &AppState, chat: &ChatRecord) -> Result<WebhooksPanel, super::UiError> {
    let filter = DeliveryFilter {
        chat_id: Some(chat.id),
        status: None,
    };
    let page = state
        .store
        .list_webhook_deliveries(Some(chat.user_id), &filter, PageRequest::full(0, true))
        .await?;
    let rows = page
        .items
        .into_iter()
        .map(|d| Row {
            id: d.id.to_string(),
            event: d.event.as_str(),
            url: d.url,
            status: d.status.as_str(),
            attempts: d.attempts,
            last: match (d.last_status_code, d.last_error) {
                (_, Some(e)) => e,
                (Some(c), None) => format!("HTTP {c}"),
                (None, None) => String::new(),
            },
            next: d
                .next_attempt_at
                .filter(|_| d.status == DeliveryStatus::Pending)
                .map(stamp),
        })
        .collect();
    Ok(WebhooksPanel {
        rows,
        total: page.total,
    })
}
