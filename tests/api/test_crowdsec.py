"""The CrowdSec-compatible bouncer API: its answers have the shapes of CrowdSec's Local API
(shared/reference/enforcement.md §1.2-§1.4), and a bouncer pulling the stream as CrowdSec's
do holds exactly the decisions in force after every pull."""

from __future__ import annotations

import ipaddress
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert

from api.main import create_app
from api.routes.crowdsec import go_duration
from detector.config import Settings
from detector.decide import active_decisions
from detector.store.models import DecisionRow
from tests.api.enforcement import (
    OTHER_READER,
    READER,
    WRITER,
    api_key,
    assert_problem,
    bearer,
    enforcement_settings,
    stored_block,
)

HOUR = timedelta(hours=1)
# swagger Decision: required origin, type, scope, value, duration, scenario; also id, uuid,
# until, simulated
REQUIRED_TEXT = ("origin", "type", "scope", "value", "duration", "scenario")
DECISION_FIELDS = {*REQUIRED_TEXT, "id", "uuid", "until", "simulated"}
GO_DURATION = re.compile(r"(-)?(?:(\d+)h)?(?:(\d+)m)?(\d+(?:\.\d+)?)s")


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return enforcement_settings(tmp_path, database_url)


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine)) as client:
        yield client


def go_seconds(text: str) -> float:
    """A Go ``time.Duration`` string in seconds, as a bouncer reads it."""
    found = GO_DURATION.fullmatch(text)
    assert found, f"{text!r} is not a Go duration"
    sign, hours, minutes, seconds = found.groups()
    total = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds)
    return -total if sign else total


def assert_crowdsec_decision(decision: dict[str, Any]) -> None:
    """One decision of CrowdSec's swagger ``Decision`` shape, as relaywatch fills it."""
    assert set(decision) == DECISION_FIELDS, decision
    for field in REQUIRED_TEXT:
        assert isinstance(decision[field], str) and decision[field], (field, decision)
    assert isinstance(decision["id"], int) and not isinstance(decision["id"], bool)
    assert decision["origin"] == "relaywatch" and decision["type"] == "ban"
    assert decision["scope"] in ("Ip", "Range")
    network = ipaddress.ip_network(decision["value"])
    single = network.prefixlen == network.max_prefixlen
    assert single == (decision["scope"] == "Ip") == ("/" not in decision["value"])
    go_seconds(decision["duration"])
    assert decision["until"].endswith("Z")
    datetime.fromisoformat(decision["until"].replace("Z", "+00:00"))
    uuid.UUID(decision["uuid"])
    assert decision["simulated"] is False


def assert_stream(body: Any) -> None:
    """CrowdSec's ``DecisionsStreamResponse``: ``new`` and ``deleted``, each a list or null;
    the new ones last a while, the deleted ones have ended (a negative duration)."""
    assert isinstance(body, dict) and set(body) == {"new", "deleted"}
    for part in ("new", "deleted"):
        assert body[part] is None or (isinstance(body[part], list) and body[part]), body
        for decision in body[part] or []:
            assert_crowdsec_decision(decision)
            assert (go_seconds(decision["duration"]) > 0) == (part == "new"), decision


