"""Joining events into transactions, with bounded state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from detector.correlate import Correlator
from detector.transactions import Outcome, Transaction
from parsers.events import Event, Kind
from parsers.postfix import PostfixParser
from tests.factories import open_relay, probe, relay_reject, session, stamp

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def correlate(lines: list[str], correlator: Correlator | None = None) -> list[Transaction]:
    parser = PostfixParser(tz=UTC)
    correlator = correlator or Correlator("mx1")
    out: list[Transaction] = []
    offset = 0
    for line in lines:
        event = parser.parse(line)
        assert event is not None, line
        correlator.feed(event, offset, line, out)
        offset += len(line) + 1
    correlator.flush(out)
    return out


def test_refusals_of_one_mail_from_in_one_session_are_one_transaction() -> None:
    body = [relay_reject(T0, "203.0.113.7", f"v{n}@outside.example") for n in range(3)]
    [txn] = correlate(session(T0, "203.0.113.7", body))
    assert [r.address for r in txn.recipients] == [f"v{n}@outside.example" for n in range(3)]
    assert all(r.outcome == Outcome.REJECTED and r.refused_as_relay for r in txn.recipients)
    assert txn.client_ip == "203.0.113.7" and txn.helo == "spambot"
    offsets = list(txn.offsets)
    assert len(offsets) == 3 and offsets == sorted(offsets)


def test_a_new_sender_in_the_same_session_starts_a_new_transaction() -> None:
    first = relay_reject(T0, "203.0.113.7")
    second = first.replace("from=<spam@forged.example>", "from=<other@forged.example>")
    assert len(correlate(session(T0, "203.0.113.7", [first, second]))) == 2


def test_sessions_of_different_processes_do_not_mix() -> None:
    lines = probe(T0, "203.0.113.7", pid=1) + probe(T0, "203.0.113.8", pid=2)
    assert sorted(t.client_ip or "" for t in correlate(lines)) == ["203.0.113.7", "203.0.113.8"]


def test_a_queued_message_ends_at_removed_with_every_line() -> None:
    lines = open_relay(T0, "203.0.113.7", "4A5B6C7D8E")
    [txn] = correlate(lines)
    assert txn.queue_id == "4A5B6C7D8E" and txn.sender == "spam@forged.example"
    assert (
        len(txn.offsets) == len(txn.texts) == 4
    )  # client=, qmgr, smtp, removed (connect/disconnect are the session's)
    [rcpt] = txn.recipients
    assert (rcpt.outcome, rcpt.agent, rcpt.next_hop) == (
        Outcome.DELIVERED, "smtp", "mx.outside.example[198.51.100.7]:25")  # fmt: skip


def queued(qid: str, first: str, status: str = "deferred") -> list[str]:
    """A message's lines after its first one: cleanup, qmgr, a delivery attempt."""
    t = stamp(T0)
    return [
        first,
        f"{t} mx1 postfix/cleanup[8]: {qid}: message-id=<x@mx1.example.test>",
        f"{t} mx1 postfix/qmgr[9]: {qid}: from=<a@example.test>, size=900, nrcpt=1 (queue active)",
        f"{t} mx1 postfix/smtp[10]: {qid}: to=<a@outside.example>, relay=none, delay=1, "
        f"delays=0/0/1/0, dsn=4.4.1, status={status} (connect to outside.example: timed out)",
    ]


def test_a_message_of_our_own_clients_keeps_its_offsets_but_not_its_text() -> None:
    """Mail from pickup, from an authenticated client or from an internal network can never be
    a relay attempt once qmgr has it, so its lines are never evidence; deferred, it may wait
    for hours.  Mail from an outside client keeps its text: it may be an accepted relay."""
    t = stamp(T0)
    smtpd = f"{t} mx1 postfix/smtpd[7]"
    lines = [
        *queued("1A2B3C4D5E", f"{t} mx1 postfix/pickup[7]: 1A2B3C4D5E: uid=33 from=<www-data>"),
        *queued("2A2B3C4D5E", f"{smtpd}: 2A2B3C4D5E: client=a[198.51.100.5], sasl_method=PLAIN, "
                              "sasl_username=bob@example.test"),
        *queued("3A2B3C4D5E", f"{smtpd}: 3A2B3C4D5E: client=app[10.0.1.12]"),
        *queued("4A2B3C4D5E", f"{smtpd}: 4A2B3C4D5E: client=b[203.0.113.7]"),
    ]  # fmt: skip
    correlator = Correlator("mx1", internal_ip=lambda ip: ip.startswith("10."))
    txns = {t.queue_id: t for t in correlate(lines, correlator)}
    for ours in ("1A2B3C4D5E", "2A2B3C4D5E", "3A2B3C4D5E"):
        assert len(txns[ours].offsets) == 4 and txns[ours].texts == ("", "", "", ""), ours
    assert len(txns["4A2B3C4D5E"].texts) == 4 and all(txns["4A2B3C4D5E"].texts)


