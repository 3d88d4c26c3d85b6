"""The ``postfix-cidr`` sink: a Postfix ``cidr:`` table of the blocked clients (cidr_table(5)).

Use it first in the relay restrictions, so a blocked client is refused before anything else::

    smtpd_relay_restrictions = check_client_access cidr:/etc/postfix/relaywatch.cidr, ...

Each line is ``value  REJECT relaywatch decision <id>: …``: smtpd answers ``554 5.7.1 …
Client host rejected: relaywatch decision <id>: …`` and logs it, which is how relaywatch
knows its own refusals.  IPv6 values are written without brackets, ranges as CIDR.

Postfix reads a cidr table when an smtpd process starts, so a change reaches new processes
by itself; ``reload_command = "postfix reload"`` makes it apply at once.  Before the file is
replaced, ``postmap -q <first value> cidr:<new file>`` (when postmap is on PATH) must answer
that value's REJECT line without a warning.  postmap runs with a configuration directory of its
own holding an empty ``main.cf``: a cidr table reads the same whatever main.cf says, and postmap
refuses to run at all on a host whose Postfix has no main.cf yet.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from pathlib import Path

from detector.decide import Decision, normal_value
from detector.sinks.files import FileSink, StepFailed, first_line, run
from detector.sinks.sync import Rendered, blocked

HEADER = """\
# Postfix cidr table of the clients relaywatch blocks for relay abuse.
# Managed by relaywatch: every sync rewrites this file, edits are lost.
# main.cf: smtpd_relay_restrictions = check_client_access cidr:/path/to/this/file, ...
"""


def render_cidr(decisions: Sequence[Decision], now: datetime) -> Rendered:
    """The table: one ``value  REJECT <refusal text>`` line per blocked address or range."""
    entries, problems = blocked(decisions, now)
    lines = [f"{normal_value(b.network)}  REJECT {b.text}\n" for b in entries]
    return Rendered(HEADER + "".join(lines), len(entries), problems)


@cache
def postmap_config() -> str:
    """postmap's own configuration directory, made once per process and removed at exit: an
    empty main.cf, dated a minute back (Postfix waits two seconds for a main.cf written within
    the last second to settle)."""
    directory = tempfile.mkdtemp(prefix="relaywatch-postmap-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    main_cf = Path(directory, "main.cf")
    main_cf.write_text("")
    os.utime(main_cf, (time.time() - 60, time.time() - 60))
    return directory


class PostfixCidrSink(FileSink):
    kind = "postfix-cidr"

    def render(self, decisions: Sequence[Decision], now: datetime) -> Rendered:
        return render_cidr(decisions, now)

    def verify(self, candidate: Path) -> str:
        """Ask postmap for the first entry of ``candidate``: it must answer its action."""
        postmap = shutil.which("postmap")
        if postmap is None:
            return "postmap not on PATH, not checked"
        text = candidate.read_text(encoding="utf-8")
        first = next((line for line in text.splitlines() if not line.startswith("#")), None)
        if first is None:
            return "empty table, nothing to check"
        value, action = first.split(None, 1)
        address = value.partition("/")[0]
        done = run([postmap, "-c", postmap_config(), "-q", address, f"cidr:{candidate}"])
        if done.stdout.strip() != action or done.stderr.strip():
            said = first_line(done.stderr) or repr(done.stdout.strip())
            raise StepFailed(f"postmap -q {address} did not answer the table's line: {said}")
        return "checked by postmap"
