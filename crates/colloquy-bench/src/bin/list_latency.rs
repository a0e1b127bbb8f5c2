//! `list_latency`: latency of the chat-history REST API on a large account.
//!
//! Seeds one account with `--events` events (100 per chat, chats in groups of 10, ~60-byte
//! texts; each chat started, filled and ended like a real one; every 20th chat with a config,
//! every 1000th saying a rare word) through `Store::apply_batch` in large batches, starts the
//! real server on that database on its own runtime, and times `--requests` sequential
//! requests per endpoint with a keep-alive HTTP client (ids picked at random among the
//! seeded chats and groups): first pages, the middle, a page near the end and the last page,
//! with and without filters. Target (issue 17): p99 <= 5 ms at 10M events.
//!
//! `--events 1000000,10000000,30000000` grows one database through the three sizes and
//! measures at each (the scaling curve); `--csv FILE` appends one line per backend, size
//! and request, for `scripts/plot-list-scaling`. At each size, the list migrations (the
//! maintained counts and the bucket counts) are also re-applied and timed on the database
//! as it is.
//!
//! Baseline, same run: the same reads straight on the server's store (same connections,
//! same runtime), timed inside the runtime: the list call alone, and every store call the
//! handler makes (API-key lookup, ownership check, list). The difference to HTTP is the
//! HTTP/JSON/auth layer.

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use colloquy_bench::stats::ms;
use colloquy_bench::sys::{machine, report_background_load, SystemCpu};
use colloquy_bench::workload::now_ms;
use colloquy_bench::{client_runtime, init_server_logging, sentence, thousands, Rng, Summary};
use colloquy_server::keys::{create_account_key, hash_secret};
use colloquy_server::Settings;
use colloquy_storage::sql::buckets::{descend_after_for_tests, DESCEND_AFTER};
use colloquy_storage::{ChatFilter, GroupChoice, NewChat, NewEvent, PageRequest, Store, WriteOp};
use colloquy_storage_postgres::{PostgresSettings, PostgresStore};
use colloquy_storage_sqlite::{SqliteSettings, SqliteStore};
use colloquy_testkit::{ServerThread, TestDatabase};
use colloquy_wire::{ChatStatus, EventRole, EventType};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
    All,
}

/// REST list latency on a large account, against the same reads on the store.
#[derive(Parser, Debug, Clone)]
#[command(name = "list_latency")]
struct Args {
    /// Events to seed (100 per chat); several sizes, comma-separated and ascending, grow one
    /// database and measure at each.
    #[arg(long, value_delimiter = ',', default_value = "1000000")]
    events: Vec<u64>,
    /// Appends `backend,events,chats,request,http_p50_ms,http_p99_ms,store_p50_ms,
    /// store_p99_ms` lines to this file.
    #[arg(long)]
    csv: Option<std::path::PathBuf>,
    /// Events per chat.
    #[arg(long, default_value_t = 100)]
    events_per_chat: u64,
    /// Chats per chat group.
    #[arg(long, default_value_t = 10)]
    chats_per_group: u64,
    /// Timed requests per endpoint (after `--warmup` untimed ones).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Untimed requests per endpoint first.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Page size of every request.
    #[arg(long, default_value_t = 10)]
    page_size: u32,
    /// Backends to measure.
    #[arg(long, value_enum, default_value = "all")]
    backend: Backend,
    /// The server's `database.postgres_max_connections` [default: the server's default].
    #[arg(long)]
    postgres_max_connections: Option<u32>,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_server_logging();
    client_runtime(1)?.block_on(run(args))
}

/// The seeded account.
#[derive(Clone)]
struct Seeded {
    user_id: Uuid,
    api_key: String,
    api_key_id: Uuid,
    chats: Arc<Vec<Uuid>>,
    groups: Arc<Vec<Uuid>>,
    /// Start time of chat 0.
    base: i64,
}

/// The config every 20th chat was started with.
const CONFIG: &str = "0ff1ce00-0000-4000-8000-00000000c0f6";
/// Every 1000th chat says this word (the rare-word search).
const RARE_WORD: &str = "zebrafish";

/// Which list a request reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    /// `GET /v0/evi/chats` with these filters.
    Chats {
        status: bool,
        config: bool,
        search: bool,
    },
    /// `GET /v0/evi/chat_groups`, optionally of the config.
    Groups { config: bool },
    /// `GET /v0/evi/chat_groups/{id}` (the group's chats).
    GroupChats,
    /// `GET /v0/evi/chats/{id}`.
    ChatEvents,
    /// `GET /v0/evi/chat_groups/{id}/events`.
    GroupEvents,
}

/// Where in the list the page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    First,
    FirstNewest,
    Middle,
    /// 90% of the way.
    Deep,
    Last,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Case(List, At);

