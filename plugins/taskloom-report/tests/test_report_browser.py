"""The run report of a real small run, opened in a real headless chromium.

A report is read by a person in a browser, offline, often on a machine with no network at all, so
what matters is what the browser does with the file: no script error, nothing fetched from the web,
every chart drawn, and the row table answering to its search box, its status filter and a click.
Parsing the HTML would check none of that. The run is a real one on the bundled 135M model (two
answers per instruction, then rated), so the page holds what a real run writes, unreadable
ratings included, not a hand-made fixture.

``.ci/run`` installs Debian's chromium and chromium-driver; elsewhere the test is skipped with the
reason. The browser plumbing lives in ``scripts/report_browser.py`` (see there for why Selenium).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskloom import Pipeline, get_llm, get_task

pytest.importorskip("selenium", reason="the browser is driven through Selenium (requirements-dev.txt)")
pytest.importorskip("taskloom_report", reason="taskloom-report, the report under test, is not installed")
pytest.importorskip("taskloom_llamacpp", reason="the report is of a real run on the local default model")
pytest.importorskip("taskloom_tasks", reason="ultrafeedback rates the answers")

import report_browser as rb  # scripts/, put on sys.path by the root conftest

pytestmark = pytest.mark.skipif(
    rb.find_browser() is None,
    reason="chromium or chromedriver is missing (.ci/run installs Debian's chromium and chromium-driver)",
)

# "volcano" is in one instruction only: searching it must leave that row and hide the others.
SEARCH_WORD = "volcano"
INSTRUCTIONS = [
    "What's the capital city of Spain? Answer in one sentence.",
    "Give one tip for sleeping better.",
    "Name one famous volcano.",
    "What is 2 plus 2?",
]
STATUSES = ("ok", "unreadable", "failed")


def _llm(**generation_kwargs: Any) -> Any:
    return get_llm("llamacpp", generation_kwargs={"temperature": 0.2, "seed": 3, **generation_kwargs})


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the small pipeline, then write its report with the real command, as a user would."""
    folder = tmp_path_factory.mktemp("report")
    answer = get_task(
        "text-generation",
        name="answer",
        llm=_llm(max_new_tokens=32),
        num_generations=2,
        group_generations=True,
        output_mappings={"generation": "generations"},
    )
    rate = get_task("ultrafeedback", name="rate", llm=_llm(max_new_tokens=160), aspect="helpfulness")
    Pipeline(answer >> rate, source=[{"instruction": i} for i in INSTRUCTIONS], name="browser").run(
        output=folder / "run", progress=None
    )
    html = folder / "report.html"
    taskloom = Path(sys.executable).with_name("taskloom")
    done = subprocess.run(
        [str(taskloom), "report", str(folder / "run"), "-o", str(html)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"taskloom report failed:\n{done.stdout}\n{done.stderr}"
    assert html.is_file(), done.stdout
    return html


@pytest.fixture(scope="module")
def page(report: Path) -> Iterator[dict[str, Any]]:
    """One browser for the module, with the page loaded once and its load-time logs kept.

    Chromedriver empties a log when it is read, so the console and network entries of the load are
    collected here, once, and the tests read them from the returned dict.
    """
    with rb.headless_chromium() as driver:
        url = report.resolve().as_uri()
        driver.get(url)
        charts = rb.wait_for_charts(driver)
        time.sleep(0.5)  # let late timers and event handlers report their errors too
        yield {
            "driver": driver,
            "url": url,
            "charts": charts,
            "errors": rb.console_errors(driver),
            "requests": rb.requests_sent(driver),
        }


@pytest.fixture
def driver(page: dict[str, Any]) -> Iterator[Any]:
    """The loaded page, reset to no search and every status, and checked for errors on the way out."""
    d = page["driver"]
    rb.type_search(d, "")
    rb.choose_status(d, "all")
    rb.choose_status(d, "", select="rows-step")
    yield d
    assert rb.console_errors(d) == [], "the page logged errors while used"
    assert rb.outgoing_requests(rb.requests_sent(d), page["url"]) == [], "the page fetched something while used"


def test_no_console_errors_on_load(page: dict[str, Any]) -> None:
    assert page["errors"] == []


def test_a_local_model_costs_zero_dollars_and_says_why(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    cells = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#steps-table tbody td")]
    assert cells.count("$0 (local)") == 2, cells  # the generating step and the judge, both on the local model


def test_no_request_leaves_the_page(page: dict[str, Any]) -> None:
    assert rb.outgoing_requests(page["requests"], page["url"]) == []


def test_html_references_no_web_resource(report: Path) -> None:
    """Checked on the text too: a resource the browser happened not to fetch still breaks offline use."""
    assert rb.http_references(report.read_text(encoding="utf-8")) == []


def test_page_text_shows_no_python_or_template_leftovers(page: dict[str, Any]) -> None:
    """What a reader sees, checked for the marks of a value rendered by mistake (a bound method, a repr)."""
    text = page["driver"].execute_script("return document.body.innerText")
    leftovers = re.findall(r".{0,40}(?:<built-in method|<bound method| object at 0x|\{\{|\{%).{0,40}", text)
    assert leftovers == [], leftovers


def test_every_chart_rendered(page: dict[str, Any]) -> None:
    charts = page["charts"]
    assert charts, "the report has no plotly chart"
    undrawn = [c for c in charts if c["svg_children"] == 0 and c["canvases"] == 0]
    assert undrawn == [], f"charts with an empty svg and no canvas: {undrawn}"
    assert all(c["width"] > 0 for c in charts), charts


def test_search_narrows_the_rows(driver: Any) -> None:
    visible, total = rb.row_counts(driver)
    assert total >= len(INSTRUCTIONS) and visible == total
    rb.type_search(driver, SEARCH_WORD)
    narrowed, _ = rb.row_counts(driver)
    assert 1 <= narrowed < total, f"{SEARCH_WORD!r} left {narrowed} of {total} rows"
    rb.type_search(driver, "")
    assert rb.row_counts(driver) == (total, total)


def test_status_filter_is_consistent(driver: Any) -> None:
    options = driver.execute_script(
        "return Array.from(document.querySelectorAll('#rows-status option')).map(o => o.value)"
    )
    assert set(options) >= {"all", *STATUSES}, options
    _, total = rb.row_counts(driver)
    counts = {}
    for status in ("all", *STATUSES):
        rb.choose_status(driver, status)
        counts[status] = rb.row_counts(driver)[0]
    assert counts["all"] == total
    assert all(counts[s] <= total for s in STATUSES), counts
    # Every row has a status, so the three filters between them show every row at least once.
    assert sum(counts[s] for s in STATUSES) >= total, counts
    # The filter and the search combine: narrowing by status never shows more than the search alone.
    rb.choose_status(driver, "all")
    rb.type_search(driver, SEARCH_WORD)
    searched = rb.row_counts(driver)[0]
    for status in STATUSES:
        rb.choose_status(driver, status)
        assert rb.row_counts(driver)[0] <= min(searched, counts[status])
    rb.choose_status(driver, "all")
    assert rb.row_counts(driver)[0] == searched


def test_the_step_filter_shows_each_steps_own_status(driver: Any) -> None:
    """At one step, the filter counts what the page's per-step line counted over every row (in Python)."""
    steps = driver.execute_script(
        "return Array.from(document.querySelectorAll('#rows-step option')).map(o => o.value).filter(v => v)"
    )
    assert steps == ["answer", "rate"], steps
    counted = {
        s["step"]: dict(re.findall(r"(\w+) (\d+)", s["text"].split("(", 1)[1]))
        for s in driver.execute_script(
            "return Array.from(document.querySelectorAll('.step-counts'))"
            ".map(e => ({step: e.dataset.step, text: e.textContent}))"
        )
    }
    _, total = rb.row_counts(driver)
    for step in steps:
        rb.choose_status(driver, step, select="rows-step")
        for status in STATUSES:
            rb.choose_status(driver, status)
            assert rb.row_counts(driver)[0] == int(counted[step][status]), (step, status, counted)
        rb.choose_status(driver, "all")
        assert rb.row_counts(driver)[0] == sum(int(n) for n in counted[step].values()) <= total
    rb.choose_status(driver, "", select="rows-step")
    assert rb.row_counts(driver) == (total, total)


def test_clicking_a_row_fills_the_detail(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    detail = driver.find_element(By.ID, "row-detail")
    before = detail.text
    row = driver.find_elements(By.CSS_SELECTOR, "#rows-table tbody tr")[-1]
    [instruction] = [i for i in INSTRUCTIONS if i in row.text] or [None]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", row)
    row.click()  # a real click at the row's centre, not a synthetic event
    after = detail.text.strip()
    assert after and after != before.strip(), "clicking a row left #row-detail unchanged"
    # The opened row is the clicked one (the last, so not a default first row): its instruction shown.
    assert instruction is not None and instruction in detail.text, after[:500]


def test_screenshots_for_a_person(driver: Any, tmp_path: Path) -> None:
    """Not an assertion on looks: pictures to open when CI says something changed (paths printed)."""
    whole = rb.full_page_screenshot(driver, tmp_path / "report-full.png")
    rb.type_search(driver, SEARCH_WORD)
    searched = rb.full_page_screenshot(driver, tmp_path / "report-search.png")
    for shot in (whole, searched):
        assert shot.stat().st_size > 10_000, shot  # a blank page compresses to far less
        print(f"screenshot: {shot}")
