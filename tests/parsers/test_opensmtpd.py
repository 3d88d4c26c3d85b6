"""OpenSMTPD: the compiled grammar means what the pyparsing grammar says, sessions are keyed by
OpenSMTPD's session id, local-socket sessions survive a restart, hostile input is harmless and
fast, and other families' lines are not taken for OpenSMTPD's."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from parsers.events import Kind
from parsers.opensmtpd import LINE, LOCAL_SESSIONS, OpenSMTPDParser
from tests.parsers.samples import load_samples

SAMPLES = load_samples("opensmtpd")
CLOCK = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
HEADER = "2026-11-30T09:00:00.000001+00:00 mx1 smtpd[4001]: "
SESSION = "9a0c21d3e4f50617"
INJECTED = "198.51.100.9"
REAL_CLIENTS = (None, "203.0.113.50", "2001:db8::50")
KIB64 = 64 * 1024


def parser() -> OpenSMTPDParser:
    return OpenSMTPDParser(now=lambda: CLOCK, tz=UTC)


@pytest.mark.parametrize("line", [s.line for s in SAMPLES], ids=[s.id for s in SAMPLES])
def test_compiled_line_grammar_agrees_with_pyparsing(line: str) -> None:
    match = LINE.regex.match(line)
    assert (None if match is None else LINE.fields(match)) == LINE.parse_fields(line)


def test_the_session_id_keys_every_line_of_an_smtp_session() -> None:
    p = parser()
    lines = [
        f"{HEADER}{SESSION} smtp connected address=203.0.113.50 host=<unknown>",
        f'{HEADER}{SESSION} smtp failed-command command="RCPT TO:<v@outside.example>" '
        'result="550 Invalid recipient: <v@outside.example>"',
        f"{HEADER}{SESSION} smtp message msgid=3eb4bde5 size=440 nrcpt=1 proto=ESMTP",
        f"{HEADER}{SESSION} smtp envelope evpid=3eb4bde56d3cecb4 from=<a@b.example> to=<c@d.test>",
        f"{HEADER}{SESSION} smtp disconnected reason=quit",
        "Mar  4 00:14:01 ix smtpd[22421]: smtp-in: New session 427e7498a1b2c3d4 from host "
        "mail.example.org [192.0.2.10]",
    ]
    events = [p.parse(line) for line in lines]
    assert [(e.host, e.program, e.pid) for e in events if e is not None] == [
        *[("mx1", "smtpd", SESSION)] * 5,
        ("ix", "smtpd", "427e7498a1b2c3d4"),
    ]


def test_a_delivery_joins_its_message_by_the_msgid_its_evpid_starts_with() -> None:
    line = (
        f"{HEADER}5df87c9ffd0e785d mta delivery evpid=3eb4bde56d3cecb4 from=<a@b.example> "
        'to=<c@d.example> rcpt=<-> source="192.0.2.1" relay="198.51.100.27 (mx.d.example)" '
        'delay=2s result="TempFail" stat="421 4.7.0 Try again later"'
    )
    event = parser().parse(line)
    assert event is not None
    assert (event.kind, event.queue_id) == (Kind.DELIVERY, "3eb4bde5")
    assert event.pid == "5df87c9ffd0e785d"  # the mta session's, not the message's
    assert (event.status, event.agent, event.enhanced) == ("deferred", "smtp", "4.7.0")


def local_session(session: str) -> list[str]:
    return [
        f"{HEADER}{session} smtp connected address=local host=mx1.example.test",
        f"{HEADER}{session} smtp message msgid=3d4c4a42 size=319 nrcpt=1 proto=ESMTP",
    ]


def test_the_message_of_a_local_socket_session_is_a_local_submission_also_after_a_restart() -> None:
    connect, message = local_session(SESSION)
    first = parser()
    assert first.parse(connect) is not None
    later = parser()
    later.restore(first.state())
    event = later.parse(message)
    assert event is not None and event.kind == Kind.PICKUP
    # without the connected line (the log began after it), nothing says the socket was local
    unknown = parser().parse(message)
    assert unknown is not None and unknown.kind == Kind.QUEUED


def test_a_network_session_that_reuses_a_local_sessions_id_queues_a_network_message() -> None:
    connect, message = local_session(SESSION)
    p = parser()
    for line in (
        connect,
        f"{HEADER}{SESSION} smtp disconnected reason=quit",
        f"{HEADER}{SESSION} smtp connected address=203.0.113.50 host=<unknown>",
    ):
        p.parse(line)
    event = p.parse(message)
    assert event is not None and event.kind == Kind.QUEUED


def test_local_sessions_never_disconnected_are_forgotten_oldest_first() -> None:
    p = parser()
    sessions = [f"{n:016x}" for n in range(LOCAL_SESSIONS + 10)]
    for session in sessions:
        p.parse(local_session(session)[0])
    state = p.state()
    assert isinstance(state, dict) and state["local_sessions"] == sessions[10:]
    p.restore({"local_sessions": ["x", 3, None]})  # what cannot be a session id is dropped
    assert p.state() == {"local_sessions": ["x"]}
    p.restore(None)
    assert p.state() == {"local_sessions": []}


def test_injected_addresses_never_become_the_client() -> None:
    hostile = [s for s in SAMPLES if s.path.name == "hostile.log"]
    assert len(hostile) >= 10
    p = parser()
    connects = 0
    for sample in hostile:
        event = p.parse(sample.line)
        assert event is not None, sample.line
        assert event.client_ip in REAL_CLIENTS, sample.line
        connects += event.kind == Kind.CONNECT
    assert connects == 6


def test_a_command_that_imitates_a_reply_does_not_choose_the_reply() -> None:
    line = (
        f'{HEADER}{SESSION} smtp failed-command command="RCPT TO:<v@outside.example>" '
        'result="550 Invalid recipient: <v@outside.example>" x" result="503 Unsupported option x""'
    )
    event = parser().parse(line)
    assert event is not None
    assert (event.code, event.reason, event.refusal_unexplained) == (
        503, 'Unsupported option x"', False)  # fmt: skip


def _pad(pattern: str) -> str:
    return (pattern * (KIB64 // len(pattern) + 1))[:KIB64]


PREFIXES = {
    "connected": f"{SESSION} smtp connected address=",
    "host": f"{SESSION} smtp connected address=203.0.113.50 host=",
    "command": f'{SESSION} smtp failed-command command="',
    "rcpt": f'{SESSION} smtp failed-command command="RCPT TO:<',
    "verb": f'{SESSION} smtp failed-command command="RCPT',
    "result": f'{SESSION} smtp failed-command command="x" result="550 ',
    "envelope": f"{SESSION} smtp envelope evpid=3eb4bde56d3cecb4 from=<",
    "auth": f"{SESSION} smtp authentication user=",
    "disconnected": f"{SESSION} smtp disconnected reason=",
    "mta": f"{SESSION} mta delivery evpid=3eb4bde56d3cecb4 from=<a> to=<b> rcpt=<",
    "mta relay": f'{SESSION} mta delivery evpid=3eb4bde56d3cecb4 from=<a> to=<b> rcpt=<-> source="',
    "mta stat": f"{SESSION} mta delivery evpid=3eb4bde56d3cecb4 from=<a> to=<b> rcpt=<-> "
    'source="-" relay="r" delay=0s result="Ok" stat="',
    "mda": f"{SESSION} mda delivery evpid=3eb4bde56d3cecb4 from=<a> to=<b> rcpt=<",
    "v5 session": "smtp-in: New session 427e7498a1b2c3d4 from host ",
    "v5 failed": 'smtp-in: Failed command on session 427e7498a1b2c3d4: "',
    "v5 accepted": "smtp-in: Accepted message 4296f490 on session 08d856b172f69c5c: from=<",
    "v5 auth": "smtp-in: Accepted authentication for user ",
    "v5 relay": "relay: Ok for 1a2b3c4d9e8f7a6b: from=<a>, to=<b>, relay=",
    "v5 delivery": "delivery: Ok for 1a2b3c4d9e8f7a6b: from=<a>, to=<b>, rcpt=<",
    "": "",
}
FILLERS = [
    '" result="', '"', " ", "a", "0", "[", "]", " [1", "<", ">", '" => ', " => ", ", ",
    "RCPT TO:<", " host=", "address=", f"[{INJECTED}]", ">, to=<", ",", " delay=", "\ufffd",
]  # fmt: skip


@pytest.mark.parametrize("prefix", list(PREFIXES), ids=lambda p: p or "bare")
def test_64kib_hostile_lines_parse_in_under_10_ms(prefix: str) -> None:
    p = parser()
    worst = 0.0
    for filler in FILLERS:
        for end in ("", '"', ">", "]"):
            line = HEADER + PREFIXES[prefix] + _pad(filler) + end
            start = time.perf_counter()
            event = p.parse(line)
            worst = max(worst, time.perf_counter() - start)
            assert event is None or event.client_ip != INJECTED
    assert worst < 0.010, f"slowest hostile line took {worst * 1000:.1f} ms"


def test_broken_utf8_arrives_as_replacement_characters_and_is_read() -> None:
    raw = f"{HEADER}{SESSION} smtp connected address=203.0.113.50 host=".encode() + b"m\xff\xfe.x"
    event = parser().parse(raw.decode("utf-8", errors="replace"))
    assert event is not None and event.client_ip == "203.0.113.50"
    assert event.client_name == "m\ufffd\ufffd.x"
    garbage = bytes(range(256)).decode("utf-8", errors="replace")
    assert parser().parse(HEADER + garbage) is None


def test_postfix_lines_are_not_opensmtpd_lines() -> None:
    postfix = [s.line for s in load_samples("postfix")]
    assert len(postfix) > 100
    p = parser()
    assert [line for line in postfix if p.parse(line) is not None] == []
