"""The officer's console in a real browser over a real node and coordinator (docs/console.md).

One Douane node (its officer must approve jobs of project mit-rotterdam, and grant budgets) and a
coordinator run as processes over mutual TLS. Headless Chromium signs in with the node's one-time
token, sets a budget, approves the analyst's pending job (which then runs), reads the release,
verifies the audit log and exports it. Set FEDERATION_SCREENSHOTS=docs/screenshots to refresh the
screenshots the README shows.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from federation.processes import free_port
from nodes.audit import export
from nodes.config import load_node_config
from protocols.errors import FederationError
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation
from tests.web_client import WebClient

PROJECT = "mit-rotterdam"
SQL = "SELECT port, COUNT(*) AS declarations, SUM(value) AS total_value FROM declarations GROUP BY port"
OFFICER = "Anna de Vries"


def _edit(port: int) -> Any:
    def edit(paths: dict[str, Path]) -> None:
        raw = tomllib.loads(paths["douane"].read_text())
        raw["policy"]["require_budget"] = True  # no release for a project without the officer's grant
        raw["console"] = {"listen": f"127.0.0.1:{port}"}
        for dataset in raw["datasets"]:
            if dataset["name"] == "declarations":
                dataset.setdefault("policy", {})["approval_projects"] = [PROJECT]
        paths["douane"].write_text(tomli_w.dumps(raw))

    return edit


@pytest.fixture(scope="module")
def fed_console(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str
) -> Iterator[tuple[RunningFederation, str]]:
    port = free_port()
    running, schema = start_federation(
        tmp_path_factory.mktemp("console"), postgres_dsn, nodes=["douane"], dp_required=True, edit=_edit(port)
    )
    try:
        yield running, f"http://127.0.0.1:{port}"
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _shot(driver: Any, name: str, tmp: Path) -> None:
    """A screenshot of the whole page (the window grown to the page's height, within reason)."""
    folder = Path(os.environ.get("FEDERATION_SCREENSHOTS") or tmp)
    folder.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 20, 700), 2400))
    driver.save_screenshot(str(folder / f"console-{name}.png"))
    driver.set_window_size(1280, 1000)


