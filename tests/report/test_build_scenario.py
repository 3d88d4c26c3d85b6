"""Every number of one day's report, on two relay hosts' logs written line by line here, with
blocks, sink troubles and lines read stored beside them: the expected report is stated from
what the scenario holds (relay abuse by hand, the traffic counted from the message specs).

The day is 2026-12-01 in Europe/Berlin: 2026-11-30T23:00Z to 2026-12-01T23:00Z.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Connection, Engine, insert

from detector.config import load_settings
from detector.ingest import Pipeline
from detector.report import build
from detector.report.build import build_report
from detector.report.json import report_json
from detector.store.models import DecisionRow, SinkTroubleRow, SourceDayRow
from detector.store.session import open_database
from tests.conftest import config_text

BERLIN = ZoneInfo("Europe/Berlin")
DAY = date(2026, 12, 1)
START = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
END = START + timedelta(days=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


class Log:
    """The lines of one relay host, written in time order at the end."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.lines: list[tuple[datetime, str]] = []
        self._pid = 1000

    def add(self, moment: datetime, program: str, text: str) -> None:
        self.lines.append((moment, f"{stamp(moment)} {self.host} {program}: {text}"))

    def pid(self) -> int:
        self._pid += 1
        return self._pid

    def write(self, path: Path) -> Path:
        path.write_text("".join(line + "\n" for _, line in sorted(self.lines)))
        return path


def probe(
    log: Log,
    moment: datetime,
    client: str,
    helo: str,
    sender: str,
    rcpts: list[str],
    refusal: str = "Relay access denied",
) -> None:
    """One session whose every recipient is refused (``{rcpt}`` in ``refusal`` is replaced)."""
    smtpd = f"postfix/smtpd[{log.pid()}]"
    log.add(moment, smtpd, f"connect from {client}")
    for n, rcpt in enumerate(rcpts):
        text = refusal.replace("{rcpt}", rcpt)
        log.add(
            moment + timedelta(milliseconds=10 + n),
            smtpd,
            f"NOQUEUE: reject: RCPT from {client}: 554 5.7.1 {text}; from=<{sender}> "
            f"to=<{rcpt}> proto=ESMTP helo=<{helo}>",
        )
    log.add(moment + timedelta(seconds=1), smtpd, f"disconnect from {client} ehlo=1 quit=1")


@dataclass(frozen=True)
class Message:
    """A message queued from a client and what became of each recipient."""

    at: datetime  # its client= line
    qid: str
    client: str  # name[ip] as smtpd logs it
    sender: str
    size: int
    rcpts: tuple[tuple[str, str], ...]  # (address, sent | deferred | bounced)
    sasl: str | None = None

    def delivered_at(self, n: int) -> datetime:
        return self.at + timedelta(seconds=2 + n)

    def write(self, log: Log) -> None:
        program = "postfix/submission/smtpd" if self.sasl else "postfix/smtpd"
        smtpd = f"{program}[{log.pid()}]"
        login = f", sasl_method=PLAIN, sasl_username={self.sasl}" if self.sasl else ""
        ms = timedelta(milliseconds=1)
        log.add(self.at - ms, smtpd, f"connect from {self.client}")
        log.add(self.at, smtpd, f"{self.qid}: client={self.client}{login}")
        log.add(self.at + ms, "postfix/cleanup[300]", f"{self.qid}: message-id=<{self.qid}@m>")
        log.add(
            self.at + 2 * ms,
            "postfix/qmgr[301]",
            f"{self.qid}: from=<{self.sender}>, size={self.size}, nrcpt={len(self.rcpts)} "
            "(queue active)",
        )
        log.add(self.at + 3 * ms, smtpd, f"disconnect from {self.client} ehlo=1 mail=1 quit=1")
        for n, (rcpt, status) in enumerate(self.rcpts):
            domain = rcpt.partition("@")[2]
            when = self.delivered_at(n)
            if domain == "example.test":
                log.add(
                    when,
                    "postfix/local[302]",
                    f"{self.qid}: to=<{rcpt}>, relay=local, delay=2, delays=0/0/0/2, "
                    "dsn=2.0.0, status=sent (delivered to mailbox)",
                )
                continue
            result = {
                "sent": "dsn=2.0.0, status=sent (250 2.0.0 Ok)",
                "deferred": "dsn=4.4.1, status=deferred (connect to mx.{d}[192.0.2.9]:25: "
                "Connection timed out)",
                "bounced": "dsn=5.1.1, status=bounced (host mx.{d}[192.0.2.9] said: 550 5.1.1 "
                "<{r}>: User unknown (in reply to RCPT TO command))",
            }[status].format(d=domain, r=rcpt)
            log.add(
                when,
                "postfix/smtp[303]",
                f"{self.qid}: to=<{rcpt}>, relay=mx.{domain}[192.0.2.9]:25, delay=2, "
                f"delays=0/0/1/1, {result}",
            )
        if all(status != "deferred" for _, status in self.rcpts):
            log.add(self.delivered_at(len(self.rcpts)), "postfix/qmgr[301]", f"{self.qid}: removed")


