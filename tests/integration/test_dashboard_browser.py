"""The dashboard in a real browser (Debian's chromium + chromium-driver, driven with selenium) while a
real training runs on a real worker: the session appears, its progress bar advances, its curves gain
points, and the Stop button (confirmation, then the API token asked once) stops it.

Screenshots go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import time

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions

from tests.helpers.browser import screenshot, wait
from tests.helpers.fixtures import strategy_text
from tests.helpers.processes import start_web, stop_process

pytestmark = pytest.mark.integration
TOKEN = "browser-test-token"


@pytest.fixture
def settings(sample_data_dir, tmp_path) -> dict[str, str]:
    return {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models"), "stop_grace_seconds": "10",
            "api_token": TOKEN}


@pytest.fixture
def web_url(redis_server, redis_conn, settings, tmp_path) -> str:
    """A web process with an api_token."""
    web, url = start_web(redis_server.url, tmp_path, **settings)
    yield url
    stop_process(web)


def submit_training(url: str, epochs: int) -> str:
    body = {"strategy_yaml": strategy_text("v3_multi_indicator"), "start_date": "2017-05-01",
            "end_date": "2018-02-07", "epochs": epochs}
    response = requests.post(f"{url}/training/start", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                             timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["session_id"]


def session_row(session_id: str):
    """Reads the session's row in one script (rows are re-rendered on every poll): its status,
    progress bar and text, or None while it is not there."""
    script = """const row = document.querySelector(`tr[data-session="${arguments[0]}"]`);
        return row && {status: row.dataset.status, text: row.innerText,
                       percent: Number(row.querySelector('.progress').dataset.percent)};"""
    return lambda driver: driver.execute_script(script, session_id)


def chart_points(driver: WebDriver) -> int:
    return int(driver.find_element(By.ID, "chart-loss").get_attribute("data-points"))


def test_dashboard_follows_a_training_and_stops_it(web_url, browser, start_worker, settings):
    start_worker(**settings)
    browser.get(f"{web_url}/")
    assert browser.find_element(By.ID, "no-sessions").is_displayed()  # server-rendered: nothing yet
    session_id = submit_training(web_url, epochs=3000)

    row = session_row(session_id)
    wait(browser, row, "the session to appear on the dashboard")
    first = wait(browser, lambda d: row(d)["percent"] > 0 and row(d), "its progress bar to start")
    assert first["status"] == "running" and "epoch" in first["text"] and "ETA" in first["text"], first
    wait(browser, lambda d: row(d)["percent"] > first["percent"], "its progress bar to advance")
    wait(browser, lambda d: session_id[:17] in d.find_element(By.ID, "workers").text, "the busy worker's session")
    screenshot(browser, "dashboard.png")

    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'tr[data-session="{session_id}"] a').click() or True,
         "a click on the session's link")
    wait(browser, expected_conditions.url_contains(f"/sessions/{session_id}"), "the session page")
    points = wait(browser, lambda d: chart_points(d) or None, "the loss curve's first points")
    wait(browser, lambda d: chart_points(d) > points, "the loss curve to gain points")
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-accuracy polyline.val")
    assert browser.find_element(By.CSS_SELECTOR, '[data-metric="current.val_accuracy"]').text != "—"
    screenshot(browser, "session-running.png")

    browser.find_element(By.ID, "stop").click()
    wait(browser, expected_conditions.alert_is_present(), "the confirmation").accept()
    prompt = wait(browser, expected_conditions.alert_is_present(), "the token prompt")
    prompt.send_keys(TOKEN)
    prompt.accept()
    wait(browser, lambda d: d.find_element(By.ID, "session").get_attribute("data-status") == "stopped",
         "the session to become stopped")
    assert browser.find_element(By.CSS_SELECTOR, ".title-row .badge").text == "stopped"
    assert browser.find_element(By.ID, "confusion").is_displayed()  # the partial model's test metrics
    assert not browser.find_element(By.ID, "stop").is_displayed()
    assert browser.execute_script("return localStorage.getItem('trainhost.api_token')") == TOKEN
    assert TOKEN not in requests.get(f"{web_url}/sessions/{session_id}", timeout=10).text  # never in the HTML
    screenshot(browser, "session-stopped.png")


def test_pages_without_javascript_are_server_rendered(web_url):
    session_id = submit_training(web_url, epochs=1)  # no worker: it stays queued
    page = requests.get(f"{web_url}/", timeout=10)
    assert page.status_code == 200 and f'data-session="{session_id}"' in page.text
    assert "dashboard.js" in page.text and "://" not in page.text  # nothing fetched from elsewhere
    session = requests.get(f"{web_url}/sessions/{session_id}", timeout=10)
    assert session.status_code == 200 and session_id in session.text
    assert requests.get(f"{web_url}/sessions/no-such-session", timeout=10).status_code == 404
    for asset in ("dashboard.css", "dashboard.js"):
        assert requests.get(f"{web_url}/static/{asset}", timeout=10).status_code == 200


def test_session_page_shows_the_backtest_against_buy_and_hold(web_url, browser, start_worker, settings):
    start_worker(**settings)
    session_id = submit_training(web_url, epochs=2)
    deadline = time.monotonic() + 240
    while (status := requests.get(f"{web_url}/training/status/{session_id}", timeout=10).json())["status"] not in (
            "completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status["status"] == "completed", status
    backtest = requests.get(f"{web_url}/training/result/{session_id}", timeout=10).json()["backtest"]
    trades = backtest["metrics"]["trade_count"]

    browser.get(f"{web_url}/sessions/{session_id}")
    table = browser.find_element(By.ID, "backtest-metrics")
    cells = {row.get_attribute("data-metric"): [td.text for td in row.find_elements(By.TAG_NAME, "td")]
             for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")}
    assert cells["trade_count"] == [f"{trades:,}", f"{backtest['baseline']['trade_count']:,}"]
    assert cells["total_return"][0] == f"{backtest['metrics']['total_return']:,.2f}"
    assert cells["max_drawdown_pct"][1] == f"{backtest['baseline']['max_drawdown_pct'] * 100:.2f} %"

    curve = requests.get(f"{web_url}/training/result/{session_id}/equity?points=560", timeout=10).json()
    equity = browser.find_element(By.ID, "chart-equity")
    wait(browser, lambda d: int(equity.get_attribute("data-points")) == len(curve["points"]), "the equity curve")
    assert len(equity.find_elements(By.CSS_SELECTOR, "polyline.train")) == 1  # the strategy
    assert len(equity.find_elements(By.CSS_SELECTOR, "polyline.val")) == 1  # buy-and-hold
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-drawdown polyline.drawdown")

    rows = lambda d: d.find_elements(By.CSS_SELECTOR, "#trades tbody tr")  # noqa: E731
    wait(browser, lambda d: len(rows(d)) == min(trades, 50), "the first page of trades")
    first = requests.get(f"{web_url}/training/result/{session_id}/trades?limit=1&offset=0", timeout=10).json()
    if trades:
        assert first["trades"][0]["side"] in rows(browser)[0].text
    pager = browser.find_element(By.ID, "trades-next")
    assert pager.is_enabled() == (trades > 50)
    if trades > 50:
        pager.click()
        wait(browser, lambda d: d.find_element(By.ID, "trades").get_attribute("data-offset") == "50", "page two")
        assert browser.find_element(By.ID, "trades-prev").is_enabled()
    screenshot(browser, "session-backtest.png")
