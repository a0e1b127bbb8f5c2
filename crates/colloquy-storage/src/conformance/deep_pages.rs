//! Deep pages of long listings, found through the bucket counts the store maintains
//! (`sql::buckets`): an account with thousands of chats spread over years, some in one
//! burst of the same milliseconds, moved between statuses, configs and groups and partly
//! erased; pages far from both ends are checked against the chats as they are.

use super::support::*;
use crate::sql::buckets::descend_after_for_tests;
use crate::*;
use colloquy_wire::{ChatStatus, EventRole, EventType};
use uuid::Uuid;

/// How deep a page must lie to be found through the buckets, in this scenario (the
/// server's [`crate::sql::buckets::DESCEND_AFTER`] would need tens of thousands of chats).
const DEEP: i64 = 500;

/// Chats of the account: enough that the middle lies more than [`DEEP`] rows from both
/// ends of the unfiltered listing, of a third of it (one config) and of its groups.
const CHATS: i64 = 6 * DEEP + 1_500;

/// A start time: a third of the chats in one burst inside one 17.5-minute bucket (many in
/// the same millisecond), the others spread over about four years.
fn start_of(i: i64) -> i64 {
    const BASE: i64 = 1_700_000_000_000;
    if i % 3 == 0 {
        BASE + 5_000_000 + (i % 41)
    } else {
        BASE + (i.wrapping_mul(2_654_435_761) & ((1 << 37) - 1))
    }
}

