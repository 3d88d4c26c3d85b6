"""The ``exim`` sink: an Exim ``iplsearch`` file of the blocked clients, used as a host list.

A plain host list file (``hosts = /path``) cannot say which decision matched, and every
relaywatch refusal must carry its ``relaywatch decision <id>`` text; so each line is a key
(an address or CIDR; IPv6 in quotes, since its colons would end the key) and the refusal
text as its data, and the ACL looks the client up by address and refuses with that data::

    acl_smtp_rcpt:
      deny  hosts   = net-iplsearch;/etc/exim4/relaywatch
            message = $host_data

Exim reads the file again for every SMTP connection (each runs in its own process, and
lookups are cached only inside one), so a change needs no reload.  Lines starting with ``#``
are comments.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from detector.decide import Decision, normal_value
from detector.sinks.files import FileSink
from detector.sinks.sync import Rendered, blocked

HEADER = """\
# Exim iplsearch file of the clients relaywatch blocks for relay abuse.
# Managed by relaywatch: every sync rewrites this file, edits are lost.
# ACL (Exim rereads this file for every connection, no reload needed):
#   deny  hosts   = net-iplsearch;/path/to/this/file
#         message = $host_data
"""


def render_host_list(decisions: Sequence[Decision], now: datetime) -> Rendered:
    """The file: one ``key: <refusal text>`` line per blocked address or range."""
    entries, problems = blocked(decisions, now)
    lines = []
    for b in entries:
        key = normal_value(b.network)
        lines.append(f'"{key}": {b.text}\n' if b.network.version == 6 else f"{key}: {b.text}\n")
    return Rendered(HEADER + "".join(lines), len(entries), problems)


class EximSink(FileSink):
    kind = "exim"

    def render(self, decisions: Sequence[Decision], now: datetime) -> Rendered:
        return render_host_list(decisions, now)