const CHATS: List = List::Chats {
    status: false,
    config: false,
    search: false,
};

const CASES: [Case; 23] = [
    Case(CHATS, At::First),
    Case(CHATS, At::FirstNewest),
    Case(CHATS, At::Middle),
    Case(CHATS, At::Deep),
    Case(CHATS, At::Last),
    Case(
        List::Chats {
            status: true,
            config: false,
            search: false,
        },
        At::First,
    ),
    Case(
        List::Chats {
            status: true,
            config: false,
            search: false,
        },
        At::Middle,
    ),
    Case(
        List::Chats {
            status: true,
            config: false,
            search: false,
        },
        At::Last,
    ),
    Case(
        List::Chats {
            status: false,
            config: true,
            search: false,
        },
        At::First,
    ),
    Case(
        List::Chats {
            status: false,
            config: true,
            search: false,
        },
        At::Middle,
    ),
    Case(
        List::Chats {
            status: false,
            config: true,
            search: false,
        },
        At::Last,
    ),
    Case(
        List::Chats {
            status: false,
            config: false,
            search: true,
        },
        At::First,
    ),
    Case(
        List::Chats {
            status: false,
            config: false,
            search: true,
        },
        At::Last,
    ),
    Case(List::Groups { config: false }, At::First),
    Case(List::Groups { config: false }, At::Middle),
    Case(List::Groups { config: false }, At::Last),
    Case(List::Groups { config: true }, At::Middle),
    Case(List::Groups { config: true }, At::Last),
    Case(List::GroupChats, At::First),
    Case(List::ChatEvents, At::First),
    Case(List::ChatEvents, At::Last),
    Case(List::GroupEvents, At::FirstNewest),
    Case(List::GroupEvents, At::Last),
];

/// The shape of the seeded data.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    size: u32,
    chats: u64,
    events_per_chat: u64,
    chats_per_group: u64,
}

impl Geometry {
    fn groups(&self) -> u64 {
        self.chats.div_ceil(self.chats_per_group)
    }

    /// Items in the whole list.
    fn total(&self, list: List) -> u64 {
        match list {
            List::Chats { config: true, .. } => self.chats / 20,
            List::Chats { search: true, .. } => self.chats.div_ceil(1000),
            List::Chats { .. } => self.chats,
            // Odd groups end with a chat of the config.
            List::Groups { config: true } => self.groups() / 2,
            List::Groups { config: false } => self.groups(),
            List::GroupChats => self.chats_per_group.min(self.chats),
            List::ChatEvents => self.events_per_chat,
            List::GroupEvents => self.events_per_chat * self.chats_per_group.min(self.chats),
        }
    }

    fn pages(&self, list: List) -> u32 {
        self.total(list).div_ceil(self.size as u64).max(1) as u32
    }
}

impl Case {
    fn label(self, g: &Geometry) -> String {
        let Case(list, at) = self;
        let what = match list {
            List::Chats {
                status,
                config,
                search,
            } => {
                let mut f = Vec::new();
                if status {
                    f.push("status=USER_ENDED");
                }
                if config {
                    f.push("config_id (5% of chats)");
                }
                if search {
                    f.push("search, a rare word (0.1%)");
                }
                if f.is_empty() {
                    "GET /v0/evi/chats".to_string()
                } else {
                    format!("GET /v0/evi/chats, {}", f.join(", "))
                }
            }
            List::Groups { config: false } => "GET /v0/evi/chat_groups".into(),
            List::Groups { config: true } => "GET /v0/evi/chat_groups, config_id (50%)".into(),
            List::GroupChats => "GET /v0/evi/chat_groups/{id}".into(),
            List::ChatEvents => "GET /v0/evi/chats/{id}".into(),
            List::GroupEvents => "GET /v0/evi/chat_groups/{id}/events".into(),
        };
        let page = self.page(g).number;
        let where_ = match at {
            At::First => "first page".to_string(),
            At::FirstNewest => "first page, newest first".to_string(),
            At::Middle => format!("page {page} (middle)"),
            At::Deep => format!("page {page} (90%)"),
            At::Last => format!("last page ({page})"),
        };
        format!("{what}, {where_}")
    }

    /// A short name for the CSV and the picture.
    fn key(self) -> String {
        let Case(list, at) = self;
        let what = match list {
            List::Chats { status: true, .. } => "chats?status",
            List::Chats { config: true, .. } => "chats?config_id",
            List::Chats { search: true, .. } => "chats?search",
            List::Chats { .. } => "chats",
            List::Groups { config: true } => "chat_groups?config_id",
            List::Groups { config: false } => "chat_groups",
            List::GroupChats => "group chats",
            List::ChatEvents => "chat events",
            List::GroupEvents => "group events",
        };
        let at = match at {
            At::First => "first",
            At::FirstNewest => "first (newest)",
            At::Middle => "middle",
            At::Deep => "90%",
            At::Last => "last",
        };
        format!("{what} {at}")
    }

