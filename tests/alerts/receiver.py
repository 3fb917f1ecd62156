"""A local HTTP receiver that plays Slack and a webhook consumer in tests.

It records every request and answers from a per-path script (status, headers, delay) so
tests can make it fail with 429 / 500 / a timeout before it succeeds. The checks are
written independently of llmtel's own code: the Block Kit structure as Slack documents it,
and the webhook signature recomputed here from the raw body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: bytes = b"ok"


class Receiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Reply]] = {}
        self._received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver._received.append(Received(self.path, headers, body, time.time()))
                    script = receiver._scripts.get(self.path) or []
                    reply = script.pop(0) if script else Reply()
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[path] = list(replies)

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if path is None or r.path == path]

    def wait(self, path: str, count: int, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.received(path))} requests, expected {count}")

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.close()


# -- checks -----------------------------------------------------------------------------

BLOCK_TYPES = {"header", "section", "actions", "context", "divider"}


def check_slack(request: Received) -> dict[str, str]:
    """Assert a valid incoming-webhook Block Kit payload; return its section fields."""
    assert request.headers["content-type"] == "application/json"
    doc = request.json()
    assert isinstance(doc["text"], str) and doc["text"], "plain text fallback missing"
    blocks = doc["blocks"]
    assert 1 <= len(blocks) <= 50
    fields: dict[str, str] = {}
    for block in blocks:
        assert block["type"] in BLOCK_TYPES, block
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        elif block["type"] == "section":
            assert 1 <= len(block["fields"]) <= 10
            for item in block["fields"]:
                assert item["type"] == "mrkdwn" and len(item["text"]) <= 2000
                name, _, value = item["text"].partition("\n")
                fields[name.strip("*")] = value
        elif block["type"] == "actions":
            for element in block["elements"]:
                assert element["type"] == "button"
                assert element["url"].startswith("http") and len(element["url"]) <= 3000
        elif block["type"] == "context":
            assert 1 <= len(block["elements"]) <= 10
    return fields


def check_webhook(request: Received, secret: str, tolerance_s: float = 300) -> Any:
    """Assert a valid signature over the raw body, and a fresh `sent_at` in it that the
    timestamp header repeats."""
    expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    signature = request.headers["x-llmtel-signature"]
    assert hmac.compare_digest(signature, "sha256=" + expected), "bad signature"
    document = request.json()
    sent_at = document["sent_at"]
    assert request.headers["x-llmtel-timestamp"] == str(sent_at)
    assert abs(time.time() - sent_at) <= tolerance_s, "stale timestamp"
    return document
