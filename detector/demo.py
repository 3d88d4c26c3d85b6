"""``relaywatch demo``: the main job on a generated sample, with nothing to configure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from detector.config import Settings, load_settings
from detector.ingest import Pipeline
from detector.render import render_offenders
from detector.simulate import write_log
from detector.store.queries import list_offenders
from detector.store.session import open_database

DEMO_CONFIG = """\
# relaywatch demo configuration (see README.md, "Configuration")
[network]
internal_networks = ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]
local_domains = ["example.test", ".example.test"]

[database]
url = "sqlite:///{database}"

[[sources]]
path = "{log}"
format = "postfix"
host = "mx1"

[api]
listen = "{listen}"
"""


def prepare_demo(directory: Path, lines: int, listen: str) -> tuple[Settings, str, str]:
    """Write a sample log and a configuration into ``directory``, ingest, list offenders."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "mail.log"
    database = directory / "relaywatch.db"
    for stale in (database, database.with_suffix(".db-wal"), database.with_suffix(".db-shm")):
        stale.unlink(missing_ok=True)
    # the sample ends about now, so the blocks it earns are still in force
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    truth = write_log(log, lines, seed=2026, start=start, host="mx1", open_relay_clients=1)
    config = directory / "relaywatch.toml"
    config.write_text(DEMO_CONFIG.format(database=database, log=log, listen=listen))
    settings = load_settings(config, environ={})
    engine = open_database(settings.database.url)
    summary = Pipeline(settings, engine).ingest_file(log, host="mx1", log_format="postfix")
    with engine.connect() as connection:
        found = list_offenders(connection, datetime.now(UTC))
    engine.dispose()
    counts = summary.as_dict()
    text = (
        f"relaywatch demo: generated {log} ({truth.lines} lines of Postfix traffic from mx1)\n"
        f"configuration: {config}\n"
        f"ingested: {counts['transactions']} transactions, {counts['refused_relays']} refused "
        f"and {counts['accepted_relays']} accepted relay attempts, {counts['blocks']} blocks\n"
        + (
            f"OPEN RELAY: the server accepted {counts['accepted_relays']} relays for outside "
            "clients (the offenders with ACCEPTED > 0)\n"
            if counts["accepted_relays"]
            else ""
        )
        + f"\noffenders ({len(found)}):"
    )
    return settings, text, render_offenders(found, "table")
