"""The ``relaywatch`` command as a user runs it: the installed console script in a subprocess,
real files in a temporary directory and a real SQLite file."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import POSTFIX_37, config_text, corpus_path

RELAYWATCH = Path(sys.executable).parent / "relaywatch"

OFFENDER_KEYS = [
    "ip", "score", "relay_attempts", "refused_relays", "accepted_relays", "recipients",
    "recipient_domains", "first_seen", "last_seen", "blocked", "blocked_until", "reasons",
]  # fmt: skip
SUMMARY_KEYS = {
    "lines", "parsed", "unparsed", "transactions", "refused_relays", "accepted_relays",
    "offenders", "blocks",
}  # fmt: skip
# Ground truth of the corpus (SCENARIOS.txt) with internal network 127.0.0.1/32 and local
# domain example.test: 127.0.0.5 is refused 5 relays and is blocked, 127.0.0.7 and ::1 once.
REFUSED_BY_IP = {"127.0.0.5": 5, "127.0.0.7": 1, "::1": 1}
# A block that outlives any clock this suite runs on, so "blocked" does not depend on the time
# of day: blocks start at the log's time (2026-11-30T08:10Z) and the default lasts only 1h.
LONG_BLOCKS = '[scoring]\nblock_duration = "3650d"\nmax_block_duration = "3650d"\n'
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

Run = Callable[..., subprocess.CompletedProcess[str]]


def _environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYWATCH_")}
    return {**env, **extra}


def relaywatch(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``relaywatch ARGS…`` in ``cwd``, with the environment of the tests plus ``env``."""
    return subprocess.run(
        [str(RELAYWATCH), *map(str, args)],
        cwd=cwd,
        env=_environment(env or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """``relaywatch`` run in ``tmp_path`` unless told ``cwd=``."""

    def run_relaywatch(
        *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return relaywatch(*args, cwd=cwd or tmp_path, env=env)

    return run_relaywatch


@pytest.fixture
def mail_log() -> Path:
    return corpus_path("postfix", POSTFIX_37.name, "mail.log.rfc3339")


@pytest.fixture
def config(write_config: Callable[..., Path]) -> Path:
    """The corpus' network, a SQLite file in tmp_path, and blocks that do not expire today."""
    return write_config(LONG_BLOCKS)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The configuration of a database holding the corpus log; the tests using it only read."""
    directory = tmp_path_factory.mktemp("ingested")
    config = directory / "relaywatch.toml"
    config.write_text(config_text(f"sqlite:///{directory / 'relaywatch.db'}", LONG_BLOCKS))
    log = corpus_path("postfix", POSTFIX_37.name, "mail.log.rfc3339")
    result = relaywatch("--config", config, "ingest", "--host", "vm", log, cwd=directory)
    assert result.returncode == 0, result.stderr
    return config


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 1 and exactly one line on stderr, ``relaywatch: error: …``, with no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("relaywatch: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def summary_json(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    assert result.returncode == 0, result.stderr
    summary: dict[str, int] = json.loads(result.stdout)
    return summary


def offenders_json(run: Run, config: Path, *args: str) -> list[dict[str, Any]]:
    result = run("--config", config, "offenders", "--format", "json", *args)
    assert result.returncode == 0, result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


def stored_transactions(database: Path) -> list[tuple[object, ...]]:
    """What was stored of each transaction, without ids (they depend on the order of imports)."""
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT host, queue_id, started_at, ended_at, client_ip, helo, sasl_user, sender,"
            " recipient_count, refused_relays, accepted_relays FROM transactions"
            " ORDER BY started_at, queue_id, client_ip"
        ).fetchall()


# Errors: one line, exit 1; usage errors: exit 2


def test_missing_log_file_is_a_one_line_error(run: Run, config: Path, tmp_path: Path) -> None:
    result = run("--config", config, "ingest", tmp_path / "no-such.log")
    assert_one_line_error(result, "no-such.log")


def test_directory_given_as_a_log_is_a_one_line_error(
    run: Run, config: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    result = run("--config", config, "ingest", logs)
    assert_one_line_error(result, str(logs))


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[scoring]\nwindw = "10m"\n', "scoring.windw"),
        ('[network]\ninternal_networks = ["10.0.0.0/33"]\n', "network.internal_networks"),
        ('[network]\ninternal_networks = ["not-a-network"]\n', "network.internal_networks"),
        ('[scoring]\nwindow = "ten minutes"\n', "scoring.window"),
        ('[scoring]\nblock_duration = "1x"\n', "scoring.block_duration"),
    ],
    ids=["unknown-key", "bad-prefix-length", "bad-cidr", "bad-window", "bad-block-duration"],
)
def test_bad_configuration_is_a_one_line_error_naming_the_key(
    run: Run, tmp_path: Path, toml: str, key: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = run("--config", path, "check-config")
    assert_one_line_error(result, key, "bad.toml")


def test_configuration_that_is_not_toml_is_a_one_line_error(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "relaywatch.toml"
    path.write_text("this is not = = toml [[\n")
    result = run("--config", path, "offenders")
    assert_one_line_error(result, "relaywatch.toml", "TOML")


def test_missing_configuration_file_is_a_one_line_error(run: Run, tmp_path: Path) -> None:
    result = run("--config", tmp_path / "absent.toml", "offenders")
    assert_one_line_error(result, "absent.toml")


def test_offenders_since_with_a_bad_duration_is_a_usage_error(run: Run, config: Path) -> None:
    # DESIGN.md §3: exit 2 is a usage error, and a malformed option value is one.
    result = run("--config", config, "offenders", "--since", "10x")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "10x" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_unknown_command_is_a_usage_error(run: Run) -> None:
    result = run("frobnicate")
    assert result.returncode == 2
    assert "frobnicate" in result.stderr
    assert "Traceback" not in result.stderr


def test_ingest_without_a_path_is_a_usage_error(run: Run, config: Path) -> None:
    result = run("--config", config, "ingest")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_unreachable_postgresql_is_a_one_line_error(
    run: Run, write_config: Callable[..., Path]
) -> None:
    config = write_config(database_url="postgresql+psycopg://nobody@127.0.0.1:1/x")
    result = run("--config", config, "offenders")
    assert_one_line_error(result, "127.0.0.1")


def test_explain_of_an_unknown_ip_is_a_one_line_error(run: Run, ingested: Path) -> None:
    result = run("--config", ingested, "explain", "198.51.100.1")
    assert_one_line_error(result, "198.51.100.1")


def test_explain_of_something_not_an_ip_says_so(run: Run, ingested: Path) -> None:
    result = run("--config", ingested, "explain", "not-an-ip")
    assert_one_line_error(result, "not-an-ip", "not an IP address")


def test_truncated_gzip_log_is_a_one_line_error_naming_the_file(
    run: Run, config: Path, mail_log: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "mail.log.3.gz"
    broken.write_bytes(gzip.compress(mail_log.read_bytes())[:3000])
    result = run("--config", config, "ingest", "--host", "vm", broken)
    assert_one_line_error(result, "mail.log.3.gz")


# ingest


def test_ingest_prints_a_summary(run: Run, config: Path, mail_log: Path) -> None:
    result = run("--config", config, "ingest", "--host", "vm", mail_log)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar without a terminal, no warning
    lines = result.stdout.splitlines()
    total = len(mail_log.read_bytes().splitlines())
    match = re.fullmatch(rf"{total} lines: (\d+) parsed, (\d+) unparsed", lines[0])
    assert match, lines[0]
    assert int(match[1]) + int(match[2]) == total
    assert int(match[1]) > 0
    assert re.fullmatch(r"[1-9]\d* transactions stored", lines[1]), lines[1]
    assert "relay attempts: 7 refused, 0 accepted" in lines
    assert "3 offenders, 1 new blocks" in lines


def test_ingest_json_summary_has_the_summary_counts(run: Run, config: Path, mail_log: Path) -> None:
    summary = summary_json(run("--config", config, "ingest", "--json", "--host", "vm", mail_log))
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["lines"] == len(mail_log.read_bytes().splitlines())
    assert summary["parsed"] + summary["unparsed"] == summary["lines"]
    assert summary["transactions"] > 0
    assert summary["refused_relays"] == sum(REFUSED_BY_IP.values())
    assert summary["accepted_relays"] == 0
    assert summary["offenders"] == len(REFUSED_BY_IP)
    assert summary["blocks"] == 1


def test_ingesting_a_file_twice_adds_nothing(run: Run, config: Path, mail_log: Path) -> None:
    first = summary_json(run("--config", config, "ingest", "--json", "--host", "vm", mail_log))
    before = offenders_json(run, config)
    second = summary_json(run("--config", config, "ingest", "--json", "--host", "vm", mail_log))
    assert first["transactions"] > 0
    assert second["lines"] == first["lines"]
    assert second["transactions"] == 0
    assert second["refused_relays"] == second["accepted_relays"] == 0
    assert second["blocks"] == 0
    assert offenders_json(run, config) == before


def test_ingesting_twice_says_so_in_the_summary(run: Run, config: Path, mail_log: Path) -> None:
    run("--config", config, "ingest", "--host", "vm", mail_log)
    result = run("--config", config, "ingest", "--host", "vm", mail_log)
    assert result.returncode == 0, result.stderr
    assert re.match(r"0 transactions stored", result.stdout.splitlines()[1])


def test_gzip_copy_of_a_log_ingests_to_the_same_transactions(
    run: Run, write_config: Callable[..., Path], mail_log: Path, tmp_path: Path
) -> None:
    compressed = tmp_path / "mail.log.2.gz"
    with mail_log.open("rb") as plain, gzip.open(compressed, "wb") as packed:
        shutil.copyfileobj(plain, packed)
    plain_db, packed_db = tmp_path / "plain.db", tmp_path / "packed.db"
    plain_config = write_config(LONG_BLOCKS, database_url=f"sqlite:///{plain_db}")
    plain_summary = summary_json(
        run("--config", plain_config, "ingest", "--json", "--host", "vm", mail_log)
    )
    plain_offenders = offenders_json(run, plain_config)
    packed_config = write_config(LONG_BLOCKS, database_url=f"sqlite:///{packed_db}")
    packed_summary = summary_json(
        run("--config", packed_config, "ingest", "--json", "--host", "vm", compressed)
    )
    assert packed_summary == plain_summary
    assert offenders_json(run, packed_config) == plain_offenders
    assert stored_transactions(packed_db) == stored_transactions(plain_db)


def test_gzip_copy_of_an_ingested_log_adds_nothing(
    run: Run, config: Path, mail_log: Path, tmp_path: Path
) -> None:
    compressed = tmp_path / "mail.log.2.gz"
    compressed.write_bytes(gzip.compress(mail_log.read_bytes()))
    summary_json(run("--config", config, "ingest", "--json", "--host", "vm", mail_log))
    again = summary_json(run("--config", config, "ingest", "--json", "--host", "vm", compressed))
    assert again["transactions"] == 0


def test_log_with_bad_bytes_nul_bytes_and_a_huge_line_ingests(
    run: Run, config: Path, mail_log: Path, tmp_path: Path
) -> None:
    good = mail_log.read_bytes().splitlines(keepends=True)
    hostile = [
        b"2026-11-30T08:09:23.780000+00:00 vm postfix/smtpd[99901]: warning: \xff\xfe\xc3\x28\n",
        b"2026-11-30T08:09:23.780001+00:00 vm postfix/smtpd[99902]: NUL \x00\x00 here\n",
        b"2026-11-30T08:09:23.780002+00:00 vm postfix/smtpd[99903]: " + b"A" * 100 * 1024 + b"\n",
    ]
    log = tmp_path / "hostile.log"
    log.write_bytes(b"".join(good[:10] + hostile + good[10:]))
    result = run("--config", config, "ingest", "--json", "--host", "vm", log)
    assert result.stderr == ""
    summary = summary_json(result)
    assert summary["lines"] == len(good) + len(hostile)
    assert summary["cut"] == 1
    # the lines after the long one are read as they are: every relay attempt is still found
    assert summary["refused_relays"] == sum(REFUSED_BY_IP.values())
    text = run("--config", config, "ingest", "--host", "vm", log)
    assert text.returncode == 0, text.stderr
    assert "1 cut at 64 KiB" in text.stdout.splitlines()[0]


# offenders


def test_offenders_json_is_an_array_of_offender_objects(run: Run, ingested: Path) -> None:
    found = offenders_json(run, ingested)
    assert isinstance(found, list)
    for offender in found:
        assert list(offender) == OFFENDER_KEYS
        assert ISO_UTC.match(str(offender["first_seen"])), offender
        assert ISO_UTC.match(str(offender["last_seen"])), offender
        assert str(offender["first_seen"]).startswith("2026-11-30T08:")
        assert isinstance(offender["reasons"], list) and offender["reasons"]
    assert {o["ip"]: o["refused_relays"] for o in found} == REFUSED_BY_IP
    assert all(o["accepted_relays"] == 0 for o in found)
    assert found[0]["ip"] == "127.0.0.5"  # worst first
    scores = [o["score"] for o in found]
    assert scores == sorted(scores, reverse=True)
    worst = found[0]
    assert worst["blocked"] is True
    assert ISO_UTC.match(str(worst["blocked_until"]))
    assert all(o["blocked"] is False and o["blocked_until"] is None for o in found[1:])


def test_offenders_csv_has_a_header_row(run: Run, ingested: Path) -> None:
    result = run("--config", ingested, "offenders", "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == OFFENDER_KEYS
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert {r["ip"]: int(r["refused_relays"]) for r in records} == REFUSED_BY_IP
    as_json = offenders_json(run, ingested)
    assert [r["ip"] for r in records] == [o["ip"] for o in as_json]


def test_offenders_table_lists_every_offender(run: Run, ingested: Path) -> None:
    result = run("--config", ingested, "offenders")
    assert result.returncode == 0, result.stderr
    first_column = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert sorted(first_column) == sorted(REFUSED_BY_IP)


def test_offenders_blocked_lists_only_blocked_offenders(run: Run, ingested: Path) -> None:
    blocked = offenders_json(run, ingested, "--blocked")
    assert [o["ip"] for o in blocked] == ["127.0.0.5"]
    assert all(o["blocked"] is True for o in blocked)


def test_offenders_since_a_long_duration_lists_every_offender(run: Run, ingested: Path) -> None:
    found = offenders_json(run, ingested, "--since", "3650d")
    assert {o["ip"]: o["refused_relays"] for o in found} == REFUSED_BY_IP
    assert all(list(o) == OFFENDER_KEYS for o in found)


def test_offenders_of_an_empty_database_is_an_empty_array(run: Run, config: Path) -> None:
    assert offenders_json(run, config) == []


# explain


def test_explain_shows_score_reasons_decision_and_evidence(run: Run, ingested: Path) -> None:
    offender = next(o for o in offenders_json(run, ingested) if o["ip"] == "127.0.0.5")
    result = run("--config", ingested, "explain", "127.0.0.5")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"score {offender['score']:g}" in out
    for reason in offender["reasons"]:
        assert reason in out
    decisions = [line for line in out.splitlines() if re.search(r"\bblock\b.*\(active\)", line)]
    assert len(decisions) == 1, out
    denied = [line for line in out.splitlines() if "Relay access denied" in line]
    assert len(denied) == REFUSED_BY_IP["127.0.0.5"]
    assert all("[127.0.0.5]" in line for line in denied)
    corpus_lines = set(corpus_path("postfix", POSTFIX_37.name, "mail.log.rfc3339")
                       .read_text().splitlines())  # fmt: skip
    assert all(line.strip() in corpus_lines for line in denied)  # the original log lines


def test_explain_accepts_any_spelling_of_an_address(run: Run, ingested: Path) -> None:
    result = run("--config", ingested, "explain", "0:0:0:0:0:0:0:1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("::1: score ")


def test_ingest_of_an_empty_file_stores_nothing(run: Run, config: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.touch()
    summary = summary_json(run("--config", config, "ingest", "--json", empty))
    assert summary["lines"] == summary["transactions"] == summary["offenders"] == 0


# parse


def test_parse_prints_one_line_per_log_line_and_writes_nothing(
    run: Run, config: Path, mail_log: Path, tmp_path: Path
) -> None:
    result = run("--config", config, "parse", mail_log)
    assert result.returncode == 0, result.stderr
    total = len(mail_log.read_bytes().splitlines())
    out = result.stdout.splitlines()
    numbered = [line for line in out if re.match(r"\d+: ", line)]
    assert [int(line.split(":", 1)[0]) for line in numbered] == list(range(1, total + 1))
    assert sum(1 for line in numbered if line.split(": ", 2)[1] == "unparsed") > 0
    match = next(
        m for m in map(re.compile(rf"^{total} lines: (\d+) parsed, (\d+) unparsed$").match, out)
        if m
    )  # fmt: skip
    assert int(match[1]) + int(match[2]) == total
    assert int(match[2]) == sum(1 for line in numbered if line.split(": ", 2)[1] == "unparsed")
    assert not (tmp_path / "relaywatch.db").exists()
    assert list(tmp_path.iterdir()) == [config]


def test_parse_without_a_configuration_writes_nothing(
    run: Run, mail_log: Path, tmp_path: Path
) -> None:
    result = run("parse", mail_log)  # the default database is relaywatch.db in the cwd
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_parse_of_a_missing_file_is_a_one_line_error(run: Run, tmp_path: Path) -> None:
    assert_one_line_error(run("parse", tmp_path / "absent.log"), "absent.log")


# database, configuration, environment


def test_db_upgrade_creates_the_schema_in_an_empty_sqlite_file(
    run: Run, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    database = tmp_path / "empty.db"
    database.touch()
    config = write_config(database_url=f"sqlite:///{database}")
    result = run("--config", config, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"database at revision \S+\n", result.stdout)
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"transactions", "recipients", "offenders", "decisions", "alembic_version"} <= tables
    again = run("--config", config, "db", "upgrade")
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout
    assert offenders_json(run, config) == []


def test_check_config_accepts_a_valid_configuration(run: Run, config: Path) -> None:
    result = run("--config", config, "check-config")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "configuration is valid" in result.stdout
    assert "example.test" in result.stdout


def test_database_url_from_the_environment_overrides_the_file(
    run: Run, config: Path, mail_log: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    env = {"RELAYWATCH_DATABASE_URL": f"sqlite:///{elsewhere}"}
    result = run("--config", config, "ingest", "--host", "vm", mail_log, env=env)
    assert result.returncode == 0, result.stderr
    assert elsewhere.exists()
    assert not (tmp_path / "relaywatch.db").exists()
    found = run("--config", config, "offenders", "--format", "json", env=env)
    assert {o["ip"] for o in json.loads(found.stdout)} == set(REFUSED_BY_IP)


def test_unreachable_postgresql_from_the_environment_is_a_one_line_error(
    run: Run, config: Path
) -> None:
    env = {"RELAYWATCH_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/x"}
    assert_one_line_error(run("--config", config, "offenders", env=env), "127.0.0.1")


def test_relaywatch_config_names_the_configuration_file(
    run: Run, config: Path, mail_log: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {"RELAYWATCH_CONFIG": str(config)}
    result = run("ingest", "--host", "vm", mail_log, env=env, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "relaywatch.db").exists()  # the database the file names
    assert list(elsewhere.iterdir()) == []  # not the default relaywatch.db in the cwd
    found = run("offenders", "--format", "json", env=env, cwd=elsewhere)
    assert {o["ip"] for o in json.loads(found.stdout)} == set(REFUSED_BY_IP)


def test_relaywatch_config_naming_a_bad_file_is_a_one_line_error(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[scoring]\nwindow = "soon"\n')
    result = run("offenders", env={"RELAYWATCH_CONFIG": str(bad)})
    assert_one_line_error(result, "scoring.window")


def test_parse_says_first_which_format_it_chose_and_why(run: Run, mail_log: Path) -> None:
    result = run("parse", mail_log)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert re.fullmatch(
        r"format: postfix \(\d+ of its first \d+ lines are postfix lines.*\)", first
    )
    assert run("parse", "--format", "postfix", mail_log).stdout.startswith(
        "format: postfix (as asked)\n"
    )


def test_local_time_stamps_are_read_in_the_zone_given(run: Run, tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("Nov 30 09:00:00 mx1 postfix/smtpd[1]: connect from a.example[192.0.2.1]\n")
    berlin = run("parse", "--timezone", "Europe/Berlin", log)
    assert berlin.returncode == 0, berlin.stderr
    assert re.search(r"\n1: \d{4}-11-30T08:00:00Z connect ", berlin.stdout)  # the year: now's
    utc = run("parse", "--timezone", "UTC", log).stdout
    assert re.search(r"\n1: \d{4}-11-30T09:00:00Z connect ", utc)
    bad = run("parse", "--timezone", "Mars/Olympus", log)
    assert bad.returncode == 2 and "unknown time zone 'Mars/Olympus'" in bad.stderr


# Blocking by hand


def test_block_unblock_and_allow_as_an_administrator_runs_them(run: Run, config: Path) -> None:
    made = run("--config", config, "block", "203.0.113.7", "--duration", "2h", "--reason", "spam")
    assert made.returncode == 0, made.stderr
    assert re.fullmatch(r"blocked 203\.0\.113\.7 until \S+Z \(decision #1\)\n", made.stdout)
    ranged = run("--config", config, "block", "198.51.100.0/24")
    assert ranged.returncode == 0, ranged.stderr
    allowed = run("--config", config, "allow", "198.51.100.128/25", "--comment", "partner")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == (
        "allowed 198.51.100.128/25 (allowlist entry #1)\nunblocked 198.51.100.0/24 (decision #2)\n"
    )
    lifted = run("--config", config, "unblock", "203.0.113.7")
    assert (lifted.returncode, lifted.stdout) == (0, "unblocked 203.0.113.7 (decision #1)\n")
    assert_one_line_error(run("--config", config, "unblock", "203.0.113.7"), "is not blocked")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("block", "10.1.2.3"), "not blocking 10.1.2.3: 10.1.2.3 is in the internal network"),
        (("block", "127.0.0.0/8"), "covers the internal network 127.0.0.1/32"),
        (("block", "mx.example.org"), "'mx.example.org' is not an IP address or a CIDR range"),
        (("unblock", "300.1.2.3"), "'300.1.2.3' is not an IP address"),
        (("allow", "10.0.0.0/33"), "'10.0.0.0/33' is not an IP address or a CIDR range"),
    ],
)
def test_what_may_not_be_blocked_or_is_no_address_is_a_one_line_error(
    run: Run, config: Path, args: tuple[str, ...], needle: str
) -> None:
    assert_one_line_error(run("--config", config, *args), needle)


def test_an_allowlisted_address_is_not_blocked_by_hand(run: Run, config: Path) -> None:
    assert run("--config", config, "allow", "192.0.2.0/24").returncode == 0
    assert_one_line_error(
        run("--config", config, "block", "192.0.2.9"),
        "192.0.2.9 is in the allowlist entry 192.0.2.0/24",
    )


def test_block_with_a_bad_duration_is_a_usage_error(run: Run, config: Path) -> None:
    result = run("--config", config, "block", "203.0.113.7", "--duration", "soon")
    assert result.returncode == 2 and "invalid duration 'soon'" in result.stderr


def test_sinks_check_renders_every_sink_and_fails_when_a_check_does(
    run: Run, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    cidr, hosts = tmp_path / "relaywatch.cidr", tmp_path / "exim-hosts"
    config = write_config(
        f'[[sinks]]\ntype = "postfix-cidr"\npath = "{cidr}"\n'
        f'[[sinks]]\ntype = "exim"\npath = "{hosts}"\n'
    )
    assert run("--config", config, "block", "203.0.113.7").returncode == 0
    checked = run("--config", config, "sinks", "check")
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[0].startswith(f"ok   postfix-cidr {cidr}: rendered 1 entry")
    assert lines[1].startswith(f"ok   exim {hosts}: rendered 1 entry")
    assert not cidr.exists() and not hosts.exists()  # checked, not applied
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "postmap").write_text("#!/bin/sh\necho 'postmap: fatal: bad table' >&2\nexit 1\n")
    (tools / "postmap").chmod(0o755)
    failing = run("--config", config, "sinks", "check", env={"PATH": f"{tools}:/usr/bin:/bin"})
    assert failing.stdout.startswith(f"FAIL postfix-cidr {cidr}: ")
    assert "postmap: fatal: bad table" in failing.stdout
    assert_one_line_error(failing, "1 of 2 sinks failed their check")


def test_sinks_check_without_sinks_says_so(run: Run, config: Path) -> None:
    assert_one_line_error(run("--config", config, "sinks", "check"), "no [[sinks]] configured")


def test_explain_shows_how_often_the_mail_server_enforced_a_block(
    run: Run, config: Path, tmp_path: Path
) -> None:
    assert run("--config", config, "block", "203.0.113.7").returncode == 0
    text = "relaywatch decision 1: relay abuse, blocked until 2030-01-01T00:00:00Z"
    log = tmp_path / "mail.log"
    log.write_text("".join(
        f"2026-12-02T01:0{n}:00.000000+00:00 mx1 postfix/smtpd[{100 + n}]: NOQUEUE: reject: RCPT"
        f" from unknown[203.0.113.7]: 554 5.7.1 <unknown[203.0.113.7]>: Client host rejected:"
        f" {text}; from=<a@b.example> to=<v{n}@outside.example> proto=ESMTP helo=<h>\n"
        for n in range(3)
    ))  # fmt: skip
    assert run("--config", config, "ingest", log, "--host", "mx1").returncode == 0
    result = run("--config", config, "explain", "203.0.113.7")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "203.0.113.7: no relay attempts stored"  # the refusals are not attempts
    assert lines[3] == (
        "    enforced: 3 refusals in the mail log because of it, the last at 2026-12-02T01:02:00Z"
    )
