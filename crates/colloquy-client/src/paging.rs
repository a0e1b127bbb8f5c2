//! Paging: every list endpoint answers one page plus `total_pages`; [`paginate`] turns that
//! into a stream of items that fetches page after page until the last one.

use crate::ClientError;
use colloquy_wire::*;
use futures::stream::{self, Stream, TryStreamExt};
use std::future::Future;

pub use colloquy_wire::{PageRequest, MAX_PAGE_SIZE};

/// A paged response: its items and how many pages there are in all.
pub trait Paged {
    /// One element of the page.
    type Item;
    /// `total_pages` at this page size.
    fn total_pages(&self) -> i64;
    /// The page's items.
    fn into_items(self) -> Vec<Self::Item>;
}

macro_rules! paged {
    ($ty:ty, $item:ty, $field:ident) => {
        impl Paged for $ty {
            type Item = $item;
            fn total_pages(&self) -> i64 {
                self.total_pages
            }
            fn into_items(self) -> Vec<$item> {
                self.$field
            }
        }
    };
}

paged!(ReturnPagedChats, ReturnChat, chats_page);
paged!(ReturnChatPagedEvents, ReturnChatEvent, events_page);
paged!(ReturnPagedChatGroups, ReturnChatGroup, chat_groups_page);
paged!(ReturnChatGroupPagedChats, ReturnChat, chats_page);
paged!(ReturnChatGroupPagedEvents, ReturnChatEvent, events_page);
paged!(
    ReturnChatGroupPagedAudioReconstructions,
    ReturnChatAudioReconstruction,
    audio_reconstructions_page
);

/// Streams the items of page 0, 1, 2, … as returned by `fetch(page_number)`, stopping after
/// page `total_pages - 1` or at the first empty page (whichever comes first). Pages are
/// fetched lazily: a consumer that stops early (e.g. `.take(n)`) makes no further calls.
///
/// `first`, when given, is page 0 already fetched (for example to read a chat's header).
pub fn paginate<P, F, Fut>(
    first: Option<P>,
    fetch: F,
) -> impl Stream<Item = Result<P::Item, ClientError>>
where
    P: Paged,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<P, ClientError>>,
{
    stream::try_unfold(
        (fetch, first, Some(0u32)),
        |(mut fetch, first, next)| async move {
            let Some(number) = next else {
                return Ok(None);
            };
            let page = match (number, first) {
                (0, Some(page)) => page,
                _ => fetch(number).await?,
            };
            let total = page.total_pages();
            let items = page.into_items();
            let next = if items.is_empty() || i64::from(number) + 1 >= total {
                None
            } else {
                Some(number + 1)
            };
            Ok(Some((
                stream::iter(items.into_iter().map(Ok)),
                (fetch, None, next),
            )))
        },
    )
    .try_flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::cell::RefCell;

    fn page(n: i64, total: i64, items: &[&str]) -> ReturnChatGroupPagedEvents {
        ReturnChatGroupPagedEvents {
            id: "g".into(),
            page_number: n,
            page_size: 2,
            total_pages: total,
            pagination_direction: PaginationDirection::Asc,
            events_page: items
                .iter()
                .map(|t| ReturnChatEvent {
                    id: t.to_string(),
                    chat_id: "c".into(),
                    timestamp: 0,
                    role: EventRole::User,
                    event_type: EventType::UserMessage,
                    message_text: Some(t.to_string()),
                    emotion_features: None,
                    metadata: None,
                    related_event_id: None,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn pages_until_total_pages_and_no_further() {
        let calls = RefCell::new(Vec::new());
        let items: Vec<String> = paginate(None, |n| {
            calls.borrow_mut().push(n);
            let p = match n {
                0 => page(0, 3, &["a", "b"]),
                1 => page(1, 3, &["c", "d"]),
                2 => page(2, 3, &["e"]),
                _ => panic!("page {n} asked for"),
            };
            async move { Ok(p) }
        })
        .map_ok(|e| e.id)
        .try_collect()
        .await
        .unwrap();
        assert_eq!(items, ["a", "b", "c", "d", "e"]);
        assert_eq!(*calls.borrow(), [0, 1, 2]);
    }

    #[tokio::test]
    async fn stops_on_an_empty_page_and_uses_a_prefetched_first_page() {
        let calls = RefCell::new(Vec::new());
        let items: Vec<String> = paginate(Some(page(0, 9, &["a"])), |n| {
            calls.borrow_mut().push(n);
            let p = if n == 1 {
                page(1, 9, &[])
            } else {
                panic!("page {n}")
            };
            async move { Ok(p) }
        })
        .map_ok(|e| e.id)
        .try_collect()
        .await
        .unwrap();
        assert_eq!(items, ["a"]);
        assert_eq!(*calls.borrow(), [1], "page 0 was not fetched again");
    }

    #[tokio::test]
    async fn taking_a_few_items_fetches_only_the_pages_needed() {
        let calls = RefCell::new(0);
        let items: Vec<_> = paginate(None, |n| {
            *calls.borrow_mut() += 1;
            let p = page(n.into(), 50, &["x", "y"]);
            async move { Ok(p) }
        })
        .take(3)
        .collect()
        .await;
        assert_eq!(items.len(), 3);
        assert_eq!(*calls.borrow(), 2);
    }

    #[tokio::test]
    async fn an_error_ends_the_stream() {
        let items: Vec<_> = paginate(None, |n| async move {
            if n == 0 {
                Ok(page(0, 2, &["a"]))
            } else {
                Err(ClientError::Http {
                    status: 500,
                    code: None,
                    message: "boom".into(),
                })
            }
        })
        .collect()
        .await;
        assert_eq!(items.len(), 2);
        assert!(items[1].is_err());
    }
}
