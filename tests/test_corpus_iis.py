"""IIS SMTP and Exchange 5.5 IMS logs of ../shared/corpus read whole, and relay scenarios of
both families through the whole pipeline into a real SQLite file.

Corpus lines are taken as published, with two repairs, each said where it is made: the
hinshelwood blog's ``&lt;``/``&gt;`` are its HTML's, a real file has ``<``/``>``; the KB articles
indent their log excerpts with a tab and put blank lines between commands, which a real log has
not.  KB and forum prose is left out by taking only the excerpt, from its first timestamped line
to its last.  No corpus file is a whole IIS or IMS log with a relay refusal in it (PROVENANCE.txt),
so the pipeline scenarios read logs written here, after the corpus lines.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from detector.config import load_settings
from detector.correlate import Correlator
from detector.ingest import Pipeline
from detector.store.models import RecipientRow, TransactionRow
from detector.store.session import open_database
from detector.transactions import Outcome, Transaction
from parsers import detect_format
from parsers.events import NOT_LOGGED, Kind
from parsers.exchange55 import ImsParser
from parsers.iis import IisW3cParser
from tests.conftest import corpus_path

IMS_STAMP = re.compile(r"\d{1,2}/\d{1,2}/\d{2,4} \d{1,2}:\d\d:\d\d")


def _ossec_blocks() -> tuple[list[str], list[str]]:
    """The W3C and the NCSA code blocks of ossec-docs' exchange2000.rst, unindented."""
    text = corpus_path("iis_smtp", "ossec-docs", "exchange2000.rst").read_text()
    blocks: list[list[str]] = []
    for raw in text.splitlines():
        if raw.startswith(".. code-block::"):
            blocks.append([])
        elif blocks and raw.startswith("  ") and raw.strip():
            blocks[-1].append(raw[2:])
    w3c, ncsa = blocks
    return w3c, ncsa


def _hinshelwood() -> list[str]:
    path = corpus_path("iis_smtp", "hinshelwood-blog-2010", "iis7_smtpsvc1_w3c_excerpt.log")
    return path.read_text().replace("&lt;", "<").replace("&gt;", ">").splitlines()


def _ims_excerpt(*parts: str) -> list[str]:
    """The log lines of a KB article or page: its first to its last timestamped line, without
    the tab that indents them and the blank lines between them."""
    lines = [
        raw.removeprefix("\t").rstrip() for raw in corpus_path(*parts).read_text().splitlines()
    ]
    stamped = [n for n, line in enumerate(lines) if IMS_STAMP.match(line)]
    return [line for line in lines[stamped[0] : stamped[-1] + 1] if line]


IMS_EXCERPTS = {
    "Q262945": ("exchange55", "kbarchive", "kb", "262", "Q262945", "README.md"),
    "Q295725": ("exchange55", "kbarchive", "kb", "295", "Q295725", "README.md"),
    "fphkb": ("exchange55", "fphkb-ims-smtp-log", "ims_smtp_protocol_log_example.txt"),
}


def test_exchange2000_w3c_rows_all_parse_with_their_clients() -> None:
    w3c, _ = _ossec_blocks()
    parser = IisW3cParser()
    events = [(line, parser.parse(line)) for line in w3c]
    assert [line for line, event in events if event is None] == []
    rows = [(line, e) for line, e in events if e is not None and e.kind != Kind.HEADER]
    assert len(rows) == 37 and len(events) - len(rows) == 4
    for line, event in rows:
        assert event.client_ip == line.split(" ")[2]
    masked = [e for _, e in rows if e.stage == "XXXX"]
    assert len(masked) == 5 and {e.code for e in masked} == {500}


def test_exchange2000_ncsa_lines_all_parse() -> None:
    _, ncsa = _ossec_blocks()
    parser = IisW3cParser()
    events = [(line, parser.parse(line)) for line in ncsa]
    assert [line for line, event in events if event is None] == []
    outbound = [e for line, e in events if e is not None and "OutboundConnection" in line]
    assert len(outbound) == 12
    assert all(e.kind == Kind.CLIENT_NOTE and e.client_ip is None for e in outbound)
    assert {e.relay for e in outbound} == {"205.188.158.121"}


