"""The demo finds the abusers of its generated sample log (serving is the API's business)."""

from __future__ import annotations

from pathlib import Path

from detector.demo import prepare_demo


def test_demo_finds_the_abusers_and_flags_the_open_relay(tmp_path: Path) -> None:
    settings, summary, table = prepare_demo(tmp_path / "demo", 5000, "127.0.0.1:8025")
    assert (tmp_path / "demo" / "mail.log").exists()
    assert settings.database.url.endswith("/demo/relaywatch.db")
    assert "OPEN RELAY" in summary
    rows = table.splitlines()
    assert rows[0].startswith("IP ") and len(rows) >= 3  # the abusers, worst first
    # running it again starts from a fresh database, not on top of the last one
    _, again, _ = prepare_demo(tmp_path / "demo", 5000, "127.0.0.1:8025")
    assert again.splitlines()[2] == summary.splitlines()[2]
