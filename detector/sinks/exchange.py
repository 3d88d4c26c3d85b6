"""The ``exchange`` sink: a PowerShell script that brings the Exchange IP Block List to exactly
the blocked clients, and next to it the same clients as address and mask lines for Exchange
5.5 and IIS SMTP.

The script (at ``path``) runs in the Exchange Management Shell of an Edge Transport server,
the only role with the Connection Filtering agent (Exchange 2010-2019).  The entries whose
Comment starts with ``relaywatch`` are relaywatch's: those no decision wants any more are
removed (``Remove-IPBlockListEntry``), the missing ones added (``Add-IPBlockListEntry
-IPAddress`` or ``-IPRange``, with ``-ExpirationTime`` and the refusal text as ``-Comment``);
other entries are left alone.  An entry is known by its Comment, which names the decision
and its end, so a decision made longer is replaced.  The expiry is given as a ``[datetime]``
parsed from ISO 8601 with the invariant culture, never as text in the server's date format.
``reload_command`` can run the script (e.g. over PowerShell remoting); otherwise something on
the Exchange side runs it.

The list (at ``path`` with its suffix replaced by ``.ims.txt``) has one ``IP=a.b.c.d,
MASK=255.255.255.255`` line per blocked IPv4 address or range, the form of the Exchange 5.5
IMS routing restrictions ("hosts and clients that can never route mail") and of the IIS SMTP
relay restrictions; each line follows a comment with its refusal text.  Both know IPv4 only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from detector.config import SinkSettings
from detector.decide import Decision, normal_value
from detector.render import iso
from detector.sinks.files import FileSink
from detector.sinks.sync import Rendered, SyncResult, blocked, blocked_ipv4

SCRIPT_HEADER = """\
# Syncs the Exchange IP Block List to the clients relaywatch blocks for relay abuse.
# Managed by relaywatch: every sync rewrites this file, edits are lost.
# Run it in the Exchange Management Shell of an Edge Transport server. Entries whose
# Comment starts with "relaywatch" are relaywatch's: those not wanted below are removed,
# the missing ones added; other entries are left alone.
$ErrorActionPreference = 'Stop'
"""
SYNC_PRESENT = """\
$present = @(Get-IPBlockListEntry -ResultSize Unlimited |
    Where-Object { $_.Comment -like 'relaywatch*' })
foreach ($entry in $present) {
    if ($wanted -notcontains $entry.Comment) {
        Remove-IPBlockListEntry -Identity $entry.Identity -Confirm:$false
    }
}
$have = @($present | ForEach-Object { $_.Comment })
"""
IMS_HEADER = """\
# Clients relaywatch blocks for relay abuse, as IP address and mask (IPv4 only), for the
# Exchange 5.5 IMS routing restrictions ("hosts and clients that can never route mail")
# and the IIS SMTP relay restrictions.
# Managed by relaywatch: every sync rewrites this file, edits are lost.
"""
_SINGLE_QUOTES = re.compile("(['\u2018\u2019\u201a\u201b])")


def ps_quote(text: str) -> str:
    """``text`` as a PowerShell single-quoted string: a quote inside is doubled (PowerShell
    takes the typographic single quotes for quotes too)."""
    return "'" + _SINGLE_QUOTES.sub(r"\1\1", text) + "'"


def render_powershell(decisions: Sequence[Decision], now: datetime) -> Rendered:
    """The script that syncs the IP Block List to ``decisions``."""
    entries, problems = blocked(decisions, now)
    lines = [SCRIPT_HEADER, "$wanted = @(\n"]
    lines += [f"    {ps_quote(b.text)}\n" for b in entries]
    lines += [")\n", SYNC_PRESENT]
    for b in entries:
        comment = ps_quote(b.text)
        kind = "-IPAddress" if b.network.num_addresses == 1 else "-IPRange"
        until = ps_quote(iso(b.decision.expires_at) or "")
        expires = f"[datetime]::Parse({until}, [Globalization.CultureInfo]::InvariantCulture)"
        lines += [
            f"if ($have -notcontains {comment}) {{\n",
            f"    Add-IPBlockListEntry {kind} {normal_value(b.network)}"
            f" -ExpirationTime ({expires}.ToLocalTime()) -Comment {comment}\n",
            "}\n",
        ]
    return Rendered("".join(lines), len(entries), problems)


def render_ims(decisions: Sequence[Decision], now: datetime) -> Rendered:
    """``IP=…, MASK=…`` lines, each after a comment with its refusal text; IPv4 only."""
    ipv4, problems = blocked_ipv4(decisions, now, "IMS and IIS know")
    lines = [
        f"# {b.text}\nIP={b.network.network_address}, MASK={b.network.netmask}\n" for b in ipv4
    ]
    return Rendered(IMS_HEADER + "".join(lines), len(ipv4), problems)


class _ScriptFile(FileSink):
    kind = "exchange"

    def render(self, decisions: Sequence[Decision], now: datetime) -> Rendered:
        return render_powershell(decisions, now)


class _ImsFile(FileSink):
    kind = "exchange-ims"

    def render(self, decisions: Sequence[Decision], now: datetime) -> Rendered:
        return render_ims(decisions, now)


class ExchangeSink:
    """The script (with ``reload_command``, if any) and the IMS list, synced together."""

    def __init__(self, settings: SinkSettings) -> None:
        self.script = _ScriptFile(settings)
        ims_path = self.script.path.with_suffix(".ims.txt")
        self.ims = _ImsFile(settings.model_copy(update={"path": ims_path, "reload_command": None}))
        self.name = self.script.name

    def sync(self, decisions: Sequence[Decision], now: datetime) -> SyncResult:
        return self._both(self.script.sync(decisions, now), self.ims.sync(decisions, now))

    def check(self, decisions: Sequence[Decision], now: datetime) -> SyncResult:
        return self._both(self.script.check(decisions, now), self.ims.check(decisions, now))

    def close(self) -> None:
        """Nothing to release."""

    def _both(self, script: SyncResult, ims: SyncResult) -> SyncResult:
        return SyncResult(
            self.name, script.ok and ims.ok, script.changed or ims.changed, script.entries,
            f"{script.message} | {ims.sink}: {ims.message}",
        )  # fmt: skip
