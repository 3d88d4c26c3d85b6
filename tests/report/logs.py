"""What a test reads from a raw Postfix log itself, to name where pflogsumm's definitions and
the store's differ."""

from __future__ import annotations

import re
from collections.abc import Iterable

_DELIVERY = re.compile(r" ([0-9A-Za-z]+): to=<.*, status=(deferred|sent) ")


def deferred_then_delivered(lines: Iterable[str]) -> tuple[int, int]:
    """Queue ids with a ``status=deferred`` line and a ``status=sent`` one, and their deferral
    lines: pflogsumm counts them as deferred (and their deferrals), the store keeps each
    recipient's last outcome (delivered)."""
    deferrals: dict[str, int] = {}
    delivered: set[str] = set()
    for line in lines:
        if match := _DELIVERY.search(line):
            if match[2] == "deferred":
                deferrals[match[1]] = deferrals.get(match[1], 0) + 1
            else:
                delivered.add(match[1])
    later = [qid for qid in deferrals if qid in delivered]
    return len(later), sum(deferrals[qid] for qid in later)
