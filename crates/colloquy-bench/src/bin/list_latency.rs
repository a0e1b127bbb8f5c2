//! `list_latency`: latency of the chat-history REST API on a large account.
//!
//! Seeds one account with `--events` events (100 per chat, chats in groups of 10, ~60-byte
//! texts; each chat started, filled and ended like a real one) through `Store::apply_batch`
//! in large batches, starts the real server on that database on its own runtime, and times
//! `--requests` sequential requests per endpoint with a keep-alive HTTP client (ids picked at
//! random among the seeded chats and groups). Target: p99 <= 10 ms.
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
    /// Events to seed (100 per chat).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
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
    chats: Arc<Vec<Uuid>>,
    groups: Arc<Vec<Uuid>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    ChatsFirst,
    ChatsFirstDesc,
    ChatsDeep,
    ChatEventsFirst,
    ChatEventsLast,
    GroupEventsFirst,
    GroupEventsFirstDesc,
    GroupEventsLast,
    GroupsFirst,
}

const CASES: [Case; 9] = [
    Case::ChatsFirst,
    Case::ChatsFirstDesc,
    Case::ChatsDeep,
    Case::ChatEventsFirst,
    Case::ChatEventsLast,
    Case::GroupEventsFirst,
    Case::GroupEventsFirstDesc,
    Case::GroupEventsLast,
    Case::GroupsFirst,
];

/// Page geometry of the seeded data.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    size: u32,
    /// Deep page of `GET /v0/evi/chats` (90% of the way).
    chats_deep: u32,
    /// Last page of one chat's events.
    chat_last: u32,
    /// Last page of one group's events.
    group_last: u32,
}

impl Case {
    fn label(self, g: &Geometry) -> String {
        match self {
            Case::ChatsFirst => "GET /v0/evi/chats, first page".into(),
            Case::ChatsFirstDesc => "GET /v0/evi/chats, first page, newest first".into(),
            Case::ChatsDeep => format!("GET /v0/evi/chats, page {}", g.chats_deep),
            Case::ChatEventsFirst => "GET /v0/evi/chats/{id}, first page".into(),
            Case::ChatEventsLast => {
                format!("GET /v0/evi/chats/{{id}}, last page ({})", g.chat_last)
            }
            Case::GroupEventsFirst => "GET /v0/evi/chat_groups/{id}/events, first page".into(),
            Case::GroupEventsFirstDesc => {
                "GET /v0/evi/chat_groups/{id}/events, first page, newest first".into()
            }
            Case::GroupEventsLast => format!(
                "GET /v0/evi/chat_groups/{{id}}/events, last page ({})",
                g.group_last
            ),
            Case::GroupsFirst => "GET /v0/evi/chat_groups, first page".into(),
        }
    }

    fn page(self, g: &Geometry) -> PageRequest {
        let (number, ascending) = match self {
            Case::ChatsFirst | Case::ChatEventsFirst | Case::GroupEventsFirst => (0, true),
            Case::GroupsFirst => (0, true),
            Case::ChatsFirstDesc | Case::GroupEventsFirstDesc => (0, false),
            Case::ChatsDeep => (g.chats_deep, true),
            Case::ChatEventsLast => (g.chat_last, true),
            Case::GroupEventsLast => (g.group_last, true),
        };
        PageRequest {
            number,
            size: g.size,
            ascending,
        }
    }

    /// Path and query of one request about `chat` / `group`.
    fn path(self, g: &Geometry, chat: Uuid, group: Uuid) -> String {
        let p = self.page(g);
        let q = format!(
            "page_size={}&page_number={}&ascending_order={}",
            p.size, p.number, p.ascending
        );
        match self {
            Case::ChatsFirst | Case::ChatsFirstDesc | Case::ChatsDeep => {
                format!("/v0/evi/chats?{q}")
            }
            Case::ChatEventsFirst | Case::ChatEventsLast => format!("/v0/evi/chats/{chat}?{q}"),
            Case::GroupEventsFirst | Case::GroupEventsFirstDesc | Case::GroupEventsLast => {
                format!("/v0/evi/chat_groups/{group}/events?{q}")
            }
            Case::GroupsFirst => format!("/v0/evi/chat_groups?{q}"),
        }
    }

