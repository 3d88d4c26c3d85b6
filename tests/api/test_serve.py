"""``relaywatch serve`` answers on a real socket on 127.0.0.1 and stops cleanly."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.net import free_port

RELAYWATCH = Path(sys.executable).parent / "relaywatch"


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def test_serve_answers_on_127_0_0_1_and_stops_on_sigterm(
    write_config: Callable[..., Path],
) -> None:
    port = free_port()
    config = write_config(f'[api]\nlisten = "127.0.0.1:{port}"\n')
    server = subprocess.Popen(
        [str(RELAYWATCH), "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "the API did not come up in 30 s"
                time.sleep(0.2)
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, body = _get(f"http://127.0.0.1:{port}/v1/offenders")
        assert status == 200 and json.loads(body) == {"offenders": [], "next_cursor": None}
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr


def test_serve_on_a_busy_port_is_a_one_line_error(write_config: Callable[..., Path]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(f'[api]\nlisten = "127.0.0.1:{port}"\n')
        result = subprocess.run(
            [str(RELAYWATCH), "--config", str(config), "serve"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("relaywatch: error:"), result.stderr
    assert "Traceback" not in result.stderr
