"""The HTML report rendered to PNG by headless Chromium, so a layout regression shows: the
picture has the window's size, is not blank, and has the open-relay headline's red at the top
exactly when the server was an open relay.

Skipped with the reason where Chromium is absent, failed instead when
``RELAYWATCH_REQUIRE_CHROMIUM=1`` (CI). Each picture stays in the test's tmp_path (printed).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from detector.report.html import OPEN_RELAY_RED, render_html
from detector.report.model import Report
from tests.report.reports import busy_report, open_relay_report, quiet_report
from tests.required import require

WINDOW = (1000, 2400)
RED = tuple(int(OPEN_RELAY_RED[i : i + 2], 16) for i in (1, 3, 5))


def chromium() -> str:
    names = ("chromium", "chromium-browser", "google-chrome")
    found = next((path for name in names if (path := shutil.which(name))), None)
    missing = "headless Chromium is not installed (Debian package chromium)"
    require(None if found else missing, "RELAYWATCH_REQUIRE_CHROMIUM")
    assert found is not None
    return found


def screenshot(report: Report, directory: Path, name: str) -> Path:
    """The report's HTML and its picture in ``directory``; the PNG's path."""
    browser = chromium()
    page = directory / f"{name}.html"
    page.write_text(render_html(report), encoding="utf-8")
    picture = directory / f"{name}.png"
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={directory / 'chromium-profile'}",  # not shared between runs
            f"--screenshot={picture}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert picture.exists(), f"chromium wrote no picture (exit {done.returncode}): {done.stderr}"
    print(f"report picture: {picture}")
    return picture


@dataclass(frozen=True)
class Picture:
    width: int
    height: int
    rows: list[bytes]  # RGB, 3 bytes a pixel

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        row = self.rows[y]
        return row[3 * x], row[3 * x + 1], row[3 * x + 2]


def paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def unfilter(kind: int, line: bytearray, prior: bytes, bpp: int) -> bytearray:
    """One scanline of PNG filter ``kind`` reconstructed (RFC 2083, 6.2-6.6)."""
    if kind == 0:
        return line
    if kind == 2:  # Up: bytewise sum of two rows, done on big integers without carries
        size = len(line)
        a, b = int.from_bytes(line, "big"), int.from_bytes(prior, "big")
        low, high = int.from_bytes(b"\x7f" * size, "big"), int.from_bytes(b"\x80" * size, "big")
        return bytearray((((a & low) + (b & low)) ^ ((a ^ b) & high)).to_bytes(size, "big"))
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + ((left + prior[i]) >> 1)) & 0xFF
        elif kind == 4:
            upper_left = prior[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + paeth(left, prior[i], upper_left)) & 0xFF
        else:
            raise AssertionError(f"unknown PNG filter {kind}")
    return line


def read_png(path: Path) -> Picture:
    """A minimal decoder for what Chromium writes: 8-bit RGB or RGBA, not interlaced."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, compressed, header = 8, bytearray(), b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            compressed += body
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(bytes(compressed))
    stride = width * bpp
    rows, prior = [], bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        line = unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), prior, bpp)
        prior = bytes(line)
        rows.append(prior if bpp == 3 else bytes(b for i, b in enumerate(prior) if i % 4 != 3))
    return Picture(width, height, rows)


def near(colour: tuple[int, int, int], target: tuple[int, ...], tolerance: int = 6) -> bool:
    return all(abs(c - t) <= tolerance for c, t in zip(colour, target, strict=True))


def red_rows(picture: Picture) -> list[int]:
    """The rows in which at least a fifth of the width is the open-relay red."""
    found = []
    for y in range(0, picture.height, 2):
        hits = sum(near(picture.pixel(x, y), RED) for x in range(0, picture.width, 4))
        if hits * 4 >= picture.width // 5:
            found.append(y)
    return found


def distinct_colours(picture: Picture) -> int:
    return len(
        {
            picture.rows[y][i : i + 3]
            for y in range(0, picture.height, 3)
            for i in range(0, len(picture.rows[y]), 3 * 3)
        }
    )


def test_open_relay_report_picture_shows_the_red_headline_at_the_top(tmp_path: Path) -> None:
    picture = read_png(screenshot(open_relay_report(), tmp_path, "open-relay"))
    assert (picture.width, picture.height) == WINDOW
    assert distinct_colours(picture) > 100  # text, charts and tables, not a blank page
    red = red_rows(picture)
    assert red, "no band of the open-relay red"
    assert red[0] < 150, f"the red headline starts at y={red[0]}, not at the top"
    assert 40 <= len(red) * 2 <= 200, f"the red headline is {len(red) * 2} px high"
    # the page is white in the middle and not white all over
    assert picture.pixel(WINDOW[0] // 2, 5) == (255, 255, 255)
    lit = sum(
        picture.pixel(x, y) != (255, 255, 255)
        for y in range(0, picture.height, 10)
        for x in range(0, picture.width, 10)
    )
    assert lit > 0.15 * (picture.width // 10) * (picture.height // 10)


@pytest.mark.parametrize("make", [quiet_report, busy_report], ids=["quiet", "busy"])
def test_report_picture_without_an_open_relay_has_no_red(make: object, tmp_path: Path) -> None:
    assert callable(make)
    picture = read_png(screenshot(make(), tmp_path, "report"))
    assert (picture.width, picture.height) == WINDOW
    assert distinct_colours(picture) > 30
    assert red_rows(picture) == []


def test_png_decoder_reads_every_filter(tmp_path: Path) -> None:
    """The decoder on a picture with known pixels, one row per PNG filter."""
    width, bpp = 5, 3
    pixels = [
        bytes((x * 40 + y, 200 - x * 30, (x * y * 17) % 256))
        for y in range(5)
        for x in range(width)
    ]
    rows = [b"".join(pixels[y * width : (y + 1) * width]) for y in range(5)]
    encoded, prior = bytearray(), bytes(width * bpp)
    for kind, row in enumerate(rows):
        out = bytearray()
        for i, value in enumerate(row):
            left = row[i - bpp] if i >= bpp else 0
            upper_left = prior[i - bpp] if i >= bpp else 0
            predictor = (
                0,
                left,
                prior[i],
                (left + prior[i]) >> 1,
                paeth(left, prior[i], upper_left),
            )[kind]
            out.append((value - predictor) & 0xFF)
        encoded += bytes((kind,)) + out
        prior = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    path = tmp_path / "filters.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, 5, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(bytes(encoded)))
        + chunk(b"IEND", b"")
    )
    picture = read_png(path)
    assert picture.rows == rows
