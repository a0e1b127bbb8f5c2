//! `[tts]`: the text-to-speech API's voice library and generations.

use serde::{Deserialize, Serialize};

/// `[tts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtsSettings {
    /// How long a generation can be continued (`context.generation_id`) or saved as a
    /// voice, seconds.
    pub generation_ttl_secs: u64,
    /// The voices of the `[engine.pipeline.tts]` service listed in the library (an
    /// OpenAI-compatible speech API has no endpoint that lists them).
    pub service_voices: Vec<String>,
    /// Operator voices (`[[tts.voices]]`), added to the library; one with a built-in
    /// voice's name replaces it.
    pub voices: Vec<TtsVoiceSettings>,
}

impl Default for TtsSettings {
    fn default() -> Self {
        Self {
            generation_ttl_secs: 86_400,
            service_voices: [
                "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
                "shimmer",
            ]
            .map(String::from)
            .to_vec(),
            voices: Vec::new(),
        }
    }
}

/// One `[[tts.voices]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtsVoiceSettings {
    /// The name clients use (`{"name": …, "provider": "HUME_AI"}`).
    pub name: String,
    /// `builtin` (espeak-ng) or `service` (`[engine.pipeline.tts]`).
    #[serde(default = "builtin")]
    pub engine: String,
    /// The engine's voice: an espeak-ng voice such as `en-gb+m3`, or the service's voice
    /// name such as `nova`.
    pub engine_voice: String,
    /// Speed multiplier (1.0: the engine's normal rate).
    #[serde(default = "one")]
    pub speed: f64,
    /// Pitch, 0–100 (built-in voice only; 50 is its normal pitch).
    #[serde(default = "fifty")]
    pub pitch: u32,
    /// Shown in the UI and `colloquy voices`.
    #[serde(default)]
    pub description: Option<String>,
}

fn builtin() -> String {
    "builtin".into()
}
fn one() -> f64 {
    1.0
}
fn fifty() -> u32 {
    50
}

impl TtsSettings {
    /// Checks the values; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.generation_ttl_secs == 0 {
            return Err("tts.generation_ttl_secs must be at least 1".into());
        }
        for (i, v) in self.voices.iter().enumerate() {
            if v.name.trim().is_empty() {
                return Err(format!("tts.voices[{i}].name must not be blank"));
            }
            if !["builtin", "service"].contains(&v.engine.as_str()) {
                return Err(format!(
                    "tts.voices[{i}].engine must be `builtin` or `service`, not `{}`",
                    v.engine
                ));
            }
            if v.engine_voice.trim().is_empty() {
                return Err(format!("tts.voices[{i}].engine_voice must not be blank"));
            }
            if !(0.25..=4.0).contains(&v.speed) {
                return Err(format!("tts.voices[{i}].speed must be between 0.25 and 4"));
            }
            if v.pitch > 100 {
                return Err(format!("tts.voices[{i}].pitch must be between 0 and 100"));
            }
        }
        Ok(())
    }
}
