"""The ``relaywatch`` command.

Every command builds what it needs from the settings it loads; nothing is global.  Errors a
user can act on are one line on stderr and exit status 1; usage errors exit 2.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, NoReturn

import click

from detector.config import (
    FORMATS,
    Settings,
    SourceSettings,
    format_duration,
    load_settings,
    parse_duration,
    zone,
    zone_name,
)
from detector.errors import ConfigError, InputError, RelaywatchError
from detector.render import iso, render_offenders

log = logging.getLogger("relaywatch")


class _Group(click.Group):
    """Turns relaywatch errors into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RelaywatchError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted")
        except BrokenPipeError:
            sys.exit(0)  # e.g. `relaywatch parse big.log | head`
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as exc:
            log.debug("unexpected error", exc_info=True)
            _fail(f"unexpected {type(exc).__name__}: {exc} (run with -v for details)")


def _fail(message: str) -> NoReturn:
    click.echo(f"relaywatch: error: {message}", err=True)
    sys.exit(1)


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]()
    return settings


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="RELAYWATCH_CONFIG",
    help="Configuration file (TOML). Default: $RELAYWATCH_CONFIG, else built-in defaults.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail to stderr.")
@click.version_option(package_name="relaywatch")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, verbose: bool) -> None:
    """Find the clients that use your mail server as a spam relay, from its logs."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        # journald stamps each line itself
        format=("" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s ")
        + "%(levelname)s %(name)s: %(message)s",
    )
    loaded: list[Settings] = []

    def settings() -> Settings:  # loaded on first use, so --help works with a broken config
        if not loaded:
            loaded.append(load_settings(config_path))
        return loaded[0]

    ctx.obj = {"settings": settings, "config_path": config_path}


def _pipeline(settings: Settings) -> Any:
    from detector.ingest import Pipeline
    from detector.store.session import open_database

    return Pipeline(settings, open_database(settings.database.url))


def _source(settings: Settings, path: Path) -> SourceSettings | None:
    """The configured source that reads ``path``, if any."""
    for source in settings.sources:
        if source.path.resolve() == path.resolve():
            return source
    return None


def _source_host(settings: Settings, path: Path) -> str:
    source = _source(settings, path)
    return source.host if source else socket.gethostname()


def _source_zone(settings: Settings, path: Path, name: str | None) -> tzinfo | None:
    """``--timezone`` if given, else the configured source's, else this machine's (None)."""
    if name is None:
        source = _source(settings, path)
        name = source.timezone if source else None
    return zone(name)


def _timezone(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            zone_name(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


TIMEZONE_OPTION = click.option(
    "--timezone", callback=_timezone, metavar="ZONE",
    help="Zone of local-time stamps (IANA name). Default: the configured source's, else this "
    "machine's.",
)  # fmt: skip


FORMAT_CHOICE = click.Choice(FORMATS)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "log_format", type=FORMAT_CHOICE, default="auto", show_default=True)
@click.option("--host", help="Relay host the logs come from. Default: the configured source's "
              "host for that path, else this machine's name.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@TIMEZONE_OPTION
@click.pass_context
def ingest(
    ctx: click.Context,
    paths: tuple[Path, ...],
    log_format: str,
    host: str | None,
    as_json: bool,
    timezone: str | None,
) -> None:
    """Import log files (plain or .gz) into the database; reading a file again adds nothing."""
    from tqdm import tqdm

    settings = _settings(ctx)
    pipeline = _pipeline(settings)
    totals: Counter[str] = Counter()
    for path in paths:
        size = path.stat().st_size if path.is_file() else 0
        with tqdm(
            total=size, unit="B", unit_scale=True, desc=path.name, disable=not sys.stderr.isatty(),
            leave=False,
        ) as bar:  # fmt: skip
            summary = pipeline.ingest_file(
                path, host=host or _source_host(settings, path), log_format=log_format,
                progress=bar.update, tz=_source_zone(settings, path, timezone),
            )  # fmt: skip
        totals.update(summary.as_dict())
    if as_json:
        click.echo(json.dumps(dict(totals), sort_keys=True))
        return
    click.echo(
        f"{totals['lines']} lines: {totals['parsed']} parsed, {totals['unparsed']} unparsed"
        + (f", {totals['cut']} cut at 64 KiB" if totals["cut"] else "")
    )
    click.echo(
        f"{totals['transactions']} transactions stored"
        + (f" ({totals['already_stored']} were stored before)" if totals["already_stored"] else "")
    )
    click.echo(
        f"relay attempts: {totals['refused_relays']} refused, {totals['accepted_relays']} accepted"
    )
    click.echo(f"{totals['offenders']} offenders, {totals['blocks']} new blocks")
    if totals["accepted_relays"]:
        click.secho(
            "WARNING: the server accepted relays for outside clients: it is an open relay "
            "for them (see 'relaywatch offenders')",
            fg="red",
            err=True,
        )


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "log_format", type=FORMAT_CHOICE, default="auto", show_default=True)
@TIMEZONE_OPTION
@click.pass_context
def parse(ctx: click.Context, path: Path, log_format: str, timezone: str | None) -> None:
    """Dry run: show what each line yields and count the unparsed; writes nothing."""
    from detector.ingest import choose_format
    from detector.logfile import ReadCounts, open_log, read_lines
    from parsers import make_parser
    from parsers.events import event_summary

    family, why = choose_format(path, log_format)
    parser = make_parser(family, tz=_source_zone(_settings(ctx), path, timezone))
    counts = ReadCounts()
    kinds: Counter[str] = Counter()
    out = sys.stdout
    out.write(f"format: {family} ({why})\n")
    with open_log(path) as handle:
        for number, (_, line) in enumerate(read_lines(handle, counts, str(path)), 1):
            event = parser.parse(line)
            if event is None:
                kinds["unparsed"] += 1
                out.write(f"{number}: unparsed: {line[:200]}\n")
                continue
            kinds[event.kind] += 1
            fields = event_summary(event)
            kind = fields.pop("kind")
            text = " ".join(
                f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in fields.items()
            )
            when = datetime.fromtimestamp(event.time, UTC).isoformat().replace("+00:00", "Z")
            out.write(f"{number}: {when} {kind} {text}\n")
    parsed = counts.lines - kinds["unparsed"]
    click.echo(f"{counts.lines} lines: {parsed} parsed, {kinds['unparsed']} unparsed"
               + (f", {counts.cut} cut at 64 KiB" if counts.cut else ""))  # fmt: skip
    for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1]):
        if kind != "unparsed":
            click.echo(f"  {kind}: {count}")


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.now(UTC) - parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.option("--format", "output", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)  # fmt: skip
@click.option("--since", callback=_since, help="Only attempts in this last period, e.g. 1h, 7d.")
@click.option("--blocked", is_flag=True, help="Only offenders blocked now.")
@click.pass_context
def offenders(ctx: click.Context, output: str, since: datetime | None, blocked: bool) -> None:
    """List the clients with relay attempts, worst first."""
    from detector.store.queries import list_offenders
    from detector.store.session import open_database

    settings = _settings(ctx)
    engine = open_database(settings.database.url)
    with engine.connect() as connection:
        found = list_offenders(
            connection, datetime.now(UTC), since=since, blocked=True if blocked else None
        )
    click.echo(render_offenders(found, output), nl=False)


@main.command()
@click.argument("ip")
@click.pass_context
def explain(ctx: click.Context, ip: str) -> None:
    """Why an address is an offender: score, rules that fired, decisions, evidence lines."""
    from detector.decide import decisions_for, policy_rejects
    from detector.errors import NotFound
    from detector.store.queries import evidence, get_offender, normalise_ip
    from detector.store.session import open_database

    settings = _settings(ctx)
    engine = open_database(settings.database.url)
    now = datetime.now(UTC)
    ip = normalise_ip(ip)
    with engine.connect() as connection:
        decisions = decisions_for(connection, ip)
        try:
            offender = get_offender(connection, ip, now)
        except NotFound:
            if not decisions:
                raise
            offender = None
        rejects = policy_rejects(connection, (d.id for d in decisions))
        transactions = evidence(connection, ip, limit=20) if offender else []
    if offender is None:
        click.echo(f"{ip}: no relay attempts stored")
    else:
        _explain_offender(offender, settings)
    click.echo("decisions:" if decisions else "decisions: none")
    for d in decisions:
        state = "active" if d.active(now) else ("revoked" if d.revoked_at else "expired")
        click.echo(
            f"  #{d.id} {d.origin} block {iso(d.created_at)} .. {iso(d.expires_at)} "
            f"({state}): {d.reason}"
        )
        if d.hits:
            click.echo(f"    enforced: {d.hits} refusals in the mail log because of it, the "
                       f"last at {iso(d.last_hit_at)}")  # fmt: skip
        if rejects.get(d.id):
            click.echo(f"    enforced: {rejects[d.id]} requests refused by the policy service")
    if offender is None:
        return
    click.echo(f"evidence (latest {len(transactions)} transactions):")
    for txn in transactions:
        click.echo(f"  {txn['started_at']} {txn['host']} {txn['queue_id'] or 'NOQUEUE'}")
        for line in txn["lines"]:
            click.echo(f"    {line}")


def _explain_offender(offender: Any, settings: Settings) -> None:
    click.echo(f"{offender.ip}: score {offender.score:g}")
    click.echo(
        f"  relay attempts: {offender.relay_attempts} ({offender.refused_relays} refused, "
        f"{offender.accepted_relays} accepted) to {offender.recipients} recipients in "
        f"{offender.recipient_domains} domains"
    )
    click.echo(f"  seen: {iso(offender.first_seen)} .. {iso(offender.last_seen)}")
    click.echo("rules that fired:")
    for reason in offender.reasons:
        click.echo(f"  - {reason}")
    rules = settings.scoring
    click.echo(
        f"  (blocks at {rules.refused_relays_to_block} refused or "
        f"{rules.accepted_relays_to_block} accepted within {format_duration(rules.window)})"
    )


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    try:
        return None if value is None else parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.argument("value")
@click.option("--duration", callback=_duration, help="How long, e.g. 1h, 7d.  [default: "
              "scoring.block_duration]")  # fmt: skip
@click.option("--reason", default="", help="Why, for the record and the API.")
@click.pass_context
def block(ctx: click.Context, value: str, duration: Any, reason: str) -> None:
    """Block an IP address or a CIDR range by hand (never an internal, own or allowed one)."""
    from detector.decide import NeverBlock, Refused
    from detector.decide import block as make_block
    from detector.store.session import open_database

    settings = _settings(ctx)
    network = settings.network
    engine = open_database(settings.database.url)
    try:
        with engine.begin() as connection:
            made = make_block(
                connection, value, duration=duration or settings.scoring.block_duration,
                reason=reason, now=datetime.now(UTC).replace(microsecond=0),
                never_block=NeverBlock(network.internal_networks, network.own_addresses),
            )  # fmt: skip
    except Refused as exc:
        _fail(str(exc))
    click.echo(f"blocked {made.value} until {iso(made.expires_at)} (decision #{made.id})")


@main.command()
@click.argument("value")
@click.pass_context
def unblock(ctx: click.Context, value: str) -> None:
    """Lift the blocks in force of an IP address or a CIDR range."""
    from detector.decide import Refused
    from detector.decide import unblock as lift
    from detector.store.session import open_database

    settings = _settings(ctx)
    engine = open_database(settings.database.url)
    try:
        with engine.begin() as connection:
            lifted = lift(connection, value, datetime.now(UTC))
    except Refused as exc:
        _fail(str(exc))
    if not lifted:
        _fail(f"{value} is not blocked")
    ids = ", ".join(f"#{d.id}" for d in lifted)
    click.echo(f"unblocked {lifted[0].value} (decision{'s' if len(lifted) > 1 else ''} {ids})")


@main.command()
@click.argument("cidr")
@click.option("--comment", default="", help="Whose network it is, for the record.")
@click.pass_context
def allow(ctx: click.Context, cidr: str, comment: str) -> None:
    """Never block an address or a network; lifts the blocks in force that it covers."""
    from detector.decide import Refused
    from detector.decide import allow as add_entry
    from detector.store.session import open_database

    settings = _settings(ctx)
    engine = open_database(settings.database.url)
    try:
        with engine.begin() as connection:
            entry, lifted = add_entry(connection, cidr, comment, datetime.now(UTC))
    except Refused as exc:
        _fail(str(exc))
    click.echo(f"allowed {entry.network} (allowlist entry #{entry.id})")
    for d in lifted:
        click.echo(f"unblocked {d.value} (decision #{d.id})")


@main.group()
def sinks() -> None:
    """The enforcement targets of the configuration ([[sinks]])."""


@sinks.command("check")
@click.pass_context
def sinks_check(ctx: click.Context) -> None:
    """Render every sink for the decisions in force and run its check; apply nothing."""
    from detector.decide import active_decisions
    from detector.sinks import make_sinks
    from detector.store.session import open_database

    settings = _settings(ctx)
    if not settings.sinks:
        _fail("no [[sinks]] configured: nothing to check")
    engine = open_database(settings.database.url)
    now = datetime.now(UTC)
    with engine.connect() as connection:
        decisions = active_decisions(connection, now)
    failed = 0
    for sink in make_sinks(settings):
        try:
            result = sink.check(decisions, now)
        finally:
            sink.close()
        failed += not result.ok
        click.echo(f"{'ok  ' if result.ok else 'FAIL'} {result.sink}: {result.message}")
    if failed:
        _fail(f"{failed} of {len(settings.sinks)} sinks failed their check")


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Daemon: follow the configured sources, store and score, serve the API."""
    from detector.daemon import Daemon

    settings = _settings(ctx)
    if not settings.sources:
        raise ConfigError("no [[sources]] configured: nothing to follow")
    _daemon_logging()
    Daemon(settings, ctx.obj["config_path"]).run()


