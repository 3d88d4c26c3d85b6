"""The configuration: one TOML file plus the environment, validated into one typed object.

``load_settings`` is called once by the entry point (CLI, daemon, tests) and the resulting
:class:`Settings` is passed down; nothing reads configuration at import time.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import socket
import tomllib
from datetime import timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from detector.errors import ConfigError

FORMATS = (
    "auto",
    "postfix",
    "exim",
    "sendmail",
    "exchange-tracking",
    "exchange-smtp",
    "iis-w3c",
    "ims",
    "exchange55-tracking",
    "opensmtpd",
)
SINK_TYPES = (
    "postfix-cidr",
    "postfix-policy",
    "exim",
    "sendmail",
    "exchange",
    "nftables",
    "rbldnsd",
    "webhook",
)

_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> timedelta:
    """``"90s"``, ``"10m"``, ``"1h30m"``, ``"7d"``, ``"2w"`` (or a number of seconds)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return timedelta(seconds=value)
    text = str(value).strip().lower()
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 10m, 1h, 7d)")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest exact form: ``10m``, ``1h``, ``7d``, ``1h30m``."""
    seconds = int(delta.total_seconds())
    out = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out) or "0s"


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"invalid network {value!r} (use a CIDR such as 10.0.0.0/8)") from None


def _domain(value: str) -> str:
    domain = value.strip().lower().rstrip(".")
    if not re.fullmatch(r"\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*", domain):
        raise ValueError(f"invalid domain {value!r}")
    return domain


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"invalid listen address {value!r} (use host:port, e.g. 127.0.0.1:8025)")
    return value


def zone_name(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name, e.g. Europe/Berlin or UTC)"
        ) from None
    return value


def zone(name: str | None) -> tzinfo | None:
    """The zone named ``name`` (a validated IANA name), or ``None``: this machine's."""
    return None if name is None else ZoneInfo(name)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Zone = Annotated[str, AfterValidator(zone_name)]
