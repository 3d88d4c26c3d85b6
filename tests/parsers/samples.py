"""Reading the annotated sample logs of tests/samples/: each log line is preceded by
``# expect: <JSON>`` (what the parser must yield, or ``null``), in the manner of fail2ban."""

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


def load_samples(family: str) -> list[Sample]:
    samples = []
    for path in sorted((SAMPLES / family).glob("*.log")):
        expected: object = ...
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if raw.startswith("# expect: "):
                expected = json.loads(raw.removeprefix("# expect: "))
            elif raw.startswith("#") or not raw.strip():
                continue
            else:
                if expected is ...:
                    raise AssertionError(f"{path.name}:{number}: log line without '# expect:'")
                assert expected is None or isinstance(expected, dict)
                samples.append(Sample(path, number, raw, expected))
                expected = ...
    return samples
