//! `ingest`: event ingestion through the real chat WebSocket.
//!
//! Starts the server in-process on its own runtime (threads `srv-worker`), creates one API
//! key, opens `--sessions` chat sockets from a client runtime (threads `cli-worker`), and
//! has every session loop: `user_input` → wait for the `user_message` echo, then
//! `assistant_input` → wait for `assistant_message` and `assistant_end`. Each input stores
//! exactly one event and is echoed only after its commit, so acknowledged inputs/s is the
//! durable ingestion rate. After `--warmup` seconds, acknowledgements are counted for
//! `--seconds`.
//!
//! Baseline, same run: the same number of event rows inserted with one plain sqlx
//! connection into the same schema (created by the backend's own migrations), in
//! transactions of `--baseline-tx-rows` rows, one multi-row INSERT each, same durability.

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use colloquy_bench::sys::{
    fsync_probe, machine, report_background_load, thread_cpu, thread_cpu_delta, SystemCpu,
};
use colloquy_bench::workload::{
    now_ms, prepare_chats, row_of, sqlite_insert_rows, sqlite_writer, store_batches, Baseline,
    INSERT_EVENTS,
};
use colloquy_bench::{client_runtime, init_server_logging, sentence, thousands};
use colloquy_bench::{stats::ms, Summary};
use colloquy_server::Settings;
use colloquy_storage_postgres::{PostgresSettings, PostgresStore};
use colloquy_storage_sqlite::{SqliteSettings, SqliteStore};
use colloquy_testkit::{open_chat, ServerThread, TestDatabase, Ws};
use futures::{SinkExt, StreamExt};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Postgres, QueryBuilder};
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
    All,
}

/// Event ingestion through the chat WebSocket, against raw batched INSERTs.
#[derive(Parser, Debug, Clone)]
#[command(name = "ingest")]
struct Args {
    /// Concurrent chat sessions.
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds, not counted.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Backends to measure.
    #[arg(long, value_enum, default_value = "all")]
    backend: Backend,
    /// SQLite `database.sqlite_synchronous` settings to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "full,normal")]
    sqlite_synchronous: Vec<String>,
    /// Rows per transaction of the raw-INSERT baseline.
    #[arg(long, default_value_t = 100)]
    baseline_tx_rows: usize,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Experiment, not the shipped behaviour: set TCP_NODELAY on the server's listening
    /// socket (inherited by accepted sockets) to show what Nagle's algorithm costs.
    #[arg(long)]
    experiment_listener_nodelay: bool,
    /// Worker threads of the clients' runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_server_logging();
    client_runtime(args.client_threads)?.block_on(run(args))
}

/// Result of one WebSocket ingestion run.
struct Ingest {
    events: u64,
    secs: f64,
    user_lat: Summary,
    assistant_lat: Summary,
    all_lat: Summary,
    /// From `assistant_message` to the `assistant_end` the server sends right after it.
    end_gap: Summary,
    /// One whole loop: two inputs, three server messages.
    turn: Summary,
    total_acked: u64,
    stored: u64,
    cpu: String,
}

impl Ingest {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }
}

