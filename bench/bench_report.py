"""The nightly report of a day of millions of stored lines, next to pflogsumm (DESIGN.md §5).

    .venv/bin/python bench/bench_report.py [--lines 5000000] [--runs 3] [--json] [--check]

Generates one day of simulated Postfix 3.7 log with ``detector.simulate`` (and a
traditional-stamp copy of the same traffic for pflogsumm), stores it with ``relaywatch ingest``
into a SQLite file (all three cached under bench/.cache/), then measures, median of ``--runs``:

- ``build_report`` for that day, and its JSON, text and HTML renderings (each, and the sum);
- ``pflogsumm`` on the traditional-stamp copy of the same log;

and prints them in one table with the budget (the report of a 5M-line day in < 10 s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
if str(ROOT) not in sys.path:  # run as a script from a checkout: import the packages beside it
    sys.path.insert(0, str(ROOT))

BUDGET = 10.0  # seconds: build and render the report of a 5M-line day (issue 6)
DAY = date(2026, 11, 30)
HOST = "mx1"
LINES_PER_SESSION = 7.5  # about, in the simulated traffic: sets the rate that fills one day
CONFIG = """\
[network]
internal_networks = ["127.0.0.0/8", "10.0.0.0/8"]
local_domains = ["example.test"]

[database]
url = "sqlite:///{db}"
"""


def generator_version() -> str:
    source = (ROOT / "detector" / "simulate.py").read_bytes()
    return hashlib.sha256(source).hexdigest()[:10]


def session_rate(lines: int) -> float:
    """Sessions a second that spread ``lines`` over about 22 hours of the day."""
    return max(lines / LINES_PER_SESSION / (22 * 3600), 0.01)


def cached_day(lines: int, seed: int, open_relays: int) -> tuple[Path, Path | None, Path]:
    """The day's log, its traditional-stamp copy (None without pflogsumm) and the SQLite file
    it is stored in, made if not cached."""
    from detector import simulate

    CACHE.mkdir(parents=True, exist_ok=True)
    stem = f"report-{lines}-s{seed}-o{open_relays}"
    version = generator_version()
    for stale in CACHE.glob(f"{stem}-*"):
        if version not in stale.name:
            stale.unlink()
    log = CACHE / f"{stem}-{version}.log"
    classic = CACHE / f"{stem}-{version}-traditional.log"
    db = CACHE / f"{stem}-{version}.db"
    days = [simulate.Day(lines, open_relay_clients=open_relays)]
    rate = session_rate(lines)
    if not log.exists():
        print(f"generating {lines:,} lines of one day ({rate:.1f} sessions/s) …", file=sys.stderr)
        partial = log.with_suffix(".partial")
        simulate.write_days(partial, days, first=DAY, seed=seed, session_rate=rate)
        partial.replace(log)
    if shutil.which("pflogsumm") and not classic.exists():
        partial = classic.with_suffix(".partial")
        simulate.write_days(
            partial, days, first=DAY, seed=seed, session_rate=rate, style="traditional"
        )
        partial.replace(classic)
    if not db.exists() or not _usable(db):
        store(log, db)
    return log, classic if classic.exists() else None, db


def _usable(db: Path) -> bool:
    """Whether the cached database is at the schema revision of this checkout."""
    from detector.errors import DatabaseError
    from detector.store.session import open_database

    try:
        open_database(f"sqlite:///{db}").dispose()
    except DatabaseError:
        return False
    return True


def store(log: Path, db: Path) -> None:
    """``relaywatch ingest`` the log into a fresh SQLite file."""
    for old in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        old.unlink(missing_ok=True)
    partial = db.with_suffix(".partial.db")
    config = db.with_suffix(".toml")
    config.write_text(CONFIG.format(db=partial))
    relaywatch = [sys.executable, "-m", "detector.cli"]
    if shutil.which("relaywatch"):
        relaywatch = [str(shutil.which("relaywatch"))]
    elif (ROOT / ".venv" / "bin" / "relaywatch").exists():
        relaywatch = [str(ROOT / ".venv" / "bin" / "relaywatch")]
    print(f"storing {log.name} with relaywatch ingest …", file=sys.stderr)
    start = time.perf_counter()
    subprocess.run([*relaywatch, "--config", str(config), "db", "upgrade"], check=True)
    subprocess.run(
        [*relaywatch, "--config", str(config), "ingest", str(log), "--host", HOST], check=True
    )
    print(f"  stored in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    for suffix in ("", "-wal", "-shm"):
        part = partial.with_name(partial.name + suffix)
        if part.exists():
            part.replace(db.with_name(db.name + suffix))
    config.unlink()


def median_of(runs: int, work: Callable[[], Any]) -> tuple[float, list[float], Any]:
    seconds = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), seconds, result


def measure_report(db: Path, runs: int) -> dict[str, Any]:
    from detector.report import render
    from detector.report.build import build_report
    from detector.store.session import open_database

    engine = open_database(f"sqlite:///{db}")
    figures: dict[str, Any] = {}

    def build() -> Any:
        with engine.connect() as connection:
            return build_report(connection, DAY, zone=UTC, top=20)

    median, seconds, report = median_of(runs, build)
    figures["build_report"] = {"median_seconds": median, "seconds": seconds}
    total = median
    for fmt in ("json", "text", "html"):

        def rendered(fmt: str = fmt) -> str:
            return render(report, fmt)

        try:
            median, seconds, text = median_of(runs, rendered)
        except ImportError as exc:  # a renderer not written yet
            figures[f"render {fmt}"] = {"skipped": str(exc)}
            continue
        figures[f"render {fmt}"] = {
            "median_seconds": median,
            "seconds": seconds,
            "bytes": len(text),
        }
        total += median
    figures["total"] = total
    h = report.headline
    t = report.traffic
    figures["report"] = {
        "refused_relays": h.refused_relays, "accepted_relays": h.accepted_relays,
        "offenders": h.offenders, "received": t.received, "delivered": t.delivered,
        "rejected": t.rejected, "bounced": t.bounced, "deferred": t.deferred,
    }  # fmt: skip
    engine.dispose()
    return figures


def measure_pflogsumm(classic: Path | None, runs: int) -> dict[str, Any]:
    command = shutil.which("pflogsumm")
    if command is None or classic is None:
        return {"skipped": "pflogsumm not installed (Debian package pflogsumm)"}

    def run() -> str:
        done = subprocess.run([command, str(classic)], capture_output=True, text=True, check=True)
        return done.stdout

    median, seconds, _ = median_of(runs, run)
    return {"median_seconds": median, "seconds": seconds}


def stored_lines(db: Path) -> tuple[int, int]:
    """Transactions and recipients stored for the day."""
    import sqlite3

    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC).timestamp()
    end = start + timedelta(days=1).total_seconds()
    with sqlite3.connect(db) as connection:
        txns = connection.execute(
            "SELECT count(*) FROM transactions WHERE started_at >= ? AND started_at < ?",
            (start, end),
        ).fetchone()[0]
        rcpts = connection.execute("SELECT count(*) FROM recipients").fetchone()[0]
    return txns, rcpts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=5_000_000, help="lines of the day (5000000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (3)")
    parser.add_argument(
        "--reference-runs", type=int, default=1, help="runs of pflogsumm (1: it is slow)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--open-relays", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when over the budget")
    args = parser.parse_args(argv)

    _, classic, db = cached_day(args.lines, args.seed, args.open_relays)
    transactions, recipients = stored_lines(db)
    ours = measure_report(db, args.runs)
    theirs = measure_pflogsumm(classic, args.reference_runs)

    size = db.stat().st_size / 2**20
    print(f"\nreport of {DAY} ({args.lines:,} lines, {transactions:,} transactions and "
          f"{recipients:,} recipients stored; SQLite {size:,.0f} MiB)")  # fmt: skip
    print(f"{'what':<34} {'median s':>9}  runs")
    for name, figure in ours.items():
        if not isinstance(figure, dict) or name == "report":
            continue
        if "skipped" in figure:
            print(f"{name:<34} {'skipped':>9}  {figure['skipped']}")
            continue
        print(f"{name:<34} {figure['median_seconds']:>9.2f}  {len(figure['seconds'])}")
    verdict = "PASS" if ours["total"] < BUDGET else "FAIL"
    print(f"{'report: build + renderings':<34} {ours['total']:>9.2f}  budget < {BUDGET:.0f} s: "
          f"{verdict}")  # fmt: skip
    if "skipped" in theirs:
        print(f"{'pflogsumm (traditional copy)':<34} {'skipped':>9}  {theirs['skipped']}")
    else:
        print(f"{'pflogsumm (traditional copy)':<34} {theirs['median_seconds']:>9.2f}  "
              f"{len(theirs['seconds'])}")  # fmt: skip
        print(f"relaywatch report / pflogsumm time: {ours['total'] / theirs['median_seconds']:.2f}")
    if args.json:
        print(json.dumps({"lines": args.lines, "relaywatch": ours, "pflogsumm": theirs}, indent=2))
    return 1 if args.check and verdict == "FAIL" else 0


if __name__ == "__main__":
    raise SystemExit(main())