    fn page(self, g: &Geometry) -> PageRequest {
        let Case(list, at) = self;
        let pages = g.pages(list);
        let (number, ascending) = match at {
            At::First => (0, true),
            At::FirstNewest => (0, false),
            At::Middle => (pages / 2, true),
            At::Deep => ((pages as f64 * 0.9) as u32, true),
            At::Last => (pages - 1, true),
        };
        PageRequest {
            number,
            size: g.size,
            ascending,
        }
    }

    fn filter(self) -> ChatFilter {
        match self.0 {
            List::Chats {
                status,
                config,
                search,
            } => ChatFilter {
                status: status.then_some(ChatStatus::UserEnded),
                config_id: config.then(|| CONFIG.to_string()),
                search: search.then(|| RARE_WORD.to_string()),
                ..Default::default()
            },
            _ => ChatFilter::default(),
        }
    }

    /// Path and query of one request about `chat` / `group`.
    fn path(self, g: &Geometry, chat: Uuid, group: Uuid) -> String {
        let p = self.page(g);
        let mut q = format!(
            "page_size={}&page_number={}&ascending_order={}",
            p.size, p.number, p.ascending
        );
        let f = self.filter();
        if let Some(s) = f.status {
            q.push_str(&format!("&status={}", s.as_str()));
        }
        if let Some(c) = &f.config_id {
            q.push_str(&format!("&config_id={c}"));
        }
        if let Some(w) = &f.search {
            q.push_str(&format!("&search={w}"));
        }
        match self.0 {
            List::Chats { .. } => format!("/v0/evi/chats?{q}"),
            List::Groups { config } => {
                if config {
                    q.push_str(&format!("&config_id={CONFIG}"));
                }
                format!("/v0/evi/chat_groups?{q}")
            }
            List::GroupChats => format!("/v0/evi/chat_groups/{group}?{q}"),
            List::ChatEvents => format!("/v0/evi/chats/{chat}?{q}"),
            List::GroupEvents => format!("/v0/evi/chat_groups/{group}/events?{q}"),
        }
    }

    /// The JSON array holding the page's items.
    fn items_field(self) -> &'static str {
        match self.0 {
            List::Chats { .. } | List::GroupChats => "chats_page",
            List::Groups { .. } => "chat_groups_page",
            _ => "events_page",
        }
    }

    /// Items a page holds on the seeded data.
    /// A page found through the bucket counts (the middle and 90% of the account's chats
    /// and groups, unless searched).
    fn is_deep(self) -> bool {
        matches!(self.1, At::Middle | At::Deep)
            && matches!(
                self.0,
                List::Chats { search: false, .. } | List::Groups { .. }
            )
    }

    /// The ids the page must hold, where the seeding tells them: the unfiltered chats and
    /// groups, in seeding order.
    fn expected_ids(self, g: &Geometry, seeded: &Seeded) -> Option<Vec<String>> {
        let all: &[Uuid] = match self.0 {
            List::Chats {
                status: false,
                config: false,
                search: false,
            } => &seeded.chats[..g.chats as usize],
            List::Groups { config: false } => &seeded.groups[..g.groups() as usize],
            _ => return None,
        };
        let page = self.page(g);
        let from = (page.number as usize * page.size as usize).min(all.len());
        let to = (from + page.size as usize).min(all.len());
        let mut ids: Vec<String> = if page.ascending {
            all[from..to].iter().map(Uuid::to_string).collect()
        } else {
            all.iter()
                .rev()
                .skip(from)
                .take(to - from)
                .map(Uuid::to_string)
                .collect()
        };
        ids.truncate(page.size as usize);
        Some(ids)
    }

    fn expected_items(self, g: &Geometry) -> usize {
        let page = self.page(g);
        let skipped = page.number as u64 * page.size as u64;
        g.total(self.0)
            .saturating_sub(skipped)
            .min(page.size as u64) as usize
    }
}

/// The same read on the store: the list call only, or every call the handler makes.
async fn store_read(
    store: &dyn Store,
    case: Case,
    g: &Geometry,
    seeded: &Seeded,
    key_hash: &str,
    (chat, group): (Uuid, Uuid),
    as_handler: bool,
) -> anyhow::Result<usize> {
    let page = case.page(g);
    let user = seeded.user_id;
    if as_handler {
        store
            .principal_by_key_hash(key_hash)
            .await?
            .context("the key is not found")?;
    }
    let n = match case.0 {
        List::Chats { .. } => store
            .list_chats(user, &case.filter(), page)
            .await?
            .items
            .len(),
        List::ChatEvents => {
            if as_handler {
                store.get_chat(user, chat).await?.context("no such chat")?;
            }
            store.list_chat_events(chat, page).await?.items.len()
        }
        List::GroupEvents | List::GroupChats => {
            if as_handler {
                store
                    .get_chat_group(user, group)
                    .await?
                    .context("no such group")?;
            }
            if case.0 == List::GroupChats {
                store.list_group_chats(group, None, page).await?.items.len()
            } else {
                store.list_group_events(group, page).await?.items.len()
            }
        }
        List::Groups { config } => store
            .list_chat_groups(user, config.then_some(CONFIG), page)
            .await?
            .items
            .len(),
    };
    Ok(n)
}

