"""The web view in a real browser: Debian's Chromium driven by Selenium, against the real
daemon and the real `cronflow web` on a temp home. Each test saves screenshots of the pages it
went through under the test run's temp dir (screenshots/)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import available, chromium, screenshot
from clikit import ok, store
from conftest import DaemonProcess, wait_for
from webkit import WebProcess, add_user

pytestmark = [
    pytest.mark.slow,
    # the first test also starts the daemon, the web view and Chromium on a shared machine
    pytest.mark.timeout(300),
    pytest.mark.skipif(not available(), reason="tests/run.sh installs chromium and chromedriver"),
]

PASSWORD = "correct horse battery"
FLOWS = {
    "quick": """
from cronflow import Flow, Shell
with Flow("quick", schedule="0 3 * * *", doc="Two quick tasks."):
    Shell("first", "echo first") >> Shell("second", "echo second")
""",
    "chain": """
from cronflow import Flow, Shell
with Flow("chain", schedule="0 4 * * *", timezone="Europe/Paris"):
    a = Shell("a", "true")
    b = Shell("b", "echo b ran")
    c = Shell("c", "true")
    d = Shell("d", "true")
    a >> b >> c
    a >> d
""",
    "slow": """
from cronflow import Flow, Shell
with Flow("slow", schedule=None):
    Shell("talk", "for i in $(seq 1 600); do echo line-$i; sleep 0.2; done")
""",
}


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "screenshots"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcess]:
    home = tmp_path_factory.mktemp("browser") / "home"
    (home / "flows").mkdir(parents=True)
    (home / "cronflow.toml").write_text("parallelism = 4\ngrace_period_s = 2\n")
    for name, source in FLOWS.items():
        (home / "flows" / f"{name}.py").write_text(source)
    add_user(home, "alice", PASSWORD)
    daemon = DaemonProcess(home).start()
    web = WebProcess(home)
    yield web
    web.stop()
    daemon.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def css(driver: Any, selector: str) -> Any:
    return driver.find_element("css selector", selector)


def text_once_there(driver: Any, selector: str) -> str:
    """An element's text, or "" while the next page is still loading (a click on a form's
    button returns before it is there): for wait_for."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        found = driver.find_elements("css selector", selector)
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def log_in(driver: Any, site: WebProcess, then: str = "/") -> None:
    driver.get(f"{site.base}/login?next={then}")
    css(driver, "#user-name").send_keys("alice")
    css(driver, "#password").send_keys(PASSWORD)
    css(driver, "#login-submit").click()
    wait_for(lambda: driver.find_elements("css selector", "#user"), what="logged in")


def run_ids(site: WebProcess, flow_id: str) -> list[int]:
    return [r["run_id"] for r in store(site.home).runs_of_flow(flow_id)]


def test_log_in_and_out(site, browser, shots):
    browser.get(f"{site.base}/login")
    css(browser, "#user-name").send_keys("alice")
    css(browser, "#password").send_keys("wrong password")
    css(browser, "#login-submit").click()
    wait_for(
        lambda: "wrong user name or password" in text_once_there(browser, "#login-error"),
        what="the login error",
    )
    screenshot(browser, shots / "login.png")
    log_in(browser, site)
    assert css(browser, "#user").text == "alice"
    assert "logged in as alice" in browser.page_source
    css(browser, "#logout").click()
    wait_for(lambda: browser.find_elements("css selector", "#login"), what="logged out")
    assert not browser.find_elements("css selector", "#logout")


def test_trigger_a_run_from_the_page_and_watch_it_turn_green(site, browser, shots):
    log_in(browser, site)
    before = set(run_ids(site, "quick"))
    css(browser, '#flow-quick button[formaction="/flows/quick/trigger"]').click()
    wait_for(lambda: "of quick for" in browser.page_source, what="the trigger message")
    new = set(run_ids(site, "quick")) - before
    assert len(new) == 1
    state = f'#flow-quick .state[data-run="{new.pop()}"]'
    # The page polls the unfinished run and turns its cell green without a reload.
    marker = browser.execute_script("window.__same_page = true; return 1")
    wait_for(lambda: "s-success" in css(browser, state).get_attribute("class"), what="green")
    assert css(browser, state).text == "success"
    assert browser.execute_script("return window.__same_page === true") == marker
    screenshot(browser, shots / "flows.png")
    browser.get(f"{site.base}/flows/quick")
    assert "Two quick tasks." in css(browser, "#doc").text
    screenshot(browser, shots / "flow.png")