# ----------------------------------------------------------------------------- the day

STOLEN_IPS = ["198.51.100.61", "198.51.100.62", "198.51.100.63", "198.51.100.64", "2001:db8::6"]


def messages() -> list[Message]:
    """Every queued message of both hosts (mx1 unless the queue id starts with 'B')."""
    found = [
        # the open relay: an outside client's outside recipient accepted and sent
        Message(utc("2026-12-01T09:15:00"), "A0000000001", "unknown[198.51.100.7]",
                "spam@forged.example", 900, (("x@outside.example", "sent"),)),
        # inbound mail for local users
        Message(utc("2026-11-30T23:10:00"), "A0000000002", "mail.partner.example[192.0.2.40]",
                "news@partner.example", 5000,
                (("alice@example.test", "sent"), ("bob@example.test", "sent"))),
        Message(utc("2026-12-01T12:00:00"), "A0000000003", "mail.partner.example[192.0.2.40]",
                "news@partner.example", 7000, (("carol@example.test", "sent"),)),
        # received the day before, delivered on it: counted as delivered, not as received
        Message(utc("2026-11-30T22:59:59"), "A0000000004", "mx.other.example[192.0.2.41]",
                "", 3000, (("alice@example.test", "sent"),)),
        # outbound from an application server: one deferred (no retry logged), one bounced
        Message(utc("2026-12-01T15:00:00"), "A0000000005", "app01.example.test[10.0.1.11]",
                "app@example.test", 1200, (("z@slow.example", "deferred"),)),
        Message(utc("2026-12-01T16:00:00"), "A0000000006", "app01.example.test[10.0.1.11]",
                "app@example.test", 1300, (("nobody@gone.example", "bounced"),)),
        # users: alice sends as herself, bob from his own outside address
        Message(utc("2026-12-01T08:00:00"), "A0000000007", "home.isp.example[198.51.100.70]",
                "alice@example.test", 2000,
                (("friend@far-away.example", "sent"), ("uncle@far-away.example", "sent")),
                sasl="alice@example.test"),
        Message(utc("2026-12-01T08:30:00"), "A0000000008", "home.isp.example[198.51.100.71]",
                "bob@home.example", 2100,
                (("pal@far-away.example", "sent"), ("aunt@far-away.example", "sent")),
                sasl="bob@example.test"),
        # mx2: one inbound message just before the day ends
        Message(utc("2026-12-01T22:59:00"), "B0000000001", "mail.partner.example[192.0.2.40]",
                "news@partner.example", 4000, (("dave@example.test", "sent"),)),
    ]  # fmt: skip
    # carol's password, stolen: five addresses, a forged outside sender, 25 outside recipients
    for n, ip in enumerate(STOLEN_IPS):
        found.append(
            Message(
                utc("2026-12-01T03:00:00") + timedelta(minutes=7 * n),
                f"A00000001{n}0",
                f"unknown[{ip}]",
                "ceo@bank.example",
                800 + n,
                tuple((f"target{n}{k}@victims{k}.example", "sent") for k in range(5)),
                sasl="carol@example.test",
            )
        )
    return found


