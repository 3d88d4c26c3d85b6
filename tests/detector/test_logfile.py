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


def _reference(data: bytes) -> list[tuple[int, str]]:
    """What read_lines must yield, computed the slow, obvious way."""
    out, offset = [], 0
    for raw in data.split(b"\n")[: -1 if data.endswith(b"\n") else None]:
        text = raw[:MAX_LINE].replace(b"\x00", b"\xef\xbf\xbd").decode("utf-8", "replace")
        out.append((offset, text.rstrip("\r")))
        offset += len(raw) + 1
    return out


@pytest.mark.parametrize("seed", range(40))
def test_chunked_reading_equals_line_by_line_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    import random

    from detector import logfile

    rnd = random.Random(seed)
    monkeypatch.setattr(logfile, "CHUNK", rnd.choice([7, 64, 1000, 70_000]))
    pieces = [b"plain ascii", b"caf\xc3\xa9", b"\xff\xfe bad", b"nul\x00", b"cr\r", b""]
    lines = []
    for _ in range(rnd.randint(1, 30)):
        line = rnd.choice(pieces) * rnd.randint(1, 3)
        if rnd.random() < 0.1:
            line = b"x" * rnd.randint(MAX_LINE - 2, MAX_LINE + 150_000)
        lines.append(line)
    data = b"\n".join(lines) + (b"\n" if rnd.random() < 0.7 else b"")
    path = tmp_path / "mail.log"
    path.write_bytes(data)
    got, counts = read(path)
    assert got == _reference(data)
    assert counts.bytes == len(data) and counts.lines == len(got)
    assert counts.cut == sum(1 for line in data.split(b"\n") if len(line) > MAX_LINE)


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [("utf-16-le", True), ("utf-16-be", True), ("utf-16-le", False)],
    ids=["le-bom", "be-bom", "le-no-bom"],
)
def test_utf16_files_are_decoded_with_byte_offsets(
    tmp_path: Path, encoding: str, bom: bool
) -> None:
    text = "#Software: Microsoft Exchange Server\r\n#Fields: a,b\r\nx,é,\U0001f600\r\nlast"
    raw = (("\ufeff" if bom else "") + text).encode(encoding)
    path = tmp_path / "MSGTRK2026113001-1.LOG"
    path.write_bytes(gzip.compress(raw) if encoding.endswith("be") else raw)
    lines, counts = read(path)
    assert [line for _, line in lines] == [
        "#Software: Microsoft Exchange Server",
        "#Fields: a,b",
        "x,é,\U0001f600",
        "last",
    ]
    for offset, line in lines:
        assert raw[offset:].decode(encoding).lstrip("\ufeff").startswith(line)
    assert counts.lines == 4 and counts.bytes == len(raw) - (2 if bom else 0)
