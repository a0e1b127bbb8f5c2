//! A typed async client for the EVI chat-history REST API: Colloquy, or the hosted EVI API it
//! is wire-compatible with.
//!
//! Each endpoint has a one-page method (`*_page`) returning the wire type of
//! [`colloquy_wire`], and the list endpoints also have a stream that pages through every item
//! (see [`paging::paginate`]). Errors are [`ClientError`]s whose `Display` is one line meant
//! for a person.
//!
//! ```no_run
//! # async fn demo() -> Result<(), colloquy_client::ClientError> {
//! use futures::TryStreamExt;
//! let client = colloquy_client::Client::new("http://127.0.0.1:8080", Some("KEY".into()))?;
//! let chats: Vec<_> = client
//!     .chats(&Default::default(), false)
//!     .try_collect()
//!     .await?;
//! # Ok(()) }
//! ```

mod error;
pub mod paging;
mod platform;

pub use error::ClientError;
pub use paging::{paginate, PageRequest, Paged, MAX_PAGE_SIZE};
pub use platform::Resource;

use colloquy_wire::*;
use futures::{Stream, StreamExt};
use reqwest::{Response, Url};
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The base URL used when none is given.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080";

/// The header carrying the API key on REST calls.
pub const API_KEY_HEADER: &str = "X-Hume-Api-Key";

/// How long one API call may take (the official SDKs use 60 s too).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Filters of `GET /v0/evi/chats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatListQuery {
    /// Only chats with this status.
    pub status: Option<ChatStatus>,
    /// Only chats that used this config id.
    pub config_id: Option<String>,
    /// Full-text search over the chats' message text (`search`; a Colloquy extension that
    /// other servers may ignore).
    pub search: Option<String>,
}

/// Filters of `GET /v0/evi/chat_groups`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatGroupListQuery {
    /// Only groups whose most recent chat used this config id.
    pub config_id: Option<String>,
}

/// A client of one server with one API key. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    api_key: Option<String>,
}

