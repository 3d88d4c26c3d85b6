"""The Postfix policy service under load: answers/s and latency (issue 5).

    .venv/bin/python bench/bench_policy.py [--decisions 10000] [--requests 100000] [--json]

Starts a :class:`~detector.sinks.policy.PolicySink` on a free 127.0.0.1 port, synced with
``--decisions`` decisions (IPv4 and IPv6 addresses and ranges), and a thread that drains its
records every second as the daemon's enforcer does.  Then ``--processes`` load processes, each
with ``--connections`` persistent connections, send ``--requests`` requests in all, the way
smtpd processes do: a connection sends one request (every attribute Postfix 3.8 sends at RCPT
time) and waits for its answer before the next.  The latency of each request is taken from the
send to the whole answer received; the answers are checked against the decisions (a wrong one
fails the run).  ``--runs`` times, each with a fresh service; the table shows each run and the
median, with the budget (≥ 5,000 answers/s at p99 < 5 ms) as PASS/FAIL.  ``--busy`` adds a
thread that keeps the service's process busy with pure Python, as the daemon's reading and
scoring do (``--busy 0.3``: 30 % of the time), to show what sharing the interpreter lock
costs.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import multiprocessing
import os
import platform
import random
import selectors
import socket
import statistics
import sys
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout: import the packages beside it
    sys.path.insert(0, str(ROOT))

RATE_BUDGET = 5_000.0  # answers/s
P99_BUDGET = 5.0  # ms
ANSWER_TIMEOUT = 10.0  # seconds without any answer: the run is abandoned
DRAIN_INTERVAL = 1.0  # seconds, the enforcer's tick
BUSY_SLOT = 0.01  # seconds: --busy works this share of each slot

# Address spaces (RFC 6598, RFC 2544, RFC 3849): blocked values are drawn from the first
# ones, clients that must get DUNNO from the others, so the right answer is known.
EXACT_V4 = ipaddress.ip_network("198.18.0.0/16")
RANGES_V4 = ipaddress.ip_network("100.64.0.0/12")  # /24 ranges
FREE_V4 = ipaddress.ip_network("100.80.0.0/12")
EXACT_V6 = ipaddress.ip_network("2001:db8::/64")
RANGES_V6 = ipaddress.ip_network("2001:db8:1::/48")  # /64 ranges
FREE_V6 = ipaddress.ip_network("2001:db8:2::/48")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def policy_request(client_address: str, n: int) -> bytes:
    """One RCPT-time request with every attribute of Postfix 3.8 (empty where smtpd has none)."""
    attributes = {
        "request": "smtpd_access_policy", "protocol_state": "RCPT", "protocol_name": "ESMTP",
        "client_address": client_address, "client_name": "unknown", "client_port": "52314",
        "reverse_client_name": "unknown", "server_address": "192.0.2.25", "server_port": "25",
        "helo_name": f"host{n}.example.net", "sender": f"sender{n}@example.net",
        "recipient": f"rcpt{n}@outside.example", "recipient_count": "0", "queue_id": "",
        "instance": f"{n:x}.6571e8a4.b3c1.0", "size": "0", "etrn_domain": "", "stress": "",
        "sasl_method": "", "sasl_username": "", "sasl_sender": "", "ccert_subject": "",
        "ccert_issuer": "", "ccert_fingerprint": "", "ccert_pubkey_fingerprint": "",
        "encryption_protocol": "TLSv1.3", "encryption_cipher": "TLS_AES_256_GCM_SHA384",
        "encryption_keysize": "256", "policy_context": "", "compatibility_level": "3.6",
        "mail_version": "3.8.0", "tls_sni": "",
    }  # fmt: skip
    return ("".join(f"{k}={v}\n" for k, v in attributes.items()) + "\n").encode()


def random_host(rng: random.Random, network: Any) -> str:
    return str(network.network_address + rng.randrange(1, network.num_addresses - 1))


def random_subnet(rng: random.Random, network: Any, prefixlen: int) -> Any:
    count = 1 << (prefixlen - network.prefixlen)
    size = 1 << (network.max_prefixlen - prefixlen)
    return ipaddress.ip_network((int(network.network_address) + rng.randrange(count) * size,
                                 prefixlen))  # fmt: skip


def build_decisions(count: int, seed: int) -> tuple[list[Any], list[tuple[str, bool]]]:
    """``count`` decisions (80 % IPv4 addresses, 10 % IPv4 /24, 8 % IPv6 addresses, 2 % IPv6
    /64) and 5,000 clients, a fifth of them blocked, each with whether it is."""
    from detector.decide import Decision

    rng = random.Random(seed)
    shares = {"v4": 0.80, "v4/24": 0.10, "v6": 0.08, "v6/64": 0.02}
    values: dict[str, set[str]] = {kind: set() for kind in shares}
    for kind, share in shares.items():
        wanted = round(count * share)
        while len(values[kind]) < wanted:
            if kind == "v4":
                values[kind].add(random_host(rng, EXACT_V4))
            elif kind == "v4/24":
                values[kind].add(str(random_subnet(rng, RANGES_V4, 24)))
            elif kind == "v6":
                values[kind].add(random_host(rng, EXACT_V6))
            else:
                values[kind].add(str(random_subnet(rng, RANGES_V6, 64)))
    start = datetime.now(UTC) - timedelta(minutes=5)
    decisions = [
        Decision(n, value, "range" if "/" in value else "ip", "auto", "bench", start,
                 start + timedelta(days=1), None)
        for n, value in enumerate(sorted(v for kind in shares for v in values[kind]), 1)
    ]  # fmt: skip
    by_kind = {kind: sorted(v) for kind, v in values.items()}
    clients: list[tuple[str, bool]] = []
    for _ in range(1000):  # blocked: the address itself or a host of a blocked range
        kind = rng.choices(list(shares), weights=[50, 30, 15, 5])[0]
        value = rng.choice(by_kind[kind])
        host = random_host(rng, ipaddress.ip_network(value)) if "/" in value else value
        clients.append((host, True))
    for n in range(4000):
        clients.append((random_host(rng, FREE_V6 if n % 7 == 0 else FREE_V4), False))
    rng.shuffle(clients)
    return decisions, clients


# ------------------------------------------------------------------------ load process


def load(
    port: int,
    clients: Sequence[tuple[str, bool]],
    count: int,
    connections: int,
    offset: int,
    barrier: Barrier,
    results: Any,
) -> None:
    """One load process: ``connections`` persistent connections, one request outstanding on
    each, ``count`` requests in all; puts its figures on ``results``."""
    requests = [(policy_request(ip, n), blocked) for n, (ip, blocked) in enumerate(clients)]
    selector = selectors.DefaultSelector()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT)
             for _ in range(connections)]  # fmt: skip
    pending: dict[socket.socket, tuple[float, bool, bytearray]] = {}
    latencies = array("d")
    sent = rejects = wrong = errors = 0
    barrier.wait()  # every process connected: start together
    started = time.monotonic()

    def send(sock: socket.socket) -> None:
        nonlocal sent
        request, blocked = requests[(offset + sent) % len(requests)]
        sent += 1
        pending[sock] = (time.perf_counter(), blocked, bytearray())
        sock.sendall(request)

    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
        if sent < count:
            send(sock)
    while pending:
        events = selector.select(ANSWER_TIMEOUT)
        if not events:
            errors += len(pending)
            break
        for key, _ in events:
            sock = key.fileobj  # type: ignore[assignment]
            sent_at, blocked, answer = pending[sock]
            data = sock.recv(4096)
            if not data:
                errors += 1
                selector.unregister(sock)
                del pending[sock]
                continue
            answer += data
            if not answer.endswith(b"\n\n"):
                continue
            latencies.append(time.perf_counter() - sent_at)
            rejected = answer.startswith(b"action=REJECT ")
            rejects += rejected
            wrong += rejected != blocked
            del pending[sock]
            if sent < count:
                send(sock)
    finished = time.monotonic()
    for sock in socks:
        sock.close()
    results.put({
        "started": started, "finished": finished, "latencies": latencies.tobytes(),
        "rejects": rejects, "wrong": wrong, "errors": errors,
    })  # fmt: skip


# ------------------------------------------------------------------------ one run


@dataclass
class Run:
    answers: int
    seconds: float
    answers_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    rejects: int
    wrong: int
    errors: int
    dropped: int
    records: int
    server_cpu_us: float  # CPU of the service's process per answer (all its threads)


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))]


def busy_loop(stop: threading.Event, share: float) -> None:
    """Pure Python for ``share`` of every 10 ms, as the daemon's parsing and scoring: it holds
    the interpreter lock until the interpreter makes it give it up (every 5 ms by default)."""
    while not stop.is_set():
        until = time.perf_counter() + BUSY_SLOT * share
        while time.perf_counter() < until:
            sum(range(200))
        if share < 1:
            time.sleep(BUSY_SLOT * (1 - share))


def one_run(args: argparse.Namespace, decisions: list[Any], clients: list[tuple[str, bool]]) -> Run:
    from detector.config import SinkSettings
    from detector.sinks.policy import PolicySink

    sink = PolicySink(SinkSettings(type="postfix-policy", listen="127.0.0.1:0"))
    result = sink.sync(decisions, datetime.now(UTC))
    assert result.ok and result.entries == len(decisions), result.message
    sink.start()
    stop = threading.Event()
    records = [0]  # taken and let go, as the enforcer stores them and lets them go

    def drain() -> None:  # the enforcer's tick
        while not stop.wait(DRAIN_INTERVAL):
            records[0] += len(sink.drain())

    threads = [threading.Thread(target=drain, daemon=True)]
    if args.busy:
        threads.append(threading.Thread(target=busy_loop, args=(stop, args.busy), daemon=True))
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    barrier = context.Barrier(args.processes + 1)
    results = context.Queue()
    share = args.requests // args.processes
    processes = [
        context.Process(
            target=load,
            args=(sink.address.port, clients, share + (n < args.requests % args.processes),
                  args.connections, n * 997, barrier, results),
        )
        for n in range(args.processes)
    ]  # fmt: skip
    try:
        for process in processes:
            process.start()
        for thread in threads:
            thread.start()
        barrier.wait(timeout=60)
        cpu_before = time.process_time()
        figures = [results.get(timeout=600) for _ in processes]
        cpu = time.process_time() - cpu_before
        for process in processes:
            process.join(30)
    finally:
        stop.set()
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
        for thread in threads:
            thread.join()
        records[0] += len(sink.drain())
        stats = sink.stats()
        sink.close()
    latencies = array("d")
    for figure in figures:
        latencies.frombytes(figure["latencies"])
    ordered = sorted(latencies)
    seconds = max(f["finished"] for f in figures) - min(f["started"] for f in figures)
    return Run(
        answers=len(ordered), seconds=seconds, answers_per_second=len(ordered) / seconds,
        p50_ms=percentile(ordered, 0.50) * 1000, p95_ms=percentile(ordered, 0.95) * 1000,
        p99_ms=percentile(ordered, 0.99) * 1000, max_ms=ordered[-1] * 1000,
        rejects=sum(f["rejects"] for f in figures), wrong=sum(f["wrong"] for f in figures),
        errors=sum(f["errors"] for f in figures), dropped=stats.dropped, records=records[0],
        server_cpu_us=cpu / max(1, len(ordered)) * 1e6,
    )  # fmt: skip


# ------------------------------------------------------------------------ report

COLUMNS = (
    ("run", 6), ("answers", 9), ("answers/s", 10), ("p50 ms", 8), ("p95 ms", 8), ("p99 ms", 8),
    ("max ms", 8), ("rejects", 8), ("wrong", 6), ("errors", 7), ("dropped", 8), ("CPU µs", 7),
)  # fmt: skip


def row(label: str, run: Run) -> str:
    cells = [
        label, f"{run.answers:,}", f"{run.answers_per_second:,.0f}", f"{run.p50_ms:.2f}",
        f"{run.p95_ms:.2f}", f"{run.p99_ms:.2f}", f"{run.max_ms:.2f}", f"{run.rejects:,}",
        f"{run.wrong}", f"{run.errors}", f"{run.dropped}", f"{run.server_cpu_us:.0f}",
    ]  # fmt: skip
    return " ".join(cell.rjust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))


def median_run(runs: list[Run]) -> Run:
    """Each figure's median over the runs (counts: their sums)."""

    def med(name: str) -> float:
        return float(statistics.median(float(getattr(r, name)) for r in runs))

    return Run(
        answers=sum(r.answers for r in runs), seconds=med("seconds"),
        answers_per_second=med("answers_per_second"), p50_ms=med("p50_ms"), p95_ms=med("p95_ms"),
        p99_ms=med("p99_ms"), max_ms=med("max_ms"), rejects=sum(r.rejects for r in runs),
        wrong=sum(r.wrong for r in runs), errors=sum(r.errors for r in runs),
        dropped=sum(r.dropped for r in runs), records=sum(r.records for r in runs),
        server_cpu_us=med("server_cpu_us"),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100_000, help="in all, per run")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8, help="per process")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--busy", type=float, default=0.0, metavar="SHARE",
        help="a Python thread beside the service, busy this share of the time (0 to 1)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="also print every figure as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when the budget fails")
    args = parser.parse_args(argv)
    if min(args.decisions, args.requests, args.processes, args.connections, args.runs) < 1:
        parser.error("every count must be at least 1")
    if not 0 <= args.busy <= 1:
        parser.error("--busy is a share of the time, from 0 to 1")

    load_before = os.getloadavg()
    decisions, clients = build_decisions(args.decisions, args.seed)
    runs = []
    for n in range(args.runs):
        say(f"run {n + 1}/{args.runs}: {args.requests:,} requests over "
            f"{args.processes}×{args.connections} connections")  # fmt: skip
        runs.append(one_run(args, decisions, clients))
    median = median_run(runs)
    rate_ok = median.answers_per_second >= RATE_BUDGET
    p99_ok = median.p99_ms < P99_BUDGET
    correct = median.wrong == 0 and median.errors == 0
    verdict = rate_ok and p99_ok and correct

    print(f"policy service: {args.decisions:,} decisions, {args.processes} processes × "
          f"{args.connections} connections, {args.requests:,} requests a run"
          f"{f', a thread beside it busy {args.busy:.0%} of the time' if args.busy else ''}; "
          f"{os.cpu_count()} CPUs, "
          f"load average before {load_before[0]:.2f}; "
          f"Python {platform.python_version()}")  # fmt: skip
    print(" ".join(name.rjust(width) for name, width in COLUMNS))
    for n, run in enumerate(runs, 1):
        print(row(str(n), run))
    print(row("median", median))
    print(f"≥ {RATE_BUDGET:,.0f} answers/s: {'PASS' if rate_ok else 'FAIL'}   "
          f"p99 < {P99_BUDGET:g} ms: {'PASS' if p99_ok else 'FAIL'}   "
          f"answers right: {'PASS' if correct else 'FAIL'}")  # fmt: skip
    if args.json:
        print(json.dumps({
            "decisions": args.decisions, "requests": args.requests,
            "processes": args.processes, "connections": args.connections, "busy": args.busy,
            "cpus": os.cpu_count(), "load_average_before": load_before,
            "runs": [asdict(r) for r in runs], "median": asdict(median),
            "budget": {"answers_per_second": RATE_BUDGET, "p99_ms": P99_BUDGET},
            "pass": {"rate": rate_ok, "p99": p99_ok, "answers": correct},
        }, indent=2))  # fmt: skip
    return 1 if args.check and not verdict else 0


if __name__ == "__main__":
    sys.exit(main())
