"""The tracking report as plain text, for mail and terminals: at most 80 columns, sections in
the order an administrator asks after an incident (was the server an open relay, who tried,
what was blocked), then the day's mail traffic as pflogsumm counts it, then what relaywatch
itself saw.

Everything that comes from the logs goes through :func:`clean` first: control characters
(a terminal escape in a logged name) are shown as escapes, never written.
"""

from __future__ import annotations

import textwrap
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo

from detector.report.model import (
    AcceptedRelay,
    Count,
    HourTraffic,
    OffenderLine,
    Period,
    Report,
)

WIDTH = 80
SHOWN_RECIPIENTS = 8  # per accepted transaction; the JSON has them all
SHOWN_LINES = 12  # log lines per accepted transaction
SHOWN_EVIDENCE = 3  # accepted transactions whose log lines are shown


class RelayedFor(NamedTuple):
    """An outside client the server relayed for, from the accepted transactions."""

    ip: str
    names: tuple[str, ...]
    helos: tuple[str, ...]
    transactions: int
    recipients: int
    first: datetime
    last: datetime


# --- shared with the HTML renderer ----------------------------------------------------------


def clean(text: str) -> str:
    """``text`` with control and format characters (escapes, bidi overrides) made visible."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable() or char == " ":
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


def zone_of(period: Period) -> tzinfo:
    return ZoneInfo(period.timezone)


def is_one_day(period: Period) -> bool:
    return ".." not in period.label and period.end - period.start <= timedelta(hours=25)


def attempts_of(report: Report) -> int:
    return report.headline.refused_relays + report.headline.accepted_relays


def quiet_line(report: Report) -> str:
    """The one line of a period without relay attempts."""
    on = "on" if is_one_day(report.period) else "in"
    return f"No relay attempts {on} {report.period.label}."


def open_relay_line(report: Report) -> str:
    n = report.headline.accepted_relays
    times = "once" if n == 1 else f"{n:,} times"
    return f"OPEN RELAY: the server relayed mail from outside to outside {times}"


def hour_slots(period: Period) -> list[str]:
    """The local hours of the period as the model names them (``2026-12-01T13``), in order;
    a repeated hour (the end of summer time) is one slot, as the builder counts it."""
    zone = zone_of(period)
    slots: dict[str, None] = {}
    moment = period.start
    while moment < period.end:
        slots[moment.astimezone(zone).strftime("%Y-%m-%dT%H")] = None
        moment += timedelta(hours=1)
    return list(slots)


def per_hour(period: Period, counts: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Every hour of the period with its count (0 when absent), labelled ``13`` for one day;
    a longer period is summed per hour of the day."""
    by_key: dict[str, int] = {}
    for key, count in counts:
        by_key[key] = by_key.get(key, 0) + count
    slots = hour_slots(period)
    slots += sorted(set(by_key) - set(slots))  # never drop a number the builder gave
    if len(slots) <= 25:
        return [(slot[-2:], by_key.get(slot, 0)) for slot in slots]
    folded = {f"{hour:02d}": 0 for hour in range(24)}
    for slot in slots:
        folded[slot[-2:]] = folded.get(slot[-2:], 0) + by_key.get(slot, 0)
    return list(folded.items())


def traffic_per_hour(period: Period, hours: Sequence[HourTraffic]) -> list[tuple[str, HourTraffic]]:
    """The traffic of every hour (zeros when absent), labelled as :func:`per_hour` does."""
    fields = ("received", "delivered", "deferred", "bounced", "rejected")
    columns = {
        name: dict(per_hour(period, ((h.hour, getattr(h, name)) for h in hours))) for name in fields
    }
    labels = list(columns["received"])
    return [
        (label, HourTraffic(label, *(columns[name][label] for name in fields))) for label in labels
    ]


def local(moment: datetime, report: Report, form: str = "%H:%M") -> str:
    """``moment`` in the report's zone; a moment outside a one-day period gets its date."""
    zone = zone_of(report.period)
    shown = moment.astimezone(zone)
    inside = report.period.start <= moment < report.period.end
    if not inside or not is_one_day(report.period):
        form = "%Y-%m-%d " + form
    return shown.strftime(form)


def short(moment: datetime, report: Report) -> str:
    """``13:05`` within a one-day period, ``12-08 13:05`` otherwise: for narrow columns."""
    zone = zone_of(report.period)
    inside = report.period.start <= moment < report.period.end
    form = "%H:%M" if inside and is_one_day(report.period) else "%m-%d %H:%M"
    return moment.astimezone(zone).strftime(form)


