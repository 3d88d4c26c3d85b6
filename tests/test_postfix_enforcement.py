"""A real Postfix, end to end: relaywatch follows the instance's ``maillog_file``, blocks an
outside client that tries to relay, and Postfix itself then refuses that client — through the
``cidr:`` table relaywatch keeps (and reloads), or through relaywatch's policy service — while
the internal client and mail for the local domain still pass.  The refusals Postfix logs
because of the block come back as enforcement hits of the decision.

Skipped where Postfix is absent; failed instead when ``RELAYWATCH_REQUIRE_POSTFIX=1`` (CI)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from detector.config import load_settings
from detector.daemon import Daemon
from detector.decide import decisions_for
from detector.store.session import open_database
from tests.net import free_port, wait_for
from tests.postfix import PostfixInstance, Restrictions, SmtpResult, StartPostfix

OUTSIDE = "127.0.0.5"  # not in mynetworks, not internal for relaywatch
NEIGHBOUR = "127.0.0.6"  # outside too, but sending to the local domain
TARGET = "victim@outside.test"
Start = Callable[[PostfixInstance, str], Engine]


@pytest.fixture
def relaywatch(tmp_path: Path) -> Iterator[Start]:
    """Start ``relaywatch run`` (in this process) following an instance's log with sinks."""
    daemons: list[tuple[Daemon, threading.Thread, Engine]] = []

    def start(instance: PostfixInstance, sinks: str) -> Engine:
        database = tmp_path / "relaywatch.db"
        config = tmp_path / "relaywatch.toml"
        config.write_text(
            '[network]\ninternal_networks = ["127.0.0.1/32"]\nlocal_domains = ["local.test"]\n'
            f'[database]\nurl = "sqlite:///{database}"\n'
            f'[api]\nlisten = "127.0.0.1:{free_port()}"\n'
            f'[[sources]]\npath = "{instance.maillog_file}"\nformat = "postfix"\nhost = "mx"\n'
            + sinks
        )
        daemon = Daemon(load_settings(config, environ={}), config, poll=0.2)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        wait_for(lambda: daemon.status.readers != [], 20, "relaywatch to follow the log")
        engine = open_database(f"sqlite:///{database}")
        daemons.append((daemon, thread, engine))
        return engine

    yield start
    for daemon, thread, engine in daemons:
        daemon.stop()
        thread.join(30)
        engine.dispose()


def relay_attempt(instance: PostfixInstance, client: str) -> SmtpResult:
    return instance.send(client, "someone@outside.test", [TARGET], helo="client.outside.test")


def refused_by_relaywatch(result: SmtpResult, words: str) -> bool:
    reply = result.recipients.get(TARGET)
    return (
        reply is not None
        and reply.code == 554
        and f"{words}: relaywatch decision 1:" in (reply.text)
    )


def probe_until_blocked(instance: PostfixInstance, words: str) -> SmtpResult:
    """Relay attempts from the outside client, a few a second (bounded), until Postfix refuses
    it because of relaywatch's decision: the first five are refused as relaying."""
    found: list[SmtpResult] = []

    def attempt() -> bool:
        result = relay_attempt(instance, OUTSIDE)
        found.append(result)
        return refused_by_relaywatch(result, words)

    wait_for(attempt, 30, "Postfix to refuse the outside client because of relaywatch")
    first = found[0].recipients[TARGET]
    assert (first.code, "Relay access denied" in first.text) == (554, True)
    assert len(found) >= 5  # blocked only at the threshold: 5 refused relay attempts
    return found[-1]


def assert_others_pass(instance: PostfixInstance) -> None:
    internal = relay_attempt(instance, "127.0.0.1")
    assert internal.recipients[TARGET].code == 250 and internal.data_accepted, internal
    local = instance.send(NEIGHBOUR, "friend@outside.test", ["user@local.test"], helo="n.test")
    assert local.recipients["user@local.test"].code == 250 and local.data_accepted, local


def hits(engine: Engine) -> int:
    with engine.connect() as connection:
        return sum(d.hits for d in decisions_for(connection, OUTSIDE))


def test_postfix_refuses_a_blocked_client_through_the_cidr_table(
    postfix_factory: StartPostfix, relaywatch: Start
) -> None:
    instance = postfix_factory(Restrictions(cidr_table=True))
    engine = relaywatch(
        instance,
        f'[[sinks]]\ntype = "postfix-cidr"\npath = "{instance.cidr_table}"\n'
        f'reload_command = "{instance.reload_command}"\n',
    )
    probe_until_blocked(instance, "Client host rejected")
    assert instance.cidr_table is not None
    assert f"{OUTSIDE}  REJECT relaywatch decision 1: " in instance.cidr_table.read_text()
    assert_others_pass(instance)
    wait_for(lambda: hits(engine) >= 1, 15, "the refusal to come back as an enforcement hit")
    with engine.connect() as connection:
        attempts = connection.execute(
            text("SELECT refused_relays, accepted_relays FROM offenders WHERE ip = :ip"),
            {"ip": OUTSIDE},
        ).one()
    assert attempts.accepted_relays == 0  # the refusals because of the block are no attempts


def test_postfix_refuses_a_blocked_client_through_the_policy_service(
    postfix_factory: StartPostfix, relaywatch: Start
) -> None:
    port = free_port()
    instance = postfix_factory(
        Restrictions(cidr_table=False, policy_service=f"127.0.0.1:{port}", policy_stage="relay")
    )
    engine = relaywatch(
        instance, f'[[sinks]]\ntype = "postfix-policy"\nlisten = "127.0.0.1:{port}"\n'
    )
    probe_until_blocked(instance, "Recipient address rejected")
    assert_others_pass(instance)
    wait_for(lambda: hits(engine) >= 1, 15, "the refusal to come back as an enforcement hit")

    def answered() -> list[tuple[object, ...]]:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(
                text("SELECT client_ip, protocol_state, recipient FROM policy_requests "
                     "WHERE decision_id = 1")
            )]  # fmt: skip

    wait_for(lambda: bool(answered()), 10, "the policy service's answers to be stored")
    assert answered()[0] == (OUTSIDE, "RCPT", TARGET)