def test_iis7_rows_with_outbound_delivery_all_parse() -> None:
    parser = IisW3cParser()
    events = [(line, parser.parse(line)) for line in _hinshelwood()]
    assert [line for line, event in events if event is None] == []
    inbound = [e for _, e in events if e is not None and e.kind == Kind.COMMAND]
    assert [(e.stage, e.client_ip) for e in inbound] == [
        ("EHLO", "127.0.0.1"), ("MAIL", "127.0.0.1"), ("RCPT", "127.0.0.1"), ("DATA", "127.0.0.1")
    ]  # fmt: skip
    assert inbound[2].recipient == "martin@hinshelwood.com"
    notes = [e for _, e in events if e is not None and e.kind == Kind.CLIENT_NOTE]
    assert len(notes) == 17 and all(e.relay in ("216.146.33.4", "216.146.33.3") for e in notes)
    refused = [e for e in notes if e.code == 504]
    assert [e.reason for e in refused] == [
        "5.5.2 <MYHOST-MYSERVER>: Helo command rejected: need fully-qualified hostname"
    ]


@pytest.mark.parametrize("name", list(IMS_EXCERPTS))
def test_ims_protocol_log_excerpts_all_parse(name: str) -> None:
    lines = _ims_excerpt(*IMS_EXCERPTS[name])
    parser = ImsParser()
    assert [line for line in lines if parser.parse(line) is None] == []


def test_the_q262945_session_is_one_authenticated_transaction_refused_after_data() -> None:
    parser, correlator, out = ImsParser(), Correlator("mx1"), list[Transaction]()
    for number, line in enumerate(_ims_excerpt(*IMS_EXCERPTS["Q262945"])):
        event = parser.parse(line)
        if event is not None:
            correlator.feed(event, number, line, out)
    correlator.flush(out)
    [txn] = out
    assert (txn.client_ip, txn.client_name, txn.helo, txn.sasl_user, txn.sender) == (
        None, "SERVER1", "server1.COMPANY1.COM", NOT_LOGGED, "JohnD@COMPANY1.com")  # fmt: skip
    assert [(r.address, r.outcome) for r in txn.recipients] == [
        ("janed@company2.com", Outcome.QUEUED)
    ]
    assert txn.reject_reason == "Mailbox is not local: JohnD@COMPANY1.com"


def test_corpus_logs_are_detected_as_their_family() -> None:
    w3c, ncsa = _ossec_blocks()
    detected = detect_format(w3c)
    assert detected is not None and detected.family == "iis-w3c"
    assert "header" in detected.reason
    for lines in (ncsa, _hinshelwood()):
        detected = detect_format(lines)
        assert detected is not None and detected.family == "iis-w3c"
    detected = detect_format(_ims_excerpt(*IMS_EXCERPTS["Q262945"]))
    assert detected is not None and detected.family == "ims"


# -- relay scenarios through the pipeline ---------------------------------------------------

CONFIG = """
[network]
internal_networks = ["10.0.0.0/8"]
local_domains = ["example.test"]
[database]
url = "sqlite:///{db}"
"""

IIS_HEADER = """\
#Software: Microsoft Internet Information Services 6.0
#Version: 1.0
#Date: 2026-11-30 08:00:00
#Fields: date time c-ip cs-username s-sitename s-computername s-ip s-port cs-method cs-uri-stem \
cs-uri-query sc-status sc-win32-status sc-bytes cs-bytes time-taken cs-version cs-host \
cs(User-Agent) cs(Cookie) cs(Referer)
"""
IIS_COMMANDS = """\
203.0.113.9 spambot HELO +spambot 250
203.0.113.9 spambot MAIL +FROM:<s@forged.example> 250
203.0.113.9 spambot RCPT +TO:<victim@outside.example> 550
203.0.113.9 spambot QUIT spambot 240
203.0.113.20 openrelay HELO +openrelay 250
203.0.113.20 openrelay MAIL +FROM:<s@forged.example> 250
203.0.113.20 openrelay RCPT +TO:<far@outside.example> 250
203.0.113.20 openrelay DATA +<1@forged.example> 250
203.0.113.20 openrelay QUIT openrelay 240
198.51.100.30 laptop EHLO +laptop 250
198.51.100.30 laptop AUTH +LOGIN 235
198.51.100.30 laptop MAIL +FROM:<alice@example.test> 250
198.51.100.30 laptop RCPT +TO:<friend@outside.example> 250
198.51.100.30 laptop DATA +<2@example.test> 250
198.51.100.30 laptop QUIT laptop 240
198.51.100.40 mx.example.org HELO +mx.example.org 250
198.51.100.40 mx.example.org MAIL +FROM:<news@example.org> 250
198.51.100.40 mx.example.org RCPT +TO:<nosuch@example.test> 550
198.51.100.40 mx.example.org QUIT mx.example.org 240
198.51.100.30 laptop EHLO +laptop 250
198.51.100.30 laptop MAIL +FROM:<alice@example.test> 250
198.51.100.30 laptop RCPT +TO:<later@outside.example> 250
198.51.100.30 laptop DATA +<3@example.test> 250
198.51.100.30 laptop QUIT laptop 240
"""
"""Client, HELO name, verb, argument, reply code: a refused relay, an accepted relay, a relay
after AUTH, a local user refused, and the AUTH client again without AUTH (its AUTH ended with
its session)."""


