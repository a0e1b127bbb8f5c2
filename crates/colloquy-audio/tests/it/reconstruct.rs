//! End-to-end tests: real inputs in, MP4 out, decoded with ffmpeg (independent decoder).

use crate::common::*;
use colloquy_audio::{
    AudioError, DetectedFormat, Linear16Format, MixOptions, StreamProbe, Voice, VoiceFormat,
    VoiceInput,
};

/// Records of `n` linear16 chunks of `chunk_ms` of a continuous tone; chunk `i` arrives
/// at `arrival(i)`.
fn pcm_chunks(
    format: Linear16Format,
    freq: f64,
    amp: f64,
    n: usize,
    chunk_ms: usize,
    arrival: impl Fn(usize) -> i64,
) -> Vec<(i64, Vec<u8>)> {
    let frames = format.sample_rate as usize * chunk_ms / 1000;
    (0..n)
        .map(|i| {
            let pcm = sine_from(
                format.sample_rate,
                freq,
                amp,
                i * frames,
                frames,
                format.channels,
            );
            (arrival(i), le(&pcm))
        })
        .collect()
}

fn lin(sample_rate: u32, channels: u16) -> Linear16Format {
    Linear16Format {
        sample_rate,
        channels,
    }
}

fn input(format: VoiceFormat, log: &[u8]) -> Input<'_> {
    Some(VoiceInput {
        format,
        records: log,
    })
}

#[test]
fn mono_mix_places_user_and_assistant_tones() {
    // User: 16 kHz mono linear16, 500 Hz, 1.5 s from 1000 ms, 20 ms chunks with jitter.
    let user = log(&pcm_chunks(lin(16_000, 1), 500.0, 0.3, 75, 20, |i| {
        1000 + 20 * i as i64 + (i as i64 * 7) % 13
    }));
    // Assistant: one 2 s message at 24 kHz as four 500 ms WAV clips arriving in a burst.
    let clips: Vec<(i64, Vec<u8>)> = (0..4)
        .map(|k| {
            let pcm = sine_from(24_000, 1300.0, 0.3, k * 12_000, 12_000, 1);
            (2000 + 5 * k as i64, wav(24_000, 1, &pcm, 1, 16, false))
        })
        .collect();
    let assistant = log(&clips);

    let (summary, file) = run(
        input(VoiceFormat::Linear16(lin(16_000, 1)), &user),
        input(VoiceFormat::WavClips, &assistant),
        &MixOptions::default(),
    )
    .unwrap();
    assert_eq!(summary.frames, 192_000);
    assert_eq!(summary.duration_ms, 4000);
    assert_eq!((summary.user_clips, summary.assistant_clips), (1, 1));
    assert_eq!(summary.samples_clipped, 0);
    assert_eq!(summary.channels, 1);

    let x = &decode(file.path(), 1)[0];
    assert_near("decoded length (ms)", x.len() as f64 / 48.0, 4000.0, 20.0);
    let (on, off) = tone_span(x, 500.0, 0.3).expect("user tone present");
    assert_near("user onset", on, 1000.0, 20.0);
    assert_near("user end", off, 2500.0, 20.0);
    let (on, off) = tone_span(x, 1300.0, 0.3).expect("assistant tone present");
    assert_near("assistant onset", on, 2000.0, 20.0);
    assert_near("assistant end", off, 4000.0, 20.0);
    // Levels pass through unchanged, also where the voices overlap (sum < full scale).
    for (f, from, to) in [
        (500.0, 1200, 1900),
        (500.0, 2100, 2400),
        (1300.0, 2100, 2400),
        (1300.0, 3000, 3900),
    ] {
        assert_near(
            &format!("{f} Hz level"),
            amplitude_between(x, f, from, to) * 100.0,
            30.0,
            2.0,
        );
    }
    // Silence before anyone speaks.
    assert!(x[..900 * 48].iter().all(|s| s.abs() < 0.01));
}

