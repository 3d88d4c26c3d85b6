"""The real sendmail 8.17.1.9 runs (corpus PROVENANCE.txt: runs 1-3) classified as the ground
truth says, through the whole pipeline into a real SQLite file, with the settings the admin of
that server would write: research.mc and access relay for 127.0.0.1 (``Connect:127.0.0.1
RELAY``), and sendmail relays for its own interface addresses too, so ``::1`` (run 2) is the
host itself; example.test is the mail domain.

Read from the log: run 1 is 08:15:32-08:15:37 (every MAIL FROM refused by check_mail, one
client authenticated, one AUTH failure), run 2 08:16:51-08:16:57, run 3 08:18:17-08:18:19 with
M11 = 6AU8IHJ1017525 (its client: localhost [127.0.0.1]), M12 = 6AU8IIbH017531, M13 =
6AU8IJWn017536, M14 = 6AU8IJrZ017542."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from detector.ingest import Pipeline, resolve_format
from tests.conftest import corpus_path
from tests.corpus import ingest_log, stored_transactions

RUN = "generated-local-sendmail-8.17.1.9"
LOGS = ["mail.log.rfc3339", "mail.log.traditional"]
ADMIN_NETWORKS = '["127.0.0.1/32", "::1/128"]'
RUN_1 = {  # queue id: (client, sender) of every MAIL FROM check_mail refused
    "6AU8FWcd017332": ("127.0.0.1", "sender@external-a.example.com"),
    "6AU8FXA1017336": ("127.0.0.5", "spameri@tiscali.example"),
    "6AU8FY5M017340": ("127.0.0.5", "outsider@external-a.example.com"),
    "6AU8FYbF017344": ("127.0.0.6", "alice@example.test"),
    "6AU8FZB3017348": ("::1", "spammer@external-a.example.com"),
    "6AU8Fahq017356": ("127.0.0.5", "newsletter@external-a.example.com"),
    "6AU8FbrJ017360": ("127.0.0.5", "x@external-a.example.com"),
    "6AU8FbCX017364": ("127.0.0.1", "cron@app01.example.test"),
}


def _ingest(tmp_path: Path, log: str, networks: str = ADMIN_NETWORKS) -> tuple[Engine, Pipeline]:
    network = f'internal_networks = {networks}\nlocal_domains = ["example.test"]'
    return ingest_log(tmp_path, corpus_path("sendmail", RUN, log), network, "sendmail")


@pytest.fixture(params=LOGS)
def ingested(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Engine, Pipeline]:
    return _ingest(tmp_path, request.param)


@pytest.fixture
def stored(ingested: tuple[Engine, Pipeline]) -> Engine:
    return ingested[0]


def _message(engine: Engine, queue_id: str) -> dict[str, Any]:
    """The transaction of the SMTP message ``queue_id`` (the one that knows its client)."""
    [txn] = [
        t
        for t in stored_transactions(engine)
        if t["queue_id"] == queue_id and t["client_ip"] is not None
    ]
    return txn


def _rcpt(txn: dict[str, Any], address: str) -> tuple[object, ...]:
    r = txn["rcpts"][address]
    return r["direction"], r["outcome"], r["relay_attempt"]


@pytest.mark.parametrize("log", LOGS)
def test_both_logs_are_recognised_as_sendmail(log: str) -> None:
    assert resolve_format(corpus_path("sendmail", RUN, log), "auto") == "sendmail"


def test_run_1_check_mail_refusals_are_transactions_but_not_relay_attempts(stored: Engine) -> None:
    for queue_id, (client, sender) in RUN_1.items():
        txn = _message(stored, queue_id)
        assert (txn["client_ip"], txn["sender"]) == (client, sender), queue_id
        assert txn["reject_reason"] == (
            f"<{sender}>... Domain of sender address {sender} does not exist"
        )
        assert txn["rcpts"] == {} and txn["refused_relays"] == txn["accepted_relays"] == 0
    # the AUTH=server line of the session is the message's: alice is one of ours
    alice = _message(stored, "6AU8FYbF017344")
    assert alice["sasl_user"] == "alice@example.test" and alice["internal"]
    assert _message(stored, "6AU8FXA1017336")["sasl_user"] is None


def test_run_2_relaying_denied_is_a_refused_relay_even_for_our_own_domain(
    ingested: tuple[Engine, Pipeline],
) -> None:
    engine, pipeline = ingested
    refused = {
        (t["queue_id"], address)
        for t in stored_transactions(engine)
        for address, r in t["rcpts"].items()
        if r["relay_attempt"] == "refused"
    }
    assert refused == {
        ("6AU8GqnN017418", "spameri@tiscali.example"),
        ("6AU8GqXo017422", "bob@example.test"),  # local-host-names was not loaded (PROVENANCE)
        ("6AU8GqXo017422", "victim@external-b.example.org"),
        ("6AU8GtlI017444", "bob@example.test"),
        ("6AU8Gtxx017448", "nosuchuser@example.test"),
        ("6AU8GuiS017458", "postmaster@example.test"),
        ("6AU8IIbH017531", "victim@external-b.example.org"),  # run 3, M12
    }
    for queue_id, _ in refused:
        txn = _message(engine, queue_id)
        assert txn["client_ip"] == "127.0.0.5" and not txn["internal"]
        assert {r["outcome"] for r in txn["rcpts"].values()} <= {"rejected", "delivered"}
    # the server refused example.test as a relay: a disagreement with the settings to report
    assert pipeline.classifier.mismatches["example.test"] == 4


def test_run_2_relays_of_the_host_itself_and_of_alice_are_not_relay_attempts(
    stored: Engine,
) -> None:
    for queue_id, client, recipients in [
        ("6AU8GprE017412", "127.0.0.1", ["victim@external-b.example.org"]),
        ("6AU8GrGv017426", "127.0.0.6", ["friend@external-c.example.net",
                                         "other@external-d.example.com"]),
        ("6AU8GsIs017432", "127.0.0.6", ["victim@external-b.example.org"]),
        ("6AU8Gs2i017438", "::1", ["victim@external-b.example.org"]),
        ("6AU8Gu8H017452", "127.0.0.1", ["nonexistent@external-f.example.net"]),
    ]:  # fmt: skip
        txn = _message(stored, queue_id)
        assert txn["client_ip"] == client and txn["internal"], queue_id
        assert sorted(txn["rcpts"]) == recipients
        for address in recipients:  # mailer=esmtp, Host unknown
            assert _rcpt(txn, address) == ("int→ext", "bounced", None)
    assert _message(stored, "6AU8GsIs017432")["sender"] == "ceo@bank.example.com"


def test_the_relay_of_1_is_an_accepted_relay_when_1_is_not_one_of_ours(tmp_path: Path) -> None:
    engine, _ = _ingest(tmp_path, "mail.log.rfc3339", networks='["127.0.0.1/32"]')
    [accepted] = [t for t in stored_transactions(engine) if t["accepted_relays"]]
    assert (accepted["queue_id"], accepted["client_ip"]) == ("6AU8Gs2i017438", "::1")
    assert _rcpt(accepted, "victim@external-b.example.org") == ("ext→ext", "bounced", "accepted")


def test_bounces_sendmail_queued_itself_are_local_submissions(stored: Engine) -> None:
    for queue_id in ("6AU8GprE017414", "6AU8GprF017414", "6AU8GrGv017428", "6AU8IJWn017538"):
        [txn] = [t for t in stored_transactions(stored) if t["queue_id"] == queue_id]
        assert txn["local_submission"] and txn["internal"], queue_id
        assert txn["refused_relays"] == txn["accepted_relays"] == 0
    dsn = next(t for t in stored_transactions(stored) if t["queue_id"] == "6AU8GprE017414")
    assert _rcpt(dsn, "sender@external-a.example.com") == ("int→ext", "bounced", None)


def test_m11_the_relay_sendmail_accepted_was_from_the_host_itself(stored: Engine) -> None:
    m11 = _message(stored, "6AU8IHJ1017525")
    assert (m11["client_ip"], m11["client_name"]) == ("127.0.0.1", "localhost")
    assert m11["internal"]
    assert _rcpt(m11, "victim@external-b.example.org") == ("int→ext", "delivered", None)
    assert m11["rcpts"]["victim@external-b.example.org"]["agent"] == "smtp"


def test_m12_keeps_the_refused_relay_and_the_accepted_local_delivery_in_one_transaction(
    stored: Engine,
) -> None:
    m12 = _message(stored, "6AU8IIbH017531")
    assert m12["sender"] == "outsider@external-a.example.com"
    assert _rcpt(m12, "victim@external-b.example.org") == ("ext→ext", "rejected", "refused")
    # bob@example.test is an alias of /dev/null: the delivery names the file
    assert _rcpt(m12, "/dev/null") == ("ext→int", "delivered", None)
    assert len(m12["line_offsets"].split(",")) == 3  # reject, from=, to=: over at nrcpts=1


def test_m13_two_recipients_on_one_to_line_are_both_recipients_of_the_message(
    stored: Engine,
) -> None:
    m13 = _message(stored, "6AU8IJWn017536")
    assert m13["sasl_user"] == "alice@example.test" and m13["internal"]
    assert m13["recipient_count"] == 2
    for address in ("nonexistent@external-d.example.com", "friend@external-c.example.net"):
        assert _rcpt(m13, address) == ("int→ext", "bounced", None)
        assert m13["rcpts"][address]["reason"] == "Service unavailable"
    # sendmail logs the return to alice under M13's id after M13 ended: a message of its own
    [returned] = [t for t in stored_transactions(stored)
                  if t["queue_id"] == "6AU8IJWn017536" and t["client_ip"] is None]  # fmt: skip
    assert list(returned["rcpts"]) == ["alice@example.test"]
    assert returned["refused_relays"] == returned["accepted_relays"] == 0


def test_m14_an_unknown_local_user_is_not_a_relay_attempt(stored: Engine) -> None:
    m14 = _message(stored, "6AU8IJrZ017542")
    assert m14["client_ip"] == "127.0.0.5" and m14["sender"] == "x@external-a.example.com"
    assert _rcpt(m14, "nosuchuser@example.test") == ("ext→int", "rejected", None)
    assert m14["rcpts"]["nosuchuser@example.test"]["reason"] == (
        "<nosuchuser@example.test>... User unknown"
    )


def test_no_relay_was_accepted_and_only_the_probing_client_offends(stored: Engine) -> None:
    txns = stored_transactions(stored)
    assert sum(t["accepted_relays"] for t in txns) == 0
    assert {t["client_ip"] for t in txns if t["refused_relays"]} == {"127.0.0.5"}
