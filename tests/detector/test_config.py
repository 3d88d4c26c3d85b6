"""The configuration file: defaults, environment, and errors that name the bad key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from detector.config import format_duration, load_settings, parse_duration
from detector.errors import ConfigError


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relaywatch.toml"
    path.write_text(text)
    return path


def test_defaults_are_those_of_the_design() -> None:
    settings = load_settings(None, environ={})
    assert settings.database.url == "sqlite:///relaywatch.db"
    assert settings.scoring.window == timedelta(minutes=10)
    assert settings.scoring.refused_relays_to_block == 5
    assert settings.scoring.accepted_relays_to_block == 1
    assert settings.scoring.block_duration == timedelta(hours=1)
    assert settings.scoring.max_block_duration == timedelta(days=7)
    assert settings.api.listen == "127.0.0.1:8025"


def test_the_design_example_configuration_loads(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        """
[network]
internal_networks = ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]
local_domains     = ["example.test", ".example.test"]
relay_domains     = []
[database]
url = "sqlite:///relaywatch.db"
[[sources]]
path = "/var/log/mail.log"
format = "auto"
host = "mx1"
[scoring]
window = "10m"
refused_relays_to_block = 5
accepted_relays_to_block = 1
block_duration = "1h"
max_block_duration = "7d"
[api]
listen = "127.0.0.1:8025"
tokens = [{ name = "ops", token = "0123456789abcdef0123", scopes = ["read", "write"] }]
[[sinks]]
type = "postfix-cidr"
path = "/etc/postfix/relaywatch.cidr"
reload_command = "postfix reload"
[[sinks]]
type = "postfix-policy"
listen = "127.0.0.1:10040"
""",
    )
    settings = load_settings(path, environ={})
    assert settings.sources[0].host == "mx1"
    assert [s.type for s in settings.sinks] == ["postfix-cidr", "postfix-policy"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[scoring]\nwindow = "10x"\n', "scoring.window: invalid duration '10x'"),
        ('[network]\ninternal_networks = ["10.0.0.0/33"]\n',
         "network.internal_networks[1]: invalid network '10.0.0.0/33'"),
        ("[network]\nlocal_domain = []\n", "network.local_domain: unknown key"),
        ("[netwrk]\n", "netwrk: unknown key"),
        ('[[sources]]\nformat = "postfix"\n', "sources[1].path: required key is missing"),
        ('[[sources]]\npath = "/x"\nformat = "qmail"\n', "sources[1].format:"),
        ('[api]\nlisten = "8025"\n', "api.listen: invalid listen address '8025'"),
        ('[[sources]]\npath = "/x"\ntimezone = "Mars/Olympus"\n',
         "sources[1].timezone: unknown time zone 'Mars/Olympus'"),
        ('[database]\nurl = "mysql://x"\n', "database.url: unsupported database url"),
        ("[scoring]\nrefused_relays_to_block = 0\n", "scoring.refused_relays_to_block:"),
        ("[network\n", "not valid TOML"),
    ],
)  # fmt: skip
def test_bad_configuration_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = config(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert message in str(error.value)
    assert str(error.value).startswith(str(path))
    assert "\n" not in str(error.value)


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_environment_names_the_file_and_overrides_the_database(tmp_path: Path) -> None:
    path = config(tmp_path, '[database]\nurl = "sqlite:///file.db"\n')
    environ = {"RELAYWATCH_CONFIG": str(path), "RELAYWATCH_DATABASE_URL": "sqlite:///env.db"}
    settings = load_settings(None, environ=environ)
    assert settings.database.url == "sqlite:///env.db"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("1h30m", 5400), ("7d", 604800), ("2w", 1209600), (90, 90)],
)
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "10", "m", "1h-", "0s", "-5m", "1.5h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_durations_print_in_the_shortest_exact_form() -> None:
    assert [format_duration(parse_duration(t)) for t in ("600s", "1h", "7d", "90m")] == [
        "10m", "1h", "7d", "1h30m"]  # fmt: skip
