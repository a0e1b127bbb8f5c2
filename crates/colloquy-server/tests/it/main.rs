//! Integration tests: the real server on port 0, real sockets, SQLite and PostgreSQL.
//! One test binary for the whole crate (link time matters on small machines).

mod audio;
mod client_voice;
mod configs;
mod control;
mod disk_full;
mod expression;
mod fuzz;
mod harness;
mod hostile;
mod isolation;
mod limits;
mod pipeline;
mod relay;
mod rest;
mod session;
mod slow_client;
mod tts;
mod webhooks;
