//! Formatting shared by the client commands: local times, durations, offsets, aligned tables,
//! JSON on stdout.

use chrono::{Local, TimeZone};
use serde::Serialize;
use std::fmt::Display;
use std::io::Write;

/// `2024-05-20 15:42:20` in `tz`; the raw number when out of range.
pub fn date_time_in<Tz: TimeZone>(tz: &Tz, epoch_ms: i64) -> String
where
    Tz::Offset: Display,
{
    match tz.timestamp_millis_opt(epoch_ms).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => epoch_ms.to_string(),
    }
}

/// `2024-05-20 15:42:20` in the local time zone.
pub fn local_date_time(epoch_ms: i64) -> String {
    date_time_in(&Local, epoch_ms)
}

/// RFC 3339 with milliseconds and the zone's offset, e.g. `2024-05-20T15:42:20.648+02:00`.
pub fn rfc3339_in<Tz: TimeZone>(tz: &Tz, epoch_ms: i64) -> String
where
    Tz::Offset: Display,
{
    match tz.timestamp_millis_opt(epoch_ms).single() {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        None => epoch_ms.to_string(),
    }
}

/// A length of time: `0:07`, `12:34`, `1:02:03` (negative clamps to zero).
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// An offset from a start with milliseconds: `+0:01.234`, `+1:02:03.004`.
pub fn offset(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "+" };
    let ms = ms.abs();
    let (total_s, milli) = (ms / 1000, ms % 1000);
    let (h, m, s) = (total_s / 3600, total_s / 60 % 60, total_s % 60);
    if h > 0 {
        format!("{sign}{h}:{m:02}:{s:02}.{milli:03}")
    } else {
        format!("{sign}{m}:{s:02}.{milli:03}")
    }
}

/// Text on one line: runs of whitespace (including newlines) become one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` on one line, cut to at most `max` characters (with `…` when cut).
pub fn excerpt(text: &str, max: usize) -> String {
    let line = one_line(text);
    if line.chars().count() <= max {
        return line;
    }
    let cut: String = line.chars().take(max.saturating_sub(1)).collect();
    format!("{}\u{2026}", cut.trim_end())
}

/// A plain table: a header row and rows, columns padded to their widest cell and separated
/// by two spaces; the last column is not padded.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row (as many cells as there are headers).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if c + 1 < row.len() {
                    let pad = widths[c] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Writes `text` to stdout.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Pretty JSON of `value` on stdout, with a final newline.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    #[test]
    fn times_and_lengths() {
        assert_eq!(date_time_in(&Utc, 1716244940648), "2024-05-20 22:42:20");
        let east = FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(date_time_in(&east, 1716244940648), "2024-05-21 00:42:20");
        assert_eq!(
            rfc3339_in(&east, 1716244940648),
            "2024-05-21T00:42:20.648+02:00"
        );
        assert_eq!(duration(7_900), "0:07");
        assert_eq!(duration(754_000), "12:34");
        assert_eq!(duration(3_723_000), "1:02:03");
        assert_eq!(duration(-5), "0:00");
        assert_eq!(offset(1_234), "+0:01.234");
        assert_eq!(offset(3_723_004), "+1:02:03.004");
        assert_eq!(offset(-250), "-0:00.250");
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["ID", "STATUS", "NOTE"]);
        t.row(vec!["a".into(), "USER_ENDED".into(), "x".into()]);
        t.row(vec!["bbbb".into(), "ACTIVE".into(), "".into()]);
        assert_eq!(
            t.render(),
            "ID    STATUS      NOTE\na     USER_ENDED  x\nbbbb  ACTIVE\n"
        );
    }

    #[test]
    fn one_line_collapses_whitespace() {
        assert_eq!(one_line("a\n\nb  c\t"), "a b c");
        assert_eq!(excerpt("a\nb", 10), "a b");
        assert_eq!(excerpt("abcdef ghij", 8), "abcdef\u{2026}");
    }
}
