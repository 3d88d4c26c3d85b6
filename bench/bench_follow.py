"""Live following: decision delay, CPU and memory of ``relaywatch run`` (DESIGN.md §5).

    .venv/bin/python bench/bench_follow.py [--rate 1000,10000] [--lines 300000] [--json]

For each ``--rate``, starts a fresh ``relaywatch run`` (SQLite in a temporary directory, API on a
free 127.0.0.1 port) that follows one log, then appends simulated Postfix traffic to that log
at a steady rate, the way syslog does (the lines due every ~10 ms in one write), until
``--lines`` lines are written. ``--probes-per-second`` times a second one of those writes ends
with a relay probe (connect, ``Relay access denied``, disconnect) from an address never seen
before (198.18.0.0/15); a checker thread polls ``GET /v1/offenders/{ip}`` of every pending probe
about every 10 ms (older ones every 5 % of their age) and takes the delay from the write to the
first 200 answer. Every ``--sample-every`` seconds the daemon's RSS and CPU (from /proc) and
how far it has read (``/healthz``) are sampled. Prints a table with the delays, lost probes,
CPU, RSS and the budgets of DESIGN.md §5 (line appended → decision: p95 < 1 s; memory while
following: < 200 MB RSS).
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout: import the packages beside it
    sys.path.insert(0, str(ROOT))

DELAY_BUDGET = 1.0  # seconds, p95 of line appended → decision (DESIGN.md §5)
RSS_BUDGET = 200_000_000  # bytes (200 MB) while following
HOST = "mx1"
PROBE_NETWORK = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544 benchmark addresses
PROBE_PIDS = range(1000, 9000)  # the simulator's pids start at 9000 and only grow
TICK = 0.01  # seconds between writes
GROWTH_SPAN = 100_000  # lines read, at least, for an RSS growth figure
AGE_SHARE = 0.05  # a pending probe is polled at least every 5 % of its age (and --poll-interval)
START_TIMEOUT = 30.0  # seconds for the daemon's API to answer
STOP_TIMEOUT = 30.0  # seconds between SIGTERM and SIGKILL
CLK_TCK = os.sysconf("SC_CLK_TCK")

CONFIG = """\
[network]
internal_networks = ["127.0.0.0/8", "10.0.0.0/8"]
local_domains = ["example.test"]

[database]
url = "sqlite:///{db}"

[api]
listen = "127.0.0.1:{port}"

[[sources]]
path = "{log}"
format = "postfix"
host = "{host}"
"""
TABLE_CONFIG = """
[scoring]
refused_relays_to_block = 1  # each probe is blocked at once: its delay is the push's

[enforcement]
max_new_blocks_per_minute = 100000  # the probes are meant to be blocked, all of them

