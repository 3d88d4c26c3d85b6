"""What every file sink does the same way: the atomic replace, skipping unchanged content,
keeping the old file when a step fails, dry runs.  Shown with the Exim and Postfix sinks."""

from __future__ import annotations

import os
import shlex
import threading
from pathlib import Path

import pytest

from detector.config import SinkSettings
from detector.sinks.exim import EximSink, render_host_list
from detector.sinks.postfix import PostfixCidrSink
from tests.detector.sinks.factories import NOW, decision

FIRST = [decision(12, "203.0.113.7")]
SECOND = [decision(12, "203.0.113.7"), decision(13, "2001:db8::5")]


def exim(path: Path, **settings: object) -> EximSink:
    return EximSink(SinkSettings(type="exim", path=path, **settings))


def failing_command(tmp_path: Path, stderr: str) -> str:
    """A command line that writes ``stderr`` and exits 1, as a broken reload does."""
    script = tmp_path / "broken-reload"
    script.write_text(f"#!/bin/sh\necho 'some output'\necho {shlex.quote(stderr)} >&2\nexit 1\n")
    script.chmod(0o755)
    return str(script)


def test_a_sync_writes_the_rendered_file_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch"
    result = exim(path).sync(SECOND, NOW)
    assert path.read_text() == render_host_list(SECOND, NOW).text
    assert (result.sink, result.ok, result.changed, result.entries) == (
        f"exim {path}", True, True, 2,
    )  # fmt: skip
    assert result.message == "wrote 2 entries"
    assert [p.name for p in tmp_path.iterdir()] == ["relaywatch"]  # no temporary file left


def test_unchanged_content_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch"
    sink = exim(path, reload_command=f"touch {tmp_path / 'reloaded'}")
    sink.sync(FIRST, NOW)
    (tmp_path / "reloaded").unlink()
    os.utime(path, (1_000_000_000, 1_000_000_000))
    inode = path.stat().st_ino
    result = sink.sync(FIRST, NOW)
    assert (result.ok, result.changed, result.message) == (True, False, "unchanged, 1 entry")
    assert path.stat().st_mtime == 1_000_000_000 and path.stat().st_ino == inode
    assert not (tmp_path / "reloaded").exists()  # nothing changed, nothing to reload


def test_a_reader_never_sees_a_half_written_file(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch"
    many = [decision(n, f"198.51.{n // 256}.{n % 256}") for n in range(1, 1000)]
    sink = exim(path)
    sink.sync(FIRST, NOW)
    whole = {render_host_list(FIRST, NOW).text, render_host_list(many, NOW).text}
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(40):
            assert sink.sync(many if n % 2 == 0 else FIRST, NOW).ok
    finally:
        stop.set()
        reader.join()
    assert seen <= whole and len(seen) == 2


def test_the_mode_of_the_replaced_file_is_kept_and_a_new_file_is_0644(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch"
    exim(path).sync(FIRST, NOW)
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o640)
    exim(path).sync(SECOND, NOW)
    assert path.stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand a file to another owner")
def test_the_owner_of_the_replaced_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch"
    exim(path).sync(FIRST, NOW)
    os.chown(path, 4321, 4322)
    exim(path).sync(SECOND, NOW)
    assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322)


def test_a_failing_reload_puts_the_previous_file_back_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch.cidr"
    PostfixCidrSink(SinkSettings(type="postfix-cidr", path=path)).sync(FIRST, NOW)
    before = path.read_bytes()
    reload = failing_command(
        tmp_path, "postfix/postfix-script: fatal: the Postfix mail system is not running"
    )
    sink = PostfixCidrSink(SinkSettings(type="postfix-cidr", path=path, reload_command=reload))
    result = sink.sync(SECOND, NOW)
    assert not result.ok and not result.changed
    assert result.message.endswith(
        "failed (exit status 1): postfix/postfix-script: fatal: the Postfix mail system is not "
        "running; previous file restored"
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken-reload", "relaywatch.cidr"]


def test_a_failing_reload_of_a_new_file_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch"
    result = exim(path, reload_command=failing_command(tmp_path, "cannot reload")).sync(FIRST, NOW)
    assert not result.ok and result.message.endswith("cannot reload; new file removed")
    assert not path.exists()


def test_a_reload_command_that_does_not_exist_is_a_clear_failure(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch"
    result = exim(path, reload_command="/nonexistent/reload --now").sync(FIRST, NOW)
    assert not result.ok
    assert result.message == "/nonexistent/reload --now: command not found; new file removed"


def test_the_reload_command_runs_without_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "reloaded; touch injected"
    result = exim(tmp_path / "relaywatch", reload_command=f"touch {shlex.quote(str(marker))}").sync(
        FIRST, NOW
    )
    assert result.ok and result.message == f"wrote 1 entry (ran touch {shlex.quote(str(marker))})"
    assert marker.exists() and not (tmp_path / "injected").exists()


def test_a_dry_run_writes_nothing_and_runs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch"
    marker = tmp_path / "reloaded"
    sink = exim(path, dry_run=True, reload_command=f"touch {marker}")
    result = sink.sync(SECOND, NOW)
    assert (result.ok, result.changed, result.entries) == (True, True, 2)
    assert result.message == "dry run: would write 2 entries"
    assert list(tmp_path.iterdir()) == []


def test_a_directory_that_does_not_exist_is_reported(tmp_path: Path) -> None:
    result = exim(tmp_path / "missing" / "relaywatch").sync(FIRST, NOW)
    assert not result.ok
    assert (
        result.message
        == f"cannot write {tmp_path / 'missing' / 'relaywatch'}: No such file or directory"
    )


def test_check_renders_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "relaywatch"
    sink = exim(path, reload_command=f"touch {tmp_path / 'reloaded'}")
    sink.sync(FIRST, NOW)
    before = path.read_bytes()
    result = sink.check(SECOND, NOW)
    assert (result.ok, result.changed, result.entries) == (True, True, 2)
    assert result.message == "rendered 2 entries; this target has no check"
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "relaywatch", "reloaded",
    ]  # fmt: skip
