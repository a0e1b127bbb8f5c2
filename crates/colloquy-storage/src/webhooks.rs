//! Chat webhooks: a chat's subscriptions, stored with the chat when it starts, and the
//! deliveries of the durable outbox, written in the transaction of the chat start, chat end
//! or tool call that causes them ([`crate::BatchRules::apply`], and each backend's crash
//! recovery). The bodies are built here, once, for both backends: exactly the keys of the
//! official SDK's `WebhookEventChatStarted`, `WebhookEventChatEnded` and
//! `WebhookEventToolCall` models.

use crate::{GroupChoice, NewChat, NewEvent, StoreResult};
use colloquy_wire::{ChatStatus, EventType};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// The events a webhook can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    /// A chat started (new or resumed group).
    ChatStarted,
    /// A chat ended, however it ended.
    ChatEnded,
    /// The assistant called a tool.
    ToolCall,
}

impl WebhookEvent {
    /// Every event.
    pub const ALL: [WebhookEvent; 3] = [
        WebhookEvent::ChatStarted,
        WebhookEvent::ChatEnded,
        WebhookEvent::ToolCall,
    ];

    /// The wire name (`event_name`).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::ChatStarted => "chat_started",
            WebhookEvent::ChatEnded => "chat_ended",
            WebhookEvent::ToolCall => "tool_call",
        }
    }
}

impl std::str::FromStr for WebhookEvent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        WebhookEvent::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown webhook event `{s}`"))
    }
}

/// One URL a chat's events are posted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSubscription {
    /// Target (http or https).
    pub url: String,
    /// The events it receives.
    pub events: Vec<WebhookEvent>,
    /// A server-wide subscription (`[[webhooks.subscriptions]]`), signed with its own key;
    /// otherwise the config's, signed with the account's key.
    #[serde(default)]
    pub server_wide: bool,
}

impl WebhookSubscription {
    fn wants(&self, event: WebhookEvent) -> bool {
        self.events.contains(&event)
    }
}

/// What a chat's webhooks need after its start: stored in `chat_webhooks` (one row per chat
/// that has subscriptions) so its end, even by crash recovery, can enqueue `chat_ended`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatWebhooks {
    /// The chat.
    pub chat_id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Its group.
    pub chat_group_id: Uuid,
    /// Epoch ms.
    pub start_timestamp: i64,
    /// The config the chat used.
    pub config_id: Option<String>,
    /// The session's current `custom_session_id` (kept up to date by `session_settings`).
    pub custom_session_id: Option<String>,
    /// Where its events go.
    pub subscriptions: Vec<WebhookSubscription>,
}

/// A webhook to deliver, as written to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Delivery id (`X-Colloquy-Delivery`, the same at every attempt).
    pub id: Uuid,
    /// The account of the chat.
    pub user_id: Uuid,
    /// The chat.
    pub chat_id: Uuid,
    /// Which event.
    pub event: WebhookEvent,
    /// Target.
    pub url: String,
    /// Signed with a server-wide subscription's key instead of the account's.
    pub server_wide: bool,
    /// The exact JSON body, sent unchanged at every attempt.
    pub body: String,
    /// Epoch ms.
    pub created_at: i64,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet; attempted at `next_attempt_at`.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Given up (retries exhausted, or a target that is refused).
    Failed,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
        .ok_or_else(|| format!("unknown delivery status `{s}` (pending, delivered, failed)"))
    }
}

/// A stored delivery, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Delivery id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// The chat.
    pub chat_id: Uuid,
    /// Which event.
    pub event: WebhookEvent,
    /// Target.
    pub url: String,
    /// Status.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i64,
    /// HTTP status of the last attempt, if one was received.
    pub last_status_code: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it is attempted next (pending only), epoch ms.
    pub next_attempt_at: Option<i64>,
    /// Epoch ms.
    pub created_at: i64,
    /// The body.
    pub body: String,
}

/// A delivery claimed by a worker, leased until it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    /// Delivery id.
    pub id: Uuid,
    /// Owner (whose signing key signs it, unless `server_wide`).
    pub user_id: Uuid,
    /// Which event.
    pub event: WebhookEvent,
    /// Target.
    pub url: String,
    /// Signed with the server-wide subscription's key.
    pub server_wide: bool,
    /// The body.
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// Start of the retry window (creation, or a manual retry), epoch ms.
    pub window_start: i64,
}