def span(first: datetime, last: datetime, report: Report) -> str:
    """``13:02-13:40``, or ``13:02`` when both are the same minute."""
    start, end = short(first, report), short(last, report)
    return start if start == end else f"{start}-{end}"


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def percent(part: int, whole: int) -> str:
    """``21%``; ``<1%`` for a small part that is not nothing."""
    share = 100 * part / whole if whole else 0.0
    return "<1%" if 0 < share < 1 else f"{share:.0f}%"


def rejected_share(report: Report) -> str:
    """pflogsumm's ``rejected (N%)``: of delivered + rejected, truncated as it does (it also
    counts discarded messages, which the model does not hold)."""
    t = report.traffic
    whole = t.delivered + t.rejected
    return f"{100 * t.rejected // whole}%" if whole else "0%"


def trend_summary(report: Report) -> str | None:
    """``today 4,021; 3.9 x the average of the 7 days before (1,031)``."""
    if not report.trend:
        return None
    *before, today = report.trend
    if not before:
        return f"{today.day}: {today.count:,}"
    average = sum(d.count for d in before) / len(before)
    ratio = f"{today.count / average:.1f} x" if average else "no attempts in"
    return (
        f"{today.day}: {today.count:,}; {ratio} the average of the {len(before)} days before "
        f"({average:,.0f})"
    )


# --- columns --------------------------------------------------------------------------------


def width(text: str) -> int:
    """Terminal columns: wide (East Asian) characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def cut(text: str, room: int = WIDTH) -> str:
    """``text`` (cleaned) in at most ``room`` columns, ``…`` where it was cut."""
    text = clean(text)
    if width(text) <= room:
        return text
    out, used = [], 0
    for char in text:
        if used + width(char) > room - 1:
            break
        out.append(char)
        used += width(char)
    return "".join(out) + "…"


def cut_left(text: str, room: int) -> str:
    """``text`` in ``room`` columns, cut at the start (the end of a path says the most)."""
    text = clean(text)
    if width(text) <= room:
        return text
    kept, used = [], 0
    for char in reversed(text):
        if used + width(char) > room - 1:
            break
        kept.append(char)
        used += width(char)
    return "…" + "".join(reversed(kept))


def pad(text: str, room: int, align: str) -> str:
    gap = " " * max(0, room - width(text))
    return gap + text if align == "r" else text + gap


def wrap(text: str, indent: str = "  ", first: str | None = None) -> list[str]:
    return textwrap.wrap(
        clean(text),
        WIDTH,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_long_words=True,
        break_on_hyphens=False,
    ) or [indent.rstrip()]


def table_rows(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    align: str,
    flexible: int = 0,
    cut_at: Callable[[str, int], str] | None = None,
) -> tuple[str, list[list[str]]]:
    """The header line and the lines of each row: columns two spaces apart, indented by two.
    When too wide, the ``flexible`` column shrinks: its longer cells are cut with ``cut_at``,
    or (without it) written on a line of their own above the rest of the row, so that an
    address is never shortened."""
    cleaned = [[clean(cell) for cell in row] for row in rows]
    widths = [max([width(h)] + [width(row[i]) for row in cleaned]) for i, h in enumerate(headers)]
    room = WIDTH - 2 - 2 * (len(headers) - 1) - (sum(widths) - widths[flexible])
    widths[flexible] = max(4, min(widths[flexible], room))

    def line(cells: Sequence[str]) -> str:
        return (
            "  " + "  ".join(pad(c, w, a) for c, w, a in zip(cells, widths, align, strict=True))
        ).rstrip()

    groups = []
    for cells in cleaned:
        group = []
        if width(cells[flexible]) > widths[flexible]:
            if cut_at is not None:
                cells[flexible] = cut_at(cells[flexible], widths[flexible])
            else:
                group.append(cut("  " + cells[flexible]))
                cells[flexible] = ""
        groups.append([*group, line(cells)])
    return line(headers), groups


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    align: str,
    flexible: int = 0,
    cut_at: Callable[[str, int], str] | None = None,
) -> list[str]:
    """:func:`table_rows` as lines."""
    header, groups = table_rows(headers, rows, align, flexible, cut_at)
    return [header, *(line for group in groups for line in group)]


def heading(title: str) -> list[str]:
    title = cut(title)
    return [title, "-" * width(title)]


def totals(items: Iterable[tuple[int | str, str]]) -> list[str]:
    """pflogsumm's Grand Totals form: the number right-aligned, then what it counts."""
    pairs = [(f"{n:,}" if isinstance(n, int) else n, label) for n, label in items]
    room = max(10, *(width(n) for n, _ in pairs)) if pairs else 10
    return [cut(f"{pad(n, room, 'r')}   {label}") for n, label in pairs]


