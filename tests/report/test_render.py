"""The report's text and HTML renderings of hand-built reports: what an administrator reads
first, what must never be left out, and what log text must never do to a terminal or a page."""

from __future__ import annotations

import dataclasses
import html
import re
import struct
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from detector.report import render
from detector.report.html import OPEN_RELAY_RED, render_html
from detector.report.model import Count, Period, Report
from detector.report.text import hour_slots, per_hour, render_text
from tests.report.reports import (
    HOSTILE,
    LONG_NAME,
    accepted_relay,
    at,
    busy_report,
    offender,
    open_relay_report,
    quiet_report,
)

DOCS = Path(__file__).resolve().parent.parent.parent / "docs"
REPORTS = {"open relay": open_relay_report, "quiet": quiet_report, "busy": busy_report}


def columns(line: str) -> int:
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in line
    )


def headings(text: str) -> list[str]:
    lines = text.splitlines()
    return [lines[i - 1] for i, line in enumerate(lines) if line and set(line) == {"-"}]


def wide_report() -> Report:
    """Names in wide characters, so that cutting by characters instead of columns shows."""
    report = busy_report()
    chinese = offender("192.0.2.99", 3, names=("邮件服务器" * 20,), helos=("邮件" * 40,))
    return dataclasses.replace(
        report,
        offenders=(*report.offenders, chinese),
        helos=(Count("邮件服务器" * 30, 3),),
    )


# --- text -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [*REPORTS.values(), wide_report], ids=[*REPORTS, "wide"])
def test_text_lines_are_at_most_80_columns(make: object) -> None:
    assert callable(make)
    text = render_text(make())
    too_wide = [line for line in text.splitlines() if columns(line) > 80]
    assert too_wide == []


def test_text_opens_with_the_open_relay_and_its_transactions() -> None:
    report = open_relay_report()
    text = render_text(report)
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if "OPEN RELAY" in line)
    assert first <= 4  # right under the title
    assert lines[first] == "OPEN RELAY: the server relayed mail from outside to outside 3 times"
    accepted = text.split("Accepted relays: what the server relayed (2 transactions)\n")[1]
    accepted = accepted.split("\n\n\n")[0].split("Relay attempts per hour")[0]
    assert text.index("OPEN RELAY") < text.index("refused relay attempts")
    assert "  203.0.113.77  unknown  helo mail.totally-legit.example\n" in accepted
    assert "      1 transaction, 2 recipients, 13:02\n" in accepted
    for relay in report.accepted:
        assert f"  {relay.queue_id}  {relay.client_name}[{relay.client_ip}]\n" in accepted
        assert f"          helo {relay.helo}  from <{relay.sender}>\n" in accepted
        assert "          to " + ", ".join(f"<{r}>" for r in relay.recipients) in accepted
    # the log lines, cut to the width, after the rest of the relay abuse
    evidence = text.split("Log lines of the accepted relays (the first 2 of 2 transactions)")[1]
    assert text.index("Top HELO names") < text.index("Log lines of the accepted relays")
    for relay in report.accepted:
        for line in relay.lines:
            assert "  " + line[:60] in evidence


@pytest.mark.parametrize("make", [quiet_report, busy_report], ids=["quiet", "busy"])
def test_text_has_no_open_relay_headline_without_an_accepted_relay(make: object) -> None:
    assert callable(make)
    assert "OPEN RELAY" not in render_text(make())


def test_a_day_without_relay_attempts_says_so_in_one_line() -> None:
    text = render_text(quiet_report())
    assert text.count("No relay attempts on 2026-12-01.") == 1
    assert "No relay attempts on 2026-12-01.\n" in text
    found = headings(text)
    for abuse in (
        "Relay abuse",
        "Relay attempts per hour",
        "Trend",
        "Top offenders",
        "Top target domains",
        "Top HELO names",
        "Accepted relays",
        "Suspect",
    ):
        assert not any(h.startswith(abuse) for h in found), abuse
    # what the day still had: a block in force from before, and the traffic
    assert "Blocks: 0 new, 1 ended, 2 in force; 0 enforcement hits." in text
    assert "Mail traffic: Grand Totals" in found


