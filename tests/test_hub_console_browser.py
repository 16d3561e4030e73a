"""The console in a real browser: headless Chromium (Debian's) through selenium.

Behind it: a real mosquitto, PostgreSQL, the collector and ``edge hub serve``,
demo results of three sites published over MQTT, and one real ``edge run``
box that is stopped. Each page is photographed; with EDGE_SCREENSHOTS=docs/console
the photographs replace those in the documentation.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from console_support import PASSWORD, Hub, add_user, new_token, start_hub
from hub_support import Publisher, count_rows, postgres_database, wait_until
from support import DEMO_BUNDLE, ROOT, Broker, DaemonProcess, write_config

from edge.daemon import SERVING
from edge.hub.demo import demo_health, demo_outcome, demo_study, spread

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SITES = ("clinic-north", "clinic-south", "clinic-east")
PER_BOX = 40
WIDTH, HEIGHT = 1400, 1000

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test dependency")
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason="Debian's chromium and chromium-driver are not installed (scripts/bootstrap)",
    ),
    pytest.mark.skipif(
        not (DEMO_BUNDLE / "manifest.yaml").exists(),
        reason="the demo engine bundle (engines/demo) is not in this checkout",
    ),
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    folder = tmp_path_factory.mktemp("browser")
    (folder / "broker").mkdir()
    broker = Broker(folder / "broker")
    broker.start()
    started = start_hub(folder / "hub", broker.port, postgres_database())
    add_user(started.config, "rita", "reader")
    publish_demo(started)
    yield started
    started.stop()
    broker.stop()


def publish_demo(hub: Hub) -> None:
    """Two boxes per site, 40 days of results, outcomes for those older than a week."""
    rng = random.Random(18)
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    publisher = Publisher(hub.broker_port)
    studies = []
    try:
        for site in SITES:
            for box in ("box-1", "box-2"):
                times = spread(now - timedelta(days=40), now - timedelta(minutes=5), PER_BOX, rng)
                for seq, created in enumerate(times, start=1):
                    study = demo_study(rng, site, box, seq, created)
                    publisher.result(study.document)
                    studies.append(study)
                health = demo_health(site, box, now, 30 * PER_BOX, rng)
                publisher.publish(f"edge/{site}/{box}/health", json.dumps(health), retain=True)
                publisher.publish(f"edge/{site}/{box}/status", "online", retain=True)
    finally:
        publisher.close()
    wait_until(lambda: count_rows(hub.database_url, "SELECT count(*) FROM results")
               >= len(studies), what="demo results stored")  # fmt: skip
    old = [s for s in studies if s.document["created_at"] < _iso(now - timedelta(days=7))]
    records = [demo_outcome(s, rng, now - timedelta(days=1)) for s in old]
    headers = {"Authorization": f"Bearer {new_token(hub.config, 'rita')}"}
    answer = httpx.post(hub.console.url + "/api/v1/outcomes", json=records, headers=headers,
                        timeout=120)  # fmt: skip
    assert answer.status_code == 200, answer.text


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + "Z"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="edge-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                     f"--window-size={WIDTH},{HEIGHT}"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(5)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("EDGE_SCREENSHOTS")
    folder = ROOT / wanted if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def photograph(browser: WebDriver, folder: Path, name: str) -> None:
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(WIDTH, min(max(int(height) + 40, 600), 2400))
    assert browser.save_screenshot(str(folder / f"{name}.png"))
    browser.set_window_size(WIDTH, HEIGHT)


def start_box(hub: Hub, folder: Path) -> DaemonProcess:
    config = write_config(folder, hub.broker_port, site="clinic-west", device="box-9",
                          health={"interval_s": 1}, log={"level": "INFO"})  # fmt: skip
    daemon = DaemonProcess(config)
    daemon.start()
    daemon.wait_log(SERVING, timeout=120)
    return daemon


def test_without_a_login_the_browser_gets_the_login_page_and_the_api_401(
    hub: Hub, browser: WebDriver, shots: Path
) -> None:
    browser.delete_all_cookies()
    for path in ("/fleet", "/worklist", "/monitoring"):
        browser.get(hub.console.url + path)
        assert browser.title.startswith("Log in")
        assert not browser.find_elements(By.CSS_SELECTOR, "table")
    photograph(browser, shots, "login")
    browser.get(hub.console.url + "/api/v1/devices")
    assert "an API token is needed" in browser.page_source


def test_a_reader_logs_in_sees_a_stopped_box_offline_triages_and_records_an_outcome(
    hub: Hub, browser: WebDriver, shots: Path, tmp_path: Path
) -> None:
    box = start_box(hub, tmp_path)
    try:
        log_in(browser, hub, "rita")
        assert fleet_status(browser, hub, "clinic-west", "box-9") == "online"
        box.stop(signal.SIGTERM)
        wait_until(lambda: fleet_status(browser, hub, "clinic-west", "box-9") == "offline",
                   timeout=60, what="the stopped box shown offline")  # fmt: skip
    finally:
        if box.alive():
            box.stop(signal.SIGKILL)
    photograph(browser, shots, "fleet")

    browser.get(hub.console.url + "/worklist")
    Select(browser.find_element(By.ID, "site")).select_by_visible_text("clinic-south")
    browser.find_element(By.ID, "suspicious").click()
    follow(browser, browser.find_element(By.ID, "apply"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#worklist tbody tr[data-site]")
    assert rows, "no suspicious study of clinic-south in the demo data"
    assert {row.get_attribute("data-site") for row in rows} == {"clinic-south"}
    assert {row.get_attribute("data-suspicious") for row in rows} == {"true"}
    photograph(browser, shots, "worklist")

    follow(browser, rows[0].find_element(By.CSS_SELECTOR, "a"))
    assert browser.find_elements(By.CSS_SELECTOR, "table.images tbody tr")
    photograph(browser, shots, "study")
    Select(browser.find_element(By.ID, "decision")).select_by_value("recall")
    Select(browser.find_element(By.ID, "pathology")).select_by_value("malignant")
    follow(browser, browser.find_element(By.ID, "record"))
    assert "Current: recall" in browser.find_element(By.ID, "outcome").text
    browser.get(hub.console.url + "/monitoring")
    photograph(browser, shots, "monitoring")
    browser.get(hub.console.url + "/outcomes/upload")
    photograph(browser, shots, "outcomes")


def test_recording_an_outcome_for_a_new_study_changes_the_monitoring_figures(
    hub: Hub, browser: WebDriver
) -> None:
    """A study read in the last week has no outcome yet: recording one adds to the counts."""
    log_in(browser, hub, "rita")
    site = "clinic-east"
    before = outcome_count(browser, hub, site)
    auc_before = browser.find_element(By.ID, "auc").text
    since = (datetime.now(timezone.utc) - timedelta(days=6)).date().isoformat()
    browser.get(f"{hub.console.url}/worklist?site={site}&since={since}")
    link = browser.find_element(By.CSS_SELECTOR, "#worklist tbody tr[data-site] a")
    follow(browser, link)
    assert "No outcome recorded yet." in browser.find_element(By.ID, "outcome").text
    Select(browser.find_element(By.ID, "decision")).select_by_value("recall")
    Select(browser.find_element(By.ID, "pathology")).select_by_value("malignant")
    follow(browser, browser.find_element(By.ID, "record"))
    assert "Current: recall" in browser.find_element(By.ID, "outcome").text
    assert outcome_count(browser, hub, site) == before + 1
    assert browser.find_element(By.ID, "auc").text != auc_before or before == 0


def follow(browser: WebDriver, element: WebElement) -> None:
    """Click a link or a form's button and wait until the next page has replaced this one."""
    page = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 30).until(lambda _: replaced(page))


def replaced(page: WebElement) -> bool:
    """Whether the page's root element is gone: the next page has replaced it.

    Chromium answers a look at an element of a page being replaced either as stale or,
    mid-navigation, as an inspector error that the node is no longer in the document."""
    try:
        page.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc.msg):
            return True
        raise
    return False


def log_in(browser: WebDriver, hub: Hub, name: str) -> None:
    browser.get(hub.console.url + "/login")
    browser.find_element(By.ID, "username").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    follow(browser, browser.find_element(By.ID, "login"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Fleet"


def fleet_status(browser: WebDriver, hub: Hub, site: str, device: str) -> str | None:
    browser.get(hub.console.url + "/fleet")
    cells = browser.find_elements(
        By.CSS_SELECTOR, f'#fleet tr[data-site="{site}"][data-device="{device}"] td.status'
    )
    return cells[0].text if cells else None


def outcome_count(browser: WebDriver, hub: Hub, site: str) -> int:
    browser.get(f"{hub.console.url}/monitoring?site={site}")
    return int(browser.find_element(By.ID, "outcome-count").text.split()[0])
