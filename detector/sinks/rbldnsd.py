"""The ``rbldnsd`` sink: an ``ip4set`` zone file, so mail servers anywhere can refuse the
blocked clients through DNS (Postfix ``reject_rbl_client``, Exim ``dnslists``, Sendmail
``FEATURE(`dnsbl')``, Exchange IP Block List providers).

Each line is ``value :127.0.0.2:<refusal text>``: the A record says "listed", and the TXT
record, which the mail server quotes in its refusal and log, is the decision's text; it is
given per entry because it names the decision.  Serve it with e.g.
``rbldnsd -b 127.0.0.1 bl.example.org:ip4set:/var/lib/rbldnsd/relaywatch``.  rbldnsd looks
at the file's mtime every minute (``-c``) and reloads it, so no reload is needed.

An ip4set holds IPv4 only: IPv6 decisions are left out of this file, and the sync's message
counts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from detector.decide import Decision, normal_value
from detector.sinks.files import FileSink
from detector.sinks.sync import Rendered, blocked_ipv4

LISTED = "127.0.0.2"  # the A record of a listed address, by DNSBL custom

HEADER = """\
# rbldnsd ip4set of the clients relaywatch blocks for relay abuse.
# Managed by relaywatch: every sync rewrites this file, edits are lost.
# Serve with: rbldnsd ... bl.example.org:ip4set:/path/to/this/file (reread by mtime)
"""


def render_ip4set(decisions: Sequence[Decision], now: datetime) -> Rendered:
    """The zone: one ``value :127.0.0.2:<refusal text>`` line per IPv4 address or range."""
    ipv4, problems = blocked_ipv4(decisions, now, "an ip4set is")
    lines = [f"{normal_value(b.network)} :{LISTED}:{b.text}\n" for b in ipv4]
    return Rendered(HEADER + "".join(lines), len(ipv4), problems)


class RbldnsdSink(FileSink):
    kind = "rbldnsd"

    def render(self, decisions: Sequence[Decision], now: datetime) -> Rendered:
        return render_ip4set(decisions, now)
