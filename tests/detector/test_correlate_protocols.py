"""The correlator's contract for families other than Postfix (parsers.events.Session):
protocol logs of commands and replies, rejects with no session around them, accepted recipients,
AUTH lines, and messages that end when their last recipient has an outcome."""

from __future__ import annotations

from typing import Any

from detector.correlate import Correlator
from detector.transactions import Outcome, Transaction
from parsers.events import NOT_LOGGED, Event, Kind
from parsers.protocol import ENDS_AT_LAST_RECIPIENT

T0 = 1_796_000_000.0


def event(kind: str, pid: str | None = "S1", offset: float = 0, **fields: Any) -> Event:
    return Event(T0 + offset, "", "RECV", pid, kind, **fields)


def run(events: list[Event], correlator: Correlator | None = None) -> list[Transaction]:
    correlator = correlator or Correlator("mx1")
    out: list[Transaction] = []
    for number, e in enumerate(events):
        correlator.feed(e, number * 100, f"line {number}", out)
    correlator.flush(out)
    return out


def command(verb: str, **fields: Any) -> Event:
    return event(Kind.COMMAND, stage=verb, client_ip="203.0.113.9", **fields)


def reply(code: int, text: str, **fields: Any) -> Event:
    return event(Kind.REPLY, code=code, reason=text, client_ip="203.0.113.9", **fields)


def test_replies_answer_commands_in_order_even_when_pipelined() -> None:
    events = [
        event(Kind.CONNECT, client_ip="203.0.113.9"),
        command("EHLO", helo="spambot"),
        reply(250, "mx1 Hello"),
        command("MAIL", sender="spam@forged.example"),
        command("RCPT", recipient="victim@outside.example"),
        command("RCPT", recipient="bob@example.test"),
        reply(250, "2.1.0 Sender OK"),
        reply(550, "5.7.1 Unable to relay", enhanced="5.7.1", relay_refused=True),
        reply(250, "2.1.5 Recipient OK"),
        command("QUIT"),
        reply(221, "closing"),
        event(Kind.DISCONNECT, client_ip="203.0.113.9"),
    ]
    [txn] = run(events)
    assert (txn.client_ip, txn.helo, txn.sender) == (
        "203.0.113.9",
        "spambot",
        "spam@forged.example",
    )
    victim, bob = txn.recipients
    assert (victim.address, victim.outcome, victim.refused_as_relay, victim.code) == (
        "victim@outside.example", Outcome.REJECTED, True, 550)  # fmt: skip
    assert (bob.address, bob.outcome) == ("bob@example.test", Outcome.QUEUED)
    assert len(txn.offsets) == 8  # from MAIL FROM to the reply to QUIT


def test_the_end_of_data_finishes_a_message_and_a_new_mail_from_starts_another() -> None:
    events = [
        command("MAIL", sender="a@outside.example"),
        reply(250, "OK"),
        command("RCPT", recipient="x@outside.example"),
        reply(250, "OK"),
        command("DATA"),
        reply(354, "Start mail input"),
        reply(250, "2.6.0 Queued mail for delivery"),
        command("MAIL", sender="b@outside.example"),
        command("RCPT", recipient="y@outside.example", code=550, refusal_unexplained=True),
    ]
    out = run(events)
    assert [t.sender for t in out] == ["a@outside.example", "b@outside.example"]
    assert out[0].recipients[0].outcome == Outcome.QUEUED
    [refused] = out[1].recipients
    assert refused.outcome == Outcome.REJECTED and refused.refusal_unexplained


def test_an_authenticated_session_marks_its_transactions() -> None:
    events = [
        command("AUTH", sasl_method="LOGIN"),
        reply(235, "2.7.0 Authentication successful"),
        command("MAIL", sender="alice@example.test"),
        command("RCPT", recipient="friend@outside.example", code=250),
    ]
    [txn] = run(events)
    assert txn.sasl_user == NOT_LOGGED
    named = [event(Kind.AUTH, sasl_user="alice@example.test"), *events[2:]]
    [txn] = run(named)
    assert txn.sasl_user == "alice@example.test"


