//! Wire types of the EVI chat-history API, shared by the server, the CLI and tests.
//!
//! Field names, optionality and enum spellings follow `shared/spec/evi-api.md` §3 and §6
//! exactly. Timestamps are integer epoch milliseconds (spec §1.3).

pub mod enums;
pub mod error;
pub mod rest;
pub mod socket;
pub mod socket_error;

pub use enums::*;
pub use error::ErrorResponse;
pub use rest::*;
pub use socket_error::SocketError;

/// The 48 emotion names of `EmotionScores` (spec §6.6), in the SDK's order.
pub const EMOTION_NAMES: [&str; 48] = [
    "Admiration",
    "Adoration",
    "Aesthetic Appreciation",
    "Amusement",
    "Anger",
    "Anxiety",
    "Awe",
    "Awkwardness",
    "Boredom",
    "Calmness",
    "Concentration",
    "Confusion",
    "Contemplation",
    "Contempt",
    "Contentment",
    "Craving",
    "Desire",
    "Determination",
    "Disappointment",
    "Disgust",
    "Distress",
    "Doubt",
    "Ecstasy",
    "Embarrassment",
    "Empathic Pain",
    "Entrancement",
    "Envy",
    "Excitement",
    "Fear",
    "Guilt",
    "Horror",
    "Interest",
    "Joy",
    "Love",
    "Nostalgia",
    "Pain",
    "Pride",
    "Realization",
    "Relief",
    "Romance",
    "Sadness",
    "Satisfaction",
    "Shame",
    "Surprise (negative)",
    "Surprise (positive)",
    "Sympathy",
    "Tiredness",
    "Triumph",
];

/// The scores in an event's `emotion_features` (stringified JSON `{emotion: score}`), by
/// name. Entries that are not finite numbers are skipped; `None` when the string is empty,
/// not a JSON object, or holds no score.
pub fn emotion_scores(features: &str) -> Option<std::collections::BTreeMap<String, f64>> {
    let features = features.trim();
    if features.is_empty() {
        return None;
    }
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(features).ok()?;
    let scores: std::collections::BTreeMap<String, f64> = map
        .into_iter()
        .filter_map(|(k, v)| v.as_f64().filter(|f| f.is_finite()).map(|f| (k, f)))
        .collect();
    (!scores.is_empty()).then_some(scores)
}

#[cfg(test)]
mod tests {
    use super::emotion_scores;

    #[test]
    fn emotion_scores_are_the_numbers_of_an_object() {
        assert_eq!(emotion_scores(""), None);
        assert_eq!(emotion_scores("  "), None);
        assert_eq!(emotion_scores("[1,2]"), None);
        assert_eq!(emotion_scores("{}"), None);
        assert_eq!(emotion_scores("{not json"), None);
        assert_eq!(emotion_scores(r#"{"Joy":"high"}"#), None);
        let s = emotion_scores(r#" {"Joy":0.5,"Note":"x","Awe":1} "#).unwrap();
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            vec![("Awe".to_string(), 1.0), ("Joy".to_string(), 0.5)]
        );
    }
}
