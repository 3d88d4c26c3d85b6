"""The Postfix policy delegation service, spoken to over real sockets the way smtpd does:
one persistent connection, one request after the other, each ending with an empty line."""

from __future__ import annotations

import socket
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from detector.config import SinkSettings
from detector.decide import Decision, refusal_text
from detector.errors import ConfigError
from detector.sinks.policy import (
    ListenAddress,
    PolicyRequest,
    PolicySink,
    parse_listen,
)

NOW = datetime.now(UTC).replace(microsecond=0)


def decision(
    id: int, value: str, *, expires_in: timedelta = timedelta(hours=1), scope: str = ""
) -> Decision:
    """A block of ``value`` that started a minute ago."""
    scope = scope or ("range" if "/" in value else "ip")
    return Decision(
        id, value, scope, "auto", "relay abuse", NOW - timedelta(minutes=1), NOW + expires_in, None
    )


def policy_request(client_address: str | None, **attributes: str) -> bytes:
    """A request with every attribute Postfix 3.8 sends at RCPT time (SMTPD_POLICY_README);
    the values smtpd has none for are sent empty, as it does."""
    fields = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "protocol_name": "ESMTP",
        "client_address": client_address,
        "client_name": "unknown",
        "client_port": "52314",
        "reverse_client_name": "unknown",
        "server_address": "192.0.2.25",
        "server_port": "25",
        "helo_name": "spambot.example",
        "sender": "spam@forged.example",
        "recipient": "victim@outside.example",
        "recipient_count": "0",
        "queue_id": "",
        "instance": "1d2f.6571e8a4.b3c1.0",
        "size": "0",
        "etrn_domain": "",
        "stress": "",
        "sasl_method": "",
        "sasl_username": "",
        "sasl_sender": "",
        "ccert_subject": "",
        "ccert_issuer": "",
        "ccert_fingerprint": "",
        "ccert_pubkey_fingerprint": "",
        "encryption_protocol": "TLSv1.3",
        "encryption_cipher": "TLS_AES_256_GCM_SHA384",
        "encryption_keysize": "256",
        "policy_context": "",
        "compatibility_level": "3.6",
        "mail_version": "3.8.0",
        "tls_sni": "",
        **attributes,
    }
    lines = [f"{name}={value}\n" for name, value in fields.items() if value is not None]
    return ("".join(lines) + "\n").encode()


def reject(d: Decision) -> str:
    return f"action=REJECT {refusal_text(d)}\n\n"


DUNNO = "action=DUNNO\n\n"
StartSink = Callable[..., PolicySink]


class Smtpd:
    """One smtpd process's connection to the policy service."""

    def __init__(self, address: ListenAddress) -> None:
        if address.path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(5)
            self.sock.connect(str(address.path))
        else:
            self.sock = socket.create_connection((address.host, address.port), timeout=5)

    def ask(self, client_address: str | None, **attributes: str) -> str:
        self.sock.sendall(policy_request(client_address, **attributes))
        return self.answer()

    def answer(self) -> str:
        data = b""
        while not data.endswith(b"\n\n"):
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed by the policy service after {data!r}")
            data += chunk
        return data.decode()

    def send_and_read_to_close(self, data: bytes) -> bytes:
        """Send ``data`` and read what comes back until the service closes the connection."""
        received = b""
        try:
            self.sock.sendall(data)
            while chunk := self.sock.recv(4096):
                received += chunk
        except ConnectionResetError:  # closed with part of a long request unread
            pass
        return received

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def start_sink() -> Iterator[StartSink]:
    """Start a policy service (127.0.0.1, a free port, unless told otherwise); closed after."""
    sinks: list[PolicySink] = []

    def start(listen: str = "127.0.0.1:0", dry_run: bool = False, **options: object) -> PolicySink:
        settings = SinkSettings(type="postfix-policy", listen=listen, dry_run=dry_run)
        sink = PolicySink(settings, **options)  # type: ignore[arg-type]
        sink.start()
        sinks.append(sink)
        return sink

    yield start
    for sink in sinks:
        sink.close()


Connect = Callable[[ListenAddress], Smtpd]


@pytest.fixture
def connect() -> Iterator[Connect]:
    clients: list[Smtpd] = []

    def open_client(address: ListenAddress) -> Smtpd:
        clients.append(Smtpd(address))
        return clients[-1]

    yield open_client
    for client in clients:
        client.close()


