//! Query and path parameters of the REST API, validated with messages that say what to fix.

use crate::error::ApiError;
use colloquy_storage::PageRequest;
use colloquy_wire::ChatStatus;
use std::collections::HashMap;
use uuid::Uuid;

/// Largest `page_size`.
pub const MAX_PAGE_SIZE: i64 = 100;
/// Default `page_size`.
pub const DEFAULT_PAGE_SIZE: u32 = 10;

/// The raw query string, decoded into unique names.
pub struct Query(HashMap<String, String>);

impl Query {
    /// Decodes `a=1&b=2`; a repeated name is an error (even if one of its values is empty).
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned() {
            if map.contains_key(&k) {
                return Err(ApiError::invalid(format!(
                    "query parameter `{k}` is given more than once; give it once"
                )));
            }
            map.insert(k, v);
        }
        Ok(Query(map))
    }

    /// The value of `name`; an empty (or blank) value is the same as none, so that
    /// `config_id=` means "no config filter", as generated clients and forms send it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// `page_number`, `page_size`, `ascending_order`.
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let number = match self.get("page_number") {
            None => 0,
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if (0..=i64::from(u32::MAX)).contains(&n) => n as u32,
                Ok(n) => {
                    return Err(ApiError::invalid(format!(
                        "page_number must be between 0 and {} (got {n})",
                        u32::MAX
                    )))
                }
                Err(_) => {
                    return Err(ApiError::invalid(format!(
                        "page_number must be a whole number, 0 or greater (got `{v}`)"
                    )))
                }
            },
        };
        let size = match self.get("page_size") {
            None => DEFAULT_PAGE_SIZE,
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n as u32,
                Ok(n) => {
                    return Err(ApiError::invalid(format!(
                        "page_size must be between 1 and {MAX_PAGE_SIZE} inclusive (got {n})"
                    )))
                }
                Err(_) => {
                    return Err(ApiError::invalid(format!(
                        "page_size must be a whole number between 1 and {MAX_PAGE_SIZE} (got `{v}`)"
                    )))
                }
            },
        };
        let ascending = match self.get("ascending_order") {
            None => true,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                return Err(ApiError::invalid(format!(
                    "ascending_order must be `true` or `false` (got `{v}`)"
                )))
            }
        };
        Ok(PageRequest {
            number,
            size,
            ascending,
        })
    }

    /// `status`, one of the chat statuses.
    pub fn status(&self) -> Result<Option<ChatStatus>, ApiError> {
        self.get("status")
            .map(|v| {
                v.parse::<ChatStatus>()
                    .map_err(|e| ApiError::invalid(format!("status: {e}")))
            })
            .transpose()
    }

    /// `search`, full-text search words (see [`colloquy_storage::search_terms`]); `None` when
    /// absent or without any word.
    pub fn search(&self) -> Result<Option<String>, ApiError> {
        let Some(raw) = self.get("search") else {
            return Ok(None);
        };
        if raw.chars().count() > 1000 {
            return Err(ApiError::invalid(
                "search is longer than 1000 characters; search for fewer words",
            ));
        }
        let terms = colloquy_storage::search_terms(raw);
        if terms.len() > colloquy_storage::MAX_SEARCH_TERMS {
            return Err(ApiError::invalid(format!(
                "search has {} words; give at most {}",
                terms.len(),
                colloquy_storage::MAX_SEARCH_TERMS
            )));
        }
        Ok((!terms.is_empty()).then(|| terms.join(" ")))
    }

    /// `config_id`, a UUID (returned in canonical lowercase form).
    pub fn config_id(&self) -> Result<Option<String>, ApiError> {
        self.get("config_id")
            .map(|v| {
                Uuid::parse_str(v.trim())
                    .map(|u| u.to_string())
                    .map_err(|_| ApiError::invalid(format!("config_id must be a UUID (got `{v}`)")))
            })
            .transpose()
    }
}

/// A path id that must be a UUID.
pub fn path_uuid(what: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::invalid(format!(
            "{what} id must be a UUID such as 470a49f6-1dec-4afe-8b61-035d3b2d63b0 (got `{raw}`)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(q: &str) -> Result<PageRequest, String> {
        Query::parse(Some(q))
            .and_then(|q| q.page())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn pagination_defaults_and_bounds() {
        assert_eq!(
            page("").unwrap(),
            PageRequest {
                number: 0,
                size: 10,
                ascending: true
            }
        );
        assert_eq!(
            page("page_number=3&page_size=100&ascending_order=false").unwrap(),
            PageRequest {
                number: 3,
                size: 100,
                ascending: false
            }
        );
        assert!(page("page_size=0")
            .unwrap_err()
            .contains("between 1 and 100"));
        assert!(page("page_size=101").unwrap_err().contains("(got 101)"));
        assert!(page("page_number=-1")
            .unwrap_err()
            .contains("between 0 and"));
        assert!(page("page_number=x").unwrap_err().contains("whole number"));
        assert!(page("ascending_order=maybe")
            .unwrap_err()
            .contains("`true` or `false`"));
        assert!(page("page_size=1&page_size=2")
            .unwrap_err()
            .contains("more than once"));
    }

    #[test]
    fn filters() {
        let q = Query::parse(Some(
            "status=ACTIVE&config_id=1B4E28BA-2FA1-11D2-883F-0016D3CCA427",
        ))
        .unwrap();
        assert_eq!(q.status().unwrap(), Some(ChatStatus::Active));
        assert_eq!(
            q.config_id().unwrap().as_deref(),
            Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        );
        let q = Query::parse(Some("status=done&config_id=nope")).unwrap();
        assert!(q.status().is_err());
        assert!(q.config_id().is_err());
        // Empty values are not given.
        let q = Query::parse(Some(
            "status=&config_id=%20&search=&page_size=&page_number=&ascending_order=",
        ))
        .unwrap();
        assert_eq!(q.status().unwrap(), None);
        assert_eq!(q.config_id().unwrap(), None);
        assert_eq!(q.search().unwrap(), None);
        assert_eq!(q.page().unwrap(), page("").unwrap());
        assert!(path_uuid("chat", "your-chat-id").is_err());
    }
}