def _go(driver: Any, element: Any) -> None:
    """Click a link or submit button and wait (bounded) until the next page has replaced this one."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element("tag name", "html")
    element.click()
    WebDriverWait(driver, 15).until(expected_conditions.staleness_of(page))
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")


def test_officer_signs_in_sets_a_budget_approves_and_audits(
    fed_console: tuple[RunningFederation, str], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    fed, url = fed_console
    state = load_node_config(fed.paths["douane"]).state_dir

    # The analyst's job waits for the officer's approval.
    with fed.client() as client, pytest.raises(FederationError) as refused:
        client.query(SQL, project=PROJECT, epsilon=1.0)
    assert refused.value.rule == "approval_required"

    # Sign in with the one-time token from the node's state folder.
    browser.get(url + "/")
    assert browser.current_url.endswith("/signin")
    token = (state / "console-token").read_text().strip()
    browser.find_element(By.NAME, "name").send_keys(OFFICER)
    browser.find_element(By.NAME, "token").send_keys(token)
    _shot(browser, "signin", tmp_path)
    _go(browser, browser.find_element(By.CSS_SELECTOR, "form.signin button"))
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Jobs awaiting your approval" in body and f"{OFFICER} (token)" in body
    assert "connected" in body and "declarations" in body
    _shot(browser, "overview", tmp_path)

    # The pending job, as the SQL the analyst wrote, with project, purpose, legal basis and requester.
    _go(browser, browser.find_element(By.LINK_TEXT, "Approvals"))
    card = browser.find_element(By.CSS_SELECTOR, ".card.pending")
    text = card.text
    assert (
        "SELECT port, COUNT(*) AS declarations, SUM(value) AS total_value FROM declarations GROUP BY port"
        in text
    )
    assert PROJECT in text and "port of Rotterdam" in text and "phenomenon case approved by the MIO" in text
    assert "analyst" in text
    _shot(browser, "approvals", tmp_path)

    # Set a budget: same rules as `federation budget set`.
    _go(browser, browser.find_element(By.LINK_TEXT, "Budgets"))
    form = browser.find_element(By.ID, "set-budget")
    Select(form.find_element(By.NAME, "dataset")).select_by_visible_text("declarations")
    form.find_element(By.NAME, "project").send_keys(PROJECT)
    form.find_element(By.NAME, "epsilon").send_keys("2.5")
    _go(browser, form.find_element(By.CSS_SELECTOR, "button"))
    assert f"Budget of declarations for project {PROJECT} set to epsilon 2.5" in browser.page_source

    # A budget the ledger refuses is shown with its rule, and nothing changes.
    form = browser.find_element(By.ID, "set-budget")
    form.find_element(By.NAME, "project").send_keys(PROJECT)
    form.find_element(By.NAME, "epsilon").send_keys("-1")
    _go(browser, form.find_element(By.CSS_SELECTOR, "button"))
    assert "[rule: budget_value]" in browser.find_element(By.CSS_SELECTOR, ".flash.error").text

    # Approve the job, bound to its hash, with a note.
    _go(browser, browser.find_element(By.LINK_TEXT, "Approvals"))
    card = browser.find_element(By.CSS_SELECTOR, ".card.pending")
    card.find_element(By.NAME, "note").send_keys("Covered by the MIO decision of 3 March")
    _go(browser, card.find_element(By.CSS_SELECTOR, "button[value=approve]"))
    assert f"by {OFFICER} (token)" in browser.find_element(By.CSS_SELECTOR, ".flash.ok").text
    assert "No job is waiting" in browser.page_source

    # The analyst's blocked query now runs (twice), and spends from the budget just set.
    with fed.client() as client:
        for _ in range(2):
            df = client.query(SQL, project=PROJECT, epsilon=1.0)
            assert df.attrs["answered"] == ["douane"] and len(df) >= 1

    _go(browser, browser.find_element(By.LINK_TEXT, "Releases"))
    release = browser.find_element(By.CSS_SELECTOR, ".card.release").text
    assert "GROUP BY port" in release and "epsilon 1" in release and "Rotterdam" in release
    assert "matches its audit entry" in release and "(sd)" in release
    _shot(browser, "releases", tmp_path)

    _go(browser, browser.find_element(By.LINK_TEXT, "Budgets"))
    assert "epsilon spent per project over time" in browser.page_source
    row = browser.find_element(By.XPATH, f"//tr[td[text()='{PROJECT}']]").text
    assert row.split()[2:5] == ["2.5", "2", "0.5"]  # budget, spent, remaining
    _shot(browser, "budgets", tmp_path)
    _go(browser, browser.find_element(By.LINK_TEXT, "Overview"))
    assert "under a quarter left" in browser.find_element(By.TAG_NAME, "body").text
    _shot(browser, "overview-alert", tmp_path)

    # Verify the audit log (chain and signatures) and export it, complete.
    _go(browser, browser.find_element(By.LINK_TEXT, "Audit log"))
    _go(browser, browser.find_element(By.ID, "verify"))
    verdict = browser.find_element(By.ID, "verify-result").text
    assert verdict.startswith("Intact:")
    _shot(browser, "audit", tmp_path)
    browser.get(url + "/audit/report.html")
    report = browser.find_element(By.TAG_NAME, "body").text
    assert "Chain and signatures verified" in report and "Covered by the MIO decision of 3 March" in report

    session = WebClient(url)
    for cookie in browser.get_cookies():
        session.jar.set_cookie(_cookie(cookie))
    exported = json.loads(session.get("/audit/export.json").text)
    assert exported["entries"] == export(state / "audit.log")
    rows_csv = list(csv.DictReader(io.StringIO(session.get("/audit/export.csv").text)))
    assert len(rows_csv) == len(exported["entries"])

    # Every change made in the console is in the audit log with the signed-in person.
    console = [e["payload"] for e in exported["entries"] if e["kind"] == "console"]
    done = {(p["action"], p["outcome"].split(" ")[0]) for p in console if p["person"] == f"{OFFICER} (token)"}
    assert {
        ("/signin", "done"),
        ("/budgets/set", "done"),
        ("/budgets/set", "refused"),
        ("/approvals/decide", "done"),
    } <= done
    approvals = [e["payload"] for e in exported["entries"] if e["kind"] == "approval"]
    assert approvals[-1]["by"] == f"{OFFICER} (token)" and approvals[-1]["decision"] == "approved"


def _cookie(c: dict[str, Any]) -> Any:
    import http.cookiejar

    return http.cookiejar.Cookie(
        0,
        c["name"],
        c["value"],
        None,
        False,
        c["domain"],
        False,
        False,
        c.get("path", "/"),
        True,
        bool(c.get("secure")),
        None,
        False,
        None,
        None,
        {"HttpOnly": ""},
    )
