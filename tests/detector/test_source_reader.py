"""A followed source before its parser exists: the format it was given or detects, and the
files it refuses to follow, with the reason logged once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from detector.classify import Classifier
from detector.config import NetworkSettings, SourceSettings, load_settings
from detector.ingest import LiveBatch, Pipeline, SourceReader
from detector.store.positions import load_position
from detector.store.session import open_database

CONNECT = "2026-11-30T08:00:00+00:00 mx1 postfix/smtpd[1]: connect from a.example[192.0.2.1]\n"


def reader(path: Path, log_format: str = "auto") -> SourceReader:
    source = SourceSettings(path=path, format=log_format, host="mx1")
    return SourceReader(source, Classifier(NetworkSettings()))


@pytest.mark.parametrize("log_format", ["auto", "postfix"])
def test_a_utf16_log_is_refused_with_a_clear_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, log_format: str
) -> None:
    path = tmp_path / "mail.log"
    path.write_bytes(("\ufeff" + CONNECT).encode("utf-16-le"))
    source = reader(path, log_format)
    with caplog.at_level(logging.ERROR):
        assert source.read() is None
        assert source.read() is None
    assert source.error is not None and "is UTF-16 text" in source.error
    assert [r.getMessage() for r in caplog.records] == [source.error]  # said once


def test_a_log_that_does_not_exist_yet_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    source = reader(path)
    assert source.read() is None and source.error is None
    path.write_text(CONNECT)
    try:
        batch = source.read()
    finally:
        source.close()
    assert batch is not None and batch.parsed == 1 and source.family == "postfix"


W3C_HEADER = [
    "#Software: Microsoft Internet Information Services 5.0",
    "#Version: 1.0",
    "#Date: 2026-11-30 08:00:00",
    "#Fields: date time c-ip cs-username s-sitename s-computername s-ip s-port cs-method "
    "cs-uri-stem cs-uri-query sc-status sc-win32-status sc-bytes cs-bytes time-taken cs-version "
    "cs-host cs(User-Agent) cs(Cookie) cs(Referer)",
]


def w3c_row(second: int, verb: str, query: str, code: int) -> str:
    return (
        f"2026-11-30 08:00:{second:02d} 203.0.113.9 spambot SMTPSVC1 MX1 192.0.2.25 0 {verb} - "
        f"{query} {code} 0 40 37 0 SMTP - - - -"
    )


def test_a_restart_in_the_middle_of_a_w3c_log_keeps_its_columns_and_open_session(
    tmp_path: Path,
) -> None:
    log = tmp_path / "ex261130.log"
    config = tmp_path / "relaywatch.toml"
    config.write_text(
        f'[network]\nlocal_domains = ["example.test"]\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "rw.db"}"\n'
        f'[[sources]]\npath = "{log}"\nhost = "mx1"\n'
    )
    settings = load_settings(config, environ={})
    engine = open_database(settings.database.url)
    pipeline = Pipeline(settings, engine)
    source = settings.sources[0]
    log.write_text(
        "\n".join([*W3C_HEADER, w3c_row(1, "HELO", "+spambot", 250),
                   w3c_row(1, "MAIL", "+FROM:<spam@forged.example>", 250)]) + "\n"
    )  # fmt: skip
    try:
        first = SourceReader(source, pipeline.classifier)
        batch = first.read()
        assert batch is not None and batch.checkpoint is not None and batch.transactions == []
        commit(pipeline, first, first.last_batch(batch))
        first.close()
        with log.open("a") as handle:  # the daemon was down while IIS went on writing
            handle.write(w3c_row(2, "RCPT", "+TO:<victim@outside.example>", 550) + "\n")
            handle.write(w3c_row(2, "QUIT", "spambot", 240) + "\n")
        with engine.connect() as connection:
            saved = load_position(connection, "mx1", str(log))
        assert saved is not None
        second = SourceReader(source, pipeline.classifier, saved)
        batch = second.read()
        second.close()
        assert batch is not None
        [txn] = batch.transactions
        assert (txn.client_ip, txn.helo, txn.sender) == (
            "203.0.113.9", "spambot", "spam@forged.example")  # fmt: skip
        assert [(r.address, r.relay_attempt) for r in txn.recipients] == [
            ("victim@outside.example", "refused")]  # fmt: skip
    finally:
        engine.dispose()


def commit(pipeline: Pipeline, reader: SourceReader, batch: LiveBatch | None) -> None:
    assert batch is not None
    with pipeline.engine.begin() as connection:
        pipeline.commit(connection, reader, batch)
