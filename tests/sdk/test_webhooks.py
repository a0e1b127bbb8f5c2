"""Chat webhooks (issue 14) across process crashes, on both backends: a receiver that is down
while a server is killed with `kill -9` gets every webhook after the restart, exactly once; a
chat open at the crash gets `chat_ended` with `ERROR` (enqueued by crash recovery); two
`colloquy worker` processes and the server share the outbox and never post one delivery
twice. Every body parses with the official SDK's WebhookEvent* models and holds exactly
their keys; every signature verifies with the account's key (`colloquy keys signing-key`),
as Hume's documented receivers check it."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hume.empathic_voice import PostedWebhookSpec, UserInput
from hume.empathic_voice.types import WebhookEventChatEnded, WebhookEventChatStarted

from colloquy_server import WorkerProcess
from colloquy_testkit import expect, poll

MODELS = {"chat_started": WebhookEventChatStarted, "chat_ended": WebhookEventChatEnded}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A webhook receiver on a fixed port; `delay` seconds before each answer (204)."""

    def __init__(self, port: int, delay: float = 0.0):
        self.got = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.got.append({
                        "body": body,
                        "ts": self.headers["X-Hume-AI-Webhook-Timestamp"],
                        "sig": self.headers["X-Hume-AI-Webhook-Signature"],
                        "delivery": self.headers["X-Colloquy-Delivery"],
                        "json": json.loads(body),
                    })
                time.sleep(delay)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def all(self):
        with self.lock:
            return list(self.got)


def verify(g, key: str) -> None:
    """As Hume's example receivers do: recent timestamp, lowercase hex HMAC-SHA256 of the raw
    body + "." + timestamp, compared in constant time."""
    assert abs(time.time() - int(g["ts"])) <= 180
    expected = hmac.new(key.encode(), g["body"] + b"." + g["ts"].encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, g["sig"]), g


def check_model(g) -> None:
    body = g["json"]
    model = MODELS[body["event_name"]]
    parsed = model.model_validate(body) if hasattr(model, "model_validate") else model.parse_obj(body)
    assert parsed.chat_id == body["chat_id"]
    assert set(body) == set(model.model_fields if hasattr(model, "model_fields") else model.__fields__), body


def hooked_config(client, url: str):
    return client.empathic_voice.configs.create_config(
        name="hooked", evi_version="3",
        webhooks=[PostedWebhookSpec(url=url, events=["chat_started", "chat_ended"])],
    )


def test_webhooks_survive_kill9_and_a_crashed_chat_ends_with_error(dedicated):
    srv = dedicated("hooks-crash", env={"COLLOQUY_WEBHOOKS__POLL_INTERVAL_MS": "200"})
    acct = srv.create_account()
    key = srv.cli("keys", "signing-key", acct.api_key).stdout.strip()
    assert len(key) == 64
    port = free_port()  # nothing listens there yet: the receiver is down
    url = f"http://127.0.0.1:{port}/hook"
    client = acct.client()
    cfg = hooked_config(client, url)

    with client.empathic_voice.chat.connect(config_id=cfg.id) as sock:
        done = expect(sock, "chat_metadata")
        sock.send_publish(UserInput(text="ended before the crash"))
        expect(sock, "user_message")
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(client.empathic_voice.chat.connect(config_id=cfg.id))
        open_meta = expect(sock, "chat_metadata")
        sock.send_publish(UserInput(text="open at the crash"))
        expect(sock, "user_message")
        time.sleep(1.0)  # the first attempts fail (connection refused)
        srv.kill9()
        with contextlib.suppress(Exception):
            sock._websocket.close()
        stack.pop_all()

    rx = Receiver(port)
    try:
        srv.start()
        want = {("chat_started", done.chat_id), ("chat_ended", done.chat_id),
                ("chat_started", open_meta.chat_id), ("chat_ended", open_meta.chat_id)}
        poll(lambda: want <= {(g["json"]["event_name"], g["json"]["chat_id"]) for g in rx.all()}, 30,
             what="every webhook after the restart")
        time.sleep(3)  # nothing more comes
        got = rx.all()
        assert len(got) == 4, [g["json"] for g in got]
        assert len({g["delivery"] for g in got}) == 4
        for g in got:
            verify(g, key)
            check_model(g)
            assert g["json"]["config_id"] == cfg.id
        ended = {g["json"]["chat_id"]: g["json"] for g in got if g["json"]["event_name"] == "chat_ended"}
        assert ended[done.chat_id]["end_reason"] == "USER_ENDED"
        assert ended[open_meta.chat_id]["end_reason"] == "ERROR"
        client = acct.client()  # the restarted server listens on a new port
        chat = [c for c in client.empathic_voice.chats.list_chats(page_size=100) if c.id == open_meta.chat_id][0]
        assert ended[open_meta.chat_id]["end_time"] == chat.end_timestamp
        assert ended[open_meta.chat_id]["duration_seconds"] == (chat.end_timestamp - chat.start_timestamp) // 1000
        # The CLI shows them delivered, after failed attempts.
        rows = json.loads(srv.cli("webhooks", "--json").stdout)
        assert sorted(r["status"] for r in rows) == ["delivered"] * 4, rows
        before_crash = [r for r in rows if (r["event"], r["chat_id"]) != ("chat_ended", open_meta.chat_id)]
        assert len(before_crash) == 3 and all(r["attempts"] >= 2 for r in before_crash), rows
    finally:
        rx.stop()


def test_two_workers_and_the_server_never_post_one_delivery_twice(dedicated):
    srv = dedicated("hooks-workers", explicit_sqlite_url=True,
                    env={"COLLOQUY_WEBHOOKS__POLL_INTERVAL_MS": "50"})
    workers = [
        WorkerProcess(srv.binary, srv.data_dir / f"w{i}", srv.database_url, workers=1,
                      env={"COLLOQUY_WEBHOOKS__POLL_INTERVAL_MS": "50", "COLLOQUY_AUDIO__WORKERS": "0"},
                      label=f"hooks-worker-{i}").start()
        for i in range(2)
    ]
    port = free_port()
    rx = Receiver(port, delay=0.05)
    try:
        acct = srv.create_account()
        key = srv.cli("keys", "signing-key", acct.api_key).stdout.strip()
        client = acct.client()
        cfg = hooked_config(client, f"http://127.0.0.1:{port}/hook")
        # Deliveries written while the server's own worker is busy: the other processes
        # find them at their polls.
        chats = []
        for _ in range(20):
            with client.empathic_voice.chat.connect(config_id=cfg.id) as sock:
                chats.append(expect(sock, "chat_metadata").chat_id)
        poll(lambda: len(rx.all()) >= 40, 30, what="40 webhooks")
        time.sleep(2)
        got = rx.all()
        deliveries = [g["delivery"] for g in got]
        assert len(deliveries) == 40 and len(set(deliveries)) == 40, sorted(deliveries)
        assert {(g["json"]["event_name"], g["json"]["chat_id"]) for g in got} == {
            (e, c) for c in chats for e in ("chat_started", "chat_ended")}
        for g in got:
            verify(g, key)
            check_model(g)
        for w in workers:
            assert w.running, w.log_tail()
    finally:
        rx.stop()
        for w in workers:
            w.stop()