struct Row {
    backend: &'static str,
    durability: String,
    ingest: Ingest,
    /// `Store::apply_batch` called directly.
    store: Baseline,
    /// Plain multi-row INSERTs.
    raw: Baseline,
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!("# ingest benchmark");
    println!("machine: {}", machine());
    report_background_load();
    let probe_dir = tempfile::tempdir()?;
    let (fsync_p50, fsync_max) = fsync_probe(probe_dir.path(), 100)?;
    println!(
        "disk: 4 KiB write + fdatasync in the temp dir: median {:.2} ms, max {:.2} ms",
        fsync_p50.as_secs_f64() * 1e3,
        fsync_max.as_secs_f64() * 1e3
    );
    if args.experiment_listener_nodelay {
        println!(
            "EXPERIMENT: TCP_NODELAY set on the server's listening socket (not the shipped behaviour)"
        );
    }
    println!(
        "load: {} sessions, {} s warm-up, {} s measured; server runtime {} threads, client \
         runtime {} threads; baselines: {}-row transactions over {} chats\n",
        args.sessions,
        args.warmup,
        args.seconds,
        args.server_threads,
        args.client_threads,
        args.baseline_tx_rows,
        args.sessions
    );
    let mut rows = Vec::new();
    if matches!(args.backend, Backend::Sqlite | Backend::All) {
        for sync in &args.sqlite_synchronous {
            let full = match sync.as_str() {
                "full" => true,
                "normal" => false,
                other => bail!("--sqlite-synchronous takes full or normal, not {other}"),
            };
            println!("## SQLite, sqlite_synchronous = {sync}");
            let dir = tempfile::tempdir()?;
            let mut settings = unspoken(colloquy_testkit::settings(dir.path(), None));
            settings.database.sqlite_synchronous = sync.clone();
            let url = settings.effective_database_url();
            let mut ingest = ingest(&args, settings).await?;
            ingest.stored = count_sqlite(&url).await?;
            report_ingest(&ingest);
            drop(dir);
            let rows_n = ingest.events.max(1);
            let store = {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("store.db").display());
                let settings = SqliteSettings {
                    synchronous_full: full,
                    ..Default::default()
                };
                let store = SqliteStore::open(&url, &settings).await?;
                let b = store_batches(&store, rows_n, args.sessions, args.baseline_tx_rows).await;
                store.close().await;
                b?
            };
            report_baseline("store.apply_batch", &store);
            let raw = baseline_sqlite(rows_n, args.sessions, full, args.baseline_tx_rows).await?;
            report_baseline("raw INSERT", &raw);
            rows.push(Row {
                backend: "SQLite",
                durability: format!("synchronous={sync}"),
                ingest,
                store,
                raw,
            });
        }
    }
    if matches!(args.backend, Backend::Postgres | Backend::All) {
        println!("## PostgreSQL");
        match postgres_row(&args).await? {
            None => println!("PostgreSQL unreachable: skipped (see the message above)\n"),
            Some(row) => rows.push(row),
        }
    }
    println!("## Summary (target: >= 20,000 events/s on SQLite with synchronous=full)\n");
    println!(
        "| backend | durability | WebSocket ingest, events/s | echo p50 / p99 | store.apply_batch, events/s | raw INSERT, rows/s | ingest / raw |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} / {} | {} | {} | {:.0}% |",
            r.backend,
            r.durability,
            thousands(r.ingest.rate()),
            ms(r.ingest.all_lat.p50_us),
            ms(r.ingest.all_lat.p99_us),
            thousands(r.store.rate()),
            thousands(r.raw.rate()),
            100.0 * r.ingest.rate() / r.raw.rate()
        );
    }
    println!(
        "\nBaselines: {} events per transaction; per-transaction p50 / p99:",
        args.baseline_tx_rows
    );
    for r in &rows {
        println!(
            "- {} {}: store.apply_batch {} / {}, raw INSERT {} / {}",
            r.backend,
            r.durability,
            ms(r.store.tx.p50_us),
            ms(r.store.tx.p99_us),
            ms(r.raw.tx.p50_us),
            ms(r.raw.tx.p99_us)
        );
    }
    Ok(())
}

/// `settings` with `[engine.client] speak = false`: this benchmark measures event ingestion,
/// and speaking every `assistant_input` (on by default) would make it measure the voice
/// synthesizing thousands of sentences a second instead.
fn unspoken(mut settings: Settings) -> Settings {
    settings.engine.client.speak = false;
    settings
}

