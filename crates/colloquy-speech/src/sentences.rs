//! Incremental sentence splitting for streamed model output.
//!
//! Feed text deltas as they arrive with [`SentenceSplitter::push`]; it returns every
//! sentence completed so far, and [`SentenceSplitter::finish`] returns the rest. A sentence
//! ends at `.`, `!`, `?`, `…` (or `。！？`) followed by whitespace — so nothing is decided
//! until the next character arrives and "3.5" or "example.com" never split — and at line
//! breaks. A period does not end a sentence after common abbreviations ("e.g.", "i.e.",
//! "Mr.", "Dr.", "vs.", …) or a single-letter initial ("J. Smith"). Closing quotes and
//! brackets after the punctuation stay with the sentence. Text longer than
//! [`SentenceSplitter::max_chars`] without an end is cut at a comma, semicolon or space, so
//! speech can start early.

/// Abbreviations (lowercase, without the final period) after which a period is not a
/// sentence end.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "al", "cf", "approx",
    "fig", "inc", "ltd", "co", "mt", "a.m", "p.m", "u.s", "u.k", "jan", "feb", "mar", "apr", "jun",
    "jul", "aug", "sep", "sept", "oct", "nov", "dec",
];

/// Default for [`SentenceSplitter::max_chars`].
pub const DEFAULT_MAX_CHARS: usize = 300;

/// Splits streamed text into sentences.
#[derive(Debug, Clone)]
pub struct SentenceSplitter {
    buffer: String,
    /// Longest sentence before a forced cut.
    pub max_chars: usize,
}

impl Default for SentenceSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl SentenceSplitter {
    /// An empty splitter with [`DEFAULT_MAX_CHARS`].
    pub fn new() -> Self {
        Self {
            buffer: String::new(),
            max_chars: DEFAULT_MAX_CHARS,
        }
    }

    /// Adds a delta; returns the sentences it completed (trimmed, never empty).
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.buffer.push_str(delta);
        let mut out = Vec::new();
        while let Some(end) = self.find_end() {
            let rest = self.buffer.split_off(end);
            let sentence = std::mem::replace(&mut self.buffer, rest);
            let sentence = sentence.trim();
            if !sentence.is_empty() {
                out.push(sentence.to_string());
            }
        }
        out
    }

    /// The text not yet returned (trimmed), if any; the splitter is empty afterwards.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buffer);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// Text received but not yet returned.
    pub fn pending(&self) -> &str {
        &self.buffer
    }

    /// Byte offset just after the first complete sentence in the buffer.
    fn find_end(&self) -> Option<usize> {
        let text = &self.buffer;
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        for (k, &(i, c)) in chars.iter().enumerate() {
            if c == '\n' {
                if text[..i].trim().is_empty() {
                    continue;
                }
                return Some(i + 1);
            }
            let terminal = matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？');
            if !terminal {
                continue;
            }
            // CJK punctuation needs no following space.
            if matches!(c, '。' | '！' | '？') {
                return Some(i + c.len_utf8());
            }
            // Skip further terminals and closing quotes/brackets.
            let mut j = k + 1;
            while j < chars.len()
                && matches!(
                    chars[j].1,
                    '.' | '!' | '?' | '…' | '"' | '\'' | '”' | '’' | ')' | ']' | '»'
                )
            {
                j += 1;
            }
            if j >= chars.len() {
                return None; // wait for the next character
            }
            if !chars[j].1.is_whitespace() {
                continue; // "3.5", "example.com", "e.g"
            }
            if c == '.' && j == k + 1 && self.is_abbreviation(i) {
                continue;
            }
            return Some(chars[j].0);
        }
        if text.chars().count() > self.max_chars {
            return Self::forced_cut(text, self.max_chars);
        }
        None
    }

    /// Whether the period at byte `dot` follows an abbreviation or an initial.
    fn is_abbreviation(&self, dot: usize) -> bool {
        let before = &self.buffer[..dot];
        let word = before
            .rsplit(|c: char| c.is_whitespace() || c == '(' || c == '"')
            .next()
            .unwrap_or("");
        let lower = word.to_lowercase();
        if word.chars().count() == 1 && word.chars().all(char::is_alphabetic) {
            return word.chars().all(char::is_uppercase); // "J. Smith", not "a."
        }
        ABBREVIATIONS.contains(&lower.as_str())
    }

    fn forced_cut(text: &str, max_chars: usize) -> Option<usize> {
        let limit = text
            .char_indices()
            .nth(max_chars)
            .map_or(text.len(), |(i, _)| i);
        let head = &text[..limit];
        for pattern in [", ", "; ", ": ", " "] {
            if let Some(i) = head.rfind(pattern) {
                if i > 0 {
                    return Some(i + pattern.len());
                }
            }
        }
        Some(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_streamed(text: &str, piece: usize) -> Vec<String> {
        let mut s = SentenceSplitter::new();
        let mut out = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for chunk in chars.chunks(piece) {
            out.extend(s.push(&chunk.iter().collect::<String>()));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn splits_sentences_however_the_text_is_streamed() {
        let text = "Hello there! It costs 3.5 dollars, e.g. at the shop. Mr. Smith and J. R. Tolkien agree. \
                    Really?! \"Yes.\" See example.com for more… Okay\nNew line here. Last one";
        let expected = vec![
            "Hello there!",
            "It costs 3.5 dollars, e.g. at the shop.",
            "Mr. Smith and J. R. Tolkien agree.",
            "Really?!",
            "\"Yes.\"",
            "See example.com for more…",
            "Okay",
            "New line here.",
            "Last one",
        ];
        for piece in [1, 2, 3, 7, 1000] {
            assert_eq!(split_streamed(text, piece), expected, "pieces of {piece}");
        }
    }

    #[test]
    fn waits_for_the_next_character() {
        let mut s = SentenceSplitter::new();
        assert!(s.push("The value is 3.").is_empty());
        assert!(s.push("5").is_empty());
        assert_eq!(s.push(" today. And"), vec!["The value is 3.5 today."]);
        assert_eq!(s.pending(), " And");
        assert_eq!(s.finish().as_deref(), Some("And"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn long_text_is_cut_at_a_comma() {
        let mut s = SentenceSplitter::new();
        s.max_chars = 40;
        let out = s.push("one two three four five six seven, eight nine ten eleven twelve");
        assert_eq!(out, vec!["one two three four five six seven,"]);
        assert_eq!(s.finish().as_deref(), Some("eight nine ten eleven twelve"));
    }

    #[test]
    fn lowercase_single_letter_ends_a_sentence() {
        assert_eq!(
            split_streamed("Press a. Then go.", 4),
            vec!["Press a.", "Then go."]
        );
    }
}
