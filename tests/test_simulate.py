"""The simulated Postfix log: deterministic, shaped like real Postfix 3.7 lines, and its ground
truth equal to what a plain count over the written lines finds."""

from __future__ import annotations

import ipaddress
import json
import math
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from detector.simulate import GroundTruth, append_live, traffic, write_log
from tests.conftest import corpus_path

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)

RFC3339 = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d (?P<host>\S+) "
    r"(?P<program>postfix[\w/-]*)\[(?P<pid>\d+)\]: (?P<message>.+)$"
)
TRADITIONAL = re.compile(
    r"^(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 1-3]\d \d\d:\d\d:\d\d "
    r"(?P<host>\S+) (?P<program>postfix[\w/-]*)\[(?P<pid>\d+)\]: (?P<message>.+)$"
)
CLIENT = r"[^\s\[]+\[(?P<ip>[0-9a-fA-F.:]+)\]"
QUEUE_ID = r"([0-9A-F]{10,}|[0-9A-Za-z]{10}z[0-9A-Za-z]+)"  # short (hex) or long
DOCUMENTATION = [
    ipaddress.ip_network(net)
    for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
]
INTERNAL = [ipaddress.ip_network(net) for net in ("127.0.0.0/8", "10.0.0.0/8")]


def generated(tmp_path: Path, lines: int, **kw: Any) -> tuple[list[str], GroundTruth]:
    """The lines ``write_log`` wrote to a real file, and the truth it returned."""
    path = tmp_path / "mail.log"
    truth = write_log(path, lines, **kw)
    text = path.read_text()
    assert text.endswith("\n") or lines == 0
    return text.splitlines(), truth


def messages(lines: list[str]) -> list[tuple[str, str, str]]:
    """(program, pid, message) of every line, which must all have the rfc3339 layout."""
    out = []
    for line in lines:
        found = RFC3339.match(line)
        assert found, line
        out.append((found["program"], found["pid"], found["message"]))
    return out


def independent_count(lines: list[str]) -> dict[str, object]:
    """What the ground truth says, counted again from the text alone."""
    refused: Counter[str] = Counter()
    accepted: Counter[str] = Counter()
    client_of: dict[str, tuple[str, bool]] = {}  # queue id -> (client ip, authenticated)
    deferred: set[str] = set()
    received = delivered = bounced = rejected = noqueue_sessions = 0
    session: dict[tuple[str, str], dict[str, bool]] = {}  # (program, pid) -> what it did
    for program, pid, message in messages(lines):
        key = (program, pid)
        if message.startswith("connect from "):
            session[key] = {"queued": False, "noqueue_reject": False}
        elif message.startswith("disconnect from "):
            done = session.pop(key)
            if done["noqueue_reject"] and not done["queued"]:
                noqueue_sessions += 1
        if " reject: " in message:
            rejected += 1
            if message.startswith("NOQUEUE: "):
                session[key]["noqueue_reject"] = True
        if "Relay access denied" in message:
            found = re.search(r"reject: RCPT from " + CLIENT, message)
            assert found, message
            refused[found["ip"]] += 1
        if found := re.match(r"(\w+): client=" + CLIENT + r"(?P<sasl>, sasl_method=)?", message):
            received += 1
            session[key]["queued"] = True
            client_of[found[1]] = (found["ip"], bool(found["sasl"]))
        if program.endswith("/pickup") and re.match(r"\w+: uid=\d+ from=<", message):
            received += 1
        if found := re.match(r"(\w+): to=<[^>]*@([^>]+)>, .*status=(\w+)", message):
            qid, domain, status = found.groups()
            if status == "sent":
                delivered += 1
                ip, authenticated = client_of.get(qid, ("", True))
                outside = ip and not any(ipaddress.ip_address(ip) in n for n in INTERNAL)
                if outside and not authenticated and domain != "example.test":
                    accepted[ip] += 1
            elif status == "deferred":
                deferred.add(qid)
            elif status == "bounced":
                bounced += 1
    return {
        "lines": len(lines),
        "refused_relays": dict(refused),
        "accepted_relays": dict(accepted),
        "received": received,
        "delivered": delivered,
        "deferred": len(deferred),
        "bounced": bounced,
        "rejected": rejected,
        "transactions": received + noqueue_sessions,
    }


