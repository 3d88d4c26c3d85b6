"""Exchange 2007–2019 message tracking logs (``MSGTRK*.LOG``) to events.

One line per event in a message's life on one server, in CSV under a ``#Fields:`` header (see
:mod:`parsers.csvlog`); columns are read by name, so the 2007 (21 columns), 2010 (26) and
2013–2019 (30) layouts all read.  Without a header of its own (a log shipped without it, as
Elastic's test file), a row of exactly the 2013+ or the 2010 column count whose first column is
a UTC time is read with that version's documented columns.

A message is named by ``internal-message-id``: Exchange assigns it, and it is the same in every
event of the message in one server's log, while the ``message-id`` (kept as ``message_id``)
is a header the client wrote and may reuse, which would join two clients' messages into one.
The family logs no end of a message: it is over once each recipient ``RECEIVE`` counted
(``recipient-count``) has a final outcome.

* ``RECEIVE`` from ``SMTP`` → ``QUEUED``: ``client_ip`` is ``original-client-ip`` when set
  (2013+ FrontEnd proxies show themselves as ``client-ip``), else ``client-ip``;
  ``client_name`` is ``client-hostname`` unless a proxy stands between (its name is the
  proxy's); ``sender`` is ``return-path`` (``<>`` the null sender); ``recipients`` the
  ``;``-separated ``recipient-address``; ``size`` ``total-bytes``; ``nrcpt``
  ``recipient-count``.  Only these columns name the client: ``custom-data`` is never read
  (``S:OriginalFromAddress`` in it is the client's text, so a ``S:ProxiedClientIPAddress``
  in it could be too).
* ``RECEIVE`` from anything else (``STOREDRIVER``: a mailbox user submitted it; pickup
  directory, agents) → ``PICKUP``, a local submission.
* ``SEND``/``SENDEXTERNAL`` → ``DELIVERY`` sent by ``smtp`` to ``server-hostname[server-ip]``;
  ``DELIVER`` → sent to a mailbox (``local``); ``FAIL`` → bounced; ``DEFER`` → deferred.  The
  event says the outcome of every recipient on its line; ``recipient-status`` (aligned with
  the recipients, ``;`` between) gives ``reason`` and ``enhanced`` when it is the same for
  all of them.
* Any other event (``DSN``, ``EXPAND``, ``REDIRECT``, ``RESOLVE``, ``TRANSFER``, ``SUBMIT``,
  ``HA…``, ``AGENTINFO``, ``DROP``, ``BADMAIL``, ``NOTIFYMAPI``, …), and one that names no
  message (no internal id) or no recipient → a note, its ``reason`` the event id.

Every event's ``program`` is its ``source`` (the transport component: ``SMTP``,
``STOREDRIVER``, ``ROUTING``, …); ``host`` is empty (a log is one server's) and ``pid`` none.

What the tracking log cannot say: who authenticated.  ``directionality`` ``Originating`` on a
``RECEIVE`` from ``SMTP`` says that a user of the organisation sent it (an authenticated
submission, or a connector the administrator made authoritative), not who: its ``sasl_user``
is ``(not logged)``, so a user's submission from home is not taken for an accepted relay.  An
anonymous relay, the open-relay case, is ``Incoming``.  Nor recipients refused during the SMTP
conversation (no message exists yet: only the protocol log shows relay refusals).  A message to a
distribution group ends when as many outcomes as ``recipient-count`` are logged: deliveries to
the group's members after that make a transaction of their own, without a client.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import tzinfo
from functools import lru_cache
from operator import itemgetter
from typing import Final, NamedTuple

import pyparsing as pp

from parsers import csvlog
from parsers.events import NOT_LOGGED, Event, Kind
from parsers.grammar import to_regex
from parsers.protocol import ENDS_AT_LAST_RECIPIENT

FAMILY: Final = "exchange-tracking"
LOG_TYPE: Final = "Message Tracking Log"

FIELDS_2010: Final = (
    "date-time", "client-ip", "client-hostname", "server-ip", "server-hostname",
    "source-context", "connector-id", "source", "event-id", "internal-message-id",
    "message-id", "recipient-address", "recipient-status", "total-bytes", "recipient-count",
    "related-recipient-address", "reference", "message-subject", "sender-address",
    "return-path", "message-info", "directionality", "tenant-id", "original-client-ip",
    "original-server-ip", "custom-data",
)  # fmt: skip
"""Exchange 2010 (14.x): 26 columns (2007 has the first 21)."""
FIELDS_2013: Final = (
    *FIELDS_2010[:11], "network-message-id", *FIELDS_2010[11:],
    "transport-traffic-type", "log-id", "schema-version",
)  # fmt: skip
"""Exchange 2013–2019 (15.x): 30 columns."""

OUTCOMES: Final = {
    "SEND": "sent",
    "SENDEXTERNAL": "sent",
    "DELIVER": "sent",
    "FAIL": "bounced",
    "DEFER": "deferred",
}
_AGENTS: Final = {"SEND": "smtp", "SENDEXTERNAL": "smtp", "DELIVER": "local"}
_SOURCE_AGENTS: Final = {"SMTP": "smtp", "STOREDRIVER": "local"}
_STATUS_START = re.compile(r";(?=[245]\d\d\b|\[\{)")
"""Where one recipient's status ends and the next one's begins: a status may hold ``;``
itself (``550 5.1.1 RESOLVER.ADR.RecipNotFound; not found``, ``[{LRT=};{LED=…}]``)."""
_ENHANCED = re.compile(r"[245]\d\d ?([245]\.\d{1,3}\.\d{1,3})")


def _re(pattern: str, name: str) -> pp.ParserElement:
    return pp.Regex(pattern).set_name(name)


IP = r"[0-9A-Fa-f:.%]*"
"""An address column (IPv6 with a zone index ``%3`` included), or empty."""
SEP = pp.Literal(csvlog.SEP)

KEYS: Final = (
    "date-time", "event-id", "internal-message-id", "client-ip", "server-ip",
    "original-client-ip", "total-bytes", "recipient-count",
)  # fmt: skip
"""The columns Exchange writes itself, which :data:`KEY_RECORD` reads (joined with NUL)."""
TEXTS: Final = (
    "client-hostname", "server-hostname", "source", "message-id", "recipient-address",
    "recipient-status", "return-path", "directionality",
)  # fmt: skip
"""The columns taken as they are: names, ids and addresses, partly the client's text."""
REQUIRED: Final = frozenset(KEYS + TEXTS) - {"original-client-ip", "directionality"}  # 2007
"""A layout without these columns is not a tracking log's."""