[[sinks]]
type = "postfix-cidr"
path = "{table}"
"""
"""With ``--until table``: the block of a probe is timed until the Postfix ``cidr:`` table that
the daemon rewrites holds its address."""


# ------------------------------------------------------------------------ helpers


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Api:
    """A keep-alive HTTP connection to the daemon (one per thread: not thread safe)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.port = port
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self.requests = 0
        self.errors = 0

    def get(self, path: str) -> tuple[int, bytes]:
        """Status and body; status 0 when the daemon did not answer (after one retry)."""
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, self.timeout)
            try:
                self.requests += 1
                self._conn.request("GET", path)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    self.errors += 1
        return 0, b""

    def json(self, path: str) -> dict[str, Any] | None:
        status, body = self.get(path)
        if status not in (200, 503):
            return None
        try:
            found: dict[str, Any] = json.loads(body)
        except ValueError:
            return None
        return found

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads), from /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def proc_status(pid: int) -> dict[str, int]:
    """The memory figures (KiB) and thread count of ``pid`` from /proc/PID/status: VmRSS,
    VmHWM (peak), RssAnon (heap, SQLite's page cache), RssFile (mapped files), Threads."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    values = {}
    for line in status.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            values[name] = int(rest.split()[0])
    return values


def proc_rss_kib(pid: int) -> tuple[int, int] | None:
    """VmRSS and VmHWM (peak) of ``pid`` in KiB."""
    values = proc_status(pid)
    if "VmRSS" not in values:
        return None
    return values["VmRSS"], values.get("VmHWM", values["VmRSS"])


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile (``share`` in 0..1) of ``values``; ``inf`` counts as slowest."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def parse_rates(values: list[str] | None) -> list[int]:
    rates = []
    for value in values or ["1000,10000"]:
        for part in value.split(","):
            if part.strip():
                rates.append(int(part.replace("_", "").strip()))
    if not rates or min(rates) < 1:
        raise ValueError("rates must be positive whole numbers of lines a second")
    return rates


# -------------------------------------------------------------------- the daemon


class Daemon:
    """``relaywatch run`` as a child process, in a session of its own (a Ctrl-C reaches only
    the benchmark, which then stops the daemon itself)."""

    def __init__(self, config: Path, port: int, stderr: Path) -> None:
        self.port = port
        self.stderr = stderr
        command = Path(sys.executable).parent / "relaywatch"
        argv = [str(command) if command.exists() else "relaywatch", "--config", str(config), "run"]
        with stderr.open("w") as err:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                cwd=config.parent, start_new_session=True,
            )  # fmt: skip
        self.pid = self.process.pid
        self.exit_code: int | None = None
        self.stop_seconds: float | None = None
        self.killed = False

    def wait_ready(self, api: Api) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"relaywatch run exited {self.process.returncode}:\n{self.tail()}"
                )
            health = api.json("/healthz")
            if health is not None and health.get("sources"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"relaywatch run did not answer within {START_TIMEOUT:g}s")

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not exited ``STOP_TIMEOUT`` seconds later."""
        if self.process.poll() is None:
            started = time.monotonic()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
            self.stop_seconds = time.monotonic() - started
        self.exit_code = self.process.returncode

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.stderr.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])

    def log_summary(self) -> dict[str, int]:
        try:
            text = self.stderr.read_text(errors="replace")
        except OSError:
            return {}
        lines = text.splitlines()
        return {
            "lines": len(lines),
            "tracebacks": text.count("Traceback"),
            "blocks": sum(" WARNING relaywatch: blocked " in line for line in lines),
            "other_warnings": sum(
                "WARNING" in line and " WARNING relaywatch: blocked " not in line for line in lines
            ),
            "errors": sum("ERROR" in line for line in lines),
        }


# ---------------------------------------------------------------- probes, samples


@dataclass
class Probe:
    ip: str
    written: float  # time.monotonic() right after the write that holds its reject
    elapsed: float  # seconds since writing started, at that write
    seen: float | None = None  # time.monotonic() of the first 200 answer
    next_poll: float = 0.0

    @property
    def delay(self) -> float | None:
        return None if self.seen is None else self.seen - self.written


class Checker(threading.Thread):
    """Polls ``/v1/offenders/{ip}`` of every pending probe about every ``interval`` seconds
    (once it is older than ``interval / AGE_SHARE``: every ``AGE_SHARE`` of its age, so the
    error stays under 5 %) until it answers 200 (seen) or ``timeout`` seconds have passed since
    its write (lost)."""

    def __init__(
        self, port: int, interval: float, timeout: float, table: Path | None = None
    ) -> None:
        super().__init__(name="bench-checker", daemon=True)
        self.api = Api(port)
        self.table = None if table is None else Table(table)
        self.interval = interval
        self.timeout = timeout
        self.probes: list[Probe] = []
        self._pending: list[Probe] = []
        self._new: list[Probe] = []
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._added = threading.Event()
        self.lost: list[Probe] = []

    def add(self, probe: Probe) -> None:
        with self._lock:
            self._new.append(probe)
            self.probes.append(probe)
        self._added.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._new)

    def stop(self) -> None:
        self._halt.set()
        self._added.set()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                with self._lock:
                    self._pending += self._new
                    self._new.clear()
                if not self._pending:
                    self._added.wait(0.1)
                    self._added.clear()
                    continue
                for probe in list(self._pending):
                    now = time.monotonic()
                    if now - probe.written > self.timeout:
                        self._pending.remove(probe)
                        self.lost.append(probe)
                        continue
                    if now < probe.next_poll:
                        continue
                    # every ``interval``; a probe older than 20 intervals every 5 % of its
                    # age, so a daemon that fell behind is not also flooded with requests
                    probe.next_poll = now + max(self.interval, AGE_SHARE * (now - probe.written))
                    if self.table is not None:
                        found = self.table.holds(probe.ip)
                    else:
                        found = self.api.get(f"/v1/offenders/{probe.ip}")[0] == 200
                    if found:
                        probe.seen = time.monotonic()
                        self._pending.remove(probe)
                if self._pending:
                    wake = min(p.next_poll for p in self._pending)
                    self._halt.wait(max(0.001, wake - time.monotonic()))
        finally:
            self.api.close()


