"""format = "auto": every family's logs are recognised as that family, from their first lines,
with a reason a mail administrator can read."""

from __future__ import annotations

import re

import pytest

from parsers import PARSERS, detect_format
from tests.conftest import corpus_path
from tests.parsers.samples import load_file, sample_files

REAL_LOGS = {
    "postfix": ("postfix", "generated-local-postfix-3.7.11", "mail.log.traditional"),
    "exim": ("exim", "generated-local-exim-4.96", "mainlog"),
    "sendmail": ("sendmail", "generated-local-sendmail-8.17.1.9", "mail.log.traditional"),
    "opensmtpd": ("opensmtpd", "generated-local-opensmtpd-6.8.0p2", "mail.log.traditional"),
}
SAMPLE_FILES = [
    (family, path)
    for family in PARSERS
    for path in sample_files(family)
    if path.name != "hostile.log"
]


@pytest.mark.parametrize(
    ("family", "path"), SAMPLE_FILES, ids=[f"{f}/{p.name}" for f, p in SAMPLE_FILES]
)
def test_every_sample_file_is_recognised_as_its_family(family: str, path: object) -> None:
    lines = [sample.line for sample in load_file(path)]  # type: ignore[arg-type]
    detected = detect_format(lines)
    assert detected is not None and detected.family == family, detected


@pytest.mark.parametrize("family", [f for f in REAL_LOGS if f in PARSERS])
def test_real_logs_are_recognised_as_their_family(family: str) -> None:
    path = corpus_path(*REAL_LOGS[family])
    detected = detect_format(path.read_text(encoding="utf-8").splitlines())
    assert detected is not None and detected.family == family
    assert re.match(rf"\d+ of its first \d+ lines are {family} lines", detected.reason)


def test_a_file_of_no_known_format_is_not_guessed() -> None:
    assert detect_format(["hello world", "this is not a mail log", "127.0.0.1 - - GET /"]) is None
