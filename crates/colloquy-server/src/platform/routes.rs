//! The routes of the 27 operations and their OpenAPI paths.

use super::{configs, prompts, tools};
use crate::state::AppState;

/// The 27 routes (behind authentication and its failure limit, like the other REST routes).
pub fn router() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/v0/evi/prompts",
            get(prompts::list_prompts).post(prompts::create_prompt),
        )
        .route(
            "/v0/evi/prompts/{id}",
            get(prompts::list_prompt_versions)
                .post(prompts::create_prompt_version)
                .delete(prompts::delete_prompt)
                .patch(prompts::update_prompt_name),
        )
        .route(
            "/v0/evi/prompts/{id}/version/{version}",
            get(prompts::get_prompt_version)
                .delete(prompts::delete_prompt_version)
                .patch(prompts::update_prompt_description),
        )
        .route(
            "/v0/evi/tools",
            get(tools::list_tools).post(tools::create_tool),
        )
        .route(
            "/v0/evi/tools/{id}",
            get(tools::list_tool_versions)
                .post(tools::create_tool_version)
                .delete(tools::delete_tool)
                .patch(tools::update_tool_name),
        )
        .route(
            "/v0/evi/tools/{id}/version/{version}",
            get(tools::get_tool_version)
                .delete(tools::delete_tool_version)
                .patch(tools::update_tool_description),
        )
        .route(
            "/v0/evi/configs",
            get(configs::list_configs).post(configs::create_config),
        )
        .route(
            "/v0/evi/configs/{id}",
            get(configs::list_config_versions)
                .post(configs::create_config_version)
                .delete(configs::delete_config)
                .patch(configs::update_config_name),
        )
        .route(
            "/v0/evi/configs/{id}/version/{version}",
            get(configs::get_config_version)
                .delete(configs::delete_config_version)
                .patch(configs::update_config_description),
        )
}

/// The OpenAPI paths of the 27 operations (nested into [`crate::openapi::ApiDoc`]).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    prompts::list_prompts,
    prompts::create_prompt,
    prompts::list_prompt_versions,
    prompts::create_prompt_version,
    prompts::delete_prompt,
    prompts::update_prompt_name,
    prompts::get_prompt_version,
    prompts::delete_prompt_version,
    prompts::update_prompt_description,
    tools::list_tools,
    tools::create_tool,
    tools::list_tool_versions,
    tools::create_tool_version,
    tools::delete_tool,
    tools::update_tool_name,
    tools::get_tool_version,
    tools::delete_tool_version,
    tools::update_tool_description,
    configs::list_configs,
    configs::create_config,
    configs::list_config_versions,
    configs::create_config_version,
    configs::delete_config,
    configs::update_config_name,
    configs::get_config_version,
    configs::delete_config_version,
    configs::update_config_description,
))]
pub struct PlatformDoc;
