"""The ``sendmail`` sink: a block of ``Connect:`` entries in the access file, then makemap."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from detector.config import SinkSettings
from detector.sinks.sendmail import SendmailSink, render_block
from tests.detector.sinks.factories import NOW, decision, expired

ERROR = "ERROR:5.7.1:550 relaywatch decision"
UNTIL = "relay abuse, blocked until 2026-12-02T10:00:00Z"
OTHER_LINES = (
    b"# site rules\r\n"
    b"Connect:localhost.localdomain\tRELAY\r\n"
    b"To:caf\xe9.example\tRELAY\n"  # Latin-1, not UTF-8: kept as it is
    b"Connect:10.9.8\tERROR:5.7.1:550 Relay abuse detected\n"
)


def sink(path: Path, tmp_path: Path, **settings: object) -> SendmailSink:
    """A sink whose makemap copies its standard input to ``tmp_path/makemap.in``."""
    makemap = f"sh -c {shlex.quote(f'cat > {tmp_path}/makemap.in')}"
    return SendmailSink(
        SinkSettings(type="sendmail", path=path, makemap_command=makemap, **settings)
    )


def test_the_block_refuses_each_client_with_its_decision_text() -> None:
    decisions = [
        decision(12, "203.0.113.7"), decision(13, "2001:db8::5"),
        decision(14, "198.51.100.0/24"), decision(15, "10.9.0.0/16"),
        expired(16, "192.0.2.16"), decision(17, "mallory", scope="user"),
    ]  # fmt: skip
    rendered = render_block(decisions, NOW)
    assert rendered.text == (
        "# BEGIN relaywatch\n"
        "# Managed by relaywatch: every sync rewrites the lines up to END, edits are lost.\n"
        f"Connect:203.0.113.7\t{ERROR} 12: {UNTIL}\n"
        f"Connect:198.51.100\t{ERROR} 14: {UNTIL}\n"
        f"Connect:10.9\t{ERROR} 15: {UNTIL}\n"
        f"Connect:IPv6:2001:db8::5\t{ERROR} 13: {UNTIL}\n"
        "# END relaywatch\n"
    )
    assert (rendered.entries, rendered.left_out) == (4, [])


def test_a_range_off_an_octet_boundary_is_written_as_the_prefixes_that_make_it_up() -> None:
    text = render_block([decision(1, "10.20.16.0/20"), decision(2, "192.0.2.64/30")], NOW).text
    keys = [line.split("\t")[0] for line in text.splitlines() if line.startswith("Connect:")]
    assert keys == [
        "Connect:192.0.2.64", "Connect:192.0.2.65", "Connect:192.0.2.66", "Connect:192.0.2.67",
        *(f"Connect:10.20.{n}" for n in range(16, 32)),
    ]  # fmt: skip


def test_an_ipv6_range_is_left_out_and_said_so(tmp_path: Path) -> None:
    rendered = render_block([decision(7, "2001:db8:1::/48"), decision(8, "203.0.113.8")], NOW)
    assert "2001:db8:1" not in rendered.text and rendered.entries == 1
    result = sink(tmp_path / "access", tmp_path).sync(
        [decision(7, "2001:db8:1::/48"), decision(8, "203.0.113.8")], NOW
    )
    assert result.ok and result.entries == 1
    assert result.message.endswith(
        "; 1 decision left out: decision 7: no Sendmail key for IPv6 range 2001:db8:1::/48"
    )


def test_the_lines_outside_the_block_are_kept_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "access"
    path.write_bytes(OTHER_LINES)
    first = sink(path, tmp_path).sync([decision(12, "203.0.113.7")], NOW)
    assert first.ok
    block = render_block([decision(12, "203.0.113.7")], NOW).text.encode()
    assert path.read_bytes() == OTHER_LINES + block
    path.write_bytes(OTHER_LINES + block + b"# after the block\n")
    second = sink(path, tmp_path).sync([decision(13, "203.0.113.8")], NOW)
    assert second.ok
    new_block = render_block([decision(13, "203.0.113.8")], NOW).text.encode()
    assert path.read_bytes() == OTHER_LINES + new_block + b"# after the block\n"


def test_a_missing_access_file_is_created_and_a_last_line_without_newline_is_ended(
    tmp_path: Path,
) -> None:
    path = tmp_path / "access"
    assert sink(path, tmp_path).sync([decision(12, "203.0.113.7")], NOW).ok
    assert path.read_text() == render_block([decision(12, "203.0.113.7")], NOW).text
    path.write_text("Connect:127.0.0.1\tRELAY")
    assert sink(path, tmp_path).sync([], NOW).ok
    assert path.read_text() == "Connect:127.0.0.1\tRELAY\n" + render_block([], NOW).text


def test_makemap_reads_the_new_access_file_on_its_standard_input(tmp_path: Path) -> None:
    path = tmp_path / "access"
    result = sink(path, tmp_path).sync([decision(12, "203.0.113.7")], NOW)
    assert result.ok
    assert (tmp_path / "makemap.in").read_bytes() == path.read_bytes()
    assert result.message.startswith("wrote 1 entry (ran sh -c ")
    assert result.message.endswith(f" < {path})")


def test_a_failing_makemap_puts_the_previous_access_file_back(tmp_path: Path) -> None:
    path = tmp_path / "access"
    path.write_bytes(OTHER_LINES)
    said = "makemap: error opening type hash map access: Permission denied"
    makemap = f"sh -c 'echo \"{said}\" >&2; exit 1'"
    result = SendmailSink(SinkSettings(type="sendmail", path=path, makemap_command=makemap)).sync(
        [decision(12, "203.0.113.7")], NOW
    )
    assert not result.ok
    assert result.message.endswith(f"failed (exit status 1): {said}; previous file restored")
    assert path.read_bytes() == OTHER_LINES


def test_a_block_without_its_end_is_not_guessed_at(tmp_path: Path) -> None:
    path = tmp_path / "access"
    path.write_bytes(b"Connect:127.0.0.1\tRELAY\n# BEGIN relaywatch\nConnect:192.0.2.1\tREJECT\n")
    before = path.read_bytes()
    result = sink(path, tmp_path).sync([decision(12, "203.0.113.7")], NOW)
    assert not result.ok
    assert result.message == (
        f"{path}: has '# BEGIN relaywatch' but no '# END relaywatch' after it; "
        "mend the file by hand"
    )
    assert path.read_bytes() == before and not (tmp_path / "makemap.in").exists()


def test_the_default_makemap_command_reads_the_file_itself(tmp_path: Path) -> None:
    assert SendmailSink(SinkSettings(type="sendmail", path=tmp_path / "access")).makemap == [
        "makemap", "hash", str(tmp_path / "access"),
    ]  # fmt: skip


@pytest.mark.skipif(
    shutil.which("makemap") is None, reason="makemap (sendmail) is not installed here"
)
def test_the_real_makemap_builds_the_map(tmp_path: Path) -> None:
    path = tmp_path / "access"
    result = SendmailSink(SinkSettings(type="sendmail", path=path)).sync(
        [decision(12, "203.0.113.7")], NOW
    )
    assert result.ok, result.message
    assert (tmp_path / "access.db").exists()