def test_open_a_running_tasks_log_and_see_new_lines_arrive(site, browser, shots):
    ok(site.home, "trigger", "slow")
    run_id = max(run_ids(site, "slow"))
    wait_for(
        lambda: (store(site.home).ti(run_id, "talk") or {}).get("state") == "running",
        what="the talking task to run",
    )
    browser.get(f"{site.base}/flows/slow/runs/{run_id}/tasks/talk")
    assert css(browser, "#ti-state").text == "running"
    first = css(browser, "#log").text

    def later_line() -> bool:
        text = css(browser, "#log").text
        numbers = [int(x.removeprefix("line-")) for x in text.split() if x.startswith("line-")]
        seen = [int(x.removeprefix("line-")) for x in first.split() if x.startswith("line-")]
        return bool(numbers) and max(numbers) >= max(seen, default=0) + 3

    wait_for(later_line, what="new log lines in the page")
    screenshot(browser, shots / "task-running.png")
    ok(
        site.home,
        "mark",
        "slow.talk",
        "--date",
        store(site.home).run(run_id)["logical_date"],
        "--state",
        "skipped",
    )


def touched(browser, column: int) -> object:
    """The task ids a confirmation page lists, once the page has loaded (a click on a form's
    button returns before the next page is there)."""
    from selenium.common.exceptions import StaleElementReferenceException

    def listed() -> list[str]:
        try:
            rows = browser.find_elements("css selector", "#touch tbody tr")
            return [r.text.split()[column] for r in rows]
        except StaleElementReferenceException:  # the page changed under us: look again
            return []

    return wait_for(listed, what="the confirmation page's list")


def test_mark_a_task_failed_then_replay_it_with_downstream(site, browser, shots):
    ok(site.home, "trigger", "chain", "--date", "2024-03-05")
    run_id = max(run_ids(site, "chain"))
    wait_for(lambda: store(site.home).run(run_id)["state"] == "success", what="the chain run")
    log_in(browser, site, f"/flows/chain/runs/{run_id}/tasks/b")
    assert "b ran" in css(browser, "#log").text
    css(browser, "#mark-state option[value=failed]").click()
    css(browser, "#mark-downstream").click()
    css(browser, "#mark-go").click()
    assert touched(browser, 0) == ["b", "c"]  # what it will touch, before it does
    screenshot(browser, shots / "confirm-mark.png")
    css(browser, "#confirm").click()
    wait_for(lambda: text_once_there(browser, "#ti-state") == "failed", what="b failed")
    states = {t["task_id"]: t["state"] for t in store(site.home).tis_of_runs([run_id])}
    assert states == {"a": "success", "b": "failed", "c": "failed", "d": "success"}
    css(browser, "#replay-downstream").click()
    css(browser, "#replay-go").click()
    assert touched(browser, 2) == ["b", "c"]
    screenshot(browser, shots / "confirm-replay.png")
    css(browser, "#confirm").click()
    wait_for(lambda: store(site.home).run(run_id)["state"] == "success", what="the replayed run")
    states = {
        t["task_id"]: (t["state"], t["try_number"]) for t in store(site.home).tis_of_runs([run_id])
    }
    assert states["b"] == ("success", 2) and states["c"] == ("success", 2)
    assert states["a"] == ("success", 1) and states["d"] == ("success", 1)
    browser.get(f"{site.base}/flows/chain/runs/{run_id}/tasks/b")
    tries = [r.text for r in browser.find_elements("css selector", "#tries tbody tr")]
    # try 1 as its log tells it (it ran and succeeded before the mark), try 2 the replay
    assert len(tries) == 2
    assert tries[0].startswith("1 success") and tries[1].startswith("2 success")
    screenshot(browser, shots / "task.png")
    browser.get(f"{site.base}/flows/chain")
    screenshot(browser, shots / "grid.png")


def test_pause_a_flow(site, browser, shots):
    log_in(browser, site, "/flows/chain")
    css(browser, "#pause-toggle").click()
    wait_for(lambda: browser.find_elements("css selector", "#paused"), what="the paused badge")
    assert any(r["flow_id"] == "chain" and r["paused"] for r in store(site.home).flow_states())
    css(browser, "#pause-toggle").click()
    wait_for(lambda: not browser.find_elements("css selector", "#paused"), what="unpaused")
    assert not any(r["flow_id"] == "chain" and r["paused"] for r in store(site.home).flow_states())


def test_status_page_and_a_phones_width(site, shots):
    with chromium(390, 844) as phone:
        for name, path in (("status", "/status"), ("flows", "/"), ("flow", "/flows/chain")):
            phone.get(site.base + path)
            if name == "status":
                daemon = css(phone, "#daemon").text
                assert "running" in daemon
                stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? UTC"  # as people read it
                assert re.search(f"since {stamp}", daemon), daemon
                assert re.search(f"last heartbeat {stamp}", daemon), daemon
            width = phone.execute_script("return document.documentElement.scrollWidth")
            assert width <= 400, (path, width)  # wide tables scroll inside the page
            screenshot(phone, shots / f"phone-{name}.png")