struct Measured {
    case: Case,
    http: Summary,
    bytes: usize,
    store_list: Summary,
    store_handler: Summary,
}

/// The migrations of the list endpoints (the maintained counts, 0011; the bucket counts of
/// deep pages, SQLite 0012 / PostgreSQL 0013) of each backend, and what undoes each: each
/// is undone and applied again, timed, on the database as it is.
const SQLITE_MIGRATIONS: [(&str, &str, &str); 2] = [
    (
        "0011 (maintained counts)",
        include_str!("../../../colloquy-storage-sqlite/migrations/0011_list_counts.sql"),
        "DROP TRIGGER chats_counted; DROP TRIGGER chats_recounted; \
         DROP TRIGGER chats_uncounted; DROP TRIGGER groups_counted; \
         DROP TRIGGER groups_recounted; DROP TRIGGER groups_uncounted; \
         DROP TABLE chat_counts; DROP TABLE group_counts;",
    ),
    (
        "0012 (bucket counts)",
        include_str!("../../../colloquy-storage-sqlite/migrations/0012_list_buckets.sql"),
        "DROP TRIGGER chats_bucketed; DROP TRIGGER chats_rebucketed; \
         DROP TRIGGER chats_unbucketed; DROP TRIGGER groups_bucketed; \
         DROP TRIGGER groups_rebucketed; DROP TRIGGER groups_unbucketed; \
         DROP TABLE chat_buckets; DROP TABLE group_buckets;",
    ),
];

/// On PostgreSQL, the first entry undoes all three (0014 replaced the triggers of 0011 and
/// 0013 with one per table), and each is then applied again in order.
const POSTGRES_MIGRATIONS: [(&str, &str, &str); 3] = [
    (
        "0011 (maintained counts)",
        include_str!("../../../colloquy-storage-postgres/migrations/0011_list_counts.sql"),
        "DROP TRIGGER chats_listed ON chats; DROP TRIGGER chats_relisted ON chats; \
         DROP TRIGGER groups_listed ON chat_groups; DROP TRIGGER groups_relisted ON chat_groups; \
         DROP FUNCTION colloquy_list_chats(); DROP FUNCTION colloquy_list_groups(); \
         DROP TABLE chat_counts; DROP TABLE group_counts; DROP TABLE chat_buckets; \
         DROP TABLE group_buckets;",
    ),
    (
        "0013 (bucket counts)",
        include_str!("../../../colloquy-storage-postgres/migrations/0013_list_buckets.sql"),
        "SELECT 1",
    ),
    (
        "0014 (one trigger per table)",
        include_str!("../../../colloquy-storage-postgres/migrations/0014_list_triggers_merged.sql"),
        "SELECT 1",
    ),
];

