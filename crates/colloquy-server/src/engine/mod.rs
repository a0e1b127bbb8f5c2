//! Speech engines: what answers in a chat.
//!
//! The mode comes from `[engine]` (globally, and per API key under `[engine.keys]`):
//!
//! * [`EngineMode::Client`] (default): the client drives the chat (`user_input`,
//!   `assistant_input`, …) and the session loop answers it itself.
//! * [`EngineMode::Relay`]: the chat is relayed to an upstream EVI-compatible socket
//!   ([`relay`]); the session loop forwards both ways and records what passes.
//! * [`EngineMode::Pipeline`]: Colloquy answers itself through OpenAI-compatible services
//!   ([`pipeline`]: turn detection + transcription, a streamed LLM, speech), with
//!   emotion scores of the user's speech from an optional [`expression`] service.
//!
//! The session loop (`crate::session`) is the same for every mode: authentication,
//! validation, recording, timeouts and the chat lifecycle do not depend on the engine.

pub mod expression;
pub mod pipeline;
pub mod relay;

pub use crate::config::EngineMode;
use crate::state::AppState;
use colloquy_storage::Principal;

/// The engine mode of a chat opened by `who`: its key's override, else the global mode.
pub async fn mode_for(state: &AppState, who: &Principal) -> EngineMode {
    let engine = &state.settings.engine;
    if engine.keys.is_empty() {
        return engine.mode;
    }
    let prefix = match state.store.list_api_keys().await {
        Ok(keys) => keys
            .into_iter()
            .find(|k| k.id == who.api_key_id)
            .map(|k| k.prefix),
        Err(e) => {
            tracing::warn!(error = %e, "could not read API keys for [engine.keys]; using the global engine mode");
            None
        }
    };
    engine.mode_for(prefix.as_deref())
}
