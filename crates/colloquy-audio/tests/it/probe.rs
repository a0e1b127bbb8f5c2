//! Capture-time probe: format detection and header validation with bounded look-ahead.

use crate::common::*;
use colloquy_audio::{AudioError, DetectedFormat, Linear16Format, StreamProbe};

const NOT_CONTAINER: &str =
    "not WebM/Opus or WAV; send linear16 with session_settings.audio or a WebM/Opus or WAV stream";

/// One EBML element with an 8-byte size (or unknown size when `body` is `None`).
fn element(id: &[u8], body: Option<&[u8]>) -> Vec<u8> {
    let mut v = id.to_vec();
    match body {
        Some(b) => {
            v.push(0x01);
            v.extend_from_slice(&(b.len() as u64).to_be_bytes()[1..]);
            v.extend_from_slice(b);
        }
        None => v.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
    }
    v
}

fn ebml_header(doc_type: &str) -> Vec<u8> {
    element(
        &[0x1A, 0x45, 0xDF, 0xA3],
        Some(&element(&[0x42, 0x82], Some(doc_type.as_bytes()))),
    )
}

fn tracks(codec: &str, channels: u8) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[1, channels, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0]);
    let mut entry = element(&[0xD7], Some(&[1]));
    entry.extend(element(&[0x83], Some(&[2])));
    entry.extend(element(&[0x86], Some(codec.as_bytes())));
    entry.extend(element(&[0x63, 0xA2], Some(&head)));
    element(
        &[0x16, 0x54, 0xAE, 0x6B],
        Some(&element(&[0xAE], Some(&entry))),
    )
}

fn segment_start() -> Vec<u8> {
    element(&[0x18, 0x53, 0x80, 0x67], None)
}

fn feed_all(probe: &mut StreamProbe, bytes: &[u8], chunk: usize) -> Result<(), AudioError> {
    for c in bytes.chunks(chunk) {
        probe.feed(c)?;
    }
    Ok(())
}

#[test]
fn garbage_is_rejected_with_the_client_facing_message() {
    for garbage in [
        &b"hello world"[..],
        b"\x00\x01",
        b"OggS\x00\x02",
        b"RIFF\x10\x00\x00\x00AVI LIST",
    ] {
        let mut probe = StreamProbe::new(None);
        let err = feed_all(&mut probe, garbage, 3).unwrap_err();
        assert!(
            matches!(err, AudioError::UnrecognizedContainer),
            "{garbage:?}: {err:?}"
        );
        assert_eq!(err.to_string(), NOT_CONTAINER);
        // The stream stays rejected.
        assert!(probe.feed(b"RIFF").is_err());
        assert!(probe.finish().is_err());
    }
    // Rejected as soon as the first byte rules both formats out.
    let mut probe = StreamProbe::new(None);
    assert!(probe.feed(b"X").is_err());
}

#[test]
fn linear16_chunks_must_hold_whole_frames() {
    let mut probe = StreamProbe::new(Some(Linear16Format {
        sample_rate: 16_000,
        channels: 2,
    }));
    probe.feed(&[0; 640]).unwrap();
    let err = probe.feed(&[0; 642]).unwrap_err();
    assert!(
        matches!(
            err,
            AudioError::Linear16Misaligned {
                len: 642,
                frame_bytes: 4,
                channels: 2
            }
        ),
        "{err:?}"
    );
    let err = probe.feed(&[0; 3]).unwrap_err();
    assert!(matches!(err, AudioError::Linear16Misaligned { len: 3, .. }));
    // A rejected chunk does not poison later ones (nothing is carried over).
    probe.feed(&[0; 4]).unwrap();
    assert!(probe.is_validated());

    for (sample_rate, channels) in [(16_000, 0), (16_000, 9), (4_000, 1), (384_000, 1)] {
        let mut probe = StreamProbe::new(Some(Linear16Format {
            sample_rate,
            channels,
        }));
        assert!(matches!(
            probe.feed(&[0; 4]),
            Err(AudioError::Unsupported(_))
        ));
    }
}

