"""The systemd unit in contrib/ is valid and hardened (checked with systemd-analyze)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "relaywatch.service"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _installed_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's relaywatch."""
    relaywatch = Path(sys.executable).parent / "relaywatch"
    unit = tmp_path / "relaywatch.service"
    unit.write_text(UNIT.read_text().replace("/opt/relaywatch/bin/relaywatch", str(relaywatch)))
    return unit


def test_the_unit_verifies(tmp_path: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", str(_installed_copy(tmp_path))], capture_output=True, text=True
    )
    assert result.returncode == 0 and "relaywatch.service" not in result.stderr, result.stderr


def test_the_unit_is_hardened(tmp_path: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(_installed_copy(tmp_path))],
        capture_output=True, text=True,
    )  # fmt: skip
    level = re.search(r"Overall exposure level for relaywatch.service: ([\d.]+)", result.stdout)
    assert level is not None, result.stdout + result.stderr
    assert float(level.group(1)) <= 2.0  # systemd calls up to 2.0 "OK"
