//! `idle_memory`: resident memory of idle chat sessions in the real `colloquy serve` process.
//!
//! Runs the release binary (`--bin`, `$COLLOQUY_BIN`, or the `colloquy` next to this binary
//! in the same target directory) as a child with a temp data dir (SQLite) on
//! 127.0.0.1:0, after `colloquy keys create`. Once the server is warm (one HTTP request and
//! one chat session opened and closed), it reads the child's `VmRSS`, opens `--sessions`
//! chat sockets (each must receive its `chat_metadata`), waits `--settle-secs`, reads
//! `VmRSS` again, then closes them all and reads it a third time. Target: 1,000 idle
//! sessions cost <= 100 MB.
//!
//! Baseline, same run, on a fresh server process: the same number of plain HTTP/1.1
//! keep-alive connections (one `GET /healthz` each, then held open without upgrading). That
//! is what any connection costs the server (socket, hyper connection state, buffers); the
//! difference is what a chat session adds on top.

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use colloquy_bench::sys::{machine, raise_nofile_limit, report_background_load, rss, Rss};
use colloquy_bench::{client_runtime, thousands};
use colloquy_testkit::{open_chat, Ws};
use futures::{SinkExt, StreamExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Plain HTTP/1.1 keep-alive connections (the baseline).
    Http,
    /// Chat sessions.
    Sessions,
    /// Both, baseline first.
    All,
}

/// Resident memory of idle chat sessions, against idle HTTP keep-alive connections.
#[derive(Parser, Debug)]
#[command(name = "idle_memory")]
struct Args {
    /// Connections / sessions to hold open.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Seconds to wait before each memory reading.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// Connections opened concurrently.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// What to measure.
    #[arg(long, value_enum, default_value = "all")]
    mode: Mode,
    /// The `colloquy` binary [default: $COLLOQUY_BIN, else the `colloquy` next to this
    /// binary, else $CARGO_TARGET_DIR/release/colloquy, else target/release/colloquy].
    #[arg(long)]
    bin: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    client_runtime(2)?.block_on(run(args))
}

/// Memory readings of one server process.
struct Run {
    label: &'static str,
    cold: Rss,
    idle: Rss,
    loaded: Rss,
    closed: Rss,
    server_fds_idle: usize,
    server_fds_loaded: usize,
    client_rss_delta_kib: i64,
}

