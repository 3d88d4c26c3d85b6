"""Syslog timestamps: the year of classic stamps, zones, and nonsense dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from parsers.postfix import PostfixParser
from parsers.syslog import SyslogClock


def at(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_classic_stamps_take_the_year_that_is_not_in_the_future() -> None:
    clock = SyslogClock(now=lambda: at(2027, 1, 1, 0, 5), tz=UTC)
    assert clock.classic("Dec 31 23:59:59") == at(2026, 12, 31, 23, 59, 59)
    assert clock.classic("Jan  1 00:00:01") == at(2027, 1, 1, 0, 0, 1)


def test_a_log_spanning_new_year_read_in_march_keeps_its_order() -> None:
    clock = SyslogClock(now=lambda: at(2027, 3, 15), tz=UTC)
    assert clock.classic("Dec 31 23:59:59") < clock.classic("Jan  1 00:00:01")


def test_classic_stamps_are_read_in_the_given_zone() -> None:
    plus_two = timezone(timedelta(hours=2))
    clock = SyslogClock(now=lambda: at(2026, 12, 1), tz=plus_two)
    assert clock.classic("Nov 30 10:00:00") == at(2026, 11, 30, 8, 0)


def test_february_29th_finds_its_leap_year() -> None:
    clock = SyslogClock(now=lambda: at(2026, 3, 1), tz=UTC)
    assert clock.classic("Feb 29 12:00:00") == at(2024, 2, 29, 12)


def test_rfc3339_offsets_and_fractions_are_honoured() -> None:
    parser = PostfixParser()

    def time(stamp: str) -> float | None:
        event = parser.parse(f"{stamp} mx postfix/smtpd[1]: connect from a[192.0.2.1]")
        return None if event is None else event.time

    expected = at(2026, 11, 30, 8, 0) + 0.25
    assert time("2026-11-30T09:00:00.25+01:00") == expected
    assert time("2026-11-30T09:00:00.250000+0100") == expected
    assert time("2026-11-30T08:00:00.25Z") == expected
    assert time("2026-11-30T03:00:00-05:00") == at(2026, 11, 30, 8, 0)
    assert time("2026-11-30T08:09:24.188092+00:00") == at(2026, 11, 30, 8, 9, 24) + 0.188092


def test_rfc3339_stamps_without_a_zone_or_a_time_yield_no_event() -> None:
    parser = PostfixParser()
    for stamp in (
        "2026-11-30T08:00:00",
        "2026-11-30",
        "2026-11-30T08:00:00+01:00junk",
        "2026-11-31T08:00:00+01:00",
        "2026-11-30Tnoon+01:00",
    ):
        assert parser.parse(f"{stamp} mx postfix/smtpd[1]: connect from a[192.0.2.1]") is None


def test_impossible_dates_yield_no_event() -> None:
    parser = PostfixParser()
    assert parser.parse("Feb 31 08:00:00 mx postfix/smtpd[1]: connect from a[192.0.2.1]") is None
    assert parser.parse("Nov 30 25:00:00 mx postfix/smtpd[1]: connect from a[192.0.2.1]") is None


def test_month_names_of_other_locales_are_read() -> None:
    clock = SyslogClock(now=lambda: at(2026, 12, 1), tz=UTC)
    assert clock.classic("Mär  8 10:00:01") == at(2026, 3, 8, 10, 0, 1)  # German (blunix sample)
    assert clock.classic("févr. 8 10:00:01") == at(2026, 2, 8, 10, 0, 1)  # French
    assert clock.classic("Okt 21 10:00:01") == at(2026, 10, 21, 10, 0, 1)
    assert clock.classic("dic 24 10:00:01") == at(2025, 12, 24, 10, 0, 1)  # Spanish, last year


def test_a_word_that_is_no_month_is_no_timestamp() -> None:
    line = "Foo  8 10:00:01 mx1 postfix/smtpd[1]: connect from a.example[192.0.2.1]"
    assert PostfixParser().parse(line) is None
