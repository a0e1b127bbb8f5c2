//! The real server on 127.0.0.1:0 and its clients come from the test kit
//! (`crates/colloquy-testkit`); here are the helpers only this suite uses: the built-in
//! voice's answers and WAV chunks.

pub use colloquy_testkit::{
    on_each_backend, recv_close, recv_json, recv_until_close, send_json, tone, types, wav, Backend,
    TestServer, Ws,
};
use serde_json::Value;

/// `ms` of a sine tone at 0.4 of full scale, as a WAV file (what the fake speech services
/// answer).
pub fn tone_wav(freq: f64, rate: u32, ms: u32) -> Vec<u8> {
    let samples = (0..rate * ms / 1000)
        .map(|i| {
            let v = (2.0 * std::f64::consts::PI * freq * f64::from(i) / f64::from(rate)).sin();
            (v * 0.4 * f64::from(i16::MAX)) as i16
        })
        .collect();
    colloquy_speech::encode_wav(&colloquy_speech::Pcm::new(samples, rate))
}

/// The audio of a base64 WAV chunk (`audio_output` and `audio_input` messages' `data`).
pub fn wav_chunk_pcm(msg: &Value) -> colloquy_speech::Pcm {
    let wav = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        msg["data"].as_str().unwrap(),
    )
    .expect("base64 data");
    colloquy_speech::decode_wav(&wav).expect("a WAV chunk")
}

/// Reads the answer to an `assistant_input` with `text`: its `assistant_message`, the
/// `audio_output` chunks of its speech (each checked: the message's `id`, `index` 0, 1, …;
/// with the default configuration the built-in voice speaks), up to `assistant_end`.
/// Returns the message and the decoded chunks.
pub async fn recv_answer(ws: &mut Ws, text: &str) -> (Value, Vec<colloquy_speech::Pcm>) {
    let message = recv_json(ws).await;
    assert_eq!(message["type"], "assistant_message", "{message}");
    assert_eq!(message["message"]["content"], text, "{message}");
    let mut chunks = Vec::new();
    loop {
        let m = recv_json(ws).await;
        if m["type"] == "assistant_end" {
            return (message, chunks);
        }
        assert_eq!(m["type"], "audio_output", "{m}");
        assert_eq!(m["id"], message["id"], "{m}");
        assert_eq!(m["index"], chunks.len(), "{m}");
        chunks.push(wav_chunk_pcm(&m));
    }
}