@dataclass(frozen=True)
class Refusal:
    host: str
    at: datetime
    client: str
    helo: str
    sender: str
    rcpts: tuple[str, ...]
    text: str = "Relay access denied"


def refusals(hit_text: str) -> list[Refusal]:
    return [
        # 203.0.113.5 probed the day before (local 23:30 on Nov 30): it is returning
        Refusal("mx1", utc("2026-11-30T22:30:00"), "unknown[203.0.113.5]", "spambot",
                "spam@forged.example", ("old@far.example",)),
        Refusal("mx1", utc("2026-11-30T23:30:00"), "unknown[203.0.113.5]", "spambot",
                "spam@forged.example", ("a@far.example", "b@far.example")),
        Refusal("mx1", utc("2026-12-01T10:00:00"), "bot.dyn.example[192.0.2.99]", "WIN-ABC",
                "x@phish.example", ("v@other.example",)),
        Refusal("mx2", utc("2026-12-01T14:00:00"), "unknown[203.0.113.5]", "spambot",
                "spam@forged.example", ("c@far.example",)),
        # the mail server enforcing decision 1 (not a relay attempt: a refusal of the client)
        Refusal("mx1", utc("2026-12-01T08:00:00"), "unknown[203.0.113.5]", "spambot",
                "spam@forged.example", ("d@far.example",),
                "<unknown[203.0.113.5]>: Client host rejected: " + hit_text),
        # after the day
        Refusal("mx1", utc("2026-12-01T23:00:00"), "unknown[203.0.113.5]", "spambot",
                "spam@forged.example", ("e@far.example",)),
    ]  # fmt: skip


def decisions(connection: Connection) -> int:
    """The manual blocks of the scenario; the id of the one the mail server enforces."""
    rows = [
        # made before the day, expired during it (its refusal is logged at 08:00)
        ("203.0.113.5", "ip", "2026-11-30T20:00:00", "2026-12-01T12:00:00", None),
        # made during the day, in force at its end: blocks 192.0.2.99
        ("192.0.2.0/24", "range", "2026-12-01T11:00:00", "2026-12-03T00:00:00", None),
        # made and revoked during the day
        ("203.0.113.66", "ip", "2026-12-01T05:00:00", "2026-12-02T05:00:00", "2026-12-01T06:00:00"),
        # made before, in force all day
        ("203.0.113.77", "ip", "2026-11-29T00:00:00", "2026-12-08T00:00:00", None),
        # made after the day
        ("203.0.113.88", "ip", "2026-12-02T01:00:00", "2026-12-02T02:00:00", None),
        # revoked after the day ended: in force at its end
        ("203.0.113.99", "ip", "2026-12-01T20:00:00", "2026-12-05T00:00:00", "2026-12-02T09:00:00"),
    ]  # fmt: skip
    ids = []
    for value, scope, created, expires, revoked in rows:
        ids.append(
            connection.execute(
                insert(DecisionRow)
                .values(
                    value=value, scope=scope, origin="manual", reason="test", evidence="{}",
                    created_at=utc(created), expires_at=utc(expires),
                    duration_seconds=int((utc(expires) - utc(created)).total_seconds()),
                    revoked_at=utc(revoked) if revoked else None,
                )
                .returning(DecisionRow.id)
            ).scalar_one()
        )  # fmt: skip
    return ids[0]


