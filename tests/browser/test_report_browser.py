"""The evaluation report in a real browser: Debian's Chromium, headless, driven through
chromium-driver, the page opened from a file:// URL with the network features off.

Selenium is given the driver's path, so it never runs Selenium Manager (which could download a
browser); SE_MANAGER_PATH points at /bin/false besides, so any attempt would fail instead.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from shared.evaluation.report import render_report
from shared.evaluation.results import ModelAnswer, RecordRow
from tests.support.evaluation_fixtures import MODELS, make_records, make_results

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them: "
                "apt-get install -y chromium chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

COMPARED = list(MODELS)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    saved = os.environ.get("SE_MANAGER_PATH")
    os.environ["SE_MANAGER_PATH"] = shutil.which("false") or "/bin/false"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync",
                # A container's small /dev/shm would crash the renderer.
                "--disable-dev-shm-usage",
                "--window-size=1280,1000", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    # Uncaught errors and failed promises, recorded from the first script on every page.
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        window.__errors = [];
        window.addEventListener('error', e => window.__errors.push(String(e.message || e)));
        window.addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason)));
    """})
    try:
        yield driver
    finally:
        driver.quit()
        if saved is None:
            os.environ.pop("SE_MANAGER_PATH", None)
        else:
            os.environ["SE_MANAGER_PATH"] = saved


@pytest.fixture(scope="module")
def records():
    return make_records(200)


