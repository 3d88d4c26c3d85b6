"""The real Postfix 3.7 scenarios (corpus SCENARIOS.txt) classified as the ground truth says,
through the whole pipeline into a real SQLite file, with that Postfix's own settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.conftest import corpus_path
from tests.corpus import ingest_log, stored_by_queue_id, stored_transactions

POSTFIX_NETWORK = 'internal_networks = ["127.0.0.1/32"]\nlocal_domains = ["example.test"]'


@pytest.fixture(params=["mail.log.rfc3339", "mail.log.traditional"])
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    log = corpus_path("postfix", "generated-local-postfix-3.7.11", request.param)
    return ingest_log(tmp_path, log, POSTFIX_NETWORK, "postfix")[0]


def test_s1_relay_from_the_trusted_network_is_not_a_relay_attempt(stored: Engine) -> None:
    s1 = stored_by_queue_id(stored, "C1D72178141")
    assert s1["internal"] and s1["client_ip"] == "127.0.0.1"
    rcpt = s1["rcpts"]["victim@external-b.example.org"]
    assert (rcpt["direction"], rcpt["outcome"], rcpt["relay_attempt"]) == (
        "int→ext", "delivered", None)  # fmt: skip


def test_refused_relays_are_s2_s3_s6_s7b_s14_and_the_repeats(stored: Engine) -> None:
    refused = sorted(
        (t["client_ip"], address)
        for t in stored_transactions(stored)
        for address, r in t["rcpts"].items()
        if r["relay_attempt"] == "refused"
    )
    assert refused == sorted([
        ("127.0.0.5", "spameri@tiscali.example"),  # S2
        ("127.0.0.5", "victim@external-b.example.org"),  # S3 (logged with its queue id)
        ("::1", "victim@external-b.example.org"),  # S6
        ("127.0.0.7", "b@external-b.example.org"),  # S7b
        ("127.0.0.5", "victim@external-b.example.org"),  # S14 (behind postscreen)
        ("127.0.0.5", "spameri@tiscali.example"),  # S18 repeat
        ("127.0.0.5", "spameri@tiscali.example"),  # S18 repeat
    ])  # fmt: skip
    for t in stored_transactions(stored):
        for r in t["rcpts"].values():
            if r["relay_attempt"] == "refused":
                assert r["direction"] == "ext→ext" and r["outcome"] == "rejected"


def test_s3_keeps_the_local_recipient_and_the_refused_one_in_one_transaction(
    stored: Engine,
) -> None:
    s3 = stored_by_queue_id(stored, "91D6B178143")
    assert s3["rcpts"]["bob@example.test"]["direction"] == "ext→int"
    assert s3["rcpts"]["bob@example.test"]["outcome"] == "delivered"
    assert s3["rcpts"]["victim@external-b.example.org"]["relay_attempt"] == "refused"
    assert s3["helo"] == "relayspam.example.net"


def test_s4_and_s5_are_authenticated_relays_s5_with_a_forged_outside_sender(
    stored: Engine,
) -> None:
    s4 = stored_by_queue_id(stored, "ED382178143")
    s5 = stored_by_queue_id(stored, "5AB00178145")
    for txn in (s4, s5):
        assert txn["sasl_user"] == "alice@example.test" and txn["internal"]
        assert {r["direction"] for r in txn["rcpts"].values()} == {"int→ext"}
        assert {r["relay_attempt"] for r in txn["rcpts"].values()} == {None}
    assert s4["sender_local"] is True
    assert s5["sender"] == "ceo@bank.example.com" and s5["sender_local"] is False


def test_s11_unknown_local_user_is_not_a_relay_attempt(stored: Engine) -> None:
    [s11] = [t for t in stored_transactions(stored) if "nosuchuser@example.test" in t["rcpts"]]
    rcpt = s11["rcpts"]["nosuchuser@example.test"]
    assert (rcpt["direction"], rcpt["outcome"], rcpt["relay_attempt"]) == (
        "ext→int", "rejected", None)  # fmt: skip
    assert rcpt["code"] == 550 and rcpt["enhanced"] == "5.1.1"


def test_s13_deferred_then_sent_is_one_transaction_delivered(stored: Engine) -> None:
    s13 = stored_by_queue_id(stored, "0BFCB17810F")
    assert s13["rcpts"]["ops@external-e.example.net"]["outcome"] == "delivered"
    # client=, message-id, qmgr from=, smtp deferred, qmgr from= again, smtp sent, removed
    assert len(s13["line_offsets"].split(",")) == 7


def test_no_accepted_relay_and_only_the_three_probing_clients_offend(stored: Engine) -> None:
    txns = stored_transactions(stored)
    assert sum(t["accepted_relays"] for t in txns) == 0
    offenders = {t["client_ip"] for t in txns if t["refused_relays"]}
    assert offenders == {"127.0.0.5", "::1", "127.0.0.7"}


def test_inbound_local_deliveries_are_ext_to_int(stored: Engine) -> None:
    for queue_id in ("E76E9178146", "53B4C178147", "622A0178148", "2A994178149", "E626317814F"):
        txn = stored_by_queue_id(stored, queue_id)
        assert {r["direction"] for r in txn["rcpts"].values()} == {"ext→int"}, queue_id
