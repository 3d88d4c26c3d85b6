"""The README documents every setting, and only settings that exist (datasette's habit)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from detector.config import Settings, SinkSettings, SourceSettings

README = Path(__file__).resolve().parent.parent / "README.md"


def _documented() -> set[str]:
    table = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_.\[\]]+)` \|", table, re.MULTILINE))


def _settings() -> set[str]:
    keys = set()
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if section == "sources":
            keys |= {f"sources[].{name}" for name in SourceSettings.model_fields}
        elif section == "sinks":
            keys.add("sinks[]")
        elif isinstance(model, type) and issubclass(model, BaseModel):
            keys |= {f"{section}.{name}" for name in model.model_fields}
    return keys


def test_every_setting_is_documented_and_every_documented_key_exists() -> None:
    assert _documented() == _settings()


def test_the_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def test_every_sink_field_is_named_in_the_sinks_row() -> None:
    [row] = [line for line in README.read_text().splitlines() if line.startswith("| `sinks[]`")]
    for name in SinkSettings.model_fields:
        assert f"`{name}`" in row, name
