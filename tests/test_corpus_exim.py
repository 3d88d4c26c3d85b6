"""Exim against public and real logs in ../shared/corpus/exim (skipped with the reason when the
corpus is absent, failing when RELAYWATCH_REQUIRE_CORPUS=1, as in CI)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from parsers import detect_format
from parsers.exim import RELAY_REFUSALS, EximParser
from tests.conftest import corpus_path
from tests.corpus import fail2ban_cases

F2B_FILES = ("exim", "exim-spam")

NOT_READ = {
    # the journal's export without its own timestamp: no time for the line
    "journal": re.compile(r"^[^ ]+ exim\[\d+\]: "),
    # the client's own command, quoted, before Exim's H= and its "next input" after it
    "synchronization": re.compile(r'rejected "[^"]*" H='),
    # a spam scanner's note: the Message-ID it quotes is the client's and comes first
    "scanner note": re.compile(r" SA: Action: "),
}
"""fail2ban lines naming a client that the Exim parser does not read, and why."""


def _is_relay_line(line: str) -> bool:
    return any(text in line.lower() for text in RELAY_REFUSALS)


def test_every_fail2ban_relay_line_yields_its_client_as_a_refused_relay() -> None:
    parser = EximParser(tz=UTC)
    relay_lines = [
        (expected, line)
        for name in F2B_FILES
        for expected, line in fail2ban_cases("exim", name)
        if expected.get("match") and _is_relay_line(line)
    ]
    assert len(relay_lines) == 2  # the 2013 (bare addresses) and 2024 (many fields) forms
    for expected, line in relay_lines:
        event = parser.parse(line)
        assert event is not None, line
        assert event.client_ip == expected["host"], line
        assert event.relay_refused and event.stage == "RCPT", line
        assert (event.pid, event.queue_id) == (None, None)  # a transaction of its own


def test_fail2ban_lines_yield_their_client_at_their_time_or_are_not_read_for_a_reason() -> None:
    parser = EximParser(tz=UTC)
    read = not_read = 0
    for name in F2B_FILES:
        for expected, line in fail2ban_cases("exim", name):
            if not (expected.get("match") and expected.get("host")):
                continue
            event = parser.parse(line)
            why = [reason for reason, pattern in NOT_READ.items() if pattern.search(line)]
            if why:
                assert event is None or event.client_ip in (expected["host"], None), line
                not_read += 1
                continue
            assert event is not None, f"a line naming a client yields nothing: {line}"
            assert event.client_ip == expected["host"], line
            if "time" in expected:  # fail2ban writes the log's local time; tz=UTC here
                stamp = datetime.fromtimestamp(event.time, UTC).strftime("%Y-%m-%dT%H:%M:%S")
                assert stamp == expected["time"], line
            read += 1
    assert read and not_read == 5  # one journal line, one synchronization error, 3 SA notes


def test_the_generated_mainlog_parses_except_daemon_chatter() -> None:
    parser = EximParser(tz=UTC)
    chatter = re.compile(
        r"Warning: purging the environment|^ Suggested action|daemon started|queue run"
        r"|^[-\d]+ [:\d]+ [\w-]+ H=[^ ]+ \[[^\]]+\]:\d+ Connection refused$"  # delivery side
    )
    lines = corpus_path("exim", "generated-local-exim-4.96", "mainlog").read_text().splitlines()
    for line in lines:
        event = parser.parse(line)
        if chatter.search(line):
            assert event is None, line
        else:
            assert event is not None, line


def test_the_rejectlog_repeats_mainlog_lines_so_a_source_must_be_the_mainlog_only() -> None:
    directory = ("exim", "generated-local-exim-4.96")
    mainlog = corpus_path(*directory, "mainlog").read_text().splitlines()
    rejectlog = corpus_path(*directory, "rejectlog").read_text().splitlines()
    parser = EximParser(tz=UTC)
    assert rejectlog and all(line in mainlog for line in rejectlog)
    refused = [e for e in map(parser.parse, rejectlog) if e is not None and e.relay_refused]
    assert len(refused) == 3  # E2, E3, E6: the same three the mainlog gives


def test_auto_detection_reads_every_exim_file_of_the_corpus_as_exim() -> None:
    for parts in (
        ("generated-local-exim-4.96", "mainlog"),
        ("generated-local-exim-4.96", "rejectlog"),
        ("fail2ban", "exim"),
        ("fail2ban", "exim-spam"),
    ):
        detected = detect_format(corpus_path("exim", *parts).read_text().splitlines())
        assert detected is not None and detected.family == "exim", parts