def test_a_period_without_relay_attempts_says_in() -> None:
    report = quiet_report(
        period=dataclasses.replace(
            quiet_report().period, label="2026-12-01..2026-12-07", end=at(0) + timedelta(days=7)
        )
    )
    assert "No relay attempts in 2026-12-01..2026-12-07." in render_text(report)


@pytest.mark.parametrize("make", REPORTS.values(), ids=REPORTS.keys())
def test_text_has_no_empty_section(make: object) -> None:
    assert callable(make)
    lines = render_text(make()).splitlines()
    for i, line in enumerate(lines):
        if line and set(line) == {"-"}:
            assert i + 1 < len(lines) and lines[i + 1].strip(), f"{lines[i - 1]!r} is empty"


def test_text_sections_come_in_the_order_an_administrator_asks() -> None:
    found = headings(render_text(open_relay_report()))
    assert found == [
        "Relay abuse",
        "Accepted relays: what the server relayed (2 transactions)",
        "Relay attempts per hour",
        "Relay attempts per relay host",
        "Trend: relay attempts per day",
        "Top offenders",
        "Top target domains (outside recipients)",
        "Top sender domains (forged senders)",
        "Top HELO names",
        "Suspect accounts: authenticated relaying that looks like a stolen password",
        "Log lines of the accepted relays (the first 2 of 2 transactions)",
        "Mail traffic: Grand Totals",
        "Rejected by reason",
        "Traffic per hour",
        "Top sender domains (messages received)",
        "Top recipient domains (delivered)",
        "What relaywatch saw",
        "Notes",
    ]


def test_text_headline_numbers() -> None:
    text = render_text(open_relay_report())
    assert re.search(r"^ +2,814   refused relay attempts$", text, re.M)
    assert re.search(r"^ +3   accepted relay attempts", text, re.M)
    assert re.search(r"^ +4   new blocks$", text, re.M)
    assert re.search(r"^ +2   blocks ended", text, re.M)
    assert re.search(r"^ +11   blocks in force at the end$", text, re.M)
    assert re.search(r"^ +1,530   enforcement hits", text, re.M)


def test_text_hour_chart_has_every_hour_with_bars_to_scale() -> None:
    text = render_text(open_relay_report())
    chart = text.split("Relay attempts per hour\n")[1].split("\n\n")[0].splitlines()[1:]
    assert [line.split()[0] for line in chart] == [f"{h:02d}" for h in range(24)]
    bars = {line.split()[0]: (line.count("#"), int(line.split()[-1])) for line in chart}
    assert bars["03"][1] == 396 and bars["00"][1] == 40
    longest = max(length for length, _ in bars.values())
    assert bars["03"][0] == longest
    assert bars["00"][0] == round(longest * 40 / 396)


def test_text_trend_marks_the_day_and_compares_with_the_week_before() -> None:
    text = render_text(open_relay_report())
    assert re.search(r"^  2026-12-01  #+ 2,817 <-$", text, re.M)
    assert re.search(r"^  2026-11-26  +0$", text, re.M)
    assert "5.5 x the average of the 7 days before (510)" in text


def test_text_offenders_keep_whole_ipv6_addresses_and_names() -> None:
    text = render_text(busy_report())
    assert "\n  2001:db8:ffff:ffff:ffff:ffff:ffff:fffe\n" in text  # a line of its own
    assert "Top offenders (top 20 of 137)" in text
    assert "      name a-very-long-reverse-name" in text
    assert LONG_NAME not in text  # cut to the width, with a mark
    assert re.search(r"^  198\.51\.100\.250 +5,000 +0 +4,000 +714 +00:12-23:41 +-$", text, re.M)


def test_text_shows_block_end_with_its_date_when_on_another_day() -> None:
    text = render_text(open_relay_report())
    assert re.search(r"^  203\.0\.113\.77 .* 12-08 13:05 +new$", text, re.M)
    assert re.search(r"^  192\.0\.2\.14 .* 21:14 +new$", text, re.M)  # the same day


