"""End to end: the real dashboard server on 127.0.0.1, driven in headless Chromium with Playwright.

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` package (dev extra); no
browser is downloaded. Skipped, with the reason, where either is missing. Screenshots go to
``MEDMETA_SCREENSHOTS`` when set (to keep them), else to the test's temporary folder.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
USER = "Dr Browser"
WARFARIN_PATIENT = "PA135312273"  # the first IWPC patient of the embedded samples (a genotype, a dose)

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium) to run the "
                "browser test", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """``medmeta dashboard`` on a free port of 127.0.0.1; yields its URL and audit log, then stops it."""
    port = free_port()
    audit = tmp_path / "audit.sqlite"
    env = {**os.environ, "MEDMETA_HOME": str(tmp_path / "home"), "MEDMETA_AUDIT_DB": str(audit),
           "MEDMETA_USER": USER}
    for name in ("MEDMETA_DASHBOARD_SOURCE", "MEDMETA_BUNDLES", "MEDMETA_MODELS"):
        env.pop(name, None)
    medmeta = Path(sys.executable).with_name("medmeta")
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([str(medmeta), "dashboard", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # the server answers its health check once it is listening
            if proc.poll() is not None:
                pytest.fail(f"the dashboard server exited: {(tmp_path / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the dashboard server did not answer within 60 s")
                time.sleep(0.25)
        yield url, audit
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group we started: medmeta and its streamlit child
        proc.wait(timeout=30)
        log.close()


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as in /proc/net/tcp*) of the sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)
    assert pixels.std() > 5, f"{path} is a blank page"


def test_one_diagnosis_and_one_accepted_suggestion_in_chromium(server, tmp_path):
    url, audit = server
    assert listening_addresses(int(url.rsplit(":", 1)[1])) == {"0100007F"}  # 127.0.0.1 only, not every interface
    shots = Path(os.environ.get("MEDMETA_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)  # the first load builds the sample export
            page.goto(url)
            expect = sync_api.expect
            expect.set_options(timeout=120_000)
            expect(page.get_by_text("Not for clinical use.")).to_be_visible()
            expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
            page.screenshot(path=shots / "patients.png", full_page=True)

            page.locator('[data-testid="stSidebar"]').get_by_text("Diagnosis", exact=True).click()
            diagnose = page.get_by_role("button", name="Diagnose")
            diagnose.click(timeout=120_000)  # waits for the bundle and its support memory
            expect(page.get_by_text("Evidence: the most similar stored cases")).to_be_visible()
            expect(page.get_by_text("Suggested class")).to_be_visible()
            expect(page.get_by_text("similarity").first).to_be_visible()
            page.wait_for_timeout(2000)  # the charts draw after their elements appear
            page.screenshot(path=shots / "diagnosis.png", full_page=True)

            page.get_by_role("button", name="Accept").click()
            expect(page.get_by_text("Accepted; recorded in the audit log.")).to_be_visible()
            page.screenshot(path=shots / "accepted.png", full_page=True)

            # a treatment suggestion: the Treatment page, then a patient with a genotype typed into the sidebar's list
            sidebar = page.locator('[data-testid="stSidebar"]')
            sidebar.get_by_text("Treatment", exact=True).click()
            expect(page.get_by_role("heading", name="Treatment")).to_be_visible()
            sidebar.get_by_label("Patient", exact=True).click()
            page.keyboard.type(WARFARIN_PATIENT)
            page.get_by_role("option", name=WARFARIN_PATIENT).click()
            expect(page.get_by_text("mg/week").first).to_be_visible()
            page.get_by_role("button", name="Accept").first.click()
            expect(page.get_by_text("Accepted; recorded in the audit log.")).to_be_visible()
            page.wait_for_timeout(2000)
            page.screenshot(path=shots / "treatment.png", full_page=True)
        finally:
            browser.close()
    for name in ("patients.png", "diagnosis.png", "accepted.png", "treatment.png"):
        check_png(shots / name)
    with sqlite3.connect(audit) as db:
        rows = db.execute("SELECT user, action, model_version FROM events WHERE kind = 'diagnosis'").fetchall()
        dose = db.execute("SELECT user, action, patient FROM events WHERE kind = 'warfarin'").fetchall()
    assert [(u, a) for u, a, _ in rows] == [(USER, "shown"), (USER, "accepted")]
    assert all("memory v" in v for _, _, v in rows)
    assert dose == [(USER, "shown", WARFARIN_PATIENT), (USER, "accepted", WARFARIN_PATIENT)]
