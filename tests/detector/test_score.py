"""Windowed scoring and automatic blocks, on log time, through the pipeline into the store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import pytest
from sqlalchemy import Engine

from detector import ingest
from detector.config import load_settings
from detector.decide import decisions_for
from detector.ingest import Pipeline
from detector.score import attempt_counters, score
from detector.simulate import traffic
from detector.store.queries import get_offender, list_offenders
from detector.store.session import open_database
from tests.factories import open_relay, probe, write_log

NOW = datetime.now(UTC).replace(microsecond=0)
SPAMMER = "203.0.113.7"


@pytest.fixture
def run(tmp_path: Path, database_url: str) -> Callable[..., Engine]:
    """Ingest the given lines with the given extra configuration; return the engine."""
    engines: list[Engine] = []

    def ingest_lines(lines: list[str], extra: str = "", name: str = "mail.log") -> Engine:
        config = tmp_path / "rw.toml"
        config.write_text(
            '[network]\ninternal_networks = ["10.0.0.0/8"]\nlocal_domains = ["example.test"]\n'
            f'[database]\nurl = "{database_url}"\n{extra}'
        )
        settings = load_settings(config, environ={})
        if not engines:
            engines.append(open_database(settings.database.url))
        log = write_log(tmp_path / name, lines)
        Pipeline(settings, engines[0]).ingest_file(log, host="mx1", log_format="postfix")
        return engines[0]

    yield ingest_lines  # type: ignore[misc]
    for engine in engines:
        engine.dispose()


def wave(start: datetime, ip: str, count: int, every: timedelta) -> list[str]:
    lines: list[str] = []
    for n in range(count):
        lines += probe(start + n * every, ip, rcpt=f"v{n}@outside{n % 3}.example", pid=1000 + n)
    return lines


def test_five_refused_relays_in_ten_minutes_block_for_an_hour(run: Callable[..., Engine]) -> None:
    start = NOW - timedelta(minutes=5)
    engine = run(wave(start, SPAMMER, 5, timedelta(seconds=30)))
    with engine.connect() as connection:
        [decision] = decisions_for(connection, SPAMMER)
        offender = get_offender(connection, SPAMMER, datetime.now(UTC))
    fifth = start + 4 * timedelta(seconds=30)
    assert decision.created_at == fifth
    assert decision.expires_at == fifth + timedelta(hours=1)
    assert decision.reason == "5 refused relay attempts in 10m"
    assert offender.blocked and offender.blocked_until == decision.expires_at
    assert (offender.refused_relays, offender.accepted_relays, offender.recipient_domains) == (
        5, 0, 3)  # fmt: skip
    assert offender.score == score(5, 0, 3) == 6.0
    assert offender.reasons[0] == "5 refused relay attempts in 10m"


def test_four_in_the_window_do_not_block(run: Callable[..., Engine]) -> None:
    engine = run(wave(NOW - timedelta(hours=1), SPAMMER, 8, timedelta(minutes=3)))
    with engine.connect() as connection:
        assert decisions_for(connection, SPAMMER) == []
        offender = get_offender(connection, SPAMMER, datetime.now(UTC))
    assert offender.refused_relays == 8 and not offender.blocked
    assert offender.reasons[0] == "4 refused relay attempts in 10m"


def test_one_accepted_relay_blocks_at_once(run: Callable[..., Engine]) -> None:
    at = NOW - timedelta(minutes=2)
    engine = run(open_relay(at, SPAMMER, "4A5B6C7D8E"))
    with engine.connect() as connection:
        [decision] = decisions_for(connection, SPAMMER)
        offender = get_offender(connection, SPAMMER, datetime.now(UTC))
    assert decision.reason.startswith("1 accepted relay in 10m")
    assert offender.accepted_relays == 1 and offender.score == 10.0 and offender.blocked


def test_repeat_offenders_get_four_times_the_last_block_up_to_the_maximum(
    run: Callable[..., Engine],
) -> None:
    start = NOW - timedelta(days=3)
    lines: list[str] = []
    for hours in (0, 2, 8, 30):  # each wave after the previous block ended
        lines += wave(start + timedelta(hours=hours), SPAMMER, 5, timedelta(seconds=10))
    engine = run(lines, extra='[scoring]\nmax_block_duration = "12h"\n')
    with engine.connect() as connection:
        durations = [d.expires_at - d.created_at for d in decisions_for(connection, SPAMMER)]
    assert durations == [timedelta(hours=1), timedelta(hours=4), timedelta(hours=12),
                         timedelta(hours=12)]  # fmt: skip


def test_time_is_the_logs_time(run: Callable[..., Engine]) -> None:
    old, recent = "203.0.113.20", "203.0.113.21"
    engine = run(
        wave(NOW - timedelta(hours=20), old, 5, timedelta(seconds=5))
        + wave(NOW - timedelta(minutes=10), recent, 5, timedelta(seconds=5))
    )
    with engine.connect() as connection:
        blocked = {o.ip for o in list_offenders(connection, datetime.now(UTC), blocked=True)}
        everyone = {o.ip for o in list_offenders(connection, datetime.now(UTC))}
    assert everyone == {old, recent}
    assert blocked == {recent}


def test_internal_clients_are_never_blocked(run: Callable[..., Engine]) -> None:
    engine = run(wave(NOW - timedelta(minutes=5), "10.1.2.3", 6, timedelta(seconds=5)))
    with engine.connect() as connection:
        assert decisions_for(connection, "10.1.2.3") == []
        assert get_offender(connection, "10.1.2.3", datetime.now(UTC)).refused_relays == 6


def test_windows_span_batches_and_a_second_import_decides_nothing_new(
    run: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "BATCH_LINES", 4)
    lines = wave(NOW - timedelta(minutes=30), SPAMMER, 5, timedelta(seconds=20))
    engine = run(lines)
    run(lines)
    with engine.connect() as connection:
        assert len(decisions_for(connection, SPAMMER)) == 1
        assert get_offender(connection, SPAMMER, datetime.now(UTC)).refused_relays == 5


def test_attempts_from_two_relay_hosts_add_up(run: Callable[..., Engine]) -> None:
    start = NOW - timedelta(minutes=8)
    run(wave(start, SPAMMER, 2, timedelta(seconds=10)), name="mx1.log")
    engine = run(
        [line.replace(" mx1 ", " mx2 ") for line in wave(start + timedelta(minutes=1), SPAMMER, 3,
                                                          timedelta(seconds=10))],
        name="mx2.log",
    )  # fmt: skip
    with engine.connect() as connection:
        assert len(decisions_for(connection, SPAMMER)) == 1


def test_an_attempt_stored_after_the_block_it_belongs_to_makes_no_second_block(
    run: Callable[..., Engine],
) -> None:
    """Sessions end out of order: a follower may store an attempt after the block that later
    attempts of the same burst already earned, with a log time before that block."""
    start = NOW - timedelta(minutes=8)
    run(wave(start, SPAMMER, 5, timedelta(minutes=1)))  # blocked at start + 4m
    late = probe(start + timedelta(minutes=3, seconds=30), SPAMMER, pid=99)
    engine = run(late, name="mail.log.late")
    with engine.connect() as connection:
        [decision] = decisions_for(connection, SPAMMER)
    assert decision.created_at == start + timedelta(minutes=4)


def test_counters_kept_as_attempts_are_stored_equal_a_count_over_everything_stored(
    run: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offender counters are added to batch by batch (``Scorer.count``); after many small
    batches, the file read again after it grew, and a second relay host, they equal a count over all
    stored attempts, and so do the distinct recipients and domains."""
    monkeypatch.setattr(ingest, "BATCH_LINES", 500)
    lines = list(
        islice(
            traffic(seed=3, start=NOW - timedelta(hours=1), abuse_share=0.4, open_relay_clients=1),
            6000,
        )
    )
    run(lines[:3000])
    monkeypatch.setattr(ingest, "BATCH_LINES", 100_000)
    run(lines)  # the log grew: one batch, half of it stored already and not counted twice
    engine = run([line.replace(" mx1 ", " mx2 ") for line in lines], name="mx2.log")
    with engine.connect() as connection:
        truth = attempt_counters(connection)
        offenders = {o.ip: o for o in list_offenders(connection, datetime.now(UTC))}
    assert len(truth) >= 5 and set(offenders) == set(truth)
    for ip, want in truth.items():
        got = offenders[ip]
        assert (
            got.relay_attempts, got.refused_relays, got.accepted_relays, got.recipients,
            got.recipient_domains, got.first_seen.timestamp(), got.last_seen.timestamp(),
        ) == pytest.approx(tuple(want), rel=0, abs=1e-3), ip  # fmt: skip
        assert got.score == score(want.refused, want.accepted, want.domains)
