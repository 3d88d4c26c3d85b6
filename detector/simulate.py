"""A realistic Postfix 3.7 mail log, and the truth about what it contains.

The simulated host ``mx1`` (``myhostname = mx1.example.test``, public address 192.0.2.25) is the
mail exchanger and outgoing relay of ``example.test``:

- port 25 sits behind postscreen; outside servers deliver mail for local users there
  (``postfix/lmtp`` to Dovecot, ``postfix/local`` for aliases, now and then ``postfix/virtual``);
- internal clients (``localhost`` and app servers in 10.0.0.0/8) use a listener of their own
  (no postscreen) to send mail out through ``postfix/smtp``;
- users log in on ``postfix/submission/smtpd`` (``sasl_username=user@example.test``), from home
  (outside addresses) and from the office;
- local programs hand mail to ``postfix/pickup``;
- ``abusers`` outside clients try to relay and get ``Relay access denied`` (554, now and then
  454), some with several recipients per session, some mixing in a local recipient so that the
  refusals carry the queue id; with ``open_relay_clients`` other outside clients are (wrongly)
  allowed to relay and their mail goes out through ``postfix/smtp``.

Around that: unknown users, RBL, hostname and HELO rejects, SASL password guessing, port
scanners, postscreen drops, deferrals retried minutes later under the same queue id, bounces
with their non-delivery notices, anvil statistics. Outside clients use the documentation ranges
(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) and every outside domain is an
``.example``/``.test``/``example.com``-style name. Abusers, open-relay clients, legitimate
senders, roaming users and other hostile clients never share an address.

Sessions start tens of milliseconds to seconds apart (``session_rate``: 2.5 a second unless
asked) and overlap: a session owns its smtpd process from connect to disconnect (a pid never
carries two sessions at once), processes are reused and replaced the way Postfix's master does
it, and queue manager and delivery lines of earlier messages interleave with newer sessions.
Queue ids are built the way Postfix builds them (microseconds, then the queue file's inode
number), with a long one (``enable_long_queue_ids``) now and then; within one run no queue id is
used twice.

:class:`GroundTruth` is counted line by line as the lines are handed out, so it always describes
exactly the lines written so far:

- ``transactions``: messages that entered the queue from a client (a ``QID: client=`` line) or a
  local program (a ``pickup`` line), plus smtpd sessions that queued nothing but had at least one
  recipient rejected (counted at their first ``NOQUEUE: reject``). A session that queued a
  message and also had recipients rejected is one transaction (those rejects carry the queue
  id). Bounce notices that Postfix queues itself are not transactions: see ``notices``.
- ``refused_relays``: client IP -> ``Relay access denied`` lines.
- ``accepted_relays``: client IP -> ``status=sent`` lines of outside recipients relayed for an
  outside, unauthenticated client.
- ``relay_attempts_by_hour``: UTC hour (``2026-11-30T06``) -> those two kinds of lines.
- ``received``, ``delivered``, ``deferred``, ``bounced``, ``rejected``: the way pflogsumm 1.1.5
  counts them: ``client=`` and ``pickup`` lines; ``status=sent`` lines; distinct queue ids with a
  ``status=deferred`` line; ``status=bounced`` lines; ``reject:`` lines.

:func:`write_days` writes several days, each a simulation of its own with its own truth (a
day with an open relay, a day without abuse …), for tests of what is counted per day.

The output depends on the arguments only: the same arguments give the same lines. Only
:func:`append_live` starts at the current time, and writes each line to its file when its time
comes.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from random import Random
from typing import Final, TypeVar

__all__ = [
    "DEFAULT_START",
    "STYLES",
    "Day",
    "GroundTruth",
    "append_live",
    "main",
    "traffic",
    "write_days",
    "write_log",
]

STYLES: Final = ("rfc3339", "traditional")
DEFAULT_START: Final = datetime(2026, 11, 30, 6, 0, 0, tzinfo=UTC)

LOCAL_DOMAIN: Final = "example.test"
MYHOSTNAME: Final = "mx1.example.test"
SERVER_IP: Final = "192.0.2.25"

_MONTHS: Final = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip
_SECOND: Final = 1_000_000  # the simulator keeps time in integer microseconds
_HOUR: Final = 3600 * _SECOND
_THREE_DIGITS: Final = tuple(f"{n:03d}" for n in range(1000))

# What a line adds to the ground truth when it is written (bit flags).
_TXN: Final = 1
_RECEIVED: Final = 2
_REJECT: Final = 4
_REFUSED: Final = 8
_ACCEPTED: Final = 16
_SENT: Final = 32
_DEFERRED: Final = 64
_BOUNCED: Final = 128
_NOTICE: Final = 256

# One scheduled line: time (µs), text after the host field, truth flags, client IP. Lines are
# sorted by time only, so lines with equal times keep the order they were staged in.
_Line = tuple[int, str, int, str]
_T = TypeVar("_T")
_H = TypeVar("_H")
_DRAW_BITS: Final = 12  # weighted draws pick from tables of 2**12 entries
# A busy Postfix host takes a few hundred sessions a second; far beyond that, sessions less than
# a microsecond apart would pile up in memory faster than they could be written.
_MOST_SESSIONS: Final = 10_000
_LONGEST_NAP: Final = 0.2  # seconds append_live sleeps at most, so that it notices stop quickly


@dataclass
class GroundTruth:
    """What the generated log contains, counted as each line is written."""

    lines: int = 0
    transactions: int = 0
    refused_relays: dict[str, int] = field(default_factory=dict)
    accepted_relays: dict[str, int] = field(default_factory=dict)
    received: int = 0
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    rejected: int = 0
    notices: int = 0  # bounce notices Postfix queued itself (their delivery is in delivered)
    # refused and accepted relays by the UTC hour of their line ("2026-11-30T06")
    relay_attempts_by_hour: dict[str, int] = field(default_factory=dict)

    def record(self, flags: int, client_ip: str, when: int | None = None) -> None:
        """Add what one written line says (its flags are private to this module), written at
        ``when`` (µs since the epoch) if known."""
        if when is not None and flags & (_REFUSED | _ACCEPTED):
            hour = _hour_label(when // _HOUR)
            self.relay_attempts_by_hour[hour] = self.relay_attempts_by_hour.get(hour, 0) + 1
        if flags & _TXN:
            self.transactions += 1
        if flags & _RECEIVED:
            self.received += 1
        if flags & _REJECT:
            self.rejected += 1
        if flags & _REFUSED:
            self.refused_relays[client_ip] = self.refused_relays.get(client_ip, 0) + 1
        if flags & _ACCEPTED:
            self.accepted_relays[client_ip] = self.accepted_relays.get(client_ip, 0) + 1
        if flags & _SENT:
            self.delivered += 1
        if flags & _DEFERRED:
            self.deferred += 1
        if flags & _BOUNCED:
            self.bounced += 1
        if flags & _NOTICE:
            self.notices += 1

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@lru_cache(maxsize=256)
def _hour_label(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%dT%H")


@dataclass(frozen=True, slots=True)
class _Client:
    ip: str
    label: str  # ``name[ip]`` as smtpd logs it
    helo: str
    domain: str  # the domain its mail claims to come from


def _weighted(items: Sequence[_T], weights: Sequence[float]) -> list[_T]:
    """A table to draw ``items`` from with ``table[getrandbits(12)]`` in proportion to
    ``weights`` (each item at least once): one C call per draw on the hot path."""
    size = 1 << _DRAW_BITS
    total = sum(weights)
    counts = [max(1, round(w / total * size)) for w in weights]
    while sum(counts) > size:
        counts[counts.index(max(counts))] -= 1
    counts[0] += size - sum(counts)
    table: list[_T] = []
    for item, n in zip(items, counts, strict=True):
        table.extend([item] * n)
    return table


def _fmt_delay(seconds: float) -> str:
    """Postfix's delay notation: two significant digits below 10 s, whole seconds above."""
    if seconds < 0.005:
        return "0"
    if seconds >= 10:
        return str(int(seconds))
    text = f"{seconds:.2f}" if seconds < 1 else f"{seconds:.1f}"
    return text.rstrip("0").rstrip(".")


def _delays(rnd: Random, transfer_mean: float) -> tuple[str, str]:
    """A ``delay=`` value and its ``delays=a/b/c/d`` breakdown."""
    parts = (
        rnd.expovariate(1 / 0.015),  # before the queue manager
        rnd.expovariate(1 / 0.004),  # in the queue manager
        rnd.expovariate(1 / (transfer_mean / 3)),  # connection setup
        rnd.expovariate(1 / transfer_mean),  # transmission
    )
    return _fmt_delay(sum(parts)), "/".join(_fmt_delay(p) for p in parts)


