//! Integration tests of colloquy-speech: the real espeak-ng voice (also without its data
//! files), turn detection on its speech, and the OpenAI-compatible clients against fake
//! services over real HTTP. One test binary for the whole crate.

mod espeak_without_data;
mod speech;
