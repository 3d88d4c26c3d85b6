"""Sendmail: the compiled grammar means what the pyparsing grammar says, a message's lines make
one transaction that ends at its last recipient, hostile input is harmless and fast, and other
families' lines are not taken for sendmail's."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from detector.correlate import Correlator
from detector.transactions import Outcome, Transaction
from parsers.events import Kind
from parsers.protocol import ENDS_AT_LAST_RECIPIENT
from parsers.sendmail import LINE, SendmailParser, relay_refused
from tests.parsers.samples import load_samples, sample_files

SAMPLES = load_samples("sendmail")
CLOCK = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
HEADER = "2026-11-30T09:00:00.000001+00:00 mx1 sm-mta[4001]: "
QID = "6AU9A0aa004001"
CLIENT = "unknown.example [203.0.113.50]"
INJECTED = "198.51.100.9"
REAL_CLIENTS = (None, "203.0.113.50", "2001:db8::50")
KIB64 = 64 * 1024


def parser() -> SendmailParser:
    return SendmailParser(now=lambda: CLOCK, tz=UTC)


@pytest.mark.parametrize("line", [s.line for s in SAMPLES], ids=[s.id for s in SAMPLES])
def test_compiled_line_grammar_agrees_with_pyparsing(line: str) -> None:
    match = LINE.regex.match(line)
    assert (None if match is None else LINE.fields(match)) == LINE.parse_fields(line)


def test_a_message_ends_at_its_last_recipient() -> None:
    assert SendmailParser.message_end == ENDS_AT_LAST_RECIPIENT


def correlate(lines: list[str], *, flush: bool = False) -> list[Transaction]:
    """The transactions ``lines`` finish (and, with ``flush``, whatever is still held)."""
    p = parser()
    correlator = Correlator("mx1", message_end=SendmailParser.message_end)
    out: list[Transaction] = []
    for offset, line in enumerate(lines):
        event = p.parse(line)
        assert event is not None, line
        correlator.feed(event, offset, line, out)
    if flush:
        correlator.flush(out)
    return out


def test_a_message_whose_every_recipient_was_refused_ends_at_its_from_line() -> None:
    [txn] = correlate([
        f"{HEADER}{QID}: ruleset=check_rcpt, arg1=<v@outside.example>, relay={CLIENT}, "
        "reject=550 5.7.1 <v@outside.example>... Relaying denied. Proper authentication required.",
        f"{HEADER}{QID}: from=<a@b.example>, size=0, class=0, nrcpts=0, proto=ESMTP, daemon=MTA, "
        f"relay={CLIENT}",
    ])  # fmt: skip
    assert (txn.queue_id, txn.client_ip, txn.sender) == (QID, "203.0.113.50", "a@b.example")
    [rcpt] = txn.recipients
    assert (rcpt.address, rcpt.outcome, rcpt.refused_as_relay) == (
        "v@outside.example", Outcome.REJECTED, True)  # fmt: skip


def test_a_message_ends_once_its_accepted_recipients_have_an_outcome_and_keeps_its_refusals() -> (
    None
):
    lines = [
        f"{HEADER}{QID}: ruleset=check_rcpt, arg1=<v@outside.example>, relay={CLIENT}, "
        "reject=550 5.7.1 <v@outside.example>... Relaying denied. Proper authentication required.",
        f"{HEADER}{QID}: from=<a@b.example>, size=268, class=0, nrcpts=2, msgid=<m@b.example>, "
        f"proto=ESMTP, daemon=MTA, relay={CLIENT}",
        f"{HEADER}{QID}: to=<bob@example.test>,<carol@example.test>, delay=00:00:00, "
        "xdelay=00:00:00, mailer=local, pri=30493, dsn=2.0.0, stat=Sent",
    ]
    assert correlate(lines[:2]) == []  # two accepted recipients still to go
    [txn] = correlate(lines)
    outcomes = {r.address: (r.outcome, r.agent) for r in txn.recipients}
    assert outcomes == {
        "v@outside.example": (Outcome.REJECTED, None),
        "bob@example.test": (Outcome.DELIVERED, "local"),
        "carol@example.test": (Outcome.DELIVERED, "local"),
    }
    assert txn.message_id == "m@b.example"


def test_the_user_of_an_auth_line_is_the_user_of_the_message_of_its_session() -> None:
    other = "2026-11-30T09:00:01.000001+00:00 mx1 sm-mta[4002]: "
    txns = correlate([
        f"{HEADER}AUTH=server, relay={CLIENT}, authid=alice@example.test, mech=PLAIN, bits=0",
        f"{HEADER}{QID}: from=<alice@example.test>, size=296, class=0, nrcpts=1, proto=ESMTPA, "
        f"daemon=MTA, relay={CLIENT}",
        f"{other}6AU9A0aa004002: from=<x@b.example>, size=296, class=0, nrcpts=1, proto=ESMTP, "
        f"daemon=MTA, relay={CLIENT}",
    ], flush=True)  # fmt: skip
    users = {t.queue_id: t.sasl_user for t in txns}
    assert users == {QID: "alice@example.test", "6AU9A0aa004002": None}


def test_a_to_line_gives_every_recipient_it_lists_and_quoted_commas_do_not_split_them() -> None:
    line = (
        f'{HEADER}{QID}: to=<a@x.example>,"b, c"@y.example,Dee <d@z.example>,<"e,f"@w.example>, '
        "delay=00:00:00, xdelay=00:00:00, mailer=esmtp, pri=120300, relay=mx.y.example. "
        "[192.0.2.25], dsn=2.0.0, stat=Sent (ok)"
    )
    event = parser().parse(line)
    assert event is not None and event.kind == Kind.DELIVERY
    assert event.recipient == "a@x.example"
    assert event.recipients == ("a@x.example", '"b, c"@y.example', "d@z.example", '"e,f"@w.example')
    assert event.relay == "mx.y.example. [192.0.2.25]"
    assert (event.agent, event.status) == ("smtp", "sent")


@pytest.mark.parametrize(
    ("stat", "dsn", "status"),
    [
        ("Sent (Ok: queued as 4C2A11C0E2)", "2.0.0", "sent"),
        ("Deferred: Connection refused by mx.y.example.", "4.0.0", "deferred"),
        ("Operating system error", "4.0.0", "deferred"),  # the dsn says it will be tried again
        ("queued", None, "queued"),
        ("User unknown", "5.1.1", "bounced"),
        ("Service unavailable", "5.2.0", "bounced"),
    ],
)
def test_the_status_of_a_delivery_comes_from_its_stat_and_dsn(
    stat: str, dsn: str | None, status: str
) -> None:
    line = f"{HEADER}{QID}: to=<a@x.example>, delay=00:00:00, mailer=esmtp, pri=30100, "
    line += (f"dsn={dsn}, " if dsn else "") + f"stat={stat}"
    event = parser().parse(line)
    assert event is not None and (event.status, event.reason) == (status, stat)


@pytest.mark.parametrize(
    ("stage", "reason", "refused"),
    [
        ("check_rcpt", "<v@o.example>... Relaying denied. Proper authentication required.", True),
        ("check_rcpt", "<v@o.example>... Relaying temporarily denied. Cannot resolve PTR", True),
        ("check_rcpt", "<v@o.example>... we do not relay", True),
        ("...", "<v@o.example>... Relaying Denied", True),
        ("to", "<v@o.example>... Relaying denied", True),  # a milter's verdict, in those words
        ("check_rcpt", "<Relaying denied@example.test>... User unknown", False),
        ("...", '<"v>... Relaying denied"@example.test>... User unknown', False),
        ("check_rcpt", "<v@o.example>... Rejected: 192.0.2.1 listed at rbl.example", False),
        ("check_mail", "<a@b.example>... Relaying denied", False),  # not a recipient
        ("check_relay", "Relaying denied", False),
    ],
)
def test_only_sendmails_own_words_refuse_a_recipient_as_a_relay(
    stage: str, reason: str, refused: bool
) -> None:
    assert relay_refused(stage, reason) is refused


def test_ipv6_clients_are_written_as_other_families_write_them() -> None:
    line = (
        f"{HEADER}{QID}: from=<a@b.example>, size=1, class=0, nrcpts=1, proto=ESMTP, "
        "daemon=MTA-v6, relay=mail6.example.net [IPv6:2001:DB8:0:0:0:0:0:25]"
    )
    event = parser().parse(line)
    assert event is not None and (event.client_ip, event.client_name) == (
        "2001:db8::25", "mail6.example.net")  # fmt: skip
    mapped = parser().parse(line.replace("2001:DB8:0:0:0:0:0:25", "::ffff:192.0.2.25"))
    assert mapped is not None and mapped.client_ip == "::ffff:192.0.2.25"


def test_a_name_sendmail_could_not_confirm_is_unknown_as_a_missing_one() -> None:
    line = f"{HEADER}{QID}: [203.0.113.50] did not issue MAIL/EXPN/VRFY/ETRN during connection"
    forged = line.replace("[203.0.113.50]", "mail.bank.example [203.0.113.50] (may be forged)")
    for text in (line, forged):
        event = parser().parse(text)
        assert event is not None and (event.client_ip, event.client_name) == (
            "203.0.113.50", "unknown")  # fmt: skip


def test_injected_addresses_never_become_the_client() -> None:
    hostile = [s for s in SAMPLES if s.path.name == "hostile.log"]
    assert len(hostile) >= 10
    p = parser()
    for sample in hostile:
        event = p.parse(sample.line)
        if event is not None:
            assert event.client_ip in REAL_CLIENTS, sample.line
            assert not event.relay_refused, sample.line


def _pad(pattern: str) -> str:
    return (pattern * (KIB64 // len(pattern) + 1))[:KIB64]


FROM = f"{QID}: from=<a@b.example>, size=1, class=0, nrcpts=1"
PREFIXES = {
    "from": f"{QID}: from=<",
    "from quoted": f'{QID}: from=<"',
    "from msgid": f"{FROM}, msgid=<",
    "from tail": f"{FROM}, msgid=<m>, proto=ESMTP, daemon=MTA",
    "from relay": f"{FROM}, relay=",
    "to": f"{QID}: to=<",
    "to list": f"{QID}: to=<a@x.example>,",
    "to quoted": f'{QID}: to="',
    "to ctladdr": f"{QID}: to=<a@x.example>, ctladdr=",
    "to reply": f"{QID}: to=<a@x.example>, delay=00:00:00, mailer=esmtp, pri=1, reply=",
    "to stat": f"{QID}: to=<a@x.example>, delay=00:00:00, mailer=esmtp, pri=1, stat=",
    "rcpt": f"{QID}: ruleset=check_rcpt, arg1=<",
    "rcpt quoted": f'{QID}: ruleset=check_rcpt, arg1=<"',
    "rcpt relay": f"{QID}: ruleset=check_rcpt, arg1=<v@o.example>, relay=",
    "rcpt reject": f"{QID}: ruleset=check_rcpt, arg1=<v@o.example>, relay={CLIENT}, reject=550 ",
    "ruleset": "ruleset=check_relay, arg1=",
    "ruleset arg2": "ruleset=check_relay, arg1=x, arg2=",
    "address": f"{QID}: <",
    "milter": f"{QID}: Milter: to=<",
    "bounce": f"{QID}: 6AU9A0aa004002: DSN: ",
    "auth": f"AUTH=server, relay={CLIENT}, authid=",
    "auth relay": "AUTH=server, relay=",
    "auth failure": f"{QID}: AUTH failure (LOGIN): ",
    "auth failure user": f"{QID}: AUTH failure (LOGIN): x, user=",
    "starttls": "STARTTLS=server, relay=",
    "connect": "NOQUEUE: connect from ",
    "client first": f"{QID}: ",
    "client first reason": f"{QID}: {CLIENT}: ",
    "from client": f"{QID}: lost input channel from ",
    "from client rest": f"{QID}: lost input channel from {CLIENT} to MTA",
    "": "",
}
FILLERS = [
    ", relay=", ", relay=[", f", relay=[{INJECTED}]", f"x [{INJECTED}] ", ", user=", ", stat=",
    ", reject=", ">... ", ", ", ",", '"', "<", ">", "[", "]", " ", "a", "@", "\\", " after ",
    "IPv6:", ":", "\ufffd",
]  # fmt: skip


def _seconds(parse: Callable[[str], object], line: str) -> float:
    """What parsing ``line`` costs: the best of three tries (a busy machine only adds)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        parse(line)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("prefix", list(PREFIXES), ids=lambda p: p or "bare")
