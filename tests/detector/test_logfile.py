"""Reading log files: offsets, gzip, long lines, bad bytes, fingerprints."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from detector.errors import InputError
from detector.logfile import MAX_LINE, ReadCounts, fingerprint, open_log, read_lines


def read(path: Path) -> tuple[list[tuple[int, str]], ReadCounts]:
    counts = ReadCounts()
    with open_log(path) as handle:
        return list(read_lines(handle, counts, str(path))), counts


def test_offsets_point_at_the_start_of_each_line(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_bytes(b"one\r\ntwo\n\nthree")
    lines, counts = read(path)
    assert lines == [(0, "one"), (5, "two"), (9, ""), (10, "three")]
    assert counts.lines == 4 and counts.bytes == path.stat().st_size


def test_gzip_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "mail.log.1"
    path.write_bytes(gzip.compress(b"a\nb\n"))
    assert read(path)[0] == [(0, "a"), (2, "b")]


def test_lines_over_64_kib_are_cut_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_bytes(b"x" * (3 * MAX_LINE + 5) + b"\nnext\n")
    lines, counts = read(path)
    assert counts.cut == 1 and len(lines[0][1]) == MAX_LINE
    assert lines[1] == (3 * MAX_LINE + 6, "next")


def test_bad_bytes_and_nul_bytes_are_replaced_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_bytes(b"caf\xe9 \x00 ok\n\xff\xfe\n")
    lines, _ = read(path)
    assert lines == [(0, "caf\ufffd \ufffd ok"), (10, "\ufffd\ufffd")]


def test_the_fingerprint_follows_the_first_line_not_the_name_or_growth(tmp_path: Path) -> None:
    first = tmp_path / "mail.log"
    first.write_text("line one\nline two\n")
    renamed = tmp_path / "mail.log.1.gz"
    renamed.write_bytes(gzip.compress(first.read_bytes() + b"line three\n"))
    other = tmp_path / "other.log"
    other.write_text("another first line\n")
    assert fingerprint(first) == fingerprint(renamed) != fingerprint(other)


def test_missing_and_directory_paths_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_log(tmp_path / "absent.log")
    with pytest.raises(InputError, match="is a directory"):
        open_log(tmp_path)
