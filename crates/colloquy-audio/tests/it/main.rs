//! Integration tests of colloquy-audio: real inputs in, MP4 out (decoded with ffmpeg, an
//! independent decoder), the capture-time probe, the streaming WebM/Opus decoder and the
//! bounded memory of a long reconstruction. One test binary for the whole crate.

// The helpers stay in tests/common: the WebM stream decoder's unit tests include them too.
#[path = "../common/mod.rs"]
mod common;

mod memory;
mod probe;
mod reconstruct;
mod webm_stream;
