//! Versioned resources of the EVI platform API: prompts, tools and configs (spec
//! `evi-platform.md` §2–§4), stored per account by [`ResourceStore`].
//!
//! The three kinds share one storage model. A resource has an id, a name (shared by all its
//! versions) and the creation time of its first version; each version has a number, an
//! optional description, the time it was made (or its description last changed) and a body,
//! the kind's fields as JSON text that the server writes and reads (the store never looks
//! inside). A config version also records what it references (prompts and tools, each at a
//! fixed version or the latest), so that a referenced prompt or tool cannot be deleted.
//!
//! Rules every backend keeps (the conformance scenarios in `conformance/resources.rs`):
//! - Creating makes version 0; a new version is the highest number ever issued + 1, so a
//!   deleted number is never reused.
//! - Versions are immutable but for their description, whose change sets `modified_on`.
//! - Renaming renames every version; `created_on` is the first version's creation time.
//! - Deleting the last version deletes the resource.
//! - Deleting a prompt or tool, or one version of it, that a config version references is
//!   refused ([`Deleted::Referenced`]): a fixed reference holds its version, a reference to
//!   the latest holds the resource (and so its last remaining version).
//! - Everything is scoped by account: another account's ids are absent.

use crate::{Page, PageRequest, StoreError, StoreResult};
use async_trait::async_trait;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// What a versioned resource is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// A system prompt (`/v0/evi/prompts`).
    Prompt,
    /// A user-defined tool (`/v0/evi/tools`).
    Tool,
    /// An EVI config (`/v0/evi/configs`).
    Config,
}

impl ResourceKind {
    /// The name stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Prompt => "prompt",
            ResourceKind::Tool => "tool",
            ResourceKind::Config => "config",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "prompt" => Ok(ResourceKind::Prompt),
            "tool" => Ok(ResourceKind::Tool),
            "config" => Ok(ResourceKind::Config),
            other => Err(format!("unknown resource kind `{other}`")),
        }
    }
}

/// One stored version of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceVersion {
    /// The resource's id.
    pub id: Uuid,
    /// The resource's name (all versions share it).
    pub name: String,
    /// The version number.
    pub version: i64,
    /// The version's description.
    pub version_description: Option<String>,
    /// Epoch ms when the resource's first version was created.
    pub created_on: i64,
    /// Epoch ms when this version was created, or its description last changed.
    pub modified_on: i64,
    /// The kind's fields, JSON text as the server wrote it.
    pub body: String,
}

/// A reference of a config version to a prompt or tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceRef {
    /// [`ResourceKind::Prompt`] or [`ResourceKind::Tool`].
    pub kind: ResourceKind,
    /// The referenced resource.
    pub id: Uuid,
    /// A fixed version, or `None` for whatever version is the latest when it is used.
    pub version: Option<i64>,
}

/// A prompt created together with the config version that references it (a config posted
/// with `prompt: {text}`): version 0 of a new prompt, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlinePrompt {
    /// The new prompt's id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its body.
    pub body: String,
}

/// A version to store (the first one of a new resource, or the next one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVersion {
    /// The kind's fields as JSON text.
    pub body: String,
    /// The version's description.
    pub version_description: Option<String>,
    /// What a config version references; each must exist (for the same account) when the
    /// version is stored, after `inline_prompt` is created.
    pub references: Vec<ResourceRef>,
    /// A prompt to create first (configs only).
    pub inline_prompt: Option<InlinePrompt>,
    /// Epoch ms: the new version's `modified_on` (and `created_on` of a new resource).
    pub now_ms: i64,
}

/// Which versions a listing returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceFilter {
    /// Only the versions of this resource.
    pub id: Option<Uuid>,
    /// Only resources with exactly this name.
    pub name: Option<String>,
    /// Only the newest version of each resource.
    pub most_recent_only: bool,
}

/// What storing a version did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Stored; the new version as it reads back.
    Stored(ResourceVersion),
    /// Nothing stored: the resource to add a version to does not exist for this account.
    NotFound,
    /// Nothing stored: this reference names no existing prompt/tool (version) of the account.
    MissingReference(ResourceRef),
}

/// A config version that holds a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// The config's id.
    pub config_id: Uuid,
    /// Its name.
    pub name: String,
    /// The config version holding the reference.
    pub version: i64,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted (with the resource itself if this was its last version).
    Done,
    /// Nothing deleted: no such resource (or version) for this account.
    NotFound,
    /// Nothing deleted: these config versions reference it (by config id, then version).
    Referenced(Vec<Referrer>),
}

/// Storage of the account's prompts, tools and configs. Part of every [`crate::Store`].
///
/// The default methods fail: they exist for test doubles of [`crate::Store`] that keep no
/// such resources. Both backends implement every method.
#[async_trait]
pub trait ResourceStore: Send + Sync {
    /// Creates resource `id` of `kind` with its version 0.
    async fn create_resource(
        &self,
        _user_id: Uuid,
        _kind: ResourceKind,
        _id: Uuid,
        _name: &str,
        _first: &NewVersion,
    ) -> StoreResult<Written> {
        Err(unsupported())
    }

    /// Adds the next version (highest ever issued + 1) to an existing resource.
    async fn add_resource_version(
        &self,
        _user_id: Uuid,
        _kind: ResourceKind,
        _id: Uuid,
        _next: &NewVersion,
    ) -> StoreResult<Written> {
        Err(unsupported())
    }

    /// One version of a resource; `None` for its newest one.
    async fn get_resource_version(
        &self,
        _user_id: Uuid,
        _kind: ResourceKind,
        _id: Uuid,
        _version: Option<i64>,
    ) -> StoreResult<Option<ResourceVersion>> {
        Err(unsupported())
    }

    /// The account's versions of `kind` that pass `filter`, by the resource's `created_on`,
    /// then resource id, then version, ascending.
    async fn list_resources(
        &self,
        _user_id: Uuid,
        _kind: ResourceKind,
        _filter: &ResourceFilter,
        _page: PageRequest,
    ) -> StoreResult<Page<ResourceVersion>> {
        Err(unsupported())
    }

    /// Renames every version; false if there is no such resource.
    async fn rename_resource(
        &self,
        _user_id: Uuid,
        _kind: ResourceKind,
        _id: Uuid,
        _name: &str,
    ) -> StoreResult<bool> {
        Err(unsupported())
    }

    /// Sets (or clears) a version's description and its `modified_on`; the updated version,
    /// or `None` if there is no such version.
    async fn describe_resource_version(
        &self,
        _user_id: Uuid,
        _kind: ResourceKind,
        _id: Uuid,
        _version: i64,
        _description: Option<&str>,
        _now_ms: i64,
    ) -> StoreResult<Option<ResourceVersion>> {
        Err(unsupported())
    }

    /// Deletes one version (`Some`) or every version (`None`) of a resource.
    async fn delete_resource(
        &self,
        _user_id: Uuid,
        _kind: ResourceKind,
        _id: Uuid,
        _version: Option<i64>,
    ) -> StoreResult<Deleted> {
        Err(unsupported())
    }
}

fn unsupported() -> StoreError {
    StoreError::Database("this store keeps no prompts, tools or configs".into())
}
