"""The ``nftables`` sink: an ``nft -f`` script filling two interval sets with timeouts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from detector.config import SinkSettings
from detector.sinks.files import StepFailed
from detector.sinks.nftables import NftablesSink, render_script
from tests.detector.sinks.factories import NOW, decision, expired

HEAD = (
    "# nftables sets of the clients relaywatch blocks for relay abuse.\n"
    "# Managed by relaywatch: every sync rewrites this file, edits are lost.\n"
    "# Apply with: nft -f /path/to/this/file\n"
)


def _nft_checks() -> str | None:
    """Why the real ``nft -c`` cannot be used here, or ``None`` when it can."""
    nft = shutil.which("nft")
    if nft is None:
        return "nft is not installed here"
    probe = subprocess.run(
        [nft, "-c", "add table inet relaywatch_probe"], capture_output=True, text=True, check=False
    )
    return None if probe.returncode == 0 else f"nft -c does not work here: {probe.stderr.strip()}"


NFT_UNUSABLE = _nft_checks()
needs_nft = pytest.mark.skipif(NFT_UNUSABLE is not None, reason=str(NFT_UNUSABLE))


def sink(path: Path, **settings: object) -> NftablesSink:
    return NftablesSink(SinkSettings(type="nftables", path=path, **settings))


def test_the_script_refills_both_sets_with_per_element_timeouts() -> None:
    decisions = [
        decision(12, "203.0.113.7"), decision(13, "2001:db8::5", hours=2),
        decision(14, "198.51.100.0/24", hours=0.5), decision(15, "2001:db8:1::/48", hours=24),
        expired(16, "192.0.2.16"), decision(17, "mallory", scope="user"),
    ]  # fmt: skip
    assert render_script(decisions, NOW).text == HEAD + (
        "add table inet relaywatch\n"
        "add set inet relaywatch relay_abusers_v4 { type ipv4_addr; flags interval, timeout; }\n"
        "flush set inet relaywatch relay_abusers_v4\n"
        "add element inet relaywatch relay_abusers_v4 { 198.51.100.0/24 timeout 1800s }\n"
        "add element inet relaywatch relay_abusers_v4 { 203.0.113.7 timeout 3600s }\n"
        "add set inet relaywatch relay_abusers_v6 { type ipv6_addr; flags interval, timeout; }\n"
        "flush set inet relaywatch relay_abusers_v6\n"
        "add element inet relaywatch relay_abusers_v6 { 2001:db8::5 timeout 7200s }\n"
        "add element inet relaywatch relay_abusers_v6 { 2001:db8:1::/48 timeout 86400s }\n"
    )


def test_no_decision_leaves_empty_sets_in_a_named_table() -> None:
    assert render_script([], NOW, "filter", "blocked").text == HEAD + (
        "add table inet filter\n"
        "add set inet filter blocked_v4 { type ipv4_addr; flags interval, timeout; }\n"
        "flush set inet filter blocked_v4\n"
        "add set inet filter blocked_v6 { type ipv6_addr; flags interval, timeout; }\n"
        "flush set inet filter blocked_v6\n"
    )


def test_an_address_inside_a_blocked_range_splits_the_range_by_timeout() -> None:
    decisions = [decision(1, "198.51.100.0/24", hours=1), decision(2, "198.51.100.7", hours=3)]
    elements = [
        line.split("{ ")[1].removesuffix(" }")
        for line in render_script(decisions, NOW).text.splitlines()
        if line.startswith("add element")
    ]
    assert elements == [
        "198.51.100.0-198.51.100.6 timeout 3600s",
        "198.51.100.7 timeout 10800s",
        "198.51.100.8-198.51.100.255 timeout 3600s",
    ]


def test_an_address_a_longer_range_covers_disappears_into_it() -> None:
    decisions = [decision(1, "10.0.0.0/8", hours=5), decision(2, "10.1.2.3"), decision(3, "::5")]
    elements = [
        line for line in render_script(decisions, NOW).text.splitlines() if "element" in line
    ]
    assert elements == [
        "add element inet relaywatch relay_abusers_v4 { 10.0.0.0/8 timeout 18000s }",
        "add element inet relaywatch relay_abusers_v6 { ::5 timeout 3600s }",
    ]


def test_a_timeout_is_at_least_one_second_and_at_most_a_year() -> None:
    decisions = [decision(1, "192.0.2.1", hours=0.0001), decision(2, "192.0.2.9", hours=24 * 800)]
    text = render_script(decisions, NOW).text
    assert "{ 192.0.2.1 timeout 1s }" in text and "{ 192.0.2.9 timeout 31536000s }" in text


@needs_nft
def test_nft_accepts_the_script_in_check_mode(tmp_path: Path) -> None:
    decisions = [
        decision(1, "198.51.100.0/24"), decision(2, "198.51.100.7", hours=3),
        decision(3, "10.0.0.0/8", hours=5), decision(4, "10.1.2.3"), decision(5, "2001:db8::5"),
        decision(6, "2001:db8::/32", hours=2), decision(7, "::5"),
    ]  # fmt: skip
    path = tmp_path / "relaywatch.nft"
    result = sink(path).check(decisions, NOW)
    assert result.ok, result.message
    assert result.message == "rendered 7 entries; checked by nft -c"
    assert not path.exists()
    synced = sink(path).sync(decisions, NOW)
    assert synced.ok and synced.message == "wrote 7 entries (checked by nft -c)"


@needs_nft
def test_the_nft_check_refuses_a_script_nft_would_refuse(tmp_path: Path) -> None:
    candidate = tmp_path / "candidate.nft"
    candidate.write_text(
        "add table inet relaywatch\nadd element inet relaywatch nowhere { 192.0.2.1 }\n"
    )
    with pytest.raises(StepFailed, match=r"nft -c -f .*candidate.nft failed \(exit status 1\): "):
        sink(tmp_path / "relaywatch.nft").verify(candidate)


def test_a_failing_apply_command_keeps_the_previous_script(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch.nft"
    path.write_text("# the script from before\n")
    said = "Error: Could not process rule: Operation not permitted"
    apply = f"sh -c 'echo \"{said}\" >&2; exit 1'"
    result = sink(path, reload_command=apply).sync([decision(1, "192.0.2.1")], NOW)
    assert not result.ok
    assert result.message.endswith(f"failed (exit status 1): {said}; previous file restored")
    assert path.read_text() == "# the script from before\n"


def test_without_an_apply_command_the_script_is_only_written(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch.nft"
    result = sink(path).sync([decision(1, "192.0.2.1")], NOW)
    assert result.ok and path.read_text() == render_script([decision(1, "192.0.2.1")], NOW).text
