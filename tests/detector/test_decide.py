"""Decisions: manual blocks and unblocks, the allowlist, what is never blocked, the circuit
breaker and range blocks, on a real store (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from detector.config import load_settings
from detector.decide import (
    AUTO,
    MANUAL,
    NeverBlock,
    Refused,
    active_decisions,
    allow,
    allowlist,
    block,
    decisions_for,
    disallow,
    refusal_text,
    revoke,
    unblock,
)
from detector.ingest import Pipeline
from tests.factories import probe, write_log

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)


def never(_engine: Engine) -> NeverBlock:
    return NeverBlock(["10.0.0.0/8", "::1/128"], ["192.0.2.25/32"])


def test_a_manual_block_is_in_force_until_it_expires_or_is_unblocked(engine: Engine) -> None:
    with engine.begin() as connection:
        made = block(connection, " 203.0.113.7 ", duration=HOUR, reason="probe from a botnet",
                     now=NOW, never_block=never(engine))  # fmt: skip
    assert (made.value, made.scope, made.origin) == ("203.0.113.7", "ip", MANUAL)
    with engine.begin() as connection:
        assert active_decisions(connection, NOW + timedelta(minutes=59)) == [made]
        assert active_decisions(connection, NOW + HOUR) == []
        [revoked] = unblock(connection, "203.0.113.7", NOW + timedelta(minutes=1))
        assert revoked.id == made.id and revoked.revoked_at == NOW + timedelta(minutes=1)
        assert active_decisions(connection, NOW + timedelta(minutes=2)) == []
        assert unblock(connection, "203.0.113.7", NOW + timedelta(minutes=2)) == []


def test_blocking_again_replaces_the_block_in_force(engine: Engine) -> None:
    with engine.begin() as connection:
        first = block(connection, "2001:db8::5", duration=HOUR, reason="", now=NOW,
                      never_block=never(engine))  # fmt: skip
        second = block(connection, "2001:DB8:0::5", duration=2 * HOUR, reason="again",
                       now=NOW + timedelta(minutes=5), never_block=never(engine))  # fmt: skip
        assert first.reason == "blocked by hand"
        assert [d.id for d in active_decisions(connection, NOW + timedelta(minutes=6))] == [
            second.id
        ]
        assert len(decisions_for(connection, "2001:db8::5")) == 2


def test_ranges_are_blocked_as_cidr_and_revoked_by_id(engine: Engine) -> None:
    with engine.begin() as connection:
        made = block(connection, "198.51.100.0/24", duration=HOUR, reason="", now=NOW,
                     never_block=never(engine))  # fmt: skip
        assert (made.value, made.scope) == ("198.51.100.0/24", "range")
        assert revoke(connection, made.id + 1000, NOW) is None
        revoked = revoke(connection, made.id, NOW + timedelta(seconds=1))
        assert revoked is not None and revoked.revoked_at == NOW + timedelta(seconds=1)
        assert active_decisions(connection, NOW + timedelta(seconds=2)) == []


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("10.1.2.3", "10.1.2.3 is in the internal network 10.0.0.0/8"),
        ("10.0.0.0/7", "10.0.0.0/7 covers the internal network 10.0.0.0/8"),
        ("::1", "::1 is in the internal network ::1/128"),
        ("192.0.2.25", "192.0.2.25 is in an address of the relay host (192.0.2.25/32)"),
        ("::ffff:10.9.9.9", "10.9.9.9 is in the internal network 10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0 covers the internal network 10.0.0.0/8"),
        ("203.0.113.0/24", "203.0.113.0/24 covers the allowlist entry 203.0.113.128/25 (partner)"),
        ("203.0.113.200", "203.0.113.200 is in the allowlist entry 203.0.113.128/25 (partner)"),
        ("mx.example.org", "'mx.example.org' is not an IP address or a CIDR range"),
        ("198.51.100.7/24", "'198.51.100.7/24' is not an IP address or a CIDR range"),
    ],
)
def test_what_must_never_be_blocked_is_refused_with_the_reason(
    engine: Engine, value: str, why: str
) -> None:
    with engine.begin() as connection:
        allow(connection, "203.0.113.128/25", "partner", NOW)
        with pytest.raises(Refused) as refused:
            block(connection, value, duration=HOUR, reason="", now=NOW, never_block=never(engine))
        assert why in str(refused.value)
        assert active_decisions(connection, NOW) == []


def test_allowing_revokes_the_blocks_it_covers_and_keeps_one_entry_per_network(
    engine: Engine,
) -> None:
    with engine.begin() as connection:
        inside = block(connection, "198.51.100.7", duration=HOUR, reason="", now=NOW,
                       never_block=never(engine))  # fmt: skip
        outside = block(connection, "198.51.101.7", duration=HOUR, reason="", now=NOW,
                        never_block=never(engine))  # fmt: skip
        entry, revoked = allow(connection, "198.51.100.9/24", "our backup MX", NOW)
        assert entry.network == "198.51.100.0/24"
        assert [d.id for d in revoked] == [inside.id]
        assert [d.id for d in active_decisions(connection, NOW)] == [outside.id]
        again, _ = allow(connection, "198.51.100.0/24", "backup MX (renamed)", NOW)
        assert again.id == entry.id
        assert [(e.network, e.comment) for e in allowlist(connection)] == [
            ("198.51.100.0/24", "backup MX (renamed)")
        ]
        with pytest.raises(Refused):
            allow(connection, "not-a-network", "", NOW)
        assert disallow(connection, entry.id)
        assert not disallow(connection, entry.id)
        block(connection, "198.51.100.7", duration=HOUR, reason="", now=NOW,
              never_block=never(engine))  # fmt: skip


def test_the_refusal_text_names_the_decision_and_its_end(engine: Engine) -> None:
    with engine.begin() as connection:
        made = block(connection, "203.0.113.7", duration=HOUR, reason="", now=NOW,
                     never_block=never(engine))  # fmt: skip
    until = (NOW + HOUR).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert refusal_text(made) == (
        f"relaywatch decision {made.id}: relay abuse, blocked until {until}"
    )


@pytest.fixture
def ingest(tmp_path: Path, engine: Engine) -> Callable[..., Engine]:
    def run(lines: list[str], extra: str = "", allowed: str | None = None) -> Engine:
        config = tmp_path / "rw.toml"
        config.write_text(
            '[network]\ninternal_networks = ["10.0.0.0/8"]\nlocal_domains = ["example.test"]\n'
            f'own_addresses = ["192.0.2.25"]\n{extra}'
        )
        if allowed is not None:
            with engine.begin() as connection:
                allow(connection, allowed, "a partner that forwards to us", NOW)
        log = write_log(tmp_path / "mail.log", lines)
        Pipeline(load_settings(config, environ={}), engine).ingest_file(
            log, host="mx1", log_format="postfix"
        )
        return engine

    return run


def burst(ip: str, start: datetime, count: int = 6) -> list[str]:
    return [
        line
        for n in range(count)
        for line in probe(
            start + n * timedelta(seconds=5),
            ip,
            rcpt=f"v{n}@outside.example",
            pid=hash((ip, n)) % 30000 + 1000,
        )
    ]


def test_the_scorer_never_blocks_allowlisted_or_own_addresses(
    ingest: Callable[..., Engine],
) -> None:
    start = NOW - timedelta(minutes=5)
    engine = ingest(
        burst("203.0.113.140", start) + burst("192.0.2.25", start) + burst("203.0.113.7", start),
        allowed="203.0.113.128/25",
    )
    with engine.connect() as connection:
        assert [d.value for d in active_decisions(connection, NOW)] == ["203.0.113.7"]


def test_the_circuit_breaker_caps_new_automatic_blocks_per_minute(
    ingest: Callable[..., Engine], caplog: pytest.LogCaptureFixture
) -> None:
    start = NOW - timedelta(minutes=5)
    lines = [line for n in range(5) for line in burst(f"198.51.{n}.9", start)]
    with caplog.at_level(logging.ERROR, logger="relaywatch"):
        engine = ingest(sorted(lines), "[enforcement]\nmax_new_blocks_per_minute = 3\n")
    with engine.connect() as connection:
        assert len(active_decisions(connection, NOW)) == 3
    assert "circuit breaker: 3 automatic blocks in the minute before" in caplog.text
    assert "max_new_blocks_per_minute" in caplog.text


def test_enough_blocked_addresses_in_a_slash_24_block_the_range(
    ingest: Callable[..., Engine],
) -> None:
    start = NOW - timedelta(minutes=5)
    lines = [line for n in (3, 4, 5) for line in burst(f"198.51.100.{n}", start)]
    lines += [line for n in (3, 4) for line in burst(f"198.51.101.{n}", start)]
    engine = ingest(sorted(lines), "[enforcement]\nrange_offenders = 3\n")
    with engine.connect() as connection:
        made = {(d.value, d.scope, d.origin) for d in active_decisions(connection, NOW)}
    assert ("198.51.100.0/24", "range", AUTO) in made
    assert not any(value.startswith("198.51.101.0/") for value, _, _ in made)
    assert len(made) == 6


def test_a_range_that_holds_an_allowlisted_address_is_not_blocked(
    ingest: Callable[..., Engine],
) -> None:
    start = NOW - timedelta(minutes=5)
    lines = [line for n in (3, 4, 5) for line in burst(f"198.51.100.{n}", start)]
    engine = ingest(sorted(lines), "[enforcement]\nrange_offenders = 3\n", allowed="198.51.100.200")
    with engine.connect() as connection:
        assert {d.scope for d in active_decisions(connection, NOW)} == {"ip"}


def refused_by_table(when: datetime, ip: str, decision: int, pid: int, rcpt: str) -> list[str]:
    """What Postfix logs when a relaywatch ``cidr:`` table refuses a client (Postfix 3.7)."""
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00")
    text = refusal_text_for(decision)
    return [
        f"{stamp} mx1 postfix/smtpd[{pid}]: connect from unknown[{ip}]",
        f"{stamp} mx1 postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1"
        f" <unknown[{ip}]>: Client host rejected: {text}; from=<a@b.example> to=<{rcpt}>"
        " proto=ESMTP helo=<h.example>",
        f"{stamp} mx1 postfix/smtpd[{pid}]: disconnect from unknown[{ip}] ehlo=1 mail=1"
        " rcpt=0/1 quit=1 commands=3/4",
    ]


def refusal_text_for(decision: int) -> str:
    return f"relaywatch decision {decision}: relay abuse, blocked until 2030-01-01T00:00:00Z"


def test_refusals_the_mail_server_made_because_of_a_decision_are_hits_not_attempts(
    ingest: Callable[..., Engine], engine: Engine
) -> None:
    with engine.begin() as connection:
        made = block(connection, "203.0.113.7", duration=HOUR, reason="", now=NOW,
                     never_block=never(engine))  # fmt: skip
    start = NOW - timedelta(minutes=5)
    hostile = f"x>: Client host rejected: {refusal_text_for(made.id)}@outside.example"
    lines = [
        *refused_by_table(start, "203.0.113.7", made.id, 101, "v1@outside.example"),
        *refused_by_table(
            start + timedelta(seconds=7), "203.0.113.7", made.id, 102, "v2@o.example"
        ),
        *probe(start + timedelta(seconds=9), "198.51.100.9", rcpt=hostile, pid=103),
    ]
    ingest(lines)
    ingest(lines)  # read again: nothing counted twice
    with engine.connect() as connection:
        [decision] = decisions_for(connection, "203.0.113.7")
        assert decisions_for(connection, "198.51.100.9") == []
        offenders = connection.exec_driver_sql("SELECT ip, relay_attempts FROM offenders").all()
    assert decision.hits == 2
    assert decision.last_hit_at == start + timedelta(seconds=7)
    assert offenders == [("198.51.100.9", 1)]  # the probe; the two refusals are not attempts


def test_a_refusal_at_connect_time_is_a_hit_too(
    ingest: Callable[..., Engine], engine: Engine
) -> None:
    """smtpd_delay_reject = no: the greeting itself is the refusal (as Postfix 3.7 logs it)."""
    with engine.begin() as connection:
        made = block(connection, "203.0.113.7", duration=HOUR, reason="", now=NOW,
                     never_block=never(engine))  # fmt: skip
    stamp = (NOW - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.000000+00:00")
    ingest([
        f"{stamp} mx1 postfix/smtpd[27300]: connect from unknown[203.0.113.7]",
        f"{stamp} mx1 postfix/smtpd[27300]: NOQUEUE: reject: CONNECT from unknown[203.0.113.7]: "
        f"554 5.7.1 <unknown[203.0.113.7]>: Client host rejected: {refusal_text(made)}; "
        "proto=SMTP",
        f"{stamp} mx1 postfix/smtpd[27300]: disconnect from unknown[203.0.113.7] commands=0/0",
    ])  # fmt: skip
    with engine.connect() as connection:
        [decision] = decisions_for(connection, "203.0.113.7")
    assert decision.hits == 1
