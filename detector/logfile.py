"""Reading log files: plain or gzip, line by line with byte offsets, robust to bad bytes.

A line longer than ``MAX_LINE`` bytes is cut there and counted; bytes that are not UTF-8 are
replaced, and so are NUL bytes (PostgreSQL text cannot hold them).  A UTF-16 file (exports of
Exchange and Microsoft 365 message traces; with a byte order mark or without) is recognised by
its first bytes and decoded.  A file is known by a
fingerprint of its first line, so the same log read again under another name (``mail.log`` →
``mail.log.1``) is recognised.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, chain, repeat
from operator import add
from pathlib import Path
from typing import BinaryIO

from detector.errors import InputError

MAX_LINE = 64 * 1024
CHUNK = 1024 * 1024
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
    return _hash(first)


def head_fingerprint(head: bytes, whole: bool = False) -> str | None:
    """:func:`fingerprint` of a file that starts with ``head`` (its first 4 KiB, or all of
    it), or ``None`` while its first line is still being written; a ``whole`` file (one that
    will not grow) is all there is to it."""
    newline = head.find(b"\n", 0, FINGERPRINT_BYTES)
    if newline >= 0:
        return _hash(head[: newline + 1])
    if len(head) >= FINGERPRINT_BYTES or (whole and head):
        return _hash(head[:FINGERPRINT_BYTES])
    return None


def _hash(first: bytes) -> str:
    return hashlib.sha256(first).hexdigest()[:32]


def utf16_encoding(head: bytes) -> str | None:
    """``utf-16-le`` or ``utf-16-be`` when a file starting with ``head`` (its first 6 bytes) is
    UTF-16 text: ASCII characters with a NUL byte beside each, after a byte order mark or not
    (a mark followed by anything else is just two bad bytes)."""
    bom = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    text = head[2:4] if bom else head[:4]
    if len(text) < 2 or len(text) % 2:
        return None
    low, high = text[0::2], text[1::2]
    if all(low) and not any(high) and low.isascii():
        return "utf-16-le"
    if all(high) and not any(low) and high.isascii():
        return "utf-16-be"
    return None


def read_lines(handle: BinaryIO, counts: ReadCounts, name: str) -> Iterator[tuple[int, str]]:
    """``(offset, text)`` of each line, without its line ending.

    A final line without its newline is returned too: in a batch import nothing follows.
    A file that cannot be read to its end (a truncated .gz) is an :class:`InputError`
    naming ``name``, after the lines before the damage.  ``counts`` advance a chunk at a time.
    """
    encoding = utf16_encoding(handle.peek(6)[:6])  # type: ignore[attr-defined]
    if encoding is not None:
        return chain.from_iterable(_utf16_chunks(handle, counts, name, encoding))
    return chain.from_iterable(_chunks(handle, counts, name, 0))


def _utf16_chunks(
    handle: BinaryIO, counts: ReadCounts, name: str, encoding: str
) -> Iterator[list[tuple[int, str]]]:
    """:func:`_chunks` for UTF-16 text: offsets count bytes of the file, as for any other."""
    read = _checked(handle, name)
    decoder = codecs.getincrementaldecoder(encoding)("replace")
    offset, pending, first = 0, "", True
    while True:
        data = read(CHUNK)
        text = pending + decoder.decode(data, final=not data)
        if first and text.startswith("\ufeff"):
            text, offset = text[1:], 2
        first = False
        lines = text.split("\n")
        pending = lines.pop()  # the start of a line that has not ended yet
        newline = [2] * len(lines)
        if not data and pending:  # a last line without its newline
            lines.append(pending)
            newline.append(0)
        out = []
        for line, ending in zip(lines, newline, strict=True):
            size = len(line.encode(encoding)) + ending
            counts.lines += 1
            counts.bytes += size
            if len(line) > MAX_LINE:
                counts.cut += 1
            out.append((offset, line[:MAX_LINE].rstrip("\r").replace("\x00", "\ufffd")))
            offset += size
        yield out
        if not data:
            return


def _chunks(
    handle: BinaryIO, counts: ReadCounts, name: str, offset: int
) -> Iterator[Iterable[tuple[int, str]]]:
    """The ``(offset, text)`` pairs of each chunk read, a megabyte at a time (a readline() per
    line costs a fifth of parsing it)."""
    read = _checked(handle, name)
    pending = b""  # the start of a line whose end has not been read yet
    skipped = 0  # bytes dropped from a line longer than MAX_LINE that has not ended yet
    while True:
        data = read(CHUNK)
        if not data:
            if pending or skipped:
                counts.lines += 1
                counts.bytes += len(pending) + skipped
                yield ((offset, _decode(pending)),)
            return
        if skipped:  # pending is the kept start of a cut line: drop data up to its end
            newline = data.find(b"\n")
            if newline < 0:
                skipped += len(data)
                continue
            size = len(pending) + skipped + newline + 1
            counts.lines += 1
            counts.bytes += size
            yield ((offset, _decode(pending)),)
            offset += size
            data, pending, skipped = data[newline + 1 :], b"", 0
        elif pending:
            data = pending + data
        end = data.rfind(b"\n") + 1
        if end == 0:  # no line ends in this chunk
            if len(data) > MAX_LINE:
                counts.cut += 1
                skipped = len(data) - MAX_LINE
                data = data[:MAX_LINE]
            pending = data
            continue
        body, pending = data[:end], data[end:]
        yield split_lines(body, offset, counts)
        offset += end


def split_lines(body: bytes, offset: int, counts: ReadCounts) -> Iterable[tuple[int, str]]:
    """``(offset, text)`` of each line of ``body`` (whole lines, the last ending in a newline)
    that starts at ``offset`` in its file; ``counts`` take them in.  Lines are paired with their
    offsets in C (split, accumulate, zip): a Python step per line costs a fifth of parsing it."""
    lines: list[str]
    if body.isascii() and b"\x00" not in body and b"\r" not in body:
        lines = body.decode("ascii").split("\n")
        lines.pop()  # the empty string after the last newline
        sizes = list(map(len, lines))  # an ASCII line has as many bytes as characters
        if max(sizes) > MAX_LINE:
            lines = [line[:MAX_LINE] for line in lines]
    else:
        raw = body.split(b"\n")
        raw.pop()
        sizes = list(map(len, raw))
        lines = [_decode(line[:MAX_LINE]) for line in raw]
    if max(sizes) > MAX_LINE:
        counts.cut += sum(1 for size in sizes if size > MAX_LINE)
    counts.lines += len(lines)
    counts.bytes += len(body)
    # one offset more than lines: the last is where the next chunk starts
    offsets = accumulate(map(add, sizes, repeat(1)), initial=offset)
    return zip(offsets, lines, strict=False)


def _decode(raw: bytes) -> str:
    """Text of a line that is not plain ASCII: bad bytes and NULs replaced, CR dropped."""
    if b"\x00" in raw:
        raw = raw.replace(b"\x00", b"\xef\xbf\xbd")  # U+FFFD: PostgreSQL text cannot hold NUL
    return raw.decode("utf-8", "replace").rstrip("\r")


def _checked(handle: BinaryIO, name: str) -> Callable[[int], bytes]:
    """``handle.read`` whose errors say which file is damaged."""

    def read(size: int) -> bytes:
        try:
            return handle.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{name}: cannot be read to its end: {exc}") from None

    return read