class Table:
    """The daemon's Postfix ``cidr:`` table, read again when it was replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stat: tuple[int, int] | None = None
        self._addresses: set[str] = set()

    def holds(self, ip: str) -> bool:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        if (stat.st_ino, stat.st_mtime_ns) != self._stat:
            self._stat = (stat.st_ino, stat.st_mtime_ns)
            text = self.path.read_text()
            self._addresses = {line.split()[0] for line in text.splitlines()
                               if line and not line.startswith("#")}  # fmt: skip
        return ip in self._addresses


@dataclass
class Sample:
    seconds: float  # since writing started
    written: int  # lines written so far
    read: int | None  # lines the daemon has read (/healthz)
    lag_bytes: int | None
    rss_mib: float | None
    rss_anon_mib: float | None  # of that, anonymous memory (Python heap, SQLite page cache)
    threads: int | None
    cpu_percent: float | None  # of one core, since the previous sample
    cpu_seconds: float | None  # user + system since the daemon started
    pending_probes: int
    probes: int = 0  # probes written since the previous sample
    probe_p50_ms: float | None = None  # their delays
    probe_max_ms: float | None = None
    probes_lost: int = 0


class Sampler(threading.Thread):
    """Every ``every`` seconds: the daemon's RSS and CPU, how far it has read, lines written."""

    def __init__(
        self,
        daemon: Daemon,
        every: float,
        written: Callable[[], int],
        checker: Checker,
        started: float,
    ) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.daemon_ = daemon
        self.every = every
        self.written = written  # () -> lines written so far
        self.checker = checker
        self.started = started
        self.api = Api(daemon.port)
        self.samples: list[Sample] = []
        self._halt = threading.Event()
        self._last: tuple[float, float] | None = None

    def take(self) -> Sample:
        now = time.monotonic()
        pid = self.daemon_.pid
        cpu = proc_cpu_seconds(pid)
        status = proc_status(pid)
        percent = None
        if cpu is not None and self._last is not None and now > self._last[0]:
            percent = 100 * (cpu - self._last[1]) / (now - self._last[0])
        if cpu is not None:
            self._last = (now, cpu)
        written = self.written()
        health = self.api.json("/healthz")
        source = (health or {}).get("sources") or [{}]
        sample = Sample(
            seconds=now - self.started,
            written=written,
            read=source[0].get("lines"),
            lag_bytes=source[0].get("lag_bytes"),
            rss_mib=status["VmRSS"] / 1024 if "VmRSS" in status else None,
            rss_anon_mib=status["RssAnon"] / 1024 if "RssAnon" in status else None,
            threads=status.get("Threads"),
            cpu_percent=percent,
            cpu_seconds=cpu,
            pending_probes=self.checker.pending(),
        )
        self.samples.append(sample)
        return sample

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            while not self._halt.wait(self.every):
                s = self.take()
                say(
                    f"  {s.seconds:7.1f}s  written {s.written:>11,}  read "
                    f"{'-' if s.read is None else f'{s.read:,}':>11}  lag "
                    f"{'-' if s.lag_bytes is None else f'{s.lag_bytes:,}':>10} B  RSS "
                    f"{'-' if s.rss_mib is None else f'{s.rss_mib:.1f}':>6} MiB (anon "
                    f"{'-' if s.rss_anon_mib is None else f'{s.rss_anon_mib:.1f}':>6})  CPU "
                    f"{'-' if s.cpu_percent is None else f'{s.cpu_percent:.0f}':>4} %  "
                    f"pending probes {s.pending_probes}"
                )
        finally:
            self.api.close()


