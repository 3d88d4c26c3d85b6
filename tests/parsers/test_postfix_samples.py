"""Every annotated Postfix sample line yields exactly what its annotation says."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from parsers.events import event_summary
from parsers.postfix import PostfixParser
from tests.parsers.samples import Sample, load_samples

CLOCK = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
SAMPLES = load_samples("postfix")


def test_samples_cover_every_event_kind() -> None:
    kinds = {s.expected["kind"] for s in SAMPLES if s.expected}
    assert kinds == {
        "connect", "disconnect", "client", "reject", "permit", "auth_failed", "client_note",
        "screen_connect", "screen_pass", "pickup", "message_id", "queued", "delivery", "removed",
    }  # fmt: skip


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
def test_postfix_sample_line(sample: Sample) -> None:
    parser = PostfixParser(now=lambda: CLOCK, tz=UTC)
    event = parser.parse(sample.line)
    if sample.expected is None:
        assert event is None
        return
    assert event is not None, "the line yields no event"
    got = {"time": datetime.fromtimestamp(event.time, UTC).isoformat().replace("+00:00", "Z")}
    got.update(event_summary(event))
    assert got == sample.expected
