"""The nightly report in the daemon: which days are due (missed nights, at most a week back, the
nights clocks change), built from the store, stored, mailed to a real SMTP server on 127.0.0.1,
a mailing that fails stored and retried an hour later, and the daemon doing it on its own."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, select

from detector.config import Settings, load_settings
from detector.daemon import Daemon
from detector.ingest import Pipeline
from detector.report.schedule import ReportScheduler, days_due, due_at
from detector.report.stored import Rendered, store_report
from detector.store.models import ReportRow
from detector.store.session import make_engine, open_database
from tests.factories import open_relay, probe, write_log
from tests.net import answers_200, free_port, get_json, wait_for
from tests.report.test_deliver import Inbox, smtp_server

__all__ = ["smtp_server"]  # the fixture, used here too

DAY = date(2026, 12, 1)
NIGHT = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # [report] at = "02:00" in UTC
EMPTY = Rendered("{}", "", "")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def report_config(write_config: Callable[..., Path], extra: str = "") -> Settings:
    return load_settings(
        write_config('[report]\ntimezone = "UTC"\nat = "02:00"\n' + extra), environ={}
    )


def stored_days(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(select(ReportRow.day).order_by(ReportRow.day)).scalars())


def store(engine: Engine, day: date, created_at: datetime) -> None:
    with engine.begin() as connection:
        store_report(connection, day.isoformat(), "", EMPTY, created_at)


def due(engine: Engine, now: datetime, at: str = "02:00", zone: Any = UTC) -> list[str]:
    with engine.connect() as connection:
        return [d.isoformat() for d in days_due(connection, now, at, zone)]


def test_the_days_due_are_the_missed_nights_of_the_last_week(engine: Engine) -> None:
    # nothing stored yet: the last day due only, once its time has come
    assert due(engine, NIGHT - timedelta(minutes=1)) == ["2026-11-30"]
    assert due(engine, NIGHT) == ["2026-12-01"]
    store(engine, DAY - timedelta(days=3), NIGHT - timedelta(days=2))  # built on 11-29's night
    assert due(engine, NIGHT) == ["2026-11-29", "2026-11-30", "2026-12-01"]
    store(engine, DAY, NIGHT + timedelta(seconds=5))
    assert due(engine, NIGHT + timedelta(hours=3)) == []
    # down for three weeks: the last seven days
    assert due(engine, NIGHT + timedelta(days=21)) == [
        (DAY + timedelta(days=n)).isoformat() for n in range(15, 22)
    ]


def test_a_report_stored_before_its_day_was_over_is_built_again(engine: Engine) -> None:
    store(engine, DAY - timedelta(days=1), NIGHT - timedelta(days=1) + timedelta(seconds=1))
    store(engine, DAY, NIGHT - timedelta(hours=12))  # 'relaywatch report --date today' at 14:00
    assert due(engine, NIGHT) == ["2026-12-01"]


def test_the_report_falls_due_at_the_local_time_also_when_clocks_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert due_at(date(2026, 12, 1), "02:00", berlin) == datetime(2026, 12, 2, 1, tzinfo=UTC)
    assert due_at(date(2026, 7, 1), "02:00", berlin) == datetime(2026, 7, 2, 0, tzinfo=UTC)
    # 2026-03-29 02:30 does not exist in Berlin: read with the offset before (03:30 CEST)
    assert due_at(date(2026, 3, 28), "02:30", berlin) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    # 2026-10-25 02:30 happens twice: the first one (CEST)
    assert due_at(date(2026, 10, 24), "02:30", berlin) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def abuse_log(tmp_path: Path, day: date) -> Path:
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    lines = [
        line
        for n in range(6)
        for line in probe(noon + timedelta(minutes=n), "203.0.113.7", f"v{n}@outside{n}.example",
                          pid=1000 + n)
    ]  # fmt: skip
    lines += open_relay(noon + timedelta(hours=1), "198.51.100.23", "4F2A1B3C9D")
    return write_log(tmp_path / "mail.log", lines)


def test_the_nightly_report_is_built_stored_and_mailed(
    tmp_path: Path, write_config: Callable[..., Path], smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    settings = report_config(
        write_config,
        f'mail_to = ["postmaster@example.test"]\nmail_from = "relaywatch@mx1.example.test"\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {port}\n',
    )
    engine = open_database(settings.database.url)
    try:
        Pipeline(settings, engine).ingest_file(abuse_log(tmp_path, DAY), host="mx1",
                                               log_format="postfix")  # fmt: skip
        clock = Clock(NIGHT + timedelta(seconds=30))
        scheduler = ReportScheduler(
            settings, lambda: make_engine(settings.database.url), clock=clock
        )
        scheduler.run_due()

        with engine.connect() as connection:
            row = connection.execute(select(ReportRow)).one()
        assert (row.day, row.host, row.created_at) == ("2026-12-01", "", clock.now)
        assert (row.mailed_at, row.mail_error) == (clock.now, None)
        data = json.loads(row.data)
        assert data["headline"]["open_relay"] is True
        assert data["headline"]["accepted_relays"] == 1
        assert data["headline"]["refused_relays"] == 6

        [(sender, recipients, message)] = inbox.messages
        assert (sender, recipients) == ("relaywatch@mx1.example.test", ["postmaster@example.test"])
        assert message["Subject"] == (
            "relaywatch report 2026-12-01 for mx1: OPEN RELAY, 1 accepted relay"
        )
        plain, html = (message.get_body((kind,)) for kind in ("plain", "html"))
        assert plain is not None and html is not None
        text, page = plain.get_content(), html.get_content()
        assert "OPEN RELAY" in text.upper() and "198.51.100.23" in text
        assert "198.51.100.23" in page and "203.0.113.7" in page
        # one self-contained page: no script, nothing loaded from elsewhere
        assert "<script" not in page.lower()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.IGNORECASE)
        assert not re.search(r"<link\b|@import|url\(\s*['\"]?https?:", page, re.IGNORECASE)

        # the next run is the next night; before it, ticking starts nothing
        clock.now += timedelta(hours=12)
        assert not scheduler.tick()
        clock.now = NIGHT + timedelta(days=1)
        assert scheduler.tick()
        wait_for(lambda: scheduler.runs == 1, 30, "the second night's report")
        assert stored_days(engine) == ["2026-12-01", "2026-12-02"]
        assert re.fullmatch(
            r"relaywatch report 2026-12-02 for .+: 0 relay attempts",
            inbox.messages[1][2]["Subject"],
        )
    finally:
        engine.dispose()


def test_a_mailing_that_fails_is_stored_and_retried_an_hour_later(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    port = free_port()  # nothing listens there yet
    settings = report_config(
        write_config, f'mail_to = ["postmaster@example.test"]\nsmtp_host = "127.0.0.1"\n'
        f"smtp_port = {port}\n",
    )  # fmt: skip
    engine = open_database(settings.database.url)
    clock = Clock(NIGHT + timedelta(minutes=1))
    scheduler = ReportScheduler(settings, lambda: make_engine(settings.database.url), clock=clock)
    controller = None
    try:
        assert scheduler.tick()
        wait_for(lambda: scheduler.runs == 1, 30, "the report")
        with engine.connect() as connection:
            row = connection.execute(select(ReportRow.mailed_at, ReportRow.mail_error)).one()
        assert row == (None, f"cannot mail through 127.0.0.1:{port}: Connection refused")

        clock.now += timedelta(minutes=59)
        assert not scheduler.tick()  # not yet
        inbox = Inbox()
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        clock.now += timedelta(minutes=1)
        assert scheduler.tick()
        wait_for(lambda: scheduler.runs == 2, 30, "the retry")
        with engine.connect() as connection:
            row = connection.execute(select(ReportRow.mailed_at, ReportRow.mail_error)).one()
        assert row == (clock.now, None)
        assert len(inbox.messages) == 1
        assert stored_days(engine) == ["2026-12-01"]  # mailed again, not built again
    finally:
        if controller is not None:
            controller.stop()
        engine.dispose()


def test_a_build_that_fails_does_not_stop_anything_and_is_tried_again(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    settings = report_config(write_config)
    engine = open_database(settings.database.url)
    clock = Clock(NIGHT)
    attempts: list[date] = []

    def build(_connection: Any, day: date, _zone: Any, _now: datetime) -> Rendered:
        attempts.append(day)
        if len(attempts) == 1:
            raise RuntimeError("a bug in the report")
        return EMPTY

    scheduler = ReportScheduler(
        settings, lambda: make_engine(settings.database.url), clock=clock, build=build
    )
    try:
        scheduler.run_due()
        assert stored_days(engine) == []
        clock.now += timedelta(minutes=30)
        assert not scheduler.tick()
        clock.now += timedelta(minutes=30)
        assert scheduler.tick()
        wait_for(lambda: scheduler.runs == 1, 30, "the second try")
        assert attempts == [DAY, DAY]
        assert stored_days(engine) == ["2026-12-01"]
    finally:
        engine.dispose()


@pytest.fixture
def daemon_with_reports(
    tmp_path: Path, smtp_server: tuple[Inbox, int]
) -> Iterator[tuple[Daemon, Inbox, str, Clock]]:
    inbox, smtp_port = smtp_server
    log, database, port = abuse_log(tmp_path, DAY), tmp_path / "relaywatch.db", free_port()
    path = tmp_path / "relaywatch.toml"
    path.write_text(
        '[network]\ninternal_networks = ["127.0.0.0/8"]\nlocal_domains = ["example.test"]\n'
        f'[database]\nurl = "sqlite:///{database}"\n[api]\nlisten = "127.0.0.1:{port}"\n'
        f'[[sources]]\npath = "{log}"\nformat = "postfix"\nhost = "mx1"\n'
        '[report]\ntimezone = "UTC"\nat = "02:00"\nmail_to = ["postmaster@example.test"]\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {smtp_port}\n'
    )
    clock = Clock(NIGHT - timedelta(hours=1))  # 01:00: the night's report is not due yet
    daemon = Daemon(load_settings(path, environ={}), path, poll=0.1, report_clock=clock)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        yield daemon, inbox, f"http://127.0.0.1:{port}", clock
    finally:
        daemon.stop()
        thread.join(20)
        assert not thread.is_alive()


def test_the_daemon_builds_the_report_when_it_falls_due_and_serves_it(
    daemon_with_reports: tuple[Daemon, Inbox, str, Clock],
) -> None:
    daemon, inbox, url, clock = daemon_with_reports
    wait_for(lambda: answers_200(f"{url}/healthz"), 20, "the API")
    wait_for(lambda: get_json(f"{url}/v1/offenders")[1]["offenders"] != [], 20, "the log read")
    wait_for(lambda: daemon.reporter.runs == 1, 20, "the catch-up at start")
    # at start, the last night due (11-30) was built: no report was stored yet
    assert [r["day"] for r in get_json(f"{url}/v1/reports")[1]["reports"]] == ["2026-11-30"]

    clock.now = NIGHT
    wait_for(lambda: daemon.reporter.runs == 2, 20, "the night's report")
    status, body = get_json(f"{url}/v1/reports")
    assert status == 200
    latest = body["reports"][0]
    assert (latest["day"], latest["open_relay"], latest["accepted_relays"]) == (
        "2026-12-01", True, 1,
    )  # fmt: skip
    assert latest["mailed_at"] == "2026-12-02T02:00:00Z" and latest["mail_error"] is None
    assert [m["Subject"] for _, _, m in inbox.messages] == [
        "relaywatch report 2026-11-30 for all relay hosts: 0 relay attempts",
        "relaywatch report 2026-12-01 for mx1: OPEN RELAY, 1 accepted relay",
    ]