#[test]
fn wav_headers_are_validated_incrementally() {
    let pcm = sine(44_100, 440.0, 0.5, 4410, 2);
    let bytes = wav(44_100, 2, &pcm, 1, 24, true);
    let mut probe = StreamProbe::new(None);
    for (i, b) in bytes.iter().enumerate().take(60) {
        probe.feed(std::slice::from_ref(b)).unwrap();
        assert_eq!(probe.is_validated(), i >= 43, "byte {i}");
    }
    assert_eq!(
        probe.detected(),
        Some(DetectedFormat::Wav {
            sample_rate: 44_100,
            channels: 2
        })
    );
    probe.feed(&bytes[60..]).unwrap();
    assert_eq!(probe.buffered_bytes(), 0);

    // MP3-in-WAV, 12-bit PCM: rejected once the fmt chunk is in.
    let mut mp3 = wav(44_100, 1, &pcm[..100], 1, 16, false);
    mp3[20] = 0x55;
    let err = feed_all(&mut StreamProbe::new(None), &mp3, 7).unwrap_err();
    assert!(matches!(err, AudioError::Unsupported(_)), "{err:?}");
    let mut odd = wav(44_100, 1, &pcm[..100], 1, 16, false);
    odd[34] = 12;
    assert!(feed_all(&mut StreamProbe::new(None), &odd, 7).is_err());

    // Stream ending inside the header.
    let mut probe = StreamProbe::new(None);
    probe.feed(&bytes[..30]).unwrap();
    assert!(matches!(probe.finish(), Err(AudioError::InvalidWav(_))));
}

#[test]
fn webm_from_ffmpeg_is_recognised_in_any_chunking() {
    let webm = mediarecorder_like(&ffmpeg_webm_opus(500.0, 0.3, 0.5, 1, true));
    for chunk in [1, 7, 100, 4096, webm.len()] {
        let mut probe = StreamProbe::new(None);
        feed_all(&mut probe, &webm, chunk).unwrap();
        assert!(probe.is_validated(), "chunk {chunk}");
        assert_eq!(probe.detected(), Some(DetectedFormat::WebmOpus));
        assert_eq!(probe.buffered_bytes(), 0);
        assert_eq!(probe.bytes_seen(), webm.len() as u64);
    }
    // Same stream claiming another codec.
    let pos = webm.windows(6).position(|w| w == b"A_OPUS").unwrap();
    let mut other = webm.clone();
    other[pos + 5] = b'X';
    let err = feed_all(&mut StreamProbe::new(None), &other, 333).unwrap_err();
    assert!(
        matches!(err, AudioError::Unsupported(ref m) if m.contains("A_OPUX")),
        "{err:?}"
    );
}

#[test]
fn webm_header_errors() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        ([ebml_header("mkv3d"), segment_start()].concat(), "DocType"),
        (
            [
                ebml_header("webm"),
                element(&[0x1F, 0x43, 0xB6, 0x75], None),
            ]
            .concat(),
            "Segment",
        ),
        (
            [
                ebml_header("webm"),
                segment_start(),
                element(&[0x1F, 0x43, 0xB6, 0x75], None),
            ]
            .concat(),
            "Cluster before Tracks",
        ),
        (
            [ebml_header("webm"), segment_start(), tracks("A_OPUS", 6)].concat(),
            "channels",
        ),
    ];
    for (bytes, what) in cases {
        let err = feed_all(&mut StreamProbe::new(None), &bytes, 5).unwrap_err();
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
    let good = [ebml_header("webm"), segment_start(), tracks("A_OPUS", 2)].concat();
    let mut probe = StreamProbe::new(None);
    feed_all(&mut probe, &good, 5).unwrap();
    assert!(probe.is_validated());
    let mut probe = StreamProbe::new(None);
    probe.feed(&good[..good.len() - 1]).unwrap();
    assert!(matches!(probe.finish(), Err(AudioError::InvalidWebm(_))));
}

#[test]
fn webm_look_ahead_is_bounded() {
    // 900 KiB of Void before Tracks: skipped without being buffered.
    let void = element(&[0xEC], Some(&vec![0u8; 900 * 1024]));
    let stream = [
        ebml_header("webm"),
        segment_start(),
        void,
        tracks("A_OPUS", 1),
    ]
    .concat();
    let mut probe = StreamProbe::new(None);
    let mut max_buffered = 0;
    for c in stream.chunks(4096) {
        probe.feed(c).unwrap();
        max_buffered = max_buffered.max(probe.buffered_bytes());
    }
    assert!(probe.is_validated());
    assert!(max_buffered <= 4096 + 64, "buffered {max_buffered}");

    // Tracks must come within the first MiB.
    let void = element(&[0xEC], Some(&vec![0u8; 2 * 1024 * 1024]));
    let stream = [ebml_header("webm"), segment_start(), void].concat();
    let err = feed_all(&mut StreamProbe::new(None), &stream, 65_536).unwrap_err();
    assert!(err.to_string().contains("no Tracks"), "{err}");

    // A header element too large to buffer is refused, not accumulated.
    let huge_tracks = element(&[0x16, 0x54, 0xAE, 0x6B], Some(&vec![0u8; 200 * 1024]));
    let stream = [ebml_header("webm"), segment_start(), huge_tracks].concat();
    let mut probe = StreamProbe::new(None);
    let err = feed_all(&mut probe, &stream, 1024).unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
}