/// One size's results.
struct Table {
    backend: &'static str,
    geometry: Geometry,
    events: u64,
    rows: Vec<Measured>,
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!("# list_latency benchmark");
    println!("machine: {}", machine());
    report_background_load();
    let per_chat = args.events_per_chat;
    if per_chat < 2 {
        bail!("--events-per-chat must be at least 2");
    }
    let mut previous = 0;
    for &events in &args.events {
        if events <= previous || events % (per_chat * args.chats_per_group) != 0 {
            bail!("--events must ascend, each a multiple of --events-per-chat × --chats-per-group");
        }
        previous = events;
    }
    let max_chats = previous / per_chat;
    println!(
        "data: up to {} events in {} chats ({} per chat) in groups of {}, one account; {} timed requests per endpoint after {} warm-up requests, page_size {}\n",
        thousands(previous as f64),
        thousands(max_chats as f64),
        per_chat,
        args.chats_per_group,
        args.requests,
        args.warmup,
        args.page_size
    );
    let mut csv = match &args.csv {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => None,
    };
    let mut tables = Vec::new();
    if matches!(args.backend, Backend::Sqlite | Backend::All) {
        let dir = tempfile::tempdir()?;
        let settings = colloquy_testkit::settings(dir.path(), None);
        let url = settings.effective_database_url();
        std::fs::create_dir_all(dir.path())?;
        let mut seeded = None;
        for &events in &args.events {
            println!("## SQLite, {} events", thousands(events as f64));
            let store = SqliteStore::open(
                &url,
                &SqliteSettings {
                    synchronous_full: false,
                    ..Default::default()
                },
            )
            .await?;
            let grown = seed(&store, &args, seeded.take(), events / per_chat, max_chats).await;
            store.close().await;
            let grown = grown?;
            let file = dir.path().join("colloquy.db");
            let size_mb = std::fs::metadata(&file).map_or(0, |m| m.len()) / 1_000_000;
            println!("database file: {size_mb} MB");
            time_sqlite_migration(&url).await?;
            let geometry = geometry_of(&args, events);
            let rows = measure(&args, settings.clone(), &grown, &geometry).await?;
            tables.push(Table {
                backend: "SQLite",
                geometry,
                events,
                rows,
            });
            seeded = Some(grown);
        }
    }
    if matches!(args.backend, Backend::Postgres | Backend::All) {
        match TestDatabase::create().await {
            None => println!("PostgreSQL unreachable: skipped (see the message above)\n"),
            Some(db) => {
                if let Ok(ms) = std::env::var("COLLOQUY_BENCH_PG_LOG_MIN_DURATION_MS") {
                    // Diagnostic: PostgreSQL logs every statement on this throwaway database
                    // that takes at least `ms` milliseconds, with its duration.
                    let ms: i64 = ms
                        .parse()
                        .context("COLLOQUY_BENCH_PG_LOG_MIN_DURATION_MS")?;
                    let name = db.url().rsplit('/').next().unwrap_or_default().to_string();
                    let mut conn = PgConnectOptions::from_str(db.url())?.connect().await?;
                    sqlx::query(&format!(
                        "ALTER DATABASE \"{name}\" SET log_min_duration_statement = {ms}"
                    ))
                    .execute(&mut conn)
                    .await?;
                    conn.close().await?;
                    println!("PostgreSQL logs statements >= {ms} ms on database {name}");
                }
                let outcome = postgres(&args, db.url(), max_chats, &mut tables).await;
                db.drop_database().await;
                outcome?;
            }
        }
    }
    println!("## Summary (target: p99 <= 5 ms for every request)\n");
    for t in &tables {
        println!(
            "### {}, {} events ({} chats)\n",
            t.backend,
            thousands(t.events as f64),
            thousands(t.geometry.chats as f64)
        );
        println!("| request | HTTP p50 | HTTP p99 | store, list call p50 / p99 | store, all handler calls p50 / p99 | response | p99 <= 5 ms |");
        println!("|---|---:|---:|---:|---:|---:|---|");
        for m in &t.rows {
            println!(
                "| {} | {} | {} | {} / {} | {} / {} | {} B | {} |",
                m.case.label(&t.geometry),
                ms(m.http.p50_us),
                ms(m.http.p99_us),
                ms(m.store_list.p50_us),
                ms(m.store_list.p99_us),
                ms(m.store_handler.p50_us),
                ms(m.store_handler.p99_us),
                thousands(m.bytes as f64),
                if m.http.p99_us <= 5_000 {
                    "yes"
                } else {
                    "**no**"
                }
            );
            if let Some(f) = csv.as_mut() {
                use std::io::Write;
                writeln!(
                    f,
                    "{},{},{},{},{:.3},{:.3},{:.3},{:.3}",
                    t.backend,
                    t.events,
                    t.geometry.chats,
                    m.case.key(),
                    m.http.p50_us as f64 / 1000.0,
                    m.http.p99_us as f64 / 1000.0,
                    m.store_list.p50_us as f64 / 1000.0,
                    m.store_list.p99_us as f64 / 1000.0,
                )?;
            }
        }
        println!();
    }
    Ok(())
}

fn geometry_of(args: &Args, events: u64) -> Geometry {
    Geometry {
        size: args.page_size,
        chats: events / args.events_per_chat,
        events_per_chat: args.events_per_chat,
        chats_per_group: args.chats_per_group,
    }
}

