"""Reading log files: plain or gzip, line by line with byte offsets, robust to bad bytes.

A line longer than ``MAX_LINE`` bytes is cut there and counted; bytes that are not UTF-8 are
replaced, and so are NUL bytes (PostgreSQL text cannot hold them).  A file is known by a
fingerprint of its first line, so the same log read again under another name (``mail.log`` →
``mail.log.1``) is recognised.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from detector.errors import InputError

MAX_LINE = 64 * 1024
FINGERPRINT_BYTES = 4096
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class ReadCounts:
    lines: int = 0
    cut: int = 0  # lines longer than MAX_LINE, cut
    bytes: int = 0


def open_log(path: Path) -> BinaryIO:
    """Open ``path`` for reading bytes, decompressing gzip (by its magic, not its name)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a log file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    if handle.read(2) == _GZIP_MAGIC:
        handle.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    handle.seek(0)
    return handle


def fingerprint(path: Path) -> str:
    """A hash of the file's first line (its first 4 KiB at most)."""
    with open_log(path) as handle:
        try:
            first = handle.readline(FINGERPRINT_BYTES)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: cannot read: {exc}") from None
    return hashlib.sha256(first).hexdigest()[:32]


def read_lines(
    handle: BinaryIO, counts: ReadCounts, name: str, start: int = 0
) -> Iterator[tuple[int, str]]:
    """``(offset, text)`` of each complete line from ``start``, without its line ending.

    A final line without its newline is returned too: in a batch import nothing follows.
    A file that cannot be read to its end (a truncated .gz) is an :class:`InputError`
    naming ``name``, after the lines before the damage.
    """
    offset = start
    readline = _checked(handle, name)
    while True:
        raw = readline(MAX_LINE + 1)
        if not raw:
            return
        size = len(raw)
        if size > MAX_LINE and not raw.endswith(b"\n"):
            counts.cut += 1
            rest = readline(MAX_LINE)  # drop the remainder up to the newline
            while rest and not rest.endswith(b"\n"):
                size += len(rest)
                rest = readline(MAX_LINE)
            size += len(rest)
            raw = raw[:MAX_LINE]
        counts.lines += 1
        counts.bytes += size
        if b"\x00" in raw:
            raw = raw.replace(b"\x00", b"\xef\xbf\xbd")  # U+FFFD
        yield offset, raw.decode("utf-8", "replace").rstrip("\r\n")
        offset += size


def _checked(handle: BinaryIO, name: str) -> Callable[[int], bytes]:
    """``handle.readline`` whose read errors say which file is damaged."""

    def readline(limit: int) -> bytes:
        try:
            return handle.readline(limit)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{name}: cannot be read to its end: {exc}") from None

    return readline
