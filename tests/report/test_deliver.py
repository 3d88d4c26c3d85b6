"""Mailing a report: a real SMTP server (aiosmtpd) on 127.0.0.1 receives it — plain, with
STARTTLS and AUTH — and one that is not there, or refuses, is a one-line error."""

from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from detector.config import ReportSettings
from detector.report.mail import MailError, compose, send, subject
from tests.net import free_port

TEXT = "relaywatch report 2026-12-01\n\nOPEN RELAY: 203.0.113.77 relayed to 2 outside domains\n"
HTML = "<!DOCTYPE html><html><body><h1 style='color:#b00'>OPEN RELAY</h1></body></html>"


@dataclass
class Inbox:
    """What the server received, and the recipients it refuses."""

    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, _: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos), parsed))
        return "250 queued as 4F2A1B3C9D"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def report_settings(port: int, **changes: Any) -> ReportSettings:
    values: dict[str, Any] = {
        "mail_to": ["postmaster@example.test", "noc@example.test"],
        "mail_from": "relaywatch@mx1.example.test", "smtp_host": "127.0.0.1", "smtp_port": port,
    }  # fmt: skip
    return ReportSettings(**{**values, **changes})


def test_the_subject_says_open_relay_first_or_how_many_attempts_were_refused() -> None:
    assert (
        subject("2026-12-01", "mx1", open_relay=True, accepted_relays=12, refused_relays=40)
        == "relaywatch report 2026-12-01 for mx1: OPEN RELAY, 12 accepted relays"
    )
    assert (
        subject("2026-12-01", "mx1", open_relay=True, accepted_relays=1, refused_relays=0)
        == "relaywatch report 2026-12-01 for mx1: OPEN RELAY, 1 accepted relay"
    )
    assert (
        subject("2026-12-01", "mx1, mx2", open_relay=False, accepted_relays=0, refused_relays=37)
        == "relaywatch report 2026-12-01 for mx1, mx2: 37 relay attempts, all refused"
    )
    assert (
        subject("2026-12-01", "mx1", open_relay=False, accepted_relays=0, refused_relays=0)
        == "relaywatch report 2026-12-01 for mx1: 0 relay attempts"
    )


def test_the_server_receives_text_and_html_alternatives_from_and_to_whom_configured(
    smtp_server: tuple[Inbox, int],
) -> None:
    inbox, port = smtp_server
    settings = report_settings(port)
    line = subject("2026-12-01", "mx1", open_relay=True, accepted_relays=2, refused_relays=9)
    assert send(compose(settings, line, TEXT, HTML), settings) is None

    [(sender, recipients, message)] = inbox.messages
    assert sender == "relaywatch@mx1.example.test"
    assert recipients == ["postmaster@example.test", "noc@example.test"]
    assert message["From"] == "relaywatch@mx1.example.test"
    assert message["To"] == "postmaster@example.test, noc@example.test"
    assert (
        message["Subject"] == "relaywatch report 2026-12-01 for mx1: OPEN RELAY, 2 accepted relays"
    )
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@mx1.example.test>")
    assert message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(isinstance(p, EmailMessage) for p in parts)
    plain, html = (p.get_content() for p in parts if isinstance(p, EmailMessage))
    assert plain.replace("\r\n", "\n") == TEXT
    assert html.rstrip("\r\n") == HTML


def test_non_ascii_text_survives(smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    settings = report_settings(port)
    text = "HELO „mäil.example“ → 3 × refused\n"
    send(compose(settings, "relaywatch report 2026-12-01 for mx1: 0 relay attempts", text,
                 f"<p>{text}</p>"), settings)  # fmt: skip
    [(_, _, message)] = inbox.messages
    plain = message.get_body(("plain",))
    assert isinstance(plain, EmailMessage)
    assert plain.get_content().replace("\r\n", "\n") == text


def test_a_server_that_is_not_there_is_a_one_line_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens on it
    settings = report_settings(port)
    with pytest.raises(MailError) as raised:
        send(compose(settings, "s", TEXT, HTML), settings, timeout=5)
    assert str(raised.value) == f"cannot mail through 127.0.0.1:{port}: Connection refused"


def test_recipients_refused_are_an_error_when_all_are_and_a_remark_when_some_are(
    smtp_server: tuple[Inbox, int],
) -> None:
    inbox, port = smtp_server
    inbox.refuse = {"noc@example.test"}
    settings = report_settings(port)
    refused = send(compose(settings, "s", TEXT, HTML), settings)
    assert refused == (
        f"SMTP server 127.0.0.1:{port} refused noc@example.test (550 5.1.1 no such user)"
    )
    assert [recipients for _, recipients, _ in inbox.messages] == [["postmaster@example.test"]]

    inbox.refuse = {"postmaster@example.test", "noc@example.test"}
    with pytest.raises(MailError, match=r"refused every recipient: noc@example\.test"):
        send(compose(settings, "s", TEXT, HTML), settings)
    assert len(inbox.messages) == 1


def test_a_password_is_not_sent_unencrypted_to_another_machine() -> None:
    settings = ReportSettings(
        mail_to=["postmaster@example.test"], smtp_host="smtp.example.test", smtp_user="relaywatch",
        smtp_password="secret",
    )  # fmt: skip
    with pytest.raises(MailError, match="set starttls = true"):
        send(compose(settings, "s", TEXT, HTML), settings)


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_starttls_and_auth(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    logins: list[tuple[bytes, bool]] = []

    def authenticator(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, session.ssl is not None))
        right = data.login == b"relaywatch" and data.password == b"s3cret"
        return AuthResult(success=right, handled=False)  # not handled: the server answers 535

    inbox, port = Inbox(), free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, tls_context=server_tls, require_starttls=True,
        authenticator=authenticator, auth_required=True,
    )  # fmt: skip
    controller.start()
    try:
        plain = report_settings(port)
        with pytest.raises(MailError, match=f"SMTP server 127.0.0.1:{port}: 530"):
            send(compose(plain, "s", TEXT, HTML), plain)  # the server wants STARTTLS first

        wrong = report_settings(port, starttls=True, smtp_user="relaywatch", smtp_password="x")
        with pytest.raises(MailError, match=f"SMTP server 127.0.0.1:{port}: 535"):
            send(compose(wrong, "s", TEXT, HTML), wrong, context=client_tls)

        right = report_settings(port, starttls=True, smtp_user="relaywatch",
                                smtp_password="s3cret")  # fmt: skip
        assert send(compose(right, "s", TEXT, HTML), right, context=client_tls) is None
    finally:
        controller.stop()
    assert set(logins) == {(b"relaywatch", True)}  # only ever over TLS
    assert len(inbox.messages) == 1

    # the certificate is checked: one not signed by a known CA is refused
    untrusted = report_settings(port, starttls=True)
    controller = Controller(Inbox(), hostname="127.0.0.1", port=port, tls_context=server_tls)
    controller.start()
    try:
        with pytest.raises(MailError, match="CERTIFICATE_VERIFY_FAILED"):
            send(compose(untrusted, "s", TEXT, HTML), untrusted)
    finally:
        controller.stop()
