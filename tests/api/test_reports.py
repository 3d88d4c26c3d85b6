"""GET /v1/reports and /v1/reports/{day}: the stored nightly reports, listed with their headline
numbers and served as JSON, text or HTML; a day without one is a 404, a bad day or format 422
(SQLite, and PostgreSQL when ``RELAYWATCH_TEST_DATABASE_URL`` names one)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.main import create_app
from detector.config import Settings, load_settings
from detector.ingest import Pipeline
from detector.report.schedule import build_and_render
from detector.report.stored import mailed, store_report
from tests.report.test_schedule import abuse_log

DAY = date(2026, 12, 1)
BUILT = datetime(2026, 12, 2, 2, 0, 5, tzinfo=UTC)


@pytest.fixture
def client(
    tmp_path: Path, write_config: Callable[..., Path], engine: Engine, database_url: str
) -> Iterator[TestClient]:
    settings: Settings = load_settings(write_config(database_url=database_url), environ={})
    Pipeline(settings, engine).ingest_file(abuse_log(tmp_path, DAY), host="mx1",
                                           log_format="postfix")  # fmt: skip
    build = build_and_render(top=20)
    with engine.begin() as connection:
        for n, day in enumerate((DAY - timedelta(days=1), DAY)):
            rendered = build(connection, day, UTC, BUILT)
            store_report(connection, day.isoformat(), "", rendered, BUILT - timedelta(days=1 - n))
        mailed(connection, "2026-11-30", "", None, "cannot mail through 127.0.0.1:25: refused")
        mailed(connection, "2026-12-01", "", BUILT, None)
    with TestClient(create_app(settings, engine)) as test_client:
        yield test_client


def test_the_list_shows_each_report_newest_first_with_its_headline_and_mailing(
    client: TestClient,
) -> None:
    response = client.get("/v1/reports")
    assert response.status_code == 200
    assert response.json() == {"reports": [
        {"day": "2026-12-01", "host": "", "created_at": "2026-12-02T02:00:05Z",
         "open_relay": True, "accepted_relays": 1, "refused_relays": 6, "relay_attempts": 7,
         "offenders": 2, "new_blocks": response.json()["reports"][0]["new_blocks"],
         "mailed_at": "2026-12-02T02:00:05Z", "mail_error": None,
         "url": "/v1/reports/2026-12-01"},
        {"day": "2026-11-30", "host": "", "created_at": "2026-12-01T02:00:05Z",
         "open_relay": False, "accepted_relays": 0, "refused_relays": 0, "relay_attempts": 0,
         "offenders": 0, "new_blocks": 0, "mailed_at": None,
         "mail_error": "cannot mail through 127.0.0.1:25: refused",
         "url": "/v1/reports/2026-11-30"},
    ]}  # fmt: skip
    assert response.json()["reports"][0]["new_blocks"] >= 1  # the open relay is blocked at once
    older = client.get("/v1/reports", params={"before": "2026-12-01"}).json()["reports"]
    assert [r["day"] for r in older] == ["2026-11-30"]
    assert [r["day"] for r in client.get("/v1/reports?limit=1").json()["reports"]] == ["2026-12-01"]


def test_a_report_is_served_in_the_format_asked_for(client: TestClient) -> None:
    as_json = client.get("/v1/reports/2026-12-01")
    assert as_json.status_code == 200
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json()["headline"]["open_relay"] is True
    assert as_json.json()["period"]["label"] == "2026-12-01"

    text = client.get("/v1/reports/2026-12-01", params={"format": "text"})
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert "198.51.100.23" in text.text and "OPEN RELAY" in text.text.upper()

    html = client.get("/v1/reports/2026-12-01", params={"format": "html", "host": ""})
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert html.headers["content-security-policy"].startswith("default-src 'none'")
    assert html.text.lstrip().lower().startswith("<!doctype html>")
    assert "198.51.100.23" in html.text

    quiet = client.get("/v1/reports/2026-11-30?format=json").json()
    assert quiet["headline"]["refused_relays"] == 0
    assert json.loads(client.get("/v1/reports/2026-11-30").text) == quiet


@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        ("/v1/reports/2026-11-29", 404, "no report stored for 2026-11-29 (all relay hosts)"),
        ("/v1/reports/2026-12-01?host=mx9", 404,
         "no report stored for 2026-12-01 (relay host 'mx9')"),
        ("/v1/reports/2026-13-01", 422, "path.day: '2026-13-01' is not a day (YYYY-MM-DD)"),
        ("/v1/reports/yesterday", 422, None),
        ("/v1/reports/2026-12-01?format=pdf", 422, None),
        ("/v1/reports?before=last-week", 422, None),
        ("/v1/reports?limit=0", 422, None),
    ],
)  # fmt: skip
def test_a_missing_report_is_404_and_a_bad_day_or_format_422_as_problem_json(
    client: TestClient, path: str, status: int, detail: str | None
) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"}
    if detail is not None:
        assert body["detail"] == detail
