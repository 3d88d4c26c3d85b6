"""The nightly report inside the daemon: when it is due, building and storing it, mailing it.

When
    The report of a local day (``[report] timezone``, this machine's zone when unset) is due at
    ``[report] at`` on the next day, e.g. 02:00: by then the lines of the day's last minutes
    are read and stored.  On a night the clocks change, an ``at`` that does not exist (02:30
    when 02:00 jumps to 03:00) is read with the offset before the change, an ``at`` that
    happens twice is the first one.

Missed nights
    At start, and every time a report falls due, every day after the newest report stored
    (all relay hosts, ``host = ""``) up to the last one due is built, oldest first — the
    nights the daemon was down — but no day more than :data:`CATCH_UP_DAYS` days back.  With
    no report stored at all (a new installation) only the last day due is built.  A report
    stored *before* its day was due (``relaywatch report --date today`` at noon) does not count
    as built: the night's report replaces it.

Building
    In a worker thread with a database connection of its own, so following the logs never
    waits for it: the report reads the store in one transaction (SQLite in WAL mode: readers
    never block the daemon's writes) and is stored in a second, short one (one row; the
    daemon's own writes wait for it as they wait for any other writer).  Relay hosts sharing
    one PostgreSQL database each build it; the first to store it stores and mails it, the
    others find it stored and leave it (an advisory lock orders them).  A build that fails is
    logged and tried again :data:`RETRY` later.

Mail
    When ``mail_to`` is set, the report stored is mailed (:mod:`detector.report.mail`).  A
    failure is logged and stored in ``mail_error``, and tried again at the next start of the
    daemon and every :data:`RETRY` while it runs — for the reports of the last
    :data:`CATCH_UP_DAYS` days only (older ones are not mailed, but served over HTTP).  Until
    the server took it, ``mail_error`` says "not mailed yet" (stored with the report, so a
    crash before mailing is retried too) or "mailing since …"; that a daemon sets before it
    sends, in a conditional update, so two never mail the same report.  A report stopped
    mid-send (``kill -9``) may be mailed twice; one is never lost.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, and_, exists, select, text, update

from detector.config import Settings
from detector.errors import MailError
from detector.report import mail
from detector.report.build import machine_zone
from detector.report.stored import ALL_HOSTS, Rendered, headline, mailed, store_report
from detector.store.models import ReportRow

log = logging.getLogger("relaywatch")

CATCH_UP_DAYS = 7
"""Days back the daemon builds missed reports and retries mailing them."""
RETRY = timedelta(hours=1)
"""Time until a failed build or mailing is tried again while the daemon runs."""
NOT_MAILED = "not mailed yet"
_REPORT_LOCK = 0x7265706F7274  # "report": relay hosts sharing PostgreSQL store one at a time

Build = Callable[[Connection, date, tzinfo, datetime], Rendered]
"""Builds and renders the report of one local day, all relay hosts, from the store (at a
time: now)."""
Send = Callable[..., str | None]
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def report_zone(name: str | None) -> tzinfo:
    """The zone days are counted in: ``name``, or this machine's."""
    return machine_zone() if name is None else ZoneInfo(name)


def due_at(day: date, at: str, zone: tzinfo) -> datetime:
    """When the report of ``day`` is due: ``at`` (HH:MM) on the next day in ``zone``, in UTC."""
    hour, minute = (int(part) for part in at.split(":"))
    local = datetime.combine(day + timedelta(days=1), time(hour, minute), tzinfo=zone)
    return local.astimezone(UTC)


def last_due_day(now: datetime, at: str, zone: tzinfo) -> date:
    """The newest day whose report is due at ``now``."""
    yesterday = now.astimezone(zone).date() - timedelta(days=1)
    return yesterday if due_at(yesterday, at, zone) <= now else yesterday - timedelta(days=1)