#[test]
fn stereo_split_puts_user_left_and_assistant_right() {
    let user = log(&pcm_chunks(lin(48_000, 2), 700.0, 0.25, 50, 20, |i| {
        300 + 20 * i as i64
    }));
    // Assistant as raw linear16 at 22.05 kHz, 1 s burst at 800 ms.
    let assistant = log(&pcm_chunks(lin(22_050, 1), 2000.0, 0.25, 50, 20, |_| 800));
    let opts = MixOptions {
        stereo_split: true,
        ..MixOptions::default()
    };
    let (summary, file) = run(
        input(VoiceFormat::Linear16(lin(48_000, 2)), &user),
        input(VoiceFormat::Linear16(lin(22_050, 1)), &assistant),
        &opts,
    )
    .unwrap();
    assert_eq!(summary.channels, 2);
    assert_eq!(summary.duration_ms, 1800);
    let ch = decode(file.path(), 2);
    let (left, right) = (&ch[0], &ch[1]);
    let (on, off) = tone_span(left, 700.0, 0.25).expect("user on the left");
    assert_near("user onset", on, 300.0, 20.0);
    assert_near("user end", off, 1300.0, 20.0);
    let (on, off) = tone_span(right, 2000.0, 0.25).expect("assistant on the right");
    assert_near("assistant onset", on, 800.0, 20.0);
    assert_near("assistant end", off, 1800.0, 20.0);
    // No crosstalk during the overlap.
    assert!(amplitude_between(left, 2000.0, 900, 1200) < 0.01);
    assert!(amplitude_between(right, 700.0, 900, 1200) < 0.01);
    assert!(tone_span(right, 700.0, 0.25).is_none());
    assert!(tone_span(left, 2000.0, 0.25).is_none());
}

#[test]
fn jitter_burst_and_pause_follow_the_placement_rule() {
    let format = lin(24_000, 2);
    // Segment A: 500 ms delivered in one burst at 500 ms -> plays 500..1000.
    let mut records = pcm_chunks(format, 600.0, 0.3, 25, 20, |_| 500);
    // The client pauses; segment B streams in real time from 1800 ms, but from chunk 20
    // on every chunk is 200 ms late (network stall, within the 250 ms tolerance).
    let b = pcm_chunks(format, 1500.0, 0.3, 50, 20, |i| {
        1800 + 20 * i as i64 + if i >= 20 { 200 } else { 0 }
    });
    records.extend(b);
    let user = log(&records);

    let (summary, file) = run(
        input(VoiceFormat::Linear16(format), &user),
        None,
        &MixOptions::default(),
    )
    .unwrap();
    assert_eq!(summary.user_clips, 2);
    assert_eq!(summary.duration_ms, 2800);
    let x = &decode(file.path(), 1)[0];
    let (on, off) = tone_span(x, 600.0, 0.3).unwrap();
    assert_near("burst onset", on, 500.0, 20.0);
    assert_near("burst end (back-to-back)", off, 1000.0, 20.0);
    let (on, off) = tone_span(x, 1500.0, 0.3).unwrap();
    assert_near("after-pause onset", on, 1800.0, 20.0);
    assert_near("after-pause end (stall absorbed)", off, 2800.0, 20.0);
    assert!(
        amplitude_between(x, 1500.0, 2150, 2450) > 0.25,
        "no hole at the stall"
    );

    // With a 100 ms tolerance the 200 ms stall is a pause: new clip at its arrival.
    let opts = MixOptions {
        gap_tolerance_ms: 100,
        ..MixOptions::default()
    };
    let (summary, file) = run(input(VoiceFormat::Linear16(format), &user), None, &opts).unwrap();
    assert_eq!(summary.user_clips, 3);
    assert_eq!(summary.duration_ms, 3000);
    let x = &decode(file.path(), 1)[0];
    assert!(
        amplitude_between(x, 1500.0, 2230, 2370) < 0.01,
        "silence fills the gap"
    );
    let (_, off) = tone_span(x, 1500.0, 0.3).unwrap();
    assert_near("end after gap", off, 3000.0, 20.0);
}

