"""The real Exim 4.96 scenarios E1–E12 (corpus PROVENANCE.txt) classified as the ground truth
says, through the whole pipeline into a real SQLite file, with that Exim's own settings
(research.conf: relay_from_hosts = 127.0.0.1, local_domains = example.test : mx.example.test).

The mainlog is read as Exim wrote it, and as syslog would carry the same lines (an rsyslog
header before each, Exim's timestamp kept): both must give the same transactions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.conftest import corpus_path
from tests.corpus import ingest_log, stored_by_queue_id, stored_transactions

EXIM_NETWORK = (
    'internal_networks = ["127.0.0.1/32"]\nlocal_domains = ["example.test", "mx.example.test"]'
)


def _as_syslog(mainlog: Path, to: Path) -> Path:
    lines = mainlog.read_text(encoding="utf-8").splitlines()
    to.write_text("".join(f"Nov 30 08:11:17 vm exim[15750]: {line}\n" for line in lines))
    return to


@pytest.fixture(params=["mainlog", "syslog"])
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    log = corpus_path("exim", "generated-local-exim-4.96", "mainlog")
    if request.param == "syslog":
        log = _as_syslog(log, tmp_path / "mail.log")
    return ingest_log(tmp_path, log, EXIM_NETWORK, "exim")[0]


def _rcpt(txn: dict[str, Any], address: str) -> tuple[str, str, str | None]:
    r = txn["rcpts"][address]
    return r["direction"], r["outcome"], r["relay_attempt"]


def test_e1_relay_for_a_relay_from_hosts_client_is_not_a_relay_attempt(stored: Engine) -> None:
    e1 = stored_by_queue_id(stored, "1xXwTq-00046P-1z")
    assert e1["internal"] and e1["client_ip"] == "127.0.0.1"
    assert e1["helo"] == "app01.example.test" and e1["sender_local"] is False
    assert _rcpt(e1, "victim@external-b.example.org") == ("int→ext", "delivered", None)
    assert e1["rcpts"]["victim@external-b.example.org"]["agent"] == "smtp"


def test_refused_relays_are_e2_e3_and_e6_each_a_transaction_of_its_own(stored: Engine) -> None:
    refused = sorted(
        (t["client_ip"], t["helo"], address, t["queue_id"], len(t["rcpts"]))
        for t in stored_transactions(stored)
        for address, r in t["rcpts"].items()
        if r["relay_attempt"] == "refused"
    )
    assert refused == sorted([
        ("127.0.0.5", "WIN-9QL4SDRB93L", "spameri@tiscali.example", None, 1),  # E2
        ("127.0.0.5", "relayspam.example.net", "victim@external-b.example.org", None, 1),  # E3
        ("::1", "[::1]", "victim@external-b.example.org", None, 1),  # E6, over IPv6
    ])  # fmt: skip
    for t in stored_transactions(stored):
        for r in t["rcpts"].values():
            if r["relay_attempt"] == "refused":
                assert (r["direction"], r["outcome"]) == ("ext→ext", "rejected")
                assert r["reason"].endswith(": relay not permitted")


def test_e3_the_accepted_local_recipient_is_delivered_to_its_mailbox(stored: Engine) -> None:
    # Exim refused the outside recipient before the message had an id: two transactions
    e3 = stored_by_queue_id(stored, "1xXwTs-00046b-0d")
    assert (e3["client_ip"], e3["helo"]) == ("127.0.0.5", "relayspam.example.net")
    assert list(e3["rcpts"]) == ["bob@example.test"]
    assert _rcpt(e3, "bob@example.test") == ("ext→int", "delivered", None)
    assert e3["rcpts"]["bob@example.test"]["agent"] == "local"


def test_e4_and_e5_are_authenticated_relays_e5_with_a_forged_outside_sender(
    stored: Engine,
) -> None:
    e4 = stored_by_queue_id(stored, "1xXwTs-00046i-39")
    e5 = stored_by_queue_id(stored, "1xXwTt-00046p-2X")
    for txn in (e4, e5):
        assert txn["sasl_user"] == "alice@example.test" and txn["internal"]
        assert txn["client_ip"] == "127.0.0.6"
        assert {_rcpt(txn, a) for a in txn["rcpts"]} == {("int→ext", "delivered", None)}
    assert set(e4["rcpts"]) == {"friend@external-c.example.net", "other@external-d.example.com"}
    assert e4["sender_local"] is True
    assert e5["sender"] == "ceo@bank.example.com" and e5["sender_local"] is False


def test_e7_a_failed_login_without_mail_is_no_transaction(stored: Engine) -> None:
    assert [t for t in stored_transactions(stored) if t["client_ip"] == "127.0.0.7"] == []


def test_e8_and_e9_inbound_mail_is_ext_to_int_e9_with_the_null_sender(stored: Engine) -> None:
    e8 = stored_by_queue_id(stored, "1xXwTw-000474-0I")
    e9 = stored_by_queue_id(stored, "1xXwTw-00047B-2t")
    assert _rcpt(e8, "bob@example.test") == ("ext→int", "delivered", None)
    assert _rcpt(e9, "postmaster@example.test") == ("ext→int", "delivered", None)
    assert e9["sender"] == "" and not e9["internal"]


def test_e10_an_unrouteable_local_address_is_not_a_relay_attempt(stored: Engine) -> None:
    [e10] = [t for t in stored_transactions(stored) if "nosuchuser@example.test" in t["rcpts"]]
    assert _rcpt(e10, "nosuchuser@example.test") == ("ext→int", "rejected", None)
    assert e10["rcpts"]["nosuchuser@example.test"]["reason"].endswith("Unrouteable address")


def test_e11_deferred_then_delivered_is_one_transaction_delivered(stored: Engine) -> None:
    e11 = stored_by_queue_id(stored, "1xXwTy-00047O-38")
    assert _rcpt(e11, "ops@external-e.example.net") == ("int→ext", "delivered", None)
    # <=, == (deferred), => after the queue run, Completed
    assert len(e11["line_offsets"].split(",")) == 4


def test_e12_a_remote_550_bounces_and_exims_own_bounce_is_a_local_submission(
    stored: Engine,
) -> None:
    e12 = stored_by_queue_id(stored, "1xXwU8-00047x-2i")
    assert _rcpt(e12, "nonexistent@external-f.example.net") == ("int→ext", "bounced", None)
    assert "550 5.1.1" in e12["rcpts"]["nonexistent@external-f.example.net"]["reason"]
    bounce = stored_by_queue_id(stored, "1xXwU8-000481-2v")
    assert bounce["local_submission"] and bounce["internal"] and bounce["client_ip"] is None
    assert bounce["sender"] == ""
    assert _rcpt(bounce, "cron@app01.example.test") == ("int→ext", "delivered", None)


def test_no_accepted_relay_and_only_the_two_probing_clients_offend(stored: Engine) -> None:
    txns = stored_transactions(stored)
    assert sum(t["accepted_relays"] for t in txns) == 0
    assert {t["client_ip"] for t in txns if t["refused_relays"]} == {"127.0.0.5", "::1"}
    # every message the log shows Completed is one transaction, with its queue id
    assert len([t for t in txns if t["queue_id"]]) == 9