def seen_by_relaywatch(connection: Connection) -> None:
    now = utc("2026-12-02T00:00:00")
    connection.execute(
        insert(SourceDayRow),
        [
            dict(day="2026-11-30", host="mx1", path="/var/log/mail.log", lines=500, parsed=500,
                 unparsed=0, lag_bytes=12, updated_at=now),
            dict(day="2026-12-01", host="mx1", path="/var/log/mail.log", lines=1000, parsed=990,
                 unparsed=10, lag_bytes=0, updated_at=now),
            dict(day="2026-12-02", host="mx1", path="/var/log/mail.log", lines=7, parsed=7,
                 unparsed=0, lag_bytes=0, updated_at=now),
            dict(day="2026-12-01", host="mx2", path="/var/log/maillog", lines=300, parsed=290,
                 unparsed=10, lag_bytes=None, updated_at=now),
        ],
    )  # fmt: skip
    connection.execute(
        insert(SinkTroubleRow),
        [
            dict(sink="postfix-cidr /etc/postfix/relaywatch.cidr",
                 started_at=utc("2026-12-01T03:00:00"), ended_at=utc("2026-12-01T03:10:00"),
                 failures=4, message="postmap: fatal: bad table"),
            dict(sink="webhook https://hooks.example/x", started_at=utc("2026-12-01T20:00:00"),
                 ended_at=None, failures=9, message="timed out"),
            dict(sink="nftables", started_at=utc("2026-11-29T00:00:00"),
                 ended_at=utc("2026-11-29T01:00:00"), failures=1, message="old"),
            dict(sink="exim /etc/exim4/relaywatch", started_at=utc("2026-12-01T22:00:00"),
                 ended_at=utc("2026-12-02T01:00:00"), failures=3, message="disk full"),
        ],
    )  # fmt: skip


@pytest.fixture
def stored(database_url: str, tmp_path: Path) -> Iterator[Engine]:
    config = tmp_path / "relaywatch.toml"
    config.write_text(config_text(database_url))
    settings = load_settings(config, environ={})
    engine = open_database(database_url)
    with engine.begin() as connection:
        decision = decisions(connection)
        seen_by_relaywatch(connection)
    hit = f"relaywatch decision {decision}: relay abuse, blocked until 2026-12-01T12:00:00Z"
    logs = {"mx1": Log("mx1"), "mx2": Log("mx2")}
    for message in messages():
        message.write(logs["mx2" if message.qid.startswith("B") else "mx1"])
    for r in refusals(hit):
        probe(logs[r.host], r.at, r.client, r.helo, r.sender, list(r.rcpts), r.text)
    pipeline = Pipeline(settings, engine)
    for host, log in logs.items():
        pipeline.ingest_file(log.write(tmp_path / f"{host}.log"), host=host, log_format="postfix")
    yield engine
    engine.dispose()


def report(engine: Engine, **kw: Any) -> dict[str, Any]:
    with engine.connect() as connection:
        built = build_report(connection, DAY, zone=BERLIN, now=utc("2026-12-02T01:00:00"), **kw)
    return report_json(built)


def hour(moment: datetime) -> str:
    return moment.astimezone(BERLIN).strftime("%Y-%m-%dT%H")


def in_day(moment: datetime) -> bool:
    return START <= moment < END


def expected_traffic(host: str | None = None) -> dict[str, Any]:
    """The traffic of the day, counted from the scenario's messages and refusals."""
    hours = {hour(START + timedelta(hours=n)): [0, 0, 0, 0, 0] for n in range(24)}
    received = delivered = deferred = bounced = 0
    bytes_in = bytes_out = 0
    senders: set[str] = set()
    recipients: set[str] = set()
    sender_domains: Counter[str] = Counter()
    recipient_domains: Counter[str] = Counter()
    for m in messages():
        if host is not None and ("mx2" if m.qid.startswith("B") else "mx1") != host:
            continue
        if in_day(m.at):
            received += 1
            hours[hour(m.at)][0] += 1
            bytes_in += m.size
            senders.add(m.sender or "<>")
            sender_domains[m.sender.partition("@")[2] or "<>"] += 1
        for n, (rcpt, status) in enumerate(m.rcpts):
            when = m.delivered_at(n)
            if not in_day(when):
                continue
            if status == "sent":
                delivered += 1
                hours[hour(when)][1] += 1
                bytes_out += m.size
                recipients.add(rcpt)
                recipient_domains[rcpt.partition("@")[2]] += 1
            elif status == "deferred":
                deferred += 1
                hours[hour(when)][2] += 1
            else:
                bounced += 1
                hours[hour(when)][3] += 1
    reasons: Counter[str] = Counter()
    for r in refusals("relaywatch decision 1: relay abuse, blocked until 2026-12-01T12:00:00Z"):
        if in_day(r.at) and host in (None, r.host):
            for n, _ in enumerate(r.rcpts):
                hours[hour(r.at + timedelta(milliseconds=10 + n))][4] += 1
            label = r.text.partition(">: ")[2] or r.text
            reasons[label.rsplit(", blocked until", 1)[0]] += len(r.rcpts)

    def ranked(counts: Counter[str]) -> list[dict[str, Any]]:
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return [{"name": name, "count": count} for name, count in ordered]

    return {
        "received": received, "delivered": delivered, "deferred": deferred,
        "deferrals": deferred, "bounced": bounced, "rejected": sum(reasons.values()),
        "bytes_received": bytes_in, "bytes_delivered": bytes_out, "senders": len(senders),
        "recipients": len(recipients), "rejected_by_reason": ranked(reasons),
        "per_hour": [
            {"hour": h, "received": c[0], "delivered": c[1], "deferred": c[2], "bounced": c[3],
             "rejected": c[4]}
            for h, c in hours.items()
        ],
        "top_sender_domains": ranked(sender_domains),
        "top_recipient_domains": ranked(recipient_domains),
    }  # fmt: skip


