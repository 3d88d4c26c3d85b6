"""Postfix: syslog (classic or RFC 3339) and ``maillog_file`` lines to events.

The grammars below are the single source of truth; each is compiled once into the regular
expression it stands for (:mod:`parsers.grammar`).  A line is first split into the syslog
envelope, then the program's last component (``smtpd``, ``qmgr``, ``smtp`` …) and a few
literal prefixes pick the one grammar to try, so most lines cost two regular-expression
matches.  Client addresses are taken only where Postfix itself writes them, before any text
a client controls (HELO, MAIL FROM, RCPT TO, AUTH name), so such text cannot become the client.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import tzinfo
from functools import cache
from typing import Final

import pyparsing as pp

from parsers.events import Event, Kind
from parsers.grammar import IP, SYSLOG_HEADER, Grammar, compile_grammar
from parsers.syslog import SyslogClock

FAMILY: Final = "postfix"

RELAY_REFUSALS: Final = frozenset(
    {"Relay access denied", "Recipient address rejected: Relay access denied"}
)
"""Reject texts (after the recipient address) that mean "I do not relay for you"."""

DELIVERY_AGENTS: Final = frozenset(
    {"smtp", "lmtp", "local", "virtual", "pipe", "error", "discard", "retry"}
)
LOCAL_AGENTS: Final = frozenset({"local", "virtual", "lmtp"})
"""Agents whose deliveries end in a mailbox of this host (lmtp: to a local mail store)."""


def _re(pattern: str, name: str) -> pp.ParserElement:
    return pp.Regex(pattern).set_name(name)


def _lit(text: str) -> pp.Literal:
    return pp.Literal(text)


QUEUE_ID = _re(
    r"(?P<queue_id>[0-9A-F]{5,12}(?![0-9A-Za-z])|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,16})",
    "queue id",
)
CLIENT = (
    pp.Opt(_re(r"(?P<client_name>[^\s\[\]]+)", "client name"))
    + _lit("[")
    + _re(rf"(?P<client_ip>{IP})", "client ip")
    + _lit("]")
    + pp.Opt(_lit(":") + _re(r"\d{1,5}", "port"))
)
"""``name[ip]`` or ``name[ip]:port``; the name is a validated DNS name or ``unknown``."""

SCREEN_CLIENT = (
    _lit("[") + _re(rf"(?P<client_ip>{IP})", "client ip") + _lit("]:") + _re(r"\d{1,5}", "port")
)
"""postscreen's ``[ip]:port`` (it never knows the client's name)."""

ADDRESS_SUFFIX = pp.Opt(
    _re(r" ?; (?=from=<|to=<|proto=)", "suffix start")
    + pp.Opt(_lit("from=<") + _re(r"(?P<sender>[^>]*)", "sender") + _re(r">,? ?", "end"))
    + pp.Opt(_lit("to=<") + _re(r"(?P<recipient>[^>]*)", "recipient") + _re(r">,? ?", "end"))
    + pp.Opt(_lit("proto=") + _re(r"(?P<proto>[A-Za-z]+)", "proto") + _re(r",? ?", "sep"))
    + pp.Opt(_lit("helo=") + _re(r"<?(?P<helo>(?:.*[^>])?)>?$", "helo"))
)
"""``; from=<s> to=<r> proto=P helo=<h>`` (postscreen puts commas between the fields)."""

REJECT = compile_grammar(
    "reject",
    pp.Opt((_lit("NOQUEUE") | QUEUE_ID) + _lit(": "))
    + _re(r"(?P<action>reject|milter-reject|defer|discard|hold|reject_warning): ", "action")
    + _re(r"(?P<stage>[A-Z][A-Z-]{2,15}|header|body) from ", "stage")
    + CLIENT
    + _lit(": ")
    + pp.Opt(_re(r"(?P<code>[245]\d\d) ", "code"))
    + pp.Opt(_re(r"(?P<enhanced>[245]\.\d{1,3}\.\d{1,3}) ", "enhanced code"))
    + _re(r"(?P<reason>[^;]*(?:;(?! (?:from=<|to=<|proto=))[^;]*)*)", "reason")
    + ADDRESS_SUFFIX,
    Kind.REJECT,
)
"""``NOQUEUE: reject: RCPT from name[ip]: 554 5.7.1 <rcpt>: Relay access denied; from=<…> …``."""

PERMIT = compile_grammar(
    "permit",
    (_lit("NOQUEUE") | QUEUE_ID)
    + _lit(": permit: ")
    + _re(r"(?P<stage>[A-Z][A-Z-]{2,15}) from ", "stage")
    + CLIENT
    + _lit(": ")
    + _re(r"(?P<reason>[^;]*[^; ])(?= ?;|$)", "reason")
    + ADDRESS_SUFFIX,
    Kind.PERMIT,
)
"""``NOQUEUE: permit: RCPT from name[ip]: action=permit_mynetworks …; from=<…> to=<…> …``."""

CONNECT = compile_grammar("connect", _lit("connect from ") + CLIENT, Kind.CONNECT)
DISCONNECT = compile_grammar("disconnect", _lit("disconnect from ") + CLIENT, Kind.DISCONNECT)

QUEUE_CLIENT = compile_grammar(
    "client",
    QUEUE_ID
    + _lit(": client=")
    + CLIENT
    + pp.Opt(_lit(", sasl_method=") + _re(r"(?P<sasl_method>[^,\s]*)", "sasl method"))
    + pp.Opt(_lit(", sasl_username=") + _re(r"(?P<sasl_user>[^,]*)", "sasl user")),
    Kind.CLIENT,
)
"""``QID: client=name[ip], sasl_method=PLAIN, sasl_username=alice@example.test``."""

AUTH_FAILED = compile_grammar(
    "auth failed",
    _lit("warning: ")
    + CLIENT
    + _lit(": SASL ")
    + _re(r"(?P<sasl_method>[-\w]+)", "sasl method")
    + _lit(" authentication failed")
    + _re(r":? ?(?P<reason>[^,]*(?:,(?! sasl_username=)[^,]*){0,16})", "reason")
    + pp.Opt(_lit(", sasl_username=") + _re(r"(?P<sasl_user>.*)", "sasl user")),
    Kind.AUTH_FAILED,
)
"""``warning: name[ip]: SASL LOGIN authentication failed: reason, sasl_username=u``."""

CLIENT_NOTE = compile_grammar(
    "client note",
    _re(
        r"(?:NOQUEUE: )?(?P<reason>[^\[\]]{1,200}?"
        r"(?: after (?P<stage>[A-Z]+)(?: \([^()]*\))?)?) from ",
        "note",
    )
    + CLIENT,
    Kind.CLIENT_NOTE,
)
"""Any other line where Postfix names a client: ``lost connection after AUTH from name[ip]`` …"""

UNRESOLVED = compile_grammar(
    "hostname does not resolve",
    _re(r"(?P<reason>warning: hostname (?P<client_name>\S+) does not resolve to address) ", "note")
    + _re(rf"(?P<client_ip>{IP})", "client ip"),
    Kind.CLIENT_NOTE,
)
"""``warning: hostname bad.example.com does not resolve to address 192.0.2.44``."""

SCREEN_CONNECT = compile_grammar(
    "postscreen connect", _lit("CONNECT from ") + SCREEN_CLIENT, Kind.SCREEN_CONNECT
)
SCREEN_PASS = compile_grammar(
    "postscreen pass",
    _re(r"(?P<reason>PASS (?:NEW|OLD)) ", "pass") + SCREEN_CLIENT,
    Kind.SCREEN_PASS,
)
SCREEN_NOTE = compile_grammar(
    "postscreen note",
    _re(r"(?P<reason>[A-Z][A-Z][^\[\]]{1,80}?)(?: from| for)? (?=\[)", "verdict") + SCREEN_CLIENT,
    Kind.CLIENT_NOTE,
)
"""``PREGREET 14 after 0.08 from [ip]:port``, ``HANGUP after 16 from [ip]:port`` …"""

MESSAGE_ID = compile_grammar(
    "message-id",
    QUEUE_ID + _lit(": message-id=") + _re(r"<?(?P<message_id>[^<>\s]*)>?", "message id"),
    Kind.MESSAGE_ID,
)
QUEUED = compile_grammar(
    "queued",
    QUEUE_ID
    + _lit(": from=")
    + _re(r"<?(?P<sender>[^<>,\s]*)>?, ", "sender")
    + pp.MatchFirst(
        [
            _lit("size=")
            + _re(r"(?P<size>\d+)", "size")
            + _lit(", nrcpt=")
            + _re(r"(?P<nrcpt>\d+)", "recipients"),
            _lit("status=") + _re(r"(?P<status>expired)", "status"),
        ]
    ),
    Kind.QUEUED,
)
"""qmgr's ``QID: from=<sender>, size=462, nrcpt=1 (queue active)``, or ``… status=expired``."""