def test_same_seed_writes_the_same_log_and_another_seed_another(tmp_path: Path) -> None:
    logs = {}
    for name, seed in (("first", 11), ("again", 11), ("other", 12)):
        (tmp_path / name).mkdir()
        logs[name] = generated(tmp_path / name, 5000, seed=seed)
    assert logs["first"] == logs["again"]  # lines and ground truth
    assert logs["first"][0] != logs["other"][0]


def test_traffic_is_deterministic_and_endless() -> None:
    one = list(islice(traffic(seed=5, start=START), 30_000))
    two = list(islice(traffic(seed=5, start=START), 30_000))
    assert one == two
    assert len(one) == 30_000


@pytest.mark.parametrize("lines", [0, 1, 2, 3, 7, 100, 4095, 4096, 4097, 12_345])
def test_write_log_writes_exactly_the_lines_asked_for(tmp_path: Path, lines: int) -> None:
    written, truth = generated(tmp_path, lines, seed=lines)
    assert len(written) == lines
    assert truth.lines == lines


def test_rfc3339_lines_have_the_debian_rsyslog_layout_of_the_corpus(tmp_path: Path) -> None:
    real = corpus_path("postfix", "generated-local-postfix-3.7.11", "mail.log.rfc3339")
    assert all(RFC3339.match(line) for line in real.read_text().splitlines())
    written, _ = generated(tmp_path, 3000)
    for line in written:
        found = RFC3339.match(line)
        assert found, line
        assert found["host"] == "mx1"
    assert written[0].startswith("2026-11-30T06:0")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00 ", written[0])


def test_traditional_lines_have_the_classic_syslog_layout_of_the_corpus(tmp_path: Path) -> None:
    real = corpus_path("postfix", "generated-local-postfix-3.7.11", "mail.log.traditional")
    assert all(TRADITIONAL.match(line) for line in real.read_text().splitlines())
    start = datetime(2026, 11, 3, 23, 59, tzinfo=UTC)  # a one-digit day, then a two-digit one
    written, _ = generated(tmp_path, 5000, style="traditional", start=start, host="mail")
    for line in written:
        found = TRADITIONAL.match(line)
        assert found, line
        assert found["host"] == "mail"
    assert written[0].startswith("Nov  3 23:59:")
    assert written[-1].startswith("Nov  4 ")