KEY_RECORD: Final = (
    (
        _re(csvlog.UTC_TIME, "date-time")
        + SEP
        + _re(r"(?P<event_id>[A-Z][A-Z0-9_]*)", "event-id")
        + SEP
        + _re(r"(?P<queue_id>\d*)", "internal-message-id")
        + SEP
        + _re(rf"(?P<client_ip>{IP})", "client-ip")
        + SEP
        + _re(rf"(?P<server_ip>{IP})", "server-ip")
        + SEP
        + _re(rf"(?P<original_client_ip>{IP})", "original-client-ip")
        + SEP
        + _re(r"(?P<size>\d*)", "total-bytes")
        + SEP
        + _re(r"(?P<nrcpt>\d*)", "recipient-count")
        + pp.StringEnd()
    )
    .leave_whitespace()
    .set_name("tracking keys")
)
"""The grammar of the columns of :data:`KEYS`; its groups come in the order
:meth:`ExchangeTrackingParser._event` takes them, then the columns of :data:`TEXTS`."""
_KEYS = re.compile(to_regex(KEY_RECORD), re.ASCII).match


class _Layout(NamedTuple):
    width: int
    keys: Callable[[list[str]], tuple[str, ...]]
    texts: Callable[[list[str]], tuple[str, ...]]


