"""Sendmail: syslog lines (classic or RFC 3339) to events.

Sendmail logs no connect or disconnect by default.  A message is named by its queue id from its
first line: the rejects of its SMTP transaction (``ruleset=check_rcpt, … reject=…``), then, once
the transaction ends, the ``from=`` line with the client (``relay=name [ip]``) and the number of
recipients the server accepted (``nrcpts=``), then one ``to=`` line per delivery attempt, which
may list several recipients.  There is no line for the end of a message: it is over once
``nrcpts`` recipients have a final outcome (``ENDS_AT_LAST_RECIPIENT``).  ``AUTH=server`` lines
carry no queue id: they name the session (host, program, pid) whose messages the user sent.

The program is whatever sendmail was called (``sendmail``, ``sm-mta``, ``sm-msp-queue``, a ``-L``
tag): the messages themselves say it is sendmail.  Postfix programs contain a slash and are
never read here.

Client addresses are taken only where sendmail writes them.  Where text a client controls shares
a line with the client (the sender and Message-ID on ``from=``, the address of a ruleset, the
user of an AUTH failure), quoted strings are read as a whole and the client is the one sendmail
writes last on the line, which is where it always puts it.  IPv6 clients, written out in full
(``[IPv6:0:0:0:0:0:0:0:1]``), are given in the compressed form other families use (``::1``), so
one client is one address in the store whatever logged it.  A client name is one sendmail
confirmed: a name marked ``(may be forged)`` and a missing name are both ``unknown``, as Postfix
logs them.

What each line becomes: ``from=`` is ``QUEUED`` (``PICKUP`` when ``relay=user@localhost`` says
it was submitted on this host); ``to=`` is ``DELIVERY``; rulesets, ``<address>... User unknown``
and milter verdicts are ``REJECT``; ``QID: NEWQID: DSN: …`` (and ``return to sender``,
``postmaster notify``) is the ``PICKUP`` of the new message sendmail queued itself.  Lines that
name a client and nothing else (no MAIL, lost input, greeting pause, EXPN/VRFY refused, AUTH
attack, STARTTLS) are ``CLIENT_NOTE``; ``NOQUEUE: connect from`` (LogLevel 10) is ``CONNECT``.
Nothing else is read: start-up chatter, outgoing ``STARTTLS=client``/``AUTH=client``, a
timeout whose host has no address, milter header changes, a saved dead letter.  ``ctladdr=`` is
the controlling user (the alias owner, or the local sender), not an original recipient.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

import pyparsing as pp

from parsers import syslog
from parsers.events import Kind
from parsers.grammar import IP, Message, compile_lines
from parsers.protocol import ENDS_AT_LAST_RECIPIENT

FAMILY: Final = "sendmail"

RELAY_REFUSAL: Final = re.compile(r"(?i:relaying (?:temporarily )?denied|we do not relay)")
"""Reject texts (after ``<address>... ``) in which sendmail refuses a recipient as a relay:
``Relaying denied`` with whatever the rules add (``. Proper authentication required.``, ``. IP
name possibly forged [ip]``), the temporary form of unresolvable clients, and 8.8's words."""

STAGES: Final = {
    "check_rcpt": "RCPT",
    "check_mail": "MAIL",
    "check_relay": "CONNECT",
    "check_data": "DATA",
    "check_eoh": "DATA",
    "check_eom": "DATA",
    "check_vrfy": "VRFY",
    "check_expn": "EXPN",
    "check_etrn": "ETRN",
    "to": "RCPT",  # Milter: to=<x>, reject=…
    "from": "MAIL",  # Milter: from=<x>, reject=…
    "...": "RCPT",  # "<address>... User unknown": the error of a recipient
    "startup": "CONNECT",  # lost input channel … after startup
}
"""The SMTP command of a ruleset, of a milter's verdict, or of sendmail's own words; other
rulesets (``check_compat`` at delivery, ``tls_*``, local ones) name no command.  SMTP commands
logged in lower case (``after rcpt``) are upper-cased."""