def test_text_grand_totals_as_pflogsumm_counts_them() -> None:
    report = open_relay_report()
    t = report.traffic
    text = render_text(report)
    assert re.search(rf"^ +{t.received:,}   received$", text, re.M)
    assert re.search(rf"^ +{t.delivered:,}   delivered$", text, re.M)
    assert re.search(rf"^ +{t.deferred:,}   deferred  \({t.deferrals:,} deferrals\)$", text, re.M)
    assert re.search(rf"^ +{t.bounced:,}   bounced$", text, re.M)
    share = 100 * t.rejected // (t.delivered + t.rejected)  # truncated, as pflogsumm does
    assert re.search(rf"^ +{t.rejected:,}   rejected \({share}%\)$", text, re.M)
    assert "92.1 MiB   bytes received" in text
    assert "355  Relay access denied" in text


def test_text_shows_what_relaywatch_saw() -> None:
    text = render_text(busy_report())
    assert re.search(r"^  mx1 +/var/log/mail\.log +48,212 +22 \(<1%\) +0 B$", text, re.M)
    assert "…mote-logs/mx2.example.test/postfix/mail.log" in text  # the path's end is kept
    assert "sink postfix-cidr failing from 22:10 STILL FAILING, 230 failures" in text


def test_text_writes_no_control_character_from_the_logs() -> None:
    text = render_text(busy_report())
    assert "\x1b" not in text
    assert "evil\\x1b[31m.example" in text


def test_text_cuts_long_recipient_lists_and_log_lines() -> None:
    many = tuple(f"victim{n}@outside.example" for n in range(30))
    report = open_relay_report(accepted=(accepted_relay(at(9), recipients=many),))
    text = render_text(report)
    # as many recipients as fit on the line, and how many more there are
    assert (
        "\n          to <victim0@outside.example>, <victim1@outside.example> and 28 more\n" in text
    )
    assert "  … 22 more lines" in text  # 4 + 30 lines, 12 shown


def test_text_lists_at_most_top_transactions() -> None:
    relays = tuple(accepted_relay(at(10, n), queue_id=f"Q{n:04d}") for n in range(25))
    text = render_text(open_relay_report(accepted=relays))
    assert "  mx1  Q0019  " in text and "Q0020" not in text
    assert "… 5 more transactions" in text
    assert "(the first 3 of 25 transactions)" in text
    assert "  Q0002\n" in text and "  Q0003\n" not in text  # log lines of three only


def test_hours_of_a_day_with_a_repeated_hour_are_24() -> None:
    # 2026-10-25: Berlin turns the clocks back, 02:00-03:00 happens twice (25 hours)
    start = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    period = Period(start, start + timedelta(hours=25), "2026-10-25", "Europe/Berlin", None)
    slots = hour_slots(period)
    assert len(slots) == 24 and slots[2] == "2026-10-25T02"
    assert per_hour(period, [("2026-10-25T02", 7)])[2] == ("02", 7)


def test_hours_of_a_week_are_summed_per_hour_of_the_day() -> None:
    start = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    period = Period(
        start, start + timedelta(days=7), "2026-12-01..2026-12-07", "Europe/Berlin", None
    )
    hours = per_hour(period, [("2026-12-01T05", 2), ("2026-12-04T05", 3), ("2026-12-07T23", 1)])
    assert len(hours) == 24
    assert dict(hours)["05"] == 5 and dict(hours)["23"] == 1


# --- HTML -----------------------------------------------------------------------------------

LOADS = re.compile(
    r"""(?:src|href|action|poster|background|srcset|xlink:href)\s*=\s*["']?\s*(?:https?:|//)""",
    re.I,
)


@pytest.mark.parametrize("make", REPORTS.values(), ids=REPORTS.keys())
def test_html_is_one_self_contained_file(make: object) -> None:
    assert callable(make)
    page = render_html(make()).lower()
    assert page.startswith("<!doctype html>")
    for tag in (
        "<script",
        "<link",
        "<img",
        "<iframe",
        "<object",
        "<embed",
        "@import",
        "url(",
        "javascript:",
        " on",
    ):
        if tag == " on":
            assert not re.search(r"<[^>]*\son\w+\s*=", page), "an event handler attribute"
        else:
            assert tag not in page, tag
    assert not LOADS.search(page)
    assert "http://" not in page and "https://" not in page


