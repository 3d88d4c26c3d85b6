"""Every annotated sample line of every family yields exactly what its annotation says, and
every family and every branch of its grammars has samples."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from parsers import PARSERS
from parsers.events import Event, event_summary
from tests.parsers.samples import load_file, sample_files

CLOCK = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
"""Samples are read with the clock at 2026-12-01T00:00:00Z and local time in UTC."""

FILES = [(family, path) for family in PARSERS for path in sample_files(family)]


def summary(event: Event) -> dict[str, object]:
    """An event in the form the annotations write it."""
    got: dict[str, object] = {
        "time": datetime.fromtimestamp(event.time, UTC).isoformat().replace("+00:00", "Z")
    }
    for name, value in event_summary(event).items():
        got[name] = list(value) if isinstance(value, tuple) else value
    return got


@pytest.mark.parametrize(("family", "path"), FILES, ids=[f"{f}/{p.name}" for f, p in FILES])
def test_sample_file_yields_what_its_annotations_say(family: str, path: Path) -> None:
    parser = PARSERS[family](now=lambda: CLOCK, tz=UTC)
    wrong = []
    for sample in load_file(path):
        event = parser.parse(sample.line)
        got = None if event is None else summary(event)
        if got != sample.expected:
            wrong.append(f"line {sample.number}: {sample.line[:120]}\n  want {sample.expected}"
                         f"\n  got  {got}")  # fmt: skip
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("family", list(PARSERS))
def test_every_family_and_every_branch_of_its_grammar_has_a_sample(family: str) -> None:
    factory = PARSERS[family]
    seen: set[str | None] = set()
    files = sample_files(family)
    assert files, f"no samples in tests/samples/{family}/"
    for path in files:
        parser = factory(now=lambda: CLOCK, tz=UTC)
        for sample in load_file(path):
            seen.add(parser.branch(sample.line))
            parser.parse(sample.line)
    assert set(factory.branches) - seen == set(), "branches without a sample"
    assert seen - {None} <= set(factory.branches)
