"""The ``rbldnsd`` sink: an ip4set zone, each entry with the A record 127.0.0.2 and its own TXT."""

from __future__ import annotations

from pathlib import Path

from detector.config import SinkSettings
from detector.sinks.rbldnsd import RbldnsdSink, render_ip4set
from tests.detector.sinks.factories import NOW, decision, expired

UNTIL = "relay abuse, blocked until 2026-12-02T10:00:00Z"


def test_each_entry_is_listed_with_its_refusal_text() -> None:
    decisions = [
        decision(12, "203.0.113.7"), decision(14, "198.51.100.0/24"), expired(16, "192.0.2.16"),
        decision(17, "mallory", scope="user"),
    ]  # fmt: skip
    assert render_ip4set(decisions, NOW).text == (
        "# rbldnsd ip4set of the clients relaywatch blocks for relay abuse.\n"
        "# Managed by relaywatch: every sync rewrites this file, edits are lost.\n"
        "# Serve with: rbldnsd ... bl.example.org:ip4set:/path/to/this/file (reread by mtime)\n"
        f"203.0.113.7 :127.0.0.2:relaywatch decision 12: {UNTIL}\n"
        f"198.51.100.0/24 :127.0.0.2:relaywatch decision 14: {UNTIL}\n"
    )


def test_ipv6_decisions_are_left_out_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch.ip4set"
    decisions = [
        decision(12, "203.0.113.7"),
        decision(13, "2001:db8::5"),
        decision(15, "2001:db8:1::/48"),
    ]
    result = RbldnsdSink(SinkSettings(type="rbldnsd", path=path)).sync(decisions, NOW)
    assert result.ok and result.entries == 1
    assert result.message == (
        "wrote 1 entry; 2 decisions left out: "
        "decision 13: 2001:db8::5 is IPv6 (an ip4set is IPv4 only); "
        "decision 15: 2001:db8:1::/48 is IPv6 (an ip4set is IPv4 only)"
    )
    assert "2001:db8" not in path.read_text()