/// Ingest and both baselines on throwaway PostgreSQL databases; `None` when unreachable.
async fn postgres_row(args: &Args) -> anyhow::Result<Option<Row>> {
    let Some(db) = TestDatabase::create().await else {
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    let settings = unspoken(colloquy_testkit::settings(dir.path(), Some(db.url())));
    let outcome = ingest(args, settings).await;
    let counted = match &outcome {
        Ok(_) => Some(count_postgres(db.url()).await),
        Err(_) => None,
    };
    db.drop_database().await;
    let mut ingest = outcome?;
    ingest.stored = counted.transpose()?.unwrap_or(0);
    report_ingest(&ingest);
    let rows_n = ingest.events.max(1);

    let db = TestDatabase::create()
        .await
        .context("PostgreSQL went away")?;
    let store = async {
        let store = PostgresStore::open(db.url(), &PostgresSettings::default()).await?;
        let b = store_batches(&store, rows_n, args.sessions, args.baseline_tx_rows).await;
        store.close().await;
        b
    }
    .await;
    db.drop_database().await;
    let store = store?;
    report_baseline("store.apply_batch", &store);

    let db = TestDatabase::create()
        .await
        .context("PostgreSQL went away")?;
    let raw = baseline_postgres(db.url(), rows_n, args.sessions, args.baseline_tx_rows).await;
    db.drop_database().await;
    let raw = raw?;
    report_baseline("raw INSERT", &raw);
    let sync = pg_setting("synchronous_commit").await;
    Ok(Some(Row {
        backend: "PostgreSQL",
        durability: format!("synchronous_commit={sync}"),
        ingest,
        store,
        raw,
    }))
}

fn report_ingest(i: &Ingest) {
    println!(
        "ingest: {} events acknowledged in {:.2} s = {} events/s",
        i.events,
        i.secs,
        thousands(i.rate())
    );
    println!("  user_input -> user_message:           {}", i.user_lat);
    println!(
        "  assistant_input -> assistant_message: {}",
        i.assistant_lat
    );
    println!("  assistant_message -> assistant_end:   {}", i.end_gap);
    println!("  whole turn (2 inputs, 3 replies):     {}", i.turn);
    println!("  CPU in the window: {}", i.cpu);
    let ok = if i.stored == i.total_acked {
        "ok"
    } else {
        "MISMATCH"
    };
    println!(
        "  check: {} message events stored, {} acknowledged over the whole run: {ok}",
        i.stored, i.total_acked
    );
}

fn report_baseline(what: &str, b: &Baseline) {
    println!(
        "{what}: {} rows in {:.2} s = {} rows/s; per transaction {}",
        b.rows,
        b.secs,
        thousands(b.rate()),
        b.tx
    );
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const DONE: u8 = 2;

#[derive(Default)]
struct SessionStats {
    measured: u64,
    total: u64,
    user_us: Vec<u64>,
    assistant_us: Vec<u64>,
    end_gap_us: Vec<u64>,
    turn_us: Vec<u64>,
}

async fn ingest(args: &Args, settings: Settings) -> anyhow::Result<Ingest> {
    let server = ServerThread::start_with(
        settings,
        args.server_threads,
        args.experiment_listener_nodelay,
    )
    .await?;
    let key = server.key(Some("bench"), true).await?;
    let url = server.ws_url();
    let sockets =
        futures::future::try_join_all((0..args.sessions).map(|_| connect(&url, &key.api_key)))
            .await
            .context("opening the sessions")?;
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::spawn(session(ws, phase.clone(), i as u64)))
        .collect();
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let (cpu0, sys0) = (thread_cpu(), SystemCpu::now());
    phase.store(MEASURE, Ordering::SeqCst);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    phase.store(DONE, Ordering::SeqCst);
    let secs = t0.elapsed().as_secs_f64();
    let (cpu1, sys1) = (thread_cpu(), SystemCpu::now());
    let mut all = SessionStats::default();
    for t in tasks {
        let s = t.await??;
        all.measured += s.measured;
        all.total += s.total;
        all.user_us.extend(s.user_us);
        all.assistant_us.extend(s.assistant_us);
        all.end_gap_us.extend(s.end_gap_us);
        all.turn_us.extend(s.turn_us);
    }
    server.stop().await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = thread_cpu_delta(&cpu0, &cpu1);
    let own: f64 = threads.iter().map(|(_, d)| d.as_secs_f64()).sum::<f64>() / secs;
    let mut cpu = format!(
        "machine {:.0}% busy of {cores} cores (100% = all cores); this process {:.0}% of one core:",
        100.0 * sys0.busy_since(&sys1),
        100.0 * own
    );
    for (name, d) in threads {
        cpu.push_str(&format!(" {name} {:.0}%", 100.0 * d.as_secs_f64() / secs));
    }
    let mut both = all.user_us.clone();
    both.extend_from_slice(&all.assistant_us);
    Ok(Ingest {
        events: all.measured,
        secs,
        user_lat: Summary::from_micros(all.user_us),
        assistant_lat: Summary::from_micros(all.assistant_us),
        all_lat: Summary::from_micros(both),
        end_gap: Summary::from_micros(all.end_gap_us),
        turn: Summary::from_micros(all.turn_us),
        total_acked: all.total,
        stored: 0,
        cpu,
    })
}

async fn connect(url: &str, key: &str) -> anyhow::Result<Ws> {
    let (ws, _) = tokio::time::timeout(Duration::from_secs(30), open_chat(url, Some(key), true))
        .await
        .context("timed out waiting for chat_metadata")??;
    Ok(ws)
}

/// One session: user and assistant turns until the run is over, then a clean close.
async fn session(mut ws: Ws, phase: Arc<AtomicU8>, id: u64) -> anyhow::Result<SessionStats> {
    let mut st = SessionStats::default();
    let mut n = id * 31;
    while phase.load(Ordering::Relaxed) != DONE {
        let turn = Instant::now();
        for (input, echo) in [
            ("user_input", "user_message"),
            ("assistant_input", "assistant_message"),
        ] {
            n += 1;
            let msg = format!(r#"{{"type":"{input}","text":"{}"}}"#, sentence(n));
            let t = Instant::now();
            ws.send(Message::Text(msg.into())).await?;
            expect(&mut ws, echo).await?;
            let us = t.elapsed().as_micros() as u64;
            st.total += 1;
            if phase.load(Ordering::Relaxed) == MEASURE {
                st.measured += 1;
                if input == "user_input" {
                    st.user_us.push(us);
                } else {
                    st.assistant_us.push(us);
                }
            }
        }
        let t = Instant::now();
        expect(&mut ws, "assistant_end").await?;
        if phase.load(Ordering::Relaxed) == MEASURE {
            st.end_gap_us.push(t.elapsed().as_micros() as u64);
            st.turn_us.push(turn.elapsed().as_micros() as u64);
        }
    }
    ws.close(None).await?;
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
    Ok(st)
}

/// Waits for the next text message and checks its `type`.
async fn expect(ws: &mut Ws, want: &str) -> anyhow::Result<()> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .with_context(|| format!("timed out waiting for {want}"))?
            .with_context(|| format!("socket ended while waiting for {want}"))??;
        match msg {
            Message::Text(t) => {
                let got = t
                    .as_str()
                    .split_once(r#""type":""#)
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map_or("", |(ty, _)| ty);
                if got == want {
                    return Ok(());
                }
                bail!("expected {want}, got {}", t.as_str());
            }
            Message::Close(c) => bail!("server closed the socket waiting for {want}: {c:?}"),
            _ => continue,
        }
    }
}

const MESSAGE_EVENTS: &str =
    "SELECT COUNT(*) FROM chat_events WHERE type IN ('USER_MESSAGE', 'AGENT_MESSAGE')";

async fn count_sqlite(url: &str) -> anyhow::Result<u64> {
    let mut conn = SqliteConnectOptions::from_str(url)?
        .read_only(true)
        .connect()
        .await?;
    let n: i64 = sqlx::query_scalar(MESSAGE_EVENTS)
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(n as u64)
}

async fn count_postgres(url: &str) -> anyhow::Result<u64> {
    let mut conn = PgConnectOptions::from_str(url)?.connect().await?;
    let n: i64 = sqlx::query_scalar(MESSAGE_EVENTS)
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(n as u64)
}

async fn pg_setting(name: &str) -> String {
    let url = std::env::var("COLLOQUY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| colloquy_storage_postgres::testing::DEFAULT_ADMIN_URL.to_string());
    let get = async {
        let mut conn = PgConnectOptions::from_str(&url)?.connect().await?;
        let v: String = sqlx::query_scalar(&format!("SHOW {name}"))
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        anyhow::Ok(v)
    };
    get.await.unwrap_or_else(|_| "?".into())
}

async fn baseline_sqlite(
    rows: u64,
    chats: usize,
    full: bool,
    tx_rows: usize,
) -> anyhow::Result<Baseline> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("raw.db").display());
    let settings = SqliteSettings {
        synchronous_full: full,
        ..Default::default()
    };
    let store = SqliteStore::open(&url, &settings).await?;
    let (_, ids) = prepare_chats(&store, chats.max(1)).await?;
    store.close().await;
    let mut conn = sqlite_writer(&url, full).await?;
    let mut tx_times = Vec::new();
    let mut done = 0u64;
    let t0 = Instant::now();
    while done < rows {
        let n = (tx_rows as u64).min(rows - done);
        let t = Instant::now();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await?;
        sqlite_insert_rows(&mut conn, &ids, done..done + n).await?;
        sqlx::query("COMMIT").execute(&mut conn).await?;
        tx_times.push(t.elapsed());
        done += n;
    }
    let secs = t0.elapsed().as_secs_f64();
    conn.close().await?;
    Ok(Baseline {
        rows,
        secs,
        tx: Summary::from_durations(&tx_times),
    })
}

