"""Postfix throughput of relaywatch next to fail2ban-regex and pflogsumm (DESIGN.md §5).

    .venv/bin/python bench/bench_postfix.py [--lines 1000000] [--runs 3] [--seed 1] [--json]

Generates a simulated Postfix 3.7 log with ``detector.simulate`` (cached under bench/.cache/),
then measures, taking the median of ``--runs`` runs of each:

- relaywatch parse only: ``PostfixParser().parse(line)`` over the file, in a child process;
- relaywatch end to end: ``relaywatch --config CFG ingest LOG --host mx1`` into a fresh SQLite
  file, with the peak RSS of that process;
- ``fail2ban-regex LOG postfix[mode=aggressive]`` and ``pflogsumm`` (on a traditional-style copy
  of the same log), when installed;

and prints them in one table with the ratios between them and the budgets of DESIGN.md §5.
Parts that are not there yet (parser, CLI, reference tools) are skipped with a message.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
if str(ROOT) not in sys.path:  # run as a script from a checkout: import the packages beside it
    sys.path.insert(0, str(ROOT))

PARSE_BUDGET = 300_000  # lines/s, parse only (DESIGN.md §5)
INGEST_BUDGET = 100_000  # lines/s, end to end
HOST = "mx1"

CONFIG = """\
[network]
internal_networks = ["127.0.0.0/8", "10.0.0.0/8"]
local_domains = ["example.test"]

[database]
url = "sqlite:///{db}"
"""


@dataclass
class Measure:
    """One row of the table: what was run, and how fast, or why it was not."""

    name: str
    lines: int
    walls: list[float] = field(default_factory=list)  # seconds, one per run
    cpus: list[float] = field(default_factory=list)  # user + system seconds, one per run
    rss_kib: list[int] = field(default_factory=list)  # peak resident set, one per run
    skipped: str = ""  # why it was not measured
    notes: list[str] = field(default_factory=list)

    @property
    def wall(self) -> float | None:
        return statistics.median(self.walls) if self.walls else None

    @property
    def rate(self) -> float | None:
        wall = self.wall
        return self.lines / wall if wall else None

    @property
    def cpu_rate(self) -> float | None:
        return self.lines / statistics.median(self.cpus) if self.cpus else None

    @property
    def rss_mib(self) -> float | None:
        return max(self.rss_kib) / 1024 if self.rss_kib else None

    def fail(self, reason: str) -> Measure:
        """Give up on this measurement: no figures, only the reason."""
        self.skipped = reason
        self.walls.clear()
        self.cpus.clear()
        self.rss_kib.clear()
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "runs": len(self.walls),
            "median_seconds": self.wall,
            "lines_per_second": self.rate,
            "cpu_lines_per_second": self.cpu_rate,
            "peak_rss_mib": self.rss_mib,
            "seconds": self.walls,
            "skipped": self.skipped or None,
            "notes": self.notes,
        }


@dataclass
class Child:
    """What a finished child process did."""

    returncode: int
    wall: float
    cpu: float
    rss_kib: int
    stdout: str
    stderr: str


def run_child(argv: Sequence[str], *, cwd: Path | None = None) -> Child:
    """Run ``argv`` to the end; its own wall time, CPU time and peak RSS (from wait4)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Child(
            proc.returncode,
            wall,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss,
            out.read(),
            err.read(),
        )


def tail(text: str, lines: int = 5) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


# ----------------------------------------------------------------------- the log


def generator_version() -> str:
    source = (ROOT / "detector" / "simulate.py").read_bytes()
    return hashlib.sha256(source).hexdigest()[:10]


def cached_log(
    lines: int, seed: int, open_relays: int, style: str
) -> tuple[Path, dict[str, Any], float | None]:
    """The simulated log and its ground truth, made if not cached; and the generator's
    lines/s when it had to be made."""
    from detector import simulate

    CACHE.mkdir(parents=True, exist_ok=True)  # ignored by the repository's .gitignore
    version = generator_version()
    stem = f"postfix-{lines}-s{seed}-o{open_relays}-{style}"
    log = CACHE / f"{stem}-{version}.log"
    truth_file = CACHE / f"{stem}-{version}.truth.json"
    for stale in CACHE.glob(f"{stem}-*"):
        if version not in stale.name:
            stale.unlink()
    if log.exists() and truth_file.exists():
        return log, json.loads(truth_file.read_text()), None
    start = time.perf_counter()
    partial = log.with_suffix(".partial")
    truth = simulate.write_log(
        partial, lines, seed=seed, style=style, host=HOST, open_relay_clients=open_relays
    )
    speed = lines / (time.perf_counter() - start)
    partial.replace(log)
    truth_file.write_text(json.dumps(truth.as_dict(), indent=2, sort_keys=True))
    return log, truth.as_dict(), speed


