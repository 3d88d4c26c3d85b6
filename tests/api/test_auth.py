"""Tokens: a write token (``Authorization: Bearer``) for every change, a read token as
``X-Api-Key`` for the CrowdSec bouncer endpoints, reads of relaywatch's own endpoints open."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api import auth
from api.main import create_app
from detector.config import ApiToken
from detector.decide import active_decisions, allow, allowlist
from tests.api.enforcement import (
    OTHER_READER,
    READER,
    WRITE_ONLY,
    WRITER,
    api_key,
    assert_problem,
    bearer,
    enforcement_settings,
    stored_block,
)

ALL_TOKENS = (WRITER, READER, OTHER_READER, WRITE_ONLY)


@pytest.fixture
def client(tmp_path: Path, database_url: str, engine: Engine) -> Iterator[TestClient]:
    settings = enforcement_settings(tmp_path, database_url)
    with TestClient(create_app(settings, engine)) as client:
        yield client


@pytest.fixture
def store(engine: Engine) -> dict[str, int]:
    """One block and one allowlist entry for the write endpoints to aim at."""
    now = datetime.now(UTC)
    blocked = stored_block(engine, "203.0.113.7", start=now, duration=timedelta(hours=1))
    with engine.begin() as connection:
        entry, _ = allow(connection, "198.51.100.0/24", "partner", now)
    return {"decision": blocked.id, "entry": entry.id}


def write_requests(ids: dict[str, int]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every write endpoint, with a body it would accept."""
    return [
        ("POST", "/v1/decisions", {"value": "203.0.113.99", "duration": "1h"}),
        ("DELETE", f"/v1/decisions/{ids['decision']}", None),
        ("POST", "/v1/allowlist", {"network": "203.0.113.0/24", "comment": "x"}),
        ("DELETE", f"/v1/allowlist/{ids['entry']}", None),
    ]


WRITES = ["block", "revoke", "allow", "disallow"]


def unchanged(engine: Engine, ids: dict[str, int]) -> bool:
    with engine.connect() as connection:
        decisions = [d.id for d in active_decisions(connection, datetime.now(UTC))]
        entries = [e.id for e in allowlist(connection)]
    return decisions == [ids["decision"]] and entries == [ids["entry"]]


# find_token


def token(name: str, secret: str, *scopes: str) -> ApiToken:
    return ApiToken.model_validate({"name": name, "token": secret, "scopes": list(scopes)})


def test_find_token_compares_with_every_token_even_after_a_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = [token("a", "a" * 16, "read"), token("b", "b" * 16, "read"), token("c", "c" * 20)]
    compared: list[bytes] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(a)
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)  # what api.auth calls
    assert auth.find_token(tokens, "a" * 16) is tokens[0]
    assert len(compared) == 3
    assert auth.find_token(tokens, "c" * 20) is tokens[2]
    assert auth.find_token(tokens, "a" * 15) is None
    assert auth.find_token(tokens, "a" * 16 + "x") is None
    assert auth.find_token(tokens, "") is None
    assert auth.find_token(tokens, "ä" * 16) is None  # not ASCII: no TypeError
    assert len(compared) == 3 * 6


# write endpoints: Authorization: Bearer with the write scope


@pytest.mark.parametrize("which", range(4), ids=WRITES)
def test_a_write_without_a_token_is_401_asking_for_bearer(
    client: TestClient, engine: Engine, store: dict[str, int], which: int
) -> None:
    method, path, body = write_requests(store)[which]
    for headers in ({}, bearer("not-a-configured-token"), {"Authorization": f"Basic {WRITER}"},
                    api_key(WRITER), {"Authorization": "Bearer"}):  # fmt: skip
        response = client.request(method, path, json=body, headers=headers)
        problem = assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        assert problem["error"] == "unauthorized"
        assert WRITER not in response.text
    assert unchanged(engine, store)


@pytest.mark.parametrize("which", range(4), ids=WRITES)
def test_a_write_with_a_read_token_is_403(
    client: TestClient, engine: Engine, store: dict[str, int], which: int
) -> None:
    method, path, body = write_requests(store)[which]
    response = client.request(method, path, json=body, headers=bearer(READER))
    problem = assert_problem(response, 403)
    assert problem["error"] == "forbidden" and "'firewall' has no write scope" in problem["detail"]
    assert "www-authenticate" not in response.headers
    assert unchanged(engine, store)


@pytest.mark.parametrize("which", range(4), ids=WRITES)
def test_a_write_with_the_write_token_is_done(
    client: TestClient, engine: Engine, store: dict[str, int], which: int
) -> None:
    method, path, body = write_requests(store)[which]
    response = client.request(method, path, json=body, headers=bearer(WRITER))
    assert response.status_code in (200, 201), response.text
    assert not unchanged(engine, store)


def test_a_write_only_token_may_write(client: TestClient) -> None:
    response = client.post(
        "/v1/decisions", json={"value": "203.0.113.5"}, headers=bearer(WRITE_ONLY)
    )
    assert response.status_code == 201, response.text


def test_authentication_comes_before_the_body_is_judged(client: TestClient) -> None:
    assert_problem(client.post("/v1/decisions", json={"value": "10.0.0.1"}), 401)
    assert_problem(client.post("/v1/decisions", json={}, headers=bearer(READER)), 403)
    assert_problem(client.delete("/v1/allowlist/abc", headers=bearer(READER)), 403)


# CrowdSec bouncer endpoints: X-Api-Key with the read scope


@pytest.mark.parametrize("path", ["/v1/decisions", "/v1/decisions/stream"])
def test_a_bouncer_without_a_read_key_is_403(client: TestClient, path: str) -> None:
    for headers in ({}, api_key("not-a-configured-token"), api_key(WRITE_ONLY), bearer(READER),
                    api_key(READER[:-1])):  # fmt: skip
        response = client.get(path, params={"startup": "true"}, headers=headers)
        assert_problem(response, 403)
        assert "www-authenticate" not in response.headers


@pytest.mark.parametrize("path", ["/v1/decisions", "/v1/decisions/stream"])
def test_a_bouncer_with_a_read_key_is_answered(client: TestClient, path: str) -> None:
    for key in (READER, WRITER):
        response = client.get(path, params={"startup": "true"}, headers=api_key(key))
        assert response.status_code == 200, response.text


# reads


@pytest.mark.parametrize("path", ["/v1/allowlist", "/v1/blocklist", "/v1/offenders", "/healthz"])
def test_reads_need_no_token(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_tokens_are_never_logged_but_their_names_are(
    client: TestClient, store: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/v1/decisions", json={"value": "203.0.113.8"}, headers=bearer(WRITER))
    client.delete(f"/v1/allowlist/{store['entry']}", headers=bearer(WRITER))
    client.post("/v1/decisions", json={"value": "203.0.113.9"}, headers=bearer(READER))
    client.post("/v1/decisions", json={"value": "203.0.113.9"}, headers=bearer(WRITER + "x"))
    client.get("/v1/decisions/stream", params={"startup": "true"}, headers=api_key(READER))
    logged = caplog.text
    assert "203.0.113.8 blocked until" in logged and "API token 'ops'" in logged
    assert "198.51.100.0/24 removed by API token 'ops'" in logged
    assert not [t for t in ALL_TOKENS if t in logged]
