//! Machine description, CPU accounting (per thread group of this process and system-wide),
//! resident memory of a process, the open-files limit, and an fsync probe.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// One line describing the machine: CPU model, cores, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib = meminfo_kib("MemTotal").unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores (nproc), {:.1} GiB RAM, Linux {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

fn meminfo_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Median and maximum time of `n` 4 KiB append + `fdatasync` calls on a file in `dir`: the
/// floor of a durable commit on this disk.
pub fn fsync_probe(dir: &Path, n: usize) -> std::io::Result<(Duration, Duration)> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = [b'x'; 4096];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        times.push(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    times.sort();
    Ok((
        times[times.len() / 2],
        *times.last().unwrap_or(&Duration::ZERO),
    ))
}

/// CPU time (user + system) used so far by this process's threads, grouped by thread name
/// with trailing digits and dashes removed (`srv-worker`, `cli-worker`,
/// `sqlx-sqlite-worker`, …). Threads that already exited are not counted.
pub fn thread_cpu() -> BTreeMap<String, Duration> {
    let mut out = BTreeMap::new();
    let tick = clock_tick();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let Some(ticks) = stat_ticks(&stat) else {
            continue;
        };
        let group = name
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
            .to_string();
        *out.entry(group).or_insert(Duration::ZERO) += tick * ticks as u32;
    }
    out
}

/// `utime + stime` in clock ticks from a `/proc/.../stat` line.
fn stat_ticks(stat: &str) -> Option<u64> {
    // Fields after the parenthesised command name: state is field 3; utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_tick() -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_secs_f64(1.0 / if hz > 0 { hz as f64 } else { 100.0 })
}

/// Differences between two [`thread_cpu`] snapshots, largest first.
pub fn thread_cpu_delta(
    before: &BTreeMap<String, Duration>,
    after: &BTreeMap<String, Duration>,
) -> Vec<(String, Duration)> {
    let mut out: Vec<(String, Duration)> = after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or_default()),
            )
        })
        .filter(|(_, d)| !d.is_zero())
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.1));
    out
}

/// System-wide CPU counters from `/proc/stat` (ticks): (busy, total).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemCpu {
    busy: u64,
    total: u64,
}

impl SystemCpu {
    /// Reads the aggregate `cpu` line.
    pub fn now() -> Self {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
            return Self::default();
        };
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        Self {
            busy: total - idle,
            total,
        }
    }

    /// Fraction of all cores busy between `self` and `later` (0..=1).
    pub fn busy_since(&self, later: &SystemCpu) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        later.busy.saturating_sub(self.busy) as f64 / total as f64
    }
}

/// How busy the whole machine is over `window` before a benchmark starts (0..=1); other
/// processes compete with the benchmark for the same cores.
pub fn background_busy(window: Duration) -> f64 {
    let a = SystemCpu::now();
    std::thread::sleep(window);
    a.busy_since(&SystemCpu::now())
}

/// Prints the background load, with a warning when other processes keep the CPU busy.
pub fn report_background_load() {
    let busy = background_busy(Duration::from_secs(2));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "background load before the run: {:.0}% of {cores} cores busy",
        busy * 100.0
    );
    if busy > 0.10 {
        println!("WARNING: other processes are using the CPU; results will be lower and noisier");
    }
}

/// Memory of a process from `/proc/<pid>/status`, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    /// `VmRSS`: all resident pages.
    pub vm_rss_kib: u64,
    /// `RssAnon`: resident anonymous memory (heap, stacks), without the mapped binary.
    pub rss_anon_kib: u64,
    /// `Threads`.
    pub threads: u64,
}

/// Reads `VmRSS`, `RssAnon` and `Threads` of `pid`.
pub fn rss(pid: u32) -> std::io::Result<Rss> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Rss {
        vm_rss_kib: field("VmRSS:"),
        rss_anon_kib: field("RssAnon:"),
        threads: field("Threads:"),
    })
}

/// Raises this process's soft open-files limit to its hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_ticks() {
        let line = "123 (srv worker) S 1 2 3 4 5 6 7 8 9 10 40 2 0 0 20 0 1 0";
        assert_eq!(stat_ticks(line), Some(42));
    }

    #[test]
    fn reads_own_memory_and_cpu() {
        let r = rss(std::process::id()).unwrap();
        assert!(r.vm_rss_kib > 0 && r.threads > 0);
        assert!(!thread_cpu().is_empty());
        assert!(machine().contains("cores"));
    }
}