#[test]
fn webm_opus_live_stream_from_a_real_encoder() {
    // Live WebM as MediaRecorder writes it: unknown-size Segment (ffmpeg's live mode),
    // no SeekHead/Cues, unknown-size Clusters (rewritten: ffmpeg sizes them).
    let webm = mediarecorder_like(&ffmpeg_webm_opus(900.0, 0.4, 2.0, 1, true));
    let unknown_segment = [
        0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ];
    let unknown_cluster = [
        0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ];
    assert!(
        webm.windows(12).any(|w| w == unknown_segment),
        "expected live WebM"
    );
    assert!(webm.windows(12).filter(|w| *w == unknown_cluster).count() >= 2);
    let chunks = split_arbitrarily(&webm, 3000, 1);

    let mut probe = StreamProbe::new(None);
    for c in &chunks {
        probe.feed(c).unwrap();
        assert!(probe.buffered_bytes() <= 64 * 1024 + 3000);
    }
    assert!(probe.is_validated());
    assert_eq!(probe.finish().unwrap(), Some(DetectedFormat::WebmOpus));

    let user = log(&chunks
        .iter()
        .enumerate()
        .map(|(i, c)| (1500 + 20 * i as i64, c.clone()))
        .collect::<Vec<_>>());
    let pcm = sine(48_000, 400.0, 0.3, 24_000, 1);
    let assistant = log(&[(4000, wav(48_000, 1, &pcm, 1, 16, false))]);
    let (summary, file) = run(
        input(VoiceFormat::Container, &user),
        input(VoiceFormat::WavClips, &assistant),
        &MixOptions::default(),
    )
    .unwrap();
    assert_eq!(summary.user_clips, 1);
    assert_eq!(summary.duration_ms, 4500);
    let x = &decode(file.path(), 1)[0];
    let (on, off) = tone_span(x, 900.0, 0.4).expect("opus tone present");
    assert_near("opus onset", on, 1500.0, 20.0);
    assert_near("opus end", off, 3500.0, 20.0);
    assert_near(
        "opus level %",
        amplitude_between(x, 900.0, 1700, 3300) * 100.0,
        40.0,
        4.0,
    );
    let (on, _) = tone_span(x, 400.0, 0.3).unwrap();
    assert_near("assistant onset", on, 4000.0, 20.0);
}

#[test]
fn webm_opus_seekable_stereo_file() {
    // Seekable output: known sizes, SeekHead and Cues; stereo Opus downmixed to mono.
    let webm = ffmpeg_webm_opus(1100.0, 0.4, 1.0, 2, false);
    let chunks = split_arbitrarily(&webm, 500, 7);
    let user = log(&chunks.iter().map(|c| (250, c.clone())).collect::<Vec<_>>());
    let (summary, file) = run(
        input(VoiceFormat::Container, &user),
        None,
        &MixOptions::default(),
    )
    .unwrap();
    // Opus pads its last frame (WebM DiscardPadding is not applied): up to one frame more.
    assert_near("duration", summary.duration_ms as f64, 1250.0, 20.0);
    let x = &decode(file.path(), 1)[0];
    let (on, off) = tone_span(x, 1100.0, 0.4).unwrap();
    assert_near("onset", on, 250.0, 20.0);
    assert_near("end", off, 1250.0, 20.0);
    assert_near(
        "level %",
        amplitude_between(x, 1100.0, 400, 1100) * 100.0,
        40.0,
        4.0,
    );
}