LOCAL_MAILERS: Final = frozenset(
    {"local", "prog", "*file*", "*include*", "lmtp", "cyrus", "cyrusv2", "procmail", "maildrop",
     "dovecot"}
)  # fmt: skip
"""Mailers that deliver on this host: a mailbox, a file, a program, a local mail store."""
SMTP_MAILERS: Final = frozenset({"esmtp", "smtp", "smtp8", "dsmtp", "relay"})


def _re(pattern: str, name: str) -> pp.ParserElement:
    return pp.Regex(pattern).set_name(name)


def _lit(text: str) -> pp.Literal:
    return pp.Literal(text)


def _syslog_part(name: str) -> pp.ParserElement:
    """The element of ``syslog.HEADER_START`` called ``name`` (its timestamp, its host)."""
    parts = [syslog.HEADER_START]
    while parts:
        part = parts.pop()
        if part.customName == name:
            return part
        parts.extend(getattr(part, "exprs", ()))
    raise LookupError(f"syslog.HEADER_START has no part named {name!r}")


QUEUE_ID_RE = r"[0-9A-Za-z]{8,20}+"
"""8.12 and later: ``6AU8GprE017412`` (longer with large pids); 8.9: ``KAA12345``."""
PREFIX = pp.Opt(_re(rf"(?:NOQUEUE|(?P<queue_id>{QUEUE_ID_RE})): ", "queue id or NOQUEUE"))
"""``<queue id>: `` before the lines of a message, ``NOQUEUE: `` or nothing before lines of a
session that has none yet (sendmail 8.12 and later give a session its first queue id when it
starts)."""

QUOTED = r'"(?:[^"\\]++|\\.){0,256}+"'
"""A quoted string of an address, read as a whole: it may hold commas, brackets, ``relay=``.
Loops that turn once per quoted string or escape are bounded (an address has at most 256
characters), so text built to turn them once per character costs little."""
ADDRESS = rf"(?:[^<>\",]++|{QUOTED}){{0,32}}+"
"""An address as sendmail logs it between angle brackets (or bare, up to a comma)."""
CLIENT = (
    r"(?:(?P<client_name>[^ \[\](),]++) )?+"
    rf"\[(?:IPv6:)?+(?P<client_ip>{IP}\](?: \(may be forged\))?+)"
)
"""``name [ip]``, ``[ip]``, ``name [IPv6:…]``, ``ident@name [ip]``, ``… (may be forged)``:
``relay=`` on receiving lines (sendmail's ``CurSmtpClient``).  The name is read once, with an
RFC 1413 ident user before it, and the ``client_ip`` group runs on to the end, so that
:func:`_client_ip` and :func:`_client_name` see whether sendmail could confirm the name."""
REJECT = r"(?:(?P<code>[245]\d\d) )?(?:(?P<enhanced>[245]\.\d{1,3}\.\d{1,3}) )?(?P<reason>.*)"
"""``550 5.7.1 <x>... Relaying denied. Proper authentication required.`` after ``reject=``."""

# Lines of a message (after its queue id).

ITEM = rf"(?:[^\",<>]++|{QUOTED}){{0,32}}+(?:<{ADDRESS}>)?+"
"""One recipient of a ``to=`` list: ``<a@b>``, ``a@b``, ``/dev/null``, ``"|prog"``,
``Name <a@b>``; items are joined by a bare comma, fields by a comma and a space."""
RECIPIENTS = rf"{ITEM}(?:,(?! ){ITEM}){{0,2000}}+"
"""Up to 2,000 recipients (a syslog line of 64 KiB holds fewer real ones)."""

