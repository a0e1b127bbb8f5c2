//! Chat webhooks (issue 14): `chat_started`, `chat_ended` and `tool_call`, signed as Hume
//! signs them ([`signing`]) and delivered from a durable outbox ([`delivery`]).
//!
//! A chat's subscriptions are computed once, when it opens ([`subscriptions`]: its config
//! version's `webhooks` plus the server-wide `[[webhooks.subscriptions]]`), and stored with
//! the chat by its `StartChat`. The store then writes every delivery in the transaction of
//! the chat start, chat end (crash recovery included) or `FUNCTION_CALL` event that causes
//! it (`colloquy_storage::webhooks`); workers in every `colloquy serve` and `colloquy
//! worker` claim them under a lease and post them. Retention-disabled accounts store
//! nothing: their webhooks are posted from memory, best effort ([`delivery::send_unstored`]).

pub mod delivery;
pub mod routes;
pub mod signing;
mod targets;

use crate::config::WebhookSettings;
use colloquy_storage::{
    ChatWebhooks, GroupChoice, NewChat, NewEvent, WebhookEvent, WebhookSubscription,
};
use colloquy_wire::ReturnWebhookSpec;
use std::sync::Arc;
use tokio::sync::Notify;

pub use delivery::{spawn_delivery, DeliveryContext};

/// The webhook part of the server's state: settings, and the bell that wakes this
/// process's delivery worker when a delivery was written.
#[derive(Clone)]
pub struct Webhooks {
    /// `[webhooks]`.
    pub settings: Arc<WebhookSettings>,
    /// Rung after a commit that wrote deliveries.
    pub wake: Arc<Notify>,
    /// The HTTP client and the signing keys.
    pub poster: Arc<delivery::Poster>,
}

impl Webhooks {
    /// From the settings.
    pub fn new(settings: &WebhookSettings) -> Self {
        let settings = Arc::new(settings.clone());
        Webhooks {
            poster: Arc::new(delivery::Poster::new(settings.clone())),
            settings,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes the delivery worker (a delivery was committed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The subscriptions of a chat: its config version's `webhooks` (signed with the account's
/// key) and the server-wide ones (signed with their own). Targets that are not http(s) are
/// left out (a config cannot hold them; the settings are checked at start).
pub fn subscriptions(
    settings: &WebhookSettings,
    config_webhooks: &[ReturnWebhookSpec],
) -> Vec<WebhookSubscription> {
    let from_config = config_webhooks.iter().filter_map(|w| {
        let events: Vec<String> = w.events.iter().map(|e| e.as_str().to_string()).collect();
        let events = check_subscription(&w.url, &events).ok()?;
        Some(WebhookSubscription {
            url: w.url.clone(),
            events,
            server_wide: false,
        })
    });
    let server = settings.subscriptions.iter().filter_map(|w| {
        Some(WebhookSubscription {
            url: w.url.clone(),
            events: check_subscription(&w.url, &w.events).ok()?,
            server_wide: true,
        })
    });
    from_config
        .chain(server)
        .filter(|s| !s.events.is_empty())
        .collect()
}

/// Checks a target URL (http or https, with a host) and event names.
pub fn check_subscription(url: &str, events: &[String]) -> Result<Vec<WebhookEvent>, String> {
    targets::parse_target(url)?;
    let mut out = Vec::new();
    for e in events {
        let e: WebhookEvent = e.parse()?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

/// The webhooks of a retention-disabled account's chat, kept in memory by its session
/// (nothing is stored): they are posted at once, best effort.
#[derive(Debug, Clone)]
pub struct Unstored {
    hooks: ChatWebhooks,
}

impl Unstored {
    /// For a chat opened with these subscriptions (`None` without any).
    pub fn new(chat: &NewChat, events: &[NewEvent]) -> Option<Self> {
        ChatWebhooks::for_new_chat(chat, events).map(|hooks| Unstored { hooks })
    }

    /// `chat_started`.
    pub fn started(&self, state: &crate::state::AppState, group: GroupChoice) {
        let d = self.hooks.started(group, crate::clock::now_ms());
        delivery::send_unstored(state, d);
    }

    /// What recorded-nothing events would have enqueued (`tool_call`, a new
    /// `custom_session_id`).
    pub fn events(&mut self, state: &crate::state::AppState, events: &[NewEvent]) {
        let mut out = Vec::new();
        for e in events {
            if let Some(csid) = colloquy_storage::webhooks::session_id_of(e) {
                self.hooks.custom_session_id = Some(csid);
            } else if e.event_type == colloquy_wire::EventType::FunctionCall {
                out.extend(self.hooks.tool_call(e, crate::clock::now_ms()));
            }
        }
        delivery::send_unstored(state, out);
    }

    /// `chat_ended`.
    pub fn ended(
        &self,
        state: &crate::state::AppState,
        status: colloquy_wire::ChatStatus,
        end_ms: i64,
    ) {
        let d = self.hooks.ended(status, end_ms, crate::clock::now_ms());
        delivery::send_unstored(state, d);
    }
}

/// A session's part in its chat's webhooks: whether it has stored subscriptions (then a
/// commit that may have written deliveries wakes the worker), or, for a retention-disabled
/// account, the subscriptions it posts from memory.
#[derive(Debug, Default)]
pub struct SessionHooks {
    stored: bool,
    unstored: Option<Unstored>,
    group: Option<GroupChoice>,
}

impl SessionHooks {
    /// Before the chat is created: what its webhooks will be.
    pub fn prepare(&mut self, chat: &NewChat, events: &[NewEvent], retained: bool) {
        self.group = Some(chat.group);
        if retained {
            self.stored = !chat.webhooks.is_empty();
        } else {
            self.unstored = Unstored::new(chat, events);
        }
    }

    /// The chat was created (`chat_started` was written with it, or is sent now).
    pub fn opened(&self, state: &crate::state::AppState) {
        if self.stored {
            state.webhooks.wake();
        }
        if let (Some(u), Some(g)) = (&self.unstored, self.group) {
            u.started(state, g);
        }
    }

    /// Before events are recorded: true if the worker is to be woken once they are
    /// committed (a tool call); a retention-disabled chat's webhooks are sent now.
    pub fn on_record(&mut self, state: &crate::state::AppState, events: &[NewEvent]) -> bool {
        if let Some(u) = &mut self.unstored {
            if colloquy_storage::webhooks::concerns_webhooks(events) {
                u.events(state, events);
            }
            return false;
        }
        self.stored
            && events
                .iter()
                .any(|e| e.event_type == colloquy_wire::EventType::FunctionCall)
    }

    /// The chat's end was committed (or, retention disabled, the chat ended).
    pub fn ended(
        &self,
        state: &crate::state::AppState,
        status: colloquy_wire::ChatStatus,
        end_ms: i64,
    ) {
        if self.stored {
            state.webhooks.wake();
        }
        if let Some(u) = &self.unstored {
            u.ended(state, status, end_ms);
        }
    }
}