# ---------------------------------------------------------------------- the writer


def lines_per_session(seed: int, abuse_share: float) -> float:
    """Log lines per simulated session, so the log's time can keep pace with the wall clock."""
    from detector.simulate import traffic

    start = datetime(2026, 12, 1, tzinfo=UTC)
    sample = list(
        islice(traffic(seed=seed, start=start, session_rate=100.0, abuse_share=abuse_share), 50_000)
    )
    last = datetime.fromisoformat(sample[-1].split(" ", 1)[0])
    return len(sample) / ((last - start).total_seconds() * 100.0)


@dataclass
class Written:
    lines: int = 0
    writes: int = 0
    bytes: int = 0
    seconds: float = 0.0  # from the first write to the last
    longest_gap: float = 0.0  # seconds between two writes, at most
    late_ticks: int = 0  # writes more than 100 ms after the previous one
    log_time_drift: float | None = None  # log time of the last traffic line - wall clock (s)


def write_traffic(
    log: Path,
    rate: int,
    total: int,
    probes_per_second: float,
    traffic: Iterator[str],
    checker: Checker,
    progress: Written,
    started: float,
) -> None:
    """Append ``total`` lines at ``rate`` lines/s, the lines due every ``TICK`` in one write,
    with a probe session at the end of a write ``probes_per_second`` times a second."""
    from tests.factories import probe

    probe_gap = 1.0 / probes_per_second if probes_per_second > 0 else math.inf
    next_probe = started + probe_gap / 2
    probe_number = 0
    last_write: float | None = None
    last_traffic = ""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        tick = 0
        while progress.lines < total:
            tick += 1
            now = time.monotonic()
            due = min(total, int((now - started) * rate)) - progress.lines
            chunk: list[str] = []
            ip = None
            if due > 0:
                if now >= next_probe and due >= 3 and probe_number < PROBE_NETWORK.num_addresses:
                    probe_number += 1
                    ip = str(PROBE_NETWORK[probe_number])
                    pid = PROBE_PIDS[probe_number % len(PROBE_PIDS)]
                    probe_lines = probe(datetime.now(UTC), ip, pid=pid)
                    chunk = list(islice(traffic, due - len(probe_lines))) + probe_lines
                    next_probe += probe_gap
                    if next_probe < now:  # behind (a stall): no burst of probes to catch up
                        next_probe = now + probe_gap
                else:
                    chunk = list(islice(traffic, due))
                    if chunk:
                        last_traffic = chunk[-1]
                data = "".join(line + "\n" for line in chunk).encode()
                view = memoryview(data)
                while view:  # O_APPEND: one write of whole lines (a file takes it all at once)
                    view = view[os.write(fd, view) :]
                wrote = time.monotonic()
                if ip is not None:
                    checker.add(Probe(ip, wrote, wrote - started))
                if last_write is not None:
                    gap = wrote - last_write
                    progress.longest_gap = max(progress.longest_gap, gap)
                    progress.late_ticks += gap > 0.1
                last_write = wrote
                progress.lines += len(chunk)
                progress.writes += 1
                progress.bytes += len(data)
                progress.seconds = wrote - started
            pause = started + tick * TICK - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    finally:
        os.close(fd)
    if last_traffic:
        stamp = datetime.fromisoformat(last_traffic.split(" ", 1)[0])
        progress.log_time_drift = stamp.timestamp() - time.time()


# ---------------------------------------------------------------------- one rate