def _daemon_logging() -> None:
    """What the daemon does is worth a line (INFO); the schema creation chatter is not."""
    root = logging.getLogger()
    root.setLevel(min(root.level, logging.INFO))
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))


@main.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Serve the HTTP API only (no log following)."""
    settings = _settings(ctx)
    _serve(settings, settings.api.listen)


def _serve(settings: Settings, listen: str) -> None:
    import uvicorn

    from api.main import create_app
    from detector.daemon import check_listen
    from detector.store.session import open_database

    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    check_listen(host, int(port), listen)
    engine = open_database(settings.database.url)
    app = create_app(settings, engine)
    config = uvicorn.Config(app, host=host, port=int(port), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again for the handler
    # it found: make that one a no-op, so stopping the server is a clean exit 0
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    except SystemExit:  # uvicorn could not start after all
        raise RelaywatchError(f"cannot serve on {listen}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(_signal: int, _frame: object) -> None:
    """The server has already shut down when this runs."""


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Create or upgrade the schema to this version's (Alembic migrations)."""
    from detector.store import migrate
    from detector.store.session import make_engine

    settings = _settings(ctx)
    engine = make_engine(settings.database.url)
    try:
        migrate.upgrade(engine)
    except Exception as exc:
        raise RelaywatchError(f"database upgrade failed: {exc}") from None
    click.echo(f"database at revision {migrate.head_revision()}")


