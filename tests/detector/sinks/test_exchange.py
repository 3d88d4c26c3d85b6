"""The ``exchange`` sink: the IP Block List sync script and the Exchange 5.5 / IIS list."""

from __future__ import annotations

from pathlib import Path

from detector.config import SinkSettings
from detector.sinks.exchange import ExchangeSink, ps_quote, render_ims, render_powershell
from tests.detector.sinks.factories import NOW, decision, expired

TEXT_12 = "relaywatch decision 12: relay abuse, blocked until 2026-12-02T10:00:00Z"
TEXT_14 = "relaywatch decision 14: relay abuse, blocked until 2026-12-02T12:00:00Z"
TEXT_13 = "relaywatch decision 13: relay abuse, blocked until 2026-12-02T10:00:00Z"
INVARIANT = "[Globalization.CultureInfo]::InvariantCulture"


def test_the_script_removes_unwanted_relaywatch_entries_and_adds_missing_ones() -> None:
    decisions = [
        decision(12, "203.0.113.7"), decision(14, "198.51.100.0/24", hours=3),
        decision(13, "2001:db8::5"), expired(16, "192.0.2.16"),
        decision(17, "mallory", scope="user"),
    ]  # fmt: skip
    assert render_powershell(decisions, NOW).text == (
        "# Syncs the Exchange IP Block List to the clients relaywatch blocks for relay abuse.\n"
        "# Managed by relaywatch: every sync rewrites this file, edits are lost.\n"
        "# Run it in the Exchange Management Shell of an Edge Transport server. Entries whose\n"
        '# Comment starts with "relaywatch" are relaywatch\'s: '
        "those not wanted below are removed,\n"
        "# the missing ones added; other entries are left alone.\n"
        "$ErrorActionPreference = 'Stop'\n"
        "$wanted = @(\n"
        f"    '{TEXT_12}'\n"
        f"    '{TEXT_14}'\n"
        f"    '{TEXT_13}'\n"
        ")\n"
        "$present = @(Get-IPBlockListEntry -ResultSize Unlimited |\n"
        "    Where-Object { $_.Comment -like 'relaywatch*' })\n"
        "foreach ($entry in $present) {\n"
        "    if ($wanted -notcontains $entry.Comment) {\n"
        "        Remove-IPBlockListEntry -Identity $entry.Identity -Confirm:$false\n"
        "    }\n"
        "}\n"
        "$have = @($present | ForEach-Object { $_.Comment })\n"
        f"if ($have -notcontains '{TEXT_12}') {{\n"
        "    Add-IPBlockListEntry -IPAddress 203.0.113.7 -ExpirationTime ([datetime]::Parse("
        f"'2026-12-02T10:00:00Z', {INVARIANT}).ToLocalTime()) -Comment '{TEXT_12}'\n"
        "}\n"
        f"if ($have -notcontains '{TEXT_14}') {{\n"
        "    Add-IPBlockListEntry -IPRange 198.51.100.0/24 -ExpirationTime ([datetime]::Parse("
        f"'2026-12-02T12:00:00Z', {INVARIANT}).ToLocalTime()) -Comment '{TEXT_14}'\n"
        "}\n"
        f"if ($have -notcontains '{TEXT_13}') {{\n"
        "    Add-IPBlockListEntry -IPAddress 2001:db8::5 -ExpirationTime ([datetime]::Parse("
        f"'2026-12-02T10:00:00Z', {INVARIANT}).ToLocalTime()) -Comment '{TEXT_13}'\n"
        "}\n"
    )


def test_no_decision_makes_a_script_that_removes_every_relaywatch_entry() -> None:
    text = render_powershell([], NOW).text
    assert "$wanted = @(\n)\n" in text and "Remove-IPBlockListEntry" in text
    assert "Add-IPBlockListEntry" not in text


def test_single_quotes_are_doubled_for_powershell() -> None:
    assert ps_quote("it's") == "'it''s'"
    assert ps_quote("it\u2019s") == "'it\u2019\u2019s'"  # PowerShell ends a string at ’ too


def test_the_ims_list_gives_address_and_mask_after_the_refusal_text() -> None:
    decisions = [decision(12, "203.0.113.7"), decision(14, "198.51.100.0/24", hours=3)]
    rendered = render_ims([*decisions, decision(13, "2001:db8::5")], NOW)
    assert rendered.text == (
        "# Clients relaywatch blocks for relay abuse, as IP address and mask (IPv4 only), for the\n"
        '# Exchange 5.5 IMS routing restrictions ("hosts and clients that can never route mail")\n'
        "# and the IIS SMTP relay restrictions.\n"
        "# Managed by relaywatch: every sync rewrites this file, edits are lost.\n"
        f"# {TEXT_12}\n"
        "IP=203.0.113.7, MASK=255.255.255.255\n"
        f"# {TEXT_14}\n"
        "IP=198.51.100.0, MASK=255.255.255.0\n"
    )
    assert rendered.left_out == ["decision 13: 2001:db8::5 is IPv6 (IMS and IIS know IPv4 only)"]


def test_the_sink_writes_the_script_and_the_list_next_to_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    settings = SinkSettings(
        type="exchange", path=tmp_path / "relaywatch.ps1", reload_command=f"touch {marker}"
    )
    decisions = [decision(12, "203.0.113.7"), decision(13, "2001:db8::5")]
    result = ExchangeSink(settings).sync(decisions, NOW)
    assert (result.sink, result.ok, result.changed, result.entries) == (
        f"exchange {tmp_path / 'relaywatch.ps1'}", True, True, 2,
    )  # fmt: skip
    assert result.message == (
        f"wrote 2 entries (ran touch {marker}) | exchange-ims {tmp_path / 'relaywatch.ims.txt'}: "
        "wrote 1 entry; 1 decision left out: decision 13: 2001:db8::5 is IPv6 (IMS and IIS know "
        "IPv4 only)"
    )
    assert (tmp_path / "relaywatch.ps1").read_text() == render_powershell(decisions, NOW).text
    assert (tmp_path / "relaywatch.ims.txt").read_text() == render_ims(decisions, NOW).text
    marker.unlink()
    again = ExchangeSink(settings).sync(decisions, NOW)
    assert (again.ok, again.changed) == (True, False) and not marker.exists()


def test_a_dry_run_writes_neither_file(tmp_path: Path) -> None:
    settings = SinkSettings(type="exchange", path=tmp_path / "relaywatch.ps1", dry_run=True)
    result = ExchangeSink(settings).sync([decision(12, "203.0.113.7")], NOW)
    assert result.ok and result.changed and list(tmp_path.iterdir()) == []