@dataclass
class Result:
    rate: int
    lines: int
    achieved_rate: float | None = None
    written: dict[str, Any] = field(default_factory=dict)
    session_rate: float | None = None
    probes: int = 0
    seen: int = 0
    lost: int = 0
    lost_ips: list[str] = field(default_factory=list)
    p50_ms: float | None = None
    p95_ms: float | None = None  # lost probes count as infinitely late
    p99_ms: float | None = None
    max_ms: float | None = None  # of the probes that appeared
    mean_ms: float | None = None
    cpu_percent: float | None = None  # mean while writing, of one core
    rss_idle_mib: float | None = None  # before the first line
    rss_first_mib: float | None = None  # first sample while writing
    rss_last_mib: float | None = None  # last sample
    rss_max_mib: float | None = None  # largest sample
    rss_peak_mib: float | None = None  # VmHWM at the end
    rss_growth_mib_per_million: float | None = None  # (last - first) per 1M lines read
    lag_lines_at_end: int | None = None  # written - read, right after the last write
    lag_bytes_at_end: int | None = None
    catch_up_seconds: float | None = None  # after the last write, until everything was read
    lag_lines_final: int | None = None  # written - read when the benchmark stopped waiting
    api_requests: int = 0
    api_errors: int = 0
    daemon_exit: int | None = None
    daemon_stop_seconds: float | None = None
    daemon_killed: bool = False
    daemon_log: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    samples: list[Sample] = field(default_factory=list)

    def delay_verdict(self) -> str:
        if self.p95_ms is None:
            return "SKIP"
        return "PASS" if self.p95_ms < DELAY_BUDGET * 1000 else "FAIL"

    def rss_verdict(self) -> str:
        if self.rss_max_mib is None:
            return "SKIP"
        return "PASS" if self.rss_max_mib * 1024 * 1024 < RSS_BUDGET else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdicts"] = {"delay_p95": self.delay_verdict(), "rss": self.rss_verdict()}
        for key in ("p95_ms", "p99_ms", "p50_ms"):
            if out[key] == math.inf:
                out[key] = "lost"  # JSON has no infinity
        return out


def measure(args: argparse.Namespace, rate: int, base: Path) -> Result:
    """One fresh daemon following one log written at ``rate`` lines/s."""
    from detector.simulate import traffic

    result = Result(rate, args.lines)
    work = base / f"rate-{rate}"
    work.mkdir()
    log = work / "mail.log"
    log.touch()
    port = free_port()
    config = work / "relaywatch.toml"
    text = CONFIG.format(db=work / "relaywatch.db", port=port, log=log, host=HOST)
    table = work / "relaywatch.cidr" if args.until == "table" else None
    if table is not None:
        text += TABLE_CONFIG.format(table=table)
    config.write_text(text)
    session_rate = min(10_000.0, rate / args.lines_per_session)
    result.session_rate = session_rate
    daemon = Daemon(config, port, work / "daemon.err")
    api = Api(port)
    checker = Checker(port, args.poll_interval, args.probe_timeout, table)
    progress = Written()
    sampler: Sampler | None = None
    try:
        daemon.wait_ready(api)
        time.sleep(1.0)  # let it settle: the idle figures
        rss = proc_rss_kib(daemon.pid)
        result.rss_idle_mib = None if rss is None else rss[0] / 1024
        lines = traffic(
            seed=args.seed,
            start=datetime.now(UTC),
            session_rate=session_rate,
            abuse_share=args.abuse_share,
            open_relay_clients=1,
        )
        started = time.monotonic()
        cpu_before = proc_cpu_seconds(daemon.pid)
        checker.start()
        sampler = Sampler(daemon, args.sample_every, lambda: progress.lines, checker, started)
        sampler.take()  # at 0 s: the CPU reference
        sampler.start()
        write_traffic(
            log, rate, args.lines, args.probes_per_second, lines, checker, progress, started
        )
        ended = time.monotonic()
        cpu_after = proc_cpu_seconds(daemon.pid)
        if cpu_before is not None and cpu_after is not None and ended > started:
            result.cpu_percent = 100 * (cpu_after - cpu_before) / (ended - started)
        health = api.json("/healthz")
        source = (health or {}).get("sources") or [{}]
        if source[0].get("lines") is not None:
            result.lag_lines_at_end = progress.lines - source[0]["lines"]
            result.lag_bytes_at_end = source[0].get("lag_bytes")
        say(f"  written: {progress.lines:,} lines in {progress.seconds:.1f}s; waiting for the rest")
        # the daemon catches up, the last probes appear (or time out)
        deadline = time.monotonic() + max(args.probe_timeout, args.catch_up_timeout) + 1
        done_reading = False  # everything read, or given up waiting for it
        while time.monotonic() < deadline:
            if not done_reading:
                source = (api.json("/healthz") or {}).get("sources") or [{}]
                read = source[0].get("lines")
                if read is not None:
                    result.lag_lines_final = progress.lines - read
                if read == progress.lines and source[0].get("lag_bytes") == 0:
                    done_reading = True
                    result.catch_up_seconds = time.monotonic() - ended
                elif time.monotonic() - ended > args.catch_up_timeout:
                    done_reading = True  # given up on it; probes may still be pending
            if done_reading and checker.pending() == 0:
                break
            time.sleep(0.05)
        sampler.stop()
        sampler.join(10)
        sampler.take()
        peak = proc_rss_kib(daemon.pid)
        result.rss_peak_mib = None if peak is None else peak[1] / 1024
    except BaseException as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        checker.stop()
        if sampler is not None:
            sampler.stop()
        daemon.stop()
        if checker.ident is not None:  # started
            checker.join(10)
        if sampler is not None and sampler.ident is not None:
            sampler.join(10)
        api.close()
        result.daemon_exit = daemon.exit_code
        result.daemon_stop_seconds = daemon.stop_seconds
        result.daemon_killed = daemon.killed
        result.daemon_log = daemon.log_summary()
        summarise(result, progress, checker, sampler)
    return result