async fn baseline_postgres(
    url: &str,
    rows: u64,
    chats: usize,
    tx_rows: usize,
) -> anyhow::Result<Baseline> {
    let store = PostgresStore::open(url, &PostgresSettings::default()).await?;
    let (_, ids) = prepare_chats(&store, chats.max(1)).await?;
    store.close().await;
    let mut conn = PgConnectOptions::from_str(url)?.connect().await?;
    let mut tx_times = Vec::new();
    let mut done = 0u64;
    let t0 = Instant::now();
    while done < rows {
        let n = (tx_rows as u64).min(rows - done);
        let t = Instant::now();
        let mut tx = conn.begin().await?;
        let ts = now_ms();
        let mut qb = QueryBuilder::<Postgres>::new(INSERT_EVENTS);
        qb.push_values(done..done + n, |mut b, k| {
            let (id, chat, group, seq, role, ty) = row_of(k, &ids);
            b.push_bind(id)
                .push_bind(chat)
                .push_bind(group)
                .push_bind(seq)
                .push_bind(ts)
                .push_bind(role.as_str())
                .push_bind(ty.as_str())
                .push_bind(sentence(k))
                .push_bind(None::<String>)
                .push_bind(None::<String>)
                .push_bind(None::<Uuid>);
        });
        qb.build().execute(&mut *tx).await?;
        tx.commit().await?;
        tx_times.push(t.elapsed());
        done += n;
    }
    let secs = t0.elapsed().as_secs_f64();
    conn.close().await?;
    Ok(Baseline {
        rows,
        secs,
        tx: Summary::from_durations(&tx_times),
    })
}
