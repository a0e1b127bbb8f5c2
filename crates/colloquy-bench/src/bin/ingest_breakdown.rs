//! `ingest_breakdown`: where the time of one group-commit transaction goes on SQLite.
//!
//! A diagnostic companion of `ingest`. On a fresh database with the server's schema and
//! `--chats` active chats, it writes `--transactions` transactions of `--batch` events each
//! (rows spread round-robin over the chats, as concurrent sessions spread them) in several
//! ways, and reports for each: events/s, per-transaction latency, CPU per event of the sqlx
//! SQLite worker thread and of the calling thread, and WAL frames (4 KiB pages) written per
//! transaction.
//!
//! - `INSERT, one chat`: one multi-row INSERT per transaction, every row in the same chat.
//! - `INSERT`: one multi-row INSERT per transaction (the `ingest` raw baseline).
//! - `INSERT + per-chat UPDATEs`: plus one `UPDATE chats … WHERE id = ?` per chat, as
//!   `Store::apply_batch` bumps the chats' counters today.
//! - `INSERT + one UPDATE … FROM (VALUES …)`: the same counters in a single statement.
//! - `store.apply_batch`: the real storage call, `--batch` single-event `AppendEvents` ops.
//! - `SELECT 1 × batch`: no writes; `--batch` statement round trips to the sqlx worker thread.

use clap::Parser;
use colloquy_bench::stats::ms;
use colloquy_bench::sys::{machine, report_background_load, thread_cpu, thread_cpu_delta};
use colloquy_bench::workload::{
    prepare_chats, row_of, sqlite_insert_rows, sqlite_writer, store_batches,
};
use colloquy_bench::{client_runtime, thousands, Summary};
use colloquy_storage_sqlite::{SqliteSettings, SqliteStore};
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Cost breakdown of a group-commit transaction on SQLite.
#[derive(Parser, Debug)]
#[command(name = "ingest_breakdown")]
struct Args {
    /// Events per transaction (the batch size the server reaches with 100 sessions).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Chats the events are spread over.
    #[arg(long, default_value_t = 100)]
    chats: usize,
    /// Transactions per variant.
    #[arg(long, default_value_t = 300)]
    transactions: u64,
    /// `sqlite_synchronous` settings to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "full,normal")]
    sqlite_synchronous: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    InsertOneChat,
    Insert,
    InsertPerChatUpdates,
    InsertOneUpdate,
    ApplyBatch,
    Select1,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::InsertOneChat,
        Variant::Insert,
        Variant::InsertPerChatUpdates,
        Variant::InsertOneUpdate,
        Variant::ApplyBatch,
        Variant::Select1,
    ];

    fn label(self) -> &'static str {
        match self {
            Variant::InsertOneChat => "INSERT, all rows in one chat",
            Variant::Insert => "INSERT (ingest's raw baseline)",
            Variant::InsertPerChatUpdates => "INSERT + per-chat UPDATEs (as apply_batch)",
            Variant::InsertOneUpdate => "INSERT + one UPDATE ... FROM (VALUES ...)",
            Variant::ApplyBatch => "store.apply_batch (AppendEvents ops)",
            Variant::Select1 => "SELECT 1 x batch (round trips only)",
        }
    }
}

struct Measured {
    events_per_s: f64,
    tx: Summary,
    worker_us_per_event: f64,
    caller_us_per_event: f64,
    wal_frames_per_tx: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    client_runtime(1)?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!("# ingest_breakdown");
    println!("machine: {}", machine());
    report_background_load();
    println!(
        "{} transactions of {} events over {} chats per variant\n",
        args.transactions, args.batch, args.chats
    );
    for sync in &args.sqlite_synchronous {
        let full = sync == "full";
        println!("## sqlite_synchronous = {sync}\n");
        println!("| variant | events/s | tx p50 / p99 | SQLite worker CPU / event | caller CPU / event | WAL frames / tx |");
        println!("|---|---:|---:|---:|---:|---:|");
        for v in Variant::ALL {
            let m = measure(v, &args, full).await?;
            println!(
                "| {} | {} | {} / {} | {:.1} µs | {:.1} µs | {} |",
                v.label(),
                thousands(m.events_per_s),
                ms(m.tx.p50_us),
                ms(m.tx.p99_us),
                m.worker_us_per_event,
                m.caller_us_per_event,
                m.wal_frames_per_tx
                    .map_or("-".to_string(), |f| format!("{f:.0}"))
            );
        }
        println!();
    }
    Ok(())
}

