"""The daemon keeps its sinks in step with the decisions in force: blocks the scorer makes, blocks
and unblocks from another process, the allowlist, a dry run; and it stores the requests its
Postfix policy service answered."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from detector.config import load_settings
from detector.daemon import Daemon
from detector.decide import NeverBlock, allow, block, unblock
from detector.store.session import open_database
from tests.factories import probe
from tests.net import free_port, get_json, wait_for

SPAMMER = "203.0.113.7"


def start(tmp_path: Path, sinks: str, enforcement: str = "") -> tuple[Daemon, Path, str]:
    log, database = tmp_path / "mail.log", tmp_path / "relaywatch.db"
    log.write_text("")
    port = free_port()
    path = tmp_path / "relaywatch.toml"
    path.write_text(
        '[network]\ninternal_networks = ["127.0.0.0/8", "10.0.0.0/8"]\n'
        'local_domains = ["example.test"]\n'
        f'[database]\nurl = "sqlite:///{database}"\n[api]\nlisten = "127.0.0.1:{port}"\n'
        f'[[sources]]\npath = "{log}"\nformat = "postfix"\nhost = "mx1"\n{enforcement}{sinks}'
    )
    daemon = Daemon(load_settings(path, environ={}), path, poll=0.2)
    threading.Thread(target=daemon.run, daemon=True).start()
    wait_for(lambda: daemon.status.readers != [], 20, "the daemon")
    return daemon, log, f"http://127.0.0.1:{port}/healthz"


def append_probes(log: Path, ip: str, count: int) -> None:
    now = datetime.now(UTC)
    lines = [
        line for n in range(count)
        for line in probe(now + timedelta(seconds=n), ip, rcpt=f"v{n}@outside{n}.example",
                          pid=3000 + n)
    ]  # fmt: skip
    with log.open("a") as out:
        out.write("".join(line + "\n" for line in lines))


def in_file(path: Path, needle: str) -> bool:
    return path.exists() and needle in path.read_text()


def test_blocks_reach_the_sinks_and_unblocks_and_the_allowlist_take_them_away(
    tmp_path: Path,
) -> None:
    cidr, hosts = tmp_path / "relaywatch.cidr", tmp_path / "exim-relay-abusers"
    daemon, log, health = start(
        tmp_path,
        f'[[sinks]]\ntype = "postfix-cidr"\npath = "{cidr}"\n'
        f'[[sinks]]\ntype = "exim"\npath = "{hosts}"\n',
    )
    engine = open_database(f"sqlite:///{tmp_path / 'relaywatch.db'}")
    never = NeverBlock(["127.0.0.0/8", "10.0.0.0/8"])
    try:
        append_probes(log, SPAMMER, 5)
        wait_for(lambda: in_file(cidr, f"{SPAMMER}  REJECT relaywatch decision 1: "), 10,
                 "the scorer's block in the cidr table")  # fmt: skip
        assert in_file(hosts, SPAMMER)
        sinks = get_json(health)[1]["sinks"]
        assert [(s["sink"], s["ok"], s["entries"]) for s in sinks] == [
            (f"postfix-cidr {cidr}", True, 1),
            (f"exim {hosts}", True, 1),
        ]
        now = datetime.now(UTC)
        with engine.begin() as connection:  # as `relaywatch block` does, in another process
            block(connection, "198.51.100.0/24", duration=timedelta(hours=1), reason="",
                  now=now, never_block=never)  # fmt: skip
        wait_for(lambda: in_file(cidr, "198.51.100.0/24  REJECT relaywatch decision 2: "), 5,
                 "a manual block in the cidr table")  # fmt: skip
        with engine.begin() as connection:
            unblock(connection, SPAMMER, datetime.now(UTC))
        wait_for(lambda: not in_file(cidr, SPAMMER), 5, "the unblock in the cidr table")
        with engine.begin() as connection:
            allow(connection, "198.51.100.128/25", "partner", datetime.now(UTC))
        wait_for(lambda: not in_file(hosts, "198.51.100.0/24"), 5, "the allowlist's revocation")
        assert not in_file(cidr, "198.51.100.0/24")
    finally:
        daemon.stop()
        engine.dispose()


def test_a_block_that_expires_leaves_the_sinks(tmp_path: Path) -> None:
    cidr = tmp_path / "relaywatch.cidr"
    daemon, _, _ = start(tmp_path, f'[[sinks]]\ntype = "postfix-cidr"\npath = "{cidr}"\n')
    engine = open_database(f"sqlite:///{tmp_path / 'relaywatch.db'}")
    try:
        with engine.begin() as connection:
            block(connection, SPAMMER, duration=timedelta(seconds=2), reason="",
                  now=datetime.now(UTC), never_block=NeverBlock([]))  # fmt: skip
        wait_for(lambda: in_file(cidr, SPAMMER), 5, "the block in the cidr table")
        wait_for(lambda: not in_file(cidr, SPAMMER), 6, "the expired block to leave")
    finally:
        daemon.stop()
        engine.dispose()


def test_in_a_dry_run_nothing_is_written_and_health_says_what_would_be(tmp_path: Path) -> None:
    cidr = tmp_path / "relaywatch.cidr"
    daemon, log, health = start(
        tmp_path, f'[[sinks]]\ntype = "postfix-cidr"\npath = "{cidr}"\n',
        "[enforcement]\ndry_run = true\n",
    )  # fmt: skip
    try:
        append_probes(log, SPAMMER, 5)
        wait_for(lambda: get_json(health)[1]["sinks"][0].get("entries") == 1, 10,
                 "the dry run to see the block")  # fmt: skip
        assert not cidr.exists()
    finally:
        daemon.stop()


def ask_policy(port: int, client: str) -> str:
    request = (
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
        f"client_address={client}\nclient_name=unknown\nhelo_name=h.example\n"
        "sender=a@b.example\nrecipient=v@outside.example\n\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        answer = b""
        while not answer.endswith(b"\n\n"):
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
    return answer.decode().strip()


def test_the_policy_service_answers_from_the_decisions_and_its_requests_are_stored(
    tmp_path: Path,
) -> None:
    port = free_port()
    daemon, log, _ = start(
        tmp_path, f'[[sinks]]\ntype = "postfix-policy"\nlisten = "127.0.0.1:{port}"\n'
    )
    engine = open_database(f"sqlite:///{tmp_path / 'relaywatch.db'}")
    try:
        assert ask_policy(port, SPAMMER) == "action=DUNNO"
        append_probes(log, SPAMMER, 5)
        wait_for(lambda: ask_policy(port, SPAMMER).startswith("action=REJECT relaywatch "
                                                               "decision 1: "), 10,
                 "the policy service to refuse the blocked client")  # fmt: skip
        assert ask_policy(port, "198.51.100.9") == "action=DUNNO"

        def stored() -> list[tuple[object, ...]]:
            with engine.connect() as connection:
                return connection.execute(
                    text("SELECT client_ip, protocol_state, recipient, decision_id "
                         "FROM policy_requests WHERE decision_id IS NOT NULL")
                ).all()  # fmt: skip

        wait_for(lambda: bool(stored()), 5, "the policy requests to be stored")
        assert stored()[0] == (SPAMMER, "RCPT", "v@outside.example", 1)
    finally:
        daemon.stop()
        engine.dispose()
