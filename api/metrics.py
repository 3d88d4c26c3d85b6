"""``GET /metrics``: what relaywatch does, in Prometheus' text format (the official client).

Most figures are read when Prometheus scrapes, from what already counts them — the daemon's
readers and enforcer (``Status``) and the store — so nothing on the hot paths of reading and
storing changes for them.  Only request latency is measured here, per route (its template,
``/v1/offenders/{ip}``, so that addresses do not make new series).  ``serve`` (the API alone)
has no readers or sinks: it reports what the store says.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from detector.daemon import Status
from detector.store.models import DecisionRow, OffenderRow, TransactionRow


class _Relaywatch(Collector):
    """The figures of the daemon's status and of the store, at each scrape."""

    def __init__(self, engine: Engine, status: Status | None) -> None:
        self.engine = engine
        self.status = status

    def collect(self) -> Iterator[Metric]:
        yield from self._sources()
        yield from self._store()
        yield from self._sinks()

    def _sources(self) -> Iterator[Metric]:
        lines = CounterMetricFamily(
            "relaywatch_source_lines", "Lines read", labels=["host", "path"]
        )
        parsed = CounterMetricFamily(
            "relaywatch_source_lines_parsed", "Lines that gave an event", labels=["host", "path"]
        )
        unparsed = CounterMetricFamily(
            "relaywatch_source_lines_unparsed", "Lines that gave no event", labels=["host", "path"]
        )
        lag = GaugeMetricFamily(
            "relaywatch_source_lag_bytes", "Bytes written, not read yet", labels=["host", "path"]
        )
        for source in self.status.sources() if self.status is not None else []:
            labels = [str(source["host"]), str(source["path"])]
            read, gave = int(source["lines"]), int(source["parsed"])  # type: ignore[call-overload]
            lines.add_metric(labels, read)
            parsed.add_metric(labels, gave)
            unparsed.add_metric(labels, read - gave)
            lag.add_metric(labels, int(source["lag_bytes"]))  # type: ignore[call-overload]
        yield from (lines, parsed, unparsed, lag)

    def _store(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        with self.engine.connect() as connection:
            transactions = connection.execute(
                select(func.count()).select_from(TransactionRow)
            ).scalar_one()
            refused, accepted, offenders = connection.execute(
                select(
                    func.coalesce(func.sum(OffenderRow.refused_relays), 0),
                    func.coalesce(func.sum(OffenderRow.accepted_relays), 0),
                    func.count(),
                )
            ).one()
            blocks = connection.execute(
                select(func.count()).where(
                    DecisionRow.revoked_at.is_(None), DecisionRow.expires_at > now
                )
            ).scalar_one()
        yield CounterMetricFamily("relaywatch_transactions", "Transactions stored", transactions)
        attempts = CounterMetricFamily(
            "relaywatch_relay_attempts", "Relay attempts stored, by outcome", labels=["outcome"]
        )
        attempts.add_metric(["refused"], refused)
        attempts.add_metric(["accepted"], accepted)
        yield attempts
        yield GaugeMetricFamily("relaywatch_offenders", "Clients with relay attempts", offenders)
        yield GaugeMetricFamily("relaywatch_active_blocks", "Blocks in force", blocks)

    def _sinks(self) -> Iterator[Metric]:
        pushes = CounterMetricFamily("relaywatch_sink_pushes", "Syncs of a sink", labels=["sink"])
        failures = CounterMetricFamily(
            "relaywatch_sink_failures", "Syncs of a sink that failed", labels=["sink"]
        )
        enforcer = self.status.enforcer if self.status is not None else None
        for sink in enforcer.sinks if enforcer is not None else []:
            pushes.add_metric([sink.name], enforcer.pushes[sink.name])  # type: ignore[union-attr]
            failures.add_metric([sink.name], enforcer.failures[sink.name])  # type: ignore[union-attr]
        yield from (pushes, failures)


def install(app: FastAPI, engine: Engine, status: Status | None) -> None:
    """Add ``GET /metrics`` and the request latency it reports to ``app``."""
    registry = CollectorRegistry()  # the app's own: several apps in one process never clash
    registry.register(_Relaywatch(engine, status))
    latency = Histogram(
        "relaywatch_http_request_duration_seconds",
        "Time to answer an API request",
        ["method", "route"],
        registry=registry,
    )

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "(no route)")
        latency.labels(request.method, template).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", tags=["health"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics: lines read, parsed and unparsed and lag per source, transactions
        and relay attempts by outcome stored, offenders, blocks in force, sink syncs and
        failures, and API request latency per route."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
