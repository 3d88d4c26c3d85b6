"""Hostile input: injected client addresses, and 64 KiB lines built to make grammars backtrack."""

from __future__ import annotations

import time

import pytest

from parsers.postfix import PostfixParser
from tests.parsers.samples import load_samples

HEADER = "2026-11-30T09:00:00.000001+00:00 mx1 postfix/smtpd[4001]: "
CLIENT = "unknown[203.0.113.50]"
KIB64 = 64 * 1024
INJECTED = "198.51.100.9"


def test_injected_addresses_never_become_the_client() -> None:
    parser = PostfixParser()
    hostile = [s for s in load_samples("postfix") if s.path.name == "hostile.log"]
    assert len(hostile) >= 10
    for sample in hostile:
        event = parser.parse(sample.line)
        if event is not None:
            assert event.client_ip in ("203.0.113.50", "2001:db8::50"), sample.line


def test_a_recipient_named_like_a_relay_refusal_is_not_one() -> None:
    line = (
        f"{HEADER}NOQUEUE: reject: RCPT from {CLIENT}: 550 5.1.1 <Relay access denied>: "
        "Recipient address rejected: User unknown in local recipient table; from=<a@b.example> "
        "to=<Relay access denied> proto=ESMTP helo=<h>"
    )
    event = PostfixParser().parse(line)
    assert event is not None and event.client_ip == "203.0.113.50"
    assert not event.relay_refused


def _pad(pattern: str) -> str:
    return (pattern * (KIB64 // len(pattern) + 1))[:KIB64]


PREFIXES = {
    "reject": f"NOQUEUE: reject: RCPT from {CLIENT}: 554 5.7.1 <",
    "reject suffix": f"NOQUEUE: reject: RCPT from {CLIENT}: 554 5.7.1 <v@o.example>: x; from=<",
    "reject helo": f"NOQUEUE: reject: RCPT from {CLIENT}: 554 5.7.1 <v@o>: x; from=<a> to=<b> "
    "proto=ESMTP helo=<",
    "client": "4C2A11C0E2: client=",
    "sasl": f"4C2A11C0E2: client={CLIENT}, sasl_method=PLAIN, sasl_username=",
    "note": "lost connection after DATA ",
    "auth": f"warning: {CLIENT}: SASL LOGIN authentication failed: ",
    "delivery": "4C2A11C0E2: to=<a@b>, relay=",
    "delivery timings": "4C2A11C0E2: to=<a@b>, relay=local",
    "connect": "connect from ",
    "": "",
}
FILLERS = ["[", "]", "[198.51.100.9]", "; from=<", "> to=<", ", x=y", " from unknown[", "a", " "]


@pytest.mark.parametrize("prefix", list(PREFIXES), ids=lambda p: p or "bare")
def test_64kib_hostile_lines_parse_in_under_10_ms(prefix: str) -> None:
    parser = PostfixParser()
    programs = ("postfix/smtpd", "postfix/smtp", "postfix/qmgr", "postfix/postscreen")
    worst = 0.0
    for program in programs:
        for filler in FILLERS:
            line = HEADER.replace("postfix/smtpd", program) + PREFIXES[prefix] + _pad(filler)
            start = time.perf_counter()
            event = parser.parse(line)
            worst = max(worst, time.perf_counter() - start)
            if event is not None and CLIENT in PREFIXES[prefix]:
                assert event.client_ip == "203.0.113.50"
    assert worst < 0.010, f"slowest hostile line took {worst * 1000:.1f} ms"
