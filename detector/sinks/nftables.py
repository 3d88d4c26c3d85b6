"""The ``nftables`` sink: an ``nft -f`` script that fills two named sets, one per IP version,
with the blocked clients, each element timing out when its decision expires.

The script adds the table (``table inet relaywatch`` by default) and the sets
``<nft_set>_v4`` and ``<nft_set>_v6`` (``flags interval, timeout``) if they are missing,
flushes them and adds every element, all in the one transaction ``nft -f`` makes of a file,
so the sets are never seen empty.  The sets only name the clients; a rule in the same table
drops their mail, e.g.::

    nft add chain inet relaywatch input '{ type filter hook input priority -10; }'
    nft add rule inet relaywatch input ip saddr @relay_abusers_v4 tcp dport '{ 25, 465, 587 }' drop
    nft add rule inet relaywatch input ip6 saddr @relay_abusers_v6 tcp dport '{ 25, 465, 587 }' drop

An interval set refuses overlapping elements, and decisions overlap (an address inside a
blocked range), so the elements are the pieces of the address space that some decision
covers, each with the timeout of the covering decision that ends last.

``reload_command`` (e.g. ``nft -f /var/lib/relaywatch/relaywatch.nft``) applies the script;
without it the script is only written.  When ``nft`` is on PATH, ``nft -c -f`` checks the new
script before it replaces the old one (it needs the rights ``nft`` needs).
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import shutil
from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from detector.config import SinkSettings
from detector.decide import Decision
from detector.sinks.files import FileSink, run
from detector.sinks.sync import Blocked, Rendered, blocked

DEFAULT_TABLE: str = SinkSettings.model_fields["nft_table"].default
DEFAULT_SET: str = SinkSettings.model_fields["nft_set"].default
MAX_TIMEOUT = 365 * 86400  # seconds; nft refuses very long timeouts, and every sync renews them

HEADER = """\
# nftables sets of the clients relaywatch blocks for relay abuse.
# Managed by relaywatch: every sync rewrites this file, edits are lost.
# Apply with: nft -f /path/to/this/file
"""


def _pieces(entries: list[Blocked], now: datetime) -> list[tuple[int, int, int]]:
    """``(first, last, timeout seconds)`` address pieces of one IP version that do not
    overlap, each with the longest timeout among the networks covering it; neighbouring
    pieces with the same timeout are merged."""
    spans = sorted(
        (int(b.network.network_address), int(b.network.broadcast_address), _timeout(b, now))
        for b in entries
    )
    bounds = sorted({first for first, _, _ in spans} | {last + 1 for _, last, _ in spans})
    covering: list[tuple[int, int]] = []  # heap of (-timeout, last) of the spans begun so far
    pieces: list[tuple[int, int, int]] = []
    started = 0
    for start, end in pairwise(bounds):
        while started < len(spans) and spans[started][0] <= start:
            heapq.heappush(covering, (-spans[started][2], spans[started][1]))
            started += 1
        while covering and covering[0][1] < start:  # spans that ended before this piece
            heapq.heappop(covering)
        if not covering:
            continue
        timeout = -covering[0][0]
        if pieces and pieces[-1][1] == start - 1 and pieces[-1][2] == timeout:
            pieces[-1] = (pieces[-1][0], end - 1, timeout)
        else:
            pieces.append((start, end - 1, timeout))
    return pieces


def _timeout(b: Blocked, now: datetime) -> int:
    seconds = math.ceil((b.decision.expires_at - now).total_seconds())
    return min(max(seconds, 1), MAX_TIMEOUT)


def _element(version: int, first: int, last: int) -> str:
    """An address, a CIDR or a ``first-last`` range, whichever is exact and shortest."""
    address = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    start, end = address(first), address(last)
    if first == last:
        return str(start)
    networks = list(ipaddress.summarize_address_range(start, end))
    return str(networks[0]) if len(networks) == 1 else f"{start}-{end}"


def render_script(
    decisions: Sequence[Decision],
    now: datetime,
    table: str = DEFAULT_TABLE,
    set_name: str = DEFAULT_SET,
) -> Rendered:
    """The ``nft -f`` script for ``decisions``, timeouts counted from ``now``."""
    entries, problems = blocked(decisions, now)
    lines = [HEADER, f"add table inet {table}\n"]
    for version, kind in ((4, "ipv4_addr"), (6, "ipv6_addr")):
        name = f"{set_name}_v{version}"
        lines.append(f"add set inet {table} {name} {{ type {kind}; flags interval, timeout; }}\n")
        lines.append(f"flush set inet {table} {name}\n")
        for first, last, timeout in _pieces(
            [b for b in entries if b.network.version == version], now
        ):
            element = _element(version, first, last)
            lines.append(f"add element inet {table} {name} {{ {element} timeout {timeout}s }}\n")
    return Rendered("".join(lines), len(entries), problems)


class NftablesSink(FileSink):
    kind = "nftables"

    def __init__(self, settings: SinkSettings) -> None:
        super().__init__(settings)
        self.table = settings.nft_table
        self.set_name = settings.nft_set

    def render(self, decisions: Sequence[Decision], now: datetime) -> Rendered:
        return render_script(decisions, now, self.table, self.set_name)

    def verify(self, candidate: Path) -> str:
        nft = shutil.which("nft")
        if nft is None:
            return "nft not on PATH, not checked"
        run([nft, "-c", "-f", str(candidate)])
        return "checked by nft -c"
