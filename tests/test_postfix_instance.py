"""The private Postfix harness (tests/postfix.py) against a real Postfix, with no relaywatch
code: relaying refused and logged, a cidr: table and a policy service refusing a client."""

from __future__ import annotations

import re
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postfix import (
    POSTFIX_MISSING,
    PolicyStage,
    PostfixInstance,
    Restrictions,
    StartPostfix,
    require_postfix,
)

INTERNAL = "127.0.0.1"
OFFENDER = "127.0.0.5"
OUTSIDER = "127.0.0.6"
OUTSIDE_RCPT = "x@outside.test"
LOCAL_RCPT = "u@local.test"
SENDER = "spammer@outside.test"
CIDR_REASON = "relaywatch decision 7: relay abuse, blocked until 2026-12-02T10:00:00Z"
POLICY_REASON = "relaywatch decision 9: relay abuse, blocked until 2026-12-02T11:00:00Z"
# smtpd writes them through postlogd: they reach maillog_file a moment after the reply
LOG_WAIT = 10.0


def rcpt_reject(client: str, stage: str, reply: str) -> str:
    """The maillog_file line of a refusal, as a regular expression."""
    return (
        rf" postfix/smtpd\[\d+\]: NOQUEUE: reject: {stage} from unknown\[{re.escape(client)}\]: "
        + re.escape(reply)
    )


def assert_delivered(postfix: PostfixInstance, client: str, recipient: str) -> None:
    result = postfix.send(client, SENDER, [recipient])
    assert result.recipients[recipient].code == 250, result
    assert result.data_accepted, result
    # … and discarded: the instance has no transport that leaves the machine
    postfix.wait_for_log(
        rf" postfix/discard\[\d+\]: \w+: to=<{re.escape(recipient)}>, relay=none, .*status=sent",
        LOG_WAIT,
    )


def test_relay_from_outside_is_refused_and_logged(postfix: PostfixInstance) -> None:
    result = postfix.send(OFFENDER, SENDER, [OUTSIDE_RCPT])

    refused = result.recipients[OUTSIDE_RCPT]
    assert (refused.code, refused.text) == (554, f"5.7.1 <{OUTSIDE_RCPT}>: Relay access denied")
    assert result.data is None
    line = postfix.wait_for_log(
        rcpt_reject(OFFENDER, "RCPT", f"554 5.7.1 <{OUTSIDE_RCPT}>: Relay access denied;"),
        LOG_WAIT,
    )
    assert f"from=<{SENDER}> to=<{OUTSIDE_RCPT}> proto=ESMTP helo=<client.outside.test>" in line


def test_internal_client_relays_and_outside_client_reaches_local_domain(
    postfix: PostfixInstance,
) -> None:
    assert_delivered(postfix, INTERNAL, OUTSIDE_RCPT)
    assert_delivered(postfix, OUTSIDER, LOCAL_RCPT)


def test_cidr_table_and_reload_refuse_the_client_at_once(postfix: PostfixInstance) -> None:
    assert_delivered(postfix, INTERNAL, OUTSIDE_RCPT)  # leaves an smtpd to be reused

    started = time.monotonic()
    postfix.write_cidr_table(f"{OFFENDER} REJECT {CIDR_REASON}\n")
    postfix.reload()
    reloaded = time.monotonic()
    result = postfix.send(OFFENDER, SENDER, [OUTSIDE_RCPT, LOCAL_RCPT])
    refused_after = time.monotonic() - started
    print(f"reload {reloaded - started:.3f}s, refused {refused_after:.3f}s after the write")

    expected = f"5.7.1 <unknown[{OFFENDER}]>: Client host rejected: {CIDR_REASON}"
    for recipient in (OUTSIDE_RCPT, LOCAL_RCPT):
        reply = result.recipients[recipient]
        assert (reply.code, reply.text) == (554, expected), result
    assert not result.data_accepted
    postfix.wait_for_log(rcpt_reject(OFFENDER, "RCPT", f"554 {expected};"), LOG_WAIT)
    assert_delivered(postfix, INTERNAL, OUTSIDE_RCPT)
    assert_delivered(postfix, OUTSIDER, LOCAL_RCPT)


def test_a_reused_smtpd_keeps_the_old_cidr_table_until_reload(postfix: PostfixInstance) -> None:
    postfix.send(OFFENDER, SENDER, [OUTSIDE_RCPT])
    postfix.wait_for_log(rf"disconnect from unknown\[{re.escape(OFFENDER)}\]", LOG_WAIT)
    time.sleep(0.2)  # the smtpd tells the master it is free again just after that line

    postfix.write_cidr_table(f"{OFFENDER} REJECT {CIDR_REASON}\n")
    before = postfix.send(OFFENDER, SENDER, [OUTSIDE_RCPT]).recipients[OUTSIDE_RCPT]
    postfix.reload()
    after = postfix.send(OFFENDER, SENDER, [OUTSIDE_RCPT]).recipients[OUTSIDE_RCPT]

    assert before.text.endswith("Relay access denied"), before
    assert after.text.endswith(f"Client host rejected: {CIDR_REASON}"), after