def _format_counts(pairs: Sequence[tuple[str, int, int]]) -> str:
    """The counters of a ``disconnect`` line: ``name=ok`` or ``name=ok/tried``, then the total."""
    ok = tried = 0
    out = []
    for name, good, total in pairs:
        if total:
            out.append(f"{name}={good}" if good == total else f"{name}={good}/{total}")
            ok += good
            tried += total
    out.append(f"commands={ok}" if ok == tried else f"commands={ok}/{tried}")
    return " ".join(out)


_LONG_QID_DIGITS: Final = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"


def _base(number: int, digits: str, width: int) -> str:
    out = []
    base = len(digits)
    while number:
        number, rest = divmod(number, base)
        out.append(digits[rest])
    return "".join(reversed(out)).rjust(width, digits[0])


_LOCAL_USERS: Final = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    "mallory", "niaj", "oscar", "peggy", "rupert", "sybil", "trent", "victor", "walter",
    "sales", "info", "support", "billing", "hr", "jobs", "press",
)  # fmt: skip
_ALIASES: Final = ("postmaster", "abuse", "root", "hostmaster")
_APP_SENDERS: Final = ("noreply", "alerts", "billing", "notifications", "reports", "no-reply")
_LOCAL_SUFFIX: Final = "@" + LOCAL_DOMAIN
_LOCAL_MAILBOXES: Final = tuple(f"{user}@{LOCAL_DOMAIN}" for user in _LOCAL_USERS)
_LOCAL_ALIASES: Final = tuple(f"{user}@{LOCAL_DOMAIN}" for user in _ALIASES)
_APP_ADDRESSES: Final = tuple(f"{user}@{LOCAL_DOMAIN}" for user in _APP_SENDERS)
_SASL_USERS: Final = _LOCAL_MAILBOXES[:19]
_PEOPLE: Final = (
    "j.smith", "anna", "m.muller", "li.wei", "p.rossi", "k.tanaka", "olga", "ahmed", "maria",
    "tom", "info", "sales", "office", "contact", "orders", "service", "admin", "hello",
)  # fmt: skip
_OUTSIDE_TLDS: Final = ("example", "test", "example.com", "example.net", "example.org")
_FREEMAIL: Final = (
    "freemail.example", "mailbox.example.net", "webpost.test", "tiscali.example",
    "inbox.example.com", "post.example.org",
)  # fmt: skip
_SPAM_HELOS: Final = (
    "WIN-9QL4SDRB93L", "WIN-CLJ1B0GQ6JP", "ylmf-pc", "User", "localhost", "ADMIN-PC",
    "DESKTOP-4K2J9QF", "mail.example.test", "example.test", "smtp.freemail.example",
)  # fmt: skip
_GUESSED_LOGINS: Final = ("admin", "info", "test", "alice", "sales", "webmaster", "office")
_REMOTE_REPLIES: Final = (
    "250 2.0.0 Ok: queued as {rid}",
    "250 2.0.0 OK  {num} {rid} - gsmtp",
    "250 2.6.0 <{mid}> [InternalId={num}] Queued mail for delivery",
    "250 OK id={rid}",
    "250 Requested mail action okay, completed: id={rid}",
)
_DEFER_REASONS: Final = (
    # (reason, dsn, the remote server answered)
    ("connect to {mx}[{ip}]:25: Connection timed out", "4.4.1", False),
    ("host {mx}[{ip}] said: 450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted, "
     "see https://greylist.example/ (in reply to RCPT TO command)", "4.2.0", True),
    ("host {mx}[{ip}] said: 421 4.7.0 Try again later, closing connection. "
     "(in reply to MAIL FROM command)", "4.7.0", True),
    ("host {mx}[{ip}] said: 452 4.2.2 The email account that you tried to reach is over quota "
     "(in reply to RCPT TO command)", "4.2.2", True),
)  # fmt: skip
_BOUNCE_REASONS: Final = (
    ("host {mx}[{ip}] said: 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in "
     "virtual mailbox table (in reply to RCPT TO command)", "5.1.1"),
    ("host {mx}[{ip}] said: 550-5.1.1 The email account that you tried to reach does not exist. "
     "(in reply to RCPT TO command)", "5.1.1"),
    ("host {mx}[{ip}] said: 552 5.2.2 <{rcpt}>: Mailbox full (in reply to RCPT TO command)",
     "5.2.2"),
    ("host {mx}[{ip}] said: 554 5.7.1 <{rcpt}>: Recipient address rejected: Access denied "
     "(in reply to RCPT TO command)", "5.7.1"),
)  # fmt: skip


class _Service:
    """A pool of processes of one Postfix service; each job goes to one of them."""

    def __init__(self, sim: _Simulator, program: str, processes: int, max_use: int) -> None:
        self._sim = sim
        self._program = program
        self._max_use = max_use
        self._prefixes = [self._spawn() for _ in range(processes)]
        self._uses = [sim.rnd.randrange(max_use) for _ in range(processes)]

    def _spawn(self) -> str:
        return f"{self._program}[{self._sim.new_pid()}]: "

    def use(self) -> str:
        """The ``program[pid]: `` prefix of the process that does the next job."""
        i = int(self._sim.random() * len(self._prefixes))
        self._uses[i] += 1
        if self._uses[i] > self._max_use:  # the process exits after max_use jobs; master forks anew
            self._prefixes[i] = self._spawn()
            self._uses[i] = 1
        return self._prefixes[i]


class _Daemons:
    """smtpd processes: each serves one session at a time, from connect to disconnect."""

    MAX_USE: Final = 100  # Postfix max_use
    MAX_IDLE: Final = 100 * _SECOND  # Postfix max_idle

    def __init__(self, sim: _Simulator, program: str) -> None:
        self._sim = sim
        self._program = program
        self._prefix: list[str] = []
        self._free_at: list[int] = []
        self._uses: list[int] = []

    def acquire(self, t: int) -> tuple[int, str]:
        """A process free at ``t``, busy until :meth:`release`: its slot and ``prefix``."""
        free = self._free_at
        idle = [i for i, at in enumerate(free) if at <= t]
        if idle:
            slot = idle[int(self._sim.random() * len(idle))]
            if self._uses[slot] >= self.MAX_USE or t - free[slot] > self.MAX_IDLE:
                self._prefix[slot] = f"{self._program}[{self._sim.new_pid()}]: "
                self._uses[slot] = 0
        else:
            slot = len(free)
            self._prefix.append(f"{self._program}[{self._sim.new_pid()}]: ")
            free.append(0)
            self._uses.append(0)
        free[slot] = 1 << 62
        self._uses[slot] += 1
        return slot, self._prefix[slot]

    def release(self, slot: int, t: int) -> None:
        self._free_at[slot] = t