def test_one_connection_gets_many_answers(start_sink: StartSink, connect: Connect) -> None:
    blocked = decision(12, "203.0.113.7")
    sink = start_sink()
    sink.sync([blocked], NOW)
    smtpd = connect(sink.address)

    assert smtpd.ask("203.0.113.7") == reject(blocked)
    assert smtpd.ask("198.51.100.1") == DUNNO
    assert smtpd.ask("203.0.113.7", protocol_state="DATA", recipient="") == reject(blocked)
    assert smtpd.ask("203.0.113.8") == DUNNO
    assert reject(blocked).startswith(
        "action=REJECT relaywatch decision 12: relay abuse, blocked until "
    )
    stats = sink.stats()
    assert (stats.requests, stats.rejects, stats.connections, stats.entries) == (4, 2, 1, 1)


def test_ranges_ipv6_and_mapped_addresses_are_blocked(
    start_sink: StartSink, connect: Connect
) -> None:
    range24 = decision(1, "198.51.100.0/24")
    own = decision(2, "198.51.100.77")
    wide = decision(3, "198.0.0.0/8")
    v6 = decision(4, "2001:db8::25")
    v6_64 = decision(5, "2001:db8:1:2::/64")
    sink = start_sink()
    sink.sync([range24, own, wide, v6, v6_64], NOW)
    smtpd = connect(sink.address)

    assert smtpd.ask("198.51.100.200") == reject(range24)
    assert smtpd.ask("198.51.100.77") == reject(own)  # the address's own decision first
    assert smtpd.ask("198.18.0.1") == reject(wide)
    assert smtpd.ask("::ffff:198.51.100.9") == reject(range24)
    assert smtpd.ask("2001:db8::25") == reject(v6)
    assert smtpd.ask("2001:0db8:0000::0025") == reject(v6)  # any spelling of it
    assert smtpd.ask("2001:db8:1:2:a:b:c:d") == reject(v6_64)
    assert smtpd.ask("2001:db8:1:3::1") == DUNNO
    assert smtpd.ask("2001:db8::26") == DUNNO
    assert smtpd.ask("199.0.0.1") == DUNNO
    assert sink.stats().entries == 5


def test_mapped_decision_value_blocks_the_ipv4_client(
    start_sink: StartSink, connect: Connect
) -> None:
    blocked = decision(6, "::ffff:203.0.113.9")
    sink = start_sink()
    sink.sync([blocked], NOW)
    assert connect(sink.address).ask("203.0.113.9") == reject(blocked)


def test_user_decision_matches_the_sasl_username(start_sink: StartSink, connect: Connect) -> None:
    stolen = decision(7, "alice", scope="user")
    sink = start_sink()
    sink.sync([stolen], NOW)
    smtpd = connect(sink.address)

    assert smtpd.ask("192.0.2.50", sasl_username="alice", sasl_method="plain") == reject(stolen)
    assert smtpd.ask("192.0.2.50", sasl_username="bob", sasl_method="plain") == DUNNO
    assert smtpd.ask("192.0.2.50") == DUNNO


def test_expired_and_revoked_decisions_are_not_enforced(
    start_sink: StartSink, connect: Connect
) -> None:
    expired = decision(8, "203.0.113.8", expires_in=timedelta(seconds=-1))
    revoked = Decision(9, "203.0.113.9", "ip", "manual", "", NOW, NOW + timedelta(hours=1), NOW)
    sink = start_sink()
    result = sink.sync([expired, revoked], NOW)
    smtpd = connect(sink.address)

    assert smtpd.ask("203.0.113.8") == DUNNO
    assert smtpd.ask("203.0.113.9") == DUNNO
    assert (result.ok, result.entries) == (True, 0)


def test_a_decision_ends_at_its_expiry_without_a_sync(
    start_sink: StartSink, connect: Connect
) -> None:
    now = [NOW.timestamp()]
    short = decision(10, "203.0.113.10", expires_in=timedelta(seconds=30))
    wide = decision(11, "203.0.113.0/24", expires_in=timedelta(minutes=5))
    sink = start_sink(clock=lambda: now[0])
    sink.sync([short, wide], NOW)
    smtpd = connect(sink.address)

    assert smtpd.ask("203.0.113.10") == reject(short)
    now[0] += 30
    assert smtpd.ask("203.0.113.10") == reject(wide)  # the range still holds
    now[0] += 300
    assert smtpd.ask("203.0.113.10") == DUNNO


