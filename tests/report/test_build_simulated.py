"""The report's numbers against the ground truth of a simulated three-day Postfix log: a day on
which the server relays for an outside client, a day of refused probes only, a day without
abuse.  Ingested through the pipeline into SQLite (and PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from detector.config import load_settings
from detector.ingest import Pipeline
from detector.report import render
from detector.report.build import build_report
from detector.report.json import report_json
from detector.simulate import Day, GroundTruth, write_days
from detector.store.session import open_database
from tests.conftest import config_text
from tests.report.logs import deferred_then_delivered

FIRST = date(2026, 11, 28)
DAYS = (
    Day(6000, open_relay_clients=1),  # the server is an open relay for one client
    Day(6000),  # refused relay probes only
    Day(6000, abusers=0, abuse_share=0.0),  # no relay abuse at all
)
RATE = 0.02  # sessions a second: each day's lines fit in about ten hours
TOP = 1000  # every offender and domain listed, so each can be compared


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[GroundTruth]]:
    log = tmp_path_factory.mktemp("simulated") / "mail.log"
    truths = write_days(log, DAYS, first=FIRST, session_rate=RATE)
    return log, truths


@pytest.fixture
def stored(database_url: str, tmp_path: Path, simulated: Any) -> Iterator[Engine]:
    log, _ = simulated
    config = tmp_path / "relaywatch.toml"
    config.write_text(config_text(database_url))
    settings = load_settings(config, environ={})
    engine = open_database(database_url)
    Pipeline(settings, engine).ingest_file(log, host="mx1", log_format="postfix")
    yield engine
    engine.dispose()


def reports(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [
            report_json(
                build_report(connection, FIRST + timedelta(days=i), zone=UTC, top=TOP, now=None)
            )
            for i in range(len(DAYS))
        ]


def test_every_relay_number_equals_the_ground_truth(stored: Engine, simulated: Any) -> None:
    _, truths = simulated
    seen_before: set[str] = set()
    for index, (report, truth) in enumerate(zip(reports(stored), truths, strict=True)):
        refused = sum(truth.refused_relays.values())
        accepted = sum(truth.accepted_relays.values())
        clients = set(truth.refused_relays) | set(truth.accepted_relays)
        headline = report["headline"]
        assert headline["refused_relays"] == refused
        assert headline["accepted_relays"] == accepted
        assert headline["open_relay"] is (accepted > 0)
        assert headline["offenders"] == len(clients)
        lines = {o["ip"]: o for o in report["offenders"]}
        assert set(lines) == clients
        for ip, line in lines.items():
            assert line["refused"] == truth.refused_relays.get(ip, 0), ip
            assert line["accepted"] == truth.accepted_relays.get(ip, 0), ip
            assert line["attempts"] == line["refused"] + line["accepted"]
            assert line["returning"] is (ip in seen_before), ip
        seen_before |= clients
        hours = {c["name"]: c["count"] for c in report["attempts_per_hour"] if c["count"]}
        assert hours == truth.relay_attempts_by_hour
        assert len(report["attempts_per_hour"]) == 24
        assert report["attempts_per_host"] == (
            [{"name": "mx1", "count": refused + accepted}] if clients else []
        )
        assert sum(c["count"] for c in report["target_domains"]) == refused + accepted
        assert sum(c["count"] for c in report["helos"]) == refused  # accepted mail: no HELO logged
        day_totals = [
            sum(t.refused_relays.values()) + sum(t.accepted_relays.values())
            for t in truths[: index + 1]
        ]
        expected_trend = ([0] * 7 + day_totals)[-8:]
        assert [d["count"] for d in report["trend"]] == expected_trend
        assert report["trend"][-1]["day"] == (FIRST + timedelta(days=index)).isoformat()


def test_the_open_relay_is_listed_with_its_log_lines(stored: Engine, simulated: Any) -> None:
    _, truths = simulated
    day1, day2, _ = reports(stored)
    (relayed_for,) = truths[0].accepted_relays
    assert day1["headline"]["open_relay"] is True
    assert day1["headline"]["accepted_transactions"] == len(day1["accepted"]) > 0
    assert {a["client_ip"] for a in day1["accepted"]} == {relayed_for}
    assert (
        sum(len(a["recipients"]) for a in day1["accepted"])
        == truths[0].accepted_relays[relayed_for]
    )
    for accepted in day1["accepted"]:
        assert any(f"client=unknown[{relayed_for}]" in line for line in accepted["lines"])
        assert sum("status=sent" in line for line in accepted["lines"]) == len(
            accepted["recipients"]
        )
    # the scorer blocks an accepted relay at once
    offender = next(o for o in day1["offenders"] if o["ip"] == relayed_for)
    assert offender == day1["offenders"][0]  # worst first
    assert day1["headline"]["new_blocks"] >= 1
    assert day2["headline"]["open_relay"] is False
    assert day2["accepted"] == []


def test_a_day_without_abuse_has_no_relay_attempt(stored: Engine) -> None:
    quiet = reports(stored)[2]
    assert quiet["headline"]["open_relay"] is False
    assert quiet["headline"]["refused_relays"] == quiet["headline"]["accepted_relays"] == 0
    assert quiet["headline"]["offenders"] == 0
    assert quiet["offenders"] == quiet["target_domains"] == quiet["helos"] == []
    assert all(c["count"] == 0 for c in quiet["attempts_per_hour"])
    assert quiet["traffic"]["received"] > 0  # mail went on as usual


def test_traffic_counts_as_pflogsumm_does(stored: Engine, simulated: Any) -> None:
    log, truths = simulated
    for index, (report, truth) in enumerate(zip(reports(stored), truths, strict=True)):
        traffic = report["traffic"]
        assert traffic["received"] == truth.received
        assert traffic["delivered"] == truth.delivered
        assert traffic["bounced"] == truth.bounced
        assert traffic["rejected"] == truth.rejected
        # the store keeps a recipient's last outcome: a deferral later delivered is delivered
        day = (FIRST + timedelta(days=index)).isoformat()
        later, _ = deferred_then_delivered(
            line for line in log.read_text().splitlines() if line.startswith(day)
        )
        assert later > 0
        assert traffic["deferred"] + later == truth.deferred
        hours = traffic["per_hour"]
        assert sum(h["received"] for h in hours) == truth.received
        assert sum(h["delivered"] for h in hours) == truth.delivered
        assert sum(h["rejected"] for h in hours) == truth.rejected
        by_reason = {c["name"]: c["count"] for c in traffic["rejected_by_reason"]}
        assert by_reason.get("Relay access denied", 0) == sum(truth.refused_relays.values())
        assert sum(by_reason.values()) == truth.rejected


def test_report_of_another_host_is_empty(stored: Engine) -> None:
    with stored.connect() as connection:
        report = build_report(connection, FIRST, zone=UTC, host="mx2", top=TOP)
    assert report.headline.refused_relays == report.headline.accepted_relays == 0
    assert report.traffic.received == 0
    assert report.period.host == "mx2"


def test_every_format_renders(stored: Engine) -> None:
    with stored.connect() as connection:
        report = build_report(connection, FIRST, zone=UTC, top=5)
    assert render(report, "json").startswith("{")
    with pytest.raises(ValueError, match="unknown report format"):
        render(report, "pdf")
