"""What the enforcement API tests share: a configuration with a write token, a read token and
a relay host's own address; decisions written straight into the store; the problem shape."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from detector.config import Settings, load_settings
from detector.decide import AUTO, Decision, create_block

WRITER = "writer-token-0123456789"  # scopes read and write
READER = "reader-token-0123456789"  # scope read: what a CrowdSec bouncer is given
OTHER_READER = "second-bouncer-0123456789"
WRITE_ONLY = "write-only-token-0123456789"
INTERNAL = ["127.0.0.1/32", "10.0.0.0/8"]
OWN_ADDRESS = "192.0.2.25"


def enforcement_settings(tmp_path: Path, database_url: str, extra: str = "") -> Settings:
    """Settings over ``database_url`` with the four tokens above, blocks of 2h by default."""
    path = tmp_path / "relaywatch.toml"
    path.write_text(
        f"[network]\ninternal_networks = {INTERNAL!r}\n".replace("'", '"')
        + f'own_addresses = ["{OWN_ADDRESS}/32"]\n'
        'local_domains = ["example.test"]\n'
        "[database]\n"
        f'url = "{database_url}"\n'
        "[scoring]\n"
        'block_duration = "2h"\n'
        "[api]\n"
        "tokens = [\n"
        f'  {{ name = "ops", token = "{WRITER}", scopes = ["read", "write"] }},\n'
        f'  {{ name = "firewall", token = "{READER}", scopes = ["read"] }},\n'
        f'  {{ name = "nginx", token = "{OTHER_READER}", scopes = ["read"] }},\n'
        f'  {{ name = "odd", token = "{WRITE_ONLY}", scopes = ["write"] }},\n'
        "]\n" + extra
    )
    return load_settings(path, environ={})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_key(token: str) -> dict[str, str]:
    return {"X-Api-Key": token}


def stored_block(
    engine: Engine,
    value: str,
    *,
    start: datetime,
    duration: timedelta,
    reason: str = "5 refused relay attempts in 10m",
) -> Decision:
    """An automatic block as the scorer makes it: from the log's time, which may be past."""
    with engine.begin() as connection:
        return create_block(
            connection, value, origin=AUTO, reason=reason, start=start, duration=duration,
            evidence={},
        )  # fmt: skip


def assert_problem(response: Any, status: int) -> dict[str, str]:
    """A ``status`` answer with the JSON body ``{"error": …, "detail": …}``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, str] = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] and body["detail"]
    return body