def test_every_number_of_the_day(stored: Engine) -> None:
    got = report(stored)
    assert got["period"] == {
        "start": "2026-11-30T23:00:00Z", "end": "2026-12-01T23:00:00Z", "label": "2026-12-01",
        "timezone": "Europe/Berlin", "host": None,
    }  # fmt: skip
    assert got["generated_at"] == "2026-12-02T01:00:00Z"
    assert got["headline"] == {
        "open_relay": True,
        "accepted_relays": 1,
        "refused_relays": 4,  # 2 + 1 on mx1, 1 on mx2; the day before and after are not
        "offenders": 3,
        # the range, the revoked one, 203.0.113.99, and the scorer's block of the open relay
        "new_blocks": 4,
        # 203.0.113.5 expired, 203.0.113.66 revoked, the scorer's 1h block of 198.51.100.7
        "expired_blocks": 3,
        "active_blocks": 3,  # the range, 203.0.113.77, 203.0.113.99 (revoked the next day)
        "enforcement_hits": 1,
        "accepted_transactions": 1,
    }
    (accepted,) = got["accepted"]
    lines = accepted.pop("lines")
    assert accepted == {
        "time": "2026-12-01T09:15:00Z", "host": "mx1", "queue_id": "A0000000001",
        "client_ip": "198.51.100.7", "client_name": None, "helo": None,
        "sender": "spam@forged.example", "recipients": ["x@outside.example"],
    }  # fmt: skip
    assert any("A0000000001: client=unknown[198.51.100.7]" in line for line in lines)
    assert any("to=<x@outside.example>" in line and "status=sent" in line for line in lines)
    hours = {c["name"]: c["count"] for c in got["attempts_per_hour"]}
    assert len(hours) == 24 and next(iter(hours)) == "2026-12-01T00"
    assert {k: v for k, v in hours.items() if v} == {
        "2026-12-01T00": 2,  # 23:30Z
        "2026-12-01T10": 1,  # the open relay's delivery, 09:15:02Z
        "2026-12-01T11": 1,  # 10:00Z
        "2026-12-01T15": 1,  # mx2, 14:00Z
    }
    assert got["attempts_per_host"] == [{"name": "mx1", "count": 4}, {"name": "mx2", "count": 1}]
    assert [d["count"] for d in got["trend"]] == [0, 0, 0, 0, 0, 0, 1, 5]
    assert got["trend"][0]["day"] == "2026-11-24" and got["trend"][-1]["day"] == "2026-12-01"
    assert got["offenders"] == [
        {"ip": "198.51.100.7", "client_names": [], "helos": [], "attempts": 1, "refused": 0,
         "accepted": 1, "recipients": 1, "recipient_domains": 1,
         "first_seen": "2026-12-01T09:15:02Z", "last_seen": "2026-12-01T09:15:02Z",
         "blocked_until": None, "returning": False},
        {"ip": "203.0.113.5", "client_names": [], "helos": ["spambot"], "attempts": 3,
         "refused": 3, "accepted": 0, "recipients": 3, "recipient_domains": 1,
         "first_seen": "2026-11-30T23:30:00.010000Z", "last_seen": "2026-12-01T14:00:00.010000Z",
         "blocked_until": None, "returning": True},
        {"ip": "192.0.2.99", "client_names": ["bot.dyn.example"], "helos": ["WIN-ABC"],
         "attempts": 1, "refused": 1, "accepted": 0, "recipients": 1, "recipient_domains": 1,
         "first_seen": "2026-12-01T10:00:00.010000Z", "last_seen": "2026-12-01T10:00:00.010000Z",
         "blocked_until": "2026-12-03T00:00:00Z", "returning": False},
    ]  # fmt: skip
    assert got["target_domains"] == [
        {"name": "far.example", "count": 3},
        {"name": "other.example", "count": 1},
        {"name": "outside.example", "count": 1},
    ]
    assert got["sender_domains"] == [
        {"name": "forged.example", "count": 4},
        {"name": "phish.example", "count": 1},
    ]
    assert got["helos"] == [{"name": "spambot", "count": 3}, {"name": "WIN-ABC", "count": 1}]
    assert got["suspect_accounts"] == [
        {"user": "carol@example.test", "messages": 5, "client_ips": 5,
         "outside_senders": ["ceo@bank.example"], "outside_recipients": 25},
    ]  # fmt: skip
    assert got["traffic"] == expected_traffic()
    # (the import above counts on today's UTC day of the wall clock, not on the log's)
    assert [x for x in got["sources"] if x["path"].startswith("/var/log/")] == [
        {"host": "mx1", "path": "/var/log/mail.log", "lines": 1500, "parsed": 1490,
         "unparsed": 10, "lag_bytes": 0},
        {"host": "mx2", "path": "/var/log/maillog", "lines": 300, "parsed": 290, "unparsed": 10,
         "lag_bytes": None},
    ]  # fmt: skip
    assert got["sinks"] == [
        {"sink": "postfix-cidr /etc/postfix/relaywatch.cidr", "started_at": "2026-12-01T03:00:00Z",
         "ended_at": "2026-12-01T03:10:00Z", "failures": 4, "message": "postmap: fatal: bad table"},
        {"sink": "webhook https://hooks.example/x", "started_at": "2026-12-01T20:00:00Z",
         "ended_at": None, "failures": 9, "message": "timed out"},
        {"sink": "exim /etc/exim4/relaywatch", "started_at": "2026-12-01T22:00:00Z",
         "ended_at": None, "failures": 3, "message": "disk full"},
    ]  # fmt: skip
    assert got["top"] == 20
    assert got["notes"] == []


