//! Shared pieces of Colloquy's benchmark binaries (`src/bin`): latency summaries, machine
//! and CPU probes, and realistic message texts. The server (on its own runtime and OS
//! threads: `colloquy_testkit::ServerThread`), chat sockets and keys come from the test kit,
//! `crates/colloquy-testkit`.
//!
//! Run the binaries in release mode, e.g.
//! `cargo run --release -p colloquy-bench --bin ingest`. `docs/benchmarks.md` has the
//! commands and the results.

/// The same allocator as the `colloquy` binary, so the in-process server runs as shipped.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod stats;
pub mod sys;
pub mod workload;

pub use stats::Summary;

/// Sentences of about 60 bytes, the size of a short spoken turn.
const SENTENCES: &[&str] = &[
    "Could you remind me what we decided about the budget review?",
    "Sure, the review moved to Thursday afternoon at three o'clock.",
    "I keep waking up at four in the morning and cannot fall asleep.",
    "That sounds exhausting; has anything changed in your routine?",
    "Please book a table for two at the Italian place near the office.",
    "Done. I reserved a table for two at seven thirty this evening.",
    "What is the weather going to be like in Lisbon this weekend?",
    "Expect sunshine on Saturday and light rain on Sunday afternoon.",
    "Can you summarise the main points of the article I sent you?",
    "It argues that small daily habits matter more than big goals.",
    "I am nervous about the interview tomorrow, any advice at all?",
    "Prepare two stories about past projects and breathe slowly.",
    "How many kilometres did I run last week according to my log?",
    "You ran twenty-three kilometres over four sessions last week.",
    "Remind me to call my sister when I get home from work today.",
    "Okay, I will remind you to call your sister at six tonight.",
];

/// A realistic message text (about 60 bytes, no characters that need JSON escaping).
pub fn sentence(i: u64) -> &'static str {
    SENTENCES[(i % SENTENCES.len() as u64) as usize]
}

/// A small deterministic pseudo-random generator (xorshift64*), so runs pick the same ids.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Installs a `tracing` subscriber like the server's (filter `RUST_LOG` or `info`), so the
/// in-process server pays for its spans and log lines as in production. Output is discarded
/// unless `COLLOQUY_BENCH_SERVER_LOG` is `1` (log lines to stderr) or `spans` (also one line
/// per closed span with its busy and idle time, e.g. the server-side time of each request).
pub fn init_server_logging() {
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let mode = std::env::var("COLLOQUY_BENCH_SERVER_LOG").unwrap_or_default();
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match mode.as_str() {
        "1" => builder.with_writer(std::io::stderr).try_init(),
        "spans" => builder
            .with_span_events(FmtSpan::CLOSE)
            .with_writer(std::io::stderr)
            .try_init(),
        _ => builder.with_writer(std::io::sink).try_init(),
    };
}

/// A client runtime on its own named threads (`cli-worker`), separate from the server's.
pub fn client_runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads.max(1))
        .thread_name("cli-worker")
        .enable_all()
        .build()
}

/// Formats a rate with thousands separators, e.g. `21,345`.
pub fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_are_plain_and_about_sixty_bytes() {
        for s in SENTENCES {
            assert!((55..=70).contains(&s.len()), "{s}: {}", s.len());
            assert!(!s.contains('"') && !s.contains('\\'), "{s}");
        }
    }

    #[test]
    fn thousands_separates_groups() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }

    #[test]
    fn rng_stays_in_range() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
        }
    }
}
