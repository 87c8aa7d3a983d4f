"""Drive Debian's headless chromium through Selenium, for the run report's browser test.

The report has to work for a person who double-clicks the file, offline, so the only honest test
is a real browser. We use Selenium with Debian's ``chromium-driver`` rather than a hand-rolled
DevTools Protocol client: the driver is built from the same source package as the browser, so the
two always match, and Selenium is the WebDriver project's own, well-kept client. Clicks are real
input events, and the DevTools logs we need (console, network) come through chromedriver's
standard ``goog:loggingPrefs``. Nothing is downloaded: the driver path is given explicitly, which
keeps Selenium Manager out of the way.

The page contract (ids and classes) is the one the report is written to:
``#rows-search``, ``#rows-status``, ``#rows-table tbody tr``, ``#row-detail`` and plotly's
``div.plotly-graph-div``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

#: What ``.ci/run`` installs; a machine without both skips the browser test.
BROWSER_NAMES = ("chromium", "chromium-browser")
DRIVER_NAMES = ("chromedriver",)

# A resource the page would fetch from the web: ``src=``/``srcset=``, ``href=`` on a ``<link>`` (a
# stylesheet, a font, an icon) or an SVG ``<image>``/``<use>``, and CSS ``url(`` and ``@import``.
# A plain ``<a href>`` is a link a reader may follow, not a resource; plotly's bundle carries a few
# (its logo, map attributions), so counting them would forbid the very library the report uses.
_HTTP_RESOURCE = re.compile(
    r"""\b(?:src|srcset)\s*=\s*["']?\s*https?://"""
    r"""|<(?:link|image|use)\b[^>]*?\b(?:xlink:)?href\s*=\s*["']?\s*https?://"""
    r"""|url\(\s*["']?\s*https?://"""
    r"""|@import\s+(?:url\()?\s*["']?\s*https?://""",
    re.IGNORECASE,
)

# URLs a page may "request" without leaving the machine.
_LOCAL_SCHEMES = ("data:", "blob:", "about:", "chrome:", "devtools:")


def find_browser() -> tuple[str, str] | None:
    """The chromium and chromedriver executables, or None if either is missing."""
    browser = next((p for n in BROWSER_NAMES if (p := shutil.which(n))), None)
    driver = next((p for n in DRIVER_NAMES if (p := shutil.which(n))), None)
    if browser is None or driver is None:
        return None
    return browser, driver


@contextmanager
def headless_chromium(width: int = 1280, height: int = 900) -> Iterator[webdriver.Chrome]:
    """A headless chromium with the console and network logs switched on; quit on exit."""
    found = find_browser()
    if found is None:
        raise RuntimeError("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    browser, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        f"--window-size={width},{height}",
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB, too little for a renderer
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",  # no update or safe-browsing traffic in the network log
        "--disable-component-update",
    ):
        options.add_argument(arg)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # chromium refuses to start its sandbox as root (CI)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """Console errors and uncaught exceptions since the last call (chromedriver clears the log on read)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def requests_sent(driver: webdriver.Chrome) -> list[str]:
    """Every URL the page asked for since the last call, from the DevTools network events."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def outgoing_requests(urls: list[str], page_url: str) -> list[str]:
    """The requests that are neither the page itself nor an in-memory (data:, blob:) resource."""
    return [u for u in urls if u.split("#")[0] != page_url.split("#")[0] and not u.startswith(_LOCAL_SCHEMES)]


def http_references(html: str) -> list[str]:
    """Each ``src=``, ``href=`` or ``url(`` pointing at http(s), with a little context to find it."""
    return [html[max(m.start() - 40, 0) : m.end() + 60] for m in _HTTP_RESOURCE.finditer(html)]


def wait_for_charts(driver: webdriver.Chrome, timeout: float = 30) -> list[dict[str, Any]]:
    """Wait until every plotly chart has drawn, then describe each (drawn or not, for the message).

    Plotly draws after the load event, so the first look may be too early.
    """
    script = """
        return Array.from(document.querySelectorAll('div.plotly-graph-div')).map((div, i) => {
            const svgs = Array.from(div.querySelectorAll('svg.main-svg'));
            const canvases = Array.from(div.querySelectorAll('canvas')).filter(c => c.width > 0);
            return {
                index: i,
                id: div.id,
                svg_children: svgs.reduce((n, s) => n + s.childElementCount, 0),
                canvases: canvases.length,
                width: div.getBoundingClientRect().width,
            };
        });
    """

    def drawn(charts: list[dict[str, Any]]) -> bool:
        return all(c["svg_children"] > 0 or c["canvases"] > 0 for c in charts)

    with suppress(TimeoutException):  # the caller's assertion then says which chart did not draw
        WebDriverWait(driver, timeout).until(lambda d: drawn(d.execute_script(script)))
    charts: list[dict[str, Any]] = driver.execute_script(script)
    return charts


def row_counts(driver: webdriver.Chrome) -> tuple[int, int]:
    """(visible, total) rows of the row table; a row is hidden by ``style.display = "none"``."""
    visible, total = driver.execute_script(
        """
        const rows = Array.from(document.querySelectorAll('#rows-table tbody tr'));
        const shown = rows.filter(r => r.style.display !== 'none' && getComputedStyle(r).display !== 'none');
        return [shown.length, rows.length];
        """
    )
    return int(visible), int(total)


def type_search(driver: webdriver.Chrome, text: str) -> None:
    """Put text in the search box and fire the ``input`` event a person's typing would."""
    driver.execute_script(
        """
        const box = document.getElementById('rows-search');
        box.value = arguments[0];
        box.dispatchEvent(new Event('input', {bubbles: true}));
        """,
        text,
    )


def choose_status(driver: webdriver.Chrome, value: str, select: str = "rows-status") -> None:
    """Select ``value`` in ``#rows-status`` (or another select: ``rows-step``) and fire ``change``
    (and ``input``) as a real pick does."""
    driver.execute_script(
        """
        const select = document.getElementById(arguments[1]);
        select.value = arguments[0];
        select.dispatchEvent(new Event('input', {bubbles: true}));
        select.dispatchEvent(new Event('change', {bubbles: true}));
        """,
        value,
        select,
    )


def full_page_screenshot(driver: webdriver.Chrome, path: Path) -> Path:
    """The whole page as PNG, beyond the window's height (Selenium's own shot stops at the viewport)."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000), "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