/// How an attempt ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    /// The delivery.
    pub id: Uuid,
    /// What the delivery becomes.
    pub status: DeliveryStatus,
    /// HTTP status received, if any.
    pub status_code: Option<i64>,
    /// What went wrong.
    pub error: Option<String>,
    /// When to try again (with `Pending`).
    pub next_attempt_at: Option<i64>,
}

/// Filters of `GET /v0/evi/webhook_deliveries`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only deliveries of this chat.
    pub chat_id: Option<Uuid>,
    /// Only deliveries of this status.
    pub status: Option<DeliveryStatus>,
}

impl ChatWebhooks {
    /// What a new chat stores for its webhooks; `None` without subscriptions.
    pub fn for_new_chat(chat: &NewChat, events: &[NewEvent]) -> Option<Self> {
        if chat.webhooks.is_empty() {
            return None;
        }
        let mut hooks = ChatWebhooks {
            chat_id: chat.id,
            user_id: chat.user_id,
            chat_group_id: chat.group.id(),
            start_timestamp: chat.start_timestamp,
            config_id: chat.config_id.clone(),
            custom_session_id: None,
            subscriptions: chat.webhooks.clone(),
        };
        for e in events {
            if let Some(csid) = session_id_of(e) {
                hooks.custom_session_id = Some(csid);
            }
        }
        Some(hooks)
    }

    fn deliveries(&self, event: WebhookEvent, body: &Value, now_ms: i64) -> Vec<NewDelivery> {
        let body = body.to_string();
        self.subscriptions
            .iter()
            .filter(|s| s.wants(event))
            .map(|s| NewDelivery {
                id: Uuid::now_v7(),
                user_id: self.user_id,
                chat_id: self.chat_id,
                event,
                url: s.url.clone(),
                server_wide: s.server_wide,
                body: body.clone(),
                created_at: now_ms,
            })
            .collect()
    }

    fn common(&self, event: WebhookEvent) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("event_name".into(), json!(event.as_str()));
        m.insert(
            "chat_group_id".into(),
            json!(self.chat_group_id.to_string()),
        );
        m.insert("chat_id".into(), json!(self.chat_id.to_string()));
        m.insert("config_id".into(), json!(self.config_id));
        m.insert("custom_session_id".into(), json!(self.custom_session_id));
        m.insert("caller_number".into(), Value::Null);
        m.insert("twilio_metadata".into(), Value::Null);
        m
    }

    /// `chat_started` for the subscriptions that want it.
    pub fn started(&self, group: GroupChoice, now_ms: i64) -> Vec<NewDelivery> {
        let mut m = self.common(WebhookEvent::ChatStarted);
        m.insert("start_time".into(), json!(self.start_timestamp));
        let kind = match group {
            GroupChoice::New(_) => "new_chat_group",
            GroupChoice::Resume(_) => "resumed_chat_group",
        };
        m.insert("chat_start_type".into(), json!(kind));
        self.deliveries(WebhookEvent::ChatStarted, &Value::Object(m), now_ms)
    }

    /// `chat_ended` for the subscriptions that want it.
    pub fn ended(&self, status: ChatStatus, end_timestamp: i64, now_ms: i64) -> Vec<NewDelivery> {
        let mut m = self.common(WebhookEvent::ChatEnded);
        m.insert("end_time".into(), json!(end_timestamp));
        m.insert(
            "duration_seconds".into(),
            json!((end_timestamp - self.start_timestamp).max(0) / 1000),
        );
        m.insert("end_reason".into(), json!(status.as_str()));
        self.deliveries(WebhookEvent::ChatEnded, &Value::Object(m), now_ms)
    }

    /// `tool_call` for a recorded `FUNCTION_CALL` event (its text is the `tool_call`
    /// message the client was sent); nothing if the text is not one.
    pub fn tool_call(&self, event: &NewEvent, now_ms: i64) -> Vec<NewDelivery> {
        if !self
            .subscriptions
            .iter()
            .any(|s| s.wants(WebhookEvent::ToolCall))
        {
            return Vec::new();
        }
        let Some(msg) = event
            .message_text
            .as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
        else {
            return Vec::new();
        };
        let text = |k: &str| msg.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(name), Some(tool_call_id)) = (text("name"), text("tool_call_id")) else {
            return Vec::new();
        };
        let parameters = match msg.get("parameters") {
            Some(Value::String(s)) => s.clone(),
            Some(v) if !v.is_null() => v.to_string(),
            _ => "{}".into(),
        };
        let tool_type = match text("tool_type").as_deref() {
            Some("builtin") => "builtin",
            _ => "function",
        };
        let mut call = Map::new();
        call.insert("type".into(), json!("tool_call"));
        call.insert("name".into(), json!(name));
        call.insert("parameters".into(), json!(parameters));
        call.insert("tool_call_id".into(), json!(tool_call_id));
        call.insert("tool_type".into(), json!(tool_type));
        call.insert(
            "response_required".into(),
            json!(msg
                .get("response_required")
                .and_then(Value::as_bool)
                .unwrap_or(tool_type == "function")),
        );
        if let Some(csid) = text("custom_session_id").or_else(|| self.custom_session_id.clone()) {
            call.insert("custom_session_id".into(), json!(csid));
        }
        let mut m = self.common(WebhookEvent::ToolCall);
        m.insert("timestamp".into(), json!(event.timestamp));
        m.insert("tool_call_message".into(), Value::Object(call));
        self.deliveries(WebhookEvent::ToolCall, &Value::Object(m), now_ms)
    }
}