DELIVERY = (
    _lit("to=")
    + _re(rf"(?P<recipients>{RECIPIENTS})", "recipients")
    + pp.Opt(_lit(", ctladdr=") + _re(rf"(?:[^\",]++|{QUOTED}){{0,32}}+", "controlling user"))
    + pp.Opt(_lit(", delay=") + _re(r"[^,]*", "delay"))
    + pp.Opt(_lit(", xdelay=") + _re(r"[^,]*", "transmission delay"))
    + pp.Opt(_lit(", mailer=") + _re(r"(?P<agent>[^ ,]+)", "mailer"))
    + pp.Opt(_lit(", pri=") + _re(r"\d+", "priority"))
    + pp.Opt(_lit(", relay=") + _re(r"(?P<relay>[^,]*)", "next hop"))
    + pp.Opt(_lit(", dsn=") + _re(r"(?P<enhanced>[^,]*)", "dsn"))
    + pp.Opt(_re(r", reply=.{0,1024}?(?=, stat=)", "reply"))
    + _lit(", stat=")
    + _re(r"(?P<reason>.*)", "stat")
)
"""``QID: to=<a>,<b>, ctladdr=<c> (8/0), delay=…, xdelay=…, mailer=esmtp, pri=…,
relay=mx.example. [ip], dsn=2.0.0, reply=…, stat=Sent (…)``."""

FROM = (
    _lit("from=")
    + _re(rf"<?(?P<sender>{ADDRESS})>?", "sender")
    + _lit(", size=")
    + _re(r"(?P<size>\d+)", "size")
    + _lit(", class=")
    + _re(r"-?\d+", "class")
    + pp.Opt(_lit(", pri=") + _re(r"\d+", "priority"))
    + _lit(", nrcpts=")
    + _re(r"(?P<nrcpt>\d+)", "recipients")
    + pp.Opt(_lit(", msgid=") + _re(r"<?(?P<message_id>[^<>,]*)>?", "message id"))
)
"""``QID: from=<s>, size=261, class=0, nrcpts=1, msgid=<m>`` …; the rest of the line (bodytype,
proto, daemon, relay) says who sent it.  The Message-ID is the client's: ``relay=`` is read
from the end of the line, where sendmail always writes it."""

QUEUED = _re(rf".{{0,1024}}, relay={CLIENT}$", "client")
"""… ``, proto=ESMTP, daemon=MTA-v4, relay=name [ip]``: a message received over SMTP."""
PICKUP = _re(r".{0,1024}, relay=[^ ,\[\]@]+@[^ ,\[\]]+$", "local user")
"""… ``, relay=www-data@localhost``: a message submitted on this host (the command line)."""
QUEUED_UNPLACED = _re(r".*", "rest")
"""A ``from=`` line without a client (cut short): its session or its rejects may name it."""

ADDRESS_REJECT = _re(
    rf"(?P<reason><(?P<recipient>{ADDRESS})>(?P<stage>\.\.\.) (?!Sent\b|Saved message|Connecting"
    r" to|Queued\b).*)",
    "address error",
)
"""``QID: <nosuchuser@example.test>... User unknown``: sendmail refused a recipient without
a ruleset (its own lookups)."""

MILTER_RCPT = (
    _lit("Milter: ")
    + _re(rf"(?P<stage>to)=<?(?P<recipient>{ADDRESS})>?", "milter recipient")
    + _lit(", reject=")
    + _re(REJECT, "reply")
)
MILTER_REJECT = (
    _lit("Milter: ")
    + _re(rf"(?:cmd=)?(?P<stage>from|data)(?:=<?(?P<sender>{ADDRESS})>?)?", "milter stage")
    + _lit(", reject=")
    + _re(REJECT, "reply")
)
"""``QID: Milter: to=<x>, reject=550 5.7.1 …``; ``Milter: from=<x>, …``; ``Milter: data, …``."""

BOUNCE = _re(
    rf"(?P<queue_id>{QUEUE_ID_RE}): (?P<reason>(?:DSN|return to sender|postmaster notify|"
    r"sender notify): .*)",
    "bounce",
)
"""``QID: NEWQID: DSN: Host unknown …``: sendmail itself queued a new message (a bounce or a
notice), which goes on under the second id."""

# Lines of an SMTP session (after a queue id, NOQUEUE, or nothing).

