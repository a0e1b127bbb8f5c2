//! Listings' totals and pages through every change: the totals come from counts the
//! store maintains, and pages past the middle are read from the other end, so every page
//! of every size, in both orders, is checked against the chats as they are.

use super::support::*;
use crate::*;
use colloquy_wire::{ChatStatus, EventRole, EventType};
use uuid::Uuid;

/// Every page of `size` of a listing, concatenated; checks each page's total.
async fn all_pages<T, F, Fut>(size: u32, ascending: bool, want_total: usize, list: F) -> Vec<T>
where
    F: Fn(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Page<T>>,
{
    let mut out = Vec::new();
    for number in 0.. {
        let got = list(page(number, size, ascending)).await;
        assert_eq!(
            got.total as usize, want_total,
            "total, page {number} of {size}"
        );
        if got.items.is_empty() {
            assert!(
                number as usize * size as usize >= want_total,
                "page {number} of {size} is empty before the end ({want_total})"
            );
            break;
        }
        assert!(got.items.len() <= size as usize);
        out.extend(got.items);
    }
    out
}

/// What `list_chats` must return for `filter`, oldest first.
pub(super) fn expected(chats: &[ChatRecord], filter: &ChatFilter) -> Vec<Uuid> {
    let mut want: Vec<&ChatRecord> = chats
        .iter()
        .filter(|c| filter.status.is_none_or(|s| c.status == s))
        .filter(|c| {
            filter
                .config_id
                .as_deref()
                .is_none_or(|f| c.config_id.as_deref() == Some(f))
        })
        .collect();
    want.sort_by_key(|c| (c.start_timestamp, c.id));
    want.iter().map(|c| c.id).collect()
}

async fn check_chat_listings(store: &dyn Store, who: &Principal, ids: &[Uuid]) {
    let mut chats = Vec::new();
    for id in ids {
        if let Some(c) = store.get_chat(who.user_id, *id).await.unwrap() {
            chats.push(c);
        }
    }
    let filters = [
        ChatFilter::default(),
        ChatFilter {
            status: Some(ChatStatus::Active),
            ..Default::default()
        },
        ChatFilter {
            status: Some(ChatStatus::UserEnded),
            ..Default::default()
        },
        ChatFilter {
            status: Some(ChatStatus::Error),
            ..Default::default()
        },
        ChatFilter {
            config_id: Some("cfg-a".into()),
            ..Default::default()
        },
        ChatFilter {
            status: Some(ChatStatus::UserEnded),
            config_id: Some("cfg-b".into()),
            ..Default::default()
        },
        ChatFilter {
            config_id: Some(String::new()),
            ..Default::default()
        },
    ];
    for filter in &filters {
        let want = expected(&chats, filter);
        for size in [1, 2, 3, 7, 50] {
            for ascending in [true, false] {
                let got = all_pages(size, ascending, want.len(), |p| async move {
                    store.list_chats(who.user_id, filter, p).await.unwrap()
                })
                .await;
                let mut got: Vec<Uuid> = got.iter().map(|c| c.id).collect();
                if !ascending {
                    got.reverse();
                }
                assert_eq!(
                    got, want,
                    "{filter:?}, pages of {size}, ascending {ascending}"
                );
            }
        }
    }
}

pub async fn listings_count_every_change(store: &dyn Store) {
    let who = new_account(store, true).await;
    let other = new_account(store, true).await;
    let instance = Uuid::new_v4();
    store.heartbeat_instance(instance, 1_000).await.unwrap();
    let configs = [Some("cfg-a"), Some("cfg-b"), None];
    let mut ids = Vec::new();
    let mut groups = Vec::new();
    for i in 0..17i64 {
        // Every third chat resumes the group before it; start times not in insert order.
        let group = match (i % 3, groups.last()) {
            (2, Some(g)) => GroupChoice::Resume(*g),
            _ => {
                let g = Uuid::new_v4();
                groups.push(g);
                GroupChoice::New(g)
            }
        };
        let start = 10_000 + (i * 7919) % 97;
        let (id, out) =
            start_chat(store, &who, group, start, configs[i as usize % 3], instance).await;
        assert_eq!(out, OpOutcome::Applied);
        ids.push(id);
    }
    // Another account's chats are never counted here.
    for i in 0..4 {
        start_chat(
            store,
            &other,
            GroupChoice::New(Uuid::new_v4()),
            10_000 + i,
            Some("cfg-a"),
            instance,
        )
        .await;
    }
    check_chat_listings(store, &who, &ids).await;

    // Ending chats moves them between statuses.
    for id in ids.iter().step_by(2) {
        end_chat(store, &who, *id, 20_000).await;
    }
    check_chat_listings(store, &who, &ids).await;

    // The chats of a server that stopped end in ERROR.
    store.heartbeat_instance(instance, 1_000).await.unwrap();
    let closed = store.close_orphaned_chats(5_000).await.unwrap();
    assert!(closed > 0);
    check_chat_listings(store, &who, &ids).await;

    // Erased chats leave the totals.
    let erased = store.delete_chats(who.user_id, &ids[3..6]).await.unwrap();
    assert_eq!(erased.len(), 3);
    check_chat_listings(store, &who, &ids).await;

    // Groups, by their most recent config; resuming with another config moves the group.
    let g = groups[0];
    let (resumed, _) = start_chat(
        store,
        &who,
        GroupChoice::Resume(g),
        30_000,
        Some("cfg-z"),
        instance,
    )
    .await;
    ids.push(resumed);
    check_chat_listings(store, &who, &ids).await;
    let mut all_groups = Vec::new();
    for g in &groups {
        if let Some(r) = store.get_chat_group(who.user_id, *g).await.unwrap() {
            all_groups.push(r);
        }
    }
    for config in [None, Some("cfg-z"), Some("cfg-a"), Some("")] {
        let mut want: Vec<&GroupRecord> = all_groups
            .iter()
            .filter(|r| config.is_none_or(|c| r.most_recent_config_id.as_deref() == Some(c)))
            .collect();
        want.sort_by_key(|r| (r.first_start_timestamp, r.id));
        let want: Vec<Uuid> = want.iter().map(|r| r.id).collect();
        if config == Some("cfg-z") {
            assert_eq!(want, vec![g]);
        }
        for size in [1, 2, 5] {
            for ascending in [true, false] {
                let got = all_pages(size, ascending, want.len(), |p| async move {
                    store
                        .list_chat_groups(who.user_id, config, p)
                        .await
                        .unwrap()
                })
                .await;
                let mut got: Vec<Uuid> = got.iter().map(|r| r.id).collect();
                if !ascending {
                    got.reverse();
                }
                assert_eq!(
                    got, want,
                    "groups of {config:?}, pages of {size}, {ascending}"
                );
            }
        }
    }

    // A group's chats, by status and not.
    let in_group: Vec<ChatRecord> = {
        let mut v = Vec::new();
        for id in &ids {
            if let Some(c) = store.get_chat(who.user_id, *id).await.unwrap() {
                if c.chat_group_id == g {
                    v.push(c);
                }
            }
        }
        v
    };
    assert!(in_group.len() >= 2);
    for status in [None, Some(ChatStatus::Active)] {
        let filter = ChatFilter {
            status,
            ..Default::default()
        };
        let want = expected(&in_group, &filter);
        for size in [1, 2] {
            for ascending in [true, false] {
                let got = all_pages(size, ascending, want.len(), |p| async move {
                    store.list_group_chats(g, status, p).await.unwrap()
                })
                .await;
                let mut got: Vec<Uuid> = got.iter().map(|c| c.id).collect();
                if !ascending {
                    got.reverse();
                }
                assert_eq!(got, want, "group chats {status:?}, pages of {size}");
            }
        }
    }

    // A chat's events, from either end.
    let chat = resumed;
    let events: Vec<NewEvent> = (1..=12)
        .map(|seq| {
            event(
                seq,
                30_000 + seq,
                EventRole::User,
                EventType::UserMessage,
                &format!("m{seq}"),
            )
        })
        .collect();
    store
        .apply_batch(&[WriteOp::AppendEvents {
            api_key_id: who.api_key_id,
            chat_id: chat,
            events,
        }])
        .await
        .unwrap();
    let want: Vec<i64> = (0..=12).collect();
    for size in [1, 2, 5, 13, 20] {
        for ascending in [true, false] {
            let got = all_pages(size, ascending, want.len(), |p| async move {
                store.list_chat_events(chat, p).await.unwrap()
            })
            .await;
            let mut got: Vec<i64> = got.iter().map(|e| e.seq).collect();
            if !ascending {
                got.reverse();
            }
            assert_eq!(got, want, "events, pages of {size}, ascending {ascending}");
        }
    }

    // The other account saw none of it.
    let theirs = store
        .list_chats(other.user_id, &ChatFilter::default(), page(0, 10, true))
        .await
        .unwrap();
    assert_eq!(theirs.total, 4);
    assert_eq!(theirs.items.len(), 4);
}
