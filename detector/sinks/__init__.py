"""Sinks: the places relaywatch pushes its decisions to, so that the mail server (or a
firewall, or a DNSBL) refuses the blocked clients itself (DESIGN.md §4).

Every sync is full and idempotent: the sink is given the active decisions and makes its
target hold exactly those, so a missed or failed sync heals on the next one.  Every refusal a
sink writes carries :func:`detector.decide.refusal_text`, by which relaywatch knows its own
refusals in the mail server's log.  A sink with ``dry_run = true`` renders and reports what
it would do; it writes and runs nothing.

One module per target, each with the one renderer of its format (also served by
``GET /v1/blocklist?format=…`` through :func:`render`)::

    module        type            target                                          format
    postfix.py    postfix-cidr    cidr: access table (+ reload_command)           postfix
    policy.py     postfix-policy  policy delegation service, answers from memory  -
    exim.py       exim            iplsearch file: deny hosts = net-iplsearch;…    exim
    sendmail.py   sendmail        Connect: block of the access map (+ makemap)    sendmail
    exchange.py   exchange        IP Block List sync script, IMS/IIS list         exchange-ps, ims
    nftables.py   nftables        nft -f script, sets with per-element timeouts   nft
    rbldnsd.py    rbldnsd         ip4set zone (IPv4 only)                         rbldnsd
    webhook.py    webhook         JSON POST of every change                       -

``files.py`` holds what the file sinks share (the atomic replace, the check and apply steps,
putting the old file back), ``sync.py`` the result, the protocol and the choice of decisions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime

from detector.config import Settings, SinkSettings
from detector.decide import Decision, normal_value
from detector.errors import InputError
from detector.sinks import exchange, exim, nftables, postfix, rbldnsd, sendmail
from detector.sinks.sync import Rendered, Sink, SyncResult, blocked, decision_json, in_force
from detector.sinks.webhook import WebhookSink

__all__ = ["BLOCKLIST_FORMATS", "Sink", "SyncResult", "make_sinks", "render"]


def _json(decisions: Sequence[Decision], now: datetime) -> Rendered:
    """Every decision in force, user decisions too, as a JSON array."""
    active = in_force(decisions, now)
    return Rendered(json.dumps([decision_json(d) for d in active], indent=2) + "\n", len(active))


def _text(decisions: Sequence[Decision], now: datetime) -> Rendered:
    """One blocked address or CIDR range a line (user decisions are not addresses)."""
    entries, problems = blocked(decisions, now)
    return Rendered(
        "".join(f"{normal_value(b.network)}\n" for b in entries), len(entries), problems
    )


_RENDERERS: dict[str, Callable[[Sequence[Decision], datetime], Rendered]] = {
    "json": _json,
    "text": _text,
    "postfix": postfix.render_cidr,
    "exim": exim.render_host_list,
    "sendmail": sendmail.render_block,
    "nft": nftables.render_script,
    "rbldnsd": rbldnsd.render_ip4set,
    "exchange-ps": exchange.render_powershell,
    "ims": exchange.render_ims,
}
BLOCKLIST_FORMATS = tuple(_RENDERERS)


def render(fmt: str, decisions: Sequence[Decision], now: datetime) -> str:
    """``decisions`` (those in force at ``now``) in one target's format, as its sink writes
    them; :class:`InputError` for a format not in :data:`BLOCKLIST_FORMATS`."""
    renderer = _RENDERERS.get(fmt)
    if renderer is None:
        raise InputError(f"unknown blocklist format {fmt!r} (use {', '.join(BLOCKLIST_FORMATS)})")
    return renderer(decisions, now).text


_SINKS: dict[str, Callable[[SinkSettings], Sink]] = {
    "postfix-cidr": postfix.PostfixCidrSink,
    "exim": exim.EximSink,
    "sendmail": sendmail.SendmailSink,
    "exchange": exchange.ExchangeSink,
    "nftables": nftables.NftablesSink,
    "rbldnsd": rbldnsd.RbldnsdSink,
    "webhook": WebhookSink,
}


def make_sinks(settings: Settings) -> list[Sink]:
    """One sink per ``[[sinks]]`` entry, in order (a policy service is not started yet)."""
    sinks: list[Sink] = []
    for entry in settings.sinks:
        if entry.type == "postfix-policy":
            from detector.sinks.policy import PolicySink  # it imports this package

            sinks.append(PolicySink(entry))
        else:
            sinks.append(_SINKS[entry.type](entry))
    return sinks
