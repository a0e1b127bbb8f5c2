//! Colloquy's server: the chat WebSocket, the chat-history REST API, authentication, and
//! the plumbing that ties them to a storage backend.
//!
//! `build_router(state)` and `start(settings, listener)` are exposed for tests; the
//! `colloquy` binary is a thin wrapper.

pub mod auth;
pub mod capture;
pub mod clock;
pub mod config;
pub mod control;
pub mod download;
pub mod engine;
pub mod error;
pub mod keys;
pub mod limits;
pub mod live;
pub mod objects;
pub mod openapi;
pub mod params;
pub mod platform;
pub mod reconstruction;
pub mod recorder;
pub mod rest;
pub mod server;
pub mod session;
pub mod signing;
pub mod state;
pub mod telemetry;
pub mod tts;
pub mod ui;
pub mod webhooks;
pub mod worker;

pub use config::Settings;
pub use server::{build_router, open_store, start, RunningServer};