    /// The JSON array holding the page's items.
    fn items_field(self) -> &'static str {
        match self {
            Case::ChatsFirst | Case::ChatsFirstDesc | Case::ChatsDeep => "chats_page",
            Case::GroupsFirst => "chat_groups_page",
            _ => "events_page",
        }
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
    let n = match case {
        Case::ChatsFirst | Case::ChatsFirstDesc | Case::ChatsDeep => store
            .list_chats(user, &ChatFilter::default(), page)
            .await?
            .items
            .len(),
        Case::ChatEventsFirst | Case::ChatEventsLast => {
            if as_handler {
                store.get_chat(user, chat).await?.context("no such chat")?;
            }
            store.list_chat_events(chat, page).await?.items.len()
        }
        Case::GroupEventsFirst | Case::GroupEventsFirstDesc | Case::GroupEventsLast => {
            if as_handler {
                store
                    .get_chat_group(user, group)
                    .await?
                    .context("no such group")?;
            }
            store.list_group_events(group, page).await?.items.len()
        }
        Case::GroupsFirst => store.list_chat_groups(user, None, page).await?.items.len(),
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

async fn run(args: Args) -> anyhow::Result<()> {
    println!("# list_latency benchmark");
    println!("machine: {}", machine());
    report_background_load();
    if args.events_per_chat < 2 || args.events < args.events_per_chat {
        bail!("--events must be at least --events-per-chat, which must be at least 2");
    }
    let chats = args.events / args.events_per_chat;
    if chats % args.chats_per_group != 0 {
        bail!("--events / --events-per-chat must be a multiple of --chats-per-group");
    }
    let groups = chats.div_ceil(args.chats_per_group);
    let size = args.page_size;
    let geometry = Geometry {
        size,
        chats_deep: ((chats as f64 / size as f64) * 0.9) as u32,
        chat_last: (args.events_per_chat.div_ceil(size as u64) - 1) as u32,
        group_last: ((args.events_per_chat * args.chats_per_group.min(chats)).div_ceil(size as u64)
            - 1) as u32,
    };
    println!(
        "data: {} events in {} chats ({} per chat) in {} groups ({} chats each), one account; {} timed requests per endpoint after {} warm-up requests, page_size {}\n",
        thousands(args.events as f64),
        thousands(chats as f64),
        args.events_per_chat,
        thousands(groups as f64),
        args.chats_per_group,
        args.requests,
        args.warmup,
        size
    );
    let mut tables = Vec::new();
    if matches!(args.backend, Backend::Sqlite | Backend::All) {
        println!("## SQLite");
        let dir = tempfile::tempdir()?;
        let settings = colloquy_testkit::settings(dir.path(), None);
        let url = settings.effective_database_url();
        std::fs::create_dir_all(dir.path())?;
        let store = SqliteStore::open(
            &url,
            &SqliteSettings {
                synchronous_full: false,
                ..Default::default()
            },
        )
        .await?;
        let seeded = seed(&store, &args).await?;
        store.close().await;
        let size_mb =
            std::fs::metadata(dir.path().join("colloquy.db")).map_or(0, |m| m.len()) / 1_000_000;
        println!("database file: {size_mb} MB");
        let rows = measure(&args, settings, &seeded, &geometry).await?;
        tables.push(("SQLite", rows));
    }
    if matches!(args.backend, Backend::Postgres | Backend::All) {
        println!("## PostgreSQL");
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
                let outcome = postgres(&args, db.url(), &geometry).await;
                db.drop_database().await;
                tables.push(("PostgreSQL", outcome?));
            }
        }
    }
    println!("## Summary (target: p99 <= 10 ms for every request)\n");
    for (backend, rows) in &tables {
        println!("### {backend}\n");
        println!("| request | HTTP p50 | HTTP p99 | store, list call p50 / p99 | store, all handler calls p50 / p99 | response | p99 <= 10 ms |");
        println!("|---|---:|---:|---:|---:|---:|---|");
        for m in rows {
            println!(
                "| {} | {} | {} | {} / {} | {} / {} | {} B | {} |",
                m.case.label(&geometry),
                ms(m.http.p50_us),
                ms(m.http.p99_us),
                ms(m.store_list.p50_us),
                ms(m.store_list.p99_us),
                ms(m.store_handler.p50_us),
                ms(m.store_handler.p99_us),
                thousands(m.bytes as f64),
                if m.http.p99_us <= 10_000 {
                    "yes"
                } else {
                    "**no**"
                }
            );
        }
        println!();
    }
    Ok(())
}

async fn postgres(args: &Args, url: &str, geometry: &Geometry) -> anyhow::Result<Vec<Measured>> {
    let store = PostgresStore::open(url, &PostgresSettings::default()).await?;
    let seeded = seed(&store, args).await;
    store.close().await;
    let seeded = seeded?;
    // A long-running database has been analysed by autovacuum; a freshly bulk-loaded one not
    // yet. Analyse now so the planner sees the real table sizes.
    let t = Instant::now();
    let mut conn = PgConnectOptions::from_str(url)?.connect().await?;
    sqlx::query("VACUUM ANALYZE").execute(&mut conn).await?;
    // Flush the bulk load now, so the measurement does not share the disk and CPU with the
    // checkpointer writing it out in the background.
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
    let dir = tempfile::tempdir()?;
    let mut settings = colloquy_testkit::settings(dir.path(), Some(url));
    if let Some(n) = args.postgres_max_connections {
        settings.database.postgres_max_connections = n;
    }
    println!(
        "server pool: {} PostgreSQL connections",
        settings.database.postgres_max_connections
    );
    measure(args, settings, &seeded, geometry).await
}