def summarise(result: Result, progress: Written, checker: Checker, sampler: Sampler | None) -> None:
    result.written = asdict(progress)
    if progress.seconds > 0:
        result.achieved_rate = progress.lines / progress.seconds
    with checker._lock:
        probes = list(checker.probes)
    result.probes = len(probes)
    delays = [p.delay for p in probes if p.delay is not None]
    lost = [p for p in probes if p.delay is None]
    result.seen = len(delays)
    result.lost = len(lost)
    result.lost_ips = [p.ip for p in lost][:20]
    every = [*delays, *([math.inf] * len(lost))]
    for name, share in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        value = percentile(every, share)
        setattr(result, name, None if value is None else value * 1000)
    if delays:
        result.max_ms = max(delays) * 1000
        result.mean_ms = statistics.fmean(delays) * 1000
    result.api_requests = checker.api.requests + (sampler.api.requests if sampler else 0)
    result.api_errors = checker.api.errors + (sampler.api.errors if sampler else 0)
    if sampler is None:
        return
    samples = sampler.samples
    # the probes written in each sample's interval, and how late they were
    bounds = [0.0, *(s.seconds for s in samples[1:])]
    for index, sample in enumerate(samples[1:], start=1):
        inside = [p for p in probes if bounds[index - 1] <= p.elapsed < bounds[index]]
        sample.probes = len(inside)
        found = [p.delay * 1000 for p in inside if p.delay is not None]
        sample.probes_lost = len(inside) - len(found)
        if found:
            sample.probe_p50_ms = percentile(found, 0.5)
            sample.probe_max_ms = max(found)
    result.samples = samples
    writing = [s for s in samples[1:] if s.rss_mib is not None and s.seconds <= progress.seconds]
    rss = [s for s in samples if s.rss_mib is not None]
    if writing:
        result.rss_first_mib = writing[0].rss_mib
    if rss:
        result.rss_last_mib = rss[-1].rss_mib
        result.rss_max_mib = max(s.rss_mib or 0.0 for s in rss)
    # per line the daemon read (what it holds depends on that, not on what was written); over
    # fewer lines than GROWTH_SPAN the figure is noise
    read = [(s.read, s.rss_mib) for s in samples if s.read and s.rss_mib is not None]
    if len(read) >= 3 and read[-1][0] - read[0][0] >= GROWTH_SPAN:
        (first_read, first_rss), (last_read, last_rss) = read[0], read[-1]
        assert first_rss is not None and last_rss is not None
        result.rss_growth_mib_per_million = (
            (last_rss - first_rss) / (last_read - first_read) * 1_000_000
        )