Network = Annotated[str, AfterValidator(_network)]
Domain = Annotated[str, AfterValidator(_domain)]
Listen = Annotated[str, AfterValidator(_listen)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetworkSettings(_Section):
    internal_networks: list[Network] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    local_domains: list[Domain] = Field(default_factory=list)
    relay_domains: list[Domain] = Field(default_factory=list)
    own_addresses: list[Network] = Field(default_factory=list)  # the relay hosts' own


class DatabaseSettings(_Section):
    url: str = "sqlite:///relaywatch.db"

    @field_validator("url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError(
                f"unsupported database url {url!r} (sqlite:/// or postgresql+psycopg://)"
            )
        return url


class SourceSettings(_Section):
    path: Path
    format: Literal[FORMATS] = "auto"  # type: ignore[valid-type]
    host: str = Field(default_factory=socket.gethostname, min_length=1)
    timezone: Zone | None = None  # of stamps written in local time; None: this machine's


class ScoringSettings(_Section):
    window: Duration = timedelta(minutes=10)
    refused_relays_to_block: int = Field(default=5, ge=1)
    accepted_relays_to_block: int = Field(default=1, ge=1)
    block_duration: Duration = timedelta(hours=1)
    max_block_duration: Duration = timedelta(days=7)
    repeat_factor: float = Field(default=4.0, ge=1.0)


class EnforcementSettings(_Section):
    dry_run: bool = False  # decide, log and report; push nothing to any sink
    max_new_blocks_per_minute: int = Field(default=50, ge=1)  # the circuit breaker
    range_offenders: int = Field(default=0, ge=0)  # blocked IPs in one /24 or /64 that
    # make a block of the range (0: never)
    sync_interval: Duration = timedelta(seconds=60)  # full sync of every sink


def _time_of_day(value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError(f"invalid time of day {value!r} (use HH:MM, e.g. 02:00)")
    return value


def _address(value: str) -> str:
    if not re.fullmatch(r"[^@\s<>,]+@[^@\s<>,]+", value):
        raise ValueError(f"invalid mail address {value!r}")
    return value


TimeOfDay = Annotated[str, AfterValidator(_time_of_day)]
MailAddress = Annotated[str, AfterValidator(_address)]


class ReportSettings(_Section):
    at: TimeOfDay = "02:00"  # when the daemon builds yesterday's report (in timezone)
    timezone: Zone | None = None  # the zone days are counted in; None: this machine's
    top: int = Field(default=20, ge=1, le=1000)  # entries of each "top" list
    mail_to: list[MailAddress] = Field(default_factory=list)  # empty: stored, not mailed
    mail_from: MailAddress = "relaywatch@localhost"
    smtp_host: str = Field(default="localhost", min_length=1)
    smtp_port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = None


class ApiToken(_Section):
    name: str = Field(min_length=1)
    token: str = Field(min_length=16)
    scopes: list[Literal["read", "write"]] = Field(default_factory=lambda: ["read"])  # type: ignore[arg-type]


class ApiSettings(_Section):
    listen: Listen = "127.0.0.1:8025"
    tokens: list[ApiToken] = Field(default_factory=list)


# What each sink type must be given, and what else it may be given (besides ``dry_run``).
_SINK_NEEDS: dict[str, tuple[str, ...]] = {
    "postfix-cidr": ("path",), "postfix-policy": (), "exim": ("path",), "sendmail": ("path",),
    "exchange": ("path",), "nftables": ("path",), "rbldnsd": ("path",), "webhook": ("url",),
}  # fmt: skip
_SINK_MAY: dict[str, tuple[str, ...]] = {
    "postfix-cidr": ("reload_command",),
    "postfix-policy": ("listen",),
    "exim": ("reload_command",),
    "sendmail": ("reload_command", "makemap_command"),
    "exchange": ("reload_command",),
    "nftables": ("reload_command", "nft_table", "nft_set"),
    "rbldnsd": ("reload_command",),
    "webhook": ("timeout", "tries"),
}
_NFT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class SinkSettings(_Section):
    """One ``[[sinks]]`` entry (DESIGN.md §4).  A field its type needs and lacks, or one its
    type does not use, is an error naming the field."""

    type: Literal[SINK_TYPES]  # type: ignore[valid-type]
    path: Path | None = Field(default=None, validate_default=True)  # the file a sink keeps
    listen: str | None = None  # postfix-policy: host:port or unix:/path
    reload_command: str | None = None  # run after the file changed; failing, the old file stays
    url: str | None = Field(default=None, validate_default=True)  # webhook: where to POST
    makemap_command: str | None = None  # sendmail; None: makemap hash PATH (the file on stdin)
    nft_table: str = "relaywatch"  # nftables: table inet NAME
    nft_set: str = "relay_abusers"  # nftables: sets NAME_v4 and NAME_v6
    timeout: Duration = timedelta(seconds=10)  # webhook: per request
    tries: int = Field(default=3, ge=1, le=10)  # webhook: attempts, with back-off between
    dry_run: bool = False  # render and report; write and run nothing

    @field_validator(
        "path", "listen", "reload_command", "url", "makemap_command", "nft_table", "nft_set",
        "timeout", "tries",
    )  # fmt: skip
    @classmethod
    def _fits_type(cls, value: object, info: ValidationInfo) -> object:
        kind = info.data.get("type")
        if kind is None:  # the type itself is wrong: that error is the one to report
            return value
        name = str(info.field_name)
        if value is None:
            if name in _SINK_NEEDS[kind]:
                raise ValueError(f"required for type {kind}")
        elif name not in _SINK_NEEDS[kind] + _SINK_MAY[kind]:
            raise ValueError(f"not used by type {kind}")
        return value

    @field_validator("reload_command", "makemap_command")
    @classmethod
    def _command_line(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                words = shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"not a command line ({exc}): {value!r}") from None
            if not words:
                raise ValueError("empty command")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/\s]+", value):
            raise ValueError(f"not an http:// or https:// URL: {value!r}")
        return value

    @field_validator("nft_table", "nft_set")
    @classmethod
    def _nft_name(cls, value: str) -> str:
        if not _NFT_NAME.fullmatch(value):
            raise ValueError(f"not an nftables name (a letter, then letters, digits, _): {value!r}")
        return value


class Settings(BaseSettings):
    """Everything relaywatch can be told, with the defaults of DESIGN.md §3."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    network: NetworkSettings = Field(default_factory=NetworkSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    sources: list[SourceSettings] = Field(default_factory=list)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    enforcement: EnforcementSettings = Field(default_factory=EnforcementSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    sinks: list[SinkSettings] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the file and RELAYWATCH_* are merged by load_settings


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = "".join(f"[{p + 1}]" if isinstance(p, int) else f".{p}" for p in first["loc"])[1:]
    if first["type"] == "extra_forbidden":
        message = f"{key}: unknown key"
    elif first["type"] == "missing":
        message = f"{key}: required key is missing"
    else:
        text = str(first["msg"]).removeprefix("Value error, ")
        message = f"{key}: {text}"
    more = len(error.errors()) - 1
    return message + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read ``path`` (or ``$RELAYWATCH_CONFIG``; defaults when neither), apply the environment."""
    env = os.environ if environ is None else environ
    if path is None and env.get("RELAYWATCH_CONFIG"):
        path = Path(env["RELAYWATCH_CONFIG"])
    data: dict[str, Any] = {}
    origin = "configuration"
    if path is not None:
        origin = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if env.get("RELAYWATCH_DATABASE_URL"):
        database = data.get("database")
        data["database"] = {**(database if isinstance(database, dict) else {}),
                            "url": env["RELAYWATCH_DATABASE_URL"]}  # fmt: skip
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {_describe(exc)}") from None
