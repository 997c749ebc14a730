"""A real browser for the dashboard's tests: Debian's chromium + chromium-driver, driven with selenium.

Screenshots go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers.processes import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1440,1000")


def chromium(tmp_path: Path) -> WebDriver:
    """Headless Debian chromium with a new empty profile; skips the test where it is not installed
    (outside CI: CI installs it)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing (make browser installs them)")
        pytest.skip("needs Debian's chromium and chromium-driver (make browser, as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def wait(driver: WebDriver, condition, what: str, timeout: float = 60):
    """Polls `condition` (a row re-rendered between two calls just means: try again)."""
    waiting = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    return waiting.until(condition, f"waiting for {what}")


def screenshot(driver: WebDriver, name: str) -> Path:
    """The whole page: the window is made as tall as the document first."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    chrome = driver.execute_script("return window.outerHeight - window.innerHeight")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1440, max(900, height + chrome))
    driver.save_screenshot(str(ARTIFACTS / name))
    return ARTIFACTS / name
