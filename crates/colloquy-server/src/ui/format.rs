//! How times, durations and ids are written on the pages.

use chrono::{DateTime, NaiveDate};
use uuid::Uuid;

/// An instant as the pages show it: ISO 8601 UTC for `<time datetime>` (the browser turns it
/// into local time) and a readable UTC fallback for the element's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// `2026-01-02T03:04:05.678Z`.
    pub iso: String,
    /// `2026-01-02 03:04:05 UTC`.
    pub text: String,
}

/// An epoch-millisecond instant as a [`Stamp`].
pub fn stamp(ms: i64) -> Stamp {
    match DateTime::from_timestamp_millis(ms) {
        Some(t) => Stamp {
            iso: t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            text: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        },
        None => Stamp {
            iso: String::new(),
            text: ms.to_string(),
        },
    }
}

/// A length of time in words: `0 s`, `42 s`, `3 min 05 s`, `1 h 02 min`.
pub fn duration(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h} h {m:02} min")
    } else if m > 0 {
        format!("{m} min {s:02} s")
    } else {
        format!("{s} s")
    }
}

/// A position in a chat: `01:23`, or `1:02:03` past an hour.
pub fn offset(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}

/// The short form of an id on screen: `…` and its last 8 hex digits. Chat and group ids
/// are UUIDv7, whose leading digits are the creation time (every chat started in the same
/// minute shares its first 8); the last 8 are random in every UUID version, so they tell
/// ids apart. Pages show the whole id on hover (`title`) with a copy button.
pub fn short_id(id: &Uuid) -> String {
    short_text(&id.to_string())
}

/// [`short_id`] of an id held as text (a config id as a chat recorded it): the last 8
/// characters after `…`, or the whole text when it is that short already.
pub fn short_text(id: &str) -> String {
    let chars: Vec<char> = id.trim().chars().collect();
    if chars.len() <= 9 {
        return chars.into_iter().collect();
    }
    let tail: String = chars[chars.len() - 8..].iter().collect();
    format!("\u{2026}{tail}")
}

/// A `YYYY-MM-DD` date (as `<input type=date>` sends it).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

/// Epoch ms of the midnight that starts `date` in a zone `tz_minutes` east of UTC.
pub fn midnight_ms(date: NaiveDate, tz_minutes: i32) -> i64 {
    let utc_midnight = date
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis();
    utc_midnight - tz_minutes as i64 * 60_000
}

/// A score as shown next to emotion names: two decimals.
pub fn score(v: f64) -> String {
    format!("{v:.2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        let s = stamp(1_716_244_940_648);
        assert_eq!(s.iso, "2024-05-20T22:42:20.648Z");
        assert_eq!(s.text, "2024-05-20 22:42:20 UTC");
    }

    #[test]
    fn durations_and_offsets() {
        assert_eq!(duration(0), "0 s");
        assert_eq!(duration(42_900), "42 s");
        assert_eq!(duration(185_000), "3 min 05 s");
        assert_eq!(duration(3_725_000), "1 h 02 min");
        assert_eq!(duration(-5), "0 s");
        assert_eq!(offset(83_000), "01:23");
        assert_eq!(offset(3_723_000), "1:02:03");
    }

    #[test]
    fn dates_in_the_viewers_zone() {
        let d = parse_date("2024-05-20").unwrap();
        assert_eq!(midnight_ms(d, 0), 1_716_163_200_000);
        // Midnight in UTC+2 is 22:00 UTC the day before.
        assert_eq!(midnight_ms(d, 120), 1_716_163_200_000 - 7_200_000);
        assert!(parse_date("20/05/2024").is_none());
        assert!(parse_date("2024-02-30").is_none());
    }

    #[test]
    fn short_ids() {
        let id = Uuid::parse_str("0192f0c4-1b2c-7d3e-8f40-123456789abc").unwrap();
        assert_eq!(short_id(&id), "\u{2026}56789abc");
        // Two UUIDv7 of the same millisecond differ in their short forms.
        let a = Uuid::parse_str("0192f0c4-1b2c-7d3e-8f40-123456789abc").unwrap();
        let b = Uuid::parse_str("0192f0c4-1b2c-7a11-9b22-fedcba987654").unwrap();
        assert_ne!(short_id(&a), short_id(&b));
        assert_eq!(short_text("abc"), "abc");
        assert_eq!(short_text("not-a-uuid-at-all"), "\u{2026}d-at-all");
    }
}
