"""The report's days and hours in a zone with summer time, an empty store, and how refusal
texts are grouped."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from detector.report.build import build_period, build_report, day_bounds, reject_label

BERLIN = ZoneInfo("Europe/Berlin")


def test_the_day_clocks_go_back_has_25_hours(engine: Engine) -> None:
    with engine.connect() as connection:
        report = build_report(connection, date(2026, 10, 25), zone=BERLIN)
    labels = [c.name for c in report.attempts_per_hour]
    assert len(labels) == len(report.traffic.per_hour) == 25
    assert labels[:4] == [
        "2026-10-25T00",
        "2026-10-25T01",
        "2026-10-25T02",
        "2026-10-25T02+0100",  # the hour repeated, named by its offset
    ]
    assert report.period.start == datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    assert report.period.end == datetime(2026, 10, 25, 23, 0, tzinfo=UTC)


def test_the_day_clocks_go_forward_has_23_hours(engine: Engine) -> None:
    with engine.connect() as connection:
        report = build_report(connection, date(2026, 3, 29), zone=BERLIN)
    labels = [c.name for c in report.attempts_per_hour]
    assert len(labels) == 23
    assert "2026-03-29T02" not in labels
    assert day_bounds(date(2026, 3, 29), BERLIN) == (
        datetime(2026, 3, 28, 23, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 22, 0, tzinfo=UTC),
    )


def test_an_empty_store_gives_an_empty_report(engine: Engine) -> None:
    with engine.connect() as connection:
        report = build_report(connection, date(2026, 12, 1), zone=UTC, host="mx1")
    h = report.headline
    assert not h.open_relay
    assert (h.refused_relays, h.accepted_relays, h.offenders, h.new_blocks) == (0, 0, 0, 0)
    assert (report.offenders, report.accepted, report.sources, report.sinks) == ((), (), (), ())
    assert [d.count for d in report.trend] == [0] * 8
    assert report.traffic.received == report.traffic.delivered == 0
    assert "relaywatch recorded no lines read in the period" in report.notes


def test_a_period_of_several_days(engine: Engine) -> None:
    with engine.connect() as connection:
        report = build_period(connection, date(2026, 11, 28), date(2026, 11, 30), zone=UTC)
        with pytest.raises(ValueError, match="ends"):
            build_period(connection, date(2026, 11, 30), date(2026, 11, 28), zone=UTC)
    assert report.period.label == "2026-11-28..2026-11-30"
    assert len(report.attempts_per_hour) == 72
    assert [d.day for d in report.trend][-3:] == ["2026-11-28", "2026-11-29", "2026-11-30"]
    assert len(report.trend) == 10


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("<a@b.example>: Relay access denied", "Relay access denied"),
        ("Relay access denied", "Relay access denied"),
        ("Client host rejected: cannot find your hostname, [192.0.2.9]",
         "cannot find your hostname"),
        ("Service unavailable; Client host [192.0.2.9] blocked using bl.example; "
         "https://bl.example/?192.0.2.9", "blocked using bl.example"),
        ("<x@example.test>: Recipient address rejected: User unknown in local recipient table",
         "Recipient address rejected: User unknown in local recipient table"),
        ("<WIN-1>: Helo command rejected: need fully-qualified hostname",
         "Helo command rejected: need fully-qualified hostname"),
        (None, "(no reason logged)"),
    ],
)  # fmt: skip
def test_refusals_are_grouped_as_pflogsumm_groups_them(reason: str | None, label: str) -> None:
    assert reject_label(reason) == label