def test_html_escapes_everything_from_the_logs() -> None:
    hostile = accepted_relay(
        at(13),
        helo=HOSTILE,
        sender=f"a{HOSTILE}@x.example",
        recipients=(f"{HOSTILE}@y",),
        client_name=HOSTILE,
    )
    hostile = dataclasses.replace(hostile, lines=(*hostile.lines, f"{HOSTILE} \x1b[2J"))
    report = busy_report(accepted=(hostile,), headline=open_relay_report().headline)
    page = render_html(report)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page
    assert "bad&lt;domain&gt;&amp;co.example" in page
    assert "\x1b" not in page and "\\x1b[2J" in page


def test_html_open_relay_headline_comes_first_in_red_with_the_transactions() -> None:
    report = open_relay_report()
    page = render_html(report)
    banner = page.index("OPEN RELAY: the server relayed mail from outside to outside 3 times")
    tiles = page.index("refused relay attempts")
    assert page.index("<h1>") < banner < page.index("Relayed for") < tiles
    assert f"background:{OPEN_RELAY_RED}" in page[page.rindex("<td", 0, banner) : banner]
    top = page[banner:tiles]
    for relay in report.accepted:
        assert f"<b>{relay.client_ip}</b>" in top  # relayed for
        row = top[top.index(f">{relay.queue_id}<") :].split("</tr>")[0]
        assert f">{relay.client_ip}<" in row and f"HELO {relay.helo}" in row
        assert f"from</span> &lt;{relay.sender}&gt;" in row
        for rcpt in relay.recipients:
            assert f"&lt;{rcpt}&gt;" in row
    evidence = page.index("Log lines of the accepted relays (the first 2 of 2 transactions)")
    assert page.index("What they sent") < evidence
    for relay in report.accepted:
        for line in relay.lines:
            assert html.escape(line) in page[evidence:]  # whole, the browser wraps them


@pytest.mark.parametrize("make", [quiet_report, busy_report], ids=["quiet", "busy"])
def test_html_has_no_open_relay_and_no_red_without_an_accepted_relay(make: object) -> None:
    assert callable(make)
    page = render_html(make())
    assert "OPEN RELAY" not in page
    assert OPEN_RELAY_RED not in page


def test_html_day_without_relay_attempts_says_so_in_one_line() -> None:
    page = render_html(quiet_report())
    assert page.count("No relay attempts on 2026-12-01.") == 1
    for absent in (
        "Top offenders",
        "Relay attempts per hour",
        "Trend",
        "What they sent",
        "Suspect accounts",
        "refused relay attempts",
    ):
        assert absent not in page
    assert "<h2></h2>" not in page
    assert page.count("<svg") == 1  # the traffic of the day only


def test_html_charts_are_inline_svg_with_every_hour_and_day() -> None:
    page = render_html(open_relay_report())
    assert page.count("<svg") == 3  # attempts per hour, trend, traffic per hour
    hourly = page[page.index('aria-label="relay attempts per hour"') :].split("</svg>")[0]
    assert re.findall(r"<title>(\d\d): ([\d,]+)</title>", hourly)[3] == ("03", "396")
    assert len(re.findall(r"<rect ", hourly)) == 24
    trend = page[page.index('aria-label="relay attempts per day"') :].split("</svg>")[0]
    assert [t for t in re.findall(r"<title>([^<]+)</title>", trend)][-1] == "12-01: 2,817"
    assert "Busiest hour 03:00 with 396 attempts." in page


def test_html_offenders_table() -> None:
    page = render_html(busy_report())
    assert "Top offenders (20 of 137)" in page
    assert "<b>2001:db8:ffff:ffff:ffff:ffff:ffff:fffe</b>" in page
    assert LONG_NAME in page  # whole: the page wraps it
    assert page.count(">returning</span>") == 10
    assert page.count(">new</span>") == 10


def test_render_dispatches_to_the_text_and_html_renderers() -> None:
    report = open_relay_report()
    assert render(report, "text") == render_text(report)
    assert render(report, "html") == render_html(report)


def test_the_sample_under_docs_is_a_self_contained_report() -> None:
    page = (DOCS / "report-sample.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "OPEN RELAY" in page
    assert "<script" not in page.lower() and not LOADS.search(page)
    picture = (DOCS / "report-sample.png").read_bytes()
    assert picture[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", picture[16:24]) == (1000, 2600)  # docs/make_report_sample.py