RULESET_TAIL = (
    _lit(", relay=") + _re(rf"{CLIENT}|[^ ,]*", "client") + _lit(", reject=") + _re(REJECT, "reply")
)
RCPT_REJECT = (
    _re(r"ruleset=(?P<stage>check_rcpt), arg1=", "ruleset")
    + _re(rf"<?(?P<recipient>{ADDRESS})>?", "recipient")
    + RULESET_TAIL
)
"""``ruleset=check_rcpt, arg1=<x>, relay=name [ip], reject=550 5.7.1 <x>... Relaying denied``."""
MAIL_REJECT = (
    _re(r"ruleset=(?P<stage>check_mail), arg1=", "ruleset")
    + _re(rf"<?(?P<sender>{ADDRESS})>?", "sender")
    + RULESET_TAIL
)
RULESET_REJECT = (
    _re(r"ruleset=(?!check_rcpt,|check_mail,)(?P<stage>[\w.-]+), arg1=", "ruleset")
    + _re(rf"<?{ADDRESS}>?(?:, arg2=<?{ADDRESS}>?)?", "arguments")
    + RULESET_TAIL
)
"""``ruleset=check_relay, arg1=name, arg2=ip, relay=name [ip], reject=421 4.3.2 …`` and the
other rulesets (``check_compat``, ``tls_server``, …)."""

AUTH = _lit("AUTH=server, relay=") + _re(
    rf"{CLIENT}, authid=(?P<sasl_user>.{{0,256}}), mech=(?P<sasl_method>[^ ,]+), bits=\d+$",
    "authenticated",
)
"""``AUTH=server, relay=name [ip], authid=alice@example.test, mech=PLAIN, bits=0``."""

AUTH_FAILED = _lit("AUTH failure (") + _re(
    rf"(?P<sasl_method>[^()]*)\): (?P<reason>.{{0,1024}}), relay={CLIENT}$",
    "authentication failure",
)
"""``QID: AUTH failure (LOGIN): authentication failure (-13) SASL(-13): …, user=u,
relay=[ip]``: the client is the last ``relay=``, the user what follows the last ``, user=``
before it (8.16 and later log it)."""

CONNECT = _lit("connect from ") + _re(rf"{CLIENT}$", "client")
"""``NOQUEUE: connect from name [ip]`` (LogLevel 10 and above)."""

STARTTLS = _lit("STARTTLS=server, relay=") + _re(rf"{CLIENT}, (?P<reason>.*)", "client")
"""``STARTTLS=server, relay=name [ip], version=TLSv1.3, verify=NO, cipher=…, bits=256/256``."""

CLIENT_FIRST = _re(
    rf"{CLIENT}(?:: | (?=did not issue |didn't use HELO))(?P<reason>.+)", "client first"
)
"""``QID: name [ip] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA``,
``[ip]: possible SMTP attack: command=AUTH, count=5``, ``name [ip]: EXPN root [rejected]``."""

FROM_CLIENT = _re(
    r"(?P<reason>lost input channel|rejecting commands|timeout waiting for input) from  ?"
    rf"{CLIENT}(?:.{{0,256}} after (?P<stage>[a-z]+)$)?",
    "from client",
)
"""``lost input channel from name [ip] to MTA-v4 after rcpt``, ``rejecting commands from
[ip] due to pre-greeting traffic after 0 seconds``, ``timeout waiting for input from …``."""

