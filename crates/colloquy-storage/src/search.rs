//! How a search string becomes the words both backends look for.

/// Most words a search may hold (each is one index probe).
pub const MAX_SEARCH_TERMS: usize = 16;

/// The words of a search: maximal runs of letters and digits, lowercased, without
/// repeats, in order of first appearance. Everything else (punctuation, quotes, operators)
/// only separates words, so no input can reach a backend's query syntax.
///
/// A chat matches when every word occurs in its user or assistant messages, as a whole word
/// or as the start of one (`hel` finds "Hello").
pub fn search_terms(input: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in input.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let word = word.to_lowercase();
        if !terms.contains(&word) {
            terms.push(word);
        }
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_everything_but_letters_and_digits() {
        assert_eq!(
            search_terms(r#"  Hello, "wörld" OR x* -NEAR(a b) hello 42"#),
            ["hello", "wörld", "or", "x", "near", "a", "b", "42"]
        );
        assert!(search_terms(" \"*()- ").is_empty());
    }
}
