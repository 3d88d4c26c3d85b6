"""Following a log file through rotation, truncation, deletion and restarts.

A :class:`Follower` reads the whole lines added to one source path since it last looked and
knows where it stands: the file (device, inode, fingerprint of its first line) and the offset
just after the last line it handed out.  That :class:`Position` is committed with the rows
made from those lines, so a restart picks up exactly where the stored data ends.

What happens to the file under it:

- rename + create (logrotate's default): the renamed file is read to its end, and its last line
  even without a newline, once the new file at the path has a line (the writer has moved on);
- copytruncate and truncation: the file's first line changes or it shrinks; the lines between
  the position and the truncation are read from the copy (a rotated sibling with the same
  fingerprint) when there is one, then the file from its start;
- deletion: the open file is read to its end; a file created later at the path is read from its
  start;
- a path (or directory) that does not exist yet is looked for again at every read;
- a partial last line is left until its newline arrives;
- a restart after rotation: the stored file is looked for among the rotated siblings
  (``mail.log.1``, ``mail.log-20261130``, ``.gz`` too) and read from the stored offset, then the
  newer siblings, then the path.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from detector.errors import InputError
from detector.logfile import (
    CHUNK,
    FINGERPRINT_BYTES,
    MAX_LINE,
    ReadCounts,
    head_fingerprint,
    open_log,
    split_lines,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Position:
    """Where reading a source stands: the file, and the offset after the last line read."""

    device: int
    inode: int
    fingerprint: str
    offset: int


@dataclass(frozen=True)
class FileLines:
    """Lines read from one file: ``(offset, text)`` pairs."""

    path: Path
    fingerprint: str
    lines: list[tuple[int, str]]


class _File:
    """An open log file and how far it has been read."""

    def __init__(self, path: Path, handle: BinaryIO, device: int, inode: int, offset: int):
        self.path = path
        self.handle = handle
        self.device = device
        self.inode = inode
        self.offset = offset
        self.fingerprint: str | None = None  # known once its first line is complete

    def read_at(self, offset: int, size: int) -> bytes:
        self.handle.seek(offset)
        return self.handle.read(size)

    def head_fingerprint(self) -> str | None:
        return head_fingerprint(self.read_at(0, FINGERPRINT_BYTES))

    def close(self) -> None:
        self.handle.close()


def _open(path: Path, offset: int = 0) -> _File | None:
    """``path`` opened for reading (gzip decompressed), or ``None`` if it is not there."""
    try:
        stat = path.stat()
        handle = open_log(path) if path.suffix == ".gz" else path.open("rb", buffering=0)
    except (FileNotFoundError, NotADirectoryError, InputError):
        return None
    return _File(path, handle, stat.st_dev, stat.st_ino, offset)


def rotated_siblings(path: Path) -> list[Path]:
    """The rotated copies of ``path`` (``mail.log.1``, ``mail.log.2.gz``, ``mail.log-2026…``),
    oldest first."""
    found: list[tuple[float, Path]] = []
    try:
        for p in path.parent.iterdir():
            if p.name.startswith((path.name + ".", path.name + "-")):
                with suppress(OSError):  # renamed or removed meanwhile: logrotate at work
                    stat = p.stat()
                    if S_ISREG(stat.st_mode):
                        found.append((stat.st_mtime, p))
    except OSError:
        return []
    return [p for _, p in sorted(found)]


class Follower:
    """Reads the lines added to ``path``; ``position`` is where a previous run stopped."""

    def __init__(self, path: Path, position: Position | None = None, chunk: int = CHUNK):
        self.path = path
        self.chunk = chunk
        self.counts = ReadCounts()
        self._backlog: list[_File] = []  # finished files to read to their end first
        self._current: _File | None = None
        if position is not None:
            self._resume(position)

    # -- where it stands ------------------------------------------------------------------

    @property
    def position(self) -> Position | None:
        """Where the next line will come from, or ``None`` before the first line."""
        file = self._backlog[0] if self._backlog else self._current
        if file is None or file.fingerprint is None:
            return None
        return Position(file.device, file.inode, file.fingerprint, file.offset)

    def lag_bytes(self) -> int:
        """Bytes written to the source that have not been read yet."""
        behind = sum(_size(f) - f.offset for f in self._backlog)
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        current = self._current
        if current is not None and _same_file(current, self.path):
            return behind + max(size - current.offset, 0)
        return behind + size + (_size(current) - current.offset if current is not None else 0)

    def close(self) -> None:
        for file in [*self._backlog, *([self._current] if self._current else [])]:
            file.close()
        self._backlog.clear()
        self._current = None

    def _resume(self, position: Position) -> None:
        """Find the file a previous run was reading, wherever rotation has put it."""
        current = _open(self.path)
        if current is not None and current.head_fingerprint() == position.fingerprint:
            if _size(current) >= position.offset:
                current.fingerprint = position.fingerprint
                current.offset = position.offset
                self._current = current
                return
            log.warning("%s: shorter than when last read: reading it from the start", self.path)
            self._current = current
            return
        if current is not None:
            current.close()
        siblings = _open_siblings(self.path)
        for index, file in enumerate(siblings):
            if _whole_fingerprint(file) == position.fingerprint:
                log.info("%s: rotated while stopped: reading the rest of %s first",
                         self.path, file.path)  # fmt: skip
                file.offset = position.offset
                for older in siblings[:index]:
                    older.close()
                self._backlog.extend(siblings[index:])
                return
        for file in siblings:
            file.close()
        log.warning(
            "%s: the file last read (%s…) is gone, with %d lines' worth of position: "
            "reading %s from its start", self.path, position.fingerprint[:8], position.offset,
            self.path,
        )  # fmt: skip

    # -- reading --------------------------------------------------------------------------

    def read(self) -> list[FileLines]:
        """The whole lines added since the last call, about ``chunk`` bytes at most, by file."""
        out: list[FileLines] = []
        current = self._current
        if (
            current is not None
            and current.fingerprint is not None
            and (
                current.head_fingerprint() != current.fingerprint or _size(current) < current.offset
            )
        ):
            self._truncated(current)
        budget = self.chunk
        while self._backlog and budget > 0:
            file = self._backlog[0]
            budget -= self._take(file, final=True, out=out)
            if self._finished(file):
                file.close()
                self._backlog.pop(0)
        if self._backlog:
            return out  # the rest at the next call, before anything newer
        if self._current is None:
            self._current = _open(self.path)
            if self._current is None:
                return out
        current = self._current
        known, offset, parts, counts = current.fingerprint, current.offset, len(out), self.counts
        self.counts = replace(counts)
        read = self._take(current, final=False, out=out)
        if read and known is not None and current.head_fingerprint() != known:
            # truncated between the check above and the read: what came is from the middle of
            # the new content; forget it and start over from the copy, then the start
            current.offset, self.counts = offset, counts
            del out[parts:]
            self._truncated(current)
        elif read == 0 and not _same_file(current, self.path):
            self._replaced(current, out)
        return out

    def _take(self, file: _File, *, final: bool, out: list[FileLines]) -> int:
        """Read whole lines of ``file`` (with ``final``, also a last line without newline);
        returns the bytes consumed."""
        if file.fingerprint is None:
            file.fingerprint = head_fingerprint(file.read_at(0, FINGERPRINT_BYTES), whole=final)
            if file.fingerprint is None:
                return 0  # the first line is not complete yet
        data = file.read_at(file.offset, self.chunk)
        end = data.rfind(b"\n") + 1
        lines: Iterable[tuple[int, str]]
        if end:
            lines = split_lines(data[:end], file.offset, self.counts)
        elif len(data) >= self.chunk:
            return self._cut_line(file, data, final, out)
        elif data and final:  # a last line that will never get its newline
            lines = split_lines(data + b"\n", file.offset, self.counts)
            self.counts.bytes -= 1
            end = len(data)
        else:
            return 0  # nothing new, or a partial line: wait for its newline
        out.append(FileLines(file.path, file.fingerprint, list(lines)))
        file.offset += end
        return end

    def _cut_line(self, file: _File, data: bytes, final: bool, out: list[FileLines]) -> int:
        """A line longer than a whole chunk: keep its first ``MAX_LINE`` bytes, skip the rest."""
        scan = file.offset + len(data)
        while True:
            more = file.read_at(scan, self.chunk)
            newline = more.find(b"\n")
            if newline >= 0:
                end = scan + newline + 1
                break
            if not more:
                if not final:
                    return 0  # it has not ended yet
                end = scan
                break
            scan += len(more)
        assert file.fingerprint is not None
        text = data[:MAX_LINE].decode("utf-8", "replace").replace("\x00", "\ufffd")
        out.append(FileLines(file.path, file.fingerprint, [(file.offset, text)]))
        self.counts.lines += 1
        self.counts.cut += 1
        self.counts.bytes += end - file.offset
        consumed = end - file.offset
        file.offset = end
        return consumed

    def _finished(self, file: _File) -> bool:
        return (
            file.offset >= _size(file)
            if file.path.suffix != ".gz"
            else not file.read_at(file.offset, 1)
        )

    def _truncated(self, current: _File) -> None:
        """``current`` was truncated (or rewritten in place): finish its lines from the copy
        logrotate's copytruncate made, if there is one, then read it from its start."""
        assert current.fingerprint is not None
        siblings = _open_siblings(self.path)
        copy = next((f for f in reversed(siblings) if _whole_fingerprint(f) == current.fingerprint),
                    None)  # fmt: skip
        for file in siblings:
            if file is not copy:
                file.close()
        if copy is not None:
            copy.offset, copy.fingerprint = current.offset, current.fingerprint
            self._backlog.append(copy)
            log.info("%s: truncated; reading its last lines from %s", self.path, copy.path)
        else:
            log.warning("%s: truncated; reading it from its start", self.path)
        current.offset = 0
        current.fingerprint = None

    def _replaced(self, current: _File, out: list[FileLines]) -> None:
        """The path names another file now (rotated by rename, or deleted and created again).
        Once that file has a line, the old one has been read to its end: move over."""
        new = _open(self.path)
        if new is None:
            return  # renamed or deleted, nothing new yet: the old file may still grow
        if new.head_fingerprint() is None:
            new.close()
            return  # the writer has not moved over yet
        while self._take(current, final=True, out=out):
            pass
        current.close()
        self._current = new
        self._take(new, final=False, out=out)


