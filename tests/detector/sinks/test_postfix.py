"""The ``postfix-cidr`` sink: a cidr_table(5) file, checked with postmap before it is used."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from detector.config import SinkSettings
from detector.sinks.files import StepFailed
from detector.sinks.postfix import PostfixCidrSink, postmap_config, render_cidr
from tests.detector.sinks.factories import NOW, decision, expired

POSTMAP = shutil.which("postmap")
needs_postmap = pytest.mark.skipif(POSTMAP is None, reason="postmap is not installed here")
UNTIL = "relay abuse, blocked until"


def sink(path: Path, **settings: object) -> PostfixCidrSink:
    return PostfixCidrSink(SinkSettings(type="postfix-cidr", path=path, **settings))


def test_the_table_has_one_reject_line_per_address_or_range() -> None:
    decisions = [
        decision(12, "203.0.113.7"), decision(13, "2001:db8::5", hours=2),
        decision(14, "198.51.100.0/24"), decision(15, "2001:db8:1::/48", hours=24),
        expired(16, "192.0.2.16"), decision(17, "mallory", scope="user"),
    ]  # fmt: skip
    assert render_cidr(decisions, NOW).text == (
        "# Postfix cidr table of the clients relaywatch blocks for relay abuse.\n"
        "# Managed by relaywatch: every sync rewrites this file, edits are lost.\n"
        "# main.cf: smtpd_relay_restrictions = check_client_access cidr:/path/to/this/file, ...\n"
        f"203.0.113.7  REJECT relaywatch decision 12: {UNTIL} 2026-12-02T10:00:00Z\n"
        f"198.51.100.0/24  REJECT relaywatch decision 14: {UNTIL} 2026-12-02T10:00:00Z\n"
        f"2001:db8::5  REJECT relaywatch decision 13: {UNTIL} 2026-12-02T11:00:00Z\n"
        f"2001:db8:1::/48  REJECT relaywatch decision 15: {UNTIL} 2026-12-03T09:00:00Z\n"
    )  # fmt: skip


def test_a_client_inside_a_blocked_range_meets_its_own_decision_first() -> None:
    lines = render_cidr([decision(1, "198.51.100.0/24"), decision(2, "198.51.100.7")], NOW).text
    assert lines.index("198.51.100.7  REJECT") < lines.index("198.51.100.0/24  REJECT")


@needs_postmap
def test_postmap_reads_the_table_as_written(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch.cidr"
    decisions = [
        decision(12, "203.0.113.7"),
        decision(13, "2001:db8::5"),
        decision(14, "198.51.100.0/24"),
    ]
    result = sink(path).sync(decisions, NOW)
    assert result.ok and result.message == "wrote 3 entries (checked by postmap)"
    for client, d in [("203.0.113.7", 12), ("2001:db8::5", 13), ("198.51.100.99", 14)]:
        answer = subprocess.run(
            [str(POSTMAP), "-c", postmap_config(), "-q", client, f"cidr:{path}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert answer.stdout == f"REJECT relaywatch decision {d}: {UNTIL} 2026-12-02T10:00:00Z\n"


@needs_postmap
def test_the_postmap_check_refuses_a_table_postfix_would_skip_lines_of(tmp_path: Path) -> None:
    candidate = tmp_path / "candidate.cidr"
    candidate.write_text("198.51.100.7/24  REJECT relaywatch decision 1: x\n")
    with pytest.raises(StepFailed, match="non-null host address bits"):
        sink(tmp_path / "relaywatch.cidr").verify(candidate)


@needs_postmap
def test_check_runs_postmap_on_the_rendered_table_without_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch.cidr"
    result = sink(path).check([decision(12, "203.0.113.7")], NOW)
    assert result.ok and result.message == "rendered 1 entry; checked by postmap"
    assert not path.exists()


def test_a_failing_postmap_keeps_the_old_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    fatal = "postmap: fatal: cidr table: line 4: bad net/mask pattern"
    (tools / "postmap").write_text(f"#!/bin/sh\necho '{fatal}' >&2\nexit 1\n")
    (tools / "postmap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")
    path = tmp_path / "relaywatch.cidr"
    path.write_text("# the table from before\n")
    result = sink(path, reload_command=f"touch {tmp_path / 'reloaded'}").sync(
        [decision(12, "203.0.113.7")], NOW
    )
    assert not result.ok and not result.changed
    postmap = f"{tools / 'postmap'} -c {postmap_config()} -q 203.0.113.7 cidr:{tmp_path}/"
    assert result.message.startswith(f"check failed, file kept: {postmap}")
    assert result.message.endswith(f".tmp failed (exit status 1): {fatal}")
    assert path.read_text() == "# the table from before\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bin",
        "relaywatch.cidr",
    ]  # no reload, no temp


def test_without_postmap_the_table_is_written_unchecked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = sink(tmp_path / "relaywatch.cidr").sync([decision(12, "203.0.113.7")], NOW)
    assert result.ok and result.message == "wrote 1 entry (postmap not on PATH, not checked)"
