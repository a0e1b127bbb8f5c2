//! What of an utterance's `description` the built-in voice can express. espeak-ng has a
//! language (and accent), a male/female variant, a pitch and a rate; Hume's descriptions
//! are free-form acting directions. Colloquy looks for words that map onto those four
//! controls and ignores the rest of the text (documented in docs/decisions.md).
//!
//! - Pace (any voice): `fast`, `quick(ly)`, `rapid(ly)`, `hurried`, `excited` → 1.25×;
//!   `slow(ly)`, `measured`, `deliberate`, `calm`, `relaxed` → 0.8×.
//! - Pitch (built-in voice): `high`, `high-pitched`, `squeaky`, `childlike` → +20;
//!   `deep`, `low`, `low-pitched`, `baritone`, `bass`, `gravelly` → −20.
//! - Only when the request names no voice (the description then designs one, built-in
//!   voice only): a language or accent (`British`, `Scottish`, `American`, `German`,
//!   `French`, `Spanish`, `Italian`, `Portuguese`, `Brazilian`, `Dutch`, `Russian`,
//!   `Japanese`, `Mandarin`, `Hindi`, …) picks the espeak-ng voice, and `male`/`masculine`/
//!   `man` or `female`/`feminine`/`woman` the variant.

use super::library::{EngineKind, VoiceSettings};

const ACCENTS: &[(&str, &str)] = &[
    ("british", "en"),
    ("english", "en"),
    ("scottish", "en-gb-scotland"),
    ("scots", "en-gb-scotland"),
    ("american", "en-us"),
    ("caribbean", "en-029"),
    ("german", "de"),
    ("french", "fr"),
    ("spanish", "es"),
    ("mexican", "es-419"),
    ("italian", "it"),
    ("portuguese", "pt"),
    ("brazilian", "pt-br"),
    ("dutch", "nl"),
    ("russian", "ru"),
    ("polish", "pl"),
    ("swedish", "sv"),
    ("japanese", "ja"),
    ("mandarin", "cmn"),
    ("chinese", "cmn"),
    ("hindi", "hi"),
    ("korean", "ko"),
    ("arabic", "ar"),
    ("turkish", "tr"),
];

fn words(description: &str) -> Vec<String> {
    description
        .split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Applies `description` to `settings`; `design`: no voice was named, so the language and
/// gender may change too.
pub fn apply(description: &str, settings: &mut VoiceSettings, design: bool) {
    let words = words(description);
    let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
    if has(&[
        "fast", "quick", "quickly", "rapid", "rapidly", "hurried", "excited",
    ]) {
        settings.speed *= 1.25;
    } else if has(&[
        "slow",
        "slowly",
        "measured",
        "deliberate",
        "calm",
        "relaxed",
    ]) {
        settings.speed *= 0.8;
    }
    if settings.engine != EngineKind::Builtin {
        return;
    }
    if has(&["high", "high-pitched", "squeaky", "childlike"]) {
        settings.pitch = (settings.pitch + 20).min(100);
    } else if has(&["deep", "low", "low-pitched", "baritone", "bass", "gravelly"]) {
        settings.pitch = settings.pitch.saturating_sub(20);
    }
    if !design {
        return;
    }
    let (base, variant) = match settings.engine_voice.split_once('+') {
        Some((b, v)) => (b.to_string(), Some(v.to_string())),
        None => (settings.engine_voice.clone(), None),
    };
    let base = ACCENTS
        .iter()
        .find(|(w, _)| words.iter().any(|x| x == w))
        .map(|(_, v)| v.to_string())
        .unwrap_or(base);
    let variant = if has(&["female", "feminine", "woman", "girl", "lady"]) {
        Some("f3".to_string())
    } else if has(&["male", "masculine", "man", "boy", "gentleman"]) {
        Some("m3".to_string())
    } else {
        variant
    };
    settings.engine_voice = match variant {
        Some(v) => format!("{base}+{v}"),
        None => base,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(voice: &str) -> VoiceSettings {
        VoiceSettings {
            engine: EngineKind::Builtin,
            engine_voice: voice.into(),
            speed: 1.0,
            pitch: 50,
        }
    }

    #[test]
    fn a_description_designs_a_voice_only_without_one() {
        let mut s = builtin("en-us");
        apply(
            "Middle-aged masculine voice with a clear, rhythmic Scots lilt, deep and slow",
            &mut s,
            true,
        );
        assert_eq!(s.engine_voice, "en-gb-scotland+m3");
        assert_eq!(s.pitch, 30);
        assert!((s.speed - 0.8).abs() < 1e-9);
        let mut s = builtin("en-us+f3");
        apply("A French woman, speaking quickly", &mut s, false);
        assert_eq!(
            s.engine_voice, "en-us+f3",
            "a named voice keeps its language"
        );
        assert!((s.speed - 1.25).abs() < 1e-9);
    }
}