def test_stale_sessions_and_messages_are_flushed_so_memory_stays_bounded() -> None:
    parser = PostfixParser(tz=UTC)
    correlator = Correlator("mx1", session_timeout=600, message_timeout=3600)
    out: list[Transaction] = []
    for n in range(2000):  # sessions that never disconnect, messages never removed
        moment = T0 + timedelta(seconds=n * 10)
        for line in (
            f"{moment.isoformat()} mx1 postfix/smtpd[{n}]: connect from unknown[192.0.2.{n % 250}]",
            f"{moment.isoformat()} mx1 postfix/smtpd[{n}]: {n:010X}: client=unknown[192.0.2.1]",
        ):
            event = parser.parse(line)
            assert event is not None
            correlator.feed(event, n, line, out)
        assert correlator.pending <= 2 * (3600 // 10 + 60 // 10 + 2)
    assert len(out) > 1500  # flushed as they went stale, not held to the end


def test_a_restored_snapshot_goes_on_as_if_never_stopped() -> None:
    """Every cut of a real log: snapshot, restore into a new correlator, feed the rest."""
    from detector.simulate import traffic

    lines = list(islice(traffic(start=T0, open_relay_clients=1, abuse_share=0.3), 3000))
    parser = PostfixParser(tz=UTC)
    events = [(offset, line, parser.parse(line)) for offset, line in enumerate(lines)]
    whole = Correlator("mx1", source_file="f1")
    expected: list[Transaction] = []
    for offset, line, event in events:
        if event is not None:
            whole.feed(event, offset, line, expected)
    whole.flush(expected)
    for cut in (1, 700, 1501, 2999):
        before = Correlator("mx1", source_file="f1")
        got: list[Transaction] = []
        for offset, line, event in events[:cut]:
            if event is not None:
                before.feed(event, offset, line, got)
        after = Correlator("mx1", source_file="f1")
        after.restore(before.snapshot())
        assert after.pending == before.pending
        for offset, line, event in events[cut:]:
            if event is not None:
                after.feed(event, offset, line, got)
        after.flush(got)
        assert sorted(got) == sorted(expected), cut


def test_a_reply_that_names_its_verb_answers_that_command_or_none() -> None:
    # the log begins after MAIL FROM: its "Sender OK" must not answer the RCPT that follows
    def event(kind: str, **fields: Any) -> Event:
        return Event(T0.timestamp(), "", "RECV", "S1", kind, client_ip="203.0.113.9", **fields)

    events = [
        event(Kind.COMMAND, stage="RCPT", recipient="victim@outside.example"),
        event(Kind.REPLY, stage="MAIL", code=250, reason="2.1.0 Sender OK"),
        event(
            Kind.REPLY, stage="RCPT", code=550, reason="5.7.1 Unable to relay", relay_refused=True
        ),
        event(Kind.COMMAND, stage="QUIT"),
        event(Kind.REPLY, code=221, reason="closing"),
        event(Kind.DISCONNECT),
    ]
    correlator, out = Correlator("mx1"), list[Transaction]()
    for number, e in enumerate(events):
        correlator.feed(e, number, f"line {number}", out)
    [txn] = out
    [victim] = txn.recipients
    assert (victim.outcome, victim.refused_as_relay) == (Outcome.REJECTED, True)


def test_a_refusal_whose_line_names_no_client_takes_its_sessions_client_and_user() -> None:
    # OpenSMTPD names the client once, on the session's "connected" line
    def event(kind: str, session: str, **fields: Any) -> Event:
        return Event(T0.timestamp(), "mx1", "smtpd", session, kind, **fields)

    refusal = {"stage": "RCPT", "code": 550, "refusal_unexplained": True}
    events = [
        event(Kind.CONNECT, "a1", client_ip="203.0.113.7", client_name="unknown"),
        event(Kind.CONNECT, "b2", client_ip="198.51.100.6", client_name="laptop.example.org"),
        event(Kind.AUTH, "b2", sasl_user="alice@example.test"),
        event(Kind.REJECT, "a1", recipient="victim@outside.example", **refusal),
        event(Kind.REJECT, "b2", recipient="typo@outside.example", **refusal),
        event(Kind.DISCONNECT, "a1"),
        event(Kind.DISCONNECT, "b2"),
    ]
    correlator, out = Correlator("mx1"), list[Transaction]()
    for number, e in enumerate(events):
        correlator.feed(e, number, f"line {number}", out)
    got = {t.recipients[0].address: (t.client_ip, t.client_name, t.sasl_user) for t in out}
    assert got == {
        "victim@outside.example": ("203.0.113.7", "unknown", None),
        "typo@outside.example": ("198.51.100.6", "laptop.example.org", "alice@example.test"),
    }
