//! The chat history page: the account's chats, newest or oldest first, filtered by status,
//! config, start date and words said in them, a page at a time.

use super::error::UiError;
use super::format::{self, Stamp};
use super::session::UiSession;
use super::{render, render_string, wants_fragment, Layout, PageLink, Pager, Params};
use crate::state::AppState;
use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use colloquy_storage::{ChatFilter, ChatRecord, PageRequest};
use colloquy_wire::ChatStatus;

/// Rows per page unless `size` says otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 20;

/// The filters as given (echoed into the form) and as understood (for the store).
pub struct Filters {
    /// `newest` (default) or `oldest`.
    pub order: &'static str,
    /// Status wire value or empty.
    pub status: String,
    /// Config id or empty.
    pub config: String,
    /// `YYYY-MM-DD` or empty.
    pub from: String,
    /// `YYYY-MM-DD` or empty.
    pub to: String,
    /// Search words or empty.
    pub q: String,
    /// Viewer's UTC offset, minutes east.
    pub tz: i32,
    /// Rows per page.
    pub size: u32,
    /// Problems with the given values (the rest still applies).
    pub problems: Vec<String>,
    /// What goes to the store.
    pub filter: ChatFilter,
}

impl Filters {
    /// Reads the query string.
    pub fn parse(p: &Params) -> Self {
        let mut problems = Vec::new();
        let order = match p.get("order") {
            Some("oldest") => "oldest",
            _ => "newest",
        };
        let status_raw = p.get("status").unwrap_or_default().to_string();
        let status = if status_raw.is_empty() {
            None
        } else {
            match status_raw.parse::<ChatStatus>() {
                Ok(s) => Some(s),
                Err(e) => {
                    problems.push(format!("Status: {e}."));
                    None
                }
            }
        };
        let tz = p
            .get("tz")
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|m| m.abs() <= 18 * 60)
            .unwrap_or(0);
        let mut date = |key: &str, label: &str| -> (String, Option<chrono::NaiveDate>) {
            let raw = p.get(key).unwrap_or_default().to_string();
            if raw.is_empty() {
                return (raw, None);
            }
            match format::parse_date(&raw) {
                Some(d) => (raw, Some(d)),
                None => {
                    problems.push(format!("{label}: `{raw}` is not a date (YYYY-MM-DD)."));
                    (raw, None)
                }
            }
        };
        let (from, from_date) = date("from", "From");
        let (to, to_date) = date("to", "To");
        let size = p
            .get("size")
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|s| (1..=100).contains(s))
            .unwrap_or(DEFAULT_PAGE_SIZE);
        let config = p.get("config").unwrap_or_default().to_string();
        let q = p.get("q").unwrap_or_default().to_string();
        // The same limit as the REST API: each word is one index probe.
        let words = colloquy_storage::search_terms(&q).len();
        let search = if words > colloquy_storage::MAX_SEARCH_TERMS {
            problems.push(format!(
                "Search: {words} words; search for at most {}.",
                colloquy_storage::MAX_SEARCH_TERMS
            ));
            None
        } else {
            (!q.is_empty()).then(|| q.clone())
        };
        let filter = ChatFilter {
            status,
            config_id: (!config.is_empty()).then(|| config.clone()),
            search,
            started_from: from_date.map(|d| format::midnight_ms(d, tz)),
            // The end date is included: up to the next midnight.
            started_before: to_date
                .and_then(|d| d.succ_opt())
                .map(|d| format::midnight_ms(d, tz)),
        };
        Filters {
            order,
            status: status.map(|s| s.as_str().to_string()).unwrap_or_default(),
            config,
            from,
            to,
            q,
            tz,
            size,
            problems,
            filter,
        }
    }

    /// Whether anything narrows the list.
    pub fn active(&self) -> bool {
        self.filter != ChatFilter::default()
    }

    /// The query string of these filters at `page`.
    pub fn query(&self, page: u32) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        let mut add = |k: &str, v: &str| {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        };
        add("q", &self.q);
        add("status", &self.status);
        add("config", &self.config);
        add("from", &self.from);
        add("to", &self.to);
        if !self.from.is_empty() || !self.to.is_empty() {
            add("tz", &self.tz.to_string());
        }
        if self.order != "newest" {
            add("order", self.order);
        }
        if self.size != DEFAULT_PAGE_SIZE {
            add("size", &self.size.to_string());
        }
        if page > 1 {
            add("page", &page.to_string());
        }
        q.finish()
    }

    fn href(&self, page: u32) -> String {
        let q = self.query(page);
        if q.is_empty() {
            "/ui/chats".into()
        } else {
            format!("/ui/chats?{q}")
        }
    }

    /// `(value, label, selected)` of the status select.
    pub fn status_options(&self) -> Vec<(&'static str, &'static str, bool)> {
        ChatStatus::ALL
            .iter()
            .map(|s| (s.as_str(), status_label(*s), self.status == s.as_str()))
            .collect()
    }
}

/// Words for a chat status.
pub fn status_label(s: ChatStatus) -> &'static str {
    match s {
        ChatStatus::Active => "Active",
        ChatStatus::UserEnded => "Ended by user",
        ChatStatus::UserTimeout => "User timeout",
        ChatStatus::MaxDurationTimeout => "Max duration reached",
        ChatStatus::InactivityTimeout => "Inactivity timeout",
        ChatStatus::Error => "Error",
    }
}

/// CSS class of a status badge.
pub fn status_class(s: ChatStatus) -> &'static str {
    match s {
        ChatStatus::Active => "badge-active",
        ChatStatus::UserEnded => "badge-ended",
        ChatStatus::UserTimeout
        | ChatStatus::MaxDurationTimeout
        | ChatStatus::InactivityTimeout => "badge-timeout",
        ChatStatus::Error => "badge-error",
    }
}

