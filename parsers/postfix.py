"""Postfix: syslog (classic or RFC 3339) and ``maillog_file`` lines to events.

The grammar below is the single source of truth: the syslog envelope, then the first message
that matches, compiled once into the one regular expression it stands for
(:mod:`parsers.grammar`), so a line costs one match.  Messages that start with a queue id share
that prefix.  Client addresses are taken only where Postfix itself writes them, before any text
a client controls (HELO, MAIL FROM, RCPT TO, AUTH name, message headers), so such text cannot
become the client.
"""

from __future__ import annotations

from typing import Final

import pyparsing as pp

from parsers import syslog
from parsers.events import Kind
from parsers.grammar import IP, Message, compile_lines

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


QUEUE_ID = _re(r"(?P<queue_id>[0-9A-Z][0-9A-Za-z]{4,}+)", "queue id")
"""Short (hex, ``C1D72178141``) or long (``3mPVKl0Mhjz7sXv``) queue ids; never a lowercase
word such as ``warning`` or ``reject``, and ``NOQUEUE`` is always tried first."""

CLIENT = (
    pp.Opt(_re(r"(?P<client_name>[^ \[\]]+)", "client name"))
    + _lit("[")
    + _re(rf"(?P<client_ip>{IP})", "client ip")
    + _lit("]")
    + pp.Opt(_lit(":") + _re(r"\d+", "port"))
)
"""``name[ip]`` or ``name[ip]:port``; the name is a validated DNS name or ``unknown``."""

SCREEN_CLIENT = (
    _lit("[") + _re(rf"(?P<client_ip>{IP})", "client ip") + _lit("]:") + _re(r"\d+", "port")
)
"""postscreen's ``[ip]:port`` (it never knows the client's name)."""

ADDRESS_SUFFIX = pp.Opt(
    _re(r" ?; (?=from=<|to=<|proto=)", "suffix start")
    + pp.Opt(_lit("from=<") + _re(r"(?P<sender>[^>]*)", "sender") + _re(r">,? ?", "end"))
    + pp.Opt(_lit("to=<") + _re(r"(?P<recipient>[^>]*)", "recipient") + _re(r">,? ?", "end"))
    + pp.Opt(_lit("proto=") + _re(r"[A-Za-z]+,? ?", "proto"))
    + pp.Opt(_lit("helo=") + _re(r"<?(?P<helo>(?:.*[^>])?)>?$", "helo"))
)
"""``; from=<s> to=<r> proto=P helo=<h>`` (postscreen puts commas between the fields)."""

# Messages that follow "<queue id>: ".

DELIVERY = (
    _lit("to=<")
    + _re(r"(?P<recipient>[^>]*)", "recipient")
    + _lit(">, ")
    + pp.Opt(_lit("orig_to=<") + _re(r"(?P<orig_recipient>[^>]*)", "original") + _lit(">, "))
    + _lit("relay=")
    + _re(r"(?P<relay>[^, ]+)", "relay")
    + pp.Opt(_lit(", conn_use=") + _re(r"\d+", "connection use"))
    + _lit(", delay=")
    + _re(r"[^,]*", "delay")
    + pp.Opt(_lit(", delays=") + _re(r"[^,]*", "delays"))
    + _lit(", dsn=")
    + _re(r"(?P<enhanced>\d\.\d+\.\d+)", "dsn")
    + _lit(", status=")
    + _re(r"(?P<status>[a-z]+)", "status")
    + pp.Opt(_re(r" \((?P<reason>.*)\)", "status text"))
)
"""``QID: to=<r>, orig_to=<a>, relay=host[ip]:25, delay=…, dsn=2.0.0, status=sent (250 Ok)``."""

QUEUED = (
    _lit("from=")
    + _re(r"<?(?P<sender>[^<>, ]*)>?, ", "sender")
    + pp.MatchFirst(
        [
            _lit("size=")
            + _re(r"(?P<size>\d+)", "size")
            + _lit(", nrcpt=")
            + _re(r"(?P<nrcpt>\d+)", "recipients"),
            _lit("status=") + _re(r"(?P<status>expired)", "status"),
        ]
    )
)
"""qmgr's ``QID: from=<sender>, size=462, nrcpt=1 (queue active)``, or ``… status=expired``."""