/// Undoes each list migration and applies it again on the database as it is, timed: how
/// long a server upgrading this database would hold its lock.
async fn time_sqlite_migration(url: &str) -> anyhow::Result<()> {
    use sqlx::sqlite::SqliteConnectOptions;
    let mut conn = SqliteConnectOptions::from_str(url)?.connect().await?;
    for (name, apply, undo) in SQLITE_MIGRATIONS {
        sqlx::raw_sql(undo).execute(&mut conn).await?;
        let t = Instant::now();
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(apply).execute(&mut *tx).await?;
        tx.commit().await?;
        println!(
            "migration {name} applied again on this database in {:.0} ms \
             (one write transaction; readers go on)",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    conn.close().await?;
    Ok(())
}

async fn time_postgres_migration(url: &str) -> anyhow::Result<()> {
    let mut conn = PgConnectOptions::from_str(url)?.connect().await?;
    for (name, apply, undo) in POSTGRES_MIGRATIONS {
        sqlx::raw_sql(undo).execute(&mut conn).await?;
        let t = Instant::now();
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(apply).execute(&mut *tx).await?;
        tx.commit().await?;
        println!(
            "migration {name} applied again on this database in {:.0} ms \
             (writes to chats and chat_groups wait that long; reads do not)",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    conn.close().await?;
    Ok(())
}

async fn postgres(
    args: &Args,
    url: &str,
    max_chats: u64,
    tables: &mut Vec<Table>,
) -> anyhow::Result<()> {
    let mut seeded = None;
    for &events in &args.events {
        println!("## PostgreSQL, {} events", thousands(events as f64));
        let store = PostgresStore::open(url, &PostgresSettings::default()).await?;
        let grown = seed(
            &store,
            args,
            seeded.take(),
            events / args.events_per_chat,
            max_chats,
        )
        .await;
        store.close().await;
        let grown = grown?;
        // The bucket counts hold one change row per chat started and two per chat ended
        // until a read folds them: the first deep read of each kind after the bulk load
        // folds them (timed here, once), and autovacuum, stood in for by the VACUUM below,
        // then clears the rows it deleted, as it would on a long-running database.
        let g = geometry_of(args, events / args.events_per_chat * args.events_per_chat);
        let store = PostgresStore::open(url, &PostgresSettings::default()).await?;
        for case in CASES.into_iter().filter(|c| c.is_deep()) {
            let t = Instant::now();
            store_read(
                &store,
                case,
                &g,
                &grown,
                "",
                (Uuid::nil(), Uuid::nil()),
                false,
            )
            .await?;
            println!(
                "{}: first read after the bulk load (folds its ranges' change rows): {:.1} ms",
                case.label(&g),
                t.elapsed().as_secs_f64() * 1000.0
            );
        }
        store.close().await;
        // A long-running database has been analysed by autovacuum; a freshly bulk-loaded
        // one not yet. Analyse now so the planner sees the real table sizes.
        let t = Instant::now();
        let mut conn = PgConnectOptions::from_str(url)?.connect().await?;
        sqlx::query("VACUUM ANALYZE").execute(&mut conn).await?;
        // Flush the bulk load now, so the measurement does not share the disk and CPU with
        // the checkpointer writing it out in the background.
        sqlx::query("CHECKPOINT").execute(&mut conn).await?;
        let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        println!(
            "VACUUM ANALYZE and CHECKPOINT in {:.1} s; database size {} MB",
            t.elapsed().as_secs_f64(),
            size / 1_000_000
        );
        time_postgres_migration(url).await?;
        let dir = tempfile::tempdir()?;
        let mut settings = colloquy_testkit::settings(dir.path(), Some(url));
        if let Some(n) = args.postgres_max_connections {
            settings.database.postgres_max_connections = n;
        }
        println!(
            "server pool: {} PostgreSQL connections",
            settings.database.postgres_max_connections
        );
        let geometry = geometry_of(args, events);
        let rows = measure(args, settings, &grown, &geometry).await?;
        tables.push(Table {
            backend: "PostgreSQL",
            geometry,
            events,
            rows,
        });
        seeded = Some(grown);
    }
    Ok(())
}

/// Seeds the account up to `n_chats` chats (going on from `from`, a smaller seeding of
/// this database): per chat a `StartChat` (CHAT_START_MESSAGE), an `AppendEvents` with the
/// conversation (alternating user and assistant messages) and an `EndChat`
/// (CHAT_END_MESSAGE), 50 chats per `apply_batch` call. Chats are two minutes apart, their
/// times laid out for `max_chats`, so that a grown database is ordered as one seeded at
/// once.
async fn seed(
    store: &dyn Store,
    args: &Args,
    from: Option<Seeded>,
    n_chats: u64,
    max_chats: u64,
) -> anyhow::Result<Seeded> {
    let chat_gap = 120_000i64;
    let mut seeded = match from {
        Some(s) => s,
        None => {
            let key = create_account_key(store, Some("bench".into()), true).await?;
            let api_key_id = store
                .list_api_keys()
                .await?
                .into_iter()
                .find(|k| k.user_id == key.user_id)
                .context("the new key is not listed")?
                .id;
            Seeded {
                user_id: key.user_id,
                api_key: key.api_key,
                api_key_id,
                chats: Arc::new(Vec::new()),
                groups: Arc::new(Vec::new()),
                // All in the past.
                base: now_ms() - max_chats as i64 * chat_gap - 3_600_000,
            }
        }
    };
    let per_chat = args.events_per_chat;
    let first_chat = seeded.chats.len() as u64;
    let mut chats = seeded.chats.to_vec();
    chats.extend((first_chat..n_chats).map(|_| Uuid::new_v4()));
    let mut groups = seeded.groups.to_vec();
    groups.extend(
        (groups.len() as u64..n_chats.div_ceil(args.chats_per_group)).map(|_| Uuid::new_v4()),
    );
    let instance = Uuid::new_v4();
    let per_batch = 50u64;
    let t0 = Instant::now();
    let mut next_report = 0.1;
    let event = |seq: i64, ts: i64, role, ty, text: String| NewEvent {
        id: Uuid::new_v4(),
        seq,
        timestamp: ts,
        role,
        event_type: ty,
        message_text: Some(text),
        emotion_features: None,
        metadata: None,
        related_event_id: None,
    };
    let to_seed = n_chats - first_chat;
    for first in (first_chat..n_chats).step_by(per_batch as usize) {
        let mut ops = Vec::new();
        for c in first..(first + per_batch).min(n_chats) {
            let chat = chats[c as usize];
            let g = (c / args.chats_per_group) as usize;
            let group = if c % args.chats_per_group == 0 {
                GroupChoice::New(groups[g])
            } else {
                GroupChoice::Resume(groups[g])
            };
            let start = seeded.base + c as i64 * chat_gap;
            let ts = |j: u64| start + j as i64 * 1000;
            // Every 20th chat (the last of every other group of 10) has a config.
            let config = (c % 20 == 19).then(|| CONFIG.to_string());
            ops.push(WriteOp::StartChat {
                api_key_id: seeded.api_key_id,
                chat: NewChat {
                    id: chat,
                    user_id: seeded.user_id,
                    group,
                    start_timestamp: start,
                    metadata: Some(format!(r#"{{"request_id":"{}"}}"#, Uuid::new_v4())),
                    config_version: config.as_ref().map(|_| 1),
                    config_id: config,
                    instance_id: instance,
                    webhooks: Vec::new(),
                },
                events: vec![event(
                    0,
                    start,
                    EventRole::System,
                    EventType::ChatStartMessage,
                    String::new(),
                )],
                max_active_chats: None,
            });
            let talk = (1..per_chat - 1)
                .map(|j| {
                    let (role, ty) = if j % 2 == 1 {
                        (EventRole::User, EventType::UserMessage)
                    } else {
                        (EventRole::Agent, EventType::AgentMessage)
                    };
                    let text = if j == 1 && c % 1000 == 0 {
                        format!("I saw a {RARE_WORD} in the pond behind the office today.")
                    } else {
                        sentence(c * per_chat + j).to_string()
                    };
                    event(j as i64, ts(j), role, ty, text)
                })
                .collect();
            ops.push(WriteOp::AppendEvents {
                api_key_id: seeded.api_key_id,
                chat_id: chat,
                events: talk,
            });
            let end = ts(per_chat - 1);
            let mut last = event(
                (per_chat - 1) as i64,
                end,
                EventRole::System,
                EventType::ChatEndMessage,
                String::new(),
            );
            last.metadata = Some(r#"{"status":"USER_ENDED","reason":"client_closed"}"#.into());
            ops.push(WriteOp::EndChat {
                api_key_id: seeded.api_key_id,
                chat_id: chat,
                status: ChatStatus::UserEnded,
                end_timestamp: end,
                events: vec![last],
            });
        }
        let outcomes = store.apply_batch(&ops).await?;
        if let Some(bad) = outcomes
            .iter()
            .find(|o| **o != colloquy_storage::OpOutcome::Applied)
        {
            bail!("seeding: an operation was not applied: {bad:?}");
        }
        let done = ((first + per_batch).min(n_chats) - first_chat) as f64 / to_seed as f64;
        if done >= next_report || done >= 1.0 {
            println!(
                "seeded {:>3.0}% ({} events) in {:.1} s",
                done * 100.0,
                thousands(done * (to_seed * per_chat) as f64),
                t0.elapsed().as_secs_f64()
            );
            next_report += 0.1;
        }
    }
    seeded.chats = Arc::new(chats);
    seeded.groups = Arc::new(groups);
    Ok(seeded)
}

async fn measure(
    args: &Args,
    settings: Settings,
    seeded: &Seeded,
    g: &Geometry,
) -> anyhow::Result<Vec<Measured>> {
    let server = ServerThread::start(settings, args.server_threads).await?;
    let outcome = measure_on(args, &server, seeded, g).await;
    server.stop().await?;
    outcome
}

async fn measure_on(
    args: &Args,
    server: &ServerThread,
    seeded: &Seeded,
    g: &Geometry,
) -> anyhow::Result<Vec<Measured>> {
    let http = reqwest::Client::builder().build()?;
    let key_hash = hash_secret(&seeded.api_key);
    let mut out = Vec::new();
    for case in CASES {
        let mut rng = Rng::new(0x5EED);
        let mut pick = || {
            (
                seeded.chats[rng.below(g.chats as usize)],
                seeded.groups[rng.below(g.groups() as usize)],
            )
        };
        let expected = case.expected_items(g);
        let mut times = Vec::with_capacity(args.requests);
        let mut bytes = 0usize;
        let mut busy_from = SystemCpu::now();
        for i in 0..args.warmup + args.requests {
            if i == args.warmup {
                busy_from = SystemCpu::now();
            }
            let (chat, group) = pick();
            let url = format!("{}{}", server.base, case.path(g, chat, group));
            let t = Instant::now();
            let resp = http
                .get(&url)
                .header("X-Hume-Api-Key", &seeded.api_key)
                .send()
                .await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            let us = t.elapsed().as_micros() as u64;
            if !status.is_success() {
                bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
            }
            if i < args.warmup {
                let v: serde_json::Value = serde_json::from_slice(&body)?;
                let items = v[case.items_field()]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if items.len() != expected {
                    bail!("{url}: {} items, expected {expected}", items.len());
                }
                // Which chats or groups: known for the unfiltered lists, seeded in order.
                if let Some(want) = case.expected_ids(g, seeded) {
                    let got: Vec<String> = items
                        .iter()
                        .map(|c| c["id"].as_str().unwrap_or_default().to_string())
                        .collect();
                    if got != want {
                        bail!("{url}: items {got:?}, expected {want:?}");
                    }
                }
            } else {
                times.push(us);
                bytes = body.len();
            }
        }
        let busy = busy_from.busy_since(&SystemCpu::now());
        let mut store_times = Vec::new();
        for as_handler in [false, true] {
            let store = server.store.clone();
            let (seeded, key_hash, g) = (seeded.clone(), key_hash.clone(), *g);
            let (warmup, requests) = (args.warmup, args.requests);
            let times = server
                .run(async move {
                    let mut rng = Rng::new(0x5EED);
                    let mut times = Vec::with_capacity(requests);
                    for i in 0..warmup + requests {
                        let chat = seeded.chats[rng.below(g.chats as usize)];
                        let group = seeded.groups[rng.below(g.groups() as usize)];
                        let t = Instant::now();
                        let n = store_read(
                            store.as_ref(),
                            case,
                            &g,
                            &seeded,
                            &key_hash,
                            (chat, group),
                            as_handler,
                        )
                        .await?;
                        let us = t.elapsed().as_micros() as u64;
                        if n != expected {
                            bail!("{case:?}: the store returned {n} items, expected {expected}");
                        }
                        if i >= warmup {
                            times.push(us);
                        }
                    }
                    Ok(times)
                })
                .await??;
            store_times.push(Summary::from_micros(times));
        }
        // Baseline, same run: a deep page read by skipping every row before it, as
        // before the bucket counts (the store's list call).
        let skipping = if case.is_deep() {
            let store = server.store.clone();
            let (seeded, g) = (seeded.clone(), *g);
            let (warmup, requests) = (args.warmup, args.requests);
            let times = server
                .run(async move {
                    descend_after_for_tests(i64::MAX);
                    let mut times = Vec::with_capacity(requests);
                    let mut outcome = Ok(());
                    for i in 0..warmup + requests {
                        let t = Instant::now();
                        let n = store_read(
                            store.as_ref(),
                            case,
                            &g,
                            &seeded,
                            "",
                            (Uuid::nil(), Uuid::nil()),
                            false,
                        )
                        .await;
                        let us = t.elapsed().as_micros() as u64;
                        match n {
                            Ok(n) if n == expected => {}
                            Ok(n) => {
                                outcome = Err(anyhow::anyhow!(
                                    "{case:?}: skipping returned {n} items, expected {expected}"
                                ));
                                break;
                            }
                            Err(e) => {
                                outcome = Err(e);
                                break;
                            }
                        }
                        if i >= warmup {
                            times.push(us);
                        }
                    }
                    descend_after_for_tests(DESCEND_AFTER);
                    outcome.map(|()| times)
                })
                .await??;
            Some(Summary::from_micros(times))
        } else {
            None
        };
        let m = Measured {
            case,
            http: Summary::from_micros(times),
            bytes,
            store_list: store_times[0],
            store_handler: store_times[1],
        };
        println!(
            "{}: HTTP {} (machine {:.0}% busy) | store list {} | store, handler's calls {}{}",
            case.label(g),
            m.http,
            busy * 100.0,
            m.store_list,
            m.store_handler,
            skipping.map_or(String::new(), |s| format!(
                " | BASELINE store list, skipping every row before the page {s}"
            ))
        );
        out.push(m);
    }
    println!();
    Ok(out)
}
