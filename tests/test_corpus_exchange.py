"""Exchange 2007–2019 logs of ../shared/corpus/exchange: the Elastic tracking log yields what
its expected file says, every row of the other excerpts is understood, and the Exchange 2013
session that ends in ``550 5.7.1 Unable to relay`` (Microsoft Q&A 179653) is one refused relay
through the whole pipeline into a real SQLite file, in UTF-8 and in UTF-16 alike."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from detector.config import load_settings
from detector.ingest import Pipeline, choose_format
from detector.store.models import RecipientRow, TransactionRow
from detector.store.session import open_database
from parsers.events import Event, Kind
from parsers.exchange_smtp import FIELDS, ExchangeSmtpParser
from parsers.exchange_tracking import ExchangeTrackingParser
from tests.conftest import corpus_path

CONFIG = """
[network]
internal_networks = ["10.0.0.0/8"]
local_domains = ["domain.com", "my.domain.com"]
[database]
url = "sqlite:///{db}"
"""

PROTOCOL_HEADER = [
    "#Software: Microsoft Exchange Server",
    "#Version: 15.0.0.0",
    "#Log-type: SMTP Receive Protocol Log",
    "#Date: 2020-11-27T09:34:39.143Z",
    "#Fields: " + ",".join(FIELDS),
]
"""What the forum post left out: the header every RECV*.LOG starts with (Exchange 2013 is
15.0)."""


def _lines(*parts: str) -> list[str]:
    return corpus_path("exchange", *parts).read_text(encoding="utf-8").splitlines()


def _ingest(tmp_path: Path, log: Path) -> Engine:
    config = tmp_path / "relaywatch.toml"
    config.write_text(CONFIG.format(db=tmp_path / "rw.db"))
    settings = load_settings(config, environ={})
    engine = open_database(settings.database.url)
    summary = Pipeline(settings, engine).ingest_file(log, host="ex2013", log_format="auto")
    assert summary.unparsed == 0
    return engine


def _stored(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        txns = connection.execute(select(TransactionRow.__table__)).mappings().all()
        rcpts = connection.execute(select(RecipientRow.__table__)).mappings().all()
    return [
        {**t, "rcpts": [dict(r) for r in rcpts if r["transaction_id"] == t["id"]]} for t in txns
    ]


# -- the Elastic message tracking log and its expected file ------------------------------------


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_the_elastic_tracking_log_yields_what_its_expected_file_says() -> None:
    lines = _lines("elastic-integrations", "test-messagetracking.log")
    oracle = json.loads(
        corpus_path(
            "exchange", "elastic-integrations", "test-messagetracking.log-expected.EXCERPT.json"
        ).read_text()
    )["expected"]
    parser = ExchangeTrackingParser()  # the file has no header: 30 columns are 2013+'s
    events = [parser.parse(line) for line in lines]
    assert [line for line, event in zip(lines, events, strict=True) if event is None] == []
    assert len(oracle) == 3  # the excerpt covers the first three rows
    for event, expected in zip(events, oracle, strict=False):
        assert event is not None
        exchange = expected["microsoft"]["exchange"]
        assert event.time == _epoch(expected["@timestamp"])
        assert event.queue_id == exchange["internalmessageid"]
        assert event.message_id == exchange["messageid"].strip("<>")
        if exchange["eventid"] != "RECEIVE":
            assert (event.kind, event.reason) == (Kind.CLIENT_NOTE, exchange["eventid"])
            continue
        # Elastic's client is the FrontEnd (client-ip); the client behind it is original-client-ip
        assert expected["client"]["ip"] == exchange["clientip"] == "10.11.12.14"
        assert event.kind == Kind.QUEUED
        assert event.client_ip == exchange["originalclientip"] != exchange["clientip"]
        assert event.sender == exchange["returnpath"]
        assert list(event.recipients or ()) == exchange["recipientaddress"]
        assert list(event.recipients or ()) == expected["email"]["to"]["address"]
        assert (event.size, event.nrcpt) == (exchange["totalbytes"], exchange["recipientcount"])
    send, send_external, notify = events[3:]
    assert send is not None and (send.kind, send.status, send.relay) == (
        Kind.DELIVERY, "sent", "exchange.example.com[192.168.0.2]")  # fmt: skip
    assert send_external is not None and send_external.recipients == ("email@email.com",)
    assert notify is not None and (notify.kind, notify.queue_id) == (Kind.CLIENT_NOTE, None)


def test_the_elastic_tracking_log_is_detected_and_stored_with_its_real_clients(
    tmp_path: Path,
) -> None:
    log = corpus_path("exchange", "elastic-integrations", "test-messagetracking.log")
    assert choose_format(log, "auto").family == "exchange-tracking"
    stored = {t["queue_id"]: t for t in _stored(_ingest(tmp_path, log))}
    for queue_id, client, sender in (
        ("70912345566403", "10.11.12.13", "root@host01.my.domain.com"),
        ("70912345566407", "10.11.12.15", "root@pve-vhost01.my.domain.com"),
    ):
        txn = stored[queue_id]
        assert (txn["client_ip"], txn["sender"], txn["internal"]) == (client, sender, True)
        assert [r["address"] for r in txn["rcpts"]] == ["mailuser@my.domain.com"]


# -- excerpts of real logs: every row understood ----------------------------------------------


@pytest.mark.parametrize(
    ("parts", "factory"),
    [
        (("dfir-doc-id7199878465", "MSGTRKMS2022091915-1.LOG.excerpt"), ExchangeTrackingParser),
        (("dfir-doc-id7199878465", "RECV2023011116-1.LOG.excerpt"), ExchangeSmtpParser),
        (("elastic-integrations", "SmtpRecive.log"), ExchangeSmtpParser),
        (
            ("ps-script-comment-id53905250015", "exchange2010_smtpreceive_header.txt"),
            ExchangeSmtpParser,
        ),
    ],
    ids=lambda v: v[-1] if isinstance(v, tuple) else "",
)
def test_every_line_of_the_real_excerpts_is_understood(
    parts: tuple[str, str], factory: type[ExchangeSmtpParser | ExchangeTrackingParser]
) -> None:
    parser = factory()
    events = [(line, parser.parse(line)) for line in _lines(*parts)]
    assert [line for line, event in events if event is None] == []
    for line, event in events:
        assert event is not None
        if event.kind != Kind.HEADER and factory is ExchangeSmtpParser:  # the remote endpoint
            remote = next(csv.reader([line]))[5]
            assert event.client_ip == remote.rpartition(":")[0].strip("[]")


def test_the_dfir_sessions_failed_login_leaves_it_unauthenticated() -> None:
    parser = ExchangeSmtpParser()
    lines = _lines("dfir-doc-id7199878465", "RECV2023011116-1.LOG.excerpt")
    events = [parser.parse(line) for line in lines]
    kinds = [e.kind for e in events if e is not None]
    assert Kind.AUTH not in kinds and kinds.count(Kind.AUTH_FAILED) == 2
    # the name it tried to log in as: a note, not a login
    named = [(e.kind, e.sasl_user) for e in events if e is not None and e.sasl_user]
    assert named == [(Kind.CLIENT_NOTE, "username@domain.com")]
    challenges = [e for e in events if e is not None and (e.reason or "").startswith("334")]
    assert [e.kind for e in challenges] == [Kind.CLIENT_NOTE]


def test_elastics_protocol_log_messages_are_read_without_their_header() -> None:
    path = corpus_path("exchange", "elastic-integrations", "test-smtp.json")
    messages = json.loads(path.read_text())["events"]
    received = [m["message"] for m in messages if m["log"]["file"]["path"] == "SmtpRecive"]
    parser = ExchangeSmtpParser()
    events: list[Event | None] = [parser.parse(line) for line in received]
    assert len(events) == 4 and all(e is not None for e in events)
    assert {(e.pid, e.client_ip) for e in events if e is not None} == {
        ("08DC1DB8591B229A", "10.11.12.14"), ("08DC1DB8591B229B", "10.11.12.14")}  # fmt: skip


# -- the Exchange 2013 session refused as a relay (Microsoft Q&A 179653) ------------------------


def _msqa_log() -> str:
    """The forum's lines as a RECV log: the header added, and the ``*`` of the first two lines,
    which the forum's formatting dropped (``,,`` for ``,*,``), put back.  The names the poster
    changed (three spellings of the connector) are left as posted."""
    lines = _lines("msqa-179653", "smtpreceive_550_5.7.1_unable_to_relay.txt")
    restored = []
    for number, line in enumerate(lines):
        row = next(csv.reader([line]))
        if number < 2:
            assert row[6] == "" and row[8] in ("Set Session Permissions", "receiving message")
            row[6] = "*"
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(row)
        restored.append(out.getvalue())
    return "\n".join([*PROTOCOL_HEADER, *restored]) + "\n"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_the_exchange_2013_unable_to_relay_session_is_one_refused_relay(
    tmp_path: Path, encoding: str
) -> None:
    log = tmp_path / "RECV2020112709-1.LOG"
    log.write_bytes(_msqa_log().encode(encoding))  # utf-8-sig and utf-16 begin with a BOM
    assert choose_format(log, "auto").family == "exchange-smtp"
    [txn] = _stored(_ingest(tmp_path, log))
    assert (txn["client_ip"], txn["internal"], txn["refused_relays"]) == ("40.107.19.96", False, 1)
    [rcpt] = txn["rcpts"]
    assert (rcpt["address"], rcpt["outcome"], rcpt["relay_attempt"]) == (
        "user@keyman  .com", "rejected", "refused")  # fmt: skip


def test_a_utf16_tracking_log_is_decoded_and_read(tmp_path: Path) -> None:
    excerpt = corpus_path("exchange", "dfir-doc-id7199878465", "MSGTRKMS2022091915-1.LOG.excerpt")
    log = tmp_path / "MSGTRKMS2022091915-1.LOG"
    log.write_bytes(excerpt.read_text(encoding="utf-8").encode("utf-16"))
    assert choose_format(log, "auto").family == "exchange-tracking"
    [txn] = _stored(_ingest(tmp_path, log))
    assert (txn["queue_id"], txn["local_submission"], txn["sender"]) == (
        "438", True, "user.name1@domain.com")  # fmt: skip
    assert [r["address"] for r in txn["rcpts"]] == ["user.name4@gmail.com"]
