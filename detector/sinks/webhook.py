"""The ``webhook`` sink: a JSON POST to ``url`` whenever the decisions change.

The body says what changed since the last delivery and what holds now::

    {"sink": "webhook https://…", "time": "2026-12-02T09:00:00Z",
     "added": [decision, …], "removed": [decision, …], "active": [decision, …]}

with decisions as the blocklist's ``json`` format writes them (user decisions included).  A
decision whose expiry changed is in ``removed`` (as it was) and in ``added`` (as it is).  The
first sync always posts, with every decision in ``added``, so the receiver starts from the
whole list.  A 2xx answer is a delivery; anything else, or no answer within ``timeout``, is
tried again after 0.5 s, 1 s, … up to ``tries`` attempts.  The sink remembers what it last
delivered, so a sync that failed is made good by the next one, which sends the difference to
what the receiver really has.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime

from detector.config import SinkSettings
from detector.decide import Decision
from detector.render import iso
from detector.sinks.sync import SyncResult, decision_json, in_force

_Json = dict[str, object]
_Changes = tuple[dict[int, _Json], list[_Json], list[_Json]]

FIRST_BACKOFF = 0.5  # seconds before the second attempt; doubled before each later one


class WebhookSink:
    """Posts the changes; ``backoff`` is the first pause between attempts."""

    def __init__(self, settings: SinkSettings, *, backoff: float = FIRST_BACKOFF) -> None:
        assert settings.url is not None, "SinkSettings requires a url for a webhook"
        self.url = settings.url
        self.name = f"webhook {self.url}"
        self.dry_run = settings.dry_run
        self.timeout = settings.timeout.total_seconds()
        self.tries = settings.tries
        self.backoff = backoff
        self._delivered: dict[int, _Json] | None = None  # None: nothing yet

    def _changes(self, decisions: Sequence[Decision], now: datetime) -> _Changes:
        """The decisions in force, and what was added and removed since the last delivery."""
        active = {d.id: decision_json(d) for d in in_force(decisions, now)}
        delivered = self._delivered or {}
        added = [body for id_, body in active.items() if delivered.get(id_) != body]
        removed = [body for id_, body in delivered.items() if active.get(id_) != body]
        return active, added, removed

    def sync(self, decisions: Sequence[Decision], now: datetime) -> SyncResult:
        active, added, removed = self._changes(decisions, now)
        if self._delivered is not None and not added and not removed:
            return SyncResult(self.name, True, False, len(active), "unchanged, nothing posted")
        change = f"{len(added)} added, {len(removed)} removed"
        if self.dry_run:
            return SyncResult(self.name, True, True, len(active), f"dry run: would post {change}")
        body = {"sink": self.name, "time": iso(now), "added": added, "removed": removed,
                "active": list(active.values())}  # fmt: skip
        failure = self._post(json.dumps(body).encode())
        if failure is not None:
            return SyncResult(self.name, False, False, len(active), f"not delivered: {failure}")
        self._delivered = active
        return SyncResult(self.name, True, True, len(active), f"posted {change}")

    def check(self, decisions: Sequence[Decision], now: datetime) -> SyncResult:
        """What the next sync would post; a webhook has no check of its own: nothing is sent."""
        active, added, removed = self._changes(decisions, now)
        changed = self._delivered is None or bool(added or removed)
        would = (
            f"would post {len(added)} added, {len(removed)} removed"
            if changed
            else "nothing to post"
        )
        return SyncResult(self.name, True, changed, len(active), would)

    def close(self) -> None:
        """Nothing to release: every post opens and closes its own connection."""

    def _post(self, data: bytes) -> str | None:
        """Deliver ``data``, trying up to ``tries`` times; ``None``, or why the last try failed."""
        why = ""
        for attempt in range(self.tries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(
                self.url, data=data, method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "relaywatch"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                return None
            except urllib.error.HTTPError as exc:
                why = f"HTTP {exc.code} {exc.reason}"
                exc.close()
            except OSError as exc:  # URLError, a refused connection, a timeout
                why = str(getattr(exc, "reason", exc))
        return f"{why} (after {self.tries} tr{'y' if self.tries == 1 else 'ies'})"
