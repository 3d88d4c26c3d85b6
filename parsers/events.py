"""What one log line says: the typed hand-off from every parser to the correlator.

Parsers build one :class:`Event` per line they understand.  ``Event`` is an immutable
named tuple rather than a frozen dataclass because it is built once per log line on the hot
path: measured here, a frozen dataclass of these fields costs 6.8 µs to build, a slotted one
0.7 µs, the named tuple built positionally 0.23 µs (see ``parsers.grammar.event_builder``).
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Kind:
    """The kinds of event, in the words of the SMTP conversation they come from."""

    CONNECT: Final = "connect"  # a client opened an SMTP session
    DISCONNECT: Final = "disconnect"  # the session ended
    CLIENT: Final = "client"  # a queue file was created for a client (Postfix `QID: client=`)
    REJECT: Final = "reject"  # the server refused a command (RCPT, MAIL, DATA, ...)
    PERMIT: Final = "permit"  # the server logged why it allowed a recipient
    AUTH_FAILED: Final = "auth_failed"  # SMTP AUTH failed
    CLIENT_NOTE: Final = "client_note"  # any other line about one client (lost connection, ...)
    SCREEN_CONNECT: Final = "screen_connect"  # a pre-SMTP screener (postscreen) saw a client
    SCREEN_PASS: Final = "screen_pass"  # the screener handed the client to the SMTP server
    PICKUP: Final = "pickup"  # a message submitted locally (no network client)
    MESSAGE_ID: Final = "message_id"  # the Message-ID header of a queued message
    QUEUED: Final = "queued"  # envelope sender and size of a queued message
    DELIVERY: Final = "delivery"  # one recipient's delivery attempt and its outcome
    REMOVED: Final = "removed"  # the message left the queue: its transaction is complete
    RECIPIENT: Final = "recipient"  # the server accepted a recipient of a queued message
    AUTH: Final = "auth"  # a client authenticated (SMTP AUTH succeeded)
    COMMAND: Final = "command"  # an SMTP command of a client, as a protocol log writes it
    REPLY: Final = "reply"  # the server's reply to the oldest unanswered command of a session
    HEADER: Final = "header"  # a line that describes the log itself (W3C/CSV ``#Fields:`` …)


NOT_LOGGED: Final = "(not logged)"
"""The SASL user of a client whose log says it authenticated, or that a user of the
organisation sent it (Exchange tracking's ``Originating``), but not as whom."""


class Session:
    """How each family keys its events (the correlator's contract; DESIGN.md §2).

    ``(host, program, pid)`` names an SMTP session: ``pid`` is the server's process id, or the
    session id the MTA logs (OpenSMTPD, Exchange), or whatever else the parser knows identifies
    one conversation (IIS: the client address and HELO).  A ``REJECT`` without ``pid`` and
    without ``queue_id`` is a transaction of its own (Exim logs no session around it); one
    whose line names no client takes its session's client and authenticated user (OpenSMTPD).
    ``queue_id`` names a message until ``REMOVED`` or, for families that log no end of a
    message, until every recipient it announced (``nrcpt``) has a final outcome.

    A ``COMMAND`` that carries ``code`` was answered on the same line (IIS); otherwise the next
    ``REPLY`` of its session answers it, in order (SMTP replies in the order of commands, also
    under pipelining).  A ``REPLY`` whose ``stage`` names the verb it answers (its text says so:
    Exchange's ``250 2.1.0 Sender OK``) answers the oldest waiting command of that verb, or none
    when none waits (a log that begins between a command and its reply).
    ``stage`` is the command's verb; a reply's ``relay_refused`` says the
    server refused a recipient as a relay, ``refusal_unexplained`` that it refused one without
    saying why (a relay refusal when the domain is not ours).
    """


class Event(NamedTuple):
    """One parsed log line.  Times are UTC seconds since the epoch."""

    time: float
    host: str  # host field of the log line
    program: str  # full program name, e.g. ``postfix/submission/smtpd``
    pid: str | None  # process or session id as logged (an identifier: see Session)
    kind: str  # one of :class:`Kind`
    queue_id: str | None = None  # the MTA's id of the message (or session)
    client_ip: str | None = None
    client_name: str | None = None  # reverse name as logged (``unknown`` when none)
    helo: str | None = None
    sasl_method: str | None = None
    sasl_user: str | None = None
    sender: str | None = None  # envelope sender; ``""`` is the null sender
    recipient: str | None = None
    orig_recipient: str | None = None  # the address before alias expansion
    stage: str | None = None  # SMTP command a reject/permit/note refers to (RCPT, MAIL, DATA, ...)
    code: int | None = None  # SMTP reply code
    enhanced: str | None = None  # enhanced status code (``5.7.1``), or a delivery's ``dsn=``
    status: str | None = None  # delivery status: sent, deferred, bounced, expired
    reason: str | None = None  # reject text, or delivery status text
    relay: str | None = None  # next hop of a delivery (``local``, ``none``, ``host[ip]:port``)
    message_id: str | None = None
    size: int | None = None
    nrcpt: int | None = None
    relay_refused: bool = False  # the server refused this recipient as a relay
    refusal_unexplained: bool = False  # refused without a reason (IIS logs only the code)
    recipients: tuple[str, ...] | None = None  # every recipient of a line that lists several
    agent: str | None = None  # delivery agent, in Postfix's words: local, smtp, pipe, ...


EVENT_FIELDS: Final = Event._fields


def event_summary(event: Event) -> dict[str, object]:
    """The fields of an event that are set, without the line envelope (for tests and ``parse``)."""
    envelope = ("time", "host", "program", "pid")
    return {
        name: value
        for name in EVENT_FIELDS
        if name not in envelope
        and (value := getattr(event, name)) is not None
        and value is not False
    }
