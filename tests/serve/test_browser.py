"""The page of ``hashlab serve`` in a real headless Chromium (Selenium), against the real app.

Skipped only when no Chromium and chromedriver are installed (Debian: ``apt-get install
chromium chromium-driver``). A screenshot of the page is saved to ``tmp_path`` and, when
``HASHLAB_SCREENSHOT_DIR`` is set, copied there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from hashlab.cli import app as cli
from tests.conftest import needs_fmnist, tiny_config

K = 6
TIMEOUT = 60  # seconds: generous, the CI machine is a slow 2-core one


def _find(names: tuple[str, ...], paths: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return next((p for p in paths if os.access(p, os.X_OK)), None)


CHROMIUM = _find(("chromium", "chromium-browser", "google-chrome"),
                 ("/usr/bin/chromium", "/usr/lib/chromium/chromium"))
CHROMEDRIVER = _find(("chromedriver",), ("/usr/bin/chromedriver",
                                         "/usr/lib/chromium/chromedriver"))

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no Chromium/chromedriver found (Debian: apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("serve-run")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp, train={"epochs": 1})))
    result = CliRunner().invoke(cli, ["train", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    return tmp / "runs" / "tiny"


@contextlib.contextmanager
def serving(web) -> Iterator[str]:
    """Run the app ``web`` with uvicorn on a free local port; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # a free port, held until the server takes it
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(web, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=TIMEOUT)
        sock.close()


@pytest.fixture(scope="module")
def base_url(run_dir):
    from hashlab.serve.app import create_app

    with serving(create_app(run_dir)) as url:
        yield url


@pytest.fixture
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(TIMEOUT)
    try:
        yield drv
    finally:
        drv.quit()


