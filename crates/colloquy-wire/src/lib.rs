//! Wire types of the EVI chat-history API, shared by the server, the CLI and tests.
//!
//! Field names, optionality and enum spellings follow `shared/spec/evi-api.md` §3 and §6
//! exactly. Timestamps are integer epoch milliseconds (spec §1.3).

pub mod enums;
pub mod error;
pub mod rest;
pub mod socket;

pub use enums::*;
pub use error::ErrorResponse;
pub use rest::*;

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