fn binary(args: &Args) -> PathBuf {
    if let Some(b) = &args.bin {
        return b.clone();
    }
    if let Ok(b) = std::env::var("COLLOQUY_BIN") {
        return PathBuf::from(b);
    }
    // Built by the same `cargo build --release`, next to this benchmark binary.
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("colloquy")))
        .filter(|p| p.exists())
    {
        return sibling;
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    Path::new(&target).join("release").join("colloquy")
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!("# idle_memory benchmark");
    println!("machine: {}", machine());
    report_background_load();
    let bin = binary(&args);
    if !bin.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p colloquy` or set COLLOQUY_BIN",
            bin.display()
        );
    }
    let nofile = raise_nofile_limit();
    println!("server binary: {}", bin.display());
    println!(
        "open-files limit of this process: {nofile}; {} connections, readings {} s after each step\n",
        args.sessions, args.settle_secs
    );
    if (nofile as usize) < args.sessions + 100 {
        bail!(
            "the open-files limit ({nofile}) is too low for {} sockets; raise it with `ulimit -n`",
            args.sessions
        );
    }
    let mut runs = Vec::new();
    if matches!(args.mode, Mode::Http | Mode::All) {
        runs.push(measure(&args, &bin, Mode::Http).await?);
    }
    if matches!(args.mode, Mode::Sessions | Mode::All) {
        runs.push(measure(&args, &bin, Mode::Sessions).await?);
    }
    let n = args.sessions as f64;
    println!(
        "## Summary (target: {} idle sessions cost <= 100 MB)\n",
        args.sessions
    );
    println!("| server holding {} … | VmRSS warm idle | VmRSS with them open | increase | per connection | RssAnon increase | VmRSS after closing them | server fds idle → open |", args.sessions);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        let inc = r.loaded.vm_rss_kib as f64 - r.idle.vm_rss_kib as f64;
        let anon = r.loaded.rss_anon_kib as f64 - r.idle.rss_anon_kib as f64;
        println!(
            "| {} | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} KiB | {:.1} MB | {:.1} MB | {} → {} |",
            r.label,
            mb(r.idle.vm_rss_kib as f64),
            mb(r.loaded.vm_rss_kib as f64),
            mb(inc),
            inc / n,
            mb(anon),
            mb(r.closed.vm_rss_kib as f64),
            r.server_fds_idle,
            r.server_fds_loaded
        );
    }
    println!();
    for r in &runs {
        println!(
            "- {}: VmRSS right after start {:.1} MB (warm idle {:.1} MB); threads {} → {}; this benchmark process grew by {:.1} MB holding the client ends",
            r.label,
            mb(r.cold.vm_rss_kib as f64),
            mb(r.idle.vm_rss_kib as f64),
            r.idle.threads,
            r.loaded.threads,
            mb(r.client_rss_delta_kib as f64)
        );
    }
    if let [http, sessions] = &runs[..] {
        let h = (http.loaded.vm_rss_kib as f64 - http.idle.vm_rss_kib as f64) / n;
        let s = (sessions.loaded.vm_rss_kib as f64 - sessions.idle.vm_rss_kib as f64) / n;
        let (word, diff) = if s >= h {
            ("more", s - h)
        } else {
            ("less", h - s)
        };
        println!(
            "- an idle chat session costs the server {s:.1} KiB, {diff:.1} KiB {word} than an idle keep-alive HTTP connection ({h:.1} KiB)"
        );
    }
    if let Some(s) = runs.iter().find(|r| r.label.contains("session")) {
        let inc = mb(s.loaded.vm_rss_kib as f64 - s.idle.vm_rss_kib as f64);
        println!(
            "- target: {} idle sessions cost {inc:.1} MB: {}",
            thousands(n),
            if inc <= 100.0 { "met" } else { "NOT met" }
        );
    }
    Ok(())
}

/// KiB to MB (10^6 bytes).
fn mb(kib: f64) -> f64 {
    kib * 1024.0 / 1e6
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Starts `colloquy serve` on a fresh data dir; returns the child, its base URL and an API key.
async fn start_server(bin: &Path, dir: &Path) -> anyhow::Result<(Child, String, String)> {
    let out = Command::new(bin)
        .env_remove("COLLOQUY_BIN")
        .args(["keys", "create", "--data-dir"])
        .arg(dir)
        .env_remove("COLLOQUY_DATABASE_URL")
        .env_remove("COLLOQUY_CONFIG")
        .output()
        .await
        .context("running `colloquy keys create`")?;
    if !out.status.success() {
        bail!(
            "`colloquy keys create` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let created: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let key = created["api_key"]
        .as_str()
        .context("no api_key in the output of `colloquy keys create`")?
        .to_string();
    let mut child = Command::new(bin)
        .env_remove("COLLOQUY_BIN")
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env_remove("COLLOQUY_DATABASE_URL")
        .env_remove("COLLOQUY_CONFIG")
        .env_remove("COLLOQUY_LISTEN")
        // Without the built-in voice (on by default, loaded at start-up when the system has
        // espeak-ng): the subject is the memory of idle connections and chats, and the
        // figures stay comparable on machines with and without the library.
        .env("COLLOQUY_ENGINE__CLIENT__SPEAK", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting `colloquy serve`")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.trim().strip_prefix("Colloquy listening on ") {
                return anyhow::Ok(url.trim().to_string());
            }
        }
        bail!("`colloquy serve` exited before listening")
    })
    .await
    .context("`colloquy serve` did not print its address within 30 s")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, base, key))
}

/// One keep-alive HTTP/1.1 connection that has completed a `GET /healthz`.
async fn http_connection(addr: &str) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !(buf.starts_with(b"HTTP/1.1 200") && buf.ends_with(b"\r\n\r\nok")) {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .context("timed out reading /healthz")??;
        if n == 0 {
            bail!("connection closed; got {:?}", String::from_utf8_lossy(&buf));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(s)
}

/// One chat session that has received its `chat_metadata`.
async fn session(url: &str, key: &str) -> anyhow::Result<Ws> {
    let (ws, _) = tokio::time::timeout(Duration::from_secs(30), open_chat(url, Some(key), true))
        .await
        .context("timed out waiting for chat_metadata")??;
    Ok(ws)
}

enum Held {
    Http(Vec<TcpStream>),
    Sessions(Vec<Ws>),
}

async fn open_all(args: &Args, mode: Mode, base: &str, key: &str) -> anyhow::Result<Held> {
    let addr = base.trim_start_matches("http://").to_string();
    let ws_url = format!("{}/v0/evi/chat", base.replace("http://", "ws://"));
    let mut http = Vec::new();
    let mut sessions = Vec::new();
    let mut left = args.sessions;
    while left > 0 {
        let n = left.min(args.concurrency.max(1));
        match mode {
            Mode::Http => http.extend(
                futures::future::try_join_all((0..n).map(|_| http_connection(&addr))).await?,
            ),
            _ => sessions.extend(
                futures::future::try_join_all((0..n).map(|_| session(&ws_url, key))).await?,
            ),
        }
        left -= n;
    }
    Ok(match mode {
        Mode::Http => Held::Http(http),
        _ => Held::Sessions(sessions),
    })
}

async fn measure(args: &Args, bin: &Path, mode: Mode) -> anyhow::Result<Run> {
    let label = match mode {
        Mode::Http => "idle HTTP/1.1 keep-alive connections (baseline)",
        _ => "idle chat sessions",
    };
    println!("## {label}");
    let dir = tempfile::tempdir()?;
    let (mut child, base, key) = start_server(bin, dir.path()).await?;
    let pid = child.id().context("the server exited")?;
    let settle = Duration::from_secs(args.settle_secs);
    let cold = rss(pid)?;
    // Warm up: one request and one session, so lazily built state is not counted per session.
    drop(http_connection(base.trim_start_matches("http://")).await?);
    let ws_url = format!("{}/v0/evi/chat", base.replace("http://", "ws://"));
    let mut ws = session(&ws_url, &key).await?;
    ws.close(None).await?;
    while let Some(Ok(m)) = ws.next().await {
        if m.is_close() {
            break;
        }
    }
    drop(ws);
    tokio::time::sleep(settle).await;
    let idle = rss(pid)?;
    let server_fds_idle = fd_count(pid);
    let client_before = rss(std::process::id())?;
    println!(
        "server pid {pid}: VmRSS {:.1} MB after start, {:.1} MB warm and idle",
        mb(cold.vm_rss_kib as f64),
        mb(idle.vm_rss_kib as f64)
    );
    let t = std::time::Instant::now();
    let held = open_all(args, mode, &base, &key).await?;
    println!(
        "opened {} in {:.1} s",
        args.sessions,
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(settle).await;
    let loaded = rss(pid)?;
    let server_fds_loaded = fd_count(pid);
    let client_after = rss(std::process::id())?;
    println!(
        "with {} open: VmRSS {:.1} MB (RssAnon {:.1} MB), {} fds, {} threads",
        args.sessions,
        mb(loaded.vm_rss_kib as f64),
        mb(loaded.rss_anon_kib as f64),
        server_fds_loaded,
        loaded.threads
    );
    match held {
        Held::Http(conns) => drop(conns),
        Held::Sessions(mut socks) => {
            for ws in &mut socks {
                let _ = ws.send(Message::Close(None)).await;
            }
            drop(socks);
        }
    }
    tokio::time::sleep(settle).await;
    let closed = rss(pid)?;
    println!(
        "after closing them: VmRSS {:.1} MB\n",
        mb(closed.vm_rss_kib as f64)
    );
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .is_err()
    {
        child.kill().await?;
    }
    Ok(Run {
        label,
        cold,
        idle,
        loaded,
        closed,
        server_fds_idle,
        server_fds_loaded,
        client_rss_delta_kib: client_after.vm_rss_kib as i64 - client_before.vm_rss_kib as i64,
    })
}
