//! Which page of a list to ask for: `page_number`, `page_size` and `ascending_order`, as
//! every list endpoint takes them. One type for the server's handlers, the storage
//! backends and the client.

/// Largest `page_size` the API accepts.
pub const MAX_PAGE_SIZE: u32 = 100;

/// A zero-based page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Zero-based page index.
    pub number: u32,
    /// Items per page, 1 to [`MAX_PAGE_SIZE`] at the API edge.
    pub size: u32,
    /// Oldest first when true (the API's default), newest first when false.
    pub ascending: bool,
}

impl PageRequest {
    /// Page `number` of [`MAX_PAGE_SIZE`] items.
    pub fn full(number: u32, ascending: bool) -> Self {
        PageRequest {
            number,
            size: MAX_PAGE_SIZE,
            ascending,
        }
    }

    /// Rows to skip.
    pub fn offset(&self) -> i64 {
        self.number as i64 * self.size as i64
    }

    /// Number of pages for `total` items at this size.
    pub fn total_pages(&self, total: u64) -> i64 {
        let size = self.size.max(1) as i64;
        (total as i64 + size - 1) / size
    }

    /// As query pairs.
    pub fn query(&self) -> [(&'static str, String); 3] {
        [
            ("page_number", self.number.to_string()),
            ("page_size", self.size.to_string()),
            ("ascending_order", self.ascending.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_pages_and_query() {
        let p = PageRequest {
            number: 3,
            size: 10,
            ascending: false,
        };
        assert_eq!(p.offset(), 30);
        assert_eq!(p.total_pages(0), 0);
        assert_eq!(p.total_pages(31), 4);
        assert_eq!(
            p.query(),
            [
                ("page_number", "3".to_string()),
                ("page_size", "10".to_string()),
                ("ascending_order", "false".to_string())
            ]
        );
        assert_eq!(PageRequest::full(2, true).size, MAX_PAGE_SIZE);
    }
}