# ------------------------------------------------------------------------ report


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if value == math.inf:
        return "lost"
    return f"{value:,.{digits}f}"


def report(args: argparse.Namespace, results: list[Result]) -> str:
    out = [
        f"relaywatch follow benchmark: {args.lines:,} lines per rate, "
        f"{args.probes_per_second:g} probes/s, polled every {args.poll_interval * 1000:g} ms "
        f"(older than {args.poll_interval / AGE_SHARE:g}s: every 5 % of their age), "
        f"lost after {args.probe_timeout:g}s; delay until "
        + ("the API knows the probe" if args.until == "api" else "the cidr: table blocks it"),
        f"Python {platform.python_version()}, {os.cpu_count()} CPU(s), {platform.machine()}",
        "",
        f"{'rate':>7} {'achieved':>9} {'lines':>10} {'probes':>6} {'p50':>7} {'p95':>7} "
        f"{'p99':>7} {'max':>7} {'lost':>5} {'CPU %':>6} {'RSS first':>9} {'last':>6} "
        f"{'max':>6}  {'p95<1s':<7}RSS<200MB",
        f"{'lines/s':>7} {'lines/s':>9} {'':>10} {'':>6} {'ms':>7} {'ms':>7} {'ms':>7} "
        f"{'ms':>7} {'':>5} {'':>6} {'MiB':>9} {'MiB':>6} {'MiB':>6}",
        "-" * 118,
    ]
    for r in results:
        out.append(
            f"{r.rate:>7,} {fmt(r.achieved_rate):>9} {r.written.get('lines', 0):>10,} "
            f"{r.probes:>6,} {fmt(r.p50_ms):>7} {fmt(r.p95_ms):>7} {fmt(r.p99_ms):>7} "
            f"{fmt(r.max_ms):>7} {r.lost:>5,} {fmt(r.cpu_percent):>6} "
            f"{fmt(r.rss_first_mib, 1):>9} {fmt(r.rss_last_mib, 1):>6} "
            f"{fmt(r.rss_max_mib, 1):>6}  {r.delay_verdict():<7}{r.rss_verdict()}"
        )
    out.append("")
    for r in results:
        lag = (
            f"lag right after the last write {fmt(r.lag_lines_at_end)} lines "
            f"({fmt(r.lag_bytes_at_end)} bytes), "
            + (
                f"all read {r.catch_up_seconds:.1f}s later"
                if r.catch_up_seconds is not None
                else f"still {fmt(r.lag_lines_final)} lines behind after {args.catch_up_timeout:g}s"
            )
        )
        out.append(f"{r.rate:,} lines/s: {lag}")
        out.append(
            f"{r.rate:,} lines/s: delay mean {fmt(r.mean_ms)} ms; RSS idle "
            f"{fmt(r.rss_idle_mib, 1)} MiB, growth {fmt(r.rss_growth_mib_per_million, 1)} MiB "
            f"per 1M lines read (first sample with lines read to the last); "
            f"{len(r.samples)} samples every {args.sample_every:g}s"
        )
        w = r.written
        if w:
            out.append(
                f"{r.rate:,} lines/s: {w['writes']:,} writes, longest gap between writes "
                f"{w['longest_gap'] * 1000:.0f} ms ({w['late_ticks']} over 100 ms); log time "
                f"of the last line {fmt(w['log_time_drift'], 1)}s from the wall clock; "
                f"{r.api_requests:,} API requests ({r.api_errors} failed)"
            )
        stop = (
            f"daemon exit {r.daemon_exit}"
            + (" (SIGKILL)" if r.daemon_killed else "")
            + (f" {r.daemon_stop_seconds:.1f}s after SIGTERM" if r.daemon_stop_seconds else "")
        )
        log = r.daemon_log
        if log:
            stop += (
                f"; its log: {log['lines']} lines, {log['blocks']} blocks, "
                f"{log['other_warnings']} other warnings, "
                f"{log['errors']} errors, {log['tracebacks']} tracebacks"
            )
        out.append(f"{r.rate:,} lines/s: {stop}")
        if r.lost:
            out.append(f"{r.rate:,} lines/s: lost probes (first 20): {', '.join(r.lost_ips)}")
        if r.error:
            out.append(f"{r.rate:,} lines/s: ERROR: {r.error}")
    out.append(
        "p50/p95/p99 count lost probes as infinitely late; max is of the probes that appeared. "
        "CPU % is of one core, mean while writing."
    )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--rate",
        action="append",
        metavar="LINES_PER_S",
        help="lines/s written; repeatable or a comma list (1000,10000)",
    )
    parser.add_argument("--lines", type=int, default=300_000, help="lines per rate (300000)")
    parser.add_argument(
        "--probes-per-second", type=float, default=5.0, help="relay probes a second (5)"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.01,
        help="seconds between polls of a pending probe (0.01); a probe older than 20 intervals "
        "is polled every 5 %% of its age",
    )
    parser.add_argument(
        "--probe-timeout", type=float, default=30.0, help="seconds before a probe is lost (30)"
    )
    parser.add_argument(
        "--catch-up-timeout",
        type=float,
        default=120.0,
        help="seconds to wait after the last write for the daemon to read everything (120)",
    )
    parser.add_argument(
        "--sample-every", type=float, default=5.0, help="seconds between samples (5)"
    )
    parser.add_argument(
        "--until",
        choices=("api", "table"),
        default="api",
        help="time a probe until the API knows it (api: GET /v1/offenders/{ip} answers 200) or "
        "until the Postfix cidr: table the daemon keeps blocks it (table: each probe blocked "
        "at once)",
    )
    parser.add_argument("--seed", type=int, default=1, help="generator seed (1)")
    parser.add_argument(
        "--abuse-share",
        type=float,
        default=0.1,
        help="share of sessions from the simulator's relay abusers (0.1)",
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (logs, databases)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a budget fails")
    args = parser.parse_args(argv)
    try:
        rates = parse_rates(args.rate)
    except ValueError as exc:
        parser.error(f"--rate: {exc}")
    if args.lines < 1 or args.probes_per_second < 0 or args.poll_interval <= 0:
        parser.error("--lines must be positive, --probes-per-second not negative")
    if args.sample_every <= 0 or args.probe_timeout <= 0 or args.catch_up_timeout < 0:
        parser.error("--sample-every and --probe-timeout must be positive")

    def terminated(_signal: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # SIGTERM: stop the daemon in the finally blocks too

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    args.lines_per_session = lines_per_session(args.seed, args.abuse_share)
    results: list[Result] = []
    keep = Path(args.keep).resolve() if args.keep else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        base_dir = Path(tempfile.mkdtemp(prefix="rw-follow-", dir=keep))
        cleanup = None
    else:
        cleanup = tempfile.TemporaryDirectory(prefix="rw-follow-")
        base_dir = Path(cleanup.name)
    try:
        for rate in rates:
            seconds = args.lines / rate
            say(
                f"rate {rate:,} lines/s: {args.lines:,} lines, about {seconds:,.0f}s "
                f"(work dir {base_dir / f'rate-{rate}'})"
            )
            results.append(measure(args, rate, base_dir))
    except KeyboardInterrupt:
        say("interrupted: the daemon was stopped")
        if results:
            print(report(args, results))
        return 130
    finally:
        if cleanup is not None:
            cleanup.cleanup()
        else:
            say(f"kept {base_dir}")
    print(report(args, results))
    if args.json:
        figures = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "lines_per_rate": args.lines,
            "probes_per_second": args.probes_per_second,
            "until": args.until,
            "poll_interval": args.poll_interval,
            "probe_timeout": args.probe_timeout,
            "lines_per_session": args.lines_per_session,
            "budgets": {"delay_p95_seconds": DELAY_BUDGET, "rss_bytes": RSS_BUDGET},
            "runs": [r.as_dict() for r in results],
        }
        print(json.dumps(figures, indent=2))
    failed = any("FAIL" in (r.delay_verdict(), r.rss_verdict()) for r in results)
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
