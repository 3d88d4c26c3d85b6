"""Hand-built reports for the renderer tests: a day on which the server was an open relay, a
quiet day, and a busy one (many offenders, long names, IPv6, hostile text from the logs).

Each is a realistic :class:`Report` as :func:`detector.report.build.build_report` would make it;
keyword arguments replace any field, so a test states only what matters to it.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from detector.report.model import (
    AcceptedRelay,
    Count,
    DayCount,
    Headline,
    HourTraffic,
    OffenderLine,
    Period,
    Report,
    SinkTrouble,
    SourceDay,
    SuspectAccount,
    Traffic,
)

DAY = "2026-12-01"
ZONE = "Europe/Berlin"
START = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # midnight in Berlin (CET, UTC+1)
END = START + timedelta(days=1)
HOSTILE = '<script>alert("x")</script>'


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A moment of the report's day, given in Berlin time."""
    return START + timedelta(hours=hour, minutes=minute, seconds=second)


def period(label: str = DAY, host: str | None = None) -> Period:
    return Period(start=START, end=END, label=label, timezone=ZONE, host=host)


def hour_key(hour: int) -> str:
    return f"{DAY}T{hour:02d}"


def hourly(counts: dict[int, int]) -> tuple[Count, ...]:
    return tuple(Count(hour_key(h), n) for h, n in sorted(counts.items()) if n)


def accepted_relay(
    moment: datetime,
    client_ip: str = "203.0.113.77",
    queue_id: str = "4F2A1B3C9D",
    recipients: tuple[str, ...] = ("victim1@outside.example", "victim2@faraway.example"),
    helo: str | None = "mail.totally-legit.example",
    sender: str | None = "paypal-security@forged.example",
    client_name: str | None = "unknown",
    host: str = "mx1",
) -> AcceptedRelay:
    stamp = moment.astimezone(ZoneInfo(ZONE)).strftime("%b %e %H:%M:%S")
    name = client_name or "unknown"
    lines = (
        f"{stamp} {host} postfix/smtpd[2211]: connect from {name}[{client_ip}]",
        f"{stamp} {host} postfix/smtpd[2211]: {queue_id}: client={name}[{client_ip}]",
        f"{stamp} {host} postfix/cleanup[2214]: {queue_id}: message-id=<x1@{helo}>",
        f"{stamp} {host} postfix/qmgr[880]: {queue_id}: from=<{sender}>, size=2310, nrcpt="
        f"{len(recipients)} (queue active)",
        *(
            f"{stamp} {host} postfix/smtp[2216]: {queue_id}: to=<{rcpt}>, relay=mx.outside.example"
            "[198.51.100.25]:25, delay=1.2, delays=0.1/0/0.6/0.5, dsn=2.0.0, status=sent "
            "(250 2.0.0 Ok: queued as 9A8B7C6D)"
            for rcpt in recipients
        ),
    )
    return AcceptedRelay(
        time=moment,
        host=host,
        queue_id=queue_id,
        client_ip=client_ip,
        client_name=client_name,
        helo=helo,
        sender=sender,
        recipients=recipients,
        lines=lines,
    )


