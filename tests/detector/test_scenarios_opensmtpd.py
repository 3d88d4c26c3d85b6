"""The real OpenSMTPD 6.8.0p2 scenarios (corpus PROVENANCE.txt: O1-O5) classified as the ground
truth says, through the whole pipeline into a real SQLite file, with that server's settings
(smtpd.conf: relay only from 127.0.0.1; any client may send to example.test).

Read from the log: O1 is session b8eb26d1e62e309f (127.0.0.1, message 3eb4bde5), O2 b8eb26d505414ceb
(127.0.0.5, one refused RCPT), O3 b8eb26d67252d516 (127.0.0.5: a refused RCPT, then message
4aa3e9cd to bob@example.test), O4 b8eb26d717067d89 ([::1], one refused RCPT), O5 b8eb26d8f6259c95
(127.0.0.1, message cdc20b86 that the sink refuses) and b8eb26d97350ad24, OpenSMTPD injecting the
bounce of cdc20b86 through its local socket, refused in turn."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from detector.ingest import resolve_format
from tests.conftest import corpus_path
from tests.corpus import ingest_log, stored_by_queue_id, stored_transactions

RUN = "generated-local-opensmtpd-6.8.0p2"
LOGS = ["mail.log.rfc3339", "mail.log.traditional"]
OPENSMTPD_NETWORK = 'internal_networks = ["127.0.0.1/32"]\nlocal_domains = ["example.test"]'


@pytest.fixture(params=LOGS)
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    log = corpus_path("opensmtpd", RUN, request.param)
    return ingest_log(tmp_path, log, OPENSMTPD_NETWORK, "opensmtpd")[0]


@pytest.mark.parametrize("log", LOGS)
def test_both_logs_are_recognised_as_opensmtpd(log: str) -> None:
    assert resolve_format(corpus_path("opensmtpd", RUN, log), "auto") == "opensmtpd"


def test_every_scenario_is_one_transaction_and_o3_and_o5_two(stored: Engine) -> None:
    txns = stored_transactions(stored)
    assert len(txns) == 7  # O1, O2, O3 (refusal + message), O4, O5 (message + bounce injection)
    assert sorted(t["queue_id"] or "" for t in txns) == sorted(
        ["3eb4bde5", "4aa3e9cd", "cdc20b86", "", "", "", ""]
    )


def test_o1_relay_from_the_trusted_network_is_not_a_relay_attempt(stored: Engine) -> None:
    o1 = stored_by_queue_id(stored, "3eb4bde5")
    assert o1["internal"] and o1["client_ip"] == "127.0.0.1"
    assert o1["sender"] == "sender@external-a.example.com"
    rcpt = o1["rcpts"]["victim@external-b.example.org"]
    assert (rcpt["direction"], rcpt["outcome"], rcpt["relay_attempt"], rcpt["agent"]) == (
        "int→ext", "delivered", None, "smtp")  # fmt: skip
    assert o1["accepted_relays"] == 0 and o1["refused_relays"] == 0


def test_refused_relays_are_o2_o3_and_o4_from_ipv6(stored: Engine) -> None:
    refused = sorted(
        (t["client_ip"], address)
        for t in stored_transactions(stored)
        for address, r in t["rcpts"].items()
        if r["relay_attempt"] == "refused"
    )
    assert refused == sorted([
        ("127.0.0.5", "spameri@tiscali.example"),  # O2
        ("127.0.0.5", "victim@external-b.example.org"),  # O3
        ("::1", "victim@external-b.example.org"),  # O4: address=[::1] host=<unknown>
    ])  # fmt: skip
    for t in stored_transactions(stored):
        for r in t["rcpts"].values():
            if r["relay_attempt"] == "refused":
                assert (r["direction"], r["outcome"], r["code"]) == ("ext→ext", "rejected", 550)
                assert r["reason"] == f"Invalid recipient: <{r['address']}>"
                assert not t["internal"] and t["sender"] is None  # OpenSMTPD logs no MAIL FROM


def test_o4_names_its_ipv6_client_without_a_reverse_name(stored: Engine) -> None:
    [o4] = [t for t in stored_transactions(stored) if t["client_ip"] == "::1"]
    assert o4["client_name"] == "unknown" and o4["refused_relays"] == 1


def test_o3_mixes_a_refused_relay_with_an_accepted_local_delivery(stored: Engine) -> None:
    o3 = stored_by_queue_id(stored, "4aa3e9cd")
    assert (o3["client_ip"], o3["client_name"]) == ("127.0.0.5", "relayspam.example.net")
    assert not o3["internal"] and o3["sender"] == "outsider@external-a.example.com"
    bob = o3["rcpts"]["bob@example.test"]
    assert (bob["direction"], bob["outcome"], bob["relay_attempt"]) == (
        "ext→int", "delivered", None)  # fmt: skip
    # the refused RCPT came first in the same session: its own transaction, same client
    [refusal] = [
        t
        for t in stored_transactions(stored)
        if "victim@external-b.example.org" in t["rcpts"] and t["client_ip"] == "127.0.0.5"
    ]
    assert int(refusal["line_offsets"]) < int(o3["line_offsets"].split(",")[0])
    assert refusal["client_name"] == "relayspam.example.net"


def test_o5_relay_that_the_sink_refuses_bounces_and_its_bounce_is_no_relay_attempt(
    stored: Engine,
) -> None:
    o5 = stored_by_queue_id(stored, "cdc20b86")
    assert o5["internal"] and o5["client_ip"] == "127.0.0.1"
    rcpt = o5["rcpts"]["nonexistent@external-f.example.net"]
    assert (rcpt["direction"], rcpt["outcome"], rcpt["relay_attempt"]) == (
        "int→ext", "bounced", None)  # fmt: skip
    assert rcpt["reason"].startswith("550 5.1.1 <nonexistent@external-f.example.net>")
    # OpenSMTPD injects the bounce to cron@app01.example.test through its local socket and
    # refuses it ("Invalid recipient"): no outside client asked for anything
    [bounce] = [t for t in stored_transactions(stored) if "cron@app01.example.test" in t["rcpts"]]
    assert bounce["client_ip"] is None and bounce["client_name"] == "vm"
    refused = bounce["rcpts"]["cron@app01.example.test"]
    assert (refused["outcome"], refused["relay_attempt"]) == ("rejected", None)
    assert bounce["refused_relays"] == 0 and bounce["accepted_relays"] == 0


def test_no_accepted_relay_and_only_the_two_probing_clients_offend(stored: Engine) -> None:
    txns = stored_transactions(stored)
    assert sum(t["accepted_relays"] for t in txns) == 0
    assert {t["client_ip"] for t in txns if t["refused_relays"]} == {"127.0.0.5", "::1"}
