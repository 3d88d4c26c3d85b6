"""``relaywatch demo``: a live simulated relay host, followed by the daemon; within seconds the
API lists the abusers, the open relay's client among them."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

from tests.detector.test_daemon import RELAYWATCH
from tests.net import answers_200, free_port, get_json, wait_for


def test_demo_lists_the_abusers_within_seconds_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    demo = subprocess.Popen(
        [str(RELAYWATCH), "demo", "--dir", str(tmp_path / "demo"), "--listen",
         f"127.0.0.1:{port}", "--seconds", "14"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/v1/offenders"

        wait_for(lambda: answers_200(url), 30, "the demo's API")
        started = time.monotonic()

        def abusers_listed() -> bool:
            offenders = get_json(url)[1]["offenders"]
            refused = [o for o in offenders if o["refused_relays"] >= 5]
            accepted = [o for o in offenders if o["accepted_relays"] > 0]
            return len(refused) >= 2 and len(accepted) == 1 and accepted[0]["blocked"]

        wait_for(abusers_listed, 10, "the abusers in GET /v1/offenders")
        assert time.monotonic() - started < 10
        out, err = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, err
    assert f"API: http://127.0.0.1:{port}/v1/offenders" in out
    assert "offenders so far" in out and "demo stopped:" in out
    assert (tmp_path / "demo" / "log" / "mail.log").stat().st_size > 0
    table = tmp_path / "demo" / "relaywatch.cidr"
    assert f"blocks: {table} (a Postfix cidr: table)" in out
    with sqlite3.connect(tmp_path / "demo" / "relaywatch.db") as connection:
        blocked = connection.execute("SELECT id, value FROM decisions").fetchall()
    lines = table.read_text().splitlines()
    assert blocked and all(
        any(line.startswith(f"{ip}  REJECT relaywatch decision {n}: ") for line in lines)
        for n, ip in blocked
    )
    assert "Traceback" not in err
