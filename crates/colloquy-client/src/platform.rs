//! The EVI platform API's prompts, tools and configs (`/v0/evi/{prompts,tools,configs}`):
//! the newest version of each, the versions of one, one version, and creating one from a
//! JSON body as the API takes it.

use crate::paging::{paginate, PageRequest, Paged};
use crate::{Client, ClientError, API_KEY_HEADER, REQUEST_TIMEOUT};
use colloquy_wire::*;
use futures::Stream;
use serde::de::DeserializeOwned;

/// One of the three versioned resource kinds of the platform API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `/v0/evi/prompts`.
    Prompts,
    /// `/v0/evi/tools`.
    Tools,
    /// `/v0/evi/configs`.
    Configs,
}

impl Resource {
    /// The path segment (`prompts`).
    pub fn segment(self) -> &'static str {
        match self {
            Resource::Prompts => "prompts",
            Resource::Tools => "tools",
            Resource::Configs => "configs",
        }
    }

    /// One of them in messages (`prompt`).
    pub fn what(self) -> &'static str {
        match self {
            Resource::Prompts => "prompt",
            Resource::Tools => "tool",
            Resource::Configs => "config",
        }
    }
}

impl Paged for ReturnPagedPrompts {
    type Item = ReturnPrompt;
    fn total_pages(&self) -> i64 {
        self.total_pages
    }
    fn into_items(self) -> Vec<ReturnPrompt> {
        self.prompts_page
    }
}

impl Paged for ReturnPagedUserDefinedTools {
    type Item = ReturnUserDefinedTool;
    fn total_pages(&self) -> i64 {
        self.total_pages
    }
    fn into_items(self) -> Vec<ReturnUserDefinedTool> {
        self.tools_page
    }
}

impl Paged for ReturnPagedConfigs {
    type Item = ReturnConfig;
    fn total_pages(&self) -> i64 {
        self.total_pages
    }
    fn into_items(self) -> Vec<ReturnConfig> {
        self.configs_page
    }
}

impl Client {
    /// One page of `GET /v0/evi/{kind}` (`id` `None`: the newest version of each) or of
    /// `GET /v0/evi/{kind}/{id}` (every version of one), oldest first.
    pub async fn resource_page<P: DeserializeOwned>(
        &self,
        kind: Resource,
        id: Option<&str>,
        page: PageRequest,
    ) -> Result<P, ClientError> {
        let q = page.query();
        match id {
            None => {
                self.get_json(&["v0", "evi", kind.segment()], &q, None)
                    .await
            }
            Some(id) => {
                self.get_json(
                    &["v0", "evi", kind.segment(), id],
                    &q,
                    Some((kind.what(), id)),
                )
                .await
            }
        }
    }

    /// Every prompt (its newest version), or every version of prompt `id`.
    pub fn prompts(
        &self,
        id: Option<&str>,
    ) -> impl Stream<Item = Result<ReturnPrompt, ClientError>> + Send + 'static {
        self.resources::<ReturnPagedPrompts>(Resource::Prompts, id)
    }

    /// Every tool (its newest version), or every version of tool `id`.
    pub fn tools(
        &self,
        id: Option<&str>,
    ) -> impl Stream<Item = Result<ReturnUserDefinedTool, ClientError>> + Send + 'static {
        self.resources::<ReturnPagedUserDefinedTools>(Resource::Tools, id)
    }

    /// Every config (its newest version), or every version of config `id`.
    pub fn configs(
        &self,
        id: Option<&str>,
    ) -> impl Stream<Item = Result<ReturnConfig, ClientError>> + Send + 'static {
        self.resources::<ReturnPagedConfigs>(Resource::Configs, id)
    }

    fn resources<P>(
        &self,
        kind: Resource,
        id: Option<&str>,
    ) -> impl Stream<Item = Result<P::Item, ClientError>> + Send + 'static
    where
        P: Paged + DeserializeOwned + Send + 'static,
        P::Item: Send + 'static,
    {
        let (this, id) = (self.clone(), id.map(str::to_string));
        paginate(None, move |n| {
            let (this, id) = (this.clone(), id.clone());
            async move {
                this.resource_page::<P>(kind, id.as_deref(), PageRequest::full(n, true))
                    .await
            }
        })
    }

    /// `GET /v0/evi/configs/{id}/version/{version}`.
    pub async fn config_version(
        &self,
        id: &str,
        version: i64,
    ) -> Result<ReturnConfig, ClientError> {
        let v = version.to_string();
        self.get_json(
            &["v0", "evi", "configs", id, "version", &v],
            &[],
            Some(("config", id)),
        )
        .await
    }

    /// `POST /v0/evi/{kind}` with `body` (the JSON the API takes, e.g. a `PostedConfig`):
    /// creates version 0 and returns it as the server does (`ReturnPrompt`,
    /// `ReturnUserDefinedTool` or `ReturnConfig`). A refusal is [`ClientError::Http`] with
    /// the server's `code` and `message` (`400`: what to fix, naming the field).
    pub async fn create_resource<T: DeserializeOwned>(
        &self,
        kind: Resource,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        self.post_json(&["v0", "evi", kind.segment()], body, None)
            .await
    }

    /// `POST /v0/evi/{kind}/{id}` with `body`: the next version of `id`, as the server
    /// returns it (like [`Client::create_resource`]; 404 when there is no such resource).
    pub async fn create_version<T: DeserializeOwned>(
        &self,
        kind: Resource,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        self.post_json(
            &["v0", "evi", kind.segment(), id],
            body,
            Some((kind.what(), id)),
        )
        .await
    }

    async fn post_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &serde_json::Value,
        not_found: Option<(&'static str, &str)>,
    ) -> Result<T, ClientError> {
        let url = self.url(segments);
        let mut req = self
            .http
            .post(url.clone())
            .json(body)
            .timeout(REQUEST_TIMEOUT);
        if let Some(key) = &self.api_key {
            req = req.header(API_KEY_HEADER, key);
        }
        let resp = req.send().await.map_err(|e| self.network(e))?;
        let resp = self.check(resp, not_found).await?;
        let bytes = resp.bytes().await.map_err(|e| self.network(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }
}