async fn measure(v: Variant, args: &Args, full: bool) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let settings = SqliteSettings {
        synchronous_full: full,
        ..Default::default()
    };
    let store = SqliteStore::open(&url, &settings).await?;
    let chats = if v == Variant::InsertOneChat {
        1
    } else {
        args.chats
    };
    let rows = args.transactions * args.batch as u64;
    if v == Variant::ApplyBatch {
        let before = thread_cpu();
        let b = store_batches(&store, rows, chats, args.batch).await?;
        let after = thread_cpu();
        store.close().await;
        let (worker, caller) = split_cpu(&before, &after);
        return Ok(Measured {
            events_per_s: b.rate(),
            tx: b.tx,
            worker_us_per_event: worker / rows as f64,
            caller_us_per_event: caller / rows as f64,
            wal_frames_per_tx: None,
        });
    }
    let (_, ids) = prepare_chats(&store, chats).await?;
    store.close().await;
    let mut conn = sqlite_writer(&url, full).await?;
    let mut times = Vec::new();
    let before = thread_cpu();
    let t0 = Instant::now();
    let mut done = 0u64;
    for _ in 0..args.transactions {
        let range = done..done + args.batch as u64;
        let t = Instant::now();
        one_tx(v, &mut conn, &ids, range).await?;
        times.push(t.elapsed());
        done += args.batch as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    let after = thread_cpu();
    let (worker, caller) = split_cpu(&before, &after);
    // WAL frames per transaction: a short extra pass with automatic checkpoints off.
    let wal = if v == Variant::Select1 {
        None
    } else {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await?;
        sqlx::query("PRAGMA wal_autocheckpoint = 0")
            .execute(&mut conn)
            .await?;
        let n = 20u64;
        for _ in 0..n {
            let range = done..done + args.batch as u64;
            one_tx(v, &mut conn, &ids, range).await?;
            done += args.batch as u64;
        }
        let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut conn)
            .await?;
        Some(frames as f64 / n as f64)
    };
    conn.close().await?;
    Ok(Measured {
        events_per_s: rows as f64 / secs,
        tx: Summary::from_durations(&times),
        worker_us_per_event: worker / rows as f64,
        caller_us_per_event: caller / rows as f64,
        wal_frames_per_tx: wal,
    })
}

/// CPU µs of the sqlx SQLite worker threads and of every other thread of this process
/// (the caller: the main thread runs the `block_on` future).
fn split_cpu(
    before: &BTreeMap<String, Duration>,
    after: &BTreeMap<String, Duration>,
) -> (f64, f64) {
    let (mut worker, mut caller) = (0.0, 0.0);
    for (name, d) in thread_cpu_delta(before, after) {
        if name.starts_with("sqlx-sqlite") {
            worker += d.as_secs_f64() * 1e6;
        } else {
            caller += d.as_secs_f64() * 1e6;
        }
    }
    (worker, caller)
}

async fn one_tx(
    v: Variant,
    conn: &mut SqliteConnection,
    ids: &[(Uuid, Uuid)],
    range: std::ops::Range<u64>,
) -> anyhow::Result<()> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    match v {
        Variant::Select1 => {
            for _ in range {
                sqlx::query("SELECT 1").execute(&mut *conn).await?;
            }
        }
        Variant::InsertOneChat | Variant::Insert => {
            sqlite_insert_rows(conn, ids, range).await?;
        }
        Variant::InsertPerChatUpdates | Variant::InsertOneUpdate => {
            let ts = colloquy_bench::workload::now_ms();
            let mut counts: BTreeMap<Uuid, i64> = BTreeMap::new();
            for k in range.clone() {
                *counts.entry(row_of(k, ids).1).or_default() += 1;
            }
            sqlite_insert_rows(conn, ids, range).await?;
            if v == Variant::InsertPerChatUpdates {
                for (chat, n) in counts {
                    sqlx::query(
                        "UPDATE chats SET event_count = event_count + ?, \
                         last_event_timestamp = MAX(last_event_timestamp, ?) WHERE id = ?",
                    )
                    .bind(n)
                    .bind(ts)
                    .bind(chat.to_string())
                    .execute(&mut *conn)
                    .await?;
                }
            } else {
                let mut qb = QueryBuilder::<Sqlite>::new(
                    "UPDATE chats SET event_count = event_count + v.n, \
                     last_event_timestamp = MAX(last_event_timestamp, v.ts) \
                     FROM (SELECT column1 AS id, column2 AS n, column3 AS ts FROM (",
                );
                qb.push_values(counts, |mut b, (chat, n)| {
                    b.push_bind(chat.to_string()).push_bind(n).push_bind(ts);
                });
                qb.push(")) AS v WHERE chats.id = v.id");
                qb.build().execute(&mut *conn).await?;
            }
        }
        Variant::ApplyBatch => unreachable!("measured through the store"),
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(())
}