def _whole_fingerprint(file: _File) -> str | None:
    """The fingerprint of a file that will not grow (a rotated one), read from its handle."""
    return head_fingerprint(file.read_at(0, FINGERPRINT_BYTES), whole=True)


def _open_siblings(path: Path, tries: int = 5) -> list[_File]:
    """The rotated files of ``path`` (oldest first), opened: each one is known by what it
    holds from then on, whatever logrotate renames meanwhile.  Opened again (``tries`` times
    at most) when a rename came between listing them and opening them — a rotation while the
    daemon starts: a file opened under a name it no longer had was read from another file's
    position, and the lines between were lost."""
    for attempt in range(1, tries + 1):
        names = rotated_siblings(path)
        files = [f for p in names if (f := _open(p)) is not None]
        unchanged = rotated_siblings(path) == names and all(_same_file(f, f.path) for f in files)
        if unchanged or attempt == tries:
            break
        for file in files:
            file.close()
    return files


def _size(file: _File) -> int:
    try:
        return os.fstat(file.handle.fileno()).st_size
    except (OSError, ValueError, AttributeError):
        return file.offset


def _same_file(file: _File, path: Path) -> bool:
    try:
        stat = path.stat()
    except OSError:
        return False
    return (stat.st_dev, stat.st_ino) == (file.device, file.inode)