def test_64kib_hostile_lines_parse_in_under_10_ms(prefix: str) -> None:
    p = parser()
    worst = 0.0
    for filler in FILLERS:
        for end in ("", ">", "]", f" [{INJECTED}]", f", relay=[{INJECTED}]"):
            line = HEADER + PREFIXES[prefix] + _pad(filler) + end
            worst = max(worst, _seconds(p.parse, line))
            event = p.parse(line)
            if event is not None and CLIENT in PREFIXES[prefix]:
                assert event.client_ip == "203.0.113.50", (prefix, filler, end)
    assert worst < 0.010, f"slowest hostile line took {worst * 1000:.1f} ms"


def test_broken_utf8_arrives_as_replacement_characters_and_is_read() -> None:
    raw = f"{HEADER}{QID}: from=<".encode() + b"\xff\xfe@b.example>, size=1, class=0, nrcpts=1"
    raw += f", proto=ESMTP, daemon=MTA, relay={CLIENT}".encode()
    event = parser().parse(raw.decode("utf-8", errors="replace"))
    assert event is not None and event.client_ip == "203.0.113.50"
    assert event.sender == "\ufffd\ufffd@b.example"
    garbage = bytes(range(256)).decode("utf-8", errors="replace")
    assert parser().parse(HEADER + garbage) is None
    assert parser().parse(f"{HEADER}{QID}: {garbage}") is None


@pytest.mark.parametrize("family", ["postfix", "opensmtpd", "exim"])
def test_other_families_lines_are_not_sendmail_lines(family: str) -> None:
    if not sample_files(family):
        pytest.skip(f"no samples of {family} yet")
    lines = [s.line for s in load_samples(family)]
    p = parser()
    assert [line for line in lines if p.parse(line) is not None] == []