class PolicyServer(socketserver.ThreadingTCPServer):
    """A minimal policy delegation server: REJECT for the offender, DUNNO for anyone else; it
    keeps every request (name=value lines up to an empty line) it was asked."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PolicyHandler)
        self.requests: list[dict[str, str]] = []

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"

    def action(self, request: dict[str, str]) -> str:
        self.requests.append(request)
        return f"REJECT {POLICY_REASON}" if request.get("client_address") == OFFENDER else "DUNNO"


class PolicyHandler(socketserver.StreamRequestHandler):
    server: PolicyServer
    timeout = 10  # smtpd keeps the connection open while it lives; this bounds the thread

    def handle(self) -> None:
        request: dict[str, str] = {}
        try:
            for raw in self.rfile:
                name, _, value = raw.decode().rstrip("\n").partition("=")
                if name:
                    request[name] = value
                    continue
                self.wfile.write(f"action={self.server.action(request)}\n\n".encode())
                request = {}
        except OSError:
            return


@pytest.fixture
def policy_server() -> Iterator[PolicyServer]:
    server = PolicyServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.mark.parametrize(
    ("stage", "delay_reject", "state", "rejected"),
    [
        # smtpd_relay_restrictions: asked per recipient, the reply names the recipient
        ("relay", True, "RCPT", f"<{OUTSIDE_RCPT}>: Recipient address rejected"),
        # smtpd_client_restrictions: asked per client, at RCPT while rejects are delayed …
        ("client", True, "RCPT", f"<unknown[{OFFENDER}]>: Client host rejected"),
        # … and at CONNECT otherwise, where the greeting itself is the refusal
        ("client", False, "CONNECT", f"<unknown[{OFFENDER}]>: Client host rejected"),
    ],
    ids=["relay-restrictions", "client-restrictions-at-rcpt", "client-restrictions-at-connect"],
)
def test_policy_service_refuses_the_client(
    postfix_factory: StartPostfix,
    policy_server: PolicyServer,
    stage: PolicyStage,
    delay_reject: bool,
    state: str,
    rejected: str,
) -> None:
    postfix = postfix_factory(
        Restrictions(
            cidr_table=False,
            policy_service=policy_server.address,
            policy_stage=stage,
            delay_reject=delay_reject,
        )
    )

    result = postfix.send(OFFENDER, SENDER, [OUTSIDE_RCPT])

    expected = f"5.7.1 {rejected}: {POLICY_REASON}"
    reply = result.greeting if state == "CONNECT" else result.recipients[OUTSIDE_RCPT]
    assert reply is not None, result
    assert (reply.code, reply.text) == (554, expected), result
    assert not result.data_accepted
    postfix.wait_for_log(rcpt_reject(OFFENDER, state, f"554 {expected};"), LOG_WAIT)
    asked = [r for r in policy_server.requests if r.get("client_address") == OFFENDER]
    assert [r["protocol_state"] for r in asked] == [state]
    assert_delivered(postfix, INTERNAL, OUTSIDE_RCPT)
    assert_delivered(postfix, OUTSIDER, LOCAL_RCPT)


def test_two_instances_run_side_by_side(postfix_factory: StartPostfix) -> None:
    system_pid = Path("/var/spool/postfix/pid/master.pid")
    system_before = system_pid.read_bytes() if system_pid.exists() else None
    first = postfix_factory()
    second = postfix_factory()

    first.write_cidr_table(f"{OFFENDER} REJECT {CIDR_REASON}\n")
    first.reload()
    refused_by_first = first.send(OFFENDER, SENDER, [LOCAL_RCPT]).recipients[LOCAL_RCPT]
    accepted_by_second = second.send(OFFENDER, SENDER, [LOCAL_RCPT]).recipients[LOCAL_RCPT]

    assert first.port != second.port
    assert refused_by_first.code == 554 and accepted_by_second.code == 250
    first.wait_for_log(rf"Client host rejected: {CIDR_REASON}", LOG_WAIT)
    second.wait_for_log(rf"client=unknown\[{re.escape(OFFENDER)}\]", LOG_WAIT)
    assert not any("Client host rejected" in line for line in second.log_lines())
    pids = {(p.queue_directory / "pid" / "master.pid").read_text().strip() for p in (first, second)}
    assert len(pids) == 2
    assert (system_pid.read_bytes() if system_pid.exists() else None) == system_before
    first.stop()
    assert not first.running() and second.running()
    assert second.send(OUTSIDER, SENDER, [LOCAL_RCPT]).data_accepted


def test_connection_refused_is_a_result_not_an_exception(postfix: PostfixInstance) -> None:
    postfix.stop()

    result = postfix.send(OFFENDER, SENDER, [OUTSIDE_RCPT])

    assert not result.connected and result.recipients == {}
    assert result.error is not None and "ConnectionRefusedError" in result.error


def test_missing_postfix_skips_with_the_reason_or_fails_when_required(tmp_path: Path) -> None:
    with pytest.raises(pytest.skip.Exception, match=re.escape(POSTFIX_MISSING)):
        require_postfix(environ={}, search_path=str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="RELAYWATCH_REQUIRE_POSTFIX=1"):
        require_postfix(environ={"RELAYWATCH_REQUIRE_POSTFIX": "1"}, search_path=str(tmp_path))
