"""``relaywatch demo``: the daemon following a simulated relay host, with nothing to configure.

A simulated Postfix host appends ordinary mail and a relay-abuse wave (a few outside clients
probing, one it wrongly relays for) to a log in the demo directory as the seconds pass;
``relaywatch run`` follows that log into a SQLite file and serves the API.  After a few seconds
the offenders found so far are printed; the API keeps answering until Ctrl-C.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from detector.config import Settings, load_settings
from detector.daemon import Daemon
from detector.render import render_offenders
from detector.simulate import GroundTruth, append_live
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

[[sinks]]                     # the blocks, as a Postfix check_client_access cidr: table
type = "postfix-cidr"
path = "{table}"
"""

SESSION_RATE = 20.0  # SMTP sessions a second on the simulated host
ABUSE_SHARE = 0.3  # share of them that are relay abuse: offenders show up within seconds
SHOW_AFTER = 8.0  # seconds before the offenders found so far are printed


def prepare_demo(directory: Path, listen: str) -> tuple[Path, Settings]:
    """A fresh demo directory: configuration, empty log directory, no database."""
    directory = directory.resolve()
    (directory / "log").mkdir(parents=True, exist_ok=True)
    log = directory / "log" / "mail.log"
    log.unlink(missing_ok=True)
    for rotated in log.parent.glob("mail.log.*"):
        rotated.unlink()
    database = directory / "relaywatch.db"
    for stale in (database, database.with_suffix(".db-wal"), database.with_suffix(".db-shm")):
        stale.unlink(missing_ok=True)
    config = directory / "relaywatch.toml"
    table = directory / "relaywatch.cidr"
    table.unlink(missing_ok=True)
    config.write_text(DEMO_CONFIG.format(database=database, log=log, listen=listen, table=table))
    return config, load_settings(config, environ={})


def offenders_table(settings: Settings) -> str:
    engine = open_database(settings.database.url)
    try:
        with engine.connect() as connection:
            found = list_offenders(connection, datetime.now(UTC))
    finally:
        engine.dispose()
    return f"offenders so far ({len(found)}):\n" + render_offenders(found, "table")


def run_demo(
    directory: Path, listen: str, say: Callable[[str], None], seconds: float | None = None
) -> GroundTruth:
    """Run the simulated host and the daemon until Ctrl-C (or ``seconds``); what was written."""
    config, settings = prepare_demo(directory, listen)
    log = settings.sources[0].path
    stop = threading.Event()
    truth = GroundTruth()
    writer = threading.Thread(
        target=append_live, name="relaywatch-demo-writer", daemon=True,
        kwargs={"path": log, "stop": stop, "seed": 2026, "session_rate": SESSION_RATE,
                "abuse_share": ABUSE_SHARE, "open_relay_clients": 1, "truth": truth},
    )  # fmt: skip
    timers: list[threading.Timer] = []

    def started(url: str) -> None:
        say(f"relaywatch demo: a simulated Postfix host (mx1) writes to {log}")
        say(f"configuration: {config}")
        say(
            f"blocks: {settings.sinks[0].path} (a Postfix cidr: table), "
            f"{url}/v1/blocklist?format=text"
        )
        say(f"API: {url}/v1/offenders  (docs: {url}/docs) - press Ctrl-C to stop")
        writer.start()
        timers.append(threading.Timer(SHOW_AFTER, lambda: say(offenders_table(settings))))
        if seconds is not None:
            timers.append(threading.Timer(seconds, daemon.stop))
        for timer in timers:
            timer.start()

    daemon = Daemon(settings, config, announce=started)
    try:
        daemon.run()
    finally:
        stop.set()
        for timer in timers:
            timer.cancel()
        if writer.is_alive():
            writer.join()
    say(
        f"demo stopped: {truth.lines} lines written, "
        f"{sum(truth.refused_relays.values())} refused and "
        f"{sum(truth.accepted_relays.values())} accepted relay attempts in them"
    )
    return truth