def test_sync_changes_the_next_answer_on_an_open_connection(
    start_sink: StartSink, connect: Connect
) -> None:
    first = decision(13, "203.0.113.13")
    second = decision(14, "192.0.2.14")
    sink = start_sink()
    smtpd = connect(sink.address)

    assert smtpd.ask("203.0.113.13") == DUNNO
    assert sink.sync([first], NOW).changed
    assert smtpd.ask("203.0.113.13") == reject(first)
    assert not sink.sync([first], NOW).changed
    assert sink.sync([second], NOW).changed
    assert smtpd.ask("203.0.113.13") == DUNNO
    assert smtpd.ask("192.0.2.14") == reject(second)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"request=smtpd_access_policy\nthis is not an attribute\n\n", id="no-equals"),
        pytest.param(b"=value\nclient_address=203.0.113.1\n\n", id="empty-name"),
        pytest.param(b"\n", id="empty-request"),
        pytest.param(policy_request(None), id="no-client-address"),
        pytest.param(policy_request(""), id="empty-client-address"),
        pytest.param(policy_request("unknown"), id="not-an-address"),
        pytest.param(
            policy_request("203.0.113.1", ccert_subject="x" * (65 * 1024)), id="over-64-KiB"
        ),
        pytest.param(b"client_address=203.0.113.1\n" + b"x" * (70 * 1024), id="no-end-64-KiB"),
    ],
)
def test_trouble_closes_the_connection_without_an_answer(
    start_sink: StartSink, connect: Connect, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    sink = start_sink()
    sink.sync([decision(15, "203.0.113.1")], NOW)
    other = connect(sink.address)
    assert other.ask("198.51.100.1") == DUNNO
    bad = connect(sink.address)

    assert bad.send_and_read_to_close(request_bytes) == b""
    assert other.ask("203.0.113.1") == reject(decision(15, "203.0.113.1"))
    assert connect(sink.address).ask("198.51.100.2") == DUNNO
    assert sink.stats().bad_requests == 1
    assert sink.stats().requests == 3
    assert "postfix-policy: closing the connection" in caplog.text


def test_a_good_request_just_under_the_limit_is_answered(
    start_sink: StartSink, connect: Connect
) -> None:
    sink = start_sink()
    request = policy_request("198.51.100.3")
    padding = 64 * 1024 - len(request) - len("ccert_subject=\n")
    smtpd = connect(sink.address)
    assert smtpd.ask("198.51.100.3", ccert_subject="x" * padding) == DUNNO


def test_unknown_attributes_and_a_request_split_across_writes(
    start_sink: StartSink, connect: Connect
) -> None:
    blocked = decision(16, "203.0.113.16")
    sink = start_sink()
    sink.sync([blocked], NOW)
    smtpd = connect(sink.address)
    request = policy_request("203.0.113.16", some_future_attribute="x=y")
    for part in (request[:10], request[10:-1], request[-1:]):
        smtpd.sock.sendall(part)
    assert smtpd.answer() == reject(blocked)


def test_dry_run_answers_dunno_and_records_the_would_be_reject(
    start_sink: StartSink, connect: Connect
) -> None:
    blocked = decision(17, "203.0.113.17")
    sink = start_sink(dry_run=True)
    sink.sync([blocked], NOW)
    smtpd = connect(sink.address)

    assert smtpd.ask("203.0.113.17") == DUNNO
    assert smtpd.ask("198.51.100.17") == DUNNO
    would, other = sink.drain()
    assert (would.action, would.decision_id, would.dry_run) == ("DUNNO", 17, True)
    assert (other.action, other.decision_id) == ("DUNNO", None)
    stats = sink.stats()
    assert (stats.rejects, stats.would_reject) == (0, 1)


def test_every_request_is_recorded_with_its_attributes(
    start_sink: StartSink, connect: Connect
) -> None:
    blocked = decision(18, "203.0.113.18")
    start = NOW.timestamp() + 0.25
    now = [start]
    sink = start_sink(clock=lambda: now[0])
    sink.sync([blocked], NOW)
    smtpd = connect(sink.address)

    smtpd.ask(
        "203.0.113.18", client_name="bot.example.net", helo_name="[203.0.113.18]",
        sender="a@forged.example", recipient="v@outside.example", queue_id="",
        instance="2a.6571e8a4.1.0",
    )  # fmt: skip
    now[0] += 1
    smtpd.ask(
        "198.51.100.18", protocol_state="END-OF-MESSAGE", sasl_username="carol",
        queue_id="4F2AB8045", recipient="", recipient_count="3",
    )  # fmt: skip

    assert sink.drain() == [
        PolicyRequest(
            time=start, protocol_state="RCPT", client_address="203.0.113.18",
            client_name="bot.example.net", helo_name="[203.0.113.18]", sender="a@forged.example",
            recipient="v@outside.example", sasl_username="", queue_id="",
            instance="2a.6571e8a4.1.0", action=f"REJECT {refusal_text(blocked)}", decision_id=18,
            dry_run=False,
        ),
        PolicyRequest(
            time=start + 1, protocol_state="END-OF-MESSAGE", client_address="198.51.100.18",
            client_name="unknown", helo_name="spambot.example", sender="spam@forged.example",
            recipient="", sasl_username="carol", queue_id="4F2AB8045",
            instance="1d2f.6571e8a4.b3c1.0", action="DUNNO", decision_id=None, dry_run=False,
        ),
    ]  # fmt: skip
    assert sink.drain() == []


def test_a_full_buffer_drops_the_oldest_records_and_counts_them(
    start_sink: StartSink, connect: Connect
) -> None:
    sink = start_sink(buffer_size=2)
    smtpd = connect(sink.address)
    for n in range(5):
        smtpd.ask(f"198.51.100.{n}")

    assert [r.client_address for r in sink.drain()] == ["198.51.100.3", "198.51.100.4"]
    stats = sink.stats()
    assert (stats.requests, stats.dropped, stats.buffered) == (5, 3, 0)
    assert "3 records dropped" in sink.check([], NOW).message


def test_unix_socket_replaces_a_stale_file_and_is_open_to_smtpd(
    start_sink: StartSink, connect: Connect, tmp_path: Path
) -> None:
    path = tmp_path / "policy"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays: a daemon killed before it could remove it
    blocked = decision(19, "203.0.113.19")
    sink = start_sink(listen=f"unix:{path}")
    sink.sync([blocked], NOW)

    assert stat.S_IMODE(path.stat().st_mode) == 0o666
    smtpd = connect(sink.address)
    assert smtpd.ask("203.0.113.19") == reject(blocked)
    assert smtpd.ask("198.51.100.19") == DUNNO
    sink.close()
    assert not path.exists()


def test_unix_socket_in_use_or_not_a_socket_is_refused(
    start_sink: StartSink, tmp_path: Path
) -> None:
    path = tmp_path / "policy"
    start_sink(listen=f"unix:{path}")
    with pytest.raises(ConfigError, match="in use by another server"):
        start_sink(listen=f"unix:{path}")
    regular = tmp_path / "regular"
    regular.write_text("keep me\n")
    with pytest.raises(ConfigError, match="is not a socket"):
        start_sink(listen=f"unix:{regular}")
    assert regular.read_text() == "keep me\n"


def test_a_port_in_use_is_a_clear_error(start_sink: StartSink) -> None:
    first = start_sink()
    with pytest.raises(
        ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+: Address already in use"
    ):
        start_sink(listen=f"127.0.0.1:{first.address.port}")


def test_close_closes_open_connections_and_stops_serving(
    start_sink: StartSink, connect: Connect
) -> None:
    sink = start_sink()
    address = sink.address
    smtpd = connect(address)
    assert smtpd.ask("198.51.100.1") == DUNNO
    sink.close()

    assert smtpd.sock.recv(10) == b""
    with pytest.raises(ConnectionRefusedError):
        Smtpd(address)
    sink.close()  # twice is fine


def test_check_reports_values_it_cannot_enforce_and_changes_nothing(
    start_sink: StartSink, connect: Connect
) -> None:
    good = decision(20, "203.0.113.20")
    sink = start_sink()
    sink.sync([good], NOW)
    result = sink.check([decision(21, "203.0.113.300"), decision(22, "198.51.100.1/24")], NOW)

    assert not result.ok
    assert result.entries == 0 and result.changed
    assert "decision 21: '203.0.113.300' is not an IP address" in result.message
    assert "decision 22: '198.51.100.1/24' is not an IP address or a CIDR range" in result.message
    assert connect(sink.address).ask("203.0.113.20") == reject(good)
    assert result.sink == sink.name == "postfix-policy 127.0.0.1:0"  # as configured


def test_sync_enforces_the_good_values_and_reports_the_bad(
    start_sink: StartSink, connect: Connect
) -> None:
    good = decision(23, "203.0.113.23")
    sink = start_sink()
    result = sink.sync([good, decision(24, "not-an-ip")], NOW)

    assert (result.ok, result.entries) == (False, 1)
    assert connect(sink.address).ask("203.0.113.23") == reject(good)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:10040", ListenAddress("127.0.0.1", 10040, None)),
        ("inet:127.0.0.1:10040", ListenAddress("127.0.0.1", 10040, None)),
        ("[::1]:10040", ListenAddress("::1", 10040, None)),
        ("unix:/run/relaywatch/policy", ListenAddress("", 0, Path("/run/relaywatch/policy"))),
    ],
)
def test_listen_addresses(listen: str, expected: ListenAddress) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["10040", "127.0.0.1:", ":10040", "localhost:99999", "unix:rel"])
def test_bad_listen_addresses_name_the_key(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"sinks\.listen"):
        parse_listen(listen)