/// A chat as a row of a table.
pub struct ChatRow {
    /// Chat id.
    pub id: String,
    /// Short chat id.
    pub short: String,
    /// Link to the chat.
    pub href: String,
    /// Start.
    pub start: Stamp,
    /// Duration, or "ongoing".
    pub duration: String,
    /// Events stored.
    pub events: i64,
    /// Wire status.
    pub status: &'static str,
    /// Readable status.
    pub status_label: &'static str,
    /// Badge class.
    pub status_class: &'static str,
    /// Group id.
    pub group_id: String,
    /// Short group id.
    pub group_short: String,
    /// Link to the group.
    pub group_href: String,
}

impl ChatRow {
    /// Shapes a chat for a table.
    pub fn new(c: &ChatRecord) -> Self {
        ChatRow {
            id: c.id.to_string(),
            short: format::short_id(&c.id),
            href: format!("/ui/chats/{}", c.id),
            start: format::stamp(c.start_timestamp),
            duration: chat_duration(c),
            events: c.event_count,
            status: c.status.as_str(),
            status_label: status_label(c.status),
            status_class: status_class(c.status),
            group_id: c.chat_group_id.to_string(),
            group_short: format::short_id(&c.chat_group_id),
            group_href: format!("/ui/groups/{}", c.chat_group_id),
        }
    }
}

/// How long a chat lasted (or "ongoing").
pub fn chat_duration(c: &ChatRecord) -> String {
    match c.end_timestamp {
        Some(end) => format::duration(end - c.start_timestamp),
        None => "ongoing".into(),
    }
}

/// The results part of the page (`#results`), swapped by htmx when filters change.
#[derive(Template)]
#[template(path = "ui/_chat_results.html")]
pub struct Results {
    rows: Vec<ChatRow>,
    total: u64,
    first: u64,
    last: u64,
    pager: Pager,
    filtered: bool,
    problems: Vec<String>,
    clear_href: &'static str,
    base_url: String,
}

/// The chat history page.
#[derive(Template)]
#[template(path = "ui/chats.html")]
pub struct ChatsPage {
    layout: Layout,
    f: Filters,
    results: String,
    retention_off: bool,
}

/// `GET /ui/chats`.
pub async fn list(
    State(state): State<AppState>,
    session: UiSession,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let p = Params::parse(raw.as_deref());
    let f = Filters::parse(&p);
    let page = p.page("page");
    let req = PageRequest {
        number: page - 1,
        size: f.size,
        ascending: f.order == "oldest",
    };
    let chats = state
        .store
        .list_chats(session.principal.user_id, &f.filter, req)
        .await?;
    let first = req.offset() as u64 + 1;
    let results = Results {
        rows: chats.items.iter().map(ChatRow::new).collect(),
        total: chats.total,
        first,
        last: first + chats.items.len() as u64 - 1,
        pager: Pager::new(page, chats.total, f.size, |n| {
            let href = f.href(n);
            PageLink {
                hx: href.clone(),
                push: href.clone(),
                href,
            }
        }),
        filtered: f.active(),
        problems: f.problems.clone(),
        clear_href: "/ui/chats",
        base_url: state.public_base.clone(),
    };
    if wants_fragment(&headers) {
        return Ok(Html(render_string(&results)?).into_response());
    }
    let page = ChatsPage {
        layout: Layout::signed_in("Chats", "chats", &session),
        results: render_string(&results)?,
        f,
        retention_off: !session.principal.data_retention,
    };
    render(&page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_round_trip_through_the_query() {
        let p = Params::parse(Some(
            "q=hello+world&status=USER_ENDED&config=cfg&from=2024-05-01&to=2024-05-31&tz=120&order=oldest&size=5",
        ));
        let f = Filters::parse(&p);
        assert!(f.problems.is_empty());
        assert_eq!(f.filter.status, Some(ChatStatus::UserEnded));
        assert_eq!(f.filter.search.as_deref(), Some("hello world"));
        assert_eq!(f.filter.config_id.as_deref(), Some("cfg"));
        // 2024-05-01T00:00+02:00 and 2024-06-01T00:00+02:00.
        assert_eq!(f.filter.started_from, Some(1_714_514_400_000));
        assert_eq!(f.filter.started_before, Some(1_717_192_800_000));
        assert_eq!(f.size, 5);
        let again = Filters::parse(&Params::parse(Some(&f.query(2))));
        assert_eq!(again.filter, f.filter);
        assert!(f.query(2).ends_with("page=2"));
        assert!(f.active());
    }

    #[test]
    fn too_many_search_words_are_reported() {
        let words: Vec<String> = (0..17).map(|i| format!("w{i}")).collect();
        let f = Filters::parse(&Params::parse(Some(&format!("q={}", words.join("+")))));
        assert_eq!(f.filter.search, None);
        assert!(f.problems[0].contains("17 words"), "{:?}", f.problems);
        let f = Filters::parse(&Params::parse(Some(&format!(
            "q={}",
            words[..16].join("+")
        ))));
        assert!(f.problems.is_empty() && f.filter.search.is_some());
    }

    #[test]
    fn bad_values_are_reported_not_fatal() {
        let f = Filters::parse(&Params::parse(Some("status=DONE&from=yesterday&size=1000")));
        assert_eq!(f.problems.len(), 2, "{:?}", f.problems);
        assert_eq!(f.filter, ChatFilter::default());
        assert_eq!(f.size, DEFAULT_PAGE_SIZE);
        assert!(!f.active());
        assert_eq!(f.href(1), "/ui/chats?from=yesterday&tz=0");
    }
}