delivery = Message("delivery", Kind.DELIVERY, DELIVERY)
queued = Message("queued", Kind.QUEUED, QUEUED)
pickup = Message("pickup", Kind.PICKUP, PICKUP)
queued_unplaced = Message("queued_unplaced", Kind.QUEUED, QUEUED_UNPLACED)
address_reject = Message("address_reject", Kind.REJECT, ADDRESS_REJECT)
milter_rcpt = Message("milter_rcpt", Kind.REJECT, MILTER_RCPT)
milter_reject = Message("milter_reject", Kind.REJECT, MILTER_REJECT)
bounce = Message("bounce", Kind.PICKUP, BOUNCE)
rcpt_reject = Message("rcpt_reject", Kind.REJECT, RCPT_REJECT)
mail_reject = Message("mail_reject", Kind.REJECT, MAIL_REJECT)
ruleset_reject = Message("ruleset_reject", Kind.REJECT, RULESET_REJECT)
auth = Message("auth", Kind.AUTH, AUTH)
auth_failed = Message("auth_failed", Kind.AUTH_FAILED, AUTH_FAILED)
connect = Message("connect", Kind.CONNECT, CONNECT)
starttls = Message("starttls", Kind.CLIENT_NOTE, STARTTLS)
client_first = Message("client_first", Kind.CLIENT_NOTE, CLIENT_FIRST)
from_client = Message("from_client", Kind.CLIENT_NOTE, FROM_CLIENT)

BODY: Final = PREFIX + pp.MatchFirst(
    [  # the most frequent first; most start with a literal, which the regex engine tests first
        delivery(),
        FROM + pp.MatchFirst([queued(), pickup(), queued_unplaced()]),
        rcpt_reject(),
        mail_reject(),
        ruleset_reject(),
        auth(),
        starttls(),
        milter_rcpt(),
        milter_reject(),
        auth_failed(),
        connect(),
        address_reject(),
        bounce(),
        client_first(),
        from_client(),
    ]
)
MESSAGES: Final = (
    delivery, queued, pickup, queued_unplaced, rcpt_reject, mail_reject, ruleset_reject, auth,
    starttls, milter_rcpt, milter_reject, auth_failed, connect, address_reject, bounce,
    client_first, from_client,
)  # fmt: skip

# Fields computed from what a line says.  Each function is called for the messages that have
# all its arguments (an argument it does not use picks those messages) and gets their text as
# logged, or None.


def _client_ip(ip: str | None) -> str | None:
    """The address of ``ip]`` or ``ip] (may be forged)``; IPv6 in the compressed form (sendmail
    writes every group out)."""
    if ip is None:
        return None
    ip = ip[: ip.index("]")]
    if ":" not in ip or "." in ip:
        return ip
    compressed = _IPV6.get(ip)
    if compressed is None:
        try:
            compressed = ipaddress.IPv6Address(ip).compressed
        except ValueError:
            compressed = ip
        if len(_IPV6) >= 4096:
            _IPV6.clear()
        _IPV6[ip] = compressed
    return compressed


_IPV6: dict[str, str] = {}
"""IPv6 clients seen, written out and compressed (``ipaddress`` takes 10 µs a conversion)."""


def _client_name(name: str | None, ip: str | None) -> str | None:
    """The name sendmail confirmed, without an ident user; ``unknown`` (Postfix's word) for a
    client it could not name or whose name it marked ``(may be forged)``."""
    if ip is None:
        return None
    if name is None or ip.endswith(")"):
        return "unknown"
    return name.rpartition("@")[2]


def _stage(raw: str | None) -> str | None:
    """The SMTP command a ruleset, a milter verdict or a note refers to (see ``STAGES``)."""
    if raw is None:
        return None
    stage = STAGES.get(raw)
    if stage is None and raw.isalpha():  # an SMTP command (rcpt, EXPN)
        stage = raw.upper()
    return stage


_ITEM = re.compile(rf",?+({ITEM})")
_ANGLE = re.compile(rf"(?:[^\",<>]++|{QUOTED}){{0,32}}+<({ADDRESS})>")


def _addresses(recipients: str) -> list[str]:
    """The addresses of a ``to=`` list, without angle brackets (and display names)."""
    out = []
    for item in _ITEM.findall(recipients):
        if item:
            angle = _ANGLE.fullmatch(item)
            out.append(item if angle is None else angle[1])
    return out


def _first_recipient(recipients: str | None) -> str | None:
    """The first recipient of a ``to=`` list."""
    if recipients is None:
        return None
    if "," not in recipients:  # the common cases, without a regex
        if recipients.startswith("<") and recipients.endswith(">"):
            return recipients[1:-1]
        if "<" not in recipients and '"' not in recipients:
            return recipients  # MAILER-DAEMON, /dev/null, a bare local user
    found = _addresses(recipients)
    return found[0] if found else None