def bars(items: Sequence[tuple[str, int]], mark: dict[str, str] | None = None) -> list[str]:
    """A horizontal bar chart: label, bar of ``#`` scaled to the largest count, count."""
    if not items:
        return []
    mark = mark or {}
    label_room = max(width(label) for label, _ in items)
    count_room = max(width(f"{n:,}") for _, n in items)
    mark_room = max((width(m) + 1 for m in mark.values()), default=0)
    bar_room = WIDTH - 2 - label_room - 2 - 1 - count_room - mark_room
    largest = max(n for _, n in items) or 1
    out = []
    for label, n in items:
        length = 0 if n == 0 else max(1, round(bar_room * n / largest))
        bar = ("#" * length).ljust(bar_room)
        suffix = f" {mark[label]}" if label in mark else ""
        out.append(
            f"  {pad(label, label_room, 'l')}  {bar} {pad(f'{n:,}', count_room, 'r')}"
            f"{suffix}".rstrip()
        )
    return out


def counts(title: str, items: Sequence[Count]) -> list[str]:
    if not items:
        return []
    room = max(width(f"{c.count:,}") for c in items)
    return heading(title) + [cut(f"  {pad(f'{c.count:,}', room, 'r')}  {c.name}") for c in items]


# --- sections -------------------------------------------------------------------------------


def title(report: Report) -> list[str]:
    hosts = f"relay host {report.period.host}" if report.period.host else "all relay hosts"
    generated = local(report.generated_at, report, "%H:%M %Z")
    return [
        cut(f"relaywatch report for {report.period.label} ({report.period.timezone}), {hosts}"),
        cut(f"generated {generated}"),
    ]


def headline(report: Report) -> list[str]:
    h = report.headline
    if attempts_of(report) == 0 and not h.open_relay:
        out = [quiet_line(report)]
        if h.new_blocks or h.expired_blocks or h.active_blocks or h.enforcement_hits:
            out.append(
                f"Blocks: {h.new_blocks:,} new, {h.expired_blocks:,} ended, "
                f"{h.active_blocks:,} in force; {h.enforcement_hits:,} enforcement hits."
            )
        return out
    out = []
    if h.open_relay:
        loud = cut(open_relay_line(report))
        out += ["=" * width(loud), loud, "=" * width(loud), ""]
    out += heading("Relay abuse")
    out += totals(
        [
            (h.accepted_relays, "accepted relay attempts (relayed to the outside)"),
            (h.refused_relays, "refused relay attempts"),
            (h.offenders, "offenders (clients with relay attempts)"),
            (h.new_blocks, "new blocks"),
            (h.expired_blocks, "blocks ended (expired or lifted)"),
            (h.active_blocks, "blocks in force at the end"),
            (h.enforcement_hits, "enforcement hits (mail refused because of a block)"),
        ]
    )
    return out


def recipients_of(relay: AcceptedRelay, shown: int = SHOWN_RECIPIENTS) -> str:
    """``<a@x>, <b@y> and 5 more``."""
    listed = ", ".join(f"<{r}>" for r in relay.recipients[:shown])
    hidden = len(relay.recipients) - shown
    return listed + (f" and {hidden:,} more" if hidden > 0 else "")


def recipients_in(relay: AcceptedRelay, room: int) -> str:
    """As many recipients as fit in ``room`` columns, and how many more there are."""
    total = len(relay.recipients)
    for shown in range(total, 0, -1):
        listed = recipients_of(relay, shown)
        if width(clean(listed)) <= room:
            return listed
    return f"{total:,} recipients"


def relayed_for(report: Report) -> list[RelayedFor]:
    """The clients the server relayed for, the one with most recipients first."""
    by_client: dict[str, list[AcceptedRelay]] = {}
    for relay in report.accepted:
        by_client.setdefault(relay.client_ip or "?", []).append(relay)
    found = [
        RelayedFor(
            ip=ip,
            names=tuple(dict.fromkeys(r.client_name for r in relays if r.client_name)),
            helos=tuple(dict.fromkeys(r.helo for r in relays if r.helo)),
            transactions=len(relays),
            recipients=sum(len(r.recipients) for r in relays),
            first=min(r.time for r in relays),
            last=max(r.time for r in relays),
        )
        for ip, relays in by_client.items()
    ]
    return sorted(found, key=lambda c: (-c.recipients, c.ip))


