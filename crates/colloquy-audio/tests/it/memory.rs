//! Bounded memory: a 30-minute two-voice chat is reconstructed with a small, fixed
//! peak RSS. (Run in a process of its own, so the process peak is this test's alone.)

use std::fs::File;
use std::io::{BufReader, BufWriter};

use crate::common::*;
use colloquy_audio::{
    reconstruct, write_record, Linear16Format, MixOptions, VoiceFormat, VoiceInput,
};

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

#[test]
fn thirty_minute_chat_has_bounded_peak_rss() {
    if !colloquy_testkit::alone_in_own_process("memory::thirty_minute_chat_has_bounded_peak_rss") {
        return;
    }
    const MINUTES: usize = 30;
    let total_ms = MINUTES * 60 * 1000;
    let dir = tempfile::tempdir().unwrap();

    // User: 16 kHz mono linear16, 20 ms chunks for the whole chat (90 000 records),
    // with arrival jitter. Written straight to disk.
    let user_path = dir.path().join("user.log");
    {
        let mut w = BufWriter::new(File::create(&user_path).unwrap());
        // 20 ms of 500 Hz is a whole number of periods: one chunk repeats seamlessly.
        let chunk = le(&sine(16_000, 500.0, 0.2, 320, 1));
        for i in 0..total_ms / 20 {
            write_record(&mut w, (20 * i + (i * 7) % 11) as i64, &chunk).unwrap();
        }
    }
    // Assistant: every 20 s an 8 s reply at 24 kHz as eight 1 s WAV clips in a burst.
    let assistant_path = dir.path().join("assistant.log");
    {
        let mut w = BufWriter::new(File::create(&assistant_path).unwrap());
        let clip = wav(
            24_000,
            1,
            &sine(24_000, 1300.0, 0.2, 24_000, 1),
            1,
            16,
            false,
        );
        for turn in 0..total_ms / 20_000 {
            for k in 0..8 {
                let offset = (turn * 20_000 + 5_000 + k * 30) as i64;
                write_record(&mut w, offset, &clip).unwrap();
            }
        }
    }

    let before = status_kib("VmHWM:");
    let started = std::time::Instant::now();
    let out = tempfile::tempfile_in(dir.path()).unwrap();
    let summary = reconstruct(
        Some(VoiceInput {
            format: VoiceFormat::Linear16(Linear16Format {
                sample_rate: 16_000,
                channels: 1,
            }),
            records: BufReader::new(File::open(&user_path).unwrap()),
        }),
        Some(VoiceInput {
            format: VoiceFormat::WavClips,
            records: BufReader::new(File::open(&assistant_path).unwrap()),
        }),
        &MixOptions::default(),
        out,
    )
    .unwrap();
    let peak = status_kib("VmHWM:");
    eprintln!(
        "reconstructed in {:?}; peak RSS before {before} KiB, after {peak} KiB; {summary:?}",
        started.elapsed()
    );

    assert!(
        summary.duration_ms.abs_diff(total_ms as u64) < 50,
        "{summary:?}"
    );
    assert_eq!(summary.user_clips, 1);
    assert_eq!(summary.assistant_clips, total_ms / 20_000);
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB (limit 64 MiB)");
    assert!(
        peak - before.min(peak) < 32 * 1024,
        "reconstruction grew RSS by {} KiB",
        peak - before
    );
}