QUEUE_CLIENT = (
    _lit("client=")
    + CLIENT
    + pp.Opt(_lit(", sasl_method=") + _re(r"(?P<sasl_method>[^, ]*)", "sasl method"))
    + pp.Opt(_lit(", sasl_username=") + _re(r"(?P<sasl_user>[^,]*)", "sasl user"))
)
"""``QID: client=name[ip], sasl_method=PLAIN, sasl_username=alice@example.test``."""

MESSAGE_ID = _lit("message-id=") + _re(r"<?(?P<message_id>[^<> ]*)>?", "message id")
REMOVED = _lit("removed")
PICKUP = _lit("uid=") + _re(r"\d+", "uid") + _lit(" from=<") + _re(r"(?P<sender>[^>]*)", "sender")

# Messages about a client.

CONNECT = _lit("connect from ") + CLIENT
DISCONNECT = _lit("disconnect from ") + CLIENT

REJECT = (
    pp.Opt((_lit("NOQUEUE") | QUEUE_ID) + _lit(": "))
    + _re(r"(?:reject|milter-reject|defer|discard|hold|reject_warning): ", "action")
    + _re(r"(?P<stage>[A-Z][A-Z-]{2,15}|header|body) from ", "stage")
    + CLIENT
    + _lit(": ")
    + pp.Opt(_re(r"(?P<code>[245]\d\d) ", "code"))
    + pp.Opt(_re(r"(?P<enhanced>[245]\.\d{1,3}\.\d{1,3}) ", "enhanced code"))
    + _re(r"(?P<reason>[^;]*(?:;(?! (?:from=<|to=<|proto=))[^;]*)*)", "reason")
    + ADDRESS_SUFFIX
)
"""``NOQUEUE: reject: RCPT from name[ip]: 554 5.7.1 <rcpt>: Relay access denied; from=<…> …``,
also with a queue id (an earlier recipient was accepted) or, before Postfix 2.3, neither."""

PERMIT = (
    (_lit("NOQUEUE") | QUEUE_ID)
    + _lit(": permit: ")
    + _re(r"(?P<stage>[A-Z][A-Z-]{2,15}) from ", "stage")
    + CLIENT
    + _lit(": ")
    + _re(r"(?P<reason>[^;]*[^; ])(?= ?;|$)", "reason")
    + ADDRESS_SUFFIX
)
"""``NOQUEUE: permit: RCPT from name[ip]: action=permit_mynetworks …; from=<…> to=<…> …``."""

AUTH_FAILED = (
    _lit("warning: ")
    + CLIENT
    + _lit(": SASL ")
    + _re(r"(?P<sasl_method>[-\w]+)", "sasl method")
    + _lit(" authentication failed")
    + _re(r":? ?(?P<reason>[^,]*(?:,(?! sasl_username=)[^,]*){0,16})", "reason")
    + pp.Opt(_lit(", sasl_username=") + _re(r"(?P<sasl_user>.*)", "sasl user"))
)
"""``warning: name[ip]: SASL LOGIN authentication failed: reason, sasl_username=u``."""

UNRESOLVED = _re(
    r"(?P<reason>warning: hostname (?P<client_name>[^ ]+) does not resolve to address) ", "note"
) + _re(rf"(?P<client_ip>{IP})", "client ip")
"""``warning: hostname bad.example.com does not resolve to address 192.0.2.44``."""

CLIENT_NOTE = (
    _re(
        r"(?!(?!NOQUEUE)[0-9A-Z][0-9A-Za-z]{4,}: )(?:NOQUEUE: )?(?P<reason>[^\[\]]{1,200}?"
        r"(?: after (?P<stage>[A-Z]+)(?: \([^()]*\))?)?) from ",
        "note",
    )
    + CLIENT
)
"""Any other line where Postfix names a client: ``lost connection after AUTH from name[ip]`` ….
Never a line that starts with a queue id: those carry message content (``reject: header …``),
which is the client's and may contain anything."""

