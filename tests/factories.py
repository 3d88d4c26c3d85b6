"""Small factories for log lines, so tests state only what matters to them."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def relay_reject(moment: datetime, ip: str, rcpt: str = "v@outside.example", pid: int = 100) -> str:
    return (
        f"{stamp(moment)} mx1 postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[{ip}]: "
        f"554 5.7.1 <{rcpt}>: Relay access denied; from=<spam@forged.example> to=<{rcpt}> "
        "proto=ESMTP helo=<spambot>"
    )


def session(moment: datetime, ip: str, body: list[str], pid: int = 100) -> list[str]:
    """connect, the given lines, disconnect: one smtpd session."""
    end = moment + timedelta(seconds=1)
    return [
        f"{stamp(moment)} mx1 postfix/smtpd[{pid}]: connect from unknown[{ip}]",
        *body,
        f"{stamp(end)} mx1 postfix/smtpd[{pid}]: disconnect from unknown[{ip}] ehlo=1 quit=1",
    ]


def probe(moment: datetime, ip: str, rcpt: str = "v@outside.example", pid: int = 100) -> list[str]:
    """One session with one refused relay attempt."""
    return session(moment, ip, [relay_reject(moment, ip, rcpt, pid)], pid)


def open_relay(moment: datetime, ip: str, qid: str, rcpt: str = "x@outside.example") -> list[str]:
    """An outside client whose outside recipient the server accepted and delivered."""
    t = [stamp(moment + timedelta(milliseconds=n)) for n in range(6)]
    return [
        f"{t[0]} mx1 postfix/smtpd[200]: connect from unknown[{ip}]",
        f"{t[1]} mx1 postfix/smtpd[200]: {qid}: client=unknown[{ip}]",
        f"{t[2]} mx1 postfix/qmgr[300]: {qid}: from=<spam@forged.example>, size=900, nrcpt=1 "
        "(queue active)",
        f"{t[3]} mx1 postfix/smtpd[200]: disconnect from unknown[{ip}] ehlo=1 mail=1 rcpt=1 "
        "data=1 quit=1 commands=5",
        f"{t[4]} mx1 postfix/smtp[400]: {qid}: to=<{rcpt}>, relay=mx.outside.example"
        "[198.51.100.7]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 Ok)",
        f"{t[5]} mx1 postfix/qmgr[300]: {qid}: removed",
    ]


def write_log(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path
