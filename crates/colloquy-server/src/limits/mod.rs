//! Abuse limits (`[limits]`), all on by default with generous values or off until set:
//!
//! * [`auth`]: failed authentications per client address (answered `429` past the limit);
//! * [`account`]: per account, client messages per second (`E0105`) and, for accounts whose
//!   chats are not stored, open chats (`E0203`; for every other account the database counts
//!   `ACTIVE` chats over all servers when a chat starts).
//!
//! The header-read timeout is part of the server's accept loop (`crate::server`).

pub mod account;
pub mod auth;

pub use account::{AccountLimits, OpenChat};
pub use auth::*;