# ------------------------------------------------------------------ measurements


def parse_child(log: str) -> int:
    """Child mode: parse ``log`` line by line, print seconds and counts as JSON."""
    try:
        from parsers.postfix import PostfixParser
    except ImportError as exc:
        print(json.dumps({"error": f"cannot import parsers.postfix.PostfixParser: {exc}"}))
        return 3
    parser = PostfixParser()
    parse = parser.parse
    events = lines = 0
    cpu = time.process_time()
    start = time.perf_counter()
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            lines += 1
            if parse(line) is not None:
                events += 1
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    print(json.dumps({"seconds": wall, "cpu": cpu, "lines": lines, "events": events}))
    return 0


def measure_parse(log: Path, lines: int, runs: int) -> Measure:
    m = Measure("relaywatch parse only", lines)
    for _ in range(runs):
        child = run_child(
            [sys.executable, str(Path(__file__).resolve()), "--parse-child", str(log)], cwd=ROOT
        )
        try:
            result = json.loads(child.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            result = {"error": f"exit {child.returncode}\n{tail(child.stderr)}"}
        if "error" in result:
            return m.fail(str(result["error"]))
        m.walls.append(result["seconds"])  # the loop only, not the interpreter start
        m.cpus.append(result["cpu"])
        m.rss_kib.append(child.rss_kib)
    m.notes.append(
        f"{result['events']:,} events from {result['lines']:,} lines "
        f"({result['lines'] - result['events']:,} lines gave none)"
    )
    return m


def relaywatch_command() -> str | None:
    beside = Path(sys.executable).parent / "relaywatch"
    return str(beside) if beside.exists() else shutil.which("relaywatch")


STORED = re.compile(r"(\d+) transactions stored")  # the summary line of ``relaywatch ingest``


def measure_ingest(log: Path, lines: int, runs: int, truth: dict[str, Any]) -> Measure:
    m = Measure("relaywatch ingest, end to end", lines)
    command = relaywatch_command()
    if command is None:
        return m.fail("no relaywatch command (pip install -e . into the venv)")
    for run in range(runs):
        with tempfile.TemporaryDirectory(prefix="rw-bench-") as tmpdir:
            tmp = Path(tmpdir)
            config = tmp / "relaywatch.toml"
            config.write_text(CONFIG.format(db=tmp / "rw.db"))
            base = [command, "--config", str(config)]
            # the schema comes from the migrations; an ingest that makes it itself does not
            # need this, so its failure is only a note
            upgrade = run_child([*base, "db", "upgrade"], cwd=tmp)
            if upgrade.returncode != 0 and run == 0:
                m.notes.append(f"'db upgrade' exited {upgrade.returncode}; ingesting anyway")
            child = run_child([*base, "ingest", str(log), "--host", HOST], cwd=tmp)
            if child.returncode != 0:
                return m.fail(f"ingest exited {child.returncode}:\n{tail(child.stderr)}")
            m.walls.append(child.wall)
            m.cpus.append(child.cpu)
            m.rss_kib.append(child.rss_kib)
            if run == runs - 1:
                m.notes += check_offenders(base, tmp, truth)
                stored = STORED.search(child.stdout + child.stderr)
                if stored:
                    m.notes.append(
                        f"{int(stored[1]):,} transactions stored; the log has "
                        f"{truth['transactions']:,} client transactions and "
                        f"{truth['notices']:,} bounce notices"
                    )
    return m


def check_offenders(base: list[str], cwd: Path, truth: dict[str, Any]) -> list[str]:
    """Compare what relaywatch stored with the generator's ground truth (not timed)."""
    child = run_child([*base, "offenders", "--format", "json"], cwd=cwd)
    if child.returncode != 0:
        return [f"offenders --format json exited {child.returncode}: no accuracy check"]
    try:
        offenders = {o["ip"]: o for o in json.loads(child.stdout)}
    except (ValueError, KeyError, TypeError) as exc:
        return [f"offenders --format json is not a list of offenders ({exc})"]
    notes = []
    for kind in ("refused_relays", "accepted_relays"):
        expected: dict[str, int] = truth[kind]
        found = {ip: o.get(kind, 0) for ip, o in offenders.items() if o.get(kind, 0)}
        verdict = "agree" if found == expected else "DIFFER"
        notes.append(
            f"{kind}: {verdict} with the ground truth "
            f"({len(found)} clients, {sum(found.values()):,} found; "
            f"{len(expected)} clients, {sum(expected.values()):,} written)"
        )
    return notes


F2B_LINES = re.compile(r"Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed")


def measure_fail2ban(log: Path, lines: int, runs: int) -> Measure:
    m = Measure("fail2ban-regex postfix[mode=aggressive]", lines)
    command = shutil.which("fail2ban-regex")
    if command is None:
        return m.fail("fail2ban-regex not installed (Debian package fail2ban)")
    for _ in range(runs):
        child = run_child([command, str(log), "postfix[mode=aggressive]"])
        found = F2B_LINES.search(child.stdout)
        if child.returncode != 0 or found is None:
            return m.fail(f"fail2ban-regex exited {child.returncode}:\n{tail(child.stderr)}")
        m.walls.append(child.wall)
        m.cpus.append(child.cpu)
        m.rss_kib.append(child.rss_kib)
        matched = f"{int(found.group(3)):,} lines matched, {int(found.group(4)):,} missed"
    m.notes.append(matched)
    return m


PFLOGSUMM_TOTALS = {
    name: re.compile(rf"^\s*(\d+)([km]?)\s+{name}\b", re.MULTILINE)
    for name in ("received", "delivered", "deferred", "bounced", "rejected")
}


def pflogsumm_totals(report: str) -> dict[str, tuple[int, str]]:
    """The message counts of the "Grand Totals" section, with their unit: pflogsumm prints
    counts over 512k in (truncated) k or m."""
    totals = {}
    for name, pattern in PFLOGSUMM_TOTALS.items():
        found = pattern.search(report)
        if found:
            totals[name] = (int(found.group(1)), found.group(2))
    return totals


def totals_agree(totals: dict[str, tuple[int, str]], truth: dict[str, Any]) -> bool:
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}
    return set(totals) == set(PFLOGSUMM_TOTALS) and all(
        value == truth[name] // scale[unit] for name, (value, unit) in totals.items()
    )


