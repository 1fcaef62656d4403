"""The operator's tour of the dashboard in headless Chromium (Selenium), over a real coordinator and
nodes as OS processes: sign in with the one-time token, see the nodes, see a refused job with its
rule and reason, forget a stopped node, and find that change in the operator log.

Headless Chromium comes from the shared harness (tests/browser/conftest.py). Screenshots go to the
test's folder; with FEDERATION_SCREENSHOTS=docs/screenshots they are also written where README.md
and docs/dashboard.md show them.
"""

from __future__ import annotations

import os
import shutil
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from coordinator.config import load_coordinator_config
from federation.processes import free_port
from protocols.errors import FederationError
from protocols.web.signin import TOKEN_FILE
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["douane", "kmar"]
OPERATOR = "Olga Operator"


def _console(paths: dict[str, Path]) -> None:
    """Serve the dashboard on a free loopback port (the coordinator config's [console] table)."""
    path = paths["coordinator"]
    document = tomllib.loads(path.read_text())
    document["console"] = {"listen": f"127.0.0.1:{free_port()}"}
    path.write_text(tomli_w.dumps(document))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(
        tmp_path_factory.mktemp("dashboard"), postgres_dsn, nodes=NODES, edit=_console
    )
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _shot(driver: WebDriver, folder: Path, name: str) -> None:
    """The whole page down to its footer: the window grown by the page's height and its own frame."""
    bottom = driver.execute_script(
        "return Math.ceil(document.querySelector('footer').getBoundingClientRect().bottom + window.scrollY)"
        " + (window.outerHeight - window.innerHeight) + 16"
    )
    driver.set_window_size(1280, min(max(int(bottom), 500), 2400))
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    target = os.environ.get("FEDERATION_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    driver.set_window_size(1280, 1000)


def _wait(predicate: object, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def _table(driver: WebDriver, table_id: str) -> list[str]:
    return [row.text for row in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tr")[1:]]


def test_operator_tour(fed: RunningFederation, browser: WebDriver, tmp_path: Path) -> None:
    config = load_coordinator_config(fed.paths["coordinator"])
    assert config.console is not None
    base = f"http://{config.console.listen}"
    # A job a node refuses (epsilon above the dataset's cap), so the dashboard has one to show.
    with fed.client() as client, pytest.raises(FederationError) as refused:
        # A generous per-node timeout: on a loaded machine the refusal, not a timeout, is what we want.
        client.query(
            "SELECT COUNT(*) AS n FROM declarations", epsilon=50, project="mit-rotterdam", timeout=60
        )
    rule = refused.value.rule
    assert rule == "epsilon_cap", refused.value

    browser.get(base + "/")
    assert browser.current_url.endswith("/signin")
    browser.find_element(By.NAME, "name").send_keys(OPERATOR)
    token = (config.state_dir / TOKEN_FILE).read_text().strip()
    browser.find_element(By.NAME, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "form.signin button").click()
    assert browser.current_url == base + "/", browser.find_element(By.TAG_NAME, "main").text

    nodes = _table(browser, "nodes")
    assert any(r.startswith("douane") and "connected" in r and "declarations" in r for r in nodes), nodes
    troubled = _table(browser, "troubled")
    assert any("mit-rotterdam" in r and f"rule: {rule}" in r for r in troubled), troubled
    _shot(browser, tmp_path, "dashboard-overview")

    browser.get(base + "/jobs?project=mit-rotterdam")
    (job,) = browser.find_elements(By.CSS_SELECTOR, "#jobs tr.job.refused")
    assert "epsilon=50" not in job.text  # the SQL the analyst wrote, not SDK arguments
    assert "SELECT COUNT(*) AS n FROM declarations" in job.text and f"rule: {rule}" in job.text
    assert f"douane: refused rule: {rule}" in job.text
    _shot(browser, tmp_path, "dashboard-jobs")

    fed.procs.stop("kmar")
    browser.get(base + "/nodes")
    assert _wait(
        lambda: (
            browser.refresh(),
            any("kmar" in r and "disconnected" in r for r in _table(browser, "nodes")),
        )[1]
    )
    _shot(browser, tmp_path, "dashboard-nodes")
    browser.find_element(By.XPATH, "//button[text()='Forget kmar']").click()
    # The click posts the form; the answer is a new page, which a loaded machine may still be loading.
    assert _wait(
        lambda: any(
            "Node kmar is forgotten" in e.text for e in browser.find_elements(By.CSS_SELECTOR, ".flash.ok")
        )
    ), [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".flash")]
    assert not any(r.startswith("kmar") for r in _table(browser, "nodes"))

    browser.get(base + "/projects")
    projects = _table(browser, "projects")
    assert any(r.startswith("mit-rotterdam") and "cocaine import" in r for r in projects), projects

    browser.get(base + "/log")
    log = _table(browser, "log")
    assert any(
        f"{OPERATOR} (token)" in r and "/nodes/forget" in r and "node=kmar" in r and "done" in r for r in log
    )
    _shot(browser, tmp_path, "dashboard-log")
