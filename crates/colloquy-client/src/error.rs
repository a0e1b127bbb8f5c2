//! The client's error type: one variant per way a call can fail, each rendering as one line.

use std::fmt::Write as _;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered 401: the API key (or token) is missing, wrong or revoked.
    #[error("the API key was rejected (401): {message}")]
    Unauthorized {
        /// The server's explanation (`message` of its error body).
        message: String,
    },
    /// The server answered 404 for a resource named by id.
    #[error("no {what} with id {id} (404)")]
    NotFound {
        /// What was looked up: `chat`, `chat group`, …
        what: &'static str,
        /// The id asked for.
        id: String,
        /// The server's explanation.
        message: String,
    },
    /// Any other non-2xx answer.
    #[error("the server answered {status}: {message}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// `code` of the error body (`invalid_parameter`, …), when there was one.
        code: Option<String>,
        /// `message` of the error body, or the reason phrase when the body was not one.
        message: String,
    },
    /// The server could not be reached (refused, DNS, TLS, timeout, connection dropped).
    #[error("could not reach {base_url}: {reason}")]
    Network {
        /// The base URL in use.
        base_url: String,
        /// The innermost cause, e.g. `Connection refused (os error 111)`.
        reason: String,
    },
    /// A 2xx answer whose body is not the expected JSON.
    #[error("unexpected answer from {url}: {reason}")]
    Decode {
        /// The URL called.
        url: String,
        /// What did not parse.
        reason: String,
    },
    /// The base URL given is not a usable `http(s)://` URL.
    #[error("invalid base URL `{url}`: {reason}")]
    InvalidBaseUrl {
        /// What was given.
        url: String,
        /// Why it is not usable.
        reason: String,
    },
    /// Writing downloaded bytes failed.
    #[error("could not write the download: {0}")]
    Write(#[source] std::io::Error),
}

impl ClientError {
    /// The HTTP status the server answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Unauthorized { .. } => Some(401),
            ClientError::NotFound { .. } => Some(404),
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for a 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::NotFound { .. })
    }
}

/// Every cause of `e`, innermost last, joined on one line without repeats
/// (reqwest wraps hyper wraps io; the outer messages add only "error sending request").
pub(crate) fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    // The outermost reqwest message repeats the URL; the causes are what a person needs.
    let useful: Vec<&String> = if parts.len() > 1 {
        parts[1..].iter().collect()
    } else {
        parts.iter().collect()
    };
    let mut out = String::new();
    for (i, p) in useful.iter().enumerate() {
        if i > 0 {
            out.push_str(": ");
        }
        let _ = write!(out, "{}", p.replace('\n', " "));
    }
    out
}