def test_one_relay_host(stored: Engine) -> None:
    got = report(stored, host="mx2")
    assert got["period"]["host"] == "mx2"
    headline = got["headline"]
    assert (headline["refused_relays"], headline["accepted_relays"], headline["offenders"]) == (
        1,
        0,
        1,
    )
    assert headline["open_relay"] is False
    assert got["attempts_per_host"] == [{"name": "mx2", "count": 1}]
    assert [o["ip"] for o in got["offenders"]] == ["203.0.113.5"]
    assert got["offenders"][0]["returning"] is True
    assert got["traffic"] == expected_traffic("mx2")
    assert {x["host"] for x in got["sources"]} == {"mx2"}
    assert got["suspect_accounts"] == []
    assert got["notes"] == ["blocks are made for every relay host: all of them are counted"]


def test_top_lists_are_cut(stored: Engine) -> None:
    got = report(stored, top=1)
    assert got["top"] == 1
    assert [o["ip"] for o in got["offenders"]] == ["198.51.100.7"]
    assert got["target_domains"] == [{"name": "far.example", "count": 3}]
    assert got["sender_domains"] == [{"name": "forged.example", "count": 4}]
    assert got["helos"] == [{"name": "spambot", "count": 3}]
    assert len(got["traffic"]["top_recipient_domains"]) == 1
    assert got["headline"]["offenders"] == 3  # the headline counts them all


def test_a_long_queue_from_before_the_day_is_read_by_range(
    stored: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past a few thousand messages received the day before and delivered on it, they are
    found by reading that day's range rather than by their ids: the numbers do not change."""
    monkeypatch.setattr(build, "_CARRIED", 0)
    assert report(stored)["traffic"] == expected_traffic()