def _not_the_stop_race(record: logging.LogRecord) -> bool:
    """watchdog logs an ERROR when its inotify thread is asked for events just as the observer
    stops (it then returns none, which is right): not worth a line in the daemon's log."""
    return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_not_the_stop_race)


class Wakeup:
    """Wakes the reader when something happens in the directories of the sources (watchdog),
    and at least every ``poll`` seconds anyway (network file systems, missed events, a
    directory that does not exist yet)."""

    def __init__(self, paths: Iterable[Path], poll: float = 2.0) -> None:
        self.poll = poll
        self._event = threading.Event()
        self._observer = Observer()
        self._observer.daemon = True
        self._directories = {p.parent for p in paths}
        self._watched: set[Path] = set()
        self._observer.start()
        self._schedule()

    def _schedule(self) -> None:
        handler = _Poke(self._event)
        for directory in self._directories - self._watched:
            if directory.is_dir():
                try:
                    self._observer.schedule(handler, str(directory), recursive=False)
                except OSError as exc:  # e.g. out of inotify watches: the poll still works
                    log.warning("cannot watch %s (%s): polling it every %gs", directory, exc,
                                self.poll)  # fmt: skip
                self._watched.add(directory)

    def wait(self, timeout: float | None = None) -> bool:
        """Until something happened or ``timeout`` (default ``poll``) passed; True if woken."""
        woken = self._event.wait(self.poll if timeout is None else timeout)
        self._event.clear()
        if self._watched != self._directories:
            self._schedule()
        return woken

    def poke(self) -> None:
        self._event.set()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)


class _Poke(FileSystemEventHandler):
    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._event.set()
