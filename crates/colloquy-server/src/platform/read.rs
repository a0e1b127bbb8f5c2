//! Reads for the rest of the server (the web UI): one config version as the REST API shapes
//! it, so the UI shows exactly what `GET /v0/evi/configs/{id}/version/{version}` answers.

use super::configs::Configs;
use super::{Kind, Resolver};
use crate::error::ApiError;
use crate::state::AppState;
use colloquy_storage::ResourceKind;
use colloquy_wire::ReturnConfig;
use uuid::Uuid;

/// Version `version` of the account's config `id` (its newest version for `None`), shaped as
/// `ReturnConfig` (prompt and tools resolved); `None` when there is no such config or version.
pub(crate) async fn config_version(
    state: &AppState,
    user_id: Uuid,
    id: Uuid,
    version: Option<i64>,
) -> Result<Option<ReturnConfig>, ApiError> {
    let Some(found) = state
        .store
        .get_resource_version(user_id, ResourceKind::Config, id, version)
        .await?
    else {
        return Ok(None);
    };
    Configs::shape(&mut Resolver::new(state, user_id), found)
        .await
        .map(Some)
}