def measure_pflogsumm(log: Path, lines: int, runs: int, truth: dict[str, Any]) -> Measure:
    m = Measure("pflogsumm (traditional-style copy)", lines)
    command = shutil.which("pflogsumm")
    if command is None:
        return m.fail("pflogsumm not installed (Debian package pflogsumm)")
    for _ in range(runs):
        child = run_child([command, str(log)])
        if child.returncode != 0:
            return m.fail(f"pflogsumm exited {child.returncode}:\n{tail(child.stderr)}")
        m.walls.append(child.wall)
        m.cpus.append(child.cpu)
        m.rss_kib.append(child.rss_kib)
        totals = pflogsumm_totals(child.stdout)
    shown = ", ".join(f"{name} {value}{unit}" for name, (value, unit) in totals.items())
    expected = ", ".join(f"{name} {truth[name]}" for name in PFLOGSUMM_TOTALS)
    m.notes = [
        f"grand totals: {shown}: "
        + (
            "agree with the ground truth"
            if totals_agree(totals, truth)
            else f"DIFFER from the ground truth ({expected})"
        )
    ]
    return m


# ------------------------------------------------------------------------ report


def fmt_rate(rate: float | None) -> str:
    return f"{rate:,.0f}" if rate else "-"


def ratio(a: Measure, b: Measure) -> float | None:
    return a.rate / b.rate if a.rate and b.rate else None


def verdict(m: Measure, budget: int) -> str:
    if m.rate is None:
        return "SKIP"
    return "PASS" if m.rate >= budget else "FAIL"


