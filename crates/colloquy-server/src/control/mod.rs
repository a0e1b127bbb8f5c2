//! The EVI control plane (spec `evi-platform.md` §6): `POST /v0/evi/chat/{chat_id}/send`
//! posts a client message into a live chat ([`send`]), and `WSS
//! /v0/evi/chat/{chat_id}/connect` attaches an observer to it ([`observe`]). Both reach the
//! chat's session through the registry of live chats (`crate::live`), where the session
//! handles the message exactly as one from its own client.
//!
//! Errors ([`ControlError`]): `404` `ErrorResponse` for a chat that is unknown, another
//! account's, or no longer active; `422` `HTTPValidationError` for a body that is not a
//! client message the control plane takes.

mod error;
mod history;
pub mod observe;
pub mod send;

pub use error::ControlError;

use crate::session::messages::MAX_TEXT_BYTES;
use colloquy_wire::socket::ClientMessage;

/// Checks that `raw` is a client message the control plane takes (any but `audio_input`),
/// with the same rules as the chat socket: a message that names the field to fix.
pub fn check_message(raw: &str) -> Result<(), (Vec<&'static str>, String)> {
    let msg = match ClientMessage::parse(raw) {
        Ok((m, _)) => m,
        Err(e) => return Err((vec!["body"], e.message().to_string())),
    };
    match &msg {
        ClientMessage::AudioInput(_) => Err((
            vec!["body", "type"],
            "audio_input cannot be sent through the control plane; audio comes from the \
             chat's own client"
                .into(),
        )),
        ClientMessage::SessionSettings(s) => {
            crate::session::settings::validate(s).map_err(|m| (vec!["body", "session_settings"], m))
        }
        ClientMessage::UserInput(i) | ClientMessage::AssistantInput(i)
            if i.text.len() > MAX_TEXT_BYTES =>
        {
            Err((
                vec!["body", "text"],
                format!(
                    "`text` is {} bytes; at most {MAX_TEXT_BYTES} bytes are accepted in one \
                     message, so split it into several",
                    i.text.len()
                ),
            ))
        }
        _ => Ok(()),
    }
}
