"""Parse throughput of every log family relaywatch reads, with fail2ban-regex beside the two
families it has filters for (DESIGN.md §5; issue 4).

    .venv/bin/python bench/bench_families.py [--lines 1000000] [--runs 3] [--json]

For each family a log of ``--lines`` lines is built from real material, in its order: the
family's real log in ../shared/corpus where one exists (Exim 4.96 mainlog, Sendmail 8.17 and
OpenSMTPD 6.8 syslog, Postfix 3.7 syslog, the Exchange 2000 W3C rows of OSSEC's docs), else the
annotated samples of tests/samples/<family>/ (hostile.log left out; for the Exchange families
the 2013 file only).  A header-driven log (W3C, CSV) keeps its
header lines once at the top and repeats its data lines.  Then, ``--runs`` times each, the
family's parser reads every line in this process (``parser.parse(line)`` in a loop, timed);
the median is reported with the budget: >= 300k lines/s for syslog families, >= 150k lines/s
for the W3C, CSV and Exchange 5.5 ones.  ``fail2ban-regex`` (Debian package ``fail2ban``) reads
the Exim and Sendmail logs with its ``exim`` and ``sendmail-reject`` filters in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout: import the packages beside it
    sys.path.insert(0, str(ROOT))

from bench.bench_postfix import F2B_LINES, run_child, tail  # noqa: E402
from parsers import PARSERS  # noqa: E402
from parsers.events import Kind  # noqa: E402
from tests.parsers.samples import load_file, sample_files  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
REAL_LOGS = {
    "postfix": "postfix/generated-local-postfix-3.7.11/mail.log.rfc3339",
    "exim": "exim/generated-local-exim-4.96/mainlog",
    "sendmail": "sendmail/generated-local-sendmail-8.17.1.9/mail.log.rfc3339",
    "opensmtpd": "opensmtpd/generated-local-opensmtpd-6.8.0p2/mail.log.rfc3339",
}
IIS_ROWS = "iis_smtp/ossec-docs/exchange2000.rst"
SAMPLE_FILES = {"exchange-tracking": "exchange2013.log", "exchange-smtp": "exchange2013.log"}
"""The sample file that reads like one server's log, where a family has several layouts."""
FAIL2BAN_FILTERS = {"exim": "exim", "sendmail": "sendmail-reject"}
SYSLOG_BUDGET = 300_000
TABLE_BUDGET = 150_000
TABLE_FAMILIES = frozenset({"exchange-tracking", "exchange-smtp", "iis-w3c", "ims",
                            "exchange55-tracking"})  # fmt: skip


def code_block(path: Path) -> list[str]:
    """The first code block of a reStructuredText page, unindented."""
    lines: list[str] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.startswith(".. code-block::"):
            if lines:
                break
            lines = []
        elif lines is not None and raw.startswith("  ") and raw.strip():
            lines.append(raw[2:])
    return lines or []


def material(family: str) -> tuple[str, list[list[str]]]:
    """Where the lines come from, and the lines of each file in order."""
    real = REAL_LOGS.get(family)
    if real and (CORPUS / real).exists():
        return f"corpus {real}", [(CORPUS / real).read_text(encoding="utf-8").splitlines()]
    if family == "iis-w3c" and (CORPUS / IIS_ROWS).exists():  # real rows of Exchange 2000
        return f"corpus {IIS_ROWS} (W3C block)", [code_block(CORPUS / IIS_ROWS)]
    files = [
        p
        for p in sample_files(family)
        if p.name != "hostile.log" and SAMPLE_FILES.get(family, p.name) == p.name
    ]
    return (
        f"tests/samples/{family}/ ({len(files)} files)",
        [[s.line for s in load_file(path)] for path in files],
    )


def build_log(family: str, files: list[list[str]], lines: int) -> list[str]:
    """``lines`` lines: the header lines before each file's first data line once, the rest of
    the file (from that data line on) repeated."""
    heads, bodies = [], []
    for text in files:
        parser = PARSERS[family]()
        head: list[str] = []
        first = len(text)
        for number, line in enumerate(text):
            event = parser.parse(line)
            if event is not None and event.kind == Kind.HEADER:
                head.append(line)
            elif event is not None:
                first = number
                break
        heads.append(head)
        bodies.append(text[first:])
    out: list[str] = [line for head in heads for line in head]
    body = [line for part in bodies for line in part]
    if not body:
        raise SystemExit(f"{family}: no data lines to repeat")
    while len(out) < lines:
        out.extend(body[: lines - len(out)])
    return out