def accepted_section(report: Report) -> list[str]:
    """Who the server relayed for, then each transaction in two lines: when, where, who;
    sender and recipients.  The log lines come later (:func:`evidence_section`)."""
    if not report.accepted:
        return []
    n = len(report.accepted)
    out = heading(f"Accepted relays: what the server relayed ({n:,} transactions)")
    out.append("relayed for")
    for client in relayed_for(report):
        name = ", ".join(client.names) or "unknown"
        helo = ", ".join(client.helos) or "(none)"
        out.append(cut(f"  {client.ip}  {name}  helo {helo}"))
        out.append(
            cut(
                f"      {plural(client.transactions, 'transaction')}, "
                f"{plural(client.recipients, 'recipient')}, "
                f"{span(client.first, client.last, report)}"
            )
        )
    out.append("")
    for relay in report.accepted[: report.top]:
        queue = f"  {relay.queue_id}" if relay.queue_id else ""
        who = f"{relay.client_name or 'unknown'}[{relay.client_ip or '?'}]"
        out.append(cut(f"{local(relay.time, report, '%H:%M:%S')}  {relay.host}{queue}  {who}"))
        helo = relay.helo or "(none)"
        out.append(cut(f"          helo {helo}  from <{relay.sender or ''}>"))
        out.append(cut(f"          to {recipients_in(relay, WIDTH - 13)}"))
    if n > report.top:
        out.append(f"… {n - report.top:,} more transactions (the JSON report has them all)")
    return out


def evidence_section(report: Report) -> list[str]:
    """The log lines of the first accepted transactions, cut to the width."""
    if not report.accepted:
        return []
    shown = report.accepted[:SHOWN_EVIDENCE]
    of = f"the first {len(shown)} of {len(report.accepted):,}"
    out = heading(f"Log lines of the accepted relays ({of} transactions)")
    for relay in shown:
        out.append(f"{local(relay.time, report, '%H:%M:%S')}  {relay.host}  {relay.queue_id or ''}")
        out += [cut("  " + line) for line in relay.lines[:SHOWN_LINES]]
        if len(relay.lines) > SHOWN_LINES:
            out.append(f"  … {len(relay.lines) - SHOWN_LINES:,} more lines")
    return out


def hourly_section(report: Report) -> list[str]:
    if attempts_of(report) == 0:
        return []
    hours = per_hour(report.period, ((c.name, c.count) for c in report.attempts_per_hour))
    span = "" if len(hour_slots(report.period)) <= 25 else " (summed over the period)"
    return heading("Relay attempts per hour" + span) + bars(hours)


def hosts_section(report: Report) -> list[str]:
    if attempts_of(report) == 0 or report.period.host is not None:
        return []
    return counts("Relay attempts per relay host", report.attempts_per_host)


def trend_section(report: Report) -> list[str]:
    if not any(d.count for d in report.trend):
        return []
    mark = {report.trend[-1].day: "<-"}
    out = heading("Trend: relay attempts per day")
    out += bars([(d.day, d.count) for d in report.trend], mark)
    summary = trend_summary(report)
    return [*out, *(wrap(summary) if summary else [])]


def seen(o: OffenderLine, report: Report) -> str:
    return f"{short(o.first_seen, report)}-{short(o.last_seen, report)}"


def offenders_section(report: Report) -> list[str]:
    if not report.offenders:
        return []
    more = report.headline.offenders - len(report.offenders)
    top = f" (top {len(report.offenders)} of {report.headline.offenders:,})" if more > 0 else ""
    headers = ("IP", "ATTEMPTS", "ACC", "RCPT", "DOM", "SEEN", "BLOCKED UNTIL", "")
    rows = [
        (
            o.ip,
            f"{o.attempts:,}",
            f"{o.accepted:,}",
            f"{o.recipients:,}",
            f"{o.recipient_domains:,}",
            seen(o, report),
            short(o.blocked_until, report) if o.blocked_until else "-",
            "" if o.returning else "new",
        )
        for o in report.offenders
    ]
    header, groups = table_rows(headers, rows, "lrrrrlll")
    out = [*heading("Top offenders" + top), header]
    for o, group in zip(report.offenders, groups, strict=True):
        names = ", ".join(o.client_names) or "-"
        helos = ", ".join(o.helos) or "-"
        out += [*group, cut(f"      name {names}; helo {helos}")]
    out += wrap(
        "ACC: accepted (relayed); RCPT, DOM: distinct recipients and their domains; "
        "new: no relay attempt stored before this period."
    )
    return out