def _iis_log() -> str:
    rows = []
    for second, command in enumerate(IIS_COMMANDS.splitlines()):
        client, helo, verb, argument, code = command.split(" ")
        rows.append(
            f"2026-11-30 08:00:{second:02d} {client} {helo} SMTPSVC1 MX1 192.0.2.25 0 {verb} - "
            f"{argument} {code} 0 40 30 0 SMTP - - - -"
        )
    return IIS_HEADER + "\n".join(rows) + "\n"


IMS_LOG = """\
11/30/26 8:00:00 AM : A connection was accepted from 203.0.113.9.
11/30/26 8:00:00 AM : <<< HELO spambot
11/30/26 8:00:00 AM : >>> 250 OK
11/30/26 8:00:01 AM : <<< MAIL FROM:<s@forged.example>
11/30/26 8:00:01 AM : >>> 250 OK - mail from <s@forged.example>
11/30/26 8:00:01 AM : <<< RCPT TO:<victim@outside.example>
11/30/26 8:00:01 AM : >>> 550 5.7.1 Relaying prohibited
11/30/26 8:00:02 AM : <<< RCPT TO:<bob@example.test>
11/30/26 8:00:02 AM : >>> 250 OK - Recipient <bob@example.test>
11/30/26 8:00:02 AM : <<< QUIT
11/30/26 8:00:02 AM : >>> 221 closing connection
"""


def _ingest(tmp_path: Path, text: str, log_format: str) -> Engine:
    log = tmp_path / "smtp.log"
    log.write_text(text)
    config = tmp_path / "relaywatch.toml"
    config.write_text(CONFIG.format(db=tmp_path / "rw.db"))
    settings = load_settings(config, environ={})
    engine = open_database(settings.database.url)
    Pipeline(settings, engine).ingest_file(log, host="mx1", log_format=log_format)
    return engine


def _recipients(engine: Engine) -> list[dict[str, Any]]:
    """Every stored recipient, with the transaction it belongs to."""
    with engine.connect() as connection:
        txns = {t["id"]: t for t in connection.execute(select(TransactionRow.__table__)).mappings()}
        rcpts = connection.execute(select(RecipientRow.__table__)).mappings().all()
    return [{**r, "txn": txns[r["transaction_id"]]} for r in rcpts]


def _attempts(recipients: list[dict[str, Any]], kind: str) -> list[tuple[str, str]]:
    return sorted((r["client_ip"], r["address"]) for r in recipients if r["relay_attempt"] == kind)


def test_iis_relay_scenarios_are_classified_through_the_pipeline(tmp_path: Path) -> None:
    recipients = _recipients(_ingest(tmp_path, _iis_log(), "iis-w3c"))
    assert _attempts(recipients, "refused") == [("203.0.113.9", "victim@outside.example")]
    assert _attempts(recipients, "accepted") == [
        ("198.51.100.30", "later@outside.example"),  # no AUTH in this session
        ("203.0.113.20", "far@outside.example"),
    ]
    by_address = {r["address"]: r for r in recipients}
    friend = by_address["friend@outside.example"]  # relayed after AUTH 235: not an attempt
    assert friend["relay_attempt"] is None and friend["direction"] == "int→ext"
    assert friend["txn"]["sasl_user"] == NOT_LOGGED and friend["txn"]["internal"]
    nosuch = by_address["nosuch@example.test"]  # a local domain refused: not an attempt
    assert (nosuch["relay_attempt"], nosuch["outcome"], nosuch["direction"], nosuch["code"]) == (
        None, "rejected", "ext→int", 550)  # fmt: skip
    victim = by_address["victim@outside.example"]
    assert (victim["txn"]["helo"], victim["txn"]["sender"]) == ("spambot", "s@forged.example")


def test_ims_relaying_prohibited_is_one_refused_relay_through_the_pipeline(
    tmp_path: Path,
) -> None:
    recipients = _recipients(_ingest(tmp_path, IMS_LOG, "ims"))
    assert _attempts(recipients, "refused") == [("203.0.113.9", "victim@outside.example")]
    assert _attempts(recipients, "accepted") == []
    [txn] = {r["txn"]["id"]: r["txn"] for r in recipients}.values()
    assert (txn["helo"], txn["sender"], txn["refused_relays"]) == ("spambot", "s@forged.example", 1)
    victim = next(r for r in recipients if r["address"] == "victim@outside.example")
    assert (victim["code"], victim["enhanced"], victim["reason"]) == (
        550, "5.7.1", "Relaying prohibited")  # fmt: skip