def stream(client: TestClient, startup: bool, key: str = READER, **params: str) -> Any:
    response = client.get(
        "/v1/decisions/stream", params={"startup": str(startup).lower(), **params},
        headers=api_key(key),
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert_stream(body)
    return body


def ids(decisions: list[dict[str, Any]] | None) -> set[int]:
    return {d["id"] for d in decisions or []}


class Bouncer:
    """A stream-mode bouncer as CrowdSec's are (cs-firewall-bouncer, lua-cs-bouncer): first
    ``startup=true``, then ``startup=false``; it applies ``deleted`` before ``new`` and holds
    one entry per scope and value."""

    def __init__(self, client: TestClient, key: str = READER) -> None:
        self.client = client
        self.key = key
        self.started = False
        self.held: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted_unheld: list[int] = []  # after startup: deletions of what it never held

    def pull(self) -> Any:
        body = stream(self.client, not self.started, self.key)
        for decision in body["deleted"] or []:
            entry = (decision["scope"].lower(), decision["value"])
            if entry not in self.held:
                self.deleted_unheld += [decision["id"]] if self.started else []
            else:
                assert self.held[entry]["id"] == decision["id"], decision
            self.held.pop(entry, None)
        for decision in body["new"] or []:
            self.held[(decision["scope"].lower(), decision["value"])] = decision
        self.started = True
        return body

    def holds(self) -> dict[tuple[str, str], int]:
        return {entry: decision["id"] for entry, decision in self.held.items()}


def in_force(engine: Engine) -> dict[tuple[str, str], int]:
    """What a firewall must hold now: per scope and value, the decision in force that ends
    last (user decisions are no firewall's)."""
    with engine.connect() as connection:
        found = active_decisions(connection, datetime.now(UTC))
    kept: dict[tuple[str, str], Any] = {}
    for decision in found:
        entry = (decision.scope, decision.value)
        if decision.scope != "user" and (
            entry not in kept or decision.expires_at > kept[entry].expires_at
        ):
            kept[entry] = decision
    return {entry: decision.id for entry, decision in kept.items()}


def block(client: TestClient, value: str, duration: str = "1h") -> int:
    response = client.post(
        "/v1/decisions", json={"value": value, "duration": duration}, headers=bearer(WRITER)
    )
    assert response.status_code == 201, response.text
    made: int = response.json()["id"]
    return made


def revoke(client: TestClient, decision_id: int) -> str:
    """Revoke a decision by hand; the time it was revoked."""
    response = client.delete(f"/v1/decisions/{decision_id}", headers=bearer(WRITER))
    assert response.status_code == 200, response.text
    revoked_at: str = response.json()["revoked_at"]
    return revoked_at


def user_decision(engine: Engine, now: datetime) -> None:
    """A decision on a SASL user: a scope no firewall enforces."""
    with engine.begin() as connection:
        connection.execute(
            insert(DecisionRow).values(
                value="alice@example.test", scope="user", origin="auto", reason="spam",
                evidence="{}", created_at=now, expires_at=now + HOUR, duration_seconds=3600,
            )
        )  # fmt: skip


# Go durations


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "1s"), (45, "45s"), (60, "1m0s"), (61, "1m1s"), (3600, "1h0m0s"),
        (13917, "3h51m57s"), (172800, "48h0m0s"), (-1, "-1s"), (-68033103, "-18898h5m3s"),
    ],
)  # fmt: skip
def test_durations_are_written_as_go_writes_them(seconds: int, text: str) -> None:
    assert go_duration(seconds) == text
    assert go_seconds(text) == seconds


# stream mode


def test_startup_sends_every_decision_in_force_and_the_recently_ended(
    client: TestClient, engine: Engine
) -> None:
    now = datetime.now(UTC)
    late = stored_block(engine, "203.0.113.1", start=now - timedelta(minutes=10), duration=HOUR)
    manual_range = block(client, "198.51.100.0/24", "2h")
    revoked = block(client, "203.0.113.2")
    revoke(client, revoked)
    expired = stored_block(engine, "203.0.113.3", start=now - HOUR, duration=timedelta(minutes=50))
    stored_block(engine, "203.0.113.4", start=now - timedelta(days=3), duration=HOUR)  # long ago
    replaced = block(client, "203.0.113.5")
    again = block(client, "203.0.113.5", "3h")  # revokes the first: the value stays blocked
    user_decision(engine, now)

    body = stream(client, True)
    assert ids(body["new"]) == {late.id, manual_range, again}
    assert ids(body["deleted"]) == {revoked, expired.id}
    assert replaced not in ids(body["deleted"])
    new = {d["id"]: d for d in body["new"]}
    assert new[manual_range]["scope"] == "Range" and new[late.id]["scope"] == "Ip"
    assert new[late.id]["scenario"] == "5 refused relay attempts in 10m"
    assert 49 * 60 <= go_seconds(new[late.id]["duration"]) <= 50 * 60
    assert 3 * 3600 - 60 <= go_seconds(new[again]["duration"]) <= 3 * 3600
    deleted = {d["id"]: d for d in body["deleted"]}
    assert -11 * 60 <= go_seconds(deleted[expired.id]["duration"]) <= -9 * 60
    assert stream(client, False) == {"new": None, "deleted": None}


