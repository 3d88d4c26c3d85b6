"""The ``sendmail`` sink: ``Connect:`` entries in Sendmail's access map (``FEATURE(`access_db')``).

relaywatch keeps one block of the access file, between ``# BEGIN relaywatch`` and ``# END
relaywatch``; every other line is kept byte for byte (the block is appended when the file has
none, and the file created when missing).  Each entry refuses the client with the decision's
text, which sendmail logs with the refusal::

    Connect:203.0.113.7	ERROR:5.7.1:550 relaywatch decision 12: relay abuse, blocked until …

Sendmail keys are whole addresses or prefixes of whole octets (``Connect:198.51.100`` is
198.51.100.0/24), so a range that does not end on an octet boundary is written as the
prefixes (or addresses) that make it up: a /20 is sixteen /24 prefixes, a /26 sixty-four
addresses.  IPv6 keys take the ``IPv6:`` prefix (``Connect:IPv6:2001:db8::5``); an IPv6 range
cannot be written reliably (sendmail matches the text of the address, which ``::`` shortens)
and is left out, and said so.

After the file is replaced the map is rebuilt: ``makemap hash <path>`` with the file as its
standard input (``makemap_command`` when set; no shell), then ``reload_command`` if set.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import datetime

from detector.config import SinkSettings
from detector.decide import Decision
from detector.sinks.files import FileSink, StepFailed, run
from detector.sinks.sync import Blocked, Rendered, blocked

BEGIN = "# BEGIN relaywatch"
END = "# END relaywatch"
NOTE = "# Managed by relaywatch: every sync rewrites the lines up to END, edits are lost.\n"


def _keys(b: Blocked) -> list[str]:
    """The access map keys that together cover ``b``'s network."""
    network = b.network
    if network.version == 6:
        return [f"Connect:IPv6:{network.network_address}"]
    boundary = max(8, -(-network.prefixlen // 8) * 8)  # the first whole octet at or after it
    octets = boundary // 8
    return [
        "Connect:" + ".".join(str(part.network_address).split(".")[:octets])
        for part in network.subnets(new_prefix=boundary)
    ]


def render_block(decisions: Sequence[Decision], now: datetime) -> Rendered:
    """The managed block: ``Connect:`` entries that refuse the blocked clients."""
    entries, problems = blocked(decisions, now)
    lines = [f"{BEGIN}\n", NOTE]
    enforced = 0
    for b in entries:
        if b.network.version == 6 and b.network.num_addresses > 1:
            problems.append(f"decision {b.decision.id}: no Sendmail key for IPv6 range {b.network}")
            continue
        enforced += 1
        lines += [f"{key}\tERROR:5.7.1:550 {b.text}\n" for key in _keys(b)]
    lines.append(f"{END}\n")
    return Rendered("".join(lines), enforced, problems)


def splice(current: str | None, block: str) -> str:
    """``current`` with its relaywatch block replaced by ``block`` (appended when it has none)."""
    if not current:
        return block
    lines = current.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN]
    if not starts:
        return current + ("" if current.endswith("\n") else "\n") + block
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == END and i > starts[0]]
    if not ends:
        raise StepFailed(f"has {BEGIN!r} but no {END!r} after it; mend the file by hand")
    return "".join(lines[: starts[0]]) + block + "".join(lines[ends[0] + 1 :])


class SendmailSink(FileSink):
    kind = "sendmail"

    def __init__(self, settings: SinkSettings) -> None:
        super().__init__(settings)
        command = settings.makemap_command
        self.makemap = shlex.split(command) if command else ["makemap", "hash", str(self.path)]

    def render(self, decisions: Sequence[Decision], now: datetime) -> Rendered:
        return render_block(decisions, now)

    def content(self, rendered: Rendered, current: str | None) -> str:
        return splice(current, rendered.text)

    def apply(self) -> str:
        run(self.makemap, stdin=self.path)
        reloaded = super().apply()
        rebuilt = f"ran {shlex.join(self.makemap)} < {self.path}"
        return f"{rebuilt}, {reloaded}" if reloaded else rebuilt
