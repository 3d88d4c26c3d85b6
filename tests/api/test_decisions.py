"""Manual blocks, the allowlist and the blocklist over HTTP, on a real store (SQLite, and
PostgreSQL when ``RELAYWATCH_TEST_DATABASE_URL`` names one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, update

from api.main import create_app
from detector.decide import active_decisions, decisions_for
from detector.sinks import BLOCKLIST_FORMATS
from detector.store.models import DecisionRow, PolicyRequestRow
from detector.store.session import open_database
from tests.api.enforcement import (
    OWN_ADDRESS,
    WRITER,
    assert_problem,
    bearer,
    enforcement_settings,
    stored_block,
)

DECISION_KEYS = [
    "id", "value", "scope", "origin", "reason", "created_at", "expires_at", "revoked_at",
    "active", "hits", "last_hit_at", "policy_rejects",
]  # fmt: skip
WRITE = bearer(WRITER)


@pytest.fixture
def client(tmp_path: Path, database_url: str, engine: Engine) -> Iterator[TestClient]:
    settings = enforcement_settings(tmp_path, database_url)
    with TestClient(create_app(settings, engine)) as client:
        yield client


def moment(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def post_block(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/decisions", json=body, headers=WRITE)
    assert response.status_code == 201, response.text
    found: dict[str, Any] = response.json()
    return found


def blocklist_text(client: TestClient) -> list[str]:
    response = client.get("/v1/blocklist", params={"format": "text"})
    assert response.status_code == 200, response.text
    return response.text.splitlines()


# POST /v1/decisions


def test_a_manual_block_lasts_block_duration_and_is_enforced(
    client: TestClient, engine: Engine
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    made = post_block(client, value="203.0.113.7", reason="spam run seen by hand")
    assert list(made) == DECISION_KEYS
    assert made["value"] == "203.0.113.7" and made["scope"] == "ip"
    assert made["origin"] == "manual" and made["reason"] == "spam run seen by hand"
    assert made["active"] is True and made["revoked_at"] is None and made["hits"] == 0
    created, expires = moment(made["created_at"]), moment(made["expires_at"])
    assert before <= created <= datetime.now(UTC)
    assert expires - created == timedelta(hours=2)  # [scoring] block_duration of the settings
    assert blocklist_text(client) == ["203.0.113.7"]
    with engine.connect() as connection:
        assert [d.id for d in decisions_for(connection, "203.0.113.7")] == [made["id"]]


def test_a_range_is_blocked_for_the_duration_asked(client: TestClient) -> None:
    made = post_block(client, value="198.51.100.0/24", duration="30m")
    assert made["scope"] == "range" and made["value"] == "198.51.100.0/24"
    assert moment(made["expires_at"]) - moment(made["created_at"]) == timedelta(minutes=30)
    assert made["reason"] == "blocked by hand"
    assert blocklist_text(client) == ["198.51.100.0/24"]


def test_a_block_is_committed_for_every_other_connection(
    client: TestClient, database_url: str
) -> None:
    made = post_block(client, value="2001:db8::7", duration="1h")
    other = open_database(database_url)  # another pool: sees only what was committed
    try:
        with other.connect() as connection:
            found = active_decisions(connection, datetime.now(UTC))
    finally:
        other.dispose()
    assert [(d.id, d.value, d.scope) for d in found] == [(made["id"], "2001:db8::7", "ip")]


def test_blocking_a_value_again_replaces_its_block(client: TestClient, engine: Engine) -> None:
    first = post_block(client, value="203.0.113.7", duration="1h")
    second = post_block(client, value="203.0.113.7", duration="4h")
    assert second["id"] != first["id"]
    with engine.connect() as connection:
        active = active_decisions(connection, datetime.now(UTC))
        history = decisions_for(connection, "203.0.113.7")
    assert [d.id for d in active] == [second["id"]]
    assert [d.revoked_at is not None for d in history] == [True, False]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("10.1.2.3", "internal network 10.0.0.0/8"),
        ("127.0.0.1", "internal network 127.0.0.1/32"),
        ("10.0.0.0/7", "covers the internal network 10.0.0.0/8"),
        (OWN_ADDRESS, "address of the relay host"),
        ("not-an-address", "is not an IP address or a CIDR range"),
        ("203.0.113.7/24", "is not an IP address or a CIDR range"),  # host bits: a typo?
    ],
)
def test_a_value_never_to_block_is_refused_with_the_reason(
    client: TestClient, engine: Engine, value: str, words: str
) -> None:
    body = assert_problem(client.post("/v1/decisions", json={"value": value}, headers=WRITE), 422)
    assert body["error"] == "refused" and words in body["detail"]
    with engine.connect() as connection:
        assert active_decisions(connection, datetime.now(UTC)) == []


def test_an_allowlisted_address_is_refused(client: TestClient) -> None:
    added = client.post(
        "/v1/allowlist", json={"network": "198.51.100.0/24", "comment": "partner MX"},
        headers=WRITE,
    )  # fmt: skip
    assert added.status_code == 201, added.text
    response = client.post("/v1/decisions", json={"value": "198.51.100.9"}, headers=WRITE)
    body = assert_problem(response, 422)
    assert "allowlist entry 198.51.100.0/24 (partner MX)" in body["detail"]
    assert blocklist_text(client) == []


@pytest.mark.parametrize(
    "body",
    [
        {"value": "203.0.113.7", "duration": "1x"},
        {"value": "203.0.113.7", "duration": "0s"},
        {"value": "203.0.113.7", "duration": "3651d"},
        {"value": "203.0.113.7", "duration": "99999999999999d"},
        {"value": "203.0.113.7", "duration": 3600},
        {"value": "203.0.113.7", "reason": "two\nlines"},
        {"value": ""},
        {"duration": "1h"},
        {"value": "1" * 65},
    ],
)
def test_a_bad_request_body_is_422_and_blocks_nothing(
    client: TestClient, body: dict[str, Any]
) -> None:
    problem = assert_problem(client.post("/v1/decisions", json=body, headers=WRITE), 422)
    assert problem["detail"].startswith("body")
    assert blocklist_text(client) == []


def test_a_body_that_is_not_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/decisions", content=b"value=203.0.113.7",
        headers={**WRITE, "Content-Type": "application/json"},
    )  # fmt: skip
    assert_problem(response, 422)


# DELETE /v1/decisions/{id}


def test_deleting_a_decision_revokes_it_once(client: TestClient) -> None:
    made = post_block(client, value="203.0.113.7")
    kept = post_block(client, value="203.0.113.8")
    response = client.delete(f"/v1/decisions/{made['id']}", headers=WRITE)
    assert response.status_code == 200, response.text
    revoked = response.json()
    assert list(revoked) == DECISION_KEYS
    assert revoked["id"] == made["id"] and revoked["active"] is False
    assert moment(revoked["revoked_at"]) >= moment(made["created_at"])
    assert blocklist_text(client) == [kept["value"]]
    again = assert_problem(client.delete(f"/v1/decisions/{made['id']}", headers=WRITE), 404)
    assert f"no decision {made['id']}" in again["detail"]


def test_deleting_an_expired_or_unknown_decision_is_404(client: TestClient, engine: Engine) -> None:
    now = datetime.now(UTC)
    expired = stored_block(engine, "203.0.113.9", start=now - timedelta(hours=2),
                           duration=timedelta(hours=1))  # fmt: skip
    assert_problem(client.delete(f"/v1/decisions/{expired.id}", headers=WRITE), 404)
    assert_problem(client.delete("/v1/decisions/4711", headers=WRITE), 404)
    assert_problem(client.delete("/v1/decisions/0", headers=WRITE), 422)
    assert_problem(client.delete(f"/v1/decisions/{2**63}", headers=WRITE), 422)
    assert_problem(client.delete("/v1/decisions/abc", headers=WRITE), 422)


def test_a_revoked_decision_says_how_often_it_refused(client: TestClient, engine: Engine) -> None:
    made = post_block(client, value="203.0.113.7")
    last = datetime(2026, 12, 2, 1, 2, 3, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            update(DecisionRow).where(DecisionRow.id == made["id"]).values(hits=3, last_hit_at=last)
        )
        connection.execute(insert(PolicyRequestRow), [
            {"time": 1.0 + n, "protocol_state": "RCPT", "client_ip": "203.0.113.7",
             "action": "REJECT …", "decision_id": made["id"] if n < 2 else None}
            for n in range(3)
        ])  # fmt: skip
    response = client.delete(f"/v1/decisions/{made['id']}", headers=WRITE)
    assert response.status_code == 200
    answer = response.json()
    assert (answer["hits"], answer["last_hit_at"], answer["policy_rejects"]) == (
        3,
        "2026-12-02T01:02:03Z",
        2,
    )


# /v1/allowlist


def test_allowing_a_network_lifts_the_blocks_it_covers(client: TestClient) -> None:
    inside = post_block(client, value="198.51.100.9")
    covering = post_block(client, value="198.51.0.0/16")
    outside = post_block(client, value="203.0.113.7")
    response = client.post(
        "/v1/allowlist", json={"network": "198.51.100.0/24", "comment": "partner MX"},
        headers=WRITE,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    entry = response.json()
    assert entry["network"] == "198.51.100.0/24" and entry["comment"] == "partner MX"
    assert entry["created_at"].endswith("Z")
    assert sorted(entry["revoked_decisions"]) == sorted([inside["id"], covering["id"]])
    assert blocklist_text(client) == [outside["value"]]
    listed = client.get("/v1/allowlist").json()
    assert listed == {"allowlist": [{k: entry[k] for k in ("id", "network", "comment",
                                                            "created_at")}]}  # fmt: skip


def test_allowing_a_network_again_keeps_its_entry_with_the_new_comment(
    client: TestClient,
) -> None:
    first = client.post("/v1/allowlist", json={"network": "2001:db8::/32"}, headers=WRITE)
    assert first.status_code == 201
    again = client.post(
        "/v1/allowlist", json={"network": "2001:db8::/32", "comment": "lab"}, headers=WRITE
    )
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"] and again.json()["comment"] == "lab"
    assert [e["comment"] for e in client.get("/v1/allowlist").json()["allowlist"]] == ["lab"]


def test_removing_an_allowlist_entry_lets_the_network_be_blocked(client: TestClient) -> None:
    entry = client.post("/v1/allowlist", json={"network": "198.51.100.0/24"}, headers=WRITE)
    entry_id = entry.json()["id"]
    assert_problem(client.post("/v1/decisions", json={"value": "198.51.100.9"}, headers=WRITE),
                   422)  # fmt: skip
    removed = client.delete(f"/v1/allowlist/{entry_id}", headers=WRITE)
    assert removed.status_code == 200, removed.text
    assert removed.json()["network"] == "198.51.100.0/24"
    assert client.get("/v1/allowlist").json() == {"allowlist": []}
    post_block(client, value="198.51.100.9")
    assert_problem(client.delete(f"/v1/allowlist/{entry_id}", headers=WRITE), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"network": "198.51.100.0/33"},
        {"network": "partner"},
        {"network": "1.2.3.4", "comment": "a\tb"},
    ],
)
def test_a_bad_allowlist_entry_is_422(client: TestClient, body: dict[str, str]) -> None:
    assert_problem(client.post("/v1/allowlist", json=body, headers=WRITE), 422)
    assert client.get("/v1/allowlist").json() == {"allowlist": []}


# GET /v1/blocklist


def test_the_blocklist_json_is_the_decisions_in_force(client: TestClient, engine: Engine) -> None:
    now = datetime.now(UTC)
    stored_block(engine, "203.0.113.1", start=now - timedelta(hours=2), duration=timedelta(hours=1))
    late = stored_block(engine, "203.0.113.2", start=now - timedelta(hours=2),
                        duration=timedelta(hours=3))  # fmt: skip
    manual = post_block(client, value="198.51.100.0/24")
    response = client.get("/v1/blocklist")  # json is the default
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    found = json.loads(response.text)
    assert [(d["id"], d["value"]) for d in found] == [
        (late.id, "203.0.113.2"), (manual["id"], "198.51.100.0/24")
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", [f for f in BLOCKLIST_FORMATS if f != "json"])
def test_every_blocklist_format_is_text_naming_the_blocked(client: TestClient, fmt: str) -> None:
    post_block(client, value="203.0.113.7")
    response = client.get("/v1/blocklist", params={"format": fmt})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert "203.0.113.7" in response.text


def test_an_unknown_blocklist_format_is_422(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/blocklist", params={"format": "iptables"}), 422)
    assert "format" in body["detail"] and "nft" in body["detail"]


# the schema


def test_openapi_documents_the_shared_decisions_path(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths["/v1/decisions"]) == {"get", "post"}
    assert set(paths["/v1/decisions/{decision_id}"]) == {"delete"}
    assert set(paths["/v1/allowlist"]) == {"get", "post"}
    assert set(paths["/v1/allowlist/{entry_id}"]) == {"delete"}
    assert set(paths["/v1/decisions/stream"]) == {"get"} and "/v1/blocklist" in paths
    for method in ("get", "post"):
        text = paths["/v1/decisions"][method]["description"]
        assert "X-Api-Key" in text and "Bearer" in text
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])
    assert {"401", "403", "422"} <= set(paths["/v1/decisions"]["post"]["responses"])
