"""The web UI in a real browser: Debian's headless Chromium, driven through its WebDriver by Selenium, opens
Orthanc Explorer as the scenario's researcher, browses a patient, a study and a series, and tries to delete the
series. The UI shows the refusal and nothing is deleted. Screenshots of each step go to
build/screenshots/production (AUSCAT_SCREENSHOT_DIR).

The browser is kept on loopback: no background networking, and every host name but 127.0.0.1 resolves to nothing.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.harness.audit import audit_lines
from tests.harness.orthanc import Orthanc, Target
from tests.harness.study import StoredStudy

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_SECONDS = 30
BROWSER_ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox cannot start
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-pings",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


def screenshot_dir() -> Path:
    directory = Path(
        os.environ.get("AUSCAT_SCREENSHOT_DIR") or Path(os.environ["AUSCAT_PRODUCTION_DIR"]) / "screenshots"
    )
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def browser(users: dict[str, Target]) -> Iterator[webdriver.Chrome]:
    """Chromium whose every request carries the researcher's Basic login, as after the browser's login prompt."""
    for path in (CHROMIUM, CHROMEDRIVER):
        assert path.exists(), f"{path} is missing: molecule/production/prepare.yml installs it"
    os.environ["SE_AVOID_STATS"] = "true"
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in BROWSER_ARGUMENTS:
        options.add_argument(argument)
    options.accept_insecure_certs = True  # the scenario's throwaway CA is not in Chromium's store
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    researcher = users["researcher"]
    login = base64.b64encode(f"{researcher.username}:{researcher.password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {login}"}})
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: webdriver.Chrome, css: str, what: str, name: str):
    """The visible element at ``css``; on timeout a screenshot and a failure that says what was awaited."""
    try:
        return WebDriverWait(driver, WAIT_SECONDS).until(
            expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css))
        )
    except TimeoutException:
        driver.save_screenshot(str(screenshot_dir() / f"{name}-timeout.png"))
        pytest.fail(f"the web UI never showed {what} ({css}) within {WAIT_SECONDS} s; see {name}-timeout.png")


def test_a_researcher_browses_and_is_refused_a_delete_that_the_ui_shows(
    browser: webdriver.Chrome, users: dict[str, Target], orthanc: Orthanc, stored_study: StoredStudy
) -> None:
    study = stored_study.study
    patient_id = orthanc.patient_id_of(study.patient_id)
    study_id = orthanc.lookup(study.study_uid, "Study")
    series_id = orthanc.lookup(study.ct_series_uid, "Series")
    instances_before = len(orthanc.get(f"/series/{series_id}/instances").json())
    shots = screenshot_dir()
    base = users["researcher"].url

    browser.get(f"{base}/app/explorer.html")
    wait_for(browser, "#lookup.ui-page-active", "the home page", "1-home")
    browser.save_screenshot(str(shots / "1-home.png"))

    browser.get(f"{base}/app/explorer.html#patient?uuid={patient_id}")
    wait_for(browser, f'#list-studies a[href="#study?uuid={study_id}"]', "the patient's study", "2-patient")
    assert study.patient_id in browser.find_element(By.ID, "patient").text
    browser.save_screenshot(str(shots / "2-patient.png"))

    browser.find_element(By.CSS_SELECTOR, f'#list-studies a[href="#study?uuid={study_id}"]').click()
    wait_for(browser, f'#list-series a[href="#series?uuid={series_id}"]', "the study's CT series", "3-study")
    browser.save_screenshot(str(shots / "3-study.png"))

    browser.find_element(By.CSS_SELECTOR, f'#list-series a[href="#series?uuid={series_id}"]').click()
    wait_for(browser, "#series.ui-page-active #list-instances li a", "the series' instances", "4-series")
    browser.save_screenshot(str(shots / "4-series.png"))

    browser.find_element(By.ID, "series-delete").click()
    confirm = WebDriverWait(browser, WAIT_SECONDS).until(
        expected_conditions.element_to_be_clickable(
            (By.XPATH, "//div[contains(@class, 'ui-simpledialog-controls')]//a[contains(., 'OK')]")
        )
    )
    browser.save_screenshot(str(shots / "5-delete-asked.png"))
    confirm.click()
    banner = wait_for(browser, "#auscat-refusal", "the refusal", "6-refused")
    browser.save_screenshot(str(shots / "6-refused.png"))
    assert f"Refused: your role does not allow DELETE /series/{series_id} (HTTP 403)" in banner.text

    assert len(orthanc.get(f"/series/{series_id}/instances").json()) == instances_before
    refused = [line for line in audit_lines() if line.get("user") == users["researcher"].username
               and line.get("method") == "DELETE" and line.get("path") == f"/series/{series_id}"]  # fmt: skip
    assert refused, "no audit line for the refused DELETE from the web UI"
    assert refused[-1]["decision"] == "denied"
