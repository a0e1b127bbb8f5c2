//! The OpenAPI 3.1 document served at `GET /openapi.json`.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Every REST endpoint and schema.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Colloquy",
        description = "Self-hosted EVI chat history (chats, chat groups, chat events and audio \
                       reconstruction) with configs, prompts and tools, wire-compatible with \
                       Hume's EVI API."
    ),
    paths(
        crate::rest::list_chats,
        crate::rest::list_chat_events,
        crate::rest::get_chat_audio,
        crate::rest::list_chat_groups,
        crate::rest::get_chat_group,
        crate::rest::list_chat_group_events,
        crate::rest::get_chat_group_audio,
        crate::rest::delete_chat,
        crate::rest::delete_chat_group,
        crate::download::download,
        crate::auth::token,
        crate::control::send::send,
        crate::server::healthz,
        crate::webhooks::routes::list_deliveries,
        crate::webhooks::routes::retry_delivery,
    ),
    modifiers(&Security, &EmptyQueryValues),
    tags(
        (name = "chats", description = "Chats and their events"),
        (name = "chat_groups", description = "Chat groups"),
        (name = "audio", description = "Signed downloads of reconstructed audio"),
        (name = "auth", description = "Access tokens"),
        (name = "ops", description = "Operations"),
        (name = "prompts", description = "System prompts, versioned"),
        (name = "tools", description = "User-defined tools, versioned"),
        (name = "configs", description = "EVI configs, versioned"),
        (name = "webhooks", description = "Deliveries of chat webhooks (Colloquy extension)"),
        (name = "control_plane", description = "Messages into live chats"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Hume-Api-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// Declares `allowEmptyValue: true` on every optional query parameter: the server treats
/// an empty value (`config_id=`) as the parameter not given (`crate::params::Query`), and
/// the document says so, so generated clients and fuzzers agree with the server.
///
/// utoipa has no field for `allowEmptyValue` (deprecated, though still valid, in OpenAPI
/// 3.1); specification extensions are serialized flat into the parameter object, so the
/// keyword goes in that way.
struct EmptyQueryValues;

impl Modify for EmptyQueryValues {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::Required;
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for p in operation.parameters.iter_mut().flatten() {
                    if matches!(p.parameter_in, ParameterIn::Query)
                        && !matches!(p.required, Required::True)
                    {
                        p.extensions
                            .get_or_insert_with(Default::default)
                            .insert("allowEmptyValue".into(), true.into());
                    }
                }
            }
        }
    }
}

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    // Prompts, tools and configs (`crate::platform`), then the query-parameter rule for
    // their paths too.
    doc.merge(crate::platform::PlatformDoc::openapi());
    EmptyQueryValues.modify(&mut doc);
    doc
}
