"""Regenerate docs/report-sample.html and docs/report-sample.png: eight simulated days of a
Postfix log (:mod:`detector.simulate`), ingested into a scratch SQLite store, and the report of
the last day, on which the server relays for two outside clients, rendered to HTML and to a
picture by headless Chromium (Debian package ``chromium``).

Run from the repository: ``.venv/bin/python docs/make_report_sample.py`` (about a minute).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

from detector.config import load_settings  # noqa: E402
from detector.ingest import Pipeline  # noqa: E402
from detector.report.build import build_report  # noqa: E402
from detector.report.html import render_html  # noqa: E402
from detector.simulate import Day, write_days  # noqa: E402
from detector.store.session import open_database  # noqa: E402

ZONE = "Europe/Berlin"
FIRST = date(2026, 11, 24)
DAYS = (
    Day(8000, abusers=3, abuse_share=0.04),
    Day(8000, abusers=4, abuse_share=0.06),
    Day(8000, abusers=0, abuse_share=0.0),
    Day(8000, abusers=6, abuse_share=0.08),
    Day(8000, abusers=9, abuse_share=0.15),
    Day(8000, abusers=7, abuse_share=0.12),
    Day(8000, abusers=5, abuse_share=0.1),
    Day(12000, abusers=12, abuse_share=0.2, open_relay_clients=2),
)
WINDOW = (1000, 2600)
CONFIG = """\
[network]
internal_networks = ["127.0.0.1/32", "10.0.0.0/8"]
local_domains = ["example.test"]
[database]
url = "sqlite:///{database}"
[scoring]
block_duration = "1d"
"""


def screenshot(page: Path, picture: Path, scratch: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("headless Chromium is needed for the picture (Debian package chromium)")
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={scratch / 'chromium-profile'}",
            f"--screenshot={picture}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main() -> None:
    zone = ZoneInfo(ZONE)
    with tempfile.TemporaryDirectory() as name:
        scratch = Path(name)
        log = scratch / "mail.log"
        write_days(log, DAYS, first=FIRST, zone=zone, session_rate=0.03)
        database = scratch / "relaywatch.db"
        config = scratch / "relaywatch.toml"
        config.write_text(CONFIG.format(database=database))
        engine = open_database(f"sqlite:///{database}")
        try:
            Pipeline(load_settings(config, environ={}), engine).ingest_file(
                log, host="mx1", log_format="postfix"
            )
            with engine.connect() as connection:
                day = FIRST + timedelta(days=len(DAYS) - 1)
                report = build_report(connection, day, zone=zone, top=10)
        finally:
            engine.dispose()
        page = DOCS / "report-sample.html"
        page.write_text(render_html(report), encoding="utf-8")
        screenshot(page, DOCS / "report-sample.png", scratch)
    print(f"wrote {page} and {DOCS / 'report-sample.png'}")


if __name__ == "__main__":
    main()