def days_due(connection: Connection, now: datetime, at: str, zone: tzinfo) -> list[date]:
    """The days whose report is due and not built yet, oldest first (see the module's
    docstring for which)."""
    latest = last_due_day(now, at, zone)
    earliest = latest - timedelta(days=CATCH_UP_DAYS - 1)
    rows = connection.execute(
        select(ReportRow.day, ReportRow.created_at).where(
            ReportRow.host == ALL_HOSTS, ReportRow.day >= earliest.isoformat()
        )
    ).all()
    built = set()
    for label, created_at in rows:
        try:
            day = date.fromisoformat(label)
        except ValueError:
            continue  # a longer period's label
        if created_at >= due_at(day, at, zone):
            built.add(day)
    if built:
        start = max(built) + timedelta(days=1)
    else:
        stored_before = connection.execute(
            select(exists().where(ReportRow.host == ALL_HOSTS))
        ).scalar()
        start = earliest if stored_before else latest
    count = (latest - start).days + 1
    return [start + timedelta(days=n) for n in range(max(count, 0))]


def build_and_render(top: int) -> Build:
    """The report builder and renderers of :mod:`detector.report`."""
    from detector.report import render
    from detector.report.build import build_report

    def build(connection: Connection, day: date, zone: tzinfo, now: datetime) -> Rendered:
        report = build_report(connection, day, zone=zone, host=None, top=top, now=now)
        return Rendered(render(report, "json"), render(report, "text"), render(report, "html"))

    return build


