//! The streaming WebM/Opus decoder ([`WebmOpusStream`]): tones land where they were
//! encoded in any chunking, malformed input is an error (never a panic), and the bytes it
//! holds stay bounded. (Equality with the reconstruction decoder is a unit test in
//! `src/decode/webm_stream.rs`.)

use crate::common::*;
use colloquy_audio::{AudioError, WebmOpusStream};

fn decode(webm: &[u8], chunk: usize) -> Result<Vec<f32>, AudioError> {
    let mut stream = WebmOpusStream::new();
    let mut out = Vec::new();
    for c in webm.chunks(chunk.max(1)) {
        stream.feed(c, &mut out)?;
    }
    stream.finish()?;
    Ok(out)
}

/// An element: `id` (with its marker bits) and a body with an 8-byte size.
fn element(id: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = id.to_vec();
    v.push(0x01);
    v.extend_from_slice(&(body.len() as u64).to_be_bytes()[1..]);
    v.extend_from_slice(body);
    v
}

/// The EBML header, Segment start (unknown size) and Tracks of a real stream.
fn headers(webm: &[u8]) -> Vec<u8> {
    let cluster = webm
        .windows(4)
        .position(|w| w == [0x1F, 0x43, 0xB6, 0x75])
        .unwrap();
    webm[..cluster].to_vec()
}

#[test]
fn tone_lands_where_it_was_encoded_in_any_chunking() {
    for channels in [1, 2] {
        let webm = mediarecorder_like(&ffmpeg_webm_opus(1000.0, 0.5, 1.0, channels, true));
        for chunk in [1, 7, 1000, 4096, webm.len()] {
            let pcm = decode(&webm, chunk).unwrap();
            // 1 s of audio at 48 kHz (Opus frames of 20 ms: the last one is padded).
            assert!(
                (48_000..=48_000 + 960).contains(&pcm.len()),
                "{} samples",
                pcm.len()
            );
            let (onset, end) = tone_span(&pcm, 1000.0, 0.5).expect("tone present");
            // Priming samples dropped: the tone is there from the first 10 ms window
            // (`tone_span` reports its centre, 5 ms), not ~6.5 ms later.
            assert_near("onset ms", onset, 5.0, 1.0);
            assert_near("end ms", end, 1000.0, 3.0);
            // Stereo is averaged (identical channels keep their amplitude).
            assert_near(
                "amplitude x100",
                100.0 * amplitude_between(&pcm, 1000.0, 100, 900),
                50.0,
                3.0,
            );
        }
    }
}

#[test]
fn a_new_ebml_header_starts_a_new_stream() {
    let a = mediarecorder_like(&ffmpeg_webm_opus(500.0, 0.4, 0.5, 1, true));
    let b = mediarecorder_like(&ffmpeg_webm_opus(1500.0, 0.4, 0.5, 2, true));
    let first = decode(&a, a.len()).unwrap();
    let both = decode(&[a.clone(), b].concat(), 333).unwrap();
    assert!(both.len() > first.len() + 20_000);
    let second = &both[first.len()..];
    let (onset, _) = tone_span(second, 1500.0, 0.4).expect("second stream decoded");
    assert_near("second stream onset ms", onset, 5.0, 1.0);
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let webm = mediarecorder_like(&ffmpeg_webm_opus(500.0, 0.3, 0.5, 1, true));
    let head = headers(&webm);

    // Garbage from the first byte.
    for garbage in [&b"hello, this is not audio"[..], &[0u8; 64], &[0xFF; 64]] {
        let mut s = WebmOpusStream::new();
        let err = s.feed(garbage, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, AudioError::InvalidWebm(_)), "{err}");
        // Once failed, it stays failed.
        assert!(s.feed(&webm, &mut Vec::new()).is_err());
    }
    // Garbage after valid headers and some audio.
    let cut = webm.len() / 2;
    for garbage in [&b"not audio at all, sorry"[..], &[0u8; 16]] {
        let mut s = WebmOpusStream::new();
        let mut out = Vec::new();
        let r = s
            .feed(&webm[..cut], &mut out)
            .and_then(|()| s.feed(&webm[cut..], &mut out));
        r.unwrap();
        assert!(s.feed(garbage, &mut out).is_err());
        assert!(s.is_failed());
    }
    // A truncated header: the stream ends inside the Tracks element.
    let mut s = WebmOpusStream::new();
    s.feed(&head[..head.len() - 5], &mut Vec::new()).unwrap();
    assert!(s.finish().is_err());
    // Every prefix of the stream and every single-byte corruption: errors or samples,
    // never a panic.
    for n in (0..head.len() + 200).step_by(3) {
        let mut s = WebmOpusStream::new();
        let _ = s.feed(&webm[..n], &mut Vec::new());
        let _ = s.finish();
    }
    let short = mediarecorder_like(&ffmpeg_webm_opus(500.0, 0.3, 0.1, 1, true));
    for i in (0..short.len()).step_by(short.len() / 150 + 1) {
        let mut bad = short.clone();
        bad[i] ^= 0xA5;
        let _ = decode(&bad, 97);
    }
    // An unsupported codec.
    let pos = webm.windows(6).position(|w| w == b"A_OPUS").unwrap();
    let mut vorbis = webm.clone();
    vorbis[pos..pos + 6].copy_from_slice(b"A_VORB");
    assert!(matches!(
        decode(&vorbis, 100),
        Err(AudioError::Unsupported(_))
    ));
}