def test_a_bouncer_converges_while_decisions_come_and_go(
    client: TestClient, engine: Engine
) -> None:
    now = datetime.now(UTC)
    kept = block(client, "203.0.113.10", "2h")
    lifted = block(client, "203.0.113.11")
    partner = block(client, "198.51.100.0/25")
    bouncer = Bouncer(client)
    steps = []

    def pulled(step: str) -> Any:
        body = bouncer.pull()
        assert bouncer.holds() == in_force(engine), step
        steps.append(step)
        return body

    body = pulled("startup")
    assert ids(body["new"]) == {kept, lifted, partner}

    added = block(client, "2001:db8::/64")
    body = pulled("a block made by hand")
    assert ids(body["new"]) == {added} and body["deleted"] is None

    revoked_at = revoke(client, lifted)
    body = pulled("a block revoked")
    assert body["new"] is None and ids(body["deleted"]) == {lifted}
    assert body["deleted"][0]["until"] == revoked_at

    renewed = block(client, "203.0.113.10", "4h")
    body = pulled("a block replaced by a longer one")
    assert ids(body["deleted"]) == {kept} and ids(body["new"]) == {renewed}

    stored_block(engine, "203.0.113.10", start=now, duration=HOUR)
    body = pulled("a newer block of one value that ends sooner")
    assert body == {"new": None, "deleted": None}

    late = stored_block(engine, "203.0.113.12", start=now - 2 * HOUR, duration=3 * HOUR)
    body = pulled("a block from a log read late, starting in the past")
    assert ids(body["new"]) == {late.id}

    longer = stored_block(engine, "203.0.113.12", start=now, duration=5 * HOUR)
    body = pulled("a second block of one value, ending later")
    assert ids(body["deleted"]) == {late.id} and ids(body["new"]) == {longer.id}
    revoke(client, longer.id)
    body = pulled("the later one revoked: the earlier one holds again")
    assert ids(body["deleted"]) == {longer.id} and ids(body["new"]) == {late.id}

    response = client.post(
        "/v1/allowlist", json={"network": "198.51.100.0/24"}, headers=bearer(WRITER)
    )
    assert response.json()["revoked_decisions"] == [partner]
    body = pulled("a network allowed")
    assert ids(body["deleted"]) == {partner} and body["new"] is None

    short = stored_block(engine, "203.0.113.13", start=datetime.now(UTC),
                         duration=timedelta(seconds=2))  # fmt: skip
    body = pulled("a short block")
    assert ids(body["new"]) == {short.id}
    time.sleep(max(0.0, (short.expires_at - datetime.now(UTC)).total_seconds()) + 0.1)
    body = pulled("the short block expired")
    assert ids(body["deleted"]) == {short.id} and body["new"] is None

    body = pulled("nothing changed")
    assert body == {"new": None, "deleted": None}
    assert bouncer.deleted_unheld == []
    assert set(bouncer.holds()) == {
        ("ip", "203.0.113.10"), ("range", "2001:db8::/64"), ("ip", "203.0.113.12")
    }  # fmt: skip


def test_each_key_has_its_own_stream(client: TestClient) -> None:
    first = block(client, "203.0.113.20")
    early = Bouncer(client, READER)
    early.pull()
    second = block(client, "203.0.113.21")
    late = Bouncer(client, OTHER_READER)
    assert ids(late.pull()["new"]) == {first, second}
    assert ids(early.pull()["new"]) == {second}
    assert early.holds() == late.holds()


def test_after_a_restart_a_bouncer_gets_everything_again(
    settings: Settings, engine: Engine
) -> None:
    with TestClient(create_app(settings, engine)) as client:
        made = block(client, "203.0.113.30")
        gone = block(client, "203.0.113.31")
        revoke(client, gone)
        bouncer = Bouncer(client)
        bouncer.pull()
        assert bouncer.pull() == {"new": None, "deleted": None}
    with TestClient(create_app(settings, engine)) as restarted:
        bouncer.client = restarted  # the bouncer goes on with startup=false
        body = bouncer.pull()
    assert ids(body["new"]) == {made} and ids(body["deleted"]) == {gone}
    assert bouncer.holds() == in_force(engine) and bouncer.deleted_unheld == [gone]


def test_startup_again_starts_the_key_over(client: TestClient) -> None:
    made = block(client, "203.0.113.40")
    assert ids(stream(client, True)["new"]) == {made}
    assert ids(stream(client, True)["new"]) == {made}
    assert stream(client, False) == {"new": None, "deleted": None}


