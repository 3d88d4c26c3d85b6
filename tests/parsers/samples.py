"""Reading the annotated sample logs of tests/samples/<family>/: each log line is preceded by
``# expect: <JSON>`` (what the parser must yield, or ``null``), in the manner of fail2ban.

The line after an annotation is a log line whatever it starts with (W3C and CSV headers start
with ``#``); other lines starting with ``#`` are comments.  A parser reads the log lines of one
file in order, so header-driven families see their headers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@dataclass(frozen=True)
class Sample:
    path: Path
    number: int  # line number in the sample file
    line: str
    expected: dict[str, Any] | None

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.number}"


def sample_files(family: str) -> list[Path]:
    return sorted((SAMPLES / family).glob("*.log"))


def load_samples(family: str) -> list[Sample]:
    return [sample for path in sample_files(family) for sample in load_file(path)]


def load_file(path: Path) -> list[Sample]:
    samples = []
    expected: object = ...
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if expected is not ...:
            assert expected is None or isinstance(expected, dict)
            samples.append(Sample(path, number, raw, expected))
            expected = ...
        elif raw.startswith("# expect: "):
            expected = json.loads(raw.removeprefix("# expect: "))
        elif not raw.startswith("#") and raw.strip():
            raise AssertionError(f"{path.name}:{number}: log line without '# expect:'")
    if expected is not ...:
        raise AssertionError(f"{path.name}: '# expect:' at the end, with no line after it")
    return samples
