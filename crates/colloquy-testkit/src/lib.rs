//! Colloquy's test kit: the one real-server harness of the server's integration tests
//! (`crates/colloquy-server/tests/it`), the CLI tests (`crates/colloquy/tests/cli.rs`) and the
//! benchmarks (`crates/colloquy-bench`).
//!
//! * [`TestServer`]: the real server (`colloquy_server::start`) on 127.0.0.1:0 in the test's
//!   runtime, against SQLite in a temp dir or a throwaway PostgreSQL database
//!   ([`Backend`], [`on_each_backend`]), with keys, a chat socket and REST calls.
//! * [`ServerThread`]: the same server on a runtime and OS threads of its own, for the
//!   benchmarks (their clients compete with it only for CPU, as two processes would).
//! * [`socket`]: chat sockets ([`Ws`], [`open_chat`]) and JSON frames ([`send_json`],
//!   [`recv_json`], [`next_json`], [`recv_close`], [`recv_until_close`]).
//! * [`http`]: REST calls with an API key ([`get_json`], [`delete_json`]).
//! * [`audio`]: test signals ([`tone`], [`wav`]) and the linear16 query of a chat socket.
//! * [`process`]: runs one test alone in a fresh process of its test binary
//!   ([`alone_in_own_process`]), for what a process can do only once or must measure alone.
//!
//! Everything but [`audio`] and [`process`] is behind the default `server` feature;
//! colloquy-audio and colloquy-speech (which the server depends on) use the kit without it.

pub mod audio;
pub mod process;

#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
mod server;
#[cfg(feature = "server")]
pub mod socket;
#[cfg(feature = "server")]
mod thread;

pub use audio::{tone, wav, LINEAR16_16K_MONO};
pub use process::alone_in_own_process;

#[cfg(feature = "server")]
pub use colloquy_storage_postgres::testing::TestDatabase;
#[cfg(feature = "server")]
pub use http::{delete_json, get_json};
#[cfg(feature = "server")]
pub use server::{on_each_backend, settings, start_server, Backend, TestServer};
#[cfg(feature = "server")]
pub use socket::{
    keyed_request, next_json, open_chat, recv_close, recv_json, recv_until_close, send_json, types,
    Ws,
};
#[cfg(feature = "server")]
pub use thread::ServerThread;