def suspects_section(report: Report) -> list[str]:
    if not report.suspect_accounts:
        return []
    out = heading("Suspect accounts: authenticated relaying that looks like a stolen password")
    for s in report.suspect_accounts:
        out += wrap(
            f"{s.user}: {s.messages:,} messages from {s.client_ips:,} client addresses to "
            f"{s.outside_recipients:,} outside recipients",
            indent="    ",
            first="  ",
        )
        out += wrap(
            "outside senders: " + ", ".join(s.outside_senders), indent="      ", first="    "
        )
    return out


def traffic_section(report: Report) -> list[str]:
    t = report.traffic
    out = heading("Mail traffic: Grand Totals")
    out += ["messages", ""]
    out += totals(
        [
            (t.received, "received"),
            (t.delivered, "delivered"),
            (t.deferred, f"deferred  ({t.deferrals:,} deferrals)"),
            (t.bounced, "bounced"),
            (t.rejected, f"rejected ({rejected_share(report)})"),
        ]
    )
    out.append("")
    out += totals(
        [
            (human_bytes(t.bytes_received), "bytes received"),
            (human_bytes(t.bytes_delivered), "bytes delivered"),
            (t.senders, "senders"),
            (t.recipients, "recipients"),
        ]
    )
    if t.rejected_by_reason:
        out += ["", *counts("Rejected by reason", t.rejected_by_reason)]
    hours = traffic_per_hour(report.period, t.per_hour)
    if any(h.received or h.rejected or h.deferred or h.bounced for _, h in hours):
        rows = [
            (
                label,
                f"{h.received:,}",
                f"{h.delivered:,}",
                f"{h.deferred:,}",
                f"{h.bounced:,}",
                f"{h.rejected:,}",
            )
            for label, h in hours
        ]
        headers = ("HOUR", "RECEIVED", "DELIVERED", "DEFERRED", "BOUNCED", "REJECTED")
        out += ["", *heading("Traffic per hour"), *table(headers, rows, "lrrrrr")]
    if t.top_sender_domains:
        out += ["", *counts("Top sender domains (messages received)", t.top_sender_domains)]
    if t.top_recipient_domains:
        out += ["", *counts("Top recipient domains (delivered)", t.top_recipient_domains)]
    return out


def seen_section(report: Report) -> list[str]:
    out: list[str] = []
    if report.sources:
        rows = [
            (
                s.host,
                s.path,
                f"{s.lines:,}",
                f"{s.unparsed:,} ({percent(s.unparsed, s.lines)})",
                "-" if s.lag_bytes is None else human_bytes(s.lag_bytes),
            )
            for s in report.sources
        ]
        headers = ("HOST", "SOURCE", "LINES", "UNPARSED", "LAG")
        out += table(headers, rows, "llrrr", flexible=1, cut_at=cut_left)
    for trouble in report.sinks:
        until = f"until {local(trouble.ended_at, report)}" if trouble.ended_at else "STILL FAILING"
        out += wrap(
            f"sink {trouble.sink} failing from {local(trouble.started_at, report)} {until}, "
            f"{trouble.failures:,} failures: {trouble.message}",
            indent="    ",
            first="  ",
        )
    return heading("What relaywatch saw") + out if out else []


def notes_section(report: Report) -> list[str]:
    if not report.notes:
        return []
    out = heading("Notes")
    for note in report.notes:
        out += wrap(note, indent="    ", first="  - ")
    return out


SECTIONS: tuple[Callable[[Report], list[str]], ...] = (
    title,
    headline,
    accepted_section,
    hourly_section,
    hosts_section,
    trend_section,
    offenders_section,
    lambda r: counts("Top target domains (outside recipients)", r.target_domains),
    lambda r: counts("Top sender domains (forged senders)", r.sender_domains),
    lambda r: counts("Top HELO names", r.helos),
    suspects_section,
    evidence_section,
    traffic_section,
    seen_section,
    notes_section,
)


def render_text(report: Report) -> str:
    """The report as plain text, every line at most 80 columns, empty sections left out."""
    blocks = [section(report) for section in SECTIONS]
    return "\n\n".join("\n".join(block) for block in blocks if block) + "\n"
