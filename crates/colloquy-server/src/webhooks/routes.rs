//! `GET /v0/evi/webhook_deliveries` and `POST /v0/evi/webhook_deliveries/{id}/retry`:
//! Colloquy's own (the hosted API has no such endpoints), scoped to the caller's account.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{path_uuid, Query};
use crate::rest::PageParams;
use crate::state::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use colloquy_storage::{DeliveryFilter, DeliveryRecord, DeliveryStatus};
use colloquy_wire::PaginationDirection;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// One webhook delivery.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReturnWebhookDelivery {
    /// Delivery id (UUID), sent as `X-Colloquy-Delivery` at every attempt.
    pub id: String,
    /// The chat (UUID).
    pub chat_id: String,
    /// `chat_started`, `chat_ended` or `tool_call`.
    pub event: String,
    /// Target URL.
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// HTTP status of the last attempt, if an answer was received.
    pub last_status_code: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due (epoch ms; pending deliveries only).
    pub next_attempt_at: Option<i64>,
    /// When it was written (epoch ms).
    pub created_at: i64,
    /// The JSON body, as sent.
    pub body: String,
}

impl From<DeliveryRecord> for ReturnWebhookDelivery {
    fn from(d: DeliveryRecord) -> Self {
        ReturnWebhookDelivery {
            id: d.id.to_string(),
            chat_id: d.chat_id.to_string(),
            event: d.event.as_str().into(),
            url: d.url,
            status: d.status.as_str().into(),
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            next_attempt_at: d
                .next_attempt_at
                .filter(|_| d.status == DeliveryStatus::Pending),
            created_at: d.created_at,
            body: d.body,
        }
    }
}

/// A page of deliveries.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReturnPagedWebhookDeliveries {
    /// Zero-based page index.
    pub page_number: i64,
    /// Items per page.
    pub page_size: i64,
    /// Pages in the whole listing.
    pub total_pages: i64,
    /// Deliveries in the whole listing.
    pub total_items: i64,
    /// `ASC` or `DESC`.
    pub pagination_direction: PaginationDirection,
    /// The deliveries of the page.
    pub deliveries_page: Vec<ReturnWebhookDelivery>,
}

/// Filters of `GET /v0/evi/webhook_deliveries`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DeliveryFilters {
    /// Only deliveries of this chat (UUID).
    chat_id: Option<Uuid>,
    /// Only deliveries of this status: `pending`, `delivered` or `failed`.
    #[param(pattern = "^(pending|delivered|failed)$")]
    status: Option<String>,
}

/// List the account's webhook deliveries (Colloquy extension), newest first unless
/// `ascending_order=true`.
#[utoipa::path(get, path = "/v0/evi/webhook_deliveries", tag = "webhooks",
    params(PageParams, DeliveryFilters),
    responses((status = 200, body = ReturnPagedWebhookDeliveries), (status = 400, body = colloquy_wire::ErrorResponse),
              (status = 401, body = colloquy_wire::ErrorResponse), (status = 429, body = colloquy_wire::ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReturnPagedWebhookDeliveries>, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    let mut page = q.page()?;
    if q.get("ascending_order").is_none() {
        page.ascending = false;
    }
    let filter = DeliveryFilter {
        chat_id: q
            .get("chat_id")
            .map(|v| path_uuid("chat", v.trim()))
            .transpose()?,
        status: q
            .get("status")
            .map(|v| {
                v.trim()
                    .parse::<DeliveryStatus>()
                    .map_err(ApiError::invalid)
            })
            .transpose()?,
    };
    let rows = state
        .store
        .list_webhook_deliveries(Some(who.user_id), &filter, page)
        .await?;
    Ok(Json(ReturnPagedWebhookDeliveries {
        page_number: page.number.into(),
        page_size: page.size.into(),
        total_pages: page.total_pages(rows.total),
        total_items: rows.total as i64,
        pagination_direction: PaginationDirection::from_ascending(page.ascending),
        deliveries_page: rows.items.into_iter().map(Into::into).collect(),
    }))
}

/// Attempt a delivery again now (whatever its status), with a new retry window.
#[utoipa::path(post, path = "/v0/evi/webhook_deliveries/{id}/retry", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Delivery id (UUID)")),
    responses((status = 200, body = ReturnWebhookDelivery), (status = 400, body = colloquy_wire::ErrorResponse),
              (status = 401, body = colloquy_wire::ErrorResponse), (status = 404, body = colloquy_wire::ErrorResponse),
              (status = 429, body = colloquy_wire::ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<ReturnWebhookDelivery>, ApiError> {
    let id = path_uuid("webhook delivery", &id)?;
    let row = state
        .store
        .retry_webhook_delivery(Some(who.user_id), id, crate::clock::now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no webhook delivery with id {id} exists for this account"
            ))
        })?;
    state.webhooks.wake();
    Ok(Json(row.into()))
}

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v0/evi/webhook_deliveries", get(list_deliveries))
        .route(
            "/v0/evi/webhook_deliveries/{id}/retry",
            post(retry_delivery),
        )
}
