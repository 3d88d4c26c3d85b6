"""The ``exim`` sink: an iplsearch file whose data is the refusal text (``$host_data``)."""

from __future__ import annotations

from pathlib import Path

from detector.config import SinkSettings
from detector.sinks.exim import EximSink, render_host_list
from tests.detector.sinks.factories import NOW, decision, expired

UNTIL = "relay abuse, blocked until"


def test_each_line_is_an_address_or_range_and_its_refusal_text() -> None:
    decisions = [
        decision(12, "203.0.113.7"), decision(13, "2001:db8::5", hours=2),
        decision(14, "198.51.100.0/24"), decision(15, "2001:db8:1::/48"),
        expired(16, "192.0.2.16"), decision(17, "mallory", scope="user"),
    ]  # fmt: skip
    assert render_host_list(decisions, NOW).text == (
        "# Exim iplsearch file of the clients relaywatch blocks for relay abuse.\n"
        "# Managed by relaywatch: every sync rewrites this file, edits are lost.\n"
        "# ACL (Exim rereads this file for every connection, no reload needed):\n"
        "#   deny  hosts   = net-iplsearch;/path/to/this/file\n"
        "#         message = $host_data\n"
        f"203.0.113.7: relaywatch decision 12: {UNTIL} 2026-12-02T10:00:00Z\n"
        f"198.51.100.0/24: relaywatch decision 14: {UNTIL} 2026-12-02T10:00:00Z\n"
        f'"2001:db8::5": relaywatch decision 13: {UNTIL} 2026-12-02T11:00:00Z\n'
        f'"2001:db8:1::/48": relaywatch decision 15: {UNTIL} 2026-12-02T10:00:00Z\n'
    )


def test_the_sink_needs_no_reload(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch"
    result = EximSink(SinkSettings(type="exim", path=path)).sync([decision(12, "203.0.113.7")], NOW)
    assert (result.ok, result.message) == (True, "wrote 1 entry")
    assert path.read_text().endswith(
        f"203.0.113.7: relaywatch decision 12: {UNTIL} 2026-12-02T10:00:00Z\n"
    )