def test_timestamps_follow_the_zone_of_the_start_and_never_go_back(tmp_path: Path) -> None:
    start = datetime(2026, 6, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    written, _ = generated(tmp_path, 3000, start=start)
    stamps = [datetime.fromisoformat(line.split(" ", 1)[0]) for line in written]
    assert all(s.utcoffset() == timedelta(hours=2) for s in stamps)
    assert stamps == sorted(stamps)
    assert stamps[0] >= start
    assert stamps[-1] - stamps[0] > timedelta(minutes=10)  # sessions seconds apart, not µs


def test_ground_truth_agrees_with_an_independent_count(tmp_path: Path) -> None:
    written, truth = generated(tmp_path, 60_000, seed=3, abusers=7, open_relay_clients=2)
    counted = independent_count(written)
    assert {name: getattr(truth, name) for name in counted} == counted
    assert len(truth.refused_relays) == 7
    assert len(truth.accepted_relays) == 2
    assert not set(truth.refused_relays) & set(truth.accepted_relays)
    assert truth.deferred and truth.bounced and truth.notices == truth.bounced


def test_ground_truth_of_short_logs_counts_only_what_was_written(tmp_path: Path) -> None:
    for lines in (1_001, 2_777, 9_999):
        written, truth = generated(tmp_path, lines, seed=lines, abuse_share=0.3)
        counted = independent_count(written)
        assert truth.refused_relays == counted["refused_relays"]
        assert truth.rejected == counted["rejected"]
        assert truth.delivered == counted["delivered"]


def test_traffic_counts_its_truth_as_lines_are_handed_out() -> None:
    truth = GroundTruth()
    handed = list(islice(traffic(seed=9, start=START, truth=truth, abuse_share=0.2), 7_001))
    assert truth.lines == 7_001
    counted = independent_count(handed)  # stopped in the middle of sessions and messages
    for name in ("refused_relays", "received", "delivered", "bounced", "rejected"):
        assert getattr(truth, name) == counted[name], name


def test_no_open_relay_unless_asked(tmp_path: Path) -> None:
    written, truth = generated(tmp_path, 20_000, seed=4)
    assert truth.accepted_relays == {}
    assert independent_count(written)["accepted_relays"] == {}
    assert len(truth.refused_relays) == 5


def test_no_abuse_when_there_are_no_abusers(tmp_path: Path) -> None:
    written, truth = generated(tmp_path, 10_000, abusers=0, abuse_share=0.5)
    assert truth.refused_relays == {}
    assert not any("Relay access denied" in line for line in written)


def test_sessions_and_queue_files_open_and_close_like_postfix(tmp_path: Path) -> None:
    written, _ = generated(tmp_path, 30_000, seed=8, open_relay_clients=1)
    open_sessions: dict[tuple[str, str], str] = {}  # (program, pid) -> client
    queue: dict[str, str] = {}
    for program, pid, message in messages(written):
        if message.startswith("connect from "):
            assert (program, pid) not in open_sessions, "one smtpd process, two sessions"
            open_sessions[program, pid] = message.split()[2]
        elif message.startswith("disconnect from "):
            assert open_sessions.pop((program, pid)) == message.split()[2]
        found = re.match(QUEUE_ID + r": (\S+)", message)
        if not found:
            continue
        qid, what = found.groups()
        if what.startswith(("client=", "uid=")) or (qid not in queue and "message-id=" in what):
            assert qid not in queue, f"queue id {qid} used twice"
            queue[qid] = "open"
        elif what == "removed":
            assert queue[qid] == "open"
            queue[qid] = "removed"
        else:
            assert queue.get(qid) == "open", message
    assert not open_sessions  # the log ends with whole sessions ...
    assert all(state == "removed" for state in queue.values())  # ... and whole messages


def test_no_recipient_twice_in_one_session_or_message(tmp_path: Path) -> None:
    """Postfix drops a repeated recipient, so per-line and per-recipient counts agree."""
    written, _ = generated(tmp_path, 40_000, seed=2, abuse_share=0.4, open_relay_clients=1)
    refused: dict[tuple[str, str], set[str]] = {}  # (program, pid) -> refused recipients
    delivered: dict[str, set[str]] = {}  # queue id -> recipients with a final status
    for program, pid, message in messages(written):
        if message.startswith("connect from "):
            refused[program, pid] = set()
        if found := re.search(r" reject: RCPT .* to=<([^>]+)>", message):
            assert found[1] not in refused[program, pid], message
            refused[program, pid].add(found[1])
        if found := re.match(QUEUE_ID + r": to=<([^>]+)>, .*status=(sent|bounced)", message):
            assert found[2] not in delivered.setdefault(found[1], set()), message
            delivered[found[1]].add(found[2])


def test_every_kind_of_line_the_brief_asks_for_is_there(tmp_path: Path) -> None:
    written, _ = generated(tmp_path, 60_000, seed=1, open_relay_clients=1)
    text = "\n".join(written)
    for needle in (
        "postfix/postscreen[", "CONNECT from [", "PASS NEW [", "PASS OLD [",
        "postfix/submission/smtpd[", "sasl_method=PLAIN, sasl_username=",
        "SASL LOGIN authentication failed", "lost connection after",
        "NOQUEUE: reject: RCPT from", "554 5.7.1 <", "454 4.7.1 <", ": Relay access denied;",
        "User unknown in local recipient table", "unknown[2001:db8:", "status=deferred",
        "status=bounced", "sender non-delivery notification", "postfix/local[", "postfix/lmtp[",
        "postfix/virtual[", "postfix/smtp[", "postfix/pickup[", "postfix/anvil[", "warning: ",
        "orig_to=<", "removed",
    ):  # fmt: skip
        assert needle in text, needle
    assert re.search(r"\]: [0-9A-F]{10,}: reject: RCPT .* Relay access denied", text)
    assert re.search(r"\]: [0-9A-Za-z]{15}: client=", text)  # a long queue id
    # a deferred message is tried again under the same queue id, with a second qmgr line
    qid = re.search(r"\]: (\w+): to=<[^>]+>, .*status=deferred", text)[1]  # type: ignore[index]
    assert len(re.findall(rf"\]: {qid}: from=<", text)) == 2
    assert re.search(rf"\]: {qid}: to=<[^>]+>, .*status=sent", text)


def test_outside_parties_use_documentation_addresses_and_reserved_names(tmp_path: Path) -> None:
    written, _ = generated(tmp_path, 20_000, seed=6, abusers=300, open_relay_clients=70)
    for line in written:
        for found in re.finditer(r"(?:connect from|client=|RCPT from) " + CLIENT, line):
            address = ipaddress.ip_address(found["ip"])
            assert any(address in net for net in DOCUMENTATION + INTERNAL), line
        for domain in re.findall(r"\b(?:from|to)=<[^<>@\s]*@([^<>\s]+)>", line):
            assert domain == "example.test" or domain.endswith(
                (".example", ".test", "example.com", "example.net", "example.org")
            ), line


def test_command_line_writes_the_file_and_prints_its_truth(tmp_path: Path) -> None:
    out = tmp_path / "mail.log"
    done = subprocess.run(
        [sys.executable, "-m", "detector.simulate", "--lines", "2500", "--style", "traditional",
         "--seed", "4", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    printed = json.loads(done.stdout)
    again = write_log(tmp_path / "again.log", 2500, style="traditional", seed=4)
    assert printed == again.as_dict()
    assert out.read_text() == (tmp_path / "again.log").read_text()
    assert len(out.read_text().splitlines()) == 2500


def test_session_rate_sets_how_fast_simulated_time_goes() -> None:
    def span(rate: float) -> float:
        lines = list(islice(traffic(seed=7, start=START, session_rate=rate), 20_000))
        first, last = (
            datetime.fromisoformat(line.split(" ", 1)[0]) for line in (lines[0], lines[-1])
        )
        return (last - first).total_seconds()

    assert 8 < span(2.5) / span(25) < 12


@pytest.mark.parametrize("rate", [0, -1, math.nan, math.inf, 10_001])
def test_session_rate_must_be_positive_and_plausible(tmp_path: Path, rate: float) -> None:
    with pytest.raises(ValueError, match="session_rate"):
        traffic(start=START, session_rate=rate)
    with pytest.raises(ValueError, match="session_rate"):
        write_log(tmp_path / "mail.log", 10, session_rate=rate)
    with pytest.raises(ValueError, match="session_rate"):
        append_live(tmp_path / "live.log", stop=threading.Event(), session_rate=rate)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ live mode

FAST = 500  # sessions a second: a thousand lines within a second or two of wall-clock time


def live(path: Path, stop: threading.Event, **kw: Any) -> Future[GroundTruth]:
    """``append_live`` running in a daemon thread, so that a test it fails to stop still ends."""
    kw.setdefault("session_rate", FAST)
    future: Future[GroundTruth] = Future()

    def run() -> None:
        try:
            future.set_result(append_live(path, stop=stop, **kw))
        except Exception as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def wait_for(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "waited too long"
        time.sleep(0.01)


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def stamp(line: str) -> float:
    return datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()


def test_live_lines_appear_when_their_time_comes(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    stop = threading.Event()
    started = time.time()
    future = live(path, stop)
    seen: list[str] = []
    offset = 0
    rest = b""  # a line a read caught in the middle of its write
    try:
        while time.time() < started + 1.5:
            time.sleep(0.05)
            if not path.exists():
                continue
            with path.open("rb") as log:
                log.seek(offset)
                new = log.read()
            now = time.time()
            offset += len(new)
            *complete, rest = (rest + new).split(b"\n")
            for line in (part.decode() for part in complete):
                assert now - 1 < stamp(line) <= now + 0.001, (now, line)  # due, not late
                seen.append(line)
    finally:
        stop.set()
    assert future.result().lines == len(path.read_text().splitlines())
    assert len(seen) > 500
    assert started - 0.001 <= stamp(seen[0]) < started + 0.5
    assert [stamp(line) for line in seen] == sorted(stamp(line) for line in seen)
    messages(seen)  # whole lines in the rfc3339 layout


def test_live_writes_exactly_max_lines_after_what_the_file_had(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_text("an earlier line\n")
    truth = append_live(path, stop=threading.Event(), session_rate=FAST, max_lines=777)
    written = path.read_text().splitlines()
    assert written[0] == "an earlier line"
    assert len(written) == 1 + 777 == 1 + truth.lines
    messages(written[1:])
    assert append_live(path, stop=threading.Event(), max_lines=0) == GroundTruth()


def test_live_stops_soon_after_stop_is_set(tmp_path: Path) -> None:
    """Even while the next line is an hour away, as when the clock has just been set back."""
    path = tmp_path / "mail.log"
    wall = time.time()
    readings = [wall, wall + 1]  # the start, then a first second of lines to write

    def clock() -> float:
        return readings.pop(0) if readings else wall - 3600

    stop = threading.Event()
    future = live(path, stop, session_rate=2.5, clock=clock)
    try:
        wait_for(lambda: line_count(path) > 0)
        stop.set()
        asked = time.monotonic()
        truth = future.result(timeout=0.5)
        took = time.monotonic() - asked
    finally:
        stop.set()
    assert took < 0.5
    assert truth.lines == line_count(path)


def test_live_truth_is_what_was_written_and_follows_the_writes(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    stop = threading.Event()
    truth = GroundTruth()
    future = live(path, stop, abuse_share=0.5, max_lines=1500, truth=truth)

    def finished_with_no_line_counted_before_its_write() -> bool:
        so_far = truth.lines  # read first: the lines it counts are in the file already
        assert so_far <= line_count(path)
        return future.done()

    try:
        wait_for(finished_with_no_line_counted_before_its_write, seconds=3)
        assert future.result() is truth
    finally:
        stop.set()
    written = path.read_text().splitlines()
    assert truth.lines == len(written) == 1500
    refused: Counter[str] = Counter()
    for line in written:
        if "Relay access denied" in line:
            refused[re.search(r"RCPT from " + CLIENT, line)["ip"]] += 1  # type: ignore[index]
    assert refused and truth.refused_relays == refused
    counted = independent_count(written)  # stopped in the middle of sessions and messages
    for name in ("received", "delivered", "rejected"):
        assert getattr(truth, name) == counted[name], name


def test_live_writes_to_a_new_file_once_the_log_is_rotated(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    rotated = tmp_path / "mail.log.1"
    stop = threading.Event()
    future = live(path, stop, max_lines=1500)
    try:
        wait_for(lambda: line_count(path) >= 200)
        path.rename(rotated)  # what logrotate does before it sends rsyslog a HUP
        truth = future.result(timeout=3)
    finally:
        stop.set()
    old, new = rotated.read_text(), path.read_text()
    assert old.endswith("\n") and new.endswith("\n")
    both = old.splitlines() + new.splitlines()
    assert len(old.splitlines()) >= 200 and len(new.splitlines()) >= 500
    assert len(both) == truth.lines == 1500
    messages(both)  # no line split between the two files
    assert [stamp(line) for line in both] == sorted(stamp(line) for line in both)
    assert truth.refused_relays == independent_count(both)["refused_relays"]  # none lost


def test_live_needs_the_directory_of_its_log(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        append_live(missing / "mail.log", stop=threading.Event(), max_lines=10)