#[test]
fn oversized_elements_are_refused_before_buffering() {
    let webm = mediarecorder_like(&ffmpeg_webm_opus(500.0, 0.3, 0.5, 1, true));
    let head = headers(&webm);
    // A SimpleBlock declaring 2 MiB: refused as soon as its header is read.
    let mut cluster = vec![
        0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ];
    // (Track 1: the audio track; the size is checked once the track number is read.)
    cluster.extend_from_slice(&[0xA3, 0x01, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x81]);
    let mut s = WebmOpusStream::new();
    s.feed(&head, &mut Vec::new()).unwrap();
    let err = s.feed(&cluster, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    assert!(s.buffered() <= 12);
    // A Tracks element over 64 KiB.
    let ebml_end = 4 + 1 + usize::from(head[4] & 0x7F);
    let mut big = head[..ebml_end].to_vec();
    big.extend_from_slice(&[
        0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    big.extend_from_slice(&element(&[0x16, 0x54, 0xAE, 0x6B], &vec![0xEC; 70_000])[..20]);
    let mut s = WebmOpusStream::new();
    assert!(s.feed(&big, &mut Vec::new()).is_err());
    assert!(s.buffered() <= 12);
}

#[test]
fn memory_stays_bounded_on_a_long_stream() {
    // 20 s of audio fed as a browser would, plus a 32 MiB element to skip.
    let webm = mediarecorder_like(&ffmpeg_webm_opus(700.0, 0.3, 20.0, 1, true));
    let head = headers(&webm);
    let void = element(&[0xEC], &vec![0u8; 32 << 20]);
    let stream = [&head[..], &void[..], &webm[head.len()..]].concat();
    let mut s = WebmOpusStream::new();
    let mut out = Vec::new();
    let mut most = 0;
    for c in split_arbitrarily(&stream, 16 * 1024, 7) {
        s.feed(&c, &mut out).unwrap();
        most = most.max(s.buffered());
        assert!(s.buffered() <= WebmOpusStream::MAX_HEADER_ELEMENT + 12);
        out.clear();
    }
    s.finish().unwrap();
    // Opus blocks are a few hundred bytes: that is all the decoder ever holds.
    assert!(most < 2048, "held up to {most} bytes");
}

#[test]
fn other_tracks_blocks_are_skipped_unbuffered_whatever_their_size() {
    let webm = mediarecorder_like(&ffmpeg_webm_opus(500.0, 0.3, 0.5, 1, true));
    let head = headers(&webm);
    // A Cluster holding a 2 MiB SimpleBlock of track 2 (say, video), then the real audio.
    let mut other = vec![0x82, 0x00, 0x00, 0x80];
    other.resize(2 << 20, 0x55);
    let cluster = element(&[0x1F, 0x43, 0xB6, 0x75], &element(&[0xA3], &other));
    let stream = [&head[..], &cluster[..], &webm[head.len()..]].concat();
    let mut s = WebmOpusStream::new();
    let mut out = Vec::new();
    for c in stream.chunks(4096) {
        s.feed(c, &mut out).unwrap();
        assert!(s.buffered() < 4096, "held {} bytes", s.buffered());
    }
    s.finish().unwrap();
    assert_eq!(out, decode(&webm, webm.len()).unwrap());
}
