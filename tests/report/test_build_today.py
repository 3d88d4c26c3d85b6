"""The report of a day not over yet (``--date today``) says which blocks are in force now, not
which will be at midnight."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine

from detector.decide import NeverBlock, block
from detector.report.build import build_report

DAY = date(2026, 12, 2)
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def test_blocks_of_today_are_counted_as_they_stand_now(engine: Engine) -> None:
    with engine.begin() as connection:
        for minutes, value in ((-30, "203.0.113.7"), (-90, "203.0.113.8")):
            block(connection, value, duration=timedelta(hours=1), reason="",
                  now=NOW + timedelta(minutes=minutes), never_block=NeverBlock([]))  # fmt: skip
    with engine.connect() as connection:
        headline = build_report(connection, DAY, zone=UTC, now=NOW).headline
    assert (headline.new_blocks, headline.active_blocks, headline.expired_blocks) == (2, 1, 1)