def _all_recipients(recipients: str | None) -> tuple[str, ...] | None:
    """Every recipient of a line that lists several (``None`` for one)."""
    if recipients is None or "," not in recipients:
        return None
    found = _addresses(recipients)
    return tuple(found) if len(found) > 1 else None


def _agent(mailer: str | None) -> str | None:
    """The mailer, in the words of Postfix's delivery agents: ``local`` or ``smtp``."""
    if mailer is None:
        return None
    if mailer in LOCAL_MAILERS:
        return "local"
    if mailer in SMTP_MAILERS:
        return "smtp"
    return mailer


def _status(stat: str | None, dsn: str | None, _recipients: str | None) -> str | None:
    """sent, deferred, queued (not tried yet) or bounced, from ``stat=`` (and ``dsn=``) of a
    ``to=`` line (the only one with recipients)."""
    if stat is None:
        return None
    if stat.startswith("Sent"):
        return "sent"
    if stat.startswith("Deferred") or (dsn is not None and dsn.startswith("4")):
        return "deferred"
    if stat.startswith("queued"):
        return "queued"
    return "bounced"


def _failed_user(reason: str | None, _method: str | None) -> str | None:
    """The user an AUTH failure names (what the client sent: it may contain anything)."""
    if reason is None:
        return None
    _head, found, user = reason.rpartition(", user=")
    return user if found else None


def _failure_reason(reason: str | None, _method: str | None) -> str | None:
    """The reason of an AUTH failure, without the user (arguments: only a failure has both)."""
    if reason is None:
        return None
    head, found, _user = reason.rpartition(", user=")
    return head if found else reason


def relay_refused(stage: str | None, reason: str | None) -> bool:
    """Whether a reject refuses a recipient as a relay.

    Only the text after the last ``>... `` is sendmail's own verdict: the address before it is
    the client's, and may read "Relaying denied".
    """
    if reason is None or _stage(stage) != "RCPT":
        return False
    verdict = reason.rpartition(">... ")[2] if reason.startswith("<") else reason
    return RELAY_REFUSAL.match(verdict) is not None


PRIORITY = _re(r"<[a-z0-9]+\.[a-z]+> ", "facility and priority")
"""``<mail.notice> `` before the host: FreeBSD's syslogd with ``-v`` (sendmail is its MTA)."""

ENVELOPE: Final = (
    _syslog_part("timestamp")
    + _lit(" ")
    + pp.Opt(PRIORITY)
    + _syslog_part("host")
    + _lit(" ")
    + _re(r"(?P<program>[^ \[/]++)", "program")
    + syslog.PID
)
"""``<time> [<facility.priority>] <host> <program>[<pid>]: ``; a program with a slash is
Postfix's."""

LINE: Final = compile_lines(
    ENVELOPE,
    BODY,
    MESSAGES,
    time=syslog.TIME,
    derived={
        "client_ip": (_client_ip, ("client_ip",)),
        "client_name": (_client_name, ("client_name", "client_ip")),
        "stage": (_stage, ("stage",)),
        "recipient": (_first_recipient, ("recipients",)),
        "recipients": (_all_recipients, ("recipients",)),
        "agent": (_agent, ("agent",)),
        "status": (_status, ("reason", "enhanced", "recipients")),
        "reason": (_failure_reason, ("reason", "sasl_method")),
        "relay_refused": (relay_refused, ("stage", "reason")),
        "sasl_user": (_failed_user, ("reason", "sasl_method")),
    },
)


class SendmailParser(syslog.SyslogLineParser):
    """Turns sendmail log lines into :class:`~parsers.events.Event` objects (see
    :class:`parsers.syslog.SyslogLineParser`)."""

    family = FAMILY
    message_end = ENDS_AT_LAST_RECIPIENT
    branches = tuple(message.name for message in MESSAGES)
    LINE = LINE
