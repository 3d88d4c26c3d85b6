"""Directions and relay attempts, including the classic relay tricks."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.classify import Classifier, destination_domain
from detector.config import NetworkSettings
from detector.correlate import Correlator
from detector.logfile import ReadCounts, open_log, read_lines
from detector.simulate import write_log
from detector.transactions import Outcome, Recipient, Transaction
from parsers.postfix import PostfixParser

NETWORK = NetworkSettings(
    internal_networks=["10.0.0.0/8", "2001:db8:1::/48"],
    local_domains=["example.test", ".corp.example"],
    relay_domains=["backup.example"],
)


def txn(client_ip: str | None = "203.0.113.7", *rcpts: Recipient, **kw: object) -> Transaction:
    return Transaction(host="mx1", start=0.0, end=0.0, offsets=(0,), texts=("line",),
                       client_ip=client_ip, recipients=rcpts, **kw)  # type: ignore[arg-type]  # fmt: skip


def rcpt(address: str, outcome: str = Outcome.DELIVERED, **kw: object) -> Recipient:
    return Recipient(address=address, outcome=outcome, time=0.0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("user@outside.example", "outside.example"),
        ("user%outside.example@example.test", "outside.example"),
        ("outside.example!user@example.test", "outside.example"),
        ("@example.test:user@outside.example", "outside.example"),
        ("@a.example,@example.test:user@outside.example", "outside.example"),
        ('"user@outside.example"@example.test', "outside.example"),
        ('"john smith"@example.test', "example.test"),
        ("USER@Example.TEST", "example.test"),
        ("postmaster", ""),
    ],
)
def test_destination_domain_undoes_relay_tricks(address: str, domain: str) -> None:
    assert destination_domain(address) == domain


@pytest.mark.parametrize(
    "address",
    [
        "user%outside.example@example.test",
        "outside.example!user@example.test",
        "@example.test:user@outside.example",
        '"user@outside.example"@example.test',
    ],
)
def test_relay_tricks_count_as_outside_recipients(address: str) -> None:
    classified = Classifier(NETWORK).classify(txn("203.0.113.7", rcpt(address, Outcome.QUEUED)))
    [r] = classified.recipients
    assert (r.direction, r.relay_attempt) == ("ext→ext", "accepted")


def test_local_domains_relay_domains_and_subdomains_are_local() -> None:
    c = Classifier(NETWORK)
    assert c.is_local_domain("example.test")
    assert c.is_local_domain("mail.corp.example") and c.is_local_domain("corp.example")
    assert c.is_local_domain("backup.example")
    assert not c.is_local_domain("sub.example.test")  # no leading dot: exact only
    assert not c.is_local_domain("notcorp.example")


@pytest.mark.parametrize(
    ("client_ip", "sasl", "side"),
    [("10.1.2.3", None, "int"), ("::ffff:10.1.2.3", None, "int"), ("2001:db8:1::5", None, "int"),
     ("203.0.113.7", "alice", "int"), ("203.0.113.7", None, "ext"), ("not-an-ip", None, "ext")],
)  # fmt: skip
def test_internal_clients(client_ip: str, sasl: str | None, side: str) -> None:
    c = Classifier(NETWORK)
    classified = c.classify(txn(client_ip, rcpt("x@outside.example"), sasl_user=sasl))
    assert classified.recipients[0].direction == f"{side}→ext"
    assert classified.internal == (side == "int")
    assert classified.accepted_relays == (1 if side == "ext" else 0)


def test_server_refusal_is_a_refused_relay_whatever_the_configuration_says() -> None:
    c = Classifier(NETWORK)
    refused = rcpt("user@example.test", Outcome.REJECTED, refused_as_relay=True)
    [r] = c.classify(txn("203.0.113.7", refused)).recipients
    assert (r.direction, r.relay_attempt) == ("ext→ext", "refused")
    assert c.mismatches["example.test"] == 1


def test_a_rejected_outside_recipient_is_not_an_accepted_relay() -> None:
    unknown = rcpt("x@outside.example", Outcome.REJECTED, reason="User unknown")
    [r] = Classifier(NETWORK).classify(txn("203.0.113.7", unknown)).recipients
    assert r.relay_attempt is None


def test_a_transaction_without_a_known_client_is_never_a_relay_attempt() -> None:
    [r] = Classifier(NETWORK).classify(txn(None, rcpt("x@outside.example"))).recipients
    assert r.relay_attempt is None


def test_local_submission_is_internal() -> None:
    c = Classifier(NETWORK)
    classified = c.classify(txn(None, rcpt("x@outside.example"), local_submission=True))
    assert classified.internal and classified.recipients[0].direction == "int→ext"


def test_domains_delivered_locally_are_learned_as_local() -> None:
    c = Classifier(NETWORK)
    delivered = txn("203.0.113.7", rcpt("bob@forgotten.example", agent="local"))
    later = txn("203.0.113.8", rcpt("eve@forgotten.example", Outcome.QUEUED))
    c.learn([delivered, later])
    assert c.is_local_domain("forgotten.example")
    [r] = c.classify(later).recipients
    assert (r.direction, r.relay_attempt) == ("ext→int", None)


@pytest.mark.parametrize("seed", [1, 2])
def test_what_may_not_be_a_relay_attempt_never_is_one(tmp_path: Path, seed: int) -> None:
    # the reading process drops the texts of transactions this test says cannot be attempts
    log = tmp_path / "mail.log"
    write_log(log, 20_000, seed=seed, open_relay_clients=1)
    classifier = Classifier(NETWORK)
    correlator, parse, found = Correlator("mx1"), PostfixParser().parse, []
    with open_log(log) as handle:
        for offset, line in read_lines(handle, ReadCounts(), str(log)):
            if (event := parse(line)) is not None:
                correlator.feed(event, offset, line, found)
    correlator.flush(found)
    skipped = [t for t in found if not classifier.may_be_relay_attempt(t)]
    attempts = [t for t in found if any(r.relay_attempt for r in classifier.classify(t).recipients)]
    assert skipped and attempts
    assert not any(any(r.relay_attempt for r in classifier.classify(t).recipients) for t in skipped)