def _save_screenshot(drv, path: Path) -> None:
    drv.save_screenshot(str(path))
    target = os.environ.get("HASHLAB_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def test_search_page_in_a_browser(run_dir, base_url, driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from hashlab.data import DIGITS_CLASSES
    from hashlab.encode import TrainedRun

    wait = WebDriverWait(driver, TIMEOUT)
    find = driver.find_element

    def searches() -> int:
        return int(find(By.ID, "results").get_attribute("data-search-count"))

    def wait_search(after: int, state: str = "done") -> None:
        """Until search number ``after + 1`` has been shown (or failed, for state='error')."""
        if state == "done":
            wait.until(lambda d: searches() > after)
        wait.until(lambda d: find(By.ID, "status").get_attribute("data-state") == state)

    def results() -> list[tuple[int, str, str]]:
        return [(int(r.get_attribute("data-id")), r.find_element(By.CSS_SELECTOR, ".label").text,
                 r.find_element(By.CSS_SELECTOR, ".distance").text)
                for r in driver.find_elements(By.CSS_SELECTOR, "#results .result")]

    def upload(path: Path) -> None:
        find(By.ID, "file-input").send_keys(str(path))

    # a query image written like any user's PNG: a test-split digit
    digits = TrainedRun(run_dir).load_split("test")
    query = tmp_path / "query.png"
    Image.fromarray(digits.images[0]).save(query)

    driver.get(base_url + "/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
               in ("true", "error"))
    assert find(By.TAG_NAME, "body").get_attribute("data-ready") == "true", \
        find(By.ID, "error").text
    assert "tiny" in find(By.ID, "info").text
    assert find(By.ID, "radius-row").is_displayed()  # a binary run offers a radius search
    assert not find(By.ID, "text-form").is_displayed()  # not a cross-modal run
    assert find(By.ID, "search-button").get_attribute("disabled")  # nothing to repeat yet

    k = find(By.ID, "k-input")
    k.clear()
    k.send_keys(str(K))

    # upload → a grid of exactly k neighbours, each with a class name and a Hamming distance
    upload(query)
    wait_search(0)
    hits = results()
    assert len(hits) == K
    assert all(label in DIGITS_CLASSES for _, label, _ in hits), hits
    distances = [int(d) for _, _, d in hits]  # numeric: int() raises otherwise
    assert distances == sorted(distances) and distances[0] >= 0
    assert not find(By.ID, "error").is_displayed()
    status = find(By.ID, "status").text
    assert f"{K} results" in status and " ms" in status and "exact" in status
    assert find(By.ID, "query-image").get_attribute("src").startswith("data:image/png;base64,")
    # every thumbnail (and the query) was served and decoded, drawn scaled up
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#results img, #query-image')]"
        ".every(i => i.complete && i.naturalWidth > 0)"))
    thumb = find(By.CSS_SELECTOR, "#results .result img")
    assert thumb.value_of_css_property("image-rendering") == "pixelated"
    assert thumb.size["width"] >= 64
    _save_screenshot(driver, tmp_path / "serve.png")

    # clicking a result searches from that item: its image becomes the query
    clicked = hits[2][0]
    before = searches()
    find(By.CSS_SELECTOR, f'#results .result[data-id="{clicked}"] button').click()
    wait_search(before)
    assert find(By.ID, "query-image").get_attribute("src").endswith(f"/v1/items/{clicked}/image")
    assert find(By.ID, "drop-zone").get_attribute("data-query") == f'{{"id":{clicked}}}'
    hits = results()
    assert len(hits) == K and hits[0][2] == "0"  # the item itself is in the index

    # a radius search (binary runs): everything within Hamming radius 0 of that item
    before = searches()
    radius = find(By.ID, "radius-input")
    radius.clear()
    radius.send_keys("0")
    find(By.ID, "mode-radius").click()
    wait_search(before)
    hits = results()
    assert hits and clicked in [i for i, _, _ in hits]
    assert {d for _, _, d in hits} == {"0"}
    find(By.ID, "mode-k").click()
    wait_search(before + 1)

    # filters on the (synthetic) metadata: near Paris, a tag, a time window, then re-ranked
    def set_value(element_id: str, value: str) -> None:  # typing into date inputs is locale-bound
        driver.execute_script("const e = document.getElementById(arguments[0]); e.value = "
                              "arguments[1]; e.dispatchEvent(new Event('change', {bubbles: true}))",
                              element_id, value)

    set_value("near-lat", "48.8566")  # near needs lat, lon and km: no search until all three
    set_value("near-lon", "2.3522")
    for element_id, value in (("near-km", "50"), ("tags-input", "sale"),
                              ("time-start", "2026-02-01T00:00:00"),
                              ("time-end", "2026-10-31T23:59:59"), ("rerank-lambda", "0.1")):
        before = searches()
        set_value(element_id, value)
        wait_search(before)
    rows = driver.find_elements(By.CSS_SELECTOR, "#results .result")
    assert 0 < len(rows) <= K and "match the filters" in find(By.ID, "status").text
    for row in rows:
        assert row.get_attribute("data-city") == "Paris"
        assert "sale" in row.get_attribute("data-tags").split(",")
        assert "2026-02-01" <= row.get_attribute("data-time") <= "2026-10-31T23:59:59Z"
        assert row.find_element(By.CSS_SELECTOR, ".where").text == "Paris"

    # the API's own error, shown inline: a negative re-rank λ
    before = searches()
    set_value("rerank-lambda", "-1")
    wait_search(before, state="error")
    assert "lambda" in find(By.ID, "error").text
    before = searches()
    find(By.ID, "clear-filters").click()
    wait_search(before)
    assert not find(By.ID, "error").is_displayed() and len(results()) == K

    # a file that is not an image: the API's error is shown inline, the last results stay
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not an image\n")
    before = searches()
    upload(bad)
    wait.until(ec.visibility_of_element_located((By.ID, "error")))
    wait_search(before, state="error")
    assert find(By.ID, "error").text.strip()
    assert len(results()) == K and searches() == before

    # a control error is caught on the page, before any request
    lat = find(By.ID, "near-lat")
    lat.send_keys("48.8")
    find(By.ID, "k-input").click()  # blur: the change event searches again
    wait.until(lambda d: "lat, lon and km" in find(By.ID, "error").text)
    assert find(By.ID, "status").get_attribute("data-state") == "error"
    before = searches()
    find(By.ID, "clear-filters").click()
    wait_search(before)
    assert not lat.get_attribute("value") and not find(By.ID, "error").is_displayed()

    # ... and the page is still usable: the next upload searches and clears the error
    before = searches()
    upload(query)
    wait_search(before)
    assert not find(By.ID, "error").is_displayed()
    assert len(results()) == K
    assert np.isfinite([float(d) for _, _, d in results()]).all()


