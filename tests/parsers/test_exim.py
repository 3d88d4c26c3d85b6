"""Exim: the compiled grammar means what the pyparsing one says, hostile input stays cheap and
never names the wrong client, and the Exim-specific rules (rejects stand alone, local time,
syslog duplicates, relay-denial texts) hold."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from parsers.events import Kind
from parsers.exim import MAINLOG, RELAY_REFUSALS, SYSLOG_LINE, SYSLOG_NG, EximParser, line_grammar
from tests.parsers.samples import load_samples

SAMPLES = load_samples("exim")
LINES = [s.line for s in SAMPLES]
REAL_CLIENTS = {"203.0.113.50", "2001:db8::50"}
INJECTED = "198.51.100.9"
KIB64 = 64 * 1024
REJECT = (
    "H=(h) [203.0.113.50]:4001 F=<a@example.net> rejected RCPT <v@outside.example>: "
    "relay not permitted"
)


@pytest.mark.parametrize("line", LINES)
def test_compiled_line_grammars_agree_with_pyparsing(line: str) -> None:
    for grammar in (MAINLOG, SYSLOG_NG, SYSLOG_LINE):
        match = grammar.regex.match(line)
        assert (None if match is None else grammar.fields(match)) == grammar.parse_fields(line)


def test_each_sample_line_that_parses_is_read_by_the_grammar_of_its_envelope() -> None:
    parser = EximParser()
    read = {"mainlog": 0, "syslog": 0, "syslog-ng": 0}
    names = {id(MAINLOG): "mainlog", id(SYSLOG_LINE): "syslog", id(SYSLOG_NG): "syslog-ng"}
    for sample in SAMPLES:
        grammar = line_grammar(sample.line)
        assert (grammar is None) == (parser.branch(sample.line) is None), sample.line
        if grammar is not None:
            read[names[id(grammar)]] += 1
    assert all(read.values()), read


def test_injected_addresses_never_become_the_client() -> None:
    parser = EximParser()
    hostile = [s for s in SAMPLES if s.path.name == "hostile.log"]
    assert len(hostile) >= 15
    named = 0
    for sample in hostile:
        event = parser.parse(sample.line)
        if event is not None and event.client_ip is not None:
            assert event.client_ip in REAL_CLIENTS, sample.line
            named += 1
    assert named  # the annotations in hostile.log say which lines do


def test_a_junk_helo_that_imitates_a_host_blames_nobody() -> None:
    # helo_accept_junk_hosts lets a client write "x) [198.51.100.9]:25 F=<a> …" as its HELO
    junk = f"x) [{INJECTED}]:25 F=<a@example.net> rejected RCPT <v@outside.example>: z (y"
    line = f"2026-11-30 09:00:00 H=({junk}) {REJECT.removeprefix('H=(h) ')}"
    event = EximParser().parse(line)
    assert event is not None and event.kind == Kind.REJECT
    assert (event.client_ip, event.client_name, event.helo) == (None, None, None)


def test_a_quoted_sender_cannot_end_the_sender_early() -> None:
    line = (
        '2026-11-30 09:00:00 1xXwVa-0004aa-01 <= "x H=(e) [198.51.100.9]:25 P=esmtp S=1"@example.'
        "net H=(h) [203.0.113.50]:4001 P=esmtp S=700 for v@outside.example"
    )
    event = EximParser().parse(line)
    assert event is not None
    assert (event.client_ip, event.size) == ("203.0.113.50", 700)


def test_a_recipient_named_like_a_relay_refusal_is_not_one() -> None:
    line = (
        "2026-11-30 09:00:00 H=(h) [203.0.113.50]:4001 F=<a@example.net> rejected RCPT "
        '<"x: relay not permitted"@example.test>: Unknown user'
    )
    event = EximParser().parse(line)
    assert event is not None and event.client_ip == "203.0.113.50"
    assert not event.relay_refused


@pytest.mark.parametrize("text", RELAY_REFUSALS)
def test_every_relay_denial_text_refuses_a_relay_whatever_its_case(text: str) -> None:
    line = (
        "2026-11-30 09:00:00 H=(h) [203.0.113.50]:4001 F=<a@example.net> rejected RCPT "
        f"<v@outside.example>: {text.upper()}"
    )
    event = EximParser().parse(line)
    assert event is not None and event.relay_refused


def test_only_a_rejected_rcpt_is_a_relay_refusal() -> None:
    line = (
        "2026-11-30 09:00:00 H=(h) [203.0.113.50]:4001 rejected MAIL <a@example.net>: "
        "relay not permitted"
    )
    event = EximParser().parse(line)
    assert event is not None and event.stage == "MAIL" and not event.relay_refused


def _pad(pattern: str) -> str:
    return (pattern * (KIB64 // len(pattern) + 1))[:KIB64]


ENVELOPES = ("2026-11-30 09:00:00 ", "Nov 30 09:00:00 mx1 exim[4001]: 2026-11-30 09:00:00 ")
ARRIVAL = "1xXwVa-0004aa-01 <= a@example.net H=(h) [203.0.113.50]:4001 "
PREFIXES = {
    "reject": "H=(h) [203.0.113.50]:4001 F=<a@example.net> rejected RCPT <",
    "reject reason": "H=(h) [203.0.113.50]:4001 F=<a@example.net> rejected RCPT <v@o>: ",
    "sender": "H=(h) [203.0.113.50]:4001 F=<",
    "fields": "H=(h) [203.0.113.50]:4001 ",
    "helo": "H=(",
    "other reject": "H=(h) [203.0.113.50]:4001 rejected ",
    "arrival": "1xXwVa-0004aa-01 <= ",
    "arrival fields": ARRIVAL,
    "arrival tail": ARRIVAL + "P=esmtp S=700 ",
    "subject": ARRIVAL + 'P=esmtp S=700 T="',
    "recipients": ARRIVAL + "P=esmtp S=700 for ",
    "local arrival": "1xXwVa-0004aa-01 <= <> U=root P=local S=7 ",
    "delivery": "1xXwVa-0004aa-01 => ",
    "next hop": "1xXwVa-0004aa-01 => a@b R=r T=t H=",
    "bounce": "1xXwVa-0004aa-01 ** a@b R=r T=t: ",
    "deferral": "1xXwVa-0004aa-01 == a@b R=r T=t defer (1): ",
    "local_scan": "1xXwVa-0004aa-01 F=",
    "auth": "LOGIN authenticator failed for (h) [203.0.113.50]:4001: 535 ",
    "protocol error": 'SMTP protocol error in "',
    "connection": "SMTP connection from ",
    "": "",
}
FILLERS = [
    '"', "\\", '" H=(e) [198.51.100.9]', ") [198.51.100.9]", " (set_id=", ">: ", ": ", "<",
    " for ", " a=", "a=b ", "[", "]", " ", "a", ":", " H=", "(x) ", '\\"', "\ufffd",
]  # fmt: skip


def _cpu_seconds(parser: EximParser, line: str) -> float:
    """The CPU time one parse of ``line`` takes: the least of three, in this thread only, so
    that other processes on a busy machine do not count."""
    best = float("inf")
    for _ in range(3):
        start = time.thread_time()
        parser.parse(line)
        best = min(best, time.thread_time() - start)
    return best


@pytest.mark.parametrize("prefix", list(PREFIXES), ids=lambda p: p or "bare")
def test_64kib_hostile_lines_parse_in_under_10_ms(prefix: str) -> None:
    parser = EximParser()
    worst = 0.0
    for envelope in ENVELOPES:
        for filler in FILLERS:
            line = envelope + PREFIXES[prefix] + _pad(filler)
            event = parser.parse(line)
            worst = max(worst, _cpu_seconds(parser, line))
            if event is not None:
                assert event.client_ip in (*REAL_CLIENTS, None), line[:200]
    assert worst < 0.010, f"slowest hostile line took {worst * 1000:.1f} ms"


def test_broken_utf8_arrives_as_replacement_characters_and_is_read() -> None:
    raw = (
        "2026-11-30 09:00:00 1xXwVa-0004aa-01 <= caf\xe9@example.net H=(h\xff) "
        '[203.0.113.50]:4001 P=esmtp S=700 T="\xc3(" for v\xe9@outside.example'
    ).encode("latin-1")
    line = raw.decode("utf-8", errors="replace")
    assert "\ufffd" in line
    event = EximParser().parse(line)
    assert event is not None and event.client_ip == "203.0.113.50"
    assert event.recipients == ("v\ufffd@outside.example",)


def test_postfix_lines_yield_nothing() -> None:
    parser = EximParser()
    postfix = load_samples("postfix")
    assert postfix
    assert [s.line for s in postfix if parser.parse(s.line) is not None] == []


def test_a_reject_carries_neither_pid_nor_queue_id_whatever_the_line_logged() -> None:
    # +pid gives "[pid]", syslog gives "exim[pid]:", an after-DATA reject has a message id:
    # each reject is still a transaction of its own (parsers.events.Session)
    lines = [
        f"2026-11-30 09:00:00 [4001] {REJECT}",
        f"Nov 30 09:00:00 mx1 exim[4001]: 2026-11-30 09:00:00 [4001] {REJECT}",
        "2026-11-30 09:00:00 [4001] 1xXwUa-0000ea-SE H=(h) [203.0.113.50]:4001 "
        "F=<a@example.net> rejected after DATA: virus found",
        "2026-11-30 09:00:00 [4001] 1xXwUb-0000Dq-8i F=<a@example.net> H=(h) [203.0.113.50] "
        "P=esmtp rejected by local_scan(): spam",
        "2026-11-30 09:00:00 [4001] rejected EHLO from [203.0.113.50]:4001: syntactically "
        "invalid argument(s): _x_",
    ]
    for line in lines:
        event = EximParser().parse(line)
        assert event is not None and event.kind == Kind.REJECT, line
        assert (event.pid, event.queue_id) == (None, None), line
    other = EximParser().parse("2026-11-30 09:00:00 [4001] 1xXwTq-00046P-1z Completed")
    assert other is not None and (other.pid, other.queue_id) == ("4001", "1xXwTq-00046P-1z")


def _utc(event_time: float) -> str:
    return datetime.fromtimestamp(event_time, UTC).isoformat()


def test_exim_timestamps_are_local_time_unless_they_carry_a_zone() -> None:
    parser = EximParser(tz=ZoneInfo("Europe/Berlin"))
    winter = parser.parse("2026-11-30 09:11:22 1xXwTq-00046P-1z Completed")
    summer = parser.parse("2026-07-01 09:11:22.250 1xXwTq-00046P-1z Completed")
    zoned = parser.parse("2026-11-30 09:11:22 -0500 1xXwTq-00046P-1z Completed")
    assert winter is not None and summer is not None and zoned is not None
    assert _utc(winter.time) == "2026-11-30T08:11:22+00:00"
    assert _utc(summer.time) == "2026-07-01T07:11:22.250000+00:00"
    assert _utc(zoned.time) == "2026-11-30T14:11:22+00:00"


def test_a_syslog_line_without_exims_timestamp_takes_the_syslog_time_in_the_parser_zone() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    parser = EximParser(now=lambda: now, tz=ZoneInfo("Europe/Berlin"))
    event = parser.parse("Nov 30 09:11:22 mx1 exim4[2001]: 1xXwTq-00046P-1z Completed")
    assert event is not None and _utc(event.time) == "2026-11-30T08:11:22+00:00"
    assert (event.host, event.program, event.pid) == ("mx1", "exim4", "2001")


def test_an_impossible_timestamp_gives_no_event() -> None:
    assert EximParser().parse("2026-02-30 09:11:22 1xXwTq-00046P-1z Completed") is None
    assert EximParser().parse("2026-11-30 25:11:22 1xXwTq-00046P-1z Completed") is None


def test_a_syslog_copy_of_a_reject_is_dropped_but_a_mainlog_repeat_is_not() -> None:
    syslog_line = f"2026-11-30T09:00:00.1+00:00 mx1 exim[4001]: 2026-11-30 09:00:00 {REJECT}"
    copy = syslog_line.replace("00.1+00:00", "00.2+00:00")
    parser = EximParser()
    assert parser.parse(syslog_line) is not None
    assert parser.parse(copy) is None
    later = syslog_line.replace("09:00:00 H=", "09:00:05 H=")
    assert parser.parse(later) is not None  # the same refusal again, seconds later
    mainlog = f"2026-11-30 09:00:00 {REJECT}"
    assert parser.parse(mainlog) is not None and parser.parse(mainlog) is not None


def test_old_and_long_message_ids_both_name_a_message() -> None:
    parser = EximParser()
    for queue_id in ("1Glsgv-0002wv-00", "1xXwTq-00046P-1z", "10HmaX-000000005vi-0000"):
        event = parser.parse(f"2026-11-30 09:00:00 {queue_id} Completed")
        assert event is not None and event.queue_id == queue_id


def test_only_a_delivery_to_a_host_goes_out_over_smtp_the_others_are_local() -> None:
    parser = EximParser()
    agents = {}
    for name, line in {
        "remote": "=> a@x.example R=dnslookup T=remote_smtp H=mx.x.example [198.51.100.7]:25",
        "lmtp": "=> a@example.test R=virtual T=dovecot_lmtp H=mailstore.example.test",
        "mailbox": "=> bob <bob@example.test> R=local_user T=local_delivery",
        "bounce": "** a@x.example: Unrouteable address",
        "remote bounce": "** a@x.example R=dnslookup T=remote_smtp H=mx.x.example "
        "[198.51.100.7]: SMTP error from remote mail server after RCPT TO:<a@x.example>: 550 no",
    }.items():
        event = parser.parse(f"2026-11-30 09:00:00 1xXwTq-00046P-1z {line}")
        assert event is not None, line
        agents[name] = event.agent
    assert agents == {
        "remote": "smtp", "lmtp": "local", "mailbox": "local", "bounce": "local",
        "remote bounce": "smtp",
    }  # fmt: skip


def test_rejectlog_header_dumps_yield_nothing(tmp_path: Path) -> None:
    parser = EximParser()
    dump = [
        "Envelope-from: <spammer@example.net>",
        "Envelope-to: <bob@example.test>",
        "P Received: from [203.0.113.79] (helo=x)",
        "  by mx1.example.test with esmtp (Exim 4.96)",
        "F From: 2026-11-30 09:00:00 H=(h) [198.51.100.9] F=<a> rejected RCPT <b>: relay "
        "not permitted",
    ]
    assert [line for line in dump if parser.parse(line) is not None] == []
