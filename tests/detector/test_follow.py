"""Following a log file: every line written is read exactly once, in order, whatever happens to
the file (rotation, copytruncate, truncation, deletion, restarts)."""

from __future__ import annotations

import gzip
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from detector import follow as follow_module
from detector.follow import Follower, Position, Wakeup
from detector.logfile import MAX_LINE, fingerprint


@pytest.fixture
def follow() -> Iterator[Callable[..., Follower]]:
    """Followers, closed after the test."""
    made: list[Follower] = []

    def make(path: Path, position: Position | None = None, **options: int) -> Follower:
        made.append(Follower(path, position, **options))
        return made[-1]

    yield make
    for follower in made:
        follower.close()


def lines(start: int, count: int) -> list[str]:
    return [f"line {n:06d} of the mail log" for n in range(start, start + count)]


def append(path: Path, texts: list[str], end: str = "\n") -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(texts) + end)


def drain(follower: Follower) -> list[str]:
    """Everything the follower has to give now."""
    got: list[str] = []
    idle = 0
    while idle < 2:
        batch = follower.read()
        idle = 0 if batch else idle + 1
        got += [text for part in batch for _, text in part.lines]
    return got


def test_lines_are_read_once_with_their_offsets(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    log = tmp_path / "mail.log"
    append(log, ["a", "bb"])
    follower = follow(log)
    batch = follower.read()
    assert [pair for part in batch for pair in part.lines] == [(0, "a"), (2, "bb")]
    assert batch[0].fingerprint == fingerprint(log)
    assert follower.read() == []
    append(log, ["ccc"])
    assert [pair for part in follower.read() for pair in part.lines] == [(5, "ccc")]
    position = follower.position
    assert position is not None and position.offset == 9
    assert (position.device, position.inode) == (log.stat().st_dev, log.stat().st_ino)


def test_partial_last_line_waits_for_its_newline(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    log = tmp_path / "mail.log"
    append(log, ["first", "sec"], end="")
    follower = follow(log)
    assert drain(follower) == ["first"]
    with log.open("a") as f:
        f.write("ond\nthi")
    assert drain(follower) == ["second"]
    assert follower.position is not None and follower.position.offset == len("first\nsecond\n")


def test_first_line_without_newline_is_not_read_yet(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    log = tmp_path / "mail.log"
    log.write_text("half a li")
    follower = follow(log)
    assert drain(follower) == [] and follower.position is None
    with log.open("a") as f:
        f.write("ne\n")
    assert drain(follower) == ["half a line"]


def test_rename_and_create_rotation_reads_the_old_file_to_its_end_first(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    log = tmp_path / "mail.log"
    append(log, lines(0, 100))
    follower = follow(log)
    got = drain(follower)
    append(log, lines(100, 50))
    log.rename(tmp_path / "mail.log.1")  # logrotate: rename, create
    log.touch()
    got += drain(follower)  # the new file is empty: the writer may still write to the old one
    append(tmp_path / "mail.log.1", lines(150, 10), end="")  # its last line without newline
    append(log, lines(160, 40))
    got += drain(follower)
    assert got == lines(0, 200)
    position = follower.position
    assert position is not None and position.inode == log.stat().st_ino


def test_copytruncate_loses_no_line(tmp_path: Path, follow: Callable[..., Follower]) -> None:
    log = tmp_path / "mail.log"
    append(log, lines(0, 100))
    follower = follow(log)
    got = drain(follower)
    append(log, lines(100, 30))  # written, not read yet, when logrotate copies and truncates
    shutil.copyfile(log, tmp_path / "mail.log.1")
    with log.open("r+") as f:
        f.truncate(0)
    append(log, lines(130, 500))  # the writer goes on: more than before the truncation
    got += drain(follower)
    assert got == lines(0, 630)


def test_truncation_without_a_copy_reads_the_file_from_its_start(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    log = tmp_path / "mail.log"
    append(log, lines(0, 10))
    follower = follow(log)
    got = drain(follower)
    with log.open("r+") as f:
        f.truncate(0)
    got += drain(follower)
    append(log, lines(10, 3))
    got += drain(follower)
    assert got == lines(0, 13)


def test_deleted_and_created_again_is_read_from_the_start(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    log = tmp_path / "mail.log"
    append(log, lines(0, 10))
    follower = follow(log)
    got = drain(follower)
    append(log, lines(10, 5))
    log.unlink()
    got += drain(follower)
    assert got == lines(0, 15)  # the open file was read to its end
    append(log, lines(15, 5))
    got += drain(follower)
    assert got == lines(0, 20)


def test_a_file_and_directory_that_do_not_exist_yet(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    log = tmp_path / "later" / "mail.log"
    follower = follow(log)
    assert drain(follower) == [] and follower.position is None
    log.parent.mkdir()
    append(log, lines(0, 3))
    assert drain(follower) == lines(0, 3)


def test_restart_continues_at_the_stored_position(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    log = tmp_path / "mail.log"
    append(log, lines(0, 10))
    first = follow(log)
    got = drain(first)
    append(log, lines(10, 10))
    got += drain(follow(log, first.position))
    assert got == lines(0, 20)


def test_restart_after_rotation_while_stopped_reads_the_rotated_rest_first(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    log = tmp_path / "mail.log"
    append(log, lines(0, 10))
    first = follow(log)
    got = drain(first)
    append(log, lines(10, 5))
    log.rename(tmp_path / "mail.log.1")
    append(log, lines(15, 5))
    got += drain(follow(log, first.position))
    assert got == lines(0, 20)


def test_restart_after_two_rotations_and_compression(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    log = tmp_path / "mail.log"
    append(log, lines(0, 10))
    first = follow(log)
    got = drain(first)
    append(log, lines(10, 5))
    older = tmp_path / "mail.log.2.gz"
    older.write_bytes(gzip.compress(log.read_bytes()))
    os.utime(older, (time.time() - 100, time.time() - 100))
    log.unlink()
    append(tmp_path / "mail.log.1", lines(15, 5))
    append(log, lines(20, 5))
    got += drain(follow(log, first.position))
    assert got == lines(0, 25)


def test_restart_when_the_stored_file_is_gone_reads_the_path_from_its_start(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    log = tmp_path / "mail.log"
    append(log, lines(100, 3))
    gone = Position(device=1, inode=2, fingerprint="0" * 32, offset=500)
    assert drain(follow(log, gone)) == lines(100, 3)


def test_a_line_longer_than_a_read_is_cut_and_counted(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    log = tmp_path / "mail.log"
    append(log, ["before", "x" * (3 * MAX_LINE), "after"])
    follower = follow(log, chunk=2 * MAX_LINE)
    got = drain(follower)
    assert got == ["before", "x" * MAX_LINE, "after"]
    assert follower.counts.cut == 1 and follower.counts.lines == 3
    assert follower.counts.bytes == log.stat().st_size


def test_wakeup_fires_on_a_write_and_polls_for_a_missing_directory(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    later = tmp_path / "later" / "mail.log"
    log = tmp_path / "mail.log"
    wakeup = Wakeup([log, later], poll=0.2)
    try:
        started = time.monotonic()
        assert not wakeup.wait(0.05)
        threading.Timer(0.1, append, (log, ["x"])).start()
        assert wakeup.wait(5.0)
        assert time.monotonic() - started < 2.0
        later.parent.mkdir()
        wakeup.wait(0.3)  # the poll schedules the new directory
        wakeup.wait(0.05)
        threading.Timer(0.1, append, (later, ["y"])).start()
        assert wakeup.wait(5.0)
    finally:
        wakeup.stop()


def test_truncation_between_the_check_and_the_read_reads_nothing_from_the_middle(
    tmp_path: Path, follow: Callable[..., Follower]
) -> None:
    log = tmp_path / "mail.log"
    append(log, lines(0, 10))
    follower = follow(log)
    got = drain(follower)
    append(log, lines(10, 5))  # not read yet when logrotate copies and truncates
    take = follower._take

    def truncated_just_before(*args: object, **kwargs: object) -> int:
        follower._take = take  # type: ignore[method-assign]
        shutil.copyfile(log, tmp_path / "mail.log.1")
        with log.open("r+") as f:
            f.truncate(0)
        append(log, lines(15, 40))  # longer than before: the old offset is inside it
        return take(*args, **kwargs)  # type: ignore[arg-type]

    follower._take = truncated_just_before  # type: ignore[method-assign]
    got += drain(follower)
    assert got == lines(0, 55)


def test_a_rotation_while_a_restart_looks_for_the_rotated_files_loses_no_line(
    tmp_path: Path, follow: Callable[..., Follower], monkeypatch: pytest.MonkeyPatch
) -> None:
    """logrotate may run just as the daemon starts: between the listing of the rotated files
    and their opening, mail.log.1 (the file last read) becomes mail.log.2."""
    log = tmp_path / "mail.log"
    append(log, lines(0, 10))
    first = follow(log)
    got = drain(first)
    append(log, lines(10, 5))
    log.rename(tmp_path / "mail.log.1")  # while stopped
    append(log, lines(15, 5))
    listing = follow_module.rotated_siblings
    rotations = []

    def rotate_after_listing(path: Path) -> list[Path]:
        found = listing(path)
        if not rotations:  # logrotate, once: mail.log.1 -> .2, mail.log -> .1, a new mail.log
            rotations.append(path)
            (tmp_path / "mail.log.1").rename(tmp_path / "mail.log.2")
            log.rename(tmp_path / "mail.log.1")
            append(log, lines(20, 5))
        return found

    monkeypatch.setattr(follow_module, "rotated_siblings", rotate_after_listing)
    got += drain(follow(log, first.position))
    assert rotations and got == lines(0, 25)
