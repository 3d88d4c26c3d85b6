"""``GET /metrics``: Prometheus' text format, with what the daemon read, what the store holds,
what the sinks did and how long requests took — as the official client parses it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from api.main import create_app
from detector.config import load_settings
from detector.daemon import Status
from detector.decide import NeverBlock, block
from detector.enforce import Enforcer
from detector.ingest import Pipeline, SourceReader
from tests.conftest import config_text
from tests.factories import open_relay, probe, write_log

NOW = datetime.now(UTC).replace(microsecond=0)


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_say_what_was_read_stored_blocked_and_pushed(
    tmp_path: Path, engine: Engine, database_url: str
) -> None:
    lines = [
        *probe(NOW - timedelta(minutes=3), "203.0.113.7", pid=101),
        *probe(NOW - timedelta(minutes=2), "203.0.113.7", rcpt="w@outside.example", pid=102),
        *open_relay(NOW - timedelta(minutes=1), "198.51.100.9", "4F1A2B3C4D"),
        "this line is no mail log line",
    ]
    log = write_log(tmp_path / "mail.log", lines)
    cidr = tmp_path / "relaywatch.cidr"
    config = tmp_path / "relaywatch.toml"
    config.write_text(
        config_text(database_url)
        + f'[[sources]]\npath = "{log}"\nformat = "postfix"\nhost = "mx1"\n'
        f'[[sinks]]\ntype = "postfix-cidr"\npath = "{cidr}"\n'
    )
    settings = load_settings(config, environ={})
    pipeline = Pipeline(settings, engine)
    reader = SourceReader(settings.sources[0], pipeline.classifier)
    status = Status()
    status.readers = [reader]
    status.enforcer = Enforcer(settings)
    try:
        batch = reader.read()
        with engine.begin() as connection:
            pipeline.commit(connection, reader, batch)
            block(connection, "192.0.2.99", duration=timedelta(hours=1), reason="",
                  now=NOW, never_block=NeverBlock([]))  # fmt: skip
        status.enforcer.tick(engine)
        with TestClient(create_app(settings, engine, status)) as client:
            client.get("/v1/offenders")
            client.get("/v1/offenders/203.0.113.7")
            found = samples(client)
    finally:
        reader.close()
        status.enforcer.close()
    source = (("host", "mx1"), ("path", str(log)))
    assert found["relaywatch_source_lines_total", source] == len(lines)
    assert found["relaywatch_source_lines_unparsed_total", source] == 1
    assert found["relaywatch_source_lines_parsed_total", source] == len(lines) - 1
    assert found["relaywatch_source_lag_bytes", source] == 0
    assert found["relaywatch_transactions_total", ()] == 3
    assert found["relaywatch_relay_attempts_total", (("outcome", "refused"),)] == 2
    assert found["relaywatch_relay_attempts_total", (("outcome", "accepted"),)] == 1
    assert found["relaywatch_offenders", ()] == 2
    assert found["relaywatch_active_blocks", ()] == 2  # the open relay client, and by hand
    sink = (("sink", f"postfix-cidr {cidr}"),)
    assert (
        found["relaywatch_sink_pushes_total", sink],
        found["relaywatch_sink_failures_total", sink],
    ) == (1, 0)
    route = (("method", "GET"), ("route", "/v1/offenders/{ip}"))
    assert found["relaywatch_http_request_duration_seconds_count", route] == 1
    assert not any(
        name.startswith("relaywatch_http") and dict(labels).get("route", "").endswith("113.7")
        for name, labels in found
    )


def test_the_api_alone_reports_the_store(engine: Engine, database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "relaywatch.toml"
    config.write_text(config_text(database_url))
    with TestClient(create_app(load_settings(config, environ={}), engine)) as client:
        found = samples(client)
    assert found["relaywatch_transactions_total", ()] == 0
    assert found["relaywatch_active_blocks", ()] == 0
    assert not any(name.startswith("relaywatch_source") for name, _ in found)