SCREEN_CONNECT = _lit("CONNECT from ") + SCREEN_CLIENT
SCREEN_PASS = _re(r"(?P<reason>PASS (?:NEW|OLD)) ", "pass") + SCREEN_CLIENT
SCREEN_NOTE = (
    _re(r"(?P<reason>[A-Z][A-Z][^\[\]]{1,80}?)(?: from| for)? (?=\[)", "verdict") + SCREEN_CLIENT
)
"""``PREGREET 14 after 0.08 from [ip]:port``, ``HANGUP after 16 from [ip]:port`` …"""

delivery = Message("delivery", Kind.DELIVERY, DELIVERY)
queued = Message("queued", Kind.QUEUED, QUEUED)
client = Message("client", Kind.CLIENT, QUEUE_CLIENT)
message_id = Message("header_message_id", Kind.MESSAGE_ID, MESSAGE_ID)
removed = Message("removed", Kind.REMOVED, REMOVED)
pickup = Message("pickup", Kind.PICKUP, PICKUP)
connect = Message("connect", Kind.CONNECT, CONNECT)
disconnect = Message("disconnect", Kind.DISCONNECT, DISCONNECT)
screen_connect = Message("screen_connect", Kind.SCREEN_CONNECT, SCREEN_CONNECT)
screen_pass = Message("screen_pass", Kind.SCREEN_PASS, SCREEN_PASS)
reject = Message("reject", Kind.REJECT, REJECT)
permit = Message("permit", Kind.PERMIT, PERMIT)
unresolved = Message("unresolved", Kind.CLIENT_NOTE, UNRESOLVED)
auth_failed = Message("auth_failed", Kind.AUTH_FAILED, AUTH_FAILED)
client_note = Message("client_note", Kind.CLIENT_NOTE, CLIENT_NOTE)
screen_note = Message("screen_note", Kind.CLIENT_NOTE, SCREEN_NOTE)

BODY: Final = pp.MatchFirst(
    [  # the most frequent first, the catch-alls last; queue-id messages share their prefix
        QUEUE_ID
        + _lit(": ")
        + pp.MatchFirst([delivery(), queued(), client(), message_id(), removed(), pickup()]),
        connect(),
        disconnect(),
        screen_connect(),
        screen_pass(),
        reject(),
        permit(),
        unresolved(),
        auth_failed(),
        client_note(),
        screen_note(),
    ]
)
MESSAGES: Final = (
    delivery, queued, client, message_id, removed, pickup, connect, disconnect, screen_connect,
    screen_pass, reject, permit, unresolved, auth_failed, client_note, screen_note,
)  # fmt: skip


def relay_refused(stage: str | None, reason: str | None) -> bool:
    """Whether a reject refuses a recipient as a relay.

    Only the text after ``<recipient>: `` is Postfix's own; the address is the client's.
    """
    if stage != "RCPT" or reason is None:
        return False
    verdict = reason.rpartition(">: ")[2] if reason.startswith("<") else reason
    return verdict in RELAY_REFUSALS


ENVELOPE: Final = (
    syslog.HEADER_START + _re(r"(?P<program>[^ \[/]++/[^ \[]++)", "program") + syslog.PID
)
"""``<time> <host> postfix…/<service>[<pid>]: ``: Postfix names its programs with a slash."""

LINE: Final = compile_lines(
    ENVELOPE,
    BODY,
    MESSAGES,
    time=syslog.TIME,
    derived={"relay_refused": (relay_refused, ("stage", "reason"))},
)


class PostfixParser(syslog.SyslogLineParser):
    """Turns Postfix log lines into :class:`~parsers.events.Event` objects (see
    :class:`parsers.syslog.SyslogLineParser`)."""

    family = FAMILY
    branches = tuple(message.name for message in MESSAGES)
    LINE = LINE
