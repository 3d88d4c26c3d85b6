"""The ``webhook`` sink against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from detector.config import SinkSettings
from detector.sinks.webhook import WebhookSink
from tests.detector.sinks.factories import NOW, decision, expired


class Receiver:
    """An HTTP server that answers POSTs with the next of ``statuses`` (200 when none are
    left), after ``delay`` seconds, and keeps every body it answered 2xx."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.delay = 0.0
        self.delivered: list[dict[str, Any]] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                time.sleep(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status < 300:
                    assert self.headers["Content-Type"] == "application/json"
                    receiver.delivered.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test reads what was delivered, not a log."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/relaywatch"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def webhook(url: str, **settings: object) -> WebhookSink:
    return WebhookSink(
        SinkSettings(type="webhook", url=url, **settings),
        backoff=0.01,
    )


def ids(decisions: list[dict[str, Any]]) -> list[int]:
    return [d["id"] for d in decisions]


def test_the_first_sync_posts_every_decision_in_force(receiver: Receiver) -> None:
    sink = webhook(receiver.url)
    decisions = [
        decision(12, "203.0.113.7"),
        decision(18, "mallory", scope="user"),
        expired(5, "192.0.2.5"),
    ]
    result = sink.sync(decisions, NOW)
    assert (result.ok, result.changed, result.entries) == (True, True, 2)
    assert result.message == "posted 2 added, 0 removed"
    [body] = receiver.delivered
    assert body["sink"] == f"webhook {receiver.url}" and body["time"] == "2026-12-02T09:00:00Z"
    assert body["added"][0] == {
        "id": 12, "value": "203.0.113.7", "scope": "ip", "origin": "auto",
        "reason": "9 refused relay attempts in 10m", "created_at": "2026-12-02T08:55:00Z",
        "expires_at": "2026-12-02T10:00:00Z",
    }  # fmt: skip
    assert (
        ids(body["added"]) == [12, 18] and body["removed"] == [] and ids(body["active"]) == [12, 18]
    )


def test_nothing_is_posted_when_nothing_changed(receiver: Receiver) -> None:
    sink = webhook(receiver.url)
    sink.sync([decision(12, "203.0.113.7")], NOW)
    result = sink.sync([decision(12, "203.0.113.7")], NOW)
    assert (result.ok, result.changed, result.message) == (True, False, "unchanged, nothing posted")
    assert len(receiver.delivered) == 1


def test_a_change_posts_what_was_added_and_removed(receiver: Receiver) -> None:
    sink = webhook(receiver.url)
    sink.sync([decision(12, "203.0.113.7"), decision(13, "203.0.113.8")], NOW)
    extended = decision(13, "203.0.113.8", hours=4)
    result = sink.sync([extended, decision(14, "2001:db8::5")], NOW)
    assert result.message == "posted 2 added, 2 removed"
    body = receiver.delivered[-1]
    assert ids(body["added"]) == [13, 14] and ids(body["removed"]) == [12, 13]
    assert body["added"][0]["expires_at"] == "2026-12-02T13:00:00Z"
    assert body["removed"][1]["expires_at"] == "2026-12-02T10:00:00Z"
    assert ids(body["active"]) == [13, 14]


def test_a_receiver_that_fails_first_gets_the_post_on_a_later_try(receiver: Receiver) -> None:
    receiver.statuses = [503, 500]
    result = webhook(receiver.url, tries=3).sync([decision(12, "203.0.113.7")], NOW)
    assert result.ok and result.message == "posted 1 added, 0 removed"
    assert receiver.attempts == 3 and len(receiver.delivered) == 1


def test_a_failed_sync_is_made_good_by_the_next(receiver: Receiver) -> None:
    sink = webhook(receiver.url, tries=2)
    sink.sync([decision(12, "203.0.113.7")], NOW)
    receiver.statuses = [503, 503]
    failed = sink.sync([decision(13, "203.0.113.8")], NOW)
    assert (failed.ok, failed.changed) == (False, False)
    assert failed.message == "not delivered: HTTP 503 Service Unavailable (after 2 tries)"
    result = sink.sync([decision(13, "203.0.113.8"), decision(14, "203.0.113.9")], NOW)
    assert result.ok and result.message == "posted 2 added, 1 removed"
    body = receiver.delivered[-1]
    assert ids(body["added"]) == [13, 14] and ids(body["removed"]) == [12]


def test_a_receiver_that_does_not_answer_in_time_is_a_failure(receiver: Receiver) -> None:
    receiver.delay = 1.0
    result = webhook(receiver.url, tries=1, timeout=0.2).sync([decision(12, "203.0.113.7")], NOW)
    assert not result.ok and result.message == "not delivered: timed out (after 1 try)"


def test_nobody_listening_is_a_failure_with_the_reason() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        url = f"http://127.0.0.1:{closed.server_address[1]}/"
    result = webhook(url, tries=2).sync([decision(12, "203.0.113.7")], NOW)
    assert not result.ok
    assert result.message == "not delivered: [Errno 111] Connection refused (after 2 tries)"


def test_a_dry_run_posts_nothing_and_check_says_what_would_be(receiver: Receiver) -> None:
    result = webhook(receiver.url, dry_run=True).sync([decision(12, "203.0.113.7")], NOW)
    assert (result.ok, result.changed, result.message) == (
        True,
        True,
        "dry run: would post 1 added, 0 removed",
    )
    checked = webhook(receiver.url).check([decision(12, "203.0.113.7")], NOW)
    assert (checked.ok, checked.changed, checked.message) == (
        True,
        True,
        "would post 1 added, 0 removed",
    )
    assert receiver.attempts == 0
