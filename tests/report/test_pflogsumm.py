"""The report's traffic and relay refusals against Debian's pflogsumm, on the same simulated
Postfix log: relaywatch reads the RFC 3339 copy, pflogsumm a traditional-stamp copy of the
same traffic (as bench/bench_postfix.py does), one day at a time.

Where the two differ by definition the test says so and adjusts by a count taken from the
log itself, never by a tolerance:

- deferred: pflogsumm counts every queue id that was ever deferred, and every deferral line;
  the store keeps each recipient's last outcome, so a deferral later delivered counts as
  delivered only.  Adjustment: those queue ids and their deferral lines, read from the log.
- relay refusals per client: pflogsumm names a client by its reverse name when it has one
  (``203-0-113-9.dyn.broadband.example``), relaywatch by its address.  The names are mapped
  back to addresses through the names the report lists for each offender.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from detector.config import load_settings
from detector.ingest import Pipeline
from detector.report.build import build_report
from detector.report.model import Report
from detector.simulate import Day, write_days
from detector.store.session import open_database
from tests.conftest import config_text
from tests.report.logs import deferred_then_delivered
from tests.required import require

PFLOGSUMM = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"
FIRST = date(2026, 11, 28)
DAYS = (Day(8000, abusers=12, open_relay_clients=1), Day(8000, abusers=12))
RATE = 0.02
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


@pytest.fixture(autouse=True)
def _pflogsumm() -> None:
    missing = "pflogsumm is not installed (Debian package pflogsumm; .ci/run installs it)"
    require(None if Path(PFLOGSUMM).exists() else missing, "RELAYWATCH_REQUIRE_PFLOGSUMM")


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("pflogsumm")
    rfc3339, traditional = directory / "mail.log", directory / "mail-classic.log"
    write_days(rfc3339, DAYS, first=FIRST, session_rate=RATE)
    write_days(traditional, DAYS, first=FIRST, session_rate=RATE, style="traditional")
    return rfc3339, traditional


@pytest.fixture
def stored(database_url: str, tmp_path: Path, logs: tuple[Path, Path]) -> Iterator[Engine]:
    config = tmp_path / "relaywatch.toml"
    config.write_text(config_text(database_url))
    engine = open_database(database_url)
    Pipeline(load_settings(config, environ={}), engine).ingest_file(
        logs[0], host="mx1", log_format="postfix"
    )
    yield engine
    engine.dispose()


def classic_prefix(day: date) -> str:
    return f"{MONTHS[day.month - 1]} {day.day:2d} "


def pflogsumm(lines: list[str], tmp_path: Path) -> str:
    path = tmp_path / "day.log"
    path.write_text("".join(line + "\n" for line in lines))
    done = subprocess.run(
        [PFLOGSUMM, "--detail", "0", "--reject-detail", "100000", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def grand_totals(output: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for name in ("received", "delivered", "bounced", "rejected"):
        match = re.search(rf"^\s+(\d+)\s+{name}\b", output, re.M)
        assert match, f"no {name} in pflogsumm's output"
        totals[name] = int(match[1])
    match = re.search(r"^\s+(\d+)\s+deferred\s+\(\s*(\d+)\s+deferrals\s*\)", output, re.M)
    assert match, "no deferred in pflogsumm's output"
    totals["deferred"], totals["deferrals"] = int(match[1]), int(match[2])
    return totals


def relay_denied(output: str) -> dict[str, int]:
    """pflogsumm's reject detail: Relay access denied, count per client (name or address)."""
    section = output.split("message reject detail", 1)[1]
    found: dict[str, int] = {}
    inside = False
    for line in section.splitlines()[2:]:
        if not line.strip() or not line.startswith("  "):
            break
        if re.match(r"^ {4}\S", line):
            inside = line.strip().startswith("Relay access denied (")
        elif inside and (match := re.match(r"^\s+(\d+)\s+(\S+)$", line)):
            found[match[2]] = int(match[1])
    return found


def addresses(by_client: dict[str, int], report: Report) -> dict[str, int]:
    """pflogsumm's clients as addresses: names mapped back through the report's offenders."""
    by_name = {name: o.ip for o in report.offenders for name in o.client_names}
    out: dict[str, int] = {}
    for client, count in by_client.items():
        try:
            ip = str(ipaddress.ip_address(client))
        except ValueError:
            ip = by_name[client]
        out[ip] = out.get(ip, 0) + count
    return out


def test_totals_and_relay_refusals_agree_with_pflogsumm(
    stored: Engine, logs: tuple[Path, Path], tmp_path: Path
) -> None:
    rfc3339, traditional = logs
    classic = traditional.read_text().splitlines()
    modern = rfc3339.read_text().splitlines()
    named = 0
    for index in range(len(DAYS)):
        day = FIRST + timedelta(days=index)
        output = pflogsumm([x for x in classic if x.startswith(classic_prefix(day))], tmp_path)
        theirs = grand_totals(output)
        with stored.connect() as connection:
            report = build_report(connection, day, zone=UTC, top=1000)
        ours = report.traffic
        assert ours.received == theirs["received"]
        assert ours.delivered == theirs["delivered"]
        assert ours.bounced == theirs["bounced"]
        assert ours.rejected == theirs["rejected"]
        later, later_deferrals = deferred_then_delivered(
            x for x in modern if x.startswith(day.isoformat())
        )
        assert later > 0  # the adjustment is exercised
        assert ours.deferred + later == theirs["deferred"]
        assert ours.deferrals + later_deferrals == theirs["deferrals"]

        refused = {o.ip: o.refused for o in report.offenders if o.refused}
        denied = relay_denied(output)
        named += sum(1 for client in denied if not re.fullmatch(r"[0-9a-f.:]+", client))
        assert addresses(denied, report) == refused
        assert report.headline.refused_relays == sum(denied.values())
        by_reason = {c.name: c.count for c in ours.rejected_by_reason}
        assert by_reason["Relay access denied"] == sum(denied.values())
    assert named > 0  # some clients were shown by name and mapped back


def test_rejections_are_grouped_by_pflogsumms_reasons(
    stored: Engine, logs: tuple[Path, Path], tmp_path: Path
) -> None:
    _, traditional = logs
    day = FIRST
    lines = [x for x in traditional.read_text().splitlines() if x.startswith(classic_prefix(day))]
    output = pflogsumm(lines, tmp_path)
    section = output.split("message reject detail", 1)[1]
    theirs = {
        m[1]: int(m[2])
        for m in re.finditer(r"^ {4}(\S.*?) (?:\(top \d+\) )?\(total: (\d+)\)$", section, re.M)
    }
    with stored.connect() as connection:
        report = build_report(connection, day, zone=UTC, top=1000)
    ours: dict[str, Any] = {c.name: c.count for c in report.traffic.rejected_by_reason}
    assert ours == theirs