def test_a_reject_without_session_or_queue_id_is_a_transaction_at_once() -> None:
    correlator, out = Correlator("mx1"), list[Transaction]()
    reject = event(Kind.REJECT, pid=None, client_ip="203.0.113.9", stage="RCPT",
                   recipient="v@outside.example", sender="s@forged.example", code=550,
                   reason="relay not permitted", relay_refused=True)  # fmt: skip
    correlator.feed(reject, 0, "line", out)
    [txn] = out
    assert txn.client_ip == "203.0.113.9" and txn.recipients[0].refused_as_relay
    assert correlator.pending == 0


def test_a_message_that_logs_no_end_ends_at_its_last_recipient() -> None:
    correlator = Correlator("mx1", message_end=ENDS_AT_LAST_RECIPIENT)
    queued = event(Kind.QUEUED, queue_id="Q1", client_ip="203.0.113.9", sender="s@x.example",
                   nrcpt=2)  # fmt: skip
    first = event(Kind.DELIVERY, queue_id="Q1", recipients=("a@o.example", "b@o.example"),
                  recipient="a@o.example", status="deferred", agent="smtp")  # fmt: skip
    out: list[Transaction] = []
    for e in (queued, first):
        correlator.feed(e, 0, "line", out)
    assert out == [] and correlator.pending == 1
    correlator.feed(first._replace(status="sent"), 0, "line", out)
    [txn] = out
    assert [(r.address, r.outcome, r.agent) for r in txn.recipients] == [
        ("a@o.example", Outcome.DELIVERED, "smtp"),
        ("b@o.example", Outcome.DELIVERED, "smtp"),
    ]


def test_a_message_with_no_accepted_recipient_ends_with_its_from_line() -> None:
    correlator = Correlator("mx1", message_end=ENDS_AT_LAST_RECIPIENT)
    reject = event(Kind.REJECT, queue_id="Q2", client_ip="203.0.113.9", stage="RCPT",
                   recipient="v@outside.example", code=550, relay_refused=True)  # fmt: skip
    queued = event(Kind.QUEUED, queue_id="Q2", client_ip="203.0.113.9", sender="s@x.example",
                   nrcpt=0)  # fmt: skip
    out: list[Transaction] = []
    correlator.feed(reject, 0, "reject", out)
    correlator.feed(queued, 1, "from", out)
    [txn] = out
    assert txn.sender == "s@x.example" and txn.recipients[0].refused_as_relay


def test_the_session_of_an_auth_line_gives_its_user_to_the_message_of_that_process() -> None:
    auth = event(Kind.AUTH, pid="17536", sasl_user="alice@example.test")
    queued = event(Kind.QUEUED, pid="17536", queue_id="Q3", client_ip="198.51.100.6",
                   sender="alice@example.test", nrcpt=1)  # fmt: skip
    [txn] = run([auth, queued])
    assert txn.sasl_user == "alice@example.test"


def test_accepted_recipients_and_the_client_of_the_session_join_the_message() -> None:
    connect = event(Kind.CONNECT, pid="b8eb", client_ip="203.0.113.9", client_name="unknown")
    queued = event(Kind.QUEUED, pid="b8eb", queue_id="3eb4bde5", nrcpt=1, size=440)
    recipient = event(Kind.RECIPIENT, pid="b8eb", queue_id="3eb4bde5", sender="s@x.example",
                      recipient="victim@outside.example")  # fmt: skip
    [txn] = run([connect, queued, recipient])
    assert (txn.client_ip, txn.sender) == ("203.0.113.9", "s@x.example")
    assert [(r.address, r.outcome) for r in txn.recipients] == [
        ("victim@outside.example", Outcome.QUEUED)]  # fmt: skip


def test_a_restart_keeps_unanswered_commands_open_envelopes_and_the_parser_state() -> None:
    events = [
        command("MAIL", sender="spam@forged.example"),
        command("RCPT", recipient="victim@outside.example"),
        reply(250, "OK"),
        reply(550, "5.7.1 Unable to relay", relay_refused=True),
    ]
    whole = run(events)
    before, out = Correlator("mx1"), list[Transaction]()
    for number, e in enumerate(events[:2]):
        before.feed(e, number * 100, f"line {number}", out)
    after = Correlator("mx1")
    assert after.restore(before.snapshot({"fields": ["date-time"]})) == {"fields": ["date-time"]}
    for number, e in enumerate(events[2:], 2):
        after.feed(e, number * 100, f"line {number}", out)
    after.flush(out)
    assert out == whole