#[test]
fn wav_container_streams_in_several_sample_formats() {
    let cases = [
        (44_100u32, 2u16, 1u16, 24u16, true),
        (16_000, 1, 3, 32, false),
        (8_000, 1, 1, 16, false),
        (96_000, 2, 1, 32, true),
    ];
    for (rate, channels, fmt, bits, streaming) in cases {
        let frames = rate as usize * 6 / 5; // 1.2 s
        let pcm = sine(rate, 1100.0, 0.3, frames, channels);
        let bytes = wav(rate, channels, &pcm, fmt, bits, streaming);
        let chunks = split_arbitrarily(&bytes, 777, u64::from(rate));
        let user = log(&chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (700 + i as i64, c.clone()))
            .collect::<Vec<_>>());
        let what = format!("{rate} Hz x{channels} fmt {fmt}/{bits}");
        let (summary, file) = run(
            input(VoiceFormat::Container, &user),
            None,
            &MixOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(summary.duration_ms, 1900, "{what}");
        assert_eq!(summary.user_clips, 1, "{what}");
        let x = &decode(file.path(), 1)[0];
        let (on, off) = tone_span(x, 1100.0, 0.3).unwrap();
        assert_near(&format!("{what} onset"), on, 700.0, 20.0);
        assert_near(&format!("{what} end"), off, 1900.0, 20.0);
        assert_near(
            &format!("{what} level %"),
            amplitude_between(x, 1100.0, 900, 1700) * 100.0,
            30.0,
            2.0,
        );
    }
}

#[test]
fn overlapping_loud_voices_are_limited_not_wrapped() {
    let user = log(&pcm_chunks(lin(48_000, 1), 500.0, 0.7, 50, 20, |_| 0));
    let assistant = log(&pcm_chunks(lin(48_000, 1), 1300.0, 0.7, 50, 20, |_| 500));
    let (summary, file) = run(
        input(VoiceFormat::Linear16(lin(48_000, 1)), &user),
        input(VoiceFormat::Linear16(lin(48_000, 1)), &assistant),
        &MixOptions::default(),
    )
    .unwrap();
    assert!(summary.samples_clipped > 0);
    let x = &decode(file.path(), 1)[0];
    // Before the overlap: untouched.
    assert_near(
        "user alone %",
        amplitude_between(x, 500.0, 100, 450) * 100.0,
        70.0,
        3.0,
    );
    // During the overlap both tones survive, somewhat attenuated, without distortion
    // products drowning them.
    assert!(amplitude_between(x, 500.0, 600, 950) > 0.5);
    assert!(amplitude_between(x, 1300.0, 600, 950) > 0.5);
    // After it the limiter has released.
    assert_near(
        "assistant alone %",
        amplitude_between(x, 1300.0, 1200, 1450) * 100.0,
        70.0,
        3.0,
    );
}

#[test]
fn ffprobe_sees_aac_lc_48k_with_the_right_duration() {
    let user = log(&pcm_chunks(lin(16_000, 1), 500.0, 0.3, 50, 20, |i| {
        20 * i as i64
    }));
    for stereo_split in [false, true] {
        let opts = MixOptions {
            stereo_split,
            min_duration_ms: Some(6000),
            ..MixOptions::default()
        };
        let (summary, file) = run(
            input(VoiceFormat::Linear16(lin(16_000, 1)), &user),
            None,
            &opts,
        )
        .unwrap();
        assert_eq!(summary.duration_ms, 6000, "min_duration extends the output");
        let p = ffprobe(file.path());
        assert_eq!(p["stream.codec_name"], "aac");
        assert_eq!(p["stream.profile"], "LC");
        assert_eq!(p["stream.codec_tag_string"], "mp4a");
        assert_eq!(p["stream.sample_rate"], "48000");
        assert_eq!(p["stream.channels"], if stereo_split { "2" } else { "1" });
        assert_eq!(p["stream.time_base"], "1/48000");
        assert!(p["format.format_name"].contains("mp4"));
        let duration: f64 = p["format.duration"].parse().unwrap();
        assert_near("ffprobe duration (ms)", duration * 1000.0, 6000.0, 25.0);
        let x = &decode(file.path(), if stereo_split { 2 } else { 1 })[0];
        assert_near("decoded samples (ms)", x.len() as f64 / 48.0, 6000.0, 25.0);
    }
}