@pytest.fixture(scope="module")
def report(browser, records, tmp_path_factory):
    """The report of a realistic run opened from a file, the console emptied of earlier pages."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_report(make_results(records), records), encoding="utf-8")
    browser.get_log("browser")
    browser.get(path.as_uri())
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#records-body tr.record"))
    return browser


def _severe(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _outcomes(row: RecordRow) -> set:
    """What each compared model got on exact_match, a failed generation its own outcome."""
    return {"error" if row.models[m].error else row.models[m].scores["exact_match"] for m in COMPARED}


def test_the_report_renders_offline_with_no_script_error(report):
    summary = report.find_elements(By.CSS_SELECTOR, "#summary-table tbody tr")
    assert [r.get_attribute("data-model") for r in summary] == COMPARED
    assert report.find_element(By.ID, "failed-table").text.count("broken-model") == 1
    assert "Winner: claude-haiku" in report.find_element(By.ID, "outcome").text
    # The forest plot of the primary metric: one interval per pair of compared models, zero marked.
    forest = report.find_element(By.CSS_SELECTOR, "svg.forest-primary")
    assert len(forest.find_elements(By.CSS_SELECTOR, "g.comparison")) == 3
    assert forest.find_elements(By.CSS_SELECTOR, "line.zero")
    assert forest.size["width"] > 300 and forest.size["height"] > 50
    scatter = report.find_element(By.ID, "cost-quality-plot")
    assert len(scatter.find_elements(By.CSS_SELECTOR, "g.point")) == 3
    assert scatter.find_elements(By.CSS_SELECTOR, "polyline.front")
    assert report.find_elements(By.CSS_SELECTOR, "#categories table.categories tbody tr")
    assert report.execute_script("return window.__errors") == []
    assert _severe(report) == []
    # Self-contained: the page loaded nothing besides itself.
    assert report.execute_script("return performance.getEntriesByType('resource').length") == 0


def test_only_disagreements_filters_to_the_records_where_the_models_differ(report, records):
    expected = sum(1 for r in records if len(_outcomes(r)) > 1)
    assert 0 < expected < len(records)
    count = report.find_element(By.ID, "record-count")
    assert count.get_attribute("data-count") == str(len(records))

    report.find_element(By.ID, "only-disagreements").click()

    assert count.get_attribute("data-count") == str(expected)
    assert count.text == f"{expected} of {len(records)} records match"
    shown = report.find_elements(By.CSS_SELECTOR, "#records-body tr.record")
    assert len(shown) == min(50, expected)
    assert all("disagree" in tr.get_attribute("class") for tr in shown)

    report.find_element(By.ID, "only-disagreements").click()
    assert count.get_attribute("data-count") == str(len(records))


def test_selecting_a_record_shows_every_model_output_side_by_side(report, records):
    row = report.find_element(By.CSS_SELECTOR, "#records-body tr.record.disagree")
    record = records[int(row.get_attribute("data-index"))]

    row.click()

    detail = report.find_element(By.CSS_SELECTOR, "#records-body tr.detail")
    assert row.get_attribute("aria-expanded") == "true"
    assert row.find_element(By.CSS_SELECTOR, "button.toggle").get_attribute("aria-expanded") == "true"
    assert record.input in detail.find_element(By.CSS_SELECTOR, "pre.input").text
    cards = detail.find_elements(By.CSS_SELECTOR, ".answer")
    assert [c.get_attribute("data-model") for c in cards] == COMPARED
    for card, name in zip(cards, COMPARED):
        answer = record.models[name]
        text = card.find_element(By.CSS_SELECTOR, "pre.output").text
        assert (answer.error in text) if answer.error else (text == answer.output)
        assert card.find_element(By.CSS_SELECTOR, "table.scores").is_displayed()

    row.click()
    assert report.find_elements(By.CSS_SELECTOR, "#records-body tr.detail") == []


def test_model_text_that_is_markup_stays_text_in_the_browser(browser, records, tmp_path):
    hostile = "</script><script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"
    first = records[0]
    rows = [first.model_copy(update={
        "input": "<b>bold?</b> " + first.input,
        "models": {**first.models, COMPARED[0]: ModelAnswer(output=hostile, scores={"exact_match": 0.0, "f1": 0.0})},
    })] + records[1:20]
    path = tmp_path / "hostile.html"
    path.write_text(render_report(make_results(records), rows), encoding="utf-8")
    browser.get_log("browser")
    browser.get(path.as_uri())
    row = WebDriverWait(browser, 20).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#records-body tr.record[data-index='0']"))

    row.click()

    card = browser.find_element(By.CSS_SELECTOR, f".answer[data-model='{COMPARED[0]}']")
    assert card.find_element(By.CSS_SELECTOR, "pre.output").text == hostile
    assert browser.find_element(By.CSS_SELECTOR, "tr.detail pre.input").text.startswith("<b>bold?</b>")
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.find_elements(By.CSS_SELECTOR, "#records img") == []
    assert browser.execute_script("return window.__errors") == []
    assert _severe(browser) == []


def test_a_continuous_primary_metric_filters_by_the_size_of_the_disagreement(browser, records, tmp_path):
    on_f1 = make_results(records).model_copy(update={"primary_metric": "f1"})
    path = tmp_path / "f1.html"
    path.write_text(render_report(on_f1, records), encoding="utf-8")
    browser.get(path.as_uri())
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#records-body tr.record"))

    def expected(least: float) -> int:
        n = 0
        for r in records:
            answers = [r.models[m] for m in COMPARED]
            failed = sum(a.error is not None for a in answers)
            scores = [a.scores["f1"] for a in answers if a.error is None]
            n += (0 < failed < len(answers)) or (max(scores) - min(scores) >= least and max(scores) > min(scores))
        return n

    browser.find_element(By.ID, "only-disagreements").click()
    count = browser.find_element(By.ID, "record-count")
    assert count.get_attribute("data-count") == str(expected(0.0))
    threshold = browser.find_element(By.ID, "min-difference")
    threshold.clear()
    threshold.send_keys("0.6")

    assert count.get_attribute("data-count") == str(expected(0.6))
    assert expected(0.6) < expected(0.0)


def test_a_record_opens_from_the_keyboard(report):
    button = report.find_element(By.CSS_SELECTOR, "#records-body tr.record button.toggle")
    button.send_keys(Keys.ENTER)

    assert button.get_attribute("aria-expanded") == "true"
    assert len(report.find_elements(By.CSS_SELECTOR, "#records-body tr.detail .answer")) == len(COMPARED)
    button.send_keys(Keys.ENTER)
    assert report.find_elements(By.CSS_SELECTOR, "#records-body tr.detail") == []
