"""The HTTP API over a store holding the Postfix 3.7 corpus (SQLite, and PostgreSQL when
``RELAYWATCH_TEST_DATABASE_URL`` names one)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.main import create_app
from detector.config import Settings, load_settings
from detector.ingest import Pipeline
from tests.conftest import POSTFIX_37, corpus_path

OFFENDER_KEYS = [
    "ip", "score", "relay_attempts", "refused_relays", "accepted_relays", "recipients",
    "recipient_domains", "first_seen", "last_seen", "blocked", "blocked_until", "reasons",
]  # fmt: skip
# Ground truth of the corpus (SCENARIOS.txt) with internal network 127.0.0.1/32 and local
# domain example.test: 127.0.0.5 is refused 5 relays and is blocked, 127.0.0.7 and ::1 once.
REFUSED_BY_IP = {"127.0.0.5": 5, "127.0.0.7": 1, "::1": 1}
# The corpus runs 2026-11-30T08:09–08:10Z; of the attempts after 08:10:00Z, two are 127.0.0.5's.
MIDWAY = "2026-11-30T08:10:00Z"
LONG_AGO = "2000-01-01T00:00:00Z"
LATER = "2100-01-01T00:00:00Z"
# Blocks start at the log's time and last 1h by default; these outlive any clock the suite
# runs on, so "blocked" does not depend on the time of day.
LONG_BLOCKS = '[scoring]\nblock_duration = "3650d"\nmax_block_duration = "3650d"\n'


@pytest.fixture
def mail_log() -> Path:
    return corpus_path("postfix", POSTFIX_37.name, "mail.log.rfc3339")


@pytest.fixture
def settings(write_config: Callable[..., Path]) -> Settings:
    """The corpus' network (conftest's settings) with blocks that do not expire today."""
    return load_settings(write_config(LONG_BLOCKS), environ={})


@pytest.fixture
def client(settings: Settings, engine: Engine, mail_log: Path) -> Iterator[TestClient]:
    Pipeline(settings, engine).ingest_file(mail_log, host="vm", log_format="postfix")
    with TestClient(create_app(settings, engine)) as client:
        yield client


def get_json(client: TestClient, path: str, **params: Any) -> Any:
    params = {k: v for k, v in params.items() if v is not None}  # httpx would send "cursor="
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def offenders(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = get_json(client, "/v1/offenders", **params)["offenders"]
    return found


def all_transactions(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    body = get_json(client, "/v1/transactions", limit=1000, **params)
    assert body["next_cursor"] is None
    found: list[dict[str, Any]] = body["transactions"]
    return found


def assert_problem(response: Any, status: int | tuple[int, ...]) -> dict[str, str]:
    """A 4xx with the JSON body ``{"error": …, "detail": …}``."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, str] = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] and body["detail"]
    return body


# health and schema


def test_healthz_says_the_database_answers(client: TestClient) -> None:
    body = get_json(client, "/healthz")
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert isinstance(body["sources"], list)


def test_openapi_lists_the_paths(client: TestClient) -> None:
    paths = get_json(client, "/openapi.json")["paths"]
    assert {"/healthz", "/v1/offenders", "/v1/offenders/{ip}", "/v1/transactions"} <= set(paths)


# GET /v1/offenders


def test_offenders_are_offender_objects_worst_first(client: TestClient) -> None:
    body = get_json(client, "/v1/offenders")
    assert "offenders" in body
    found = body["offenders"]
    for offender in found:
        assert list(offender) == OFFENDER_KEYS
        assert offender["first_seen"].startswith("2026-11-30T08:")
        assert offender["first_seen"].endswith("Z") and offender["last_seen"].endswith("Z")
        assert offender["reasons"]
    assert {o["ip"]: o["refused_relays"] for o in found} == REFUSED_BY_IP
    assert all(o["accepted_relays"] == 0 for o in found)
    assert found[0]["ip"] == "127.0.0.5"
    assert [o["score"] for o in found] == sorted((o["score"] for o in found), reverse=True)
    assert found[0]["blocked"] is True and found[0]["blocked_until"].endswith("Z")
    assert all(o["blocked"] is False and o["blocked_until"] is None for o in found[1:])