@main.command("check-config")
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Validate the configuration and compare it with what the stored logs show."""
    from detector.store.checks import configuration_report

    settings = _settings(ctx)
    lines, problems = configuration_report(settings)
    for line in lines:
        click.echo(line)
    if problems:
        sys.exit(1)


@main.command()
@click.option("--listen", default="127.0.0.1:8025", show_default=True)
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False),
              default=Path("relaywatch-demo"), show_default=True,
              help="Where the live log, configuration and database go.")  # fmt: skip
@click.option("--seconds", type=click.FloatRange(min=1), help="Stop after this long.")
def demo(listen: str, directory: Path, seconds: float | None) -> None:
    """Follow a simulated relay host under attack: live log, daemon, API, offenders."""
    from detector.demo import run_demo

    _daemon_logging()
    run_demo(directory, listen, click.echo, seconds)


def _report_day(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """``today``, ``yesterday`` or a date, checked here (the zone that says which day today is
    comes from the configuration, read later)."""
    if value in ("today", "yesterday"):
        return value
    try:
        date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not YYYY-MM-DD, today or yesterday") from None
    return value


@main.command()
@click.option(
    "--date",
    "day",
    default="yesterday",
    show_default=True,
    callback=_report_day,
    help="The day: YYYY-MM-DD, today or yesterday, in [report] timezone.",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "html", "json"]),
    default="text",
    show_default=True,
)
@click.option(
    "--output",
    "path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the report to this file instead of standard output.",
)
@click.option("--host", help="Only this relay host (default: all of them).")
@click.pass_context
def report(ctx: click.Context, day: str, output: str, path: Path | None, host: str | None) -> None:
    """The tracking report of one day: relay abuse, blocks, traffic, what relaywatch saw."""
    from detector.report import render
    from detector.report.build import build_report, machine_zone
    from detector.store.session import open_database

    settings = _settings(ctx)
    report_zone = zone(settings.report.timezone) or machine_zone()
    today = datetime.now(report_zone).date()
    wanted = {"today": today, "yesterday": today - timedelta(days=1)}.get(day)
    engine = open_database(settings.database.url)
    try:
        with engine.connect() as connection:
            built = build_report(
                connection,
                wanted or date.fromisoformat(day),
                zone=report_zone,
                host=host,
                top=settings.report.top,
            )
    finally:
        engine.dispose()
    text = render(built, output)
    if path is None:
        click.echo(text, nl=False)
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