REMOVED = compile_grammar("removed", QUEUE_ID + _lit(": removed"), Kind.REMOVED)
PICKUP = compile_grammar(
    "pickup",
    QUEUE_ID
    + _lit(": uid=")
    + _re(r"\d+", "uid")
    + _lit(" from=<")
    + _re(r"(?P<sender>[^>]*)", "sender"),
    Kind.PICKUP,
)
DELIVERY = compile_grammar(
    "delivery",
    QUEUE_ID
    + _lit(": to=<")
    + _re(r"(?P<recipient>[^>]*)", "recipient")
    + _lit(">, ")
    + pp.Opt(_lit("orig_to=<") + _re(r"(?P<orig_recipient>[^>]*)", "original") + _lit(">, "))
    + _lit("relay=")
    + _re(r"(?P<relay>[^,\s]+)", "relay")
    + _re(r"(?:, (?!dsn=)[a-z_]+=[^,\s]*){0,8}", "timings")
    + _lit(", dsn=")
    + _re(r"(?P<enhanced>\d\.\d{1,3}\.\d{1,3})", "dsn")
    + _lit(", status=")
    + _re(r"(?P<status>[a-z]+)", "status")
    + pp.Opt(_re(r" \((?P<reason>.*)\)", "status text")),
    Kind.DELIVERY,
)
"""``QID: to=<r>, orig_to=<a>, relay=host[ip]:25, delay=…, dsn=2.0.0, status=sent (250 Ok)``."""


