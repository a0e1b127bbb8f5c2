"""Text to speech, the voice library and voice conversion through the official SDK (issue 16).

Every audio answer is decoded by an independent decoder (ffprobe/ffmpeg); speed and trailing
silence are measured on the decoded samples; word timestamps must be ordered and inside the
audio. Saved voices are per account; voice conversion runs against a fake OpenAI-compatible
transcription service served from this process over real HTTP.
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import subprocess
import threading
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List

import httpx
import pytest
from hume.core.api_error import ApiError
from hume.tts import (
    FormatMp3,
    FormatPcm,
    FormatWav,
    PostedContextWithGenerationId,
    PostedUtterance,
    PostedUtteranceVoiceWithId,
    PostedUtteranceVoiceWithName,
    PublishTts,
)
from hume.tts.errors import UnprocessableEntityError

from colloquy_testkit import decode_mono, ffprobe, require_ffmpeg

AVA_SONG_ID = "5bb7de05-c8fe-426a-8fcc-ba4fc4ce9f9c"
RATE = 48000
TEXT = "The quick brown fox jumps over the lazy dog. It was not amused."


def ava() -> PostedUtteranceVoiceWithName:
    return PostedUtteranceVoiceWithName(name="Ava Song", provider="HUME_AI")


def probe_bytes(tmp_path: Path, data: bytes, ext: str) -> dict:
    path = tmp_path / f"probe-{len(list(tmp_path.iterdir()))}.{ext}"
    path.write_bytes(data)
    if ext == "pcm":
        require_ffmpeg()
        r = subprocess.run(
            ["ffprobe", "-v", "error", "-f", "s16le", "-ar", str(RATE), "-ac", "1", "-show_streams",
             "-show_format", "-of", "json", str(path)],
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    return ffprobe(path)


def samples_of(tmp_path: Path, data: bytes, ext: str) -> List[int]:
    if ext == "pcm":
        n = len(data) // 2
        return list(struct.unpack(f"<{n}h", data[: 2 * n]))
    path = tmp_path / f"decode-{len(list(tmp_path.iterdir()))}.{ext}"
    path.write_bytes(data)
    return decode_mono(path, RATE)


def duration_of(info: dict) -> float:
    return float(info["format"]["duration"])


def voiced_ms(samples: List[int], threshold: int = 300) -> tuple:
    """(first, last) ms with a sample above `threshold`."""
    idx = [i for i, s in enumerate(samples) if abs(s) > threshold]
    assert idx, "the audio is silent"
    return idx[0] * 1000 // RATE, idx[-1] * 1000 // RATE


# ---- synthesis ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,ext,codec", [(FormatWav(), "wav", "pcm_s16le"), (FormatMp3(), "mp3", "mp3"),
                                           (FormatPcm(), "pcm", "pcm_s16le")])
def test_synthesize_json_decodes_and_has_word_timestamps(account, tmp_path, fmt, ext, codec):
    client = account.client()
    res = client.tts.synthesize_json(
        utterances=[PostedUtterance(text=TEXT, voice=ava())],
        format=fmt,
        include_timestamp_types=["word", "phoneme"],
    )
    assert res.request_id
    assert len(res.generations) == 1
    g = res.generations[0]
    assert g.encoding.format == ext and g.encoding.sample_rate == RATE
    audio = base64.b64decode(g.audio)
    assert g.file_size == len(audio)
    info = probe_bytes(tmp_path, audio, ext)
    stream = info["streams"][0]
    assert stream["codec_name"] == codec and int(stream["sample_rate"]) == RATE and stream["channels"] == 1
    assert abs(duration_of(info) - g.duration) < 0.1, (duration_of(info), g.duration)
    assert 2.0 < g.duration < 8.0
    # One utterance, split into its two sentences.
    assert len(g.snippets) == 1
    snippets = g.snippets[0]
    assert [s.text for s in snippets] == ["The quick brown fox jumps over the lazy dog.", "It was not amused."]
    for s in snippets:
        assert s.generation_id == g.generation_id and s.utterance_index == 0
        snippet_audio = base64.b64decode(s.audio)
        snippet_len = probe_bytes(tmp_path, snippet_audio, ext)
        snippet_ms = duration_of(snippet_len) * 1000
        words = [t for t in s.timestamps if t.type == "word"]
        phonemes = [t for t in s.timestamps if t.type == "phoneme"]
        assert [w.text for w in words] == s.text.rstrip(".").split(), words
        assert len(phonemes) > len(words)
        begins = [w.time.begin for w in words]
        assert begins == sorted(begins) and len(set(begins)) == len(begins)
        for w in words + phonemes:
            assert 0 <= w.time.begin <= w.time.end <= snippet_ms + 60, (w, snippet_ms)
        assert words[-1].time.end > snippet_ms * 0.6


def test_file_endpoints_give_playable_files(account, tmp_path):
    client = account.client()
    for fmt, ext in ((FormatWav(), "wav"), (FormatMp3(), "mp3"), (FormatPcm(), "pcm")):
        whole = b"".join(client.tts.synthesize_file(utterances=[PostedUtterance(text=TEXT, voice=ava())], format=fmt))
        pieces = list(client.tts.synthesize_file_streaming(
            utterances=[PostedUtterance(text=TEXT * 4, voice=ava())], format=fmt))
        streamed = b"".join(pieces)
        d_whole = duration_of(probe_bytes(tmp_path, whole, ext))
        d_stream = duration_of(probe_bytes(tmp_path, streamed, ext))
        assert 2.0 < d_whole < 8.0, (ext, d_whole)
        # Four times the text is about four times as long.
        assert 3.4 < d_stream / d_whole < 4.6, (ext, d_whole, d_stream)
        if ext == "wav":
            assert whole[:4] == b"RIFF" and streamed[:4] == b"RIFF"
            assert streamed[4:].count(b"RIFF") == 0, "one header only"
        # The same voice and text sound the same through both endpoints.
        a = samples_of(tmp_path, whole, ext)
        assert voiced_ms(a)[0] < 300


def test_streamed_json_chunks(account, tmp_path):
    client = account.client()
    chunks = list(client.tts.synthesize_json_streaming(
        utterances=[PostedUtterance(text=TEXT, voice=ava())],
        format=FormatWav(), strip_headers=True, num_generations=2, include_timestamp_types=["word"],
    ))
    audio = [c for c in chunks if c.type == "audio"]
    stamps = [c for c in chunks if c.type == "timestamp"]
    gens = []
    for c in audio:
        if c.generation_id not in gens:
            gens.append(c.generation_id)
    assert len(gens) == 2, "two takes with distinct ids"
    for gid in gens:
        mine = [c for c in audio if c.generation_id == gid]
        by_snippet = {}
        for c in mine:
            by_snippet.setdefault(c.snippet_id, []).append(c)
        assert len(by_snippet) == 2
        for cs in by_snippet.values():
            assert [c.chunk_index for c in cs] == list(range(len(cs)))
            assert [c.is_last_chunk for c in cs] == [False] * (len(cs) - 1) + [True]
        # Several chunks per snippet: streamed as synthesized.
        assert len(mine) > 4
        data = b"".join(base64.b64decode(c.audio) for c in mine)
        info = probe_bytes(tmp_path, data, "wav")
        assert 2.0 < duration_of(info) < 8.0
        words = [s.timestamp.text for s in stamps if s.generation_id == gid]
        assert words == TEXT.replace(".", "").split()
    # Without strip_headers every WAV chunk is a whole file.
    chunks = list(client.tts.synthesize_json_streaming(
        utterances=[PostedUtterance(text="Hello there.", voice=ava())], format=FormatWav()))
    for c in chunks:
        data = base64.b64decode(c.audio)
        if data:
            assert data[:4] == b"RIFF"
            probe_bytes(tmp_path, data, "wav")


def test_speed_and_trailing_silence_are_heard(account, tmp_path):
    client = account.client()

    def render(**kw) -> List[int]:
        data = b"".join(client.tts.synthesize_file(
            utterances=[PostedUtterance(text=TEXT, voice=ava(), **kw)], format=FormatWav()))
        return samples_of(tmp_path, data, "wav")

    normal = render()
    fast = render(speed=2.0)
    slow = render(speed=0.5)
    n_first, n_last = voiced_ms(normal)
    f_first, f_last = voiced_ms(fast)
    s_first, s_last = voiced_ms(slow)
    speech = n_last - n_first
    assert (f_last - f_first) < speech * 0.7, (speech, f_last - f_first)
    assert (s_last - s_first) > speech * 1.4, (speech, s_last - s_first)
    padded = render(trailing_silence=1.5)
    assert abs(len(padded) - len(normal) - 1.5 * RATE) < RATE * 0.02
    assert max(abs(s) for s in padded[-int(1.45 * RATE):]) < 50, "the tail is silent"


def test_descriptions_change_what_espeak_can(account, tmp_path):
    client = account.client()
    plain = client.tts.synthesize_json(utterances=[PostedUtterance(text=TEXT)]).generations[0].duration
    slow = client.tts.synthesize_json(
        utterances=[PostedUtterance(text=TEXT, description="a deep, slow and calm narrator")]
    ).generations[0].duration
    assert slow > plain * 1.15, (plain, slow)


def test_instant_mode_and_version_are_accepted(account):
    client = account.client()
    res = client.tts.synthesize_json(utterances=[PostedUtterance(text="Hi.", voice=ava())], version="2",
                                     instant_mode=True, temperature=0.5, split_utterances=False)
    assert res.generations[0].duration > 0.1


# ---- the voice library and saved voices -----------------------------------------------------


def test_library_lists_the_stand_ins(account):
    client = account.client()
    voices = list(client.tts.voices.list(provider="HUME_AI"))
    by_name = {v.name: v for v in voices}
    assert by_name["Ava Song"].id == AVA_SONG_ID
    assert by_name["Ava Song"].provider == "HUME_AI"
    assert "Male English Actor" in by_name
    assert len({v.id for v in voices}) == len(voices)
    female = list(client.tts.voices.list(provider="HUME_AI", filter_tag=["GENDER:Female"]))
    assert {v.name for v in female} >= {"Ava Song", "Kora"} and "Dacher" not in {v.name for v in female}
    r = httpx.get(f"{account.server.base_url}/v0/tts/voices", headers={"X-Hume-Api-Key": account.api_key},
                  params={"provider": "HUME_AI", "page_size": 2, "page_number": 1})
    body = r.json()
    assert body["page_size"] == 2 and body["page_number"] == 1 and len(body["voices_page"]) == 2
    assert body["total_pages"] == math.ceil(len(voices) / 2)
    assert [v["name"] for v in body["voices_page"]] == [v.name for v in voices[2:4]]
    # By id, the library's Ava Song speaks too.
    res = client.tts.synthesize_json(utterances=[PostedUtterance(
        text="Hi.", voice=PostedUtteranceVoiceWithId(id=AVA_SONG_ID, provider="HUME_AI"))])
    assert res.generations[0].duration > 0.1


def test_saved_voices_and_context_per_account(account, other_account, tmp_path):
    client = account.client()
    other = other_account.client()
    first = client.tts.synthesize_json(
        utterances=[PostedUtterance(text="Hello there.",
                                    voice=PostedUtteranceVoiceWithName(name="Male English Actor", provider="HUME_AI"),
                                    speed=1.3)],
        format=FormatWav(),
    ).generations[0]
    reference = first.duration

    def same_voice(g) -> bool:
        # espeak-ng carries a little state between calls: the same voice and settings give
        # the same audio within a few samples.
        return abs(g.duration - reference) < 0.01
    # Context: no voice, the generation's voice and settings.
    continued = client.tts.synthesize_json(
        utterances=[PostedUtterance(text="Hello there.")],
        context=PostedContextWithGenerationId(generation_id=first.generation_id), format=FormatWav(),
    ).generations[0]
    assert same_voice(continued)
    default = client.tts.synthesize_json(utterances=[PostedUtterance(text="Hello there.")],
                                         format=FormatWav()).generations[0]
    assert abs(default.duration - reference) > 0.1, (default.duration, reference)
    # Another account cannot continue it.
    with pytest.raises(UnprocessableEntityError):
        other.tts.synthesize_json(utterances=[PostedUtterance(text="Hi.")],
                                  context=PostedContextWithGenerationId(generation_id=first.generation_id))

    saved = client.tts.voices.create(generation_id=first.generation_id, name="My narrator")
    assert saved.name == "My narrator" and saved.provider == "CUSTOM_VOICE"
    mine = list(client.tts.voices.list(provider="CUSTOM_VOICE"))
    assert [(v.id, v.name) for v in mine] == [(saved.id, "My narrator")]
    spoken = client.tts.synthesize_json(
        utterances=[PostedUtterance(text="Hello there.",
                                    voice=PostedUtteranceVoiceWithName(name="My narrator", provider="CUSTOM_VOICE"))],
        format=FormatWav()).generations[0]
    assert same_voice(spoken)
    by_id = client.tts.synthesize_json(
        utterances=[PostedUtterance(text="Hello there.", voice=PostedUtteranceVoiceWithId(id=saved.id))],
        format=FormatWav()).generations[0]
    assert same_voice(by_id)
    with pytest.raises(UnprocessableEntityError):
        client.tts.voices.create(generation_id=first.generation_id, name="My narrator")
    with pytest.raises(UnprocessableEntityError):
        client.tts.voices.create(generation_id="not-a-generation", name="Other")

    # Per account: invisible, unusable and undeletable from another account.
    assert list(other.tts.voices.list(provider="CUSTOM_VOICE")) == []
    with pytest.raises(UnprocessableEntityError) as e:
        other.tts.synthesize_json(utterances=[PostedUtterance(
            text="Hi.", voice=PostedUtteranceVoiceWithName(name="My narrator", provider="CUSTOM_VOICE"))])
    assert "My narrator" in e.value.body.detail[0].msg
    with pytest.raises(ApiError) as e:
        other.tts.voices.delete(name="My narrator")
    assert e.value.status_code == 404
    client.tts.voices.delete(name="My narrator")
    assert list(client.tts.voices.list(provider="CUSTOM_VOICE")) == []
    with pytest.raises(ApiError) as e:
        client.tts.voices.delete(name="My narrator")
    assert e.value.status_code == 404


# ---- the stream-input socket ----------------------------------------------------------------


def test_stream_input_socket(account, tmp_path):
    client = account.client()
    jsons, binaries = [], []
    with client.tts.stream_input.connect(format_type="wav", strip_headers=True,
                                         include_timestamp_types=["word"]) as socket:
        socket.send_publish(PublishTts(voice=ava()))
        socket.send_publish(PublishTts(text="Hello"))
        socket.send_publish(PublishTts(text=" world."))
        socket.send_publish(PublishTts(flush=True))
        socket.send_publish(PublishTts(text="Goodbye now.", close=True))
        for message in socket:
            if isinstance(message, bytes):
                binaries.append(message)
            else:
                jsons.append(message)
    audio = [m for m in jsons if m.type == "audio"]
    words = [m.timestamp.text for m in jsons if m.type == "timestamp"]
    assert words == ["Hello", "world", "Goodbye", "now"]
    assert len(audio) == len(binaries) and len(audio) >= 2
    assert b"".join(binaries) == b"".join(base64.b64decode(m.audio) for m in audio)
    gens = []
    for m in audio:
        if m.generation_id not in gens:
            gens.append(m.generation_id)
    assert len(gens) == 2, "one generation per flush"
    for gid in gens:
        data = b"".join(base64.b64decode(m.audio) for m in audio if m.generation_id == gid)
        assert 0.4 < duration_of(probe_bytes(tmp_path, data, "wav")) < 3.0
    # no_binary: JSON only.
    with client.tts.stream_input.connect(format_type="pcm", no_binary=True) as socket:
        socket.send_publish(PublishTts(text="Just text.", close=True))
        kinds = {type(m).__name__ for m in socket}
    assert "bytes" not in kinds and kinds


def test_stream_input_needs_credentials(server):
    import websockets.sync.client as ws

    url = server.base_url.replace("http://", "ws://") + "/v0/tts/stream/input"
    with pytest.raises(Exception) as e:
        with ws.connect(url):
            pass
    assert "401" in str(e.value)


# ---- errors ---------------------------------------------------------------------------------


def test_errors(account, server):
    client = account.client()
    with pytest.raises(UnprocessableEntityError) as e:
        client.tts.synthesize_json(utterances=[])
    assert e.value.body.detail[0].loc == ["body", "utterances"]
    with pytest.raises(UnprocessableEntityError) as e:
        client.tts.synthesize_json(utterances=[PostedUtterance(text="Hi.", voice=PostedUtteranceVoiceWithName(
            name="Nobody At All", provider="HUME_AI"))])
    assert "Nobody At All" in e.value.body.detail[0].msg
    assert e.value.body.detail[0].loc == ["body", "utterances", 0, "voice"]
    with pytest.raises(UnprocessableEntityError):
        client.tts.synthesize_json(utterances=[PostedUtterance(text="Hi.")], num_generations=9)
    with pytest.raises(UnprocessableEntityError):
        client.tts.synthesize_json(utterances=[PostedUtterance(text="Hi.", speed=40)])
    base = server.base_url
    key = {"X-Hume-Api-Key": account.api_key}
    r = httpx.post(f"{base}/v0/tts", json={"utterances": [{"txt": "x"}]}, headers=key)
    assert r.status_code == 422
    assert r.json() == {"detail": [{"loc": ["body", "utterances", 0, "text"], "msg": "Field required", "type": "missing"}]}
    assert httpx.post(f"{base}/v0/tts", json={"utterances": [{"text": "x"}]}).status_code == 401
    assert httpx.get(f"{base}/v0/tts/voices", headers=key).status_code == 400
    assert httpx.delete(f"{base}/v0/tts/voices", headers=key).status_code == 400
    hostile = [b"", b"{", b"[]", b"null", b'{"utterances": "x"}', b'{"utterances": [{"text": 1}]}',
               b'{"utterances": [{"text": "a", "speed": "fast"}]}', b'{"utterances": [{"text": "a"}], "format": {"type": "ogg"}}',
               b'{"utterances": [{"text": "\\u0000"}]}', b'{"utterances": [{"text": "a", "voice": {"id": 5}}]}',
               b'{"utterances": [{"text": "' + b"a" * 6000 + b'"}]}', b'{"utterances": [{"text": "a"}], "context": {"generation_id": 7}}',
               json.dumps({"utterances": [{"text": "word " * 800}] * 3}).encode()]
    for path in ("/v0/tts", "/v0/tts/file", "/v0/tts/stream/json", "/v0/tts/stream/file"):
        for body in hostile:
            r = httpx.post(f"{base}{path}", content=body, headers={**key, "content-type": "application/json"})
            assert r.status_code < 500, (path, body[:60], r.status_code, r.text[:200])
            if body != b'{"utterances": [{"text": "\\u0000"}]}':
                assert r.status_code == 422, (path, body[:60], r.status_code, r.text[:200])
            if r.status_code == 422:
                assert r.json()["detail"][0]["loc"][0] == "body"
    # Text times takes is bounded; the file endpoints make one take only.
    many = {"utterances": [{"text": "word " * 500}], "num_generations": 5}
    r = httpx.post(f"{base}/v0/tts", json=many, headers=key)
    assert r.status_code == 422 and "num_generations" in r.json()["detail"][0]["msg"]
    assert httpx.post(f"{base}/v0/tts/stream/json", json=many, headers=key).status_code == 422


# ---- voice conversion -----------------------------------------------------------------------


class FakeAsr(BaseHTTPRequestHandler):
    """`/v1/audio/transcriptions`: answers the next of `texts`, recording each upload."""

    texts: List[str] = []
    uploads: List[int] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        body = self.rfile.read(length)
        FakeAsr.uploads.append(len(body))
        assert self.path.endswith("/audio/transcriptions"), self.path
        text = FakeAsr.texts[min(len(FakeAsr.uploads), len(FakeAsr.texts)) - 1]
        out = json.dumps({"text": text}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture
def fake_asr():
    FakeAsr.texts = ["Hello there.", "See you later."]
    FakeAsr.uploads = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeAsr)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def speech_like_wav(rate: int = 16000) -> bytes:
    """4 s: silence, a 1 s burst at 0.5 s, silence, a 0.8 s burst at 2.5 s, silence."""
    frames = bytearray()
    for i in range(rate * 4):
        t = i / rate
        loud = 0.5 <= t < 1.5 or 2.5 <= t < 3.3
        v = int(0.4 * 32767 * math.sin(2 * math.pi * 220 * t)) if loud else 0
        frames += struct.pack("<h", v)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return out.getvalue()


def test_voice_conversion_with_a_fake_asr(dedicated, fake_asr, tmp_path):
    srv = dedicated("tts-conversion", env={
        "COLLOQUY_ENGINE__PIPELINE__ASR__BASE_URL": fake_asr,
        "COLLOQUY_ENGINE__PIPELINE__ASR__MODEL": "whisper-1",
    })
    client = srv.create_account().client()
    data = b"".join(client.tts.convert_voice_file(
        audio=("speech.wav", speech_like_wav(), "audio/wav"), voice=ava(), format=FormatWav()))
    assert len(FakeAsr.uploads) == 2, "one transcription per spoken segment"
    info = probe_bytes(tmp_path, data, "wav")
    assert abs(duration_of(info) - 4.0) < 0.3, duration_of(info)
    samples = samples_of(tmp_path, data, "wav")
    first, _ = voiced_ms(samples)
    assert 350 <= first <= 600, f"the first words start where the speech did (0.4-0.5 s), not at {first} ms"
    second_segment = samples[int(1.9 * RATE): int(2.45 * RATE)]
    assert max(abs(s) for s in samples[int(2.4 * RATE): int(3.3 * RATE)]) > 300, "the second segment speaks"
    assert second_segment is not None

    FakeAsr.uploads = []
    chunks = list(client.tts.convert_voice_json(audio=("speech.wav", speech_like_wav(), "audio/wav"),
                                                 voice=ava(), format=FormatMp3()))
    audio = [c for c in chunks if c.type == "audio"]
    assert {c.transcribed_text for c in audio} == {"Hello there.", "See you later."}
    mp3 = b"".join(base64.b64decode(c.audio) for c in audio)
    assert abs(duration_of(probe_bytes(tmp_path, mp3, "mp3")) - 4.0) < 0.3


def test_voice_conversion_without_asr_names_the_setting(account):
    client = account.client()
    with pytest.raises(UnprocessableEntityError) as e:
        b"".join(client.tts.convert_voice_file(audio=("speech.wav", speech_like_wav(), "audio/wav")))
    assert "[engine.pipeline.asr]" in e.value.body.detail[0].msg


# ---- the CLI --------------------------------------------------------------------------------


def test_cli_tts_and_voices(account, server, tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLOQUY_")}
    env.update({"HUME_API_KEY": account.api_key, "COLLOQUY_BASE_URL": server.base_url})

    def cli(*args):
        return subprocess.run([server.binary, *args], env=env, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    out = tmp_path / "hello.wav"
    r = cli("tts", "Hello there from the command line.", "--voice", "Kora", "--format", "wav", "-o", str(out))
    assert r.returncode == 0, r.stderr
    info = ffprobe(out)
    assert info["streams"][0]["codec_name"] == "pcm_s16le" and 1.0 < duration_of(info) < 5.0
    r = cli("tts", "Hello.", "-o", str(tmp_path / "hello.mp3"))
    assert r.returncode == 0, r.stderr
    assert ffprobe(tmp_path / "hello.mp3")["streams"][0]["codec_name"] == "mp3"
    r = cli("voices", "--json")
    assert r.returncode == 0, r.stderr
    voices = json.loads(r.stdout)
    assert {"id": AVA_SONG_ID, "name": "Ava Song", "provider": "HUME_AI"}.items() <= next(
        v for v in voices if v["name"] == "Ava Song").items()
    table = cli("voices")
    assert table.returncode == 0 and "Ava Song" in table.stdout and AVA_SONG_ID in table.stdout
    r = cli("tts", "Hello.", "--voice", "Nobody Here")
    assert r.returncode != 0 and "Nobody Here" in r.stderr and "422" in r.stderr


# ---- the web UI's Speak page ----------------------------------------------------------------


def test_the_speak_page(account, server, tmp_path):
    import html
    import re

    with httpx.Client(base_url=server.base_url, timeout=30, follow_redirects=False) as web:
        page = web.get("/ui/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = web.post("/ui/sign-in", data={"api_key": account.api_key, "csrf": csrf, "next": "/ui/speak"})
        assert r.status_code == 303, r.text
        page = web.get("/ui/speak")
        assert page.status_code == 200
        assert 'href="/ui/speak" aria-current="page"' in page.text
        assert '<option value="HUME_AI:Ava Song"' in page.text
        assert "speak-player" not in page.text
        page = web.get("/ui/speak", params={"text": "Hello from the page.", "voice": "HUME_AI:Kora", "format": "wav"})
        src = html.unescape(re.search(r"<audio id=\"speak-player\"[^>]* src=\"([^\"]+)\"", page.text).group(1))
        assert 'value="HUME_AI:Kora" selected' in page.text
        audio = web.get(src)
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        path = tmp_path / "page.wav"
        path.write_bytes(audio.content)
        assert 0.8 < duration_of(ffprobe(path)) < 4.0
        bad = web.get("/ui/speak/audio", params={"text": "Hi", "voice": "HUME_AI:Nobody"})
        assert bad.status_code == 422 and "Nobody" in bad.text
    # Signed out, the page sends people to sign in.
    assert httpx.get(f"{server.base_url}/ui/speak").status_code in (303, 302)


# ---- one call through the TypeScript SDK ----------------------------------------------------


def test_typescript_sdk_synthesizes(account, server):
    """`npm install` of tests/sdk/ts (the `hume` npm package, pinned) on first use; skipped
    with a message when node or the package cannot be had."""
    import os
    import shutil

    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are needed for the TypeScript SDK check")
    here = Path(__file__).resolve().parent / "ts"
    if not (here / "node_modules" / "hume").exists():
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=here, capture_output=True, text=True,
                           timeout=300, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            pytest.skip(f"could not install the hume npm package: {r.stderr[-300:]}")
    r = subprocess.run([node, "tts_call.mjs", server.base_url, account.api_key], cwd=here, capture_output=True,
                       text=True, timeout=60, env={**os.environ})
    assert r.returncode == 0, r.stderr
    first, second = [json.loads(line) for line in r.stdout.splitlines()[:2]]
    assert first["format"] == "wav" and first["rate"] == RATE and 0.8 < first["duration"] < 4.0
    assert first["words"][:2] == ["Hello", "from"]
    assert first["bytes"] == 44 + round(first["duration"] * RATE) * 2
    assert second["ava"] is True and second["voices"] >= 5
