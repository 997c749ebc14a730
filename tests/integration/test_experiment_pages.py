"""An experiment's pages in a real browser while a real worker trains its sessions: the dashboard
lists it, its page follows it live, then shows the comparison table (equal to the API's rows,
sorted by a click on a header), the objective against the swept parameter, and the stitched
out-of-sample equity per trial; its Stop button (confirmation, then the API token) stops it.

Screenshots go to tests/artifacts/ (git-ignored); experiment.png is also docs/experiment.png."""

from __future__ import annotations

import shutil

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions

from tests.helpers.browser import screenshot, wait
from tests.helpers.fixtures import strategy_text
from tests.helpers.processes import REPO, start_web, stop_process

pytestmark = pytest.mark.integration
TOKEN = "experiment-pages-token"
DATES = {"start_date": "2017-05-01", "end_date": "2018-02-07"}
LEARNING_RATE = "training.learning_rate"  # the section the pipeline reads (not KTRDR's model.training)
CURVE_POINTS = 560  # what the page asks the equity endpoint for


@pytest.fixture
def settings(sample_data_dir, tmp_path) -> dict[str, str]:
    return {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models"),
            "experiments_dir": str(tmp_path / "experiments"), "stop_grace_seconds": "10", "api_token": TOKEN}


@pytest.fixture
def web_url(redis_server, redis_conn, settings, tmp_path) -> str:
    web, url = start_web(redis_server.url, tmp_path, **settings)
    yield url
    stop_process(web)


def submit(url: str, epochs: int, **body) -> str:
    body["base"] = {"strategy_yaml": strategy_text("v3_multi_indicator"), **DATES, "epochs": epochs}
    response = requests.post(f"{url}/experiments", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                             timeout=60)
    assert response.status_code == 202, response.text
    return response.json()["experiment_id"]


def table(driver: WebDriver) -> list[dict]:
    """The comparison table's rows, in the order shown: each cell's data-sort and text by column key."""
    script = """return [...document.querySelectorAll('#trials tbody tr')].map((tr) => ({
        trial: Number(tr.dataset.trial), best: tr.classList.contains('best'),
        cells: Object.fromEntries([...tr.querySelectorAll('td[data-key]')].map(
            (td) => [td.dataset.key, {sort: td.dataset.sort, text: td.innerText.trim()}])),
        sessions: [...tr.querySelectorAll('td.sessions a')].map((a) => a.getAttribute('href'))}));"""
    return driver.execute_script(script)


def number(sort: str) -> float | None:
    return float(sort) if sort else None


def sort_by(driver: WebDriver, key: str) -> list[int]:
    driver.find_element(By.CSS_SELECTOR, f'#trials th[data-key="{key}"] button').click()
    return [row["trial"] for row in table(driver)]


def polyline_points(driver: WebDriver, selector: str) -> list[int]:
    return [len(line.get_attribute("points").split()) for line in driver.find_elements(By.CSS_SELECTOR, selector)]