@needs_fmnist
def test_text_queries_and_text_results_on_a_cross_modal_run(driver, tmp_path):
    """A cross-modal run's text index: a typed query and an uploaded image both list texts,
    and clicking a text searches from it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from hashlab.crossmodal.trainer import CrossModalRun
    from hashlab.serve.app import create_app
    from tests.serve.test_crossmodal_serve import text_index, train_captions_run

    run = train_captions_run(tmp_path)
    train = CrossModalRun(run).load_split("train")
    classes = set(train.images.classes)
    query = tmp_path / "query.png"
    Image.fromarray(train.images.images[0]).save(query)
    wait = WebDriverWait(driver, TIMEOUT)
    find = driver.find_element

    def search_done(after: int) -> None:
        wait.until(lambda d: int(find(By.ID, "results").get_attribute("data-search-count"))
                   > after and find(By.ID, "status").get_attribute("data-state") == "done")

    def text_hits() -> list[tuple[int, str, str]]:
        rows = driver.find_elements(By.CSS_SELECTOR, "#results .result")
        assert all("text-result" in r.get_attribute("class") for r in rows)
        assert not driver.find_elements(By.CSS_SELECTOR, "#results img")
        return [(int(r.get_attribute("data-id")), r.get_attribute("data-text"),
                 r.find_element(By.CSS_SELECTOR, ".label").text) for r in rows]

    with serving(create_app(run, text_index(run, tmp_path / "texts"))) as url:
        driver.get(url + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
                   in ("true", "error"))
        assert find(By.TAG_NAME, "body").get_attribute("data-ready") == "true"
        assert "texts" in find(By.ID, "info").text and "cross-modal" in find(By.ID, "info").text
        assert find(By.ID, "text-form").is_displayed()

        box = find(By.ID, "text-input")
        box.send_keys("ankle boot")
        find(By.ID, "text-search").click()
        search_done(0)
        hits = text_hits()
        assert len(hits) == 10  # the page's default k
        for i, text, label in hits:  # each hit is the stored sentence of that item
            assert text == train.sentences[i] and label in classes
        assert find(By.ID, "drop-zone").get_attribute("data-query") == '{"text":"ankle boot"}'
        assert "ankle boot" in find(By.ID, "query-caption").text
        _save_screenshot(driver, tmp_path / "serve-crossmodal.png")

        # unknown words: the API's error inline, the results kept
        box.clear()
        box.send_keys("zzyzx")
        find(By.ID, "text-search").click()
        wait.until(lambda d: "vocabulary" in find(By.ID, "error").text)
        assert len(text_hits()) == 10

        # an image finds texts; clicking a text searches from it
        find(By.ID, "file-input").send_keys(str(query))
        search_done(1)  # the failed search was not counted
        first = text_hits()[0]
        find(By.CSS_SELECTOR, f'#results .result[data-id="{first[0]}"] button').click()
        search_done(2)
        assert find(By.ID, "drop-zone").get_attribute("data-query") == f'{{"id":{first[0]}}}'
        assert first[1] in find(By.ID, "query-caption").text
        assert text_hits()[0][0] == first[0]  # the text itself is at distance 0 — or tied
