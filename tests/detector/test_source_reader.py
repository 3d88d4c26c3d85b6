"""A followed source before its parser exists: the format it was given or detects, and the
files it refuses to follow, with the reason logged once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from detector.classify import Classifier
from detector.config import NetworkSettings, SourceSettings
from detector.ingest import SourceReader

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