def measure_parse(family: str, log: list[str], runs: int) -> dict[str, object]:
    """Lines/s (median of ``runs``) and the same in MB/s of text: a tracking line carries twice
    a Postfix line's bytes."""
    rates, unparsed = [], 0
    for _ in range(runs):
        parse = PARSERS[family]().parse
        start = time.perf_counter()
        unparsed = sum(1 for line in log if parse(line) is None)
        rates.append(len(log) / (time.perf_counter() - start))
    size = sum(map(len, log)) + len(log)  # with the newlines
    rate = statistics.median(rates)
    return {"lines_per_s": rate, "mb_per_s": rate * size / len(log) / 1e6, "runs": rates,
            "unparsed": unparsed}  # fmt: skip


def measure_fail2ban(family: str, log: list[str], runs: int) -> dict[str, object] | None:
    command, name = shutil.which("fail2ban-regex"), FAIL2BAN_FILTERS.get(family)
    if name is None:
        return None
    if command is None:
        return {"skipped": "fail2ban-regex not installed (Debian package fail2ban)"}
    with tempfile.NamedTemporaryFile("w", suffix=".log") as handle:
        handle.write("\n".join(log) + "\n")
        handle.flush()
        rates = []
        for _ in range(runs):
            child = run_child([command, handle.name, name])
            found = F2B_LINES.search(child.stdout)
            if child.returncode != 0 or found is None:
                return {
                    "skipped": f"fail2ban-regex exited {child.returncode}:\n{tail(child.stderr)}"
                }
            rates.append(len(log) / child.wall)
    return {"filter": name, "lines_per_s": statistics.median(rates), "runs": rates,
            "matched": int(found.group(3))}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--lines", type=int, default=1_000_000)
    options.add_argument("--runs", type=int, default=3)
    options.add_argument("--json", action="store_true", help="also print every figure as JSON")
    options.add_argument("--check", action="store_true", help="exit 1 when a budget fails")
    args = options.parse_args(argv)
    results: dict[str, dict[str, object]] = {}
    for family in PARSERS:
        source, files = material(family)
        log = build_log(family, files, args.lines)
        parse = measure_parse(family, log, args.runs)
        budget = TABLE_BUDGET if family in TABLE_FAMILIES else SYSLOG_BUDGET
        results[family] = {
            "material": source, "lines": len(log), "parse": parse, "budget": budget,
            "verdict": "PASS" if float(parse["lines_per_s"]) >= budget else "FAIL",  # type: ignore[arg-type]
            "fail2ban": measure_fail2ban(family, log, args.runs),
        }  # fmt: skip
    print(f"{platform.node()} {platform.processor() or platform.machine()}, "
          f"{args.lines:,} lines per family, median of {args.runs} runs")  # fmt: skip
    print(f"{'family':<20} {'lines/s':>10} {'MB/s':>6} {'budget':>9} {'':<5} {'unparsed':>9}  "
          f"{'fail2ban-regex':>14} {'ratio':>6}  material")  # fmt: skip
    for family, r in results.items():
        parse = r["parse"]
        assert isinstance(parse, dict)
        f2b = r["fail2ban"]
        f2b_rate = f2b.get("lines_per_s") if isinstance(f2b, dict) else None
        ratio = f"{parse['lines_per_s'] / f2b_rate:.1f}x" if f2b_rate else "-"
        print(f"{family:<20} {parse['lines_per_s']:>10,.0f} {parse['mb_per_s']:>6.1f} "
              f"{r['budget']:>9,} {r['verdict']:<5} "
              f"{parse['unparsed']:>9,}  {f'{f2b_rate:,.0f}' if f2b_rate else '-':>14} "
              f"{ratio:>6}  {r['material']}")  # fmt: skip
        if isinstance(f2b, dict) and "skipped" in f2b:
            print(f"  fail2ban-regex skipped: {f2b['skipped']}")
    if args.json:
        print(json.dumps(results, indent=2))
    failed = [f for f, r in results.items() if r["verdict"] != "PASS"]
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
