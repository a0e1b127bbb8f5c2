//! Wire types of the EVI chat-history API and of the platform API (prompts, tools,
//! configs: [`platform`], [`platform_config`]), shared by the server, the CLI and tests.
//!
//! Field names, optionality and enum spellings follow `shared/spec/evi-api.md` §3 and §6
//! exactly (`evi-platform.md` §2–§4 for the platform API). Timestamps are integer epoch
//! milliseconds (spec §1.3).

#[macro_use]
pub mod enums;
pub mod error;
pub mod paging;
pub mod platform;
pub mod platform_config;
pub mod rest;
pub mod socket;
pub mod socket_error;

pub use enums::*;
pub use error::{ErrorResponse, HttpValidationError, ValidationError};
pub use paging::{PageRequest, MAX_PAGE_SIZE};
pub use platform::*;
pub use platform_config::*;
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

/// Emotion scores ranked strongest first; equal scores by name.
pub fn rank_emotions(scores: impl IntoIterator<Item = (String, f64)>) -> Vec<(String, f64)> {
    let mut ranked: Vec<(String, f64)> = scores.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked
}

/// Each emotion's mean over the score sets (e.g. the [`emotion_scores`] of a chat's user
/// messages) that score it — a set without the emotion does not count as a zero — ranked by
/// [`rank_emotions`]: strongest first, equal means by name.
pub fn mean_emotions<'a>(
    scores: impl IntoIterator<Item = &'a std::collections::BTreeMap<String, f64>>,
) -> Vec<(String, f64)> {
    let mut sums: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
    for set in scores {
        for (name, score) in set {
            let sum = sums.entry(name).or_default();
            sum.0 += score;
            sum.1 += 1;
        }
    }
    rank_emotions(
        sums.into_iter()
            .map(|(name, (sum, n))| (name.to_string(), sum / n as f64)),
    )
}

#[cfg(test)]
mod tests {
    use super::{emotion_scores, mean_emotions, rank_emotions};

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

    #[test]
    fn ranking_is_strongest_first_then_by_name() {
        let ranked = rank_emotions([
            ("Joy".to_string(), 0.25),
            ("Awe".to_string(), 0.5),
            ("Calmness".to_string(), 0.25),
            ("Anger".to_string(), -0.0),
            ("Boredom".to_string(), 0.0),
        ]);
        let names: Vec<&str> = ranked.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Awe", "Calmness", "Joy", "Boredom", "Anger"]);
    }

    #[test]
    fn means_count_only_the_sets_that_score_the_emotion() {
        let a = emotion_scores(r#"{"Joy":0.9,"Calmness":0.1,"Anger":0.3}"#).unwrap();
        let b = emotion_scores(r#"{"Joy":0.1,"Calmness":0.8,"Anger":0.3,"Zest":1}"#).unwrap();
        let c = emotion_scores(r#"{"Awe":0.45}"#).unwrap();
        let means = mean_emotions([&a, &b, &c]);
        let names: Vec<&str> = means.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Zest", "Joy", "Awe", "Calmness", "Anger"]);
        assert_eq!(means[0].1, 1.0, "Zest is scored once");
        assert!((means[1].1 - 0.5).abs() < 1e-12);
        assert!((means[3].1 - 0.45).abs() < 1e-12);
        assert!((means[4].1 - 0.3).abs() < 1e-12);
        assert!(mean_emotions([]).is_empty());
    }
}
