"""Conformance with public and real logs in ../shared/corpus (skipped with the reason when the
corpus is absent, failing when RELAYWATCH_REQUIRE_CORPUS=1, as in CI)."""

from __future__ import annotations

import re

from parsers.postfix import PostfixParser
from tests.conftest import corpus_path
from tests.corpus import fail2ban_cases


def test_every_fail2ban_relay_reject_yields_its_client_as_a_refused_relay() -> None:
    parser = PostfixParser()
    relay_lines = [(e, line) for e, line in fail2ban_cases("postfix", "postfix")
                   if e.get("match") and "Relay access denied" in line]  # fmt: skip
    assert relay_lines
    for expected, line in relay_lines:
        event = parser.parse(line)
        assert event is not None, line
        assert event.client_ip == expected["host"]
        assert event.relay_refused


def test_fail2ban_lines_yield_events_and_their_clients() -> None:
    parser = PostfixParser()
    cases = fail2ban_cases("postfix", "postfix")
    parsed = 0
    for expected, line in cases:
        event = parser.parse(line)
        parsed += event is not None
        if event is not None and expected.get("host"):
            assert event.client_ip == expected["host"], line
        if expected.get("match") and expected.get("host"):
            assert event is not None, f"a line naming a client yields nothing: {line}"
    assert parsed / len(cases) >= 0.9, f"only {parsed} of {len(cases)} lines yield an event"


def test_real_postfix_37_logs_parse_except_daemon_chatter() -> None:
    parser = PostfixParser()
    chatter = re.compile(
        r"postfix(?:/(?:master|anvil|postfix-script))?\[\d+\]: |postscreen\[\d+\]: cache "
    )
    for name in ("mail.log.rfc3339", "mail.log.traditional"):
        lines = corpus_path("postfix", "generated-local-postfix-3.7.11", name).read_text()
        for line in lines.splitlines():
            event = parser.parse(line)
            if chatter.search(line) or "]: connect to " in line:
                assert event is None, line
            else:
                assert event is not None, line