def report(
    args: argparse.Namespace, rows: list[Measure], generator: float | None, budgets: dict[str, int]
) -> str:
    parse, ingest, f2b, pfl = rows
    out = [
        f"relaywatch Postfix benchmark: {args.lines:,} lines (seed {args.seed}), "
        f"median of {args.runs} run(s)",
        f"Python {platform.python_version()}, {os.cpu_count()} CPU(s), {platform.machine()}",
        "",
        f"{'what':<42} {'lines/s':>12} {'CPU lines/s':>12} {'peak RSS':>10} "
        f"{'budget':>10}  verdict",
        "-" * 100,
    ]
    if generator:
        out.append(f"{'log generator (detector.simulate)':<42} {fmt_rate(generator):>12}")
    for m in rows:
        budget = budgets.get(m.name)
        rss = f"{m.rss_mib:,.0f} MiB" if m.rss_mib else "-"
        out.append(
            f"{m.name:<42} {fmt_rate(m.rate):>12} {fmt_rate(m.cpu_rate):>12} {rss:>10} "
            + (f"{budget:>10,}  {verdict(m, budget)}" if budget else "")
        )
    out.append("")
    for label, a, b in (
        ("parse only / fail2ban-regex", parse, f2b),
        ("end to end / fail2ban-regex", ingest, f2b),
        ("parse only / pflogsumm", parse, pfl),
        ("end to end / pflogsumm", ingest, pfl),
    ):
        r = ratio(a, b)
        out.append(f"relaywatch {label:<30} {f'{r:,.1f}x' if r else '-':>8}")
    out.append("")
    for m in rows:
        if m.skipped:
            out.append(f"{m.name}: skipped: {m.skipped}")
        for note in m.notes:
            out.append(f"{m.name}: {note}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="log lines (1000000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (3)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (1)")
    parser.add_argument(
        "--open-relays",
        type=int,
        default=1,
        help="outside clients the simulated server wrongly relays for (1), so that the "
        "accuracy check sees accepted relays too",
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument(
        "--no-references", action="store_true", help="do not run fail2ban-regex and pflogsumm"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a measured budget fails")
    parser.add_argument("--parse-child", metavar="LOG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.parse_child:
        return parse_child(args.parse_child)
    if args.lines < 1 or args.runs < 1:
        parser.error("--lines and --runs must be positive")

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    log, truth, generator = cached_log(args.lines, args.seed, args.open_relays, "rfc3339")
    say(
        f"log: {log.relative_to(ROOT)}"
        + (f" (generated at {generator:,.0f} lines/s)" if generator else " (cached)")
    )
    steps: list[tuple[str, Callable[[], Measure]]] = [
        ("parse only", lambda: measure_parse(log, args.lines, args.runs)),
        ("ingest", lambda: measure_ingest(log, args.lines, args.runs, truth)),
    ]
    if args.no_references:
        skipped = "--no-references"
        steps += [
            (
                "fail2ban-regex",
                lambda: Measure(
                    "fail2ban-regex postfix[mode=aggressive]", args.lines, skipped=skipped
                ),
            ),
            (
                "pflogsumm",
                lambda: Measure("pflogsumm (traditional-style copy)", args.lines, skipped=skipped),
            ),
        ]
    else:

        def pflogsumm() -> Measure:
            if shutil.which("pflogsumm") is None:
                return measure_pflogsumm(log, args.lines, args.runs, truth)
            classic, classic_truth, _ = cached_log(
                args.lines, args.seed, args.open_relays, "traditional"
            )
            return measure_pflogsumm(classic, args.lines, args.runs, classic_truth)

        steps += [
            ("fail2ban-regex", lambda: measure_fail2ban(log, args.lines, args.runs)),
            ("pflogsumm", pflogsumm),
        ]
    rows = []
    for label, step in steps:
        say(f"measuring {label} ...")
        rows.append(step())
    budgets = {rows[0].name: PARSE_BUDGET, rows[1].name: INGEST_BUDGET}
    print(report(args, rows, generator, budgets))
    if args.json:
        figures = {
            "lines": args.lines,
            "seed": args.seed,
            "runs": args.runs,
            "log": str(log),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "generator_lines_per_second": generator,
            "ground_truth": truth,
            "parse": rows[0].as_dict(),
            "ingest": rows[1].as_dict(),
            "fail2ban_regex": rows[2].as_dict(),
            "pflogsumm": rows[3].as_dict(),
            "ratios": {
                "parse_over_fail2ban": ratio(rows[0], rows[2]),
                "ingest_over_fail2ban": ratio(rows[1], rows[2]),
                "parse_over_pflogsumm": ratio(rows[0], rows[3]),
                "ingest_over_pflogsumm": ratio(rows[1], rows[3]),
            },
            "budgets": {
                "parse_lines_per_second": PARSE_BUDGET,
                "parse": verdict(rows[0], PARSE_BUDGET),
                "ingest_lines_per_second": INGEST_BUDGET,
                "ingest": verdict(rows[1], INGEST_BUDGET),
            },
        }
        print(json.dumps(figures, indent=2))
    failed = any(
        verdict(m, b) == "FAIL" for m, b in zip(rows, (PARSE_BUDGET, INGEST_BUDGET), strict=False)
    )
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