def offender(
    ip: str,
    attempts: int,
    *,
    accepted: int = 0,
    names: tuple[str, ...] = ("unknown",),
    helos: tuple[str, ...] = ("ylmf-pc",),
    first: datetime | None = None,
    last: datetime | None = None,
    blocked_until: datetime | None = None,
    returning: bool = False,
) -> OffenderLine:
    return OffenderLine(
        ip=ip,
        client_names=names,
        helos=helos,
        attempts=attempts,
        refused=attempts - accepted,
        accepted=accepted,
        recipients=max(1, attempts * 4 // 5),
        recipient_domains=max(1, attempts // 7),
        first_seen=first or at(0, 12),
        last_seen=last or at(23, 41),
        blocked_until=blocked_until,
        returning=returning,
    )


def traffic(*, quiet: bool = False) -> Traffic:
    per_hour = []
    for hour in range(24):
        office = 8 <= hour < 19
        received = (140 if office else 25) + (hour * 7) % 13
        rejected = 0 if quiet else (60 if 2 <= hour < 6 else 12) + hour % 5
        per_hour.append(
            HourTraffic(
                hour=hour_key(hour),
                received=received,
                delivered=received - 2,
                deferred=1 if hour % 6 == 0 else 0,
                bounced=1 if hour % 8 == 3 else 0,
                rejected=rejected,
            )
        )
    received = sum(h.received for h in per_hour)
    rejected = sum(h.rejected for h in per_hour)
    reasons = (
        ()
        if quiet
        else (
            Count("Relay access denied", rejected - 171),
            Count("Client host rejected: cannot find your reverse hostname", 97),
            Count("Recipient address rejected: User unknown in local recipient table", 52),
            Count("Helo command rejected: need fully-qualified hostname", 22),
        )
    )
    return Traffic(
        received=received,
        delivered=sum(h.delivered for h in per_hour),
        deferred=sum(h.deferred for h in per_hour),
        deferrals=sum(h.deferred for h in per_hour) * 3,
        bounced=sum(h.bounced for h in per_hour),
        rejected=rejected,
        bytes_received=received * 48_213,
        bytes_delivered=received * 51_007,
        senders=412,
        recipients=655,
        rejected_by_reason=reasons,
        per_hour=tuple(per_hour),
        top_sender_domains=(
            Count("example.test", 1210),
            Count("lists.debian.org", 311),
            Count("github.com", 120),
            Count("bounce.newsletter.example", 77),
        ),
        top_recipient_domains=(
            Count("example.test", 1580),
            Count("partner.example", 212),
            Count("gmail.com", 98),
        ),
    )


def sources() -> tuple[SourceDay, ...]:
    return (
        SourceDay("mx1", "/var/log/mail.log", 48_212, 48_190, 22, 0),
        SourceDay(
            "mx2", "/srv/remote-logs/mx2.example.test/postfix/mail.log", 31_877, 31_877, 0, 1_024
        ),
        SourceDay(
            "exch1", "/mnt/exchange/MessageTracking/MSGTRK20261201-1.LOG", 9_310, 9_109, 201, None
        ),
    )


def open_relay_report(**changes: Any) -> Report:
    """The server was an open relay for two transactions while a botnet probed it all day."""
    per_hour = {h: (380 if 2 <= h < 6 else 40) + (h * 11) % 17 for h in range(24)}
    per_hour[13] += 300
    refused = sum(per_hour.values()) - 3
    accepted = (
        accepted_relay(at(13, 2, 11)),
        accepted_relay(
            at(13, 4, 52),
            client_ip="2001:db8:77:1::5",
            queue_id="7C1E0F42AA",
            recipients=("ceo@faraway.example",),
            helo="[2001:db8:77:1::5]",
            sender="",
            client_name="host-5.dynamic.isp.example",
        ),
    )
    offenders = (
        offender(
            "203.0.113.77",
            1_890,
            accepted=2,
            helos=("mail.totally-legit.example",),
            blocked_until=at(13, 5) + timedelta(days=7),
        ),
        offender(
            "198.51.100.23",
            1_204,
            names=("unknown",),
            helos=("ylmf-pc",),
            first=at(2, 0, 3),
            last=at(5, 59),
            blocked_until=at(2, 3) + timedelta(days=1),
            returning=True,
        ),
        offender(
            "2001:db8:77:1::5",
            640,
            accepted=1,
            names=("host-5.dynamic.isp.example",),
            helos=("[2001:db8:77:1::5]",),
            first=at(13, 4),
            last=at(13, 30),
            blocked_until=at(13, 5) + timedelta(days=7),
        ),
        offender(
            "192.0.2.14",
            212,
            names=("static-14.pool.example.net",),
            helos=("WIN-3KQ7HV0B2PL", "localhost"),
            blocked_until=at(9, 14) + timedelta(hours=12),
        ),
        offender("192.0.2.201", 31, helos=("EHLO",), returning=True),
        offender("203.0.113.9", 4, first=at(17, 2), last=at(17, 3)),
    )
    report = Report(
        period=period(),
        generated_at=datetime(2026, 12, 2, 1, 0, 3, tzinfo=UTC),
        headline=Headline(
            open_relay=True,
            accepted_relays=3,
            refused_relays=refused,
            offenders=len(offenders),
            new_blocks=4,
            expired_blocks=2,
            active_blocks=11,
            enforcement_hits=1_530,
        ),
        accepted=accepted,
        attempts_per_hour=hourly(per_hour),
        attempts_per_host=(Count("mx1", refused - 1_200), Count("mx2", 1_200), Count("exch1", 3)),
        trend=(
            DayCount("2026-11-24", 120),
            DayCount("2026-11-25", 95),
            DayCount("2026-11-26", 0),
            DayCount("2026-11-27", 310),
            DayCount("2026-11-28", 1_402),
            DayCount("2026-11-29", 880),
            DayCount("2026-11-30", 760),
            DayCount(DAY, refused + 3),
        ),
        offenders=offenders,
        target_domains=(
            Count("gmail.com", 1_502),
            Count("yahoo.co.jp", 880),
            Count("outside.example", 412),
            Count("faraway.example", 301),
        ),
        sender_domains=(
            Count("example.test", 2_011),  # forged: the server's own domain
            Count("forged.example", 970),
            Count("paypal.com", 120),
        ),
        helos=(
            Count("mail.totally-legit.example", 1_890),
            Count("ylmf-pc", 1_204),
            Count("WIN-3KQ7HV0B2PL", 150),
        ),
        suspect_accounts=(
            SuspectAccount(
                user="sales@example.test",
                messages=412,
                client_ips=37,
                outside_senders=("ceo@bank.example", "billing@paypal.com", "noreply@dhl.example"),
                outside_recipients=3_980,
            ),
        ),
        traffic=traffic(),
        sources=sources(),
        sinks=(
            SinkTrouble(
                "nftables",
                at(3, 12),
                at(3, 40),
                14,
                "nft: Could not process rule: Operation not permitted",
            ),
        ),
        top=20,
        notes=("exch1: the Exchange message tracking log has no HELO names.",),
    )
    return dataclasses.replace(report, **changes)


def quiet_report(**changes: Any) -> Report:
    """A day without relay abuse: normal traffic, a block from last week still in force."""
    report = Report(
        period=period(),
        generated_at=datetime(2026, 12, 2, 1, 0, 3, tzinfo=UTC),
        headline=Headline(
            open_relay=False,
            accepted_relays=0,
            refused_relays=0,
            offenders=0,
            new_blocks=0,
            expired_blocks=1,
            active_blocks=2,
            enforcement_hits=0,
        ),
        accepted=(),
        attempts_per_hour=(),
        attempts_per_host=(),
        trend=(*(DayCount(f"2026-11-{d}", 0) for d in range(24, 31)), DayCount(DAY, 0)),
        offenders=(),
        target_domains=(),
        sender_domains=(),
        helos=(),
        suspect_accounts=(),
        traffic=traffic(quiet=True),
        sources=sources()[:1],
        sinks=(),
    )
    return dataclasses.replace(report, **changes)


LONG_NAME = (
    "a-very-long-reverse-name-that-some-isp-gives-its-dynamic-customers."
    "cust-203-0-113-250.residential.broadband.region-west.isp-with-a-long-name.example.net"
)


def busy_report(**changes: Any) -> Report:
    """No open relay, but many offenders: IPv6, long names and HELOs, text meant to break out
    of the markup or the terminal, more offenders than fit on a page."""
    offenders = [
        offender(
            "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe",
            9_999,
            names=(LONG_NAME, "second-name.example"),
            helos=(HOSTILE, "x" * 120),
            blocked_until=at(4) + timedelta(days=30),
        ),
        offender(
            "198.51.100.250",
            5_000,
            names=("evil\x1b[31m.example",),  # a terminal escape in a logged name
            helos=("<b>bold</b> & co",),
            returning=True,
        ),
    ]
    offenders += [
        offender(f"192.0.2.{n}", 400 - n * 17, helos=(f"bot{n}",), returning=n % 2 == 0)
        for n in range(1, 19)
    ]
    per_hour = {h: 100 + h * 40 for h in range(24)}
    total = sum(per_hour.values())
    report = open_relay_report(
        headline=Headline(
            open_relay=False,
            accepted_relays=0,
            refused_relays=total,
            offenders=137,
            new_blocks=64,
            expired_blocks=12,
            active_blocks=240,
            enforcement_hits=12_050,
        ),
        accepted=(),
        attempts_per_hour=hourly(per_hour),
        attempts_per_host=(Count("mx1." + "sub." * 12 + "example.test", total),),
        trend=(
            *(DayCount(f"2026-11-{d}", 3_000 + d * 10) for d in range(24, 31)),
            DayCount(DAY, total),
        ),
        offenders=tuple(offenders),
        target_domains=(
            *(Count(f"target-{n}.example", 900 - n) for n in range(20)),
            Count(HOSTILE, 3),
        ),
        sender_domains=(Count("bad<domain>&co.example", 10),),
        helos=(Count(HOSTILE, 7), Count("x" * 200, 5)),
        suspect_accounts=(),
        sinks=(
            SinkTrouble(
                "postfix-cidr",
                at(22, 10),
                None,
                230,
                "postmap: fatal: open /etc/postfix/relaywatch.cidr: Permission denied " + HOSTILE,
            ),
        ),
        notes=(
            "mx2: 1,024 bytes behind at the last read. "
            + "A long note that has to be wrapped to the width of a terminal. " * 3,
        ),
    )
    return dataclasses.replace(report, **changes)