/// Pages of `size` around `offsets` of `want` (a listing in the order asked): each must be
/// the slice of `want` it names, with the whole listing's total.
async fn check_pages<T, F, Fut>(
    what: &str,
    want: &[Uuid],
    size: u32,
    ascending: bool,
    offsets: &[usize],
    id: fn(&T) -> Uuid,
    list: F,
) where
    F: Fn(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Page<T>>,
{
    for &offset in offsets {
        let first = (offset / size as usize).saturating_sub(2);
        for number in first..first + 5 {
            let got = list(page(number as u32, size, ascending)).await;
            assert_eq!(got.total as usize, want.len(), "{what}: total");
            let from = (number * size as usize).min(want.len());
            let to = (from + size as usize).min(want.len());
            let got: Vec<Uuid> = got.items.iter().map(id).collect();
            assert_eq!(
                got,
                want[from..to],
                "{what}: page {number} of {size}, ascending {ascending}"
            );
        }
    }
}

/// Offsets to check in a listing of `n`: just past where pages are found through the
/// buckets, the middle, across bucket edges, and near the end.
fn offsets(n: usize) -> Vec<usize> {
    let deep = DEEP as usize;
    vec![
        deep + 3,
        n / 2,
        n / 2 + 611,
        n.saturating_sub(deep + 150),
        n - 1,
    ]
}

pub async fn deep_pages(store: &dyn Store) {
    // Only where pages are read from changes, for every test of this process alike.
    descend_after_for_tests(DEEP);
    let who = new_account(store, true).await;
    let other = new_account(store, true).await;
    let (lasting, stopped) = (Uuid::new_v4(), Uuid::new_v4());
    store.heartbeat_instance(stopped, 1_000).await.unwrap();
    let configs = [Some("cfg-a"), Some("cfg-b"), None];
    let mut ids = Vec::new();
    let mut groups: Vec<Uuid> = Vec::new();
    let mut ops = Vec::new();
    for i in 0..CHATS {
        // Every fourth chat resumes the group before it (in another config, which moves
        // the group); half the chats run on a server that stops.
        let group = match (i % 4, groups.last()) {
            (3, Some(g)) => GroupChoice::Resume(*g),
            _ => {
                let g = Uuid::new_v4();
                groups.push(g);
                GroupChoice::New(g)
            }
        };
        let instance = if i % 2 == 0 { lasting } else { stopped };
        let config = configs[(i % 3) as usize];
        let (id, op) = start_op(&who, group, start_of(i), config, instance, None);
        ids.push(id);
        ops.push(op);
        if ops.len() == 200 {
            let out = store.apply_batch(&ops).await.unwrap();
            assert!(out.iter().all(|o| *o == OpOutcome::Applied));
            ops.clear();
        }
    }
    store.apply_batch(&ops).await.unwrap();
    // Another account's chats, in the same buckets, are never counted here.
    let theirs: Vec<WriteOp> = (0..300)
        .map(|i| {
            start_op(
                &other,
                GroupChoice::New(Uuid::new_v4()),
                start_of(i),
                Some("cfg-a"),
                lasting,
                None,
            )
            .1
        })
        .collect();
    store.apply_batch(&theirs).await.unwrap();
    // Every fifth chat ends; the stopped server's others end in ERROR; some are erased.
    let ends: Vec<WriteOp> = ids
        .iter()
        .step_by(5)
        .map(|&chat_id| WriteOp::EndChat {
            api_key_id: who.api_key_id,
            chat_id,
            status: ChatStatus::UserEnded,
            end_timestamp: 1_800_000_000_000,
            events: vec![event(
                1,
                1_800_000_000_000,
                EventRole::System,
                EventType::ChatEndMessage,
                "",
            )],
        })
        .collect();
    store.apply_batch(&ends).await.unwrap();
    store.heartbeat_instance(lasting, 10_000).await.unwrap();
    assert!(store.close_orphaned_chats(5_000).await.unwrap() > 0);
    let erased: Vec<Uuid> = ids.iter().skip(7).step_by(23).copied().collect();
    assert_eq!(
        store
            .delete_chats(who.user_id, &erased)
            .await
            .unwrap()
            .len(),
        erased.len()
    );

    let lost = crate::sql::buckets::lost_descents();
    let mut chats = Vec::new();
    for id in &ids {
        if let Some(c) = store.get_chat(who.user_id, *id).await.unwrap() {
            chats.push(c);
        }
    }
    let filters = [
        ChatFilter::default(),
        ChatFilter {
            status: Some(ChatStatus::Error),
            ..Default::default()
        },
        ChatFilter {
            config_id: Some("cfg-a".into()),
            ..Default::default()
        },
        ChatFilter {
            status: Some(ChatStatus::Active),
            config_id: Some("cfg-b".into()),
            ..Default::default()
        },
    ];
    let mut deep_listings = 0;
    for filter in &filters {
        let mut want = super::listings::expected(&chats, filter);
        if want.len() > 2 * DEEP as usize + 200 {
            deep_listings += 1;
        }
        for ascending in [true, false] {
            for size in [1, 7, 100] {
                check_pages(
                    &format!("chats {filter:?}"),
                    &want,
                    size,
                    ascending,
                    &offsets(want.len()),
                    |c: &ChatRecord| c.id,
                    |p| async move { store.list_chats(who.user_id, filter, p).await.unwrap() },
                )
                .await;
            }
            want.reverse();
        }
    }
    assert!(deep_listings >= 3, "the scenario lists deep enough");

    let mut all_groups = Vec::new();
    for g in &groups {
        if let Some(r) = store.get_chat_group(who.user_id, *g).await.unwrap() {
            all_groups.push(r);
        }
    }
    for config in [None, Some("cfg-a")] {
        let mut want: Vec<&GroupRecord> = all_groups
            .iter()
            .filter(|r| config.is_none_or(|c| r.most_recent_config_id.as_deref() == Some(c)))
            .collect();
        want.sort_by_key(|r| (r.first_start_timestamp, r.id));
        let mut want: Vec<Uuid> = want.iter().map(|r| r.id).collect();
        for ascending in [true, false] {
            for size in [1, 10] {
                check_pages(
                    &format!("groups {config:?}"),
                    &want,
                    size,
                    ascending,
                    &offsets(want.len()),
                    |g: &GroupRecord| g.id,
                    |p| async move {
                        store
                            .list_chat_groups(who.user_id, config, p)
                            .await
                            .unwrap()
                    },
                )
                .await;
            }
            want.reverse();
        }
    }
    assert_eq!(
        crate::sql::buckets::lost_descents(),
        lost,
        "every deep page was found through the bucket counts"
    );
}

/// For a backend's own tests after [`deep_pages`]: how many keys of the bucket counts
/// (added up, as a read does) differ from the chats and groups as they are, either way.
/// Counts too low would not show in the pages (the walk gives up and skips the rows).
pub const BUCKET_MISMATCHES: &str = "
    WITH l AS (SELECT 2 AS level, 34 AS shift UNION ALL SELECT 1, 27 UNION ALL SELECT 0, 20),
    kept AS (SELECT user_id, level, bucket, status, config_id, SUM(n) AS n FROM chat_buckets
             GROUP BY user_id, level, bucket, status, config_id HAVING SUM(n) <> 0),
    real AS (SELECT user_id, l.level, start_timestamp >> l.shift AS bucket, status,
                    COALESCE(config_id, '') AS config_id, COUNT(*) AS n
             FROM chats, l GROUP BY 1, 2, 3, 4, 5),
    gkept AS (SELECT user_id, level, bucket, config_id, SUM(n) AS n FROM group_buckets
              GROUP BY user_id, level, bucket, config_id HAVING SUM(n) <> 0),
    greal AS (SELECT user_id, l.level, first_start_timestamp >> l.shift AS bucket,
                     COALESCE(most_recent_config_id, '') AS config_id, COUNT(*) AS n
              FROM chat_groups, l GROUP BY 1, 2, 3, 4)
    SELECT (SELECT COUNT(*) FROM (SELECT * FROM kept EXCEPT SELECT * FROM real) AS a)
         + (SELECT COUNT(*) FROM (SELECT * FROM real EXCEPT SELECT * FROM kept) AS b)
         + (SELECT COUNT(*) FROM (SELECT * FROM gkept EXCEPT SELECT * FROM greal) AS c)
         + (SELECT COUNT(*) FROM (SELECT * FROM greal EXCEPT SELECT * FROM gkept) AS d)";
