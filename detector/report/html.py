"""The tracking report as one self-contained HTML file: inline CSS and SVG charts, no script,
nothing loaded from elsewhere, so that it reads the same in a mail client and a browser.

The layout is a single column of tables (what mail clients render reliably), at most 760 px
wide and still readable at 600.  The open-relay headline comes first, in red, with the
transactions; the colours that matter are inline styles, because some mail clients drop the
``<style>`` block.  Every string from the logs is escaped (:func:`e`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from detector.report.model import AcceptedRelay, Count, OffenderLine, Report
from detector.report.text import (
    SHOWN_EVIDENCE,
    SHOWN_LINES,
    attempts_of,
    clean,
    hour_slots,
    human_bytes,
    is_one_day,
    local,
    open_relay_line,
    per_hour,
    percent,
    plural,
    quiet_line,
    recipients_of,
    rejected_share,
    relayed_for,
    span,
    traffic_per_hour,
    trend_summary,
)

OPEN_RELAY_RED = "#c62828"  # the open-relay headline; nothing else is this colour
OPEN_RELAY_TINT = "#fdecea"
QUIET_GREEN = "#1a7f37"
QUIET_TINT = "#e6f4ea"
ATTEMPTS_AMBER = "#d97706"
ATTEMPTS_PALE = "#f5c77e"
RECEIVED_BLUE = "#2f6fba"
REJECTED_GREY = "#8c959f"
INK = "#1f2328"
MUTED = "#57606a"
RULE = "#d8dee4"
MONO = "'DejaVu Sans Mono',Menlo,Consolas,monospace"

STYLE = f"""
body{{margin:0;padding:0;background:#eef1f4;color:{INK};
font-family:-apple-system,'Segoe UI',Helvetica,Arial,'DejaVu Sans',sans-serif;
font-size:14px;line-height:1.4}}
.page{{max-width:760px;margin:0 auto;padding:16px 20px 24px;background:#ffffff}}
h1{{font-size:20px;margin:0 0 2px}}
h2{{font-size:16px;margin:26px 0 8px;padding-bottom:3px;border-bottom:2px solid {RULE}}}
h3{{font-size:14px;margin:12px 0 4px}}
table{{border-collapse:collapse;width:100%}}
th,td{{padding:3px 6px;text-align:left;vertical-align:top}}
th{{font-size:12px;color:{MUTED};font-weight:600;border-bottom:1px solid {RULE}}}
td{{border-bottom:1px solid #eef1f4}}
.n{{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}}
.mono{{font-family:{MONO};font-size:12px}}
.wrap{{word-break:break-all;overflow-wrap:anywhere}}
.muted{{color:{MUTED};font-size:12px}}
.badge{{display:inline-block;white-space:nowrap;padding:0 5px;border-radius:3px;
font-size:11px;font-weight:600}}
pre{{margin:4px 0 0;padding:6px 8px;background:#ffffff;border:1px solid #f1c0bb;
font-family:{MONO};font-size:11px;line-height:1.35;white-space:pre-wrap;
word-break:break-all;overflow-wrap:anywhere}}
svg{{display:block;max-width:100%}}
"""


def e(value: object) -> str:
    """Text from the logs (or anywhere) made safe for HTML text and attribute values."""
    return html.escape(clean(str(value)), quote=True)


def n(value: int) -> str:
    return f"{value:,}"


def section(title: str, body: str) -> str:
    return f"<h2>{e(title)}</h2>\n{body}\n" if body else ""


def count_table(title: str, items: Sequence[Count], what: str) -> str:
    if not items:
        return ""
    rows = "".join(
        f'<tr><td class="mono wrap">{e(c.name)}</td><td class="n">{n(c.count)}</td></tr>'
        for c in items
    )
    return (
        f"<h3>{e(title)}</h3><table><tr><th>{e(what)}</th>"
        f'<th class="n">count</th></tr>{rows}</table>'
    )


# --- charts ---------------------------------------------------------------------------------


def bar_chart(
    items: Sequence[tuple[str, int]],
    label: str,
    color: str,
    *,
    last_color: str | None = None,
    every: int = 1,
    values: bool = False,
    height: int = 150,
) -> str:
    """Vertical bars in an SVG that scales to the page: ``label`` for screen readers, a
    tooltip per bar, the axis labels of every ``every``-th bar, the counts above the bars
    when ``values``."""
    chart_width, top, bottom, left = 720, 18, 20, 44
    plot = height - top - bottom
    largest = max((v for _, v in items), default=0) or 1
    step = (chart_width - left) / max(1, len(items))
    bar = step * 0.72
    parts = [
        f'<svg width="100%" viewBox="0 0 {chart_width} {height}" role="img" '
        f'aria-label="{e(label)}" style="font-family:Helvetica,Arial,\'DejaVu Sans\','
        f'sans-serif">',
        f'<line x1="{left}" y1="{top + plot}" x2="{chart_width}" y2="{top + plot}" '
        f'stroke="{MUTED}" stroke-width="1"/>',
        f'<line x1="{left}" y1="{top}" x2="{chart_width}" y2="{top}" stroke="{RULE}" '
        'stroke-width="1" stroke-dasharray="3,3"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11" '
        f'fill="{MUTED}">{n(largest)}</text>',
        f'<text x="{left - 6}" y="{top + plot}" text-anchor="end" font-size="11" '
        f'fill="{MUTED}">0</text>',
    ]
    for i, (name, value) in enumerate(items):
        x = left + i * step + (step - bar) / 2
        h = plot * value / largest
        fill = last_color if last_color and i == len(items) - 1 else color
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
            f'fill="{fill}"><title>{e(name)}: {n(value)}</title></rect>'
        )
        if values:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{top + plot - h - 4:.1f}" text-anchor="middle" '
                f'font-size="11" fill="{INK}">{n(value)}</text>'
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - 5}" text-anchor="middle" '
                f'font-size="11" fill="{MUTED}">{e(name)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def traffic_chart(report: Report) -> str:
    """Received and rejected messages per hour, side by side."""
    hours = traffic_per_hour(report.period, report.traffic.per_hour)
    if not any(h.received or h.rejected for _, h in hours):
        return ""
    chart_width, height, top, bottom, left = 720, 150, 18, 20, 44
    plot = height - top - bottom
    largest = max(max(h.received, h.rejected) for _, h in hours) or 1
    step = (chart_width - left) / len(hours)
    bar = step * 0.36
    parts = [
        f'<svg width="100%" viewBox="0 0 {chart_width} {height}" role="img" '
        'aria-label="messages received and rejected per hour" '
        "style=\"font-family:Helvetica,Arial,'DejaVu Sans',sans-serif\">",
        f'<line x1="{left}" y1="{top + plot}" x2="{chart_width}" y2="{top + plot}" '
        f'stroke="{MUTED}" stroke-width="1"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11" '
        f'fill="{MUTED}">{n(largest)}</text>',
        f'<rect x="{left + 4}" y="2" width="10" height="10" fill="{RECEIVED_BLUE}"/>'
        f'<text x="{left + 18}" y="11" font-size="11" fill="{INK}">received</text>'
        f'<rect x="{left + 84}" y="2" width="10" height="10" fill="{REJECTED_GREY}"/>'
        f'<text x="{left + 98}" y="11" font-size="11" fill="{INK}">rejected</text>',
    ]
    for i, (label, h) in enumerate(hours):
        x = left + i * step + step * 0.14
        for j, (what, value, color) in enumerate(
            (("received", h.received, RECEIVED_BLUE), ("rejected", h.rejected, REJECTED_GREY))
        ):
            size = plot * value / largest
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{top + plot - size:.1f}" width="{bar:.1f}" '
                f'height="{size:.1f}" fill="{color}"><title>{e(label)}:00 {what} {n(value)}'
                "</title></rect>"
            )
        if i % 3 == 0:
            parts.append(
                f'<text x="{x + bar:.1f}" y="{height - 5}" text-anchor="middle" font-size="11" '
                f'fill="{MUTED}">{e(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


# --- sections -------------------------------------------------------------------------------


def header(report: Report) -> str:
    p = report.period
    hosts = f"relay host {p.host}" if p.host else "all relay hosts"
    return (
        f"<h1>Relay abuse report: {e(p.label)}</h1>"
        f'<div class="muted">{e(p.timezone)} · {e(hosts)} · generated '
        f"{e(local(report.generated_at, report, '%H:%M %Z'))} by relaywatch</div>"
    )


RED_CELL = f"border-bottom:1px solid #f1c0bb;background:{OPEN_RELAY_TINT}"


def relayed_for_table(report: Report) -> str:
    """Who the server relayed for: one row per outside client."""
    rows = "".join(
        f'<tr><td class="wrap" style="{RED_CELL}"><span class="mono"><b>{e(c.ip)}</b></span>'
        f'<div class="muted wrap">{e(", ".join(c.names) or "unknown")}</div>'
        f'<div class="muted wrap">HELO {e(", ".join(c.helos) or "(none)")}</div></td>'
        f'<td class="n" style="{RED_CELL}"><b>{n(c.transactions)}</b></td>'
        f'<td class="n" style="{RED_CELL}"><b>{n(c.recipients)}</b></td>'
        f'<td style="{RED_CELL};white-space:nowrap">{e(span(c.first, c.last, report))}</td></tr>'
        for c in relayed_for(report)
    )
    return (
        "<h3>Relayed for</h3><table><tr><th>outside client (reverse name, HELO)</th>"
        '<th class="n">transactions</th><th class="n">recipients</th><th>when</th></tr>'
        f"{rows}</table>"
    )


def transaction_row(relay: AcceptedRelay, report: Report) -> str:
    return (
        f'<tr><td style="white-space:nowrap">{e(local(relay.time, report, "%H:%M:%S"))}'
        f'<div class="muted mono">{e(relay.queue_id or "")}</div></td>'
        f'<td><span class="mono" style="white-space:nowrap">{e(relay.client_ip or "?")}</span>'
        f'<div class="muted wrap">{e(relay.client_name or "unknown")}</div>'
        f'<div class="muted wrap">HELO {e(relay.helo or "(none)")}</div></td>'
        f'<td class="mono wrap"><span class="muted">from</span> &lt;{e(relay.sender or "")}&gt;'
        f'<div><span class="muted">to</span> {e(recipients_of(relay, 3))}</div></td></tr>'
    )


def open_relay(report: Report) -> str:
    """The red headline, who the server relayed for and each transaction in one row."""
    if not report.headline.open_relay:
        return ""
    count = len(report.accepted)
    shown = report.accepted[: report.top]
    more = count - len(shown)
    rest = (
        f'<p class="muted">… {n(more)} more transactions: the JSON report has them all.</p>'
        if more > 0
        else ""
    )
    transactions = (
        "<h3>Transactions</h3><table><tr><th>time</th><th>client</th>"
        "<th>sender and recipients</th></tr>"
        + "".join(transaction_row(relay, report) for relay in shown)
        + "</table>"
        + rest
        if shown
        else ""
    )
    return (
        '<table role="presentation" style="width:100%;margin:16px 0 0;border-collapse:collapse">'
        f'<tr><td style="background:{OPEN_RELAY_RED};color:#ffffff;padding:14px 16px;'
        f'font-size:20px;font-weight:bold;border:0">{e(open_relay_line(report))}'
        '<div style="font-size:13px;font-weight:normal;margin-top:4px">Mail from outside '
        f"clients was accepted and sent on to outside recipients in {plural(count, 'transaction')}"
        ". Close the relay (mynetworks, relay restrictions, connectors); the log lines are "
        "at the end of this report.</div></td></tr></table>"
        f'<div style="padding:0 10px 8px;border:2px solid {OPEN_RELAY_RED};border-top:0">'
        + (relayed_for_table(report) if report.accepted else "")
        + transactions
        + "</div>"
    )


def evidence(report: Report) -> str:
    """The log lines of the first accepted transactions."""
    if not report.accepted:
        return ""
    shown = report.accepted[:SHOWN_EVIDENCE]
    blocks = []
    for relay in shown:
        lines = "\n".join(e(line) for line in relay.lines[:SHOWN_LINES])
        if len(relay.lines) > SHOWN_LINES:
            lines += f"\n… {n(len(relay.lines) - SHOWN_LINES)} more lines"
        blocks.append(
            f'<div style="margin:8px 0 0"><b>{e(local(relay.time, report, "%H:%M:%S"))}</b> · '
            f"{e(relay.host)} · queue {e(relay.queue_id or '-')}<pre>{lines}</pre></div>"
        )
    of = f"the first {len(shown)} of {n(len(report.accepted))}"
    return section(f"Log lines of the accepted relays ({of} transactions)", "".join(blocks))


def tiles(report: Report) -> str:
    h = report.headline
    if attempts_of(report) == 0 and not h.open_relay:
        blocks = (
            f'<div class="muted" style="margin-top:4px">Blocks: {n(h.new_blocks)} new, '
            f"{n(h.expired_blocks)} ended, {n(h.active_blocks)} in force; "
            f"{n(h.enforcement_hits)} enforcement hits.</div>"
            if h.new_blocks or h.expired_blocks or h.active_blocks or h.enforcement_hits
            else ""
        )
        return (
            f'<div style="margin:16px 0 0;padding:12px 16px;background:{QUIET_TINT};'
            f'color:{QUIET_GREEN};font-size:18px;font-weight:bold">{e(quiet_line(report))}'
            f"</div>{blocks}"
        )
    items = (
        (h.refused_relays, "refused relay attempts", ATTEMPTS_AMBER),
        (h.offenders, "offenders", INK),
        (h.new_blocks, "new blocks", INK),
        (h.enforcement_hits, "enforcement hits", INK),
        (h.active_blocks, "blocks in force", MUTED),
        (h.expired_blocks, "blocks ended", MUTED),
    )
    cells = [
        f'<td style="width:33%;padding:8px 10px;border:1px solid {RULE};background:#f6f8fa">'
        f'<div style="font-size:22px;font-weight:bold;color:{color}">{n(value)}</div>'
        f'<div class="muted">{e(label)}</div></td>'
        for value, label, color in items
    ]
    return (
        '<table role="presentation" style="margin-top:16px;border-collapse:separate;'
        'border-spacing:4px">'
        f"<tr>{''.join(cells[:3])}</tr><tr>{''.join(cells[3:])}</tr></table>"
    )


def charts(report: Report) -> str:
    if attempts_of(report) == 0:
        return ""
    hours = per_hour(report.period, ((c.name, c.count) for c in report.attempts_per_hour))
    peak_label, peak = max(hours, key=lambda item: item[1])
    summed = "" if len(hour_slots(report.period)) <= 25 else ", summed over the period"
    return section(
        "Relay attempts per hour",
        bar_chart(hours, "relay attempts per hour", ATTEMPTS_AMBER, every=3)
        + f'<div class="muted">Busiest hour {e(peak_label)}:00 with {n(peak)} attempts'
        f"{summed}.</div>",
    )


def trend(report: Report) -> str:
    if not any(d.count for d in report.trend):
        return ""
    days = [(d.day[5:], d.count) for d in report.trend]
    summary = trend_summary(report)
    return section(
        "Trend: relay attempts per day",
        bar_chart(
            days,
            "relay attempts per day",
            ATTEMPTS_PALE,
            last_color=ATTEMPTS_AMBER,
            values=True,
            height=130,
        )
        + (f'<div class="muted">{e(summary)}</div>' if summary else ""),
    )


def per_host(report: Report) -> str:
    if attempts_of(report) == 0 or report.period.host is not None:
        return ""
    return count_table("Relay attempts per relay host", report.attempts_per_host, "relay host")


def badge(o: OffenderLine) -> str:
    if o.returning:
        return f'<span class="badge" style="background:#eef1f4;color:{MUTED}">returning</span>'
    return '<span class="badge" style="background:#fff1d6;color:#8a4b00">new</span>'


def offender_row(o: OffenderLine, report: Report) -> str:
    relayed = (
        f'<div style="color:{OPEN_RELAY_RED};font-weight:bold">{n(o.accepted)} relayed</div>'
        if o.accepted
        else ""
    )
    until = (
        e(local(o.blocked_until, report, "%H:%M"))
        if o.blocked_until
        else f'<span style="color:{MUTED}">not blocked</span>'
    )
    names = ", ".join(o.client_names) or "(no reverse name logged)"
    helos = ", ".join(o.helos) or "(none)"
    return (
        f'<tr><td class="wrap"><span class="mono"><b>{e(o.ip)}</b></span> {badge(o)}'
        f'<div class="muted wrap">{e(names)}</div>'
        f'<div class="muted wrap">HELO {e(helos)}</div></td>'
        f'<td class="n"><b>{n(o.attempts)}</b>{relayed}</td>'
        f'<td class="n">{n(o.recipients)}<div class="muted">{n(o.recipient_domains)} '
        "domains</div></td>"
        f'<td style="white-space:nowrap">{e(local(o.first_seen, report))}–'
        f"{e(local(o.last_seen, report))}</td>"
        f'<td style="white-space:nowrap">{until}</td></tr>'
    )


def offenders(report: Report) -> str:
    if not report.offenders:
        return ""
    total = report.headline.offenders
    title = "Top offenders" + (
        f" ({len(report.offenders)} of {n(total)})" if total > len(report.offenders) else ""
    )
    rows = "".join(offender_row(o, report) for o in report.offenders)
    return section(
        title,
        '<table><tr><th>client (reverse name, HELO)</th><th class="n">attempts</th>'
        '<th class="n">recipients</th><th>seen</th><th>blocked until</th></tr>'
        f"{rows}</table>",
    )


def who(report: Report) -> str:
    lists = [
        count_table("Targeted domains", report.target_domains, "outside recipient domain"),
        count_table("Sender domains", report.sender_domains, "sender domain (forged)"),
        count_table("HELO names", report.helos, "HELO"),
    ]
    cells = "".join(
        f'<td style="width:33%;padding:0 6px 0 0;border:0;vertical-align:top">{part}</td>'
        for part in lists
        if part
    )
    if not cells:
        return ""
    return section("What they sent", f'<table role="presentation"><tr>{cells}</tr></table>')


def suspects(report: Report) -> str:
    if not report.suspect_accounts:
        return ""
    rows = "".join(
        f'<tr><td class="mono wrap"><b>{e(s.user)}</b></td><td class="n">{n(s.messages)}</td>'
        f'<td class="n">{n(s.client_ips)}</td><td class="n">{n(s.outside_recipients)}</td>'
        f'<td class="mono wrap">{"<br>".join(e(a) for a in s.outside_senders)}</td></tr>'
        for s in report.suspect_accounts
    )
    return section(
        "Suspect accounts",
        '<p class="muted" style="margin:0 0 4px">Authenticated relaying that looks like a '
        "stolen password: outside sender addresses not the user's own, many outside "
        "recipients, many client addresses.</p>"
        '<table><tr><th>SASL user</th><th class="n">messages</th><th class="n">client IPs</th>'
        '<th class="n">outside recipients</th><th>outside senders</th></tr>'
        f"{rows}</table>",
    )


def traffic(report: Report) -> str:
    t = report.traffic
    left = (
        ("received", n(t.received)),
        ("delivered", n(t.delivered)),
        ("deferred", f"{n(t.deferred)} <span class='muted'>({n(t.deferrals)} deferrals)</span>"),
        ("bounced", n(t.bounced)),
        (
            "rejected",
            f"{n(t.rejected)} <span class='muted'>({rejected_share(report)})</span>",
        ),
    )
    right = (
        ("bytes received", human_bytes(t.bytes_received)),
        ("bytes delivered", human_bytes(t.bytes_delivered)),
        ("senders", n(t.senders)),
        ("recipients", n(t.recipients)),
        ("", ""),
    )
    rows = "".join(
        f'<tr><td>{a}</td><td class="n">{b}</td><td style="width:24px;border:0"></td>'
        f'<td>{c}</td><td class="n">{d}</td></tr>'
        for (a, b), (c, d) in zip(left, right, strict=True)
    )
    domains = "".join(
        f'<td style="width:50%;padding:0 6px 0 0;border:0;vertical-align:top">{part}</td>'
        for part in (
            count_table("Top sender domains", t.top_sender_domains, "messages received from"),
            count_table("Top recipient domains", t.top_recipient_domains, "delivered to"),
        )
        if part
    )
    chart = traffic_chart(report)
    return section(
        "Mail traffic",
        f"<h3>Grand totals</h3><table>{rows}</table>"
        + count_table("Rejected by reason", t.rejected_by_reason, "reason")
        + (f"<h3>Messages per hour</h3>{chart}" if chart else "")
        + (f'<table role="presentation"><tr>{domains}</tr></table>' if domains else ""),
    )


def seen(report: Report) -> str:
    parts = []
    if report.sources:
        rows = "".join(
            f'<tr><td class="mono">{e(s.host)}</td><td class="mono wrap">{e(s.path)}</td>'
            f'<td class="n">{n(s.lines)}</td>'
            f'<td class="n">{n(s.unparsed)} <span class="muted">'
            f"({percent(s.unparsed, s.lines)})</span></td>"
            f'<td class="n">{"-" if s.lag_bytes is None else human_bytes(s.lag_bytes)}</td></tr>'
            for s in report.sources
        )
        parts.append(
            '<table><tr><th>host</th><th>source</th><th class="n">lines</th>'
            f'<th class="n">unparsed</th><th class="n">lag</th></tr>{rows}</table>'
        )
    if report.sinks:
        rows = "".join(
            f'<tr><td class="mono">{e(s.sink)}</td>'
            f"<td>{e(local(s.started_at, report))}–"
            + (
                e(local(s.ended_at, report))
                if s.ended_at
                else f'<b style="color:{ATTEMPTS_AMBER}">still failing</b>'
            )
            + f'</td><td class="n">{n(s.failures)}</td>'
            f'<td class="mono wrap">{e(s.message)}</td></tr>'
            for s in report.sinks
        )
        parts.append(
            "<h3>Sinks that could not push the blocks</h3>"
            '<table><tr><th>sink</th><th>failing</th><th class="n">failures</th>'
            f"<th>last error</th></tr>{rows}</table>"
        )
    return section("What relaywatch saw", "".join(parts))


def notes(report: Report) -> str:
    if not report.notes:
        return ""
    items = "".join(f"<li>{e(note)}</li>" for note in report.notes)
    return section("Notes", f'<ul style="margin:0;padding-left:20px">{items}</ul>')


def render_html(report: Report) -> str:
    """The report as one HTML document: no script, nothing to fetch, log text escaped."""
    span = "" if is_one_day(report.period) else " (period)"
    body = "".join(
        part(report)
        for part in (
            header,
            open_relay,
            tiles,
            charts,
            trend,
            offenders,
            who,
            per_host,
            suspects,
            evidence,
            traffic,
            seen,
            notes,
        )
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>relaywatch report {e(report.period.label)}{span}</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n"
        f'<div class="page">\n{body}</div>\n</body>\n</html>\n'
    )