impl Client {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:8080` or
    /// `https://api.hume.ai`), sending `api_key` as `X-Hume-Api-Key` on every API call.
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidBaseUrl {
            url: base_url.to_string(),
            reason: reason.to_string(),
        };
        let base = Url::parse(base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("use an http:// or https:// URL"));
        }
        if base.cannot_be_a_base() || base.host_str().is_none() {
            return Err(invalid("it has no host"));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("colloquy-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| invalid(&error::cause_chain(&e)))?;
        Ok(Client {
            http,
            base,
            api_key,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base` + the given path segments (each percent-encoded).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("checked in new()");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    fn network(&self, e: reqwest::Error) -> ClientError {
        ClientError::Network {
            base_url: self.base_url().to_string(),
            reason: error::cause_chain(&e),
        }
    }

    /// GET an API path with the key; decodes the JSON answer. `what`/`id` name the resource
    /// for a 404.
    async fn get_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        not_found: Option<(&'static str, &str)>,
    ) -> Result<T, ClientError> {
        let url = self.url(segments);
        let mut req = self
            .http
            .get(url.clone())
            .query(query)
            .timeout(REQUEST_TIMEOUT);
        if let Some(key) = &self.api_key {
            req = req.header(API_KEY_HEADER, key);
        }
        let resp = req.send().await.map_err(|e| self.network(e))?;
        let resp = self.check(resp, not_found).await?;
        let body = resp.bytes().await.map_err(|e| self.network(e))?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    /// Turns a non-2xx answer into the matching error, reading the spec's error body
    /// `{code, error, message}` when there is one.
    async fn check(
        &self,
        resp: Response,
        not_found: Option<(&'static str, &str)>,
    ) -> Result<Response, ClientError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let body: Option<ErrorResponse> = serde_json::from_str(&text).ok();
        let code = body.as_ref().and_then(|b| b.code.clone());
        let message = body
            .and_then(|b| b.message.or(b.error))
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| {
                let first = text.lines().next().unwrap_or("").trim();
                if first.is_empty() {
                    status
                        .canonical_reason()
                        .unwrap_or("no reason given")
                        .to_string()
                } else {
                    first.chars().take(200).collect()
                }
            });
        let message = message.replace('\n', " ");
        Err(match (status.as_u16(), not_found) {
            (401, _) => ClientError::Unauthorized { message },
            (404, Some((what, id))) => ClientError::NotFound {
                what,
                id: id.to_string(),
                message,
            },
            (status, _) => ClientError::Http {
                status,
                code,
                message,
            },
        })
    }

    // ---- chats -------------------------------------------------------------------------

    /// One page of `GET /v0/evi/chats`.
    pub async fn chats_page(
        &self,
        query: &ChatListQuery,
        page: PageRequest,
    ) -> Result<ReturnPagedChats, ClientError> {
        let mut q = page.query().to_vec();
        if let Some(s) = query.status {
            q.push(("status", s.as_str().to_string()));
        }
        if let Some(c) = &query.config_id {
            q.push(("config_id", c.clone()));
        }
        if let Some(s) = query.search.as_ref().filter(|s| !s.trim().is_empty()) {
            q.push(("search", s.clone()));
        }
        self.get_json(&["v0", "evi", "chats"], &q, None).await
    }

    /// Every chat matching `query`, oldest first when `ascending`.
    pub fn chats(
        &self,
        query: &ChatListQuery,
        ascending: bool,
    ) -> impl Stream<Item = Result<ReturnChat, ClientError>> + Send + 'static {
        let (this, query) = (self.clone(), query.clone());
        paginate(None, move |n| {
            let (this, query) = (this.clone(), query.clone());
            async move {
                this.chats_page(&query, PageRequest::full(n, ascending))
                    .await
            }
        })
    }

    /// One page of `GET /v0/evi/chats/{id}`: the chat and a page of its events.
    pub async fn chat_events_page(
        &self,
        chat_id: &str,
        page: PageRequest,
    ) -> Result<ReturnChatPagedEvents, ClientError> {
        self.get_json(
            &["v0", "evi", "chats", chat_id],
            &page.query(),
            Some(("chat", chat_id)),
        )
        .await
    }

    /// Every event of a chat in order. `first` is page 0 (at [`MAX_PAGE_SIZE`], ascending)
    /// when already fetched.
    pub fn chat_events(
        &self,
        chat_id: &str,
        first: Option<ReturnChatPagedEvents>,
    ) -> impl Stream<Item = Result<ReturnChatEvent, ClientError>> + Send + 'static {
        let (this, id) = (self.clone(), chat_id.to_string());
        paginate(first, move |n| {
            let (this, id) = (this.clone(), id.clone());
            async move { this.chat_events_page(&id, PageRequest::full(n, true)).await }
        })
    }

    /// `GET /v0/evi/chats/{id}/audio`: the chat's reconstruction record; the first call
    /// starts the reconstruction.
    pub async fn chat_audio(
        &self,
        chat_id: &str,
    ) -> Result<ReturnChatAudioReconstruction, ClientError> {
        self.get_json(
            &["v0", "evi", "chats", chat_id, "audio"],
            &[],
            Some(("chat", chat_id)),
        )
        .await
    }

    // ---- chat groups ---------------------------------------------------------------------

    /// One page of `GET /v0/evi/chat_groups`.
    pub async fn chat_groups_page(
        &self,
        query: &ChatGroupListQuery,
        page: PageRequest,
    ) -> Result<ReturnPagedChatGroups, ClientError> {
        let mut q = page.query().to_vec();
        if let Some(c) = &query.config_id {
            q.push(("config_id", c.clone()));
        }
        self.get_json(&["v0", "evi", "chat_groups"], &q, None).await
    }

    /// Every chat group matching `query`, oldest first when `ascending`.
    pub fn chat_groups(
        &self,
        query: &ChatGroupListQuery,
        ascending: bool,
    ) -> impl Stream<Item = Result<ReturnChatGroup, ClientError>> + Send + 'static {
        let (this, query) = (self.clone(), query.clone());
        paginate(None, move |n| {
            let (this, query) = (this.clone(), query.clone());
            async move {
                this.chat_groups_page(&query, PageRequest::full(n, ascending))
                    .await
            }
        })
    }

    /// One page of `GET /v0/evi/chat_groups/{id}`: the group and a page of its chats.
    pub async fn chat_group_page(
        &self,
        group_id: &str,
        status: Option<ChatStatus>,
        page: PageRequest,
    ) -> Result<ReturnChatGroupPagedChats, ClientError> {
        let mut q = page.query().to_vec();
        if let Some(s) = status {
            q.push(("status", s.as_str().to_string()));
        }
        self.get_json(
            &["v0", "evi", "chat_groups", group_id],
            &q,
            Some(("chat group", group_id)),
        )
        .await
    }

    /// Every chat of a group, oldest first.
    pub fn chat_group_chats(
        &self,
        group_id: &str,
        status: Option<ChatStatus>,
    ) -> impl Stream<Item = Result<ReturnChat, ClientError>> + Send + 'static {
        let (this, id) = (self.clone(), group_id.to_string());
        paginate(None, move |n| {
            let (this, id) = (this.clone(), id.clone());
            async move {
                this.chat_group_page(&id, status, PageRequest::full(n, true))
                    .await
            }
        })
    }

    /// One page of `GET /v0/evi/chat_groups/{id}/events`.
    pub async fn chat_group_events_page(
        &self,
        group_id: &str,
        page: PageRequest,
    ) -> Result<ReturnChatGroupPagedEvents, ClientError> {
        self.get_json(
            &["v0", "evi", "chat_groups", group_id, "events"],
            &page.query(),
            Some(("chat group", group_id)),
        )
        .await
    }

    /// Every event of every chat of a group, in time order. `first` is page 0 (at
    /// [`MAX_PAGE_SIZE`], ascending) when already fetched.
    pub fn chat_group_events(
        &self,
        group_id: &str,
        first: Option<ReturnChatGroupPagedEvents>,
    ) -> impl Stream<Item = Result<ReturnChatEvent, ClientError>> + Send + 'static {
        let (this, id) = (self.clone(), group_id.to_string());
        paginate(first, move |n| {
            let (this, id) = (this.clone(), id.clone());
            async move {
                this.chat_group_events_page(&id, PageRequest::full(n, true))
                    .await
            }
        })
    }

    /// One page of `GET /v0/evi/chat_groups/{id}/audio`: one reconstruction record per chat
    /// (starting the reconstructions not yet started).
    pub async fn chat_group_audio_page(
        &self,
        group_id: &str,
        page: PageRequest,
    ) -> Result<ReturnChatGroupPagedAudioReconstructions, ClientError> {
        self.get_json(
            &["v0", "evi", "chat_groups", group_id, "audio"],
            &page.query(),
            Some(("chat group", group_id)),
        )
        .await
    }

    /// Every reconstruction record of a group, oldest chat first.
    pub fn chat_group_audio(
        &self,
        group_id: &str,
    ) -> impl Stream<Item = Result<ReturnChatAudioReconstruction, ClientError>> + Send + 'static
    {
        let (this, id) = (self.clone(), group_id.to_string());
        paginate(None, move |n| {
            let (this, id) = (this.clone(), id.clone());
            async move {
                this.chat_group_audio_page(&id, PageRequest::full(n, true))
                    .await
            }
        })
    }

    // ---- downloads -----------------------------------------------------------------------

    /// Streams the file at `url` (a `signed_audio_url`) into `out`, chunk by chunk, never
    /// holding it whole. `progress(done, total)` is called after every chunk (`total` from
    /// `Content-Length`, when sent). The API key is **not** sent: signed URLs carry their own
    /// authorisation and may point at another host (an S3 bucket). Returns the bytes written.
    pub async fn download<W: AsyncWrite + Unpin>(
        &self,
        url: &str,
        out: &mut W,
        mut progress: impl FnMut(u64, Option<u64>),
    ) -> Result<u64, ClientError> {
        let url = self.base.join(url).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            reason: format!("not a URL: {e}"),
        })?;
        let resp = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| self.network(e))?;
        let resp = self.check(resp, None).await?;
        let total = resp.content_length();
        progress(0, total);
        let mut done = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.network(e))?;
            out.write_all(&chunk).await.map_err(ClientError::Write)?;
            done += chunk.len() as u64;
            progress(done, total);
        }
        out.flush().await.map_err(ClientError::Write)?;
        if let Some(total) = total.filter(|t| *t != done) {
            return Err(ClientError::Network {
                base_url: self.base_url().to_string(),
                reason: format!("the download stopped after {done} of {total} bytes"),
            });
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_a_base_path_and_encode_ids() {
        let c = Client::new("https://example.com/prefix/", None).unwrap();
        assert_eq!(
            c.url(&["v0", "evi", "chats", "a/b c"]).as_str(),
            "https://example.com/prefix/v0/evi/chats/a%2Fb%20c"
        );
        assert_eq!(c.base_url(), "https://example.com/prefix");
        let c = Client::new("http://127.0.0.1:8080", None).unwrap();
        assert_eq!(
            c.url(&["v0", "evi", "chat_groups"]).as_str(),
            "http://127.0.0.1:8080/v0/evi/chat_groups"
        );
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in ["127.0.0.1:8080", "ftp://x", "not a url", "mailto:me@x"] {
            let err = Client::new(bad, None).unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidBaseUrl { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn errors_read_as_one_line() {
        let e = ClientError::Unauthorized {
            message: "invalid API key".into(),
        };
        assert_eq!(
            e.to_string(),
            "the API key was rejected (401): invalid API key"
        );
        let e = ClientError::NotFound {
            what: "chat",
            id: "x".into(),
            message: String::new(),
        };
        assert_eq!(e.to_string(), "no chat with id x (404)");
        assert_eq!(e.status(), Some(404));
    }
}