def test_stream_filters_as_crowdsec_does(client: TestClient) -> None:
    address = block(client, "203.0.113.50")
    network = block(client, "198.51.100.0/24")
    assert ids(stream(client, True, scopes="ip")["new"]) == {address}
    assert ids(stream(client, True, scopes="Range")["new"]) == {network}
    assert ids(stream(client, True, scopes="ip,range")["new"]) == {address, network}
    assert stream(client, True, scopes="country")["new"] is None
    assert ids(stream(client, True, origins="crowdsec,relaywatch")["new"]) == {address, network}
    assert stream(client, True, origins="crowdsec,cscli")["new"] is None
    assert ids(stream(client, True, scenarios_containing="BY HAND")["new"]) == {address, network}
    assert stream(client, True, scenarios_not_containing="hand")["new"] is None


def test_user_decisions_are_not_for_bouncers(client: TestClient, engine: Engine) -> None:
    user_decision(engine, datetime.now(UTC))
    assert stream(client, True) == {"new": None, "deleted": None}
    response = client.get("/v1/decisions", headers=api_key(READER))
    assert response.status_code == 200 and response.text == "null"


def test_a_dry_run_shows_bouncers_only_simulated_decisions(
    tmp_path: Path, database_url: str, engine: Engine
) -> None:
    settings = enforcement_settings(tmp_path, database_url, "[enforcement]\ndry_run = true\n")
    with TestClient(create_app(settings, engine)) as client:
        made = block(client, "203.0.113.60")
        assert stream(client, True) == {"new": None, "deleted": None}
        response = client.get("/v1/decisions", params={"ip": "203.0.113.60"},
                              headers=api_key(READER))  # fmt: skip
        assert response.text == "null"
        body = client.get(
            "/v1/decisions/stream", params={"startup": "true", "simulated": "true"},
            headers=api_key(READER),
        ).json()  # fmt: skip
    assert ids(body["new"]) == {made} and body["new"][0]["simulated"] is True


# query (live) mode


def query(client: TestClient, **params: str) -> Any:
    response = client.get("/v1/decisions", params=params, headers=api_key(READER))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body is None or (isinstance(body, list) and body)
    for decision in body or []:
        assert_crowdsec_decision(decision)
        assert go_seconds(decision["duration"]) > 0
    return body


def test_query_mode_finds_an_address_and_the_range_around_it(
    client: TestClient, engine: Engine
) -> None:
    now = datetime.now(UTC)
    address = block(client, "198.51.100.7", "30m")
    network = block(client, "198.51.100.0/24")
    other = block(client, "2001:db8::7")
    revoked = block(client, "203.0.113.70")
    revoke(client, revoked)
    stored_block(engine, "203.0.113.71", start=now - 2 * HOUR, duration=HOUR)  # expired

    assert ids(query(client, ip="198.51.100.7")) == {address, network}
    assert ids(query(client, ip="198.51.100.8")) == {network}
    assert ids(query(client, ip="::ffff:198.51.100.8")) == {network}
    assert ids(query(client, ip="2001:db8::7")) == {other}
    for free in ("203.0.113.70", "203.0.113.71", "192.0.2.1", "2001:db8::8"):
        response = client.get("/v1/decisions", params={"ip": free}, headers=api_key(READER))
        assert response.status_code == 200 and response.text == "null"
    found = query(client, ip="198.51.100.7", scope="ip")
    assert ids(found) == {address}
    assert 29 * 60 <= go_seconds(found[0]["duration"]) <= 30 * 60
    assert ids(query(client, range="198.51.100.0/28")) == {network}
    assert ids(query(client, range="198.51.0.0/16", contains="false")) == {address, network}
    assert query(client, range="198.51.0.0/16") is None


def test_query_mode_by_scope_value_and_type(client: TestClient) -> None:
    address = block(client, "203.0.113.80")
    network = block(client, "198.51.100.0/24")
    assert ids(query(client)) == {address, network}
    assert ids(query(client, scope="Ip", value="203.0.113.80")) == {address}
    assert ids(query(client, value="203.0.113.80/32")) == {address}
    assert ids(query(client, scope="range", value="198.51.100.0/24")) == {network}
    assert query(client, scope="ip", value="198.51.100.0/24") is None
    assert query(client, value="198.51.100.1") is None  # value is exact; ip= looks inside
    assert ids(query(client, type="ban")) == {address, network}
    assert query(client, type="captcha") is None


def test_query_mode_refuses_an_address_that_is_none(client: TestClient) -> None:
    for params in ({"ip": "not-an-ip"}, {"range": "198.51.100.0/33"}):
        response = client.get("/v1/decisions", params=params, headers=api_key(READER))
        assert "not an IP address" in assert_problem(response, 400)["detail"]
