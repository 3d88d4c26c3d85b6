"""Fixtures for the sink tests."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest


@pytest.fixture
def postfix_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """An empty Postfix configuration directory as ``MAIL_CONFIG``: postmap refuses to run
    without a main.cf, and the tests must not depend on this machine's.  The file is dated a
    minute back: Postfix waits (2 s) for a main.cf written within the last second to settle."""
    directory = tmp_path_factory.mktemp("postfix")
    main_cf = directory / "main.cf"
    main_cf.write_text("")
    os.utime(main_cf, (time.time() - 60, time.time() - 60))
    monkeypatch.setenv("MAIL_CONFIG", str(directory))
    return directory
