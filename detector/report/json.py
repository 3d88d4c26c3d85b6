"""A report as JSON data: the model's fields by their names, times as ``…Z`` strings."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from detector.render import iso
from detector.report.model import Report


def report_json(report: Report) -> dict[str, Any]:
    """The report as a dict of JSON values (every field of :class:`Report`, nested)."""
    data = _plain(report)
    assert isinstance(data, dict)
    return data


def dumps(report: Report) -> str:
    return json.dumps(report_json(report), indent=2, ensure_ascii=False) + "\n"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value