/// The `custom_session_id` a `SESSION_SETTINGS` event sets, if any.
pub fn session_id_of(event: &NewEvent) -> Option<String> {
    if event.event_type != EventType::SessionSettings {
        return None;
    }
    let v: Value = serde_json::from_str(event.message_text.as_deref()?).ok()?;
    v.get("custom_session_id")?.as_str().map(str::to_string)
}

/// Whether events hold anything that concerns a chat's webhooks (a new `custom_session_id`
/// or a tool call), so the store need not look the chat's webhooks up otherwise.
pub fn concerns_webhooks(events: &[NewEvent]) -> bool {
    events.iter().any(|e| {
        e.event_type == EventType::FunctionCall || e.event_type == EventType::SessionSettings
    })
}

/// The webhook statements a backend runs inside a batch's (or crash recovery's)
/// transaction.
#[allow(async_fn_in_trait)]
pub trait WebhookTx {
    /// Stores a new chat's webhooks.
    async fn insert_chat_webhooks(&mut self, hooks: &ChatWebhooks) -> StoreResult<()>;
    /// A chat's webhooks, if it has any.
    async fn chat_webhooks(&mut self, chat_id: Uuid) -> StoreResult<Option<ChatWebhooks>>;
    /// Records the session's new `custom_session_id`.
    async fn set_custom_session_id(&mut self, chat_id: Uuid, csid: &str) -> StoreResult<()>;
    /// Writes deliveries to the outbox.
    async fn insert_deliveries(&mut self, deliveries: &[NewDelivery]) -> StoreResult<()>;
}

/// After the events of an append or end: records a changed `custom_session_id` and enqueues
/// `tool_call` for each `FUNCTION_CALL`. Returns the chat's webhooks (updated).
pub async fn on_events<T: WebhookTx>(
    tx: &mut T,
    hooks: &mut ChatWebhooks,
    events: &[NewEvent],
    now_ms: i64,
) -> StoreResult<()> {
    let mut deliveries = Vec::new();
    for e in events {
        if let Some(csid) = session_id_of(e) {
            if hooks.custom_session_id.as_deref() != Some(csid.as_str()) {
                tx.set_custom_session_id(hooks.chat_id, &csid).await?;
                hooks.custom_session_id = Some(csid);
            }
        } else if e.event_type == EventType::FunctionCall {
            deliveries.extend(hooks.tool_call(e, now_ms));
        }
    }
    if !deliveries.is_empty() {
        tx.insert_deliveries(&deliveries).await?;
    }
    Ok(())
}

/// The retry schedule: the delay after the `attempts`-th failed attempt (1-based):
/// 2 s, then ×3 each time (6 s, 18 s, 54 s, 2.7 min, 8.1 min, 24.3 min, 1.2 h), at most
/// 2 h; retried until `retry_for_ms` after the delivery was written, then failed.
pub fn retry_delay_ms(attempts: i64) -> i64 {
    let mut d: i64 = 2_000;
    for _ in 1..attempts.clamp(1, 20) {
        d = (d * 3).min(2 * 3_600_000);
    }
    d
}
