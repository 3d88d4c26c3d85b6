"""Conformance with the real sendmail logs in ../shared/corpus/sendmail (skipped with the reason
when the corpus is absent, failing when RELAYWATCH_REQUIRE_CORPUS=1, as in CI): fail2ban's
annotated sendmail-reject and sendmail-auth lines, and the generated 8.17.1.9 logs."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime

import pytest

from parsers.sendmail import SendmailParser
from tests.conftest import corpus_path
from tests.corpus import fail2ban_cases

RELAYING_DENIED = re.compile(r"Relaying (?:temporarily )?denied")
CHATTER = re.compile(
    r"]: (?:My unqualified host name|unable to qualify my own domain|gethostbyaddr\(|"
    r"alias database|/etc/mail/aliases: |starting daemon)"
)
"""What sendmail says at start-up: nothing about a client or a message."""


def _same_address(a: object, b: object) -> bool:
    return ipaddress.ip_address(str(a)) == ipaddress.ip_address(str(b))


def test_every_fail2ban_relaying_denied_line_yields_its_client_as_a_refused_relay() -> None:
    parser = SendmailParser()
    relay_lines = [(e, line) for e, line in fail2ban_cases("sendmail", "sendmail-reject")
                   if e.get("match") and RELAYING_DENIED.search(line)]  # fmt: skip
    assert len(relay_lines) == 5  # four "Relaying denied", one "Relaying temporarily denied"
    for expected, line in relay_lines:
        event = parser.parse(line)
        assert event is not None, line
        assert _same_address(event.client_ip, expected["host"]), line
        assert event.relay_refused and event.stage == "RCPT", line


@pytest.mark.parametrize("name", ["sendmail-reject", "sendmail-auth"])
def test_every_fail2ban_line_naming_a_client_yields_that_client_at_its_time(name: str) -> None:
    parser = SendmailParser(tz=UTC)
    cases = [
        (e, line)
        for e, line in fail2ban_cases("sendmail", name)
        if e.get("match") and e.get("host")
    ]
    assert cases
    for expected, line in cases:
        event = parser.parse(line)
        assert event is not None, f"a line naming a client yields nothing: {line}"
        assert _same_address(event.client_ip, expected["host"]), line
        stamp = datetime.fromtimestamp(event.time, UTC).strftime("%m-%dT%H:%M:%S")
        assert stamp == str(expected["time"])[5:], line  # fail2ban's test years are its own


def test_only_sendmails_words_make_a_fail2ban_reject_a_refused_relay() -> None:
    parser = SendmailParser()
    for _expected, line in fail2ban_cases("sendmail", "sendmail-reject"):
        event = parser.parse(line)
        if event is not None:
            assert event.relay_refused == bool(RELAYING_DENIED.search(line)), line


@pytest.mark.parametrize("name", ["mail.log.rfc3339", "mail.log.traditional"])
def test_real_sendmail_817_logs_parse_except_start_up_chatter(name: str) -> None:
    parser = SendmailParser()
    lines = corpus_path("sendmail", "generated-local-sendmail-8.17.1.9", name).read_text()
    for line in lines.splitlines():
        event = parser.parse(line)
        if CHATTER.search(line):
            assert event is None, line
        else:
            assert event is not None, line