#[test]
fn no_audio_at_all_is_reported_as_such() {
    let none: Input<'_> = None;
    let empty = log(&[]);
    let empty_records = log(&[(0, vec![]), (100, vec![])]);
    let cases: Vec<(Input<'_>, Input<'_>)> = vec![
        (None, None),
        (input(VoiceFormat::Linear16(lin(16_000, 1)), &empty), none),
        (
            input(VoiceFormat::Container, &empty_records),
            input(VoiceFormat::WavClips, &empty_records),
        ),
    ];
    for (user, assistant) in cases {
        let mut out = std::io::Cursor::new(Vec::new());
        let err = colloquy_audio::reconstruct(user, assistant, &MixOptions::default(), &mut out)
            .unwrap_err();
        assert!(matches!(err, AudioError::NoAudio), "{err:?}");
        assert_eq!(err.to_string(), "the chat has no audio");
        assert!(out.get_ref().is_empty(), "nothing written");
    }
}

#[test]
fn undecodable_input_gives_typed_errors() {
    let garbage = log(&[(0, b"this is not audio at all".to_vec())]);
    let err = run(
        input(VoiceFormat::Container, &garbage),
        None,
        &MixOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            AudioError::InVoice {
                voice: Voice::User,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(err.root(), AudioError::UnrecognizedContainer));
    assert!(err.to_string().contains("not WebM/Opus or WAV"));

    let err = run(
        None,
        input(VoiceFormat::WavClips, &garbage),
        &MixOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            AudioError::InVoice {
                voice: Voice::Assistant,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(err.root(), AudioError::InvalidWav(_)), "{err:?}");

    let odd = log(&[(0, vec![0, 0, 0])]);
    let err = run(
        input(VoiceFormat::Linear16(lin(16_000, 1)), &odd),
        None,
        &MixOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err.root(), AudioError::Linear16Misaligned { len: 3, .. }),
        "{err:?}"
    );

    let err = run(
        input(VoiceFormat::Linear16(lin(16_000, 9)), &odd),
        None,
        &MixOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err.root(), AudioError::Unsupported(_)), "{err:?}");

    let good = log(&pcm_chunks(lin(16_000, 1), 500.0, 0.3, 5, 20, |i| {
        20 * i as i64
    }));
    let err = run(
        input(
            VoiceFormat::Linear16(lin(16_000, 1)),
            &good[..good.len() - 3],
        ),
        None,
        &MixOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err.root(), AudioError::RecordLog(_)), "{err:?}");
}

#[test]
fn damaged_webm_never_panics() {
    let webm = mediarecorder_like(&ffmpeg_webm_opus(900.0, 0.4, 1.0, 1, true));
    // Truncated inside the headers.
    for cut in [10, 60, 200] {
        let user = log(&[(0, webm[..cut].to_vec())]);
        let err = run(
            input(VoiceFormat::Container, &user),
            None,
            &MixOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err.root(),
                AudioError::InvalidWebm(_) | AudioError::InvalidOpus(_)
            ),
            "cut {cut}: {err:?}"
        );
    }
    // Truncated mid-stream: what arrived is still usable.
    let user = log(&[(0, webm[..webm.len() * 2 / 3].to_vec())]);
    let (summary, _) = run(
        input(VoiceFormat::Container, &user),
        None,
        &MixOptions::default(),
    )
    .unwrap();
    assert!(summary.duration_ms > 300, "{summary:?}");
    // Random corruption after the headers: Ok or a typed error, never a panic.
    let header_end = webm
        .windows(4)
        .position(|w| w == [0x1F, 0x43, 0xB6, 0x75])
        .unwrap();
    for seed in 0..20u64 {
        let mut bad = webm.clone();
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for _ in 0..8 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let i = header_end + (s as usize % (bad.len() - header_end));
            bad[i] ^= (s >> 24) as u8 | 1;
        }
        let user = log(&[(0, bad)]);
        match run(
            input(VoiceFormat::Container, &user),
            None,
            &MixOptions::default(),
        ) {
            Ok(_) => {}
            Err(e) => assert!(
                matches!(
                    e.root(),
                    AudioError::InvalidWebm(_)
                        | AudioError::InvalidOpus(_)
                        | AudioError::Unsupported(_)
                ),
                "seed {seed}: {e:?}"
            ),
        }
    }
}