@lru_cache(maxsize=16)
def _layout(fields: tuple[str, ...]) -> _Layout | None:
    """Where the columns are in a row of ``fields`` (a column the header lacks reads as an
    empty one added at the end), or ``None`` when they are not a tracking log's."""
    if not set(fields) >= REQUIRED:
        return None
    index = {name: number for number, name in enumerate(fields)}
    keys = itemgetter(*(index.get(name, len(fields)) for name in KEYS))
    texts = itemgetter(*(index.get(name, len(fields)) for name in TEXTS))
    return _Layout(len(fields), keys, texts)


WITHOUT_HEADER: Final = {len(f): _layout(f) for f in (FIELDS_2013, FIELDS_2010)}
"""The layouts a row with no header of its own is read with, by its number of columns."""


BRANCHES: Final[tuple[str, ...]] = ("header", "queued", "pickup", "delivery", "note")


def branch_of(event_id: str, source: str, queue_id: str, recipients: str) -> str:
    """``queued``, ``pickup``, ``delivery`` or, for an event that names no message (no
    internal id) or no recipient, or any other event, ``note``."""
    if queue_id.strip("0") and recipients.strip("; "):
        if event_id == "RECEIVE":
            return "queued" if source == "SMTP" else "pickup"
        if event_id in OUTCOMES:
            return "delivery"
    return "note"


def recipients_of(raw: str) -> tuple[str, ...]:
    """The addresses of ``recipient-address`` (``;`` between them)."""
    if " " not in raw:  # as Exchange writes them
        parts = raw.split(";")
        return tuple(parts) if "" not in parts else tuple([a for a in parts if a])
    return tuple([a for a in map(str.strip, raw.split(";")) if a])


def status_of(raw: str) -> str | None:
    """The recipients' ``recipient-status`` when it is one for all of them."""
    if ";" not in raw:
        return raw.strip() or None
    statuses = {s.strip() for s in _STATUS_START.split(raw)}
    return statuses.pop() or None if len(statuses) == 1 else None