def test_a_walk_forward_sweep_is_followed_compared_and_charted(web_url, browser, start_worker, settings):
    experiment_id = submit(web_url, 1, sweep={"params": {LEARNING_RATE: [0.001, 0.01]}},
                           walk_forward={"train": 2000, "test": 800}, objective={"metric": "oos.sharpe"})
    page = f"{web_url}/experiments/{experiment_id}/page"
    queued = requests.get(page, timeout=10).text  # no worker yet: server-rendered, every row queued
    assert queued.count('data-status="queued"') == 1 + 2 and "://" not in queued
    browser.get(page)
    start_worker(**settings)
    # Followed live: the badge leaves "queued" without a reload (1-epoch children can be done within a poll).
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".title-row .badge").text != "queued",
         "the page to follow the experiment past queued", timeout=120)
    wait(browser, lambda d: d.find_element(By.ID, "experiment").get_attribute("data-status") == "completed",
         "the experiment to complete", timeout=600)

    done = requests.get(f"{web_url}/experiments/{experiment_id}", timeout=10).json()
    api = {row["trial"]: row for row in done["rows"]}
    assert [row["status"] for row in done["rows"]] == ["completed"] * 2 and len(done["folds"]) == 3
    shown = table(browser)
    assert [row["trial"] for row in shown] == [0, 1]
    for row in shown:
        expected = api[row["trial"]]
        cells = row["cells"]
        assert number(cells[f"param:{LEARNING_RATE}"]["sort"]) == expected["params"][LEARNING_RATE]
        assert cells["status"]["text"] == "completed"
        assert number(cells["objective"]["sort"]) == expected["objective"] == expected["oos"]["sharpe"]
        assert cells["objective"]["text"] == f"{expected['objective']:.4g}"
        assert number(cells["validation.val_accuracy"]["sort"]) == expected["validation"]["val_accuracy"]
        for key in ("total_return_pct", "sharpe", "max_drawdown_pct", "trade_count"):
            assert number(cells[f"oos.{key}"]["sort"]) == expected["oos"][key], key
        assert cells["oos.trade_count"]["text"] == f"{expected['oos']['trade_count']:,}"
        assert cells["oos.max_drawdown_pct"]["text"] == f"{expected['oos']['max_drawdown_pct'] * 100:.2f} %"
        assert row["sessions"] == [f"/sessions/{sid}" for sid in expected["sessions"]]
        assert row["best"] == (row["trial"] == done["best"]["trial"])

    objectives = {trial: row["objective"] for trial, row in api.items()}
    assert objectives[0] != objectives[1], f"equal objectives cannot show an order: {done}"
    ascending = sorted(objectives, key=objectives.get)
    assert sort_by(browser, "objective") == ascending
    assert browser.find_element(By.CSS_SELECTOR, '#trials th[data-key="objective"]').get_attribute(
        "aria-sort") == "ascending"
    assert sort_by(browser, "objective") == ascending[::-1]
    assert sort_by(browser, "trial") == [0, 1]

    chart = browser.find_element(By.CSS_SELECTOR, f'svg.param-chart[data-param="{LEARNING_RATE}"]')
    wait(browser, lambda d: chart.get_attribute("data-points") == "2", "the parameter chart's points")
    assert len(chart.find_elements(By.CSS_SELECTOR, "circle.point")) == 2
    assert len(chart.find_elements(By.CSS_SELECTOR, "circle.point.best")) == 1

    curves = {trial: requests.get(f"{web_url}/experiments/{experiment_id}/equity",
                                  params={"trial": trial, "points": CURVE_POINTS}, timeout=10).json()
              for trial in api}
    assert all(1 < len(curve["points"]) <= CURVE_POINTS for curve in curves.values())
    wait(browser, lambda d: len(polyline_points(d, "#chart-oos polyline.trial")) == 2, "a curve per trial")
    for trial, curve in curves.items():
        assert polyline_points(browser, f"#chart-oos polyline.t{trial}") == [len(curve["points"])]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-oos line.mark")) == len(done["folds"]) - 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-oos polyline.best")) == 1
    assert not browser.find_element(By.ID, "stop").is_displayed()
    shutil.copyfile(screenshot(browser, "experiment.png"), REPO / "docs" / "experiment.png")

    browser.get(f"{web_url}/")
    row = f'#experiments tr[data-experiment="{experiment_id}"]'
    wait(browser, lambda d: d.find_element(By.ID, "live").is_displayed(), "the dashboard's first refresh")
    listed = browser.find_element(By.CSS_SELECTOR, row)
    assert listed.get_attribute("data-status") == "completed"
    assert "6/6 sessions" in listed.text and f"{done['best']['objective']:.4g}" in listed.text
    assert listed.find_element(By.CSS_SELECTOR, ".progress").get_attribute("data-percent") == "100"
    screenshot(browser, "dashboard-experiments.png")
    assert "training · trial 1 fold 2" in browser.find_element(By.ID, "sessions").text  # the children, told apart
    listed.find_element(By.CSS_SELECTOR, "a").click()
    wait(browser, expected_conditions.url_contains(f"/experiments/{experiment_id}/page"), "the experiment's page")
    browser.find_element(By.CSS_SELECTOR, '#trials tr[data-trial="1"] td.sessions a:last-child').click()
    wait(browser, expected_conditions.url_contains(f"/sessions/{api[1]['sessions'][2]}"), "its last fold's session")
    back = browser.find_element(By.ID, "experiment-link")
    assert back.get_attribute("href").endswith(f"/experiments/{experiment_id}/page")
    assert "trial 1 fold 2" in back.find_element(By.XPATH, "..").text
    assert "of 6, one step for all" in browser.find_element(By.ID, "pack").text  # its six siblings' one pack


def test_the_stop_button_stops_the_experiment(web_url, browser, start_worker, settings):
    start_worker(**settings)
    experiment_id = submit(web_url, 3000, sweep={"params": {LEARNING_RATE: [0.001, 0.002]}})
    browser.get(f"{web_url}/experiments/{experiment_id}/page")
    stop = browser.find_element(By.ID, "stop")
    wait(browser, lambda d: d.find_element(By.ID, "experiment").get_attribute("data-status") == "running",
         "the experiment to run")
    stop.click()
    wait(browser, expected_conditions.alert_is_present(), "the confirmation").accept()
    prompt = wait(browser, expected_conditions.alert_is_present(), "the token prompt")
    prompt.send_keys(TOKEN)
    prompt.accept()
    wait(browser, lambda d: "asked to stop" in d.find_element(By.ID, "notice").text, "the stop to be accepted")
    wait(browser, lambda d: d.find_element(By.ID, "experiment").get_attribute("data-status") == "stopped",
         "the experiment to become stopped", timeout=120)
    statuses = [row["cells"]["status"]["text"] for row in table(browser)]
    assert set(statuses) <= {"stopped", "cancelled"}, statuses
    assert not browser.find_element(By.ID, "stop").is_displayed()
    assert requests.get(f"{web_url}/experiments/nope/page", timeout=10).status_code == 404