class ReportScheduler:
    """Builds, stores and mails the nightly reports for the daemon.

    :meth:`tick` is cheap and called from the daemon's loop: when something is due (a report,
    a retry) and no worker runs, it starts one.  :meth:`run_due` is the worker's work, callable
    directly (tests).  ``connect`` makes the worker's engine (disposed after each run);
    ``clock`` says the time (aware, UTC), ``build`` builds and renders a day's report, ``send``
    and ``tls`` hand a message to the SMTP server (:func:`detector.report.mail.send`).
    """

    def __init__(
        self,
        settings: Settings,
        connect: Callable[[], Engine],
        *,
        clock: Clock | None = None,
        build: Build | None = None,
        send: Send = mail.send,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self._connect = connect
        self._clock = clock or _utc_now
        self._build = build
        self._send = send
        self._tls = tls
        self._next = datetime.min.replace(tzinfo=UTC)  # at start: catch up at once
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self.runs = 0  # finished runs of the worker (tests wait for them)

    def tick(self) -> bool:
        """Start a worker if something is due and none runs: whether one started."""
        if self._worker is not None and self._worker.is_alive():
            return False
        if self._stop.is_set() or self._clock() < self._next:
            return False
        self._worker = threading.Thread(target=self._work, name="relaywatch-report", daemon=True)
        self._worker.start()
        return True

    def reload(self, settings: Settings) -> None:
        """Use reloaded settings; look at once for what is due (a changed ``at``, a mailing
        that failed before the SMTP settings were corrected)."""
        self.settings = settings
        self._next = datetime.min.replace(tzinfo=UTC)

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the day in hand; wait for the worker up to ``timeout`` seconds (a report
        not stored then is built at the next start)."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout)

    def _work(self) -> None:
        try:
            self.run_due()
        except Exception:  # the daemon goes on following; the next try is an hour later
            log.exception("report: failed")
            self._next = self._clock() + RETRY
        finally:
            self.runs += 1

    def run_due(self) -> None:
        """Build, store and mail every report due, and retry the mailings that failed; then
        set when the next run is due."""
        settings = self.settings.report
        zone = report_zone(settings.timezone)
        engine = self._connect()
        try:
            retry = False
            with engine.connect() as connection:
                days = days_due(connection, self._clock(), settings.at, zone)
            for day in days:
                if self._stop.is_set():
                    return
                if not self._build_one(engine, day, zone):
                    retry = True
                    break
            if settings.mail_to and not self._stop.is_set():
                retry = not self._mail_pending(engine, zone) or retry
        finally:
            engine.dispose()
        now = self._clock()
        self._next = due_at(last_due_day(now, settings.at, zone) + timedelta(days=1),
                            settings.at, zone)  # fmt: skip
        if retry:
            self._next = min(self._next, now + RETRY)

    def _build_one(self, engine: Engine, day: date, zone: tzinfo) -> bool:
        """Build and store the report of ``day`` (unless another daemon just did): whether
        that went well."""
        settings = self.settings.report
        build = self._build or build_and_render(settings.top)
        label = day.isoformat()
        started = self._clock()
        try:
            with engine.connect() as connection:
                rendered = build(connection, day, zone, started)
        except Exception:
            log.exception("report of %s: cannot build it; trying again in %s", label, RETRY)
            return False
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _REPORT_LOCK}
                )
            stored_at = connection.execute(
                select(ReportRow.created_at).where(
                    ReportRow.day == label, ReportRow.host == ALL_HOSTS
                )
            ).scalar()
            if stored_at is not None and stored_at >= due_at(day, settings.at, zone):
                log.info("report of %s: built by another relaywatch meanwhile", label)
                return True
            store_report(connection, label, ALL_HOSTS, rendered, self._clock())
            if settings.mail_to:
                mailed(connection, label, ALL_HOSTS, None, NOT_MAILED)
        seconds = (self._clock() - started).total_seconds()
        log.info("report of %s built and stored in %.1fs", label, seconds)
        return True

    def _mail_pending(self, engine: Engine, zone: tzinfo) -> bool:
        """Mail the reports of the last days not mailed yet (stored with "not mailed yet" or
        a failure), oldest first: whether every one went out."""
        settings = self.settings.report
        earliest = last_due_day(self._clock(), settings.at, zone) - timedelta(
            days=CATCH_UP_DAYS - 1
        )
        with engine.connect() as connection:
            pending = connection.execute(
                select(ReportRow.day, ReportRow.mail_error)
                .where(
                    ReportRow.host == ALL_HOSTS,
                    ReportRow.mailed_at.is_(None),
                    ReportRow.mail_error.is_not(None),
                    ReportRow.day >= earliest.isoformat(),
                )
                .order_by(ReportRow.day)
            ).all()
        for label, seen in pending:
            if self._stop.is_set() or not self._mail_one(engine, label, seen):
                return False
        return True

    def _mail_one(self, engine: Engine, label: str, seen: str | None) -> bool:
        settings = self.settings.report
        claim = f"mailing since {self._clock().isoformat(timespec='seconds')}"
        with engine.begin() as connection:
            claimed = connection.execute(
                update(ReportRow)
                .where(
                    and_(ReportRow.day == label, ReportRow.host == ALL_HOSTS),
                    ReportRow.mailed_at.is_(None),
                    ReportRow.mail_error == seen,
                )
                .values(mail_error=claim)
            ).rowcount
            row = connection.execute(
                select(ReportRow.data, ReportRow.text, ReportRow.html).where(
                    ReportRow.day == label, ReportRow.host == ALL_HOSTS
                )
            ).first()
        if not claimed or row is None:
            return True  # another relaywatch mails it
        numbers = headline(row.data)
        message = mail.compose(
            settings,
            mail.subject(
                label, numbers.where(ALL_HOSTS), open_relay=numbers.open_relay,
                accepted_relays=numbers.accepted_relays, refused_relays=numbers.refused_relays,
            ),
            row.text,
            row.html,
        )  # fmt: skip
        try:
            refused = self._send(message, settings, context=self._tls)
        except MailError as exc:
            log.error("report of %s not mailed: %s; trying again in %s", label, exc, RETRY)
            with engine.begin() as connection:
                mailed(connection, label, ALL_HOSTS, None, str(exc))
            return False
        with engine.begin() as connection:
            mailed(connection, label, ALL_HOSTS, self._clock(), refused)
        if refused:
            log.warning("report of %s mailed, but %s", label, refused)
        else:
            log.info("report of %s mailed to %s", label, ", ".join(settings.mail_to))
        return True
