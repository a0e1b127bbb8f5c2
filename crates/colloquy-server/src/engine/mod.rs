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
use crate::config::EngineSettings;
use colloquy_storage::Principal;

/// The engine mode of a chat opened by `who`: its key's override (by the key's prefix, from
/// the authenticated principal), else the global mode.
pub fn mode_for(engine: &EngineSettings, who: &Principal) -> EngineMode {
    engine.mode_for(Some(&who.key_prefix))
}