/// Seeds the account: per chat a `StartChat` (CHAT_START_MESSAGE), an `AppendEvents` with
/// the conversation (alternating user and assistant messages) and an `EndChat`
/// (CHAT_END_MESSAGE), 50 chats per `apply_batch` call.
async fn seed(store: &dyn Store, args: &Args) -> anyhow::Result<Seeded> {
    let key = create_account_key(store, Some("bench".into()), true).await?;
    let key_id = store
        .list_api_keys()
        .await?
        .into_iter()
        .find(|k| k.user_id == key.user_id)
        .context("the new key is not listed")?
        .id;
    let per_chat = args.events_per_chat;
    let n_chats = args.events / per_chat;
    let chats: Vec<Uuid> = (0..n_chats).map(|_| Uuid::new_v4()).collect();
    let groups: Vec<Uuid> = (0..n_chats.div_ceil(args.chats_per_group))
        .map(|_| Uuid::new_v4())
        .collect();
    // Chats two minutes apart, events one second apart, all in the past.
    let chat_gap = 120_000i64;
    let base = now_ms() - n_chats as i64 * chat_gap - 3_600_000;
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
    for first in (0..n_chats).step_by(per_batch as usize) {
        let mut ops = Vec::new();
        for c in first..(first + per_batch).min(n_chats) {
            let chat = chats[c as usize];
            let g = (c / args.chats_per_group) as usize;
            let group = if c % args.chats_per_group == 0 {
                GroupChoice::New(groups[g])
            } else {
                GroupChoice::Resume(groups[g])
            };
            let start = base + c as i64 * chat_gap;
            let ts = |j: u64| start + j as i64 * 1000;
            ops.push(WriteOp::StartChat {
                api_key_id: key_id,
                chat: NewChat {
                    id: chat,
                    user_id: key.user_id,
                    group,
                    start_timestamp: start,
                    metadata: Some(format!(r#"{{"request_id":"{}"}}"#, Uuid::new_v4())),
                    config_id: None,
                    config_version: None,
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
                    event(
                        j as i64,
                        ts(j),
                        role,
                        ty,
                        sentence(c * per_chat + j).to_string(),
                    )
                })
                .collect();
            ops.push(WriteOp::AppendEvents {
                api_key_id: key_id,
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
                api_key_id: key_id,
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
        let done = (first + per_batch).min(n_chats) as f64 / n_chats as f64;
        if done >= next_report || done >= 1.0 {
            println!(
                "seeded {:>3.0}% ({} events) in {:.1} s",
                done * 100.0,
                thousands(done * (n_chats * per_chat) as f64),
                t0.elapsed().as_secs_f64()
            );
            next_report += 0.1;
        }
    }
    Ok(Seeded {
        user_id: key.user_id,
        api_key: key.api_key,
        chats: Arc::new(chats),
        groups: Arc::new(groups),
    })
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
                seeded.chats[rng.below(seeded.chats.len())],
                seeded.groups[rng.below(seeded.groups.len())],
            )
        };
        let expected = expected_items(case, g, seeded, args);
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
                let n = v[case.items_field()].as_array().map_or(0, Vec::len);
                if n != expected {
                    bail!("{url}: {n} items, expected {expected}");
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
                        let chat = seeded.chats[rng.below(seeded.chats.len())];
                        let group = seeded.groups[rng.below(seeded.groups.len())];
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
        let m = Measured {
            case,
            http: Summary::from_micros(times),
            bytes,
            store_list: store_times[0],
            store_handler: store_times[1],
        };
        println!(
            "{}: HTTP {} (machine {:.0}% busy) | store list {} | store, handler's calls {}",
            case.label(g),
            m.http,
            busy * 100.0,
            m.store_list,
            m.store_handler
        );
        out.push(m);
    }
    println!();
    Ok(out)
}

/// Items a full page of `case` holds on the seeded data.
fn expected_items(case: Case, g: &Geometry, seeded: &Seeded, args: &Args) -> usize {
    let page = case.page(g);
    let total = match case {
        Case::ChatsFirst | Case::ChatsFirstDesc | Case::ChatsDeep => seeded.chats.len() as u64,
        Case::GroupsFirst => seeded.groups.len() as u64,
        Case::ChatEventsFirst | Case::ChatEventsLast => args.events_per_chat,
        Case::GroupEventsFirst | Case::GroupEventsFirstDesc | Case::GroupEventsLast => {
            args.events_per_chat * args.chats_per_group.min(seeded.chats.len() as u64)
        }
    };
    let skipped = page.number as u64 * page.size as u64;
    total.saturating_sub(skipped).min(page.size as u64) as usize
}