class ExchangeTrackingParser:
    """Turns Exchange message tracking log lines into events (see the module's text).

    Keeps the log type and the columns of the last header as its state.  :meth:`parse` never
    raises: a line it does not understand gives ``None``.
    """

    family = FAMILY
    message_end = ENDS_AT_LAST_RECIPIENT
    branches = BRANCHES

    def __init__(self, now: Callable[[], float] = time.time, tz: tzinfo | None = None) -> None:
        self._headers = csvlog.HeaderState(FAMILY, LOG_TYPE)  # Exchange writes UTC: no tz
        self._current: _Layout | None = None  # of the header's columns

    def parse(self, line: str) -> Event | None:
        layout = self._current
        if layout is not None and '"' not in line and csvlog.SEP not in line and line[:1] != "#":
            row = line.removeprefix(csvlog.BOM).split(",")  # the common row: no quote
            if len(row) != layout.width:
                return None
            row.append("")  # what a column the header lacks reads
            match = _KEYS(csvlog.SEP.join(layout.keys(row)))
            found = None if match is None else (match.groups(""), layout.texts(row))
        elif line.lstrip(csvlog.BOM)[:1] == "#":
            event = self._headers.event(line)
            fields = self._headers.fields
            self._current = _layout(fields) if fields and self._headers.ours else None
            return event
        else:
            found = self._read(line)
        if found is None:
            return None
        try:
            return self._event(*found[0], *found[1])
        except ValueError:  # a day or an hour out of range: not a real timestamp
            return None

    def branch(self, line: str) -> str | None:
        if line.lstrip(csvlog.BOM)[:1] == "#":
            return None if csvlog.header(line) is None else "header"
        found = self._read(line)
        if found is None:
            return None
        _, _, event_id, queue_id = found[0][:4]
        _, _, source, _, recipients = found[1][:5]
        return branch_of(event_id, source, queue_id, recipients)

    def record(self, line: str) -> str | None:
        """The record of a row's :data:`KEYS` columns (for tests), or ``None``."""
        found = self._row(line)
        return None if found is None else csvlog.SEP.join(found[1].keys(found[0]))

    def state(self) -> object:
        return self._headers.state()

    def restore(self, state: object) -> None:
        self._headers.restore(state)
        fields = self._headers.fields
        self._current = _layout(fields) if fields and self._headers.ours else None

    def _row(self, line: str) -> tuple[list[str], _Layout] | None:
        """The columns of a row and their layout, or ``None``: the line is not a row of ours."""
        line = line.removeprefix(csvlog.BOM)
        if line[:1] == "#" or csvlog.SEP in line:  # Exchange writes no NUL (the reader replaces it)
            return None
        row = line.split(",") if '"' not in line else csvlog.split_row(line)
        if row is None:
            return None
        layout = self._current
        if layout is None and not self._headers.seen:
            layout = WITHOUT_HEADER.get(len(row))
        if layout is None or len(row) != layout.width:
            return None
        row.append("")  # what a column the header lacks reads
        return row, layout

    def _read(self, line: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """The groups of a row's :data:`KEY_RECORD` and its :data:`TEXTS` columns, or ``None``."""
        found = self._row(line)
        if found is None:
            return None
        row, layout = found
        match = _KEYS(csvlog.SEP.join(layout.keys(row)))
        return None if match is None else (match.groups(""), layout.texts(row))

    def _event(
        self, stamp: str, fraction: str, event_id: str, queue_id: str, client_ip: str,
        server_ip: str, original: str, size: str, nrcpt: str, client_name: str, relay: str,
        program: str, message_id: str, recipients: str, status: str, sender: str,
        direction: str,
    ) -> Event:  # fmt: skip
        when = (_seconds(stamp) or _utc_seconds(stamp)) + (float(fraction) if fraction else 0.0)
        self._headers.last = when
        branch = branch_of(event_id, program, queue_id, recipients)
        if message_id[:1] == "<" and message_id[-1:] == ">":  # as Postfix logs it, unbracketed
            message_id = message_id[1:-1]
        # Events are built positionally, in the order of parsers.events.EVENT_FIELDS: keywords
        # cost a tracking line a quarter of its parsing.
        if branch == "note":
            return _new(Event, (
                when, "", program, None, Kind.CLIENT_NOTE,
                queue_id if queue_id.strip("0") else None,
                None, None, None, None, None, None, None, None, None, None, None, None,
                event_id, None, message_id or None, None, None, False, False, None, None,
            ))  # fmt: skip
        addresses = recipients_of(recipients)
        if branch == "delivery":
            text = status_of(status)
            enhanced = None if text is None else _ENHANCED.match(text)
            return _new(Event, (
                when, "", program, None, Kind.DELIVERY, queue_id, None, None, None, None, None,
                None, None, None, None, None, None if enhanced is None else enhanced[1],
                OUTCOMES[event_id], text, f"{relay}[{server_ip}]" if server_ip else relay or None,
                message_id or None, None, None, False, False, addresses,
                _AGENTS.get(event_id) or _SOURCE_AGENTS.get(program, program.lower() or None),
            ))  # fmt: skip
        kind, ip, name, user = Kind.PICKUP, None, None, None
        if branch == "queued":
            # a FrontEnd proxy writes itself as client-ip, and the client as original-client-ip
            kind, ip = Kind.QUEUED, original or client_ip or None
            name = client_name or None if not original or original == client_ip else None
            user = NOT_LOGGED if direction == "Originating" else None
        return _new(Event, (
            when, "", program, None, kind, queue_id, ip, name, None, None, user,
            "" if sender == "<>" else sender or None, None, None, None, None, None, None, None,
            None, message_id or None, int(size) if size else None, int(nrcpt) if nrcpt else None,
            False, False, addresses, None,
        ))  # fmt: skip


_new = tuple.__new__
_seconds = csvlog.SECONDS.get
_utc_seconds = csvlog.utc_seconds