def test_offenders_as_csv_have_a_header_row(client: TestClient) -> None:
    response = client.get("/v1/offenders", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == OFFENDER_KEYS
    assert [row[0] for row in rows[1:]] == [o["ip"] for o in offenders(client)]


def test_offenders_as_text_are_one_ip_per_line(client: TestClient) -> None:
    response = client.get("/v1/offenders", params={"format": "text"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.splitlines() == [o["ip"] for o in offenders(client)]
    assert response.text.endswith("\n")


def test_offenders_blocked_filter(client: TestClient) -> None:
    everyone = [o["ip"] for o in offenders(client)]
    blocked = offenders(client, blocked="true")
    not_blocked = offenders(client, blocked="false")
    assert [o["ip"] for o in blocked] == ["127.0.0.5"]
    assert all(o["blocked"] for o in blocked)
    assert [o["ip"] for o in not_blocked] == [ip for ip in everyone if ip != "127.0.0.5"]
    assert not any(o["blocked"] for o in not_blocked)


def test_offenders_since_counts_only_later_attempts(client: TestClient) -> None:
    found = offenders(client, since=MIDWAY)
    assert [(o["ip"], o["refused_relays"]) for o in found] == [("127.0.0.5", 2)]
    assert found[0]["first_seen"] >= MIDWAY
    assert list(found[0]) == OFFENDER_KEYS


def test_offenders_since_long_ago_counts_everything(client: TestClient) -> None:
    found = offenders(client, since=LONG_AGO)
    assert {o["ip"]: o["refused_relays"] for o in found} == REFUSED_BY_IP
    everything = {o["ip"]: o["relay_attempts"] for o in offenders(client)}
    assert {o["ip"]: o["relay_attempts"] for o in found} == everything


def test_offenders_since_a_later_time_is_empty(client: TestClient) -> None:
    assert offenders(client, since=LATER) == []


def test_offenders_since_accepts_a_time_with_an_offset(client: TestClient) -> None:
    assert offenders(client, since="2026-11-30T10:10:00+02:00") == offenders(client, since=MIDWAY)


def test_offenders_since_a_duration_is_accepted(client: TestClient) -> None:
    found = offenders(client, since="1h")  # what it holds depends on the clock; its shape not
    assert all(list(o) == OFFENDER_KEYS for o in found)
    assert {o["ip"] for o in found} <= set(REFUSED_BY_IP)


@pytest.mark.parametrize("since", [None, LONG_AGO], ids=["all", "since"])
def test_offenders_pages_follow_next_cursor_to_the_end(
    client: TestClient, since: str | None
) -> None:
    params = {} if since is None else {"since": since}
    expected = [o["ip"] for o in offenders(client, **params)]
    seen: list[str] = []
    cursor = None
    for _ in range(len(expected) + 1):
        body = get_json(client, "/v1/offenders", limit=1, cursor=cursor, **params)
        assert len(body["offenders"]) <= 1
        seen += [o["ip"] for o in body["offenders"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert cursor is None
    assert seen == expected
    assert len(set(seen)) == len(seen) == len(REFUSED_BY_IP)


def test_offenders_text_pages_carry_the_cursor_in_a_header(client: TestClient) -> None:
    response = client.get("/v1/offenders", params={"format": "text", "limit": 1})
    assert response.text.splitlines() == ["127.0.0.5"]
    cursor = response.headers["x-next-cursor"]
    following = client.get("/v1/offenders", params={"format": "text", "cursor": cursor})
    assert following.text.splitlines() == [o["ip"] for o in offenders(client)][1:]


@pytest.mark.parametrize(
    "cursor",
    ["%%%not-base64%%%", "bm90IGEgY3Vyc29y", "YWJjfDEyNy4wLjAuNQ", "x"],
    ids=["garbage", "no-separator", "score-not-a-number", "one-char"],
)
def test_offenders_invalid_cursor_is_400(client: TestClient, cursor: str) -> None:
    assert_problem(client.get("/v1/offenders", params={"cursor": cursor}), 400)


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": -1}, {"limit": "many"}, {"format": "xml"}, {"blocked": "perhaps"},
     {"since": "yesterday-ish"}, {"since": "10x"}],
    ids=["limit-0", "limit-negative", "limit-word", "format", "blocked", "since-word",
         "since-unit"],
)  # fmt: skip
def test_offenders_bad_parameters_are_4xx_with_a_message(
    client: TestClient, params: dict[str, Any]
) -> None:
    assert_problem(client.get("/v1/offenders", params=params), (400, 422))


# GET /v1/offenders/{ip}


def test_offender_detail_has_decisions_and_transactions_with_log_lines(
    client: TestClient, mail_log: Path
) -> None:
    body = get_json(client, "/v1/offenders/127.0.0.5")
    listed = next(o for o in offenders(client) if o["ip"] == "127.0.0.5")
    assert {k: body[k] for k in OFFENDER_KEYS} == listed
    assert [(d["value"], d["origin"], d["active"]) for d in body["decisions"]] == [
        ("127.0.0.5", "auto", True)
    ]
    original = set(mail_log.read_text().splitlines())
    transactions = body["transactions"]
    assert transactions
    denied = []
    for txn in transactions:
        assert txn["client_ip"] == "127.0.0.5"
        assert txn["lines"], txn
        assert set(txn["lines"]) <= original  # the lines as they were logged
        denied += [line for line in txn["lines"] if "Relay access denied" in line]
    assert len(denied) == REFUSED_BY_IP["127.0.0.5"]


def test_offender_detail_of_an_ipv6_client(client: TestClient) -> None:
    body = get_json(client, "/v1/offenders/::1")
    assert body["ip"] == "::1" and body["refused_relays"] == 1
    assert body["decisions"] == []
    assert any("Relay access denied" in line for t in body["transactions"] for line in t["lines"])


def test_offender_detail_accepts_any_spelling_of_an_address(client: TestClient) -> None:
    assert get_json(client, "/v1/offenders/0:0:0:0:0:0:0:1")["ip"] == "::1"


def test_offender_detail_of_an_unknown_ip_is_404(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/offenders/198.51.100.1"), 404)
    assert "198.51.100.1" in body["detail"]


def test_offender_detail_of_something_not_an_ip_is_400(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/offenders/not-an-ip"), 400)
    assert "not-an-ip" in body["detail"]


# GET /v1/transactions


def test_transactions_are_newest_first_with_their_recipients(client: TestClient) -> None:
    found = all_transactions(client)
    assert found
    assert [t["started_at"] for t in found] == sorted((t["started_at"] for t in found),
                                                      reverse=True)  # fmt: skip
    assert len({t["id"] for t in found}) == len(found)
    assert all(t["host"] == "vm" for t in found)
    refused = sum(t["refused_relays"] for t in found)
    assert refused == sum(REFUSED_BY_IP.values())
    assert sum(t["accepted_relays"] for t in found) == 0


def test_transactions_filtered_by_client_ip(client: TestClient) -> None:
    found = all_transactions(client, client_ip="127.0.0.5")
    expected = [t for t in all_transactions(client) if t["client_ip"] == "127.0.0.5"]
    assert found == expected
    assert sum(t["refused_relays"] for t in found) == REFUSED_BY_IP["127.0.0.5"]


@pytest.mark.parametrize("direction", ["ext→ext", "ext->ext"])
def test_transactions_filtered_by_direction(client: TestClient, direction: str) -> None:
    found = all_transactions(client, direction=direction)
    expected = [
        t for t in all_transactions(client)
        if any(r["direction"] == "ext→ext" for r in t["recipients"])
    ]  # fmt: skip
    assert found == expected
    # a relay attempt is an ext→ext recipient: the corpus has one per refused relay
    outside_to_outside = [r for t in found for r in t["recipients"] if r["direction"] == "ext→ext"]
    assert len(outside_to_outside) == sum(REFUSED_BY_IP.values())
    assert {t["client_ip"] for t in found} == set(REFUSED_BY_IP)


def test_transactions_direction_spellings_agree(client: TestClient) -> None:
    for arrow, ascii_arrow in [("int→ext", "int->ext"), ("ext→int", "ext->int")]:
        assert all_transactions(client, direction=arrow) == all_transactions(
            client, direction=ascii_arrow
        )


def test_transactions_since(client: TestClient) -> None:
    found = all_transactions(client, since=MIDWAY)
    expected = [t for t in all_transactions(client) if t["started_at"] >= MIDWAY]
    assert found == expected
    assert 0 < len(found) < len(all_transactions(client))
    assert all_transactions(client, since=LONG_AGO) == all_transactions(client)
    assert all_transactions(client, since=LATER) == []


def test_transactions_since_accepts_a_time_with_an_offset(client: TestClient) -> None:
    with_offset = all_transactions(client, since="2026-11-30T10:10:00+02:00")
    assert with_offset == all_transactions(client, since=MIDWAY)


@pytest.mark.parametrize("limit", [1, 2, 5])
@pytest.mark.parametrize(
    "filters",
    [{}, {"client_ip": "127.0.0.5"}, {"direction": "ext->ext"}, {"since": MIDWAY}],
    ids=["all", "client_ip", "direction", "since"],
)
def test_transactions_pages_walk_the_whole_list(
    client: TestClient, limit: int, filters: dict[str, str]
) -> None:
    expected = all_transactions(client, **filters)
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(len(expected) + 1):
        body = get_json(client, "/v1/transactions", limit=limit, cursor=cursor, **filters)
        assert len(body["transactions"]) <= limit
        seen += body["transactions"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert cursor is None
    assert [t["id"] for t in seen] == [t["id"] for t in expected]  # same order, no duplicates
    assert seen == expected


@pytest.mark.parametrize(
    "params",
    [{"direction": "sideways"}, {"direction": "ext=>ext"}, {"limit": 0}, {"limit": 1001},
     {"limit": "all"}, {"since": "whenever"}, {"cursor": "%%%"}, {"cursor": "bm90IGEgY3Vyc29y"}],
    ids=["direction-word", "direction-arrow", "limit-0", "limit-too-big", "limit-word",
         "since", "cursor-garbage", "cursor-no-separator"],
)  # fmt: skip
def test_transactions_bad_parameters_are_4xx_with_a_message(
    client: TestClient, params: dict[str, Any]
) -> None:
    assert_problem(client.get("/v1/transactions", params=params), (400, 422))


def test_transactions_bad_direction_says_which_are_allowed(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/transactions", params={"direction": "up"}), 400)
    assert "ext→ext" in body["detail"]
