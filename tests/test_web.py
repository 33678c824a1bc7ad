"""`fed serve`: the status page in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium), and its JSON API.

The page must load, show the four sites, mark a lagging flow, show a release's
completeness right, and update by itself after a sync. A screenshot is saved to
``test-artifacts/federation-status.png`` (and ``...-updated.png`` after the sync).
Under CI (``CI`` set) a missing browser fails the test; elsewhere it is skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import Federation, populate_ncsa
from test_cli import fed
from test_status import add_exposure, places

from federation.operations.release import create as create_release
from federation.operations.status import StatusRequest, status
from federation.web import create_app

PROJECT = Path(__file__).resolve().parent.parent
ARTIFACTS = PROJECT / "test-artifacts"
FED = str(Path(sys.executable).parent / "fed")
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 30.0  # seconds: the longest any step may take


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium, driven through chromedriver."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        message = (f"{' and '.join(missing)} missing: tools/install-servers.sh installs "
                   "Debian's chromium and chromium-driver")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1500,1700"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def serving(fed_: Federation, folder: Path, tmp_path: Path) -> Iterator[str]:
    """`fed serve` on a free loopback port, refreshing every second; yields its URL."""
    out = tmp_path / "serve.out"
    with open(out, "w") as stream:
        proc = subprocess.Popen(
            [FED, "serve", "--port", "0", "--refresh", "1", *map(str, places(fed_, folder))],
            stdout=stream, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT
        while "http://" not in out.read_text():
            assert proc.poll() is None, f"fed serve exited {proc.returncode}: {out.read_text()}"
            assert time.monotonic() < deadline, "fed serve did not start in time"
            time.sleep(0.1)
        url = next(w for w in out.read_text().split() if w.startswith("http://"))
        assert url.startswith("http://127.0.0.1:")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=WAIT) == 0, out.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def shipped_policies(tmp_path: Path) -> Path:
    """The project's policies, with DR1 going to IN2P3 only (so that two sites lack it)."""
    folder = tmp_path / "policies"
    folder.mkdir()
    for name in ("replicas", "processing", "laptop"):
        shutil.copy(PROJECT / "policies" / f"{name}.yaml", folder)
    (folder / "releases.yaml").write_text(yaml.safe_dump(
        {"flows": [{"name": "dr1", "from": "NCSA", "to": "IN2P3", "release": "DR1"}]}))
    return folder


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    print(f"screenshot of the status page: {path}")
    return path


def test_the_status_page_in_a_browser(federation, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    populate_ncsa(federation)
    ncsa = federation.root / "repos" / "NCSA"
    create_release(ncsa, "DR1", ["HSC/calib"])
    folder = shipped_policies(tmp_path)
    fed("federate", "--once", *places(federation, folder))
    with federation.butler("NCSA") as b:
        reached = b.registry.db.last_seq()
    fed("release", "verify", ncsa, "DR1")
    add_exposure(federation, 903340)  # NCSA ingests after the pass
    with federation.butler("NCSA") as b:
        written = b.registry.db.last_seq() - reached
    # the flow lacks the 4 new raws; the exposure's record and DR1's verification are
    # not what it carries
    behind = 4
    assert written == 6

    with serving(federation, folder, tmp_path) as url:
        browser.get(url)
        wait = WebDriverWait(browser, WAIT)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "table#flows"))
        assert browser.title == "Federation status"
        sites = browser.find_elements(By.CSS_SELECTOR, "table#sites tr.site")
        assert [row.get_attribute("data-site") for row in sites] == \
            ["IN2P3", "NCSA", "Princeton", "laptop"]
        assert all("reachable" in row.get_attribute("class").split() for row in sites)

        row = flow_row(browser, "replicas/raw-calib->IN2P3")
        assert "lagging" in row.get_attribute("class").split()
        assert row.get_attribute("data-behind") == str(behind)
        assert "behind" in row.find_element(By.CSS_SELECTOR, ".marker").text
        assert "lagging" not in flow_row(browser, "laptop/exposure->laptop") \
            .get_attribute("class").split()

        cells = browser.find_elements(By.CSS_SELECTOR, 'tr[data-release="DR1"] td.cell')
        assert {c.get_attribute("data-site"): c.text for c in cells} == {
            "NCSA": "verified", "IN2P3": "verified", "Princeton": "absent", "laptop": "absent"}
        screenshot(browser, "federation-status.png")

        browser.execute_script("window.stillThisPage = true;")
        fed("federate", "--once", *places(federation, folder))  # the sync
        wait.until(lambda d: "lagging" not in flow_row(d, "replicas/raw-calib->IN2P3")
                   .get_attribute("class").split())
        assert browser.execute_script("return window.stillThisPage === true;"), \
            "the page was reloaded instead of updating itself"
        assert flow_row(browser, "replicas/raw-calib->IN2P3").get_attribute("data-behind") \
            == "0"
        logged = browser.find_element(By.CSS_SELECTOR, "table#log").text
        assert "federate" in logged and "policy replicas, flow raw-calib" in logged
        screenshot(browser, "federation-status-updated.png")


def flow_row(driver, key: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'tr[data-flow="{key}"]')


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_json_api_and_read_only(federation, tmp_path):
    populate_ncsa(federation)
    folder = shipped_policies(tmp_path)
    fed("federate", "--once", *places(federation, folder))
    request = StatusRequest(federation.sites_dir, folder, federation.root / "state.json",
                            log_limit=5)
    client = create_app(lambda: status(request), refresh=1).test_client()
    found = client.get("/api/status").get_json()
    assert set(found) == set(status(request).to_dict())
    assert [s["name"] for s in found["sites"]] == ["IN2P3", "NCSA", "Princeton", "laptop"]
    assert {f["flow"] for f in found["flows"]} >= {"replicas/raw-calib->IN2P3",
                                                   "laptop/exposure->laptop"}
    entries = client.get("/api/log?limit=3").get_json()["entries"]
    assert len(entries) == 3 and all(e["site"] and e["operation"] for e in entries)
    assert entries[0]["started"] >= entries[-1]["started"]  # newest first
    for method in (client.post, client.put, client.delete):
        assert method("/api/status").status_code == 405
    assert client.get("/nothing").status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and b'id="live"' in page.data
    assert page.headers["Cache-Control"] == "no-store"
    assert b'<table id="flows">' in client.get("/live").data
    shutil.rmtree(folder)  # the policies gone: a one-line error, until they are back
    time.sleep(1.1)
    gone = client.get("/api/status")
    assert gone.status_code == 503 and "no policies directory" in gone.get_json()["error"]
