"""Mailing a tracking report: one multipart/alternative message (the plain text first, then the
HTML; a mail client shows the richest part it can), sent through the ``[report]`` SMTP server.

The subject says at a glance whether the server relayed for an outside client::

    relaywatch report 2026-12-01 for mx1: OPEN RELAY, 12 accepted relays
    relaywatch report 2026-12-01 for mx1: 37 relay attempts, all refused
    relaywatch report 2026-12-01 for mx1: 0 relay attempts

The message is marked ``Auto-Submitted: auto-generated`` (RFC 3834), so vacation responders
and ticket systems do not answer it, and it goes to every ``mail_to`` address in one
transaction.  SMTP: a plain connection to ``smtp_host:smtp_port``, upgraded with STARTTLS
(certificate and name verified against the system's CAs) when ``starttls`` is set, then AUTH
when ``smtp_user`` is set — a password is never sent over a connection that is not encrypted
unless the server is this machine (``localhost``, a loopback address).  Any failure (refused
connection, timeout, TLS, authentication, a refused sender or every recipient refused) is a
:class:`MailError` with a one-line message naming the server; some recipients refused and the
others accepted is a message returned (the report went out).
"""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from detector.config import ReportSettings
from detector.errors import MailError

TIMEOUT = 30.0
"""Seconds an SMTP connection may wait for the server at each step."""


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def subject(
    day: str, where: str, *, open_relay: bool, accepted_relays: int, refused_relays: int
) -> str:
    """The subject line: the open relay first, or how many relay attempts (all refused)."""
    if open_relay:
        verdict = f"OPEN RELAY, {plural(accepted_relays, 'accepted relay')}"
    elif refused_relays:
        verdict = f"{plural(refused_relays, 'relay attempt')}, all refused"
    else:
        verdict = "0 relay attempts"
    return f"relaywatch report {day} for {where}: {verdict}"


def compose(
    settings: ReportSettings, subject_line: str, text: str, html: str, *, domain: str | None = None
) -> EmailMessage:
    """The message: text and HTML alternatives, from ``mail_from`` to every ``mail_to``."""
    message = EmailMessage()
    message["Subject"] = subject_line
    message["From"] = settings.mail_from
    message["To"] = ", ".join(settings.mail_to)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid("relaywatch", domain=domain or _domain(settings.mail_from))
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text, subtype="plain", charset="utf-8")
    message.add_alternative(html, subtype="html", charset="utf-8")
    return message


def send(
    message: EmailMessage,
    settings: ReportSettings,
    *,
    context: ssl.SSLContext | None = None,
    timeout: float = TIMEOUT,
) -> str | None:
    """Hand ``message`` to the SMTP server for every ``mail_to``: ``None`` when it took it for
    all of them, the refusals when it took it for some (the report went out: sending it again
    would mail the others twice); :class:`MailError` when it took it for none.  ``context``
    verifies the STARTTLS certificate (default: the system's CAs)."""
    server = f"{settings.smtp_host}:{settings.smtp_port}"
    recipients: Sequence[str] = settings.mail_to
    if not recipients:
        raise MailError("no [report] mail_to address to send the report to")
    if settings.smtp_user is not None and not settings.starttls and not _local(settings.smtp_host):
        raise MailError(
            f"SMTP server {server}: not sending the password of smtp_user unencrypted; "
            "set starttls = true"
        )
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout) as smtp:
            smtp.ehlo_or_helo_if_needed()
            if settings.starttls:
                smtp.starttls(context=context or ssl.create_default_context())
                smtp.ehlo()
            if settings.smtp_user is not None:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            refused = smtp.send_message(message, settings.mail_from, list(recipients))
    except smtplib.SMTPRecipientsRefused as exc:
        raise MailError(f"SMTP server {server} refused every recipient: {_refusals(exc)}") from None
    except smtplib.SMTPResponseException as exc:
        raise MailError(f"SMTP server {server}: {exc.smtp_code} {_text(exc.smtp_error)}") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise MailError(f"SMTP server {server}: {exc}") from None
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        raise MailError(f"cannot mail through {server}: {_reason(exc)}") from None
    if refused:
        return f"SMTP server {server} refused {_refused_list(refused)}"
    return None


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or socket.getfqdn()


def _local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _text(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return " ".join(text.split())


def _refusals(exc: smtplib.SMTPRecipientsRefused) -> str:
    return _refused_list(exc.recipients)


def _refused_list(refused: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(
        f"{address} ({code} {_text(why)})" for address, (code, why) in sorted(refused.items())
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
