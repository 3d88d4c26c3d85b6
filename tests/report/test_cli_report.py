"""``relaywatch report``: the day, the format, the output file, one relay host, and errors."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.factories import open_relay, probe, write_log
from tests.test_cli import Run, assert_one_line_error, relaywatch

DAY = "2026-12-01"
MOMENT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """``relaywatch`` run in ``tmp_path``."""

    def run_relaywatch(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return relaywatch(*args, cwd=tmp_path)

    return run_relaywatch


@pytest.fixture
def config(write_config: Callable[..., Path], run: Run, tmp_path: Path) -> Path:
    """A store holding one day with an open relay and a refused probe, days in UTC."""
    path = write_config('[report]\ntimezone = "UTC"\n')
    log = write_log(
        tmp_path / "mail.log",
        [
            *probe(MOMENT, "203.0.113.5"),
            *open_relay(MOMENT + timedelta(minutes=5), "198.51.100.7", "ABC123DEF4"),
        ],
    )
    assert run("--config", path, "ingest", log, "--host", "mx1").returncode == 0
    return path


def test_json_of_a_day(run: Run, config: Path) -> None:
    result = run("--config", config, "report", "--date", DAY, "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["period"]["label"] == DAY
    assert report["period"]["timezone"] == "UTC"
    headline = report["headline"]
    assert (headline["open_relay"], headline["refused_relays"], headline["accepted_relays"]) == (
        True,
        1,
        1,
    )
    assert [a["queue_id"] for a in report["accepted"]] == ["ABC123DEF4"]


def test_the_default_is_yesterday_as_text(run: Run, config: Path) -> None:
    result = run("--config", config, "report")
    assert result.returncode == 0, result.stderr
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert yesterday in result.stdout.splitlines()[0]
    today = run("--config", config, "report", "--date", "today", "--format", "json")
    assert json.loads(today.stdout)["period"]["label"] == datetime.now(UTC).date().isoformat()


def test_the_day_is_counted_in_the_configured_zone(
    run: Run, write_config: Callable[..., Path], config: Path
) -> None:
    tokyo = write_config('[report]\ntimezone = "Asia/Tokyo"\n')  # same store, another zone
    report = json.loads(run("--config", tokyo, "report", "--date", DAY, "--format", "json").stdout)
    start = datetime(2026, 12, 1, tzinfo=ZoneInfo("Asia/Tokyo")).astimezone(UTC)
    assert report["period"]["start"] == start.isoformat().replace("+00:00", "Z")
    # 09:00Z is 18:00 in Tokyo: still the same day there
    assert report["headline"]["refused_relays"] == 1


def test_output_file_and_one_host(run: Run, config: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = run("--config", config, "report", "--date", DAY, "--format", "html", "--output", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert out.read_text().lstrip().lower().startswith("<!doctype html")
    other = run("--config", config, "report", "--date", DAY, "--format", "json", "--host", "mx2")
    report = json.loads(other.stdout)
    assert report["period"]["host"] == "mx2"
    assert report["headline"]["refused_relays"] == 0


@pytest.mark.parametrize(
    "args",
    [("--date", "2026-13-01"), ("--date", "last week"), ("--format", "pdf")],
)
def test_usage_errors_exit_2(run: Run, config: Path, args: tuple[str, ...]) -> None:
    result = run("--config", config, "report", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_an_unwritable_output_is_one_line(run: Run, config: Path, tmp_path: Path) -> None:
    result = run("--config", config, "report", "--output", tmp_path / "missing" / "r.txt")
    assert_one_line_error(result, "cannot write the report to")
