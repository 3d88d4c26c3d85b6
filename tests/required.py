"""Tests that need a program of the machine (Postfix, pflogsumm, Chromium) skip with the reason
where it is missing, and fail instead where the environment says it must be there (CI sets
``RELAYWATCH_REQUIRE_<NAME>=1``, so that a skip cannot hide those tests)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest


def require(reason: str | None, variable: str, environ: Mapping[str, str] = os.environ) -> None:
    """Nothing when ``reason`` is ``None`` (the program is there); else skip with it, or fail
    when ``variable`` is ``1``."""
    if reason is None:
        return
    if environ.get(variable) == "1":
        pytest.fail(f"{reason} (and {variable}=1)")
    pytest.skip(reason)