HEADER = compile_grammar("syslog header", SYSLOG_HEADER)

_SMTPD: Final = (
    ("connect from ", CONNECT),
    ("disconnect from ", DISCONNECT),
    ("", QUEUE_CLIENT),
    ("", REJECT),
    ("warning: hostname ", UNRESOLVED),
    ("warning: ", AUTH_FAILED),
    ("", PERMIT),
    ("", CLIENT_NOTE),
)
_DELIVERY: Final = (("", DELIVERY),)
DISPATCH: Final[dict[str, tuple[tuple[str, Grammar], ...]]] = {
    "smtpd": _SMTPD,
    "qmgr": (("", QUEUED), ("", REMOVED)),
    "cleanup": (("", MESSAGE_ID), ("", REJECT)),
    "postscreen": (
        ("CONNECT from ", SCREEN_CONNECT),
        ("PASS ", SCREEN_PASS),
        ("", REJECT),
        ("", SCREEN_NOTE),
    ),
    "pickup": (("", PICKUP),),
    "postsuper": (("", REMOVED),),
    **{agent: _DELIVERY for agent in DELIVERY_AGENTS},
}
"""For each Postfix program (the last part of its syslog name), the grammars to try in order,
each behind a literal prefix the message must start with (checked first, it is cheaper)."""


@cache
def grammars() -> tuple[Grammar, ...]:
    """Every Postfix grammar, for tests and the ``parse`` dry run."""
    return tuple({g.name: g for table in DISPATCH.values() for _, g in table}.values())


def relay_refused(reject: re.Match[str]) -> bool:
    """Whether a matched reject refuses a recipient as a relay.

    Only the text after ``<recipient>: `` is Postfix's own; the address is the client's.
    """
    if reject["stage"] != "RCPT":
        return False
    reason = reject["reason"]
    verdict = reason.rpartition(">: ")[2] if reason.startswith("<") else reason
    return verdict in RELAY_REFUSALS


class PostfixParser:
    """Turns Postfix log lines into :class:`~parsers.events.Event` objects.

    ``now`` is the clock used to give classic syslog timestamps their year; ``tz`` is the zone
    those timestamps were written in (local time when ``None``).  :meth:`parse` never raises:
    a line it does not understand gives ``None``.
    """

    family = FAMILY

    def __init__(self, now: Callable[[], float] = time.time, tz: tzinfo | None = None) -> None:
        self._clock = SyslogClock(now, tz)

    def parse(self, line: str) -> Event | None:
        header = _HEADER_MATCH(line)
        if header is None:
            return None
        program = header["program"]
        table = DISPATCH.get(program.rpartition("/")[2])
        if table is None:
            return None
        start = header.end()
        for prefix, grammar in table:
            if prefix and not line.startswith(prefix, start):
                continue
            m = grammar.regex.match(line, start)
            if m is None:
                continue
            try:
                stamp = header["classic"]
                when = self._clock.classic(stamp) if stamp else _rfc3339(header["rfc3339"])
            except ValueError:  # a day or hour out of range: not a real timestamp
                return None
            pid = header["pid"]
            return grammar.event(
                m, when, header["host"], program, int(pid) if pid else None,
                grammar is REJECT and relay_refused(m),
            )  # fmt: skip
        return None


_HEADER_MATCH = HEADER.regex.match
_rfc3339 = SyslogClock.rfc3339