class _Simulator:
    """Builds sessions into :attr:`stage`; :meth:`chunks` hands the lines out in time order and
    :meth:`render` puts the syslog header in front.

    The session builders write their random delays out inline, in microseconds, rather than
    through a helper: a Python call costs about as much as writing a log line.
    """

    def __init__(
        self,
        *,
        seed: int,
        start: datetime,
        style: str,
        host: str,
        abusers: int,
        abuse_share: float,
        open_relay_clients: int,
        session_rate: float,
    ) -> None:
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
        if not 0 <= abuse_share <= 1:
            raise ValueError(f"abuse_share must be between 0 and 1, not {abuse_share}")
        if abusers < 0 or open_relay_clients < 0:
            raise ValueError("abusers and open_relay_clients cannot be negative")
        if not 0 < session_rate <= _MOST_SESSIONS:
            raise ValueError(
                f"session_rate must be more than 0 and at most {_MOST_SESSIONS:,} sessions a "
                f"second, not {session_rate}"
            )
        self.rnd = rnd = Random(seed)
        self.random = rnd.random
        self.bits = rnd.getrandbits
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self._tz: tzinfo = start.tzinfo or UTC
        self._rfc3339 = style == "rfc3339"
        self._host = host
        self._start = int(start.timestamp() * _SECOND)
        self.clock = self._start  # when the next session starts
        self._session_rate = session_rate
        # sessions start at least an 80th of the mean gap apart: 5 ms at 2.5 sessions a second
        self._least_gap = round(_SECOND / (80 * session_rate))
        self._pid = rnd.randrange(9000, 30000)
        self._inode = rnd.randrange(0x100000, 0x200000)
        self._stamp_second = -1
        self._stamp_text = ""
        self.stage: list[_Line] = []

        self._smtpd = _Daemons(self, "postfix/smtpd")
        self._submission = _Daemons(self, "postfix/submission/smtpd")
        # long-lived daemons: one process each
        self._postscreen = f"postfix/postscreen[{self.new_pid()}]: "
        self._qmgr = f"postfix/qmgr[{self.new_pid()}]: "
        self._anvil = f"postfix/anvil[{self.new_pid()}]: "
        self._pickup = f"postfix/pickup[{self.new_pid()}]: "
        self._cleanup = _Service(self, "postfix/cleanup", 3, 100)
        self._smtp = _Service(self, "postfix/smtp", 6, 100)
        self._lmtp = _Service(self, "postfix/lmtp", 3, 100)
        self._local = _Service(self, "postfix/local", 2, 100)
        self._virtual = _Service(self, "postfix/virtual", 1, 100)
        self._bounce = _Service(self, "postfix/bounce", 1, 100)
        self._screened: set[str] = set()  # clients in postscreen's cache
        self._next_anvil = self.clock + rnd.randrange(60, 600) * _SECOND
        self._anvil_ip = SERVER_IP

        self._remote_delays = [_delays(rnd, 0.25) for _ in range(256)]
        self._local_delays = [_delays(rnd, 0.01) for _ in range(256)]
        self._sizes = [350 + int(rnd.lognormvariate(8.3, 1.1)) for _ in range(1024)]
        self._disconnects: dict[tuple[tuple[str, int, int], ...], str] = {}
        self._build_clients(abusers, open_relay_clients)
        self._abuse_share = abuse_share if (abusers or open_relay_clients) else 0.0
        mix: list[tuple[Callable[[int], None], float]] = [
            (self._inbound, 0.42),
            (self._outbound, 0.20),
            (self._submission_session, 0.08),
            (self._pickup_message, 0.03),
            (self._unknown_user, 0.06),
            (self._policy_reject, 0.03),
            (self._sasl_guessing, 0.05),
            (self._scanner, 0.05),
            (self._postscreen_drop, 0.04),
        ]
        self._kinds = _weighted([kind for kind, _ in mix], [w for _, w in mix])

    # ----------------------------------------------------------------- population

    def _build_clients(self, abusers: int, open_relay_clients: int) -> None:
        rnd = self.rnd

        def outside_domain() -> str:
            stem = rnd.choice(("mail", "shop", "news", "partner", "corp", "media", "travel"))
            return f"{stem}{rnd.randrange(1, 400)}.{rnd.choice(_OUTSIDE_TLDS)}"

        def unknown(ip: str, domain: str, helo: str | None = None) -> _Client:
            return _Client(ip, f"unknown[{ip}]", helo or f"mail.{domain}", domain)

        def named(ip: str, name: str, domain: str) -> _Client:
            return _Client(ip, f"{name}[{ip}]", name, domain)

        # Outside mail servers that send mail to example.test, a few of them often.
        v4 = [f"192.0.2.{n}" for n in range(30, 200) if f"192.0.2.{n}" != SERVER_IP]
        v4 += [f"198.51.100.{n}" for n in range(1, 120)]
        senders: list[_Client] = []
        for ip in rnd.sample(v4, 150):
            domain = outside_domain()
            if rnd.random() < 0.2:
                senders.append(unknown(ip, domain))
            else:
                prefix = rnd.choice(("mail", "mx", "smtp", "out"))
                senders.append(named(ip, f"{prefix}{rnd.randrange(1, 9)}.{domain}", domain))
        for n in range(10):
            domain = outside_domain()
            ip = f"2001:db8:{rnd.randrange(0x10, 0xFF):x}::{rnd.randrange(1, 0xFFF):x}"
            senders.append(
                unknown(ip, domain) if n % 3 == 0 else named(ip, f"mail6.{domain}", domain)
            )
        self._senders = _weighted(senders, [1 / (i + 1) ** 0.9 for i in range(len(senders))])

        # Outside clients rejected for other reasons, scanners, password guessers.
        hostile = [
            unknown(f"203.0.113.{n}", outside_domain(), rnd.choice(_SPAM_HELOS))
            for n in range(200, 255)
        ]
        hostile += [
            unknown(f"192.0.2.{n}", outside_domain(), rnd.choice(_SPAM_HELOS))
            for n in range(200, 255)
        ]
        hostile.append(unknown("2001:db8:bf::25", "bots.example", "ylmf-pc"))
        self._hostile = hostile

        # Users submitting with SASL, from home (outside addresses) and from the office.
        roam: list[_Client] = []
        for n in range(128, 192, 3):
            ip = f"198.51.100.{n}"
            roam.append(
                named(ip, f"cpe-198-51-100-{n}.isp.example", "isp.example")
                if n % 2
                else unknown(ip, "isp.example", f"[{ip}]")
            )
        roam.append(named("2001:db8:cafe::42", "home42.isp.example", "isp.example"))
        roam += [
            named(f"10.0.5.{n}", f"ws{n}.office.example.test", LOCAL_DOMAIN) for n in range(20, 30)
        ]
        self._roaming = roam

        # Internal clients that relay mail out.
        internal = [named("127.0.0.1", "localhost", LOCAL_DOMAIN)]
        internal += [
            named(f"10.0.1.{10 + n}", f"app{n:02d}.example.test", LOCAL_DOMAIN) for n in range(1, 7)
        ]
        internal.append(named("10.0.2.5", "web01.example.test", LOCAL_DOMAIN))
        internal.append(unknown("10.0.3.7", LOCAL_DOMAIN, "scanner"))
        self._internal = _weighted(internal, [5, 3, 3, 2, 2, 1, 1, 2, 0.3])

        # Relay abusers, a few of them busy.
        ips = rnd.sample([f"203.0.113.{n}" for n in range(1, 200)], min(abusers, 199))
        ips += [f"2001:db8:bad::{n + 1:x}" for n in range(abusers - len(ips))]
        if abusers >= 4:
            ips[3] = "2001:db8:bad:25::7"
        abuse: list[_Client] = []
        for ip in ips:
            helo = rnd.choice((*_SPAM_HELOS, f"[{ip}]"))
            if rnd.random() < 0.3 and ":" not in ip:
                name = ip.replace(".", "-") + ".dyn.broadband.example"
                abuse.append(_Client(ip, f"{name}[{ip}]", helo, "broadband.example"))
            else:
                abuse.append(unknown(ip, "broadband.example", helo))
        self._abuser_count = len(abuse)
        self._abusers = (
            _weighted(abuse, [1 / (i + 1) ** 0.7 for i in range(len(abuse))]) if abuse else []
        )

        ips = rnd.sample([f"198.51.100.{n}" for n in range(192, 255)], min(open_relay_clients, 63))
        ips += [f"2001:db8:0:1e1a::{n + 1:x}" for n in range(open_relay_clients - len(ips))]
        self._open_relays = [unknown(ip, "bulk.example", rnd.choice(_SPAM_HELOS)) for ip in ips]

        # Outside recipients, a few domains often, and the servers that take their mail.
        domains = [outside_domain() for _ in range(300)] + list(_FREEMAIL)
        weights = [1 / (i + 1) ** 0.8 for i in range(len(domains))]
        self._outside_domains = _weighted(domains, weights)
        self._mx: dict[str, tuple[str, str]] = {}

    # -------------------------------------------------------------------- helpers

    def add(self, t: int, text: str, flags: int = 0, client_ip: str = "") -> None:
        """Stage one line: its time, its text after the host field, what it adds to the
        ground truth and for which client."""
        self.stage.append((t, text, flags, client_ip))

    def new_pid(self) -> int:
        self._pid += self.rnd.randrange(1, 24)
        return self._pid

    def _qid(self, t: int) -> str:
        """A queue id as Postfix makes it: from the microseconds and the queue file's inode."""
        self._inode += 1 + self.bits(1)
        if self.random() < 0.01:
            sec, usec = divmod(t, _SECOND)
            return (
                _base(sec, _LONG_QID_DIGITS, 6)
                + _base(usec, _LONG_QID_DIGITS, 4)
                + "z"
                + _base(self._inode, _LONG_QID_DIGITS[:51], 1)
            )
        return f"{t % _SECOND:05X}{self._inode:X}"

    def _stamp(self, t: int) -> str:
        """``YYYYmmddHHMMSS`` of ``t``, as in the message-ids Postfix and apps make up."""
        sec = t // _SECOND
        if sec != self._stamp_second:
            self._stamp_second = sec
            self._stamp_text = datetime.fromtimestamp(sec, self._tz).strftime("%Y%m%d%H%M%S")
        return self._stamp_text

    def _syslog_time(self, t: int) -> str:
        d = datetime.fromtimestamp(t / _SECOND, self._tz)
        return f"{_MONTHS[d.month - 1]} {d.day:2d} {d:%H:%M:%S}"

    def _outside_rcpt(self) -> str:
        return (
            _PEOPLE[int(self.random() * len(_PEOPLE))]
            + "@"
            + self._outside_domains[self.bits(_DRAW_BITS)]
        )

    def _local_rcpt(self) -> str:
        r = self.random()
        if r < 0.04:
            return _LOCAL_ALIASES[int(r * 100) % len(_LOCAL_ALIASES)]
        return _LOCAL_MAILBOXES[int(self.random() * len(_LOCAL_MAILBOXES))]

    def _mostly_outside_rcpt(self) -> str:
        return self._outside_rcpt() if self.random() < 0.8 else self._local_rcpt()

    def _unknown_local_rcpt(self) -> str:
        return f"{_PEOPLE[int(self.random() * len(_PEOPLE))]}{self.bits(7)}@{LOCAL_DOMAIN}"

    @staticmethod
    def _distinct(n: int, draw: Callable[[], str]) -> list[str]:
        """``n`` different recipients: Postfix drops a repeated one from a message (also two
        aliases of one mailbox), and counting refused relays per recipient or per line then
        gives the same figure."""
        out: list[str] = []
        mailboxes: set[str] = set()
        while len(out) < n:
            rcpt = draw()
            mailbox = f"root@{LOCAL_DOMAIN}" if rcpt in _LOCAL_ALIASES else rcpt
            if mailbox not in mailboxes:
                mailboxes.add(mailbox)
                out.append(rcpt)
        return out

    def _mx_of(self, domain: str) -> tuple[str, str]:
        mx = self._mx.get(domain)
        if mx is None:
            rnd = self.rnd
            ip = SERVER_IP
            while ip == SERVER_IP:  # never the relay host itself
                ip = (
                    f"2001:db8:{rnd.randrange(0x100, 0xFFF):x}::25"
                    if rnd.random() < 0.08
                    else f"{rnd.choice(('192.0.2', '198.51.100'))}.{rnd.randrange(1, 255)}"
                )
            mx = self._mx[domain] = (f"mx{rnd.randrange(1, 4)}.{domain}", ip)
        return mx

    def _counts(self, *pairs: tuple[str, int, int]) -> str:
        text = self._disconnects.get(pairs)
        if text is None:
            text = self._disconnects[pairs] = _format_counts(pairs)
        return text

    def _screen(self, t: int, client: _Client) -> int:
        """postscreen's CONNECT and PASS lines; returns when smtpd gets the connection."""
        ps = self._postscreen
        addr = f"[{client.ip}]:{1024 + self.bits(16) % 64000}"
        add = self.add
        add(t, f"{ps}CONNECT from {addr} to [{SERVER_IP}]:25")
        if client.ip in self._screened:
            t += 50 + int(self.random() * 1950)
            add(t, f"{ps}PASS OLD {addr}")
        else:
            self._screened.add(client.ip)
            t += 6_000_000 + int(self.random() * 50_000)  # postscreen_greet_wait
            add(t, f"{ps}PASS NEW {addr}")
        self._anvil_ip = client.ip
        return t + 200 + int(self.random() * 1800)

    def _local_line(self, t: int, qid: str, rcpt: str) -> None:
        """The delivery line of one local recipient."""
        delay, delays = self._local_delays[self.bits(8)]
        add = self.add
        if rcpt in _LOCAL_ALIASES:
            add(
                t,
                f"{self._local.use()}{qid}: to=<root@{LOCAL_DOMAIN}>, orig_to=<{rcpt}>, "
                f"relay=local, delay={delay}, delays={delays}, dsn=2.0.0, "
                "status=sent (delivered to mailbox)",
                _SENT,
            )
            return
        if rcpt in _APP_ADDRESSES:
            add(
                t,
                f"{self._local.use()}{qid}: to=<{rcpt}>, relay=local, delay={delay}, "
                f"delays={delays}, dsn=2.0.0, status=sent (delivered to file: /dev/null)",
                _SENT,
            )
            return
        r = self.random()
        if r < 0.06:
            add(
                t,
                f"{self._virtual.use()}{qid}: to=<{rcpt}>, relay=virtual, delay={delay}, "
                f"delays={delays}, dsn=2.0.0, status=sent (delivered to maildir)",
                _SENT,
            )
        elif r < 0.25:
            add(
                t,
                f"{self._local.use()}{qid}: to=<{rcpt}>, relay=local, delay={delay}, "
                f"delays={delays}, dsn=2.0.0, status=sent (delivered to mailbox)",
                _SENT,
            )
        else:
            add(
                t,
                f"{self._lmtp.use()}{qid}: to=<{rcpt}>, "
                f"relay={MYHOSTNAME}[private/dovecot-lmtp], delay={delay}, delays={delays}, "
                f"dsn=2.0.0, status=sent (250 2.0.0 <{rcpt}> "
                f"{self.bits(88):022x} Saved)",
                _SENT,
            )

    def _remote_line(self, t: int, qid: str, rcpt: str, flags: int, client_ip: str) -> int:
        """One outside recipient sent by postfix/smtp; returns the time of the line."""
        agent = self._smtp.use()
        mx, ip = self._mx_of(rcpt.partition("@")[2])
        add = self.add
        if self.random() < 0.02:  # the first MX does not answer, the next one takes it
            t += 100_000 + int(self.random() * 300_000)
            add(t, f"{agent}connect to {mx}[{ip}]:25: Connection refused")
            mx = "mx-backup." + mx.partition(".")[2]
        delay, delays = self._remote_delays[self.bits(8)]
        t += 80_000 + int(self.random() * 820_000)
        reply = _REMOTE_REPLIES[int(self.random() * len(_REMOTE_REPLIES))].format(
            rid=f"{self.bits(40):010X}",
            num=1_000_000_000 + self.bits(29),
            mid=f"{self.bits(64):016x}",
        )
        add(
            t,
            f"{agent}{qid}: to=<{rcpt}>, relay={mx}[{ip}]:25, delay={delay}, "
            f"delays={delays}, dsn=2.0.0, status=sent ({reply})",
            _SENT | flags,
            client_ip,
        )
        return t

    def _failed_line(self, t: int, qid: str, rcpt: str, deferred: bool) -> int:
        """An outside recipient deferred or bounced on this attempt; returns its time."""
        agent = self._smtp.use()
        mx, ip = self._mx_of(rcpt.partition("@")[2])
        if deferred:
            reason, dsn, answered = _DEFER_REASONS[int(self.random() * len(_DEFER_REASONS))]
            if answered:
                t += 150_000 + int(self.random() * 750_000)
                relay = f"{mx}[{ip}]:25"
                delay, delays = self._remote_delays[self.bits(8)]
            else:
                t += 30_000_000 + int(self.random() * 200_000)  # smtp_connect_timeout
                relay, delay, delays = "none", "30", "0.01/0/30/0"
            status, flags = "deferred", _DEFERRED
        else:
            reason, dsn = _BOUNCE_REASONS[int(self.random() * len(_BOUNCE_REASONS))]
            t += 150_000 + int(self.random() * 750_000)
            relay = f"{mx}[{ip}]:25"
            delay, delays = self._remote_delays[self.bits(8)]
            status, flags = "bounced", _BOUNCED
        self.add(
            t,
            f"{agent}{qid}: to=<{rcpt}>, relay={relay}, delay={delay}, "
            f"delays={delays}, dsn={dsn}, status={status} "
            f"({reason.format(mx=mx, ip=ip, rcpt=rcpt)})",
            flags,
        )
        return t

    def _deliver(self, t: int, qid: str, sender: str, rcpts: Sequence[str]) -> int:
        """Deliver a queued message: sent; deferred and sent on a later queue run; or one
        recipient bounced, with a notice to the (local) sender. Returns the time of the
        ``removed`` line."""
        arrived = t
        r = self.random()
        local = _LOCAL_SUFFIX
        remote = sum(1 for rcpt in rcpts if not rcpt.endswith(local))
        defer = r < 0.05 and len(rcpts) == 1 and remote == 1
        bounce = 0.05 <= r < 0.08 and remote > 0 and sender.endswith(local)
        fail = defer or bounce  # the first outside recipient fails
        last = t
        for rcpt in rcpts:
            t += 100 + int(self.random() * 2900)
            if rcpt.endswith(local):
                self._local_line(t, qid, rcpt)
                last = max(last, t)
            elif fail:
                last = max(last, self._failed_line(t, qid, rcpt, defer))
                fail = False
            else:
                last = max(last, self._remote_line(t, qid, rcpt, 0, ""))
        add = self.add
        if defer:  # the queue manager tries again after minimal_backoff_time or later
            retry = last + int((300 + self.random() * 1200) * _SECOND)
            add(
                retry,
                f"{self._qmgr}{qid}: from=<{sender}>, size={self._sizes[self.bits(10)]}, "
                "nrcpt=1 (queue active)",
            )
            rcpt = rcpts[0]
            mx, ip = self._mx_of(rcpt.partition("@")[2])
            last = retry + 200_000 + int(self.random() * 1_300_000)
            waited = (last - arrived) / _SECOND
            add(
                last,
                f"{self._smtp.use()}{qid}: to=<{rcpt}>, relay={mx}[{ip}]:25, "
                f"delay={_fmt_delay(waited)}, delays={_fmt_delay(waited - 0.4)}/0.01/0.2/"
                f"0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as "
                f"{self.bits(40):010X})",
                _SENT,
            )
        elif bounce:
            t = last + 1_000 + int(self.random() * 4_000)
            notice = self._qid(t)
            add(
                t, f"{self._bounce.use()}{qid}: sender non-delivery notification: {notice}", _NOTICE
            )
            t += 200 + int(self.random() * 1_800)
            add(
                t,
                f"{self._cleanup.use()}{notice}: message-id=<{self._stamp(t)}.{notice}"
                f"@{MYHOSTNAME}>",
            )
            t += 200 + int(self.random() * 1_800)
            add(
                t,
                f"{self._qmgr}{notice}: from=<>, size={2000 + self.bits(12)}, nrcpt=1 "
                "(queue active)",
            )
            add(t + 100, f"{self._qmgr}{qid}: removed")
            last = t + 1_000 + int(self.random() * 19_000)
            self._local_line(last, notice, sender)
            qid = notice
        last += 100 + int(self.random() * 900)
        add(last, f"{self._qmgr}{qid}: removed")
        return last

    # ------------------------------------------------------------------ sessions

    def session(self, t: int) -> None:
        """Stage the lines of one client session (or a burst of statistics) starting at ``t``."""
        if t >= self._next_anvil:
            self._anvil_statistics(t)
        elif self.random() < self._abuse_share:
            n = self._abuser_count
            i = int(self.random() * (n + len(self._open_relays)))
            if i < n:
                self._relay_probe(t, self._abusers[self.bits(_DRAW_BITS)])
            else:
                self._open_relay(t, self._open_relays[i - n])
        else:
            self._kinds[self.bits(_DRAW_BITS)](t)

    def filler(self, t: int) -> None:
        """One line that stands alone (anvil statistics), to fill a log to an exact length."""
        self.add(
            t,
            f"{self._anvil}statistics: max cache size {1 + self.bits(3)} at {self._syslog_time(t)}",
        )

    def _anvil_statistics(self, t: int) -> None:
        rnd = self.rnd
        at = self._syslog_time(max(self._start, t - rnd.randrange(1, 590) * _SECOND))
        ip = self._anvil_ip
        add = self.add
        add(
            t,
            f"{self._anvil}statistics: max connection rate {rnd.randrange(2, 30)}/60s for "
            f"(smtp:{ip}) at {at}",
        )
        add(
            t + 30,
            f"{self._anvil}statistics: max connection count {rnd.randrange(1, 6)} for "
            f"(smtp:{ip}) at {at}",
        )
        add(t + 60, f"{self._anvil}statistics: max cache size {rnd.randrange(3, 40)} at {at}")
        self._next_anvil = t + 600 * _SECOND  # anvil_status_update_time

    def _inbound(self, t: int) -> None:
        """An outside server delivers mail for local users (now and then one is unknown)."""
        r = self.random
        add = self.add
        client = self._senders[self.bits(_DRAW_BITS)]
        label = client.label
        t = self._screen(t, client)
        slot, p = self._smtpd.acquire(t)
        if label.startswith("unknown[") and r() < 0.3:  # rDNS and forward lookup disagree
            add(
                t,
                f"{p}warning: hostname {client.helo} does not resolve to address "
                f"{client.ip}: Name or service not known",
            )
            t += 100 + int(r() * 400)
        add(t, f"{p}connect from {label}")
        tls = 1 if r() < 0.7 else 0
        t += 40_000 + int(r() * 560_000) if tls else 5_000 + int(r() * 115_000)
        qid = self._qid(t)
        add(t, f"{p}{qid}: client={label}", _RECEIVED | _TXN, client.ip)
        n = 1 if r() < 0.85 else 2 + int(r() * 3)
        rcpts = self._distinct(n, self._local_rcpt)
        sender = f"{_PEOPLE[int(r() * len(_PEOPLE))]}@{client.domain}" if r() < 0.95 else ""
        unknown_rcpt = 1 if r() < 0.04 else 0
        if unknown_rcpt:
            t += 1_000 + int(r() * 39_000)
            bad = f"x{100 + int(r() * 900)}.{rcpts[0]}"
            add(
                t,
                f"{p}{qid}: reject: RCPT from {label}: 550 5.1.1 <{bad}>: Recipient address "
                "rejected: User unknown in local recipient table; "
                f"from=<{sender}> to=<{bad}> proto=ESMTP helo=<{client.helo}>",
                _REJECT,
                client.ip,
            )
        t += 1_000 + int(r() * 29_000)
        add(t, f"{self._cleanup.use()}{qid}: message-id=<{self.bits(64):016x}@{client.domain}>")
        t += 20_000 + int(r() * 880_000)
        add(
            t,
            f"{self._qmgr}{qid}: from=<{sender}>, size={self._sizes[self.bits(10)]}, "
            f"nrcpt={n} (queue active)",
        )
        end = t + 200 + int(r() * 14_800)
        self._smtpd.release(slot, end)
        add(
            end,
            f"{p}disconnect from {label} "
            + self._counts(
                ("ehlo", 1 + tls, 1 + tls),
                ("starttls", tls, tls),
                ("mail", 1, 1),
                ("rcpt", n, n + unknown_rcpt),
                ("bdat" if r() < 0.15 else "data", 1, 1),
                ("quit", 1, 1),
            ),
        )
        self._deliver(t + 2_000 + int(r() * 48_000), qid, sender, rcpts)

    def _outbound(self, t: int) -> None:
        """An internal client sends one or more messages out through this relay."""
        r = self.random
        add = self.add
        client = self._internal[self.bits(_DRAW_BITS)]
        label = client.label
        slot, p = self._smtpd.acquire(t)
        add(t, f"{p}connect from {label}")
        messages = 1 if r() < 0.85 else 2 + int(r() * 3)
        total = 0
        for _ in range(messages):
            t += 2_000 + int(r() * 58_000)
            qid = self._qid(t)
            add(t, f"{p}{qid}: client={label}", _RECEIVED | _TXN, client.ip)
            n = 1 if r() < 0.8 else 2 + int(r() * 4)
            total += n
            rcpts = self._distinct(n, self._mostly_outside_rcpt)
            sender = _APP_ADDRESSES[int(r() * len(_APP_ADDRESSES))]
            t += 500 + int(r() * 4_500)
            add(
                t,
                f"{self._cleanup.use()}{qid}: message-id=<{self._stamp(t)}."
                f"{self.bits(32):08x}@{client.helo}>",
            )
            t += 1_000 + int(r() * 59_000)
            add(
                t,
                f"{self._qmgr}{qid}: from=<{sender}>, size={self._sizes[self.bits(10)]}, "
                f"nrcpt={n} (queue active)",
            )
            self._deliver(t + 1_000 + int(r() * 19_000), qid, sender, rcpts)
        t += 200 + int(r() * 4_800)
        self._smtpd.release(slot, t)
        add(
            t,
            f"{p}disconnect from {label} "
            + self._counts(
                ("ehlo", 1, 1),
                ("mail", messages, messages),
                ("rcpt", total, total),
                ("data", messages, messages),
                ("rset", messages - 1, messages - 1),
                ("quit", 1, 1),
            ),
        )

    def _queued_session(self, t: int, client: _Client) -> tuple[int, int, str, str]:
        """An outside client passes the screen, connects and gets a queue id: the time of
        its ``client=`` line, the smtpd slot and line prefix, and the queue id."""
        t = self._screen(t, client)
        slot, p = self._smtpd.acquire(t)
        self.add(t, f"{p}connect from {client.label}")
        t += 20_000 + int(self.random() * 380_000)
        qid = self._qid(t)
        self.add(t, f"{p}{qid}: client={client.label}", _RECEIVED | _TXN, client.ip)
        return t, slot, p, qid

    def _queue_message(
        self, t: int, qid: str, sender: str, rcpts: int, message_id: str, qmgr_wait: int
    ) -> int:
        """cleanup's message-id and qmgr's from= lines of a message received at ``t``; returns
        the time of the qmgr line (``qmgr_wait`` µs at most after cleanup)."""
        r = self.random
        t += 1_000 + int(r() * 19_000)
        self.add(t, f"{self._cleanup.use()}{qid}: message-id=<{message_id}>")
        t += qmgr_wait // 45 + int(r() * qmgr_wait)
        self.add(
            t,
            f"{self._qmgr}{qid}: from=<{sender}>, size={self._sizes[self.bits(10)]}, "
            f"nrcpt={rcpts} (queue active)",
        )
        return t

    def _submission_session(self, t: int) -> None:
        """A user logs in on the submission port and sends mail, mostly to the outside."""
        r = self.random
        add = self.add
        client = self._roaming[int(r() * len(self._roaming))]
        label = client.label
        user = _SASL_USERS[int(r() * len(_SASL_USERS))]
        slot, p = self._submission.acquire(t)
        add(t, f"{p}connect from {label}")
        t += 60_000 + int(r() * 840_000)
        qid = self._qid(t)
        method = "PLAIN" if r() < 0.8 else "LOGIN"
        add(
            t,
            f"{p}{qid}: client={label}, sasl_method={method}, sasl_username={user}",
            _RECEIVED | _TXN,
            client.ip,
        )
        n = 1 if r() < 0.7 else 2 + int(r() * 4)
        rcpts = self._distinct(n, self._mostly_outside_rcpt)
        t = self._queue_message(t, qid, user, n, f"{self.bits(128):032x}@{LOCAL_DOMAIN}", 2_000_000)
        end = t + 500 + int(r() * 29_500)
        self._submission.release(slot, end)
        add(
            end,
            f"{p}disconnect from {label} "
            + self._counts(
                ("ehlo", 2, 2),
                ("starttls", 1, 1),
                ("auth", 1, 1),
                ("mail", 1, 1),
                ("rcpt", n, n),
                ("data", 1, 1),
                ("quit", 1, 1),
            ),
        )
        self._deliver(t + 1_000 + int(r() * 19_000), qid, user, rcpts)

    def _pickup_message(self, t: int) -> None:
        """A local program (cron, the web application) hands a message to sendmail."""
        r = self.random
        add = self.add
        qid = self._qid(t)
        to_root = r() < 0.5
        uid, login = (0, "root") if to_root else (33, "www-data")
        add(t, f"{self._pickup}{qid}: uid={uid} from=<{login}>", _RECEIVED | _TXN)
        t += 300 + int(r() * 2_700)
        add(t, f"{self._cleanup.use()}{qid}: message-id=<{self._stamp(t)}.{qid}@{MYHOSTNAME}>")
        t += 300 + int(r() * 2_700)
        sender = f"{login}@{LOCAL_DOMAIN}"
        add(
            t,
            f"{self._qmgr}{qid}: from=<{sender}>, size={self._sizes[self.bits(10)]}, "
            "nrcpt=1 (queue active)",
        )
        if to_root:
            delay, delays = self._local_delays[self.bits(8)]
            t += 1_000 + int(r() * 19_000)
            add(
                t,
                f"{self._local.use()}{qid}: to=<ops@{LOCAL_DOMAIN}>, orig_to=<root>, "
                f"relay=local, delay={delay}, delays={delays}, dsn=2.0.0, "
                "status=sent (delivered to mailbox)",
                _SENT,
            )
            add(t + 100 + int(r() * 900), f"{self._qmgr}{qid}: removed")
        else:
            self._deliver(t + 1_000 + int(r() * 19_000), qid, sender, [self._outside_rcpt()])

    def _noqueue_session(
        self,
        t: int,
        client: _Client,
        rejects: Sequence[tuple[str, str]],
        *,
        sender: str,
        flags: int,
        quits: bool,
        proto: str = "ESMTP",
    ) -> None:
        """A session whose every recipient is refused; ``rejects`` are (reply, recipient)."""
        r = self.random
        add = self.add
        label = client.label
        t = self._screen(t, client)
        slot, p = self._smtpd.acquire(t)
        add(t, f"{p}connect from {label}")
        t += 20_000 + int(r() * 380_000)
        first = _TXN
        for reply, rcpt in rejects:
            add(
                t,
                f"{p}NOQUEUE: reject: RCPT from {label}: {reply}; from=<{sender}> "
                f"to=<{rcpt}> proto={proto} helo=<{client.helo}>",
                flags | first,
                client.ip,
            )
            first = 0
            t += 1_000 + int(r() * 299_000)
        data = 1 if quits and r() < 0.3 else 0  # some clients try DATA anyway
        if not quits:
            add(t, f"{p}lost connection after RCPT from {label}")
            t += 50 + int(r() * 450)
        self._smtpd.release(slot, t)
        add(
            t,
            f"{p}disconnect from {label} "
            + self._counts(
                ("ehlo" if proto == "ESMTP" else "helo", 1, 1),
                ("mail", 1, 1),
                ("rcpt", 0, len(rejects)),
                ("data", 0, data),
                ("rset", data, data),
                ("quit", int(quits), int(quits)),
            ),
        )

    def _relay_probe(self, t: int, client: _Client) -> None:
        """An outside client asks for mail to outside domains and is refused."""
        r = self.random
        x = r()
        n = 1 if x < 0.6 else 2 + int(r() * 3) if x < 0.9 else 5 + int(r() * 6)
        code = "454 4.7.1" if r() < 0.03 else "554 5.7.1"  # 454: defer_unauth_destination
        rcpts = self._distinct(n, self._outside_rcpt)
        if r() < 0.05:  # the percent hack is a relay attempt too
            user, _, domain = rcpts[-1].partition("@")
            rcpts[-1] = f"{user}%{domain}@{LOCAL_DOMAIN}"
        x = r()
        if x < 0.3:
            sender = rcpts[0]  # the classic probe: mail to itself
        elif x < 0.4:
            sender = f"{('admin', 'info', 'postmaster')[int(r() * 3)]}@{LOCAL_DOMAIN}"  # forged
        else:
            sender = self._outside_rcpt()
        rejects = [(f"{code} <{rcpt}>: Relay access denied", rcpt) for rcpt in rcpts]
        proto = "ESMTP" if r() < 0.9 else "SMTP"
        if r() < 0.1:
            self._relay_probe_partial(t, client, sender, rejects, proto)
        else:
            self._noqueue_session(
                t,
                client,
                rejects,
                sender=sender,
                flags=_REJECT | _REFUSED,
                quits=r() < 0.7,
                proto=proto,
            )

    def _relay_probe_partial(
        self,
        t: int,
        client: _Client,
        sender: str,
        rejects: Sequence[tuple[str, str]],
        proto: str,
    ) -> None:
        """Spam to a local user with outside recipients added: the local one is queued, the
        rest are refused and logged with the queue id."""
        r = self.random
        add = self.add
        label = client.label
        t, slot, p, qid = self._queued_session(t, client)
        for reply, rcpt in rejects:
            t += 300 + int(r() * 199_700)
            add(
                t,
                f"{p}{qid}: reject: RCPT from {label}: {reply}; from=<{sender}> "
                f"to=<{rcpt}> proto={proto} helo=<{client.helo}>",
                _REJECT | _REFUSED,
                client.ip,
            )
        t = self._queue_message(t, qid, sender, 1, f"{self.bits(48):012x}@{client.domain}", 300_000)
        end = t + 200 + int(r() * 4_800)
        self._smtpd.release(slot, end)
        add(
            end,
            f"{p}disconnect from {label} "
            + self._counts(
                ("ehlo" if proto == "ESMTP" else "helo", 1, 1),
                ("mail", 1, 1),
                ("rcpt", 1, 1 + len(rejects)),
                ("data", 1, 1),
                ("quit", 1, 1),
            ),
        )
        self._deliver(t + 2_000 + int(r() * 38_000), qid, sender, [self._local_rcpt()])

    def _open_relay(self, t: int, client: _Client) -> None:
        """An outside, unauthenticated client gets outside recipients accepted and sent."""
        r = self.random
        add = self.add
        label = client.label
        t, slot, p, qid = self._queued_session(t, client)
        n = 1 if r() < 0.4 else 2 + int(r() * 7)
        rcpts = self._distinct(n, self._outside_rcpt)
        message_id = f"{self.bits(64):016x}@{client.domain}"
        t = self._queue_message(t, qid, self._outside_rcpt(), n, message_id, 900_000)
        end = t + 200 + int(r() * 9_800)
        self._smtpd.release(slot, end)
        add(
            end,
            f"{p}disconnect from {label} "
            + self._counts(
                ("ehlo", 1, 1), ("mail", 1, 1), ("rcpt", n, n), ("data", 1, 1), ("quit", 1, 1)
            ),
        )
        last = t
        for rcpt in rcpts:
            t += 100 + int(r() * 2_900)
            last = max(last, self._remote_line(t, qid, rcpt, _ACCEPTED, client.ip))
        add(last + 100 + int(r() * 900), f"{self._qmgr}{qid}: removed")

    def _unknown_user(self, t: int) -> None:
        """An outside server tries users that do not exist (a dictionary attack, an old list)."""
        r = self.random
        client = (
            self._senders[self.bits(_DRAW_BITS)]
            if r() < 0.5
            else self._hostile[int(r() * len(self._hostile))]
        )
        n = 1 if r() < 0.8 else 2 + int(r() * 4)
        rejects = []
        for rcpt in self._distinct(n, self._unknown_local_rcpt):
            rejects.append(
                (
                    f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in "
                    "local recipient table",
                    rcpt,
                )
            )
        self._noqueue_session(
            t,
            client,
            rejects,
            flags=_REJECT,
            quits=r() < 0.8,
            sender=f"{_PEOPLE[int(r() * len(_PEOPLE))]}@{client.domain}",
        )

    def _policy_reject(self, t: int) -> None:
        """A client refused for what it is, not for where its mail goes (RBL, rDNS, HELO)."""
        r = self.random
        client = self._hostile[int(r() * len(self._hostile))]
        x = r()
        if x < 0.5:
            reply = (
                f"554 5.7.1 Service unavailable; Client host [{client.ip}] blocked using "
                f"bl.dnsbl.example; https://dnsbl.example/query?ip={client.ip}"
            )
        elif x < 0.8:
            reply = f"450 4.7.25 Client host rejected: cannot find your hostname, [{client.ip}]"
        else:
            reply = (
                f"504 5.5.2 <{client.helo}>: Helo command rejected: need fully-qualified hostname"
            )
        self._noqueue_session(
            t,
            client,
            [(reply, self._local_rcpt())],
            flags=_REJECT,
            quits=r() < 0.5,
            sender=f"{_PEOPLE[int(r() * len(_PEOPLE))]}@{client.domain}",
        )

    def _sasl_guessing(self, t: int) -> None:
        """An outside client guesses passwords, mostly on the submission port."""
        r = self.random
        add = self.add
        client = self._hostile[int(r() * len(self._hostile))]
        label = client.label
        tls = 1 if r() < 0.7 else 0  # submission, with STARTTLS; else port 25 behind postscreen
        pool = self._submission if tls else self._smtpd
        if not tls:
            t = self._screen(t, client)
        slot, p = pool.acquire(t)
        add(t, f"{p}connect from {label}")
        tries = 1 if r() < 0.7 else 2 + int(r() * 2)
        method = "LOGIN" if r() < 0.7 else "PLAIN"
        for _ in range(tries):
            t += 100_000 + int(r() * 2_400_000)
            guess = _GUESSED_LOGINS[int(r() * len(_GUESSED_LOGINS))]
            reason = (
                "authentication failure"
                if r() < 0.6
                else "UGFzc3dvcmQ6"
                if method == "LOGIN"
                else "(reason unavailable)"
            )
            add(
                t,
                f"{p}warning: {label}: SASL {method} authentication failed: {reason}, "
                f"sasl_username={guess}@{LOCAL_DOMAIN}",
            )
        t += 1_000 + int(r() * 299_000)
        quits = 0 if r() < 0.5 else 1
        if not quits:
            add(t, f"{p}lost connection after AUTH from {label}")
            t += 50 + int(r() * 450)
        pool.release(slot, t)
        add(
            t,
            f"{p}disconnect from {label} "
            + self._counts(
                ("ehlo", 1 + tls, 1 + tls),
                ("starttls", tls, tls),
                ("auth", 0, tries),
                ("quit", quits, quits),
            ),
        )

    def _scanner(self, t: int) -> None:
        """Port scanners and broken clients: lost connections, HTTP on port 25, TLS noise."""
        r = self.random
        add = self.add
        client = self._hostile[int(r() * len(self._hostile))]
        label = client.label
        on_submission = r() < 0.3
        pool = self._submission if on_submission else self._smtpd
        if not on_submission:
            t = self._screen(t, client)
        slot, p = pool.acquire(t)
        add(t, f"{p}connect from {label}")
        t += 10_000 + int(r() * 2_990_000)
        x = r()
        if x < 0.4:
            add(t, f"{p}lost connection after CONNECT from {label}")
            counts = self._counts()
        elif x < 0.6:
            add(t, f"{p}lost connection after EHLO from {label}")
            counts = self._counts(("ehlo", 1, 1))
        elif x < 0.8:
            add(t, f"{p}warning: non-SMTP command from {label}: GET / HTTP/1.1")
            counts = self._counts(("unknown", 0, 1))
        else:
            add(
                t,
                f"{p}warning: TLS library problem: error:0A000126:SSL routines::unexpected "
                "eof while reading:../ssl/record/rec_layer_s3.c:308:",
            )
            t += 50 + int(r() * 950)
            add(t, f"{p}lost connection after STARTTLS from {label}")
            counts = self._counts(("ehlo", 1, 1), ("starttls", 1, 1))
        t += 50 + int(r() * 950)
        pool.release(slot, t)
        add(t, f"{p}disconnect from {label} {counts}")

    def _postscreen_drop(self, t: int) -> None:
        """A bot that postscreen stops before smtpd ever sees it."""
        r = self.random
        add = self.add
        client = self._hostile[int(r() * len(self._hostile))]
        ps = self._postscreen
        addr = f"[{client.ip}]:{1024 + self.bits(16) % 64000}"
        add(t, f"{ps}CONNECT from {addr} to [{SERVER_IP}]:25")
        t += 50_000 + int(r() * 2_950_000)
        x = r()
        if x < 0.5:
            add(t, f"{ps}PREGREET 11 after {_fmt_delay(r())} from {addr}: EHLO ylmf-pc\\r\\n")
        elif x < 0.8:
            add(
                t,
                f"{ps}HANGUP after {_fmt_delay(r() * 5)} from {addr} in tests before SMTP "
                "handshake",
            )
        else:
            add(t, f"{ps}DNSBL rank {2 + int(r() * 4)} for {addr}")
        add(t + 50 + int(r() * 950), f"{ps}DISCONNECT {addr}")

    # ---------------------------------------------------------------- the log

    def chunks(self, limit: int | None = None) -> Iterator[list[_Line]]:
        """The scheduled lines in time order, a few thousand at a time; with ``limit``,
        exactly that many lines in all, ending with whole sessions where they fit.

        Sessions are built a batch at a time and sorted together with the lines still
        pending from earlier batches (later deliveries, retries); every line before the start
        of the next session is final, since no later session can write before it starts.
        """
        stage = self.stage
        when = itemgetter(0)
        gap = self.rnd.expovariate
        rate = self._session_rate
        least_gap = self._least_gap
        pending: list[_Line] = []
        committed = 0  # lines handed out, pending or staged
        closing = False  # with a limit: a session did not fit in what was left
        misses = 0
        while True:
            done = False
            while len(stage) < 4096:
                start = self.clock
                # at 2.5 sessions a second the next one starts tens of milliseconds to seconds later
                self.clock = start + least_gap + int(gap(rate) * _SECOND)
                if limit is None:
                    self.session(start)
                    continue
                before = len(stage)
                if closing and misses >= 200:
                    self.filler(start)
                else:
                    self.session(start)
                if committed + len(stage) - before > limit:
                    del stage[before:]  # too long for what is left: try others, then fill up
                    closing = True
                    misses += 1
                else:
                    committed += len(stage) - before
                if committed == limit:
                    done = True
                    break
            lines = pending + stage
            stage.clear()
            lines.sort(key=when)
            if done:
                if lines:
                    yield lines
                return
            cut = bisect_left(lines, self.clock, key=when)
            pending = lines[cut:]
            if cut:
                yield lines[:cut]

    def render(self, lines: list[_Line]) -> list[str]:
        """The text of scheduled lines, with the syslog header in front."""
        second = _SECOND
        if self._rfc3339:
            heads = _Headers(self._rfc3339_header)
            digits = _THREE_DIGITS  # formatting an int costs more than two table look-ups
            return [
                f"{head[0]}{digits[t // 1000 % 1000]}{digits[t % 1000]}{head[1]}{text}"
                for t, text, _, _ in lines
                for head in (heads[t // second],)
            ]
        plain = _Headers(self._traditional_header)
        return [plain[t // second] + text for t, text, _, _ in lines]

    def _rfc3339_header(self, sec: int) -> tuple[str, str]:
        iso = datetime.fromtimestamp(sec, self._tz).isoformat()
        return f"{iso[:19]}.", f"{iso[19:]} {self._host} "

    def _traditional_header(self, sec: int) -> str:
        moment = datetime.fromtimestamp(sec, self._tz)
        return f"{_MONTHS[moment.month - 1]} {moment.day:2d} {moment:%H:%M:%S} {self._host} "


class _Headers(dict[int, _H]):
    """The syslog header of each second, made on first use."""

    def __init__(self, make: Callable[[int], _H]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, sec: int) -> _H:
        header = self[sec] = self._make(sec)
        return header


def traffic(
    *,
    seed: int = 1,
    start: datetime,
    style: str = "rfc3339",
    host: str = "mx1",
    abusers: int = 5,
    abuse_share: float = 0.1,
    open_relay_clients: int = 0,
    session_rate: float = 2.5,
    truth: GroundTruth | None = None,
) -> Iterator[str]:
    """An endless simulated Postfix log (lines without newline) starting at ``start``.

    ``style`` is ``rfc3339`` (rsyslog's Debian default, ``2026-11-30T08:09:24.188092+00:00``)
    or ``traditional`` (``Nov 30 08:09:24``); a naive ``start`` is UTC. About ``session_rate``
    client sessions start per simulated second. ``truth``, when given, is updated as each line
    is handed out.
    """
    sim = _Simulator(
        seed=seed,
        start=start,
        style=style,
        host=host,
        abusers=abusers,
        abuse_share=abuse_share,
        open_relay_clients=open_relay_clients,
        session_rate=session_rate,
    )
    return _handed_out(sim, truth if truth is not None else GroundTruth())


def _handed_out(sim: _Simulator, truth: GroundTruth) -> Iterator[str]:
    record = truth.record
    for t, line, flags, client_ip in _timed_lines(sim):
        if flags:
            record(flags, client_ip, t)
        truth.lines += 1
        yield line


def _timed_lines(sim: _Simulator) -> Iterator[_Line]:
    """The endless log in time order: each line's time (µs), its whole text, its truth flags
    and client IP."""
    for chunk in sim.chunks():
        for (t, _, flags, client_ip), line in zip(chunk, sim.render(chunk), strict=True):
            yield t, line, flags, client_ip


def write_log(
    path: str | os.PathLike[str],
    lines: int,
    *,
    seed: int = 1,
    start: datetime = DEFAULT_START,
    style: str = "rfc3339",
    host: str = "mx1",
    abusers: int = 5,
    abuse_share: float = 0.1,
    open_relay_clients: int = 0,
    session_rate: float = 2.5,
) -> GroundTruth:
    """Write exactly ``lines`` lines of simulated log to ``path``; return what they contain.

    The log ends with whole sessions and messages where they fit, then a few single anvil
    lines if needed. The file's modification time is set to the time of its last line, as a
    real log's would be (classic syslog lines have no year: readers take it from there).
    ``session_rate`` is as in :func:`traffic`.
    """
    if lines < 0:
        raise ValueError("lines cannot be negative")
    sim = _Simulator(
        seed=seed,
        start=start,
        style=style,
        host=host,
        abusers=abusers,
        abuse_share=abuse_share,
        open_relay_clients=open_relay_clients,
        session_rate=session_rate,
    )
    truth = GroundTruth()
    out = Path(path)
    last = sim.clock
    with out.open("w", encoding="utf-8", newline="\n") as f:
        for chunk in sim.chunks(lines):
            for t, _, flags, client_ip in [line for line in chunk if line[2]]:
                truth.record(flags, client_ip, t)
            truth.lines += len(chunk)
            f.write("\n".join(sim.render(chunk)))
            f.write("\n")
            last = chunk[-1][0]
    os.utime(out, (last / _SECOND, last / _SECOND))
    return truth


@dataclass(frozen=True, slots=True)
class Day:
    """The traffic of one day of :func:`write_days`: ``lines`` lines, with relay abuse as in
    :func:`traffic` (``abuse_share=0`` and no open relays: a day without abuse)."""

    lines: int
    abusers: int = 5
    abuse_share: float = 0.1
    open_relay_clients: int = 0


def write_days(
    path: str | os.PathLike[str],
    days: Sequence[Day],
    *,
    first: date,
    zone: tzinfo = UTC,
    seed: int = 1,
    style: str = "rfc3339",
    host: str = "mx1",
    session_rate: float = 0.05,
) -> list[GroundTruth]:
    """Write a log of consecutive local days in ``zone``, starting with ``first``: each day
    a simulation of its own (seed ``seed`` + its index), starting a minute after midnight, so
    that each day's ground truth is exactly what the lines of that day hold.  Abusers of one
    day may come back on another (they are drawn from one pool of addresses).  Raises
    ``ValueError`` when a day's lines do not fit in it (ask for fewer, or a higher
    ``session_rate``).  The same arguments with another ``style`` give the same traffic."""
    truths: list[GroundTruth] = []
    out = Path(path)
    last = 0
    with out.open("w", encoding="utf-8", newline="\n") as f:
        for index, plan in enumerate(days):
            day = first + timedelta(days=index)
            midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
            following = day + timedelta(days=1)
            ends = int(
                datetime(following.year, following.month, following.day, tzinfo=zone).timestamp()
                * _SECOND
            )
            sim = _Simulator(
                seed=seed + index,
                start=midnight + timedelta(minutes=1),
                style=style,
                host=host,
                abusers=plan.abusers,
                abuse_share=plan.abuse_share,
                open_relay_clients=plan.open_relay_clients,
                session_rate=session_rate,
            )
            truth = GroundTruth()
            for chunk in sim.chunks(plan.lines):
                if chunk[-1][0] >= ends:
                    raise ValueError(
                        f"the {plan.lines} lines of {day} do not fit in the day at "
                        f"{session_rate} sessions a second"
                    )
                for t, _, flags, client_ip in [line for line in chunk if line[2]]:
                    truth.record(flags, client_ip, t)
                truth.lines += len(chunk)
                f.write("\n".join(sim.render(chunk)))
                f.write("\n")
                last = chunk[-1][0]
            truths.append(truth)
    if last:
        os.utime(out, (last / _SECOND, last / _SECOND))
    return truths


def append_live(
    path: str | os.PathLike[str],
    *,
    stop: threading.Event,
    seed: int = 1,
    host: str = "mx1",
    abusers: int = 5,
    abuse_share: float = 0.1,
    open_relay_clients: int = 0,
    session_rate: float = 2.5,
    max_lines: int | None = None,
    truth: GroundTruth | None = None,
    clock: Callable[[], float] = time.time,
) -> GroundTruth:
    """Append simulated log lines to ``path`` as their time comes, the way syslog writes a busy
    mail server's log, until ``stop`` is set or ``max_lines`` lines are written in all.

    The simulation starts at ``clock()`` (rfc3339 style, UTC). Each time it wakes up, the lines
    that are due go out in one write, on the file opened for appending and closed right after:
    a reader never sees half a line, and once the file is renamed away (log rotation) the next
    lines go to a new file at ``path``, as rsyslog's do after its HUP. Returns the ground truth
    of exactly the lines written: ``truth`` if given, updated after each write so that another
    thread can follow the progress.
    """
    if max_lines is not None and max_lines < 0:
        raise ValueError("max_lines cannot be negative")
    out = Path(path)
    if not out.parent.is_dir():
        # open() would name the log file only, not the directory that is missing
        raise FileNotFoundError(errno.ENOENT, "no such directory for the live log", str(out.parent))
    sim = _Simulator(
        seed=seed,
        start=datetime.fromtimestamp(clock(), UTC),
        style="rfc3339",
        host=host,
        abusers=abusers,
        abuse_share=abuse_share,
        open_relay_clients=open_relay_clients,
        session_rate=session_rate,
    )
    if truth is None:
        truth = GroundTruth()
    limit = math.inf if max_lines is None else max_lines
    written = 0
    lines = _timed_lines(sim)
    upcoming = next(lines)
    while written < limit and not stop.is_set():
        now = int(clock() * _SECOND)
        due: list[_Line] = []
        while upcoming[0] <= now and written + len(due) < limit:
            due.append(upcoming)
            upcoming = next(lines)
        if not due:
            stop.wait(min(_LONGEST_NAP, (upcoming[0] - now) / _SECOND))
            continue
        with out.open("ab") as log:
            log.write("".join(f"{line}\n" for _, line, _, _ in due).encode())
        for t, _, flags, client_ip in due:
            if flags:
                truth.record(flags, client_ip, t)
        truth.lines += len(due)
        written += len(due)
    return truth


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m detector.simulate --lines N --style S --seed K OUT``: write, print the truth."""
    parser = argparse.ArgumentParser(
        prog="python -m detector.simulate",
        description="Write a simulated Postfix 3.7 log and print what it contains as JSON.",
    )
    parser.add_argument("out", metavar="OUT", help="file to write")
    parser.add_argument("--lines", type=int, default=100_000, help="number of lines (100000)")
    parser.add_argument("--style", choices=STYLES, default="rfc3339", help="timestamp style")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument(
        "--start",
        type=datetime.fromisoformat,
        default=DEFAULT_START,
        help="time of the first session, ISO 8601 (2026-11-30T06:00:00+00:00)",
    )
    parser.add_argument("--host", default="mx1", help="host field of every line (mx1)")
    parser.add_argument("--abusers", type=int, default=5, help="relay-probing clients (5)")
    parser.add_argument(
        "--abuse-share",
        type=float,
        default=0.1,
        help="share of sessions that are relay abuse (0.1)",
    )
    parser.add_argument(
        "--open-relay-clients",
        type=int,
        default=0,
        help="outside clients the server wrongly relays for (0)",
    )
    args = parser.parse_args(argv)
    try:
        truth = write_log(
            args.out,
            args.lines,
            seed=args.seed,
            start=args.start,
            style=args.style,
            host=args.host,
            abusers=args.abusers,
            abuse_share=args.abuse_share,
            open_relay_clients=args.open_relay_clients,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    json.dump(truth.as_dict(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
