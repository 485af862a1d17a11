"""The web dashboard in Debian's Chromium, driven by Playwright, against a real server process.

The fleet comes from `dashboard_fleet.SimulatedFleet` (the agent API over HTTP); swap the `fleet` fixture
for a source backed by the emulated region to run the same flow on it. Screenshots of every page land in
docs/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dashboard_fleet import SimulatedFleet

from helpers.procs import ADMIN, Operator, Proc, free_port, server_proc, wait_for

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev extra")
expect = playwright_api.expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 15_000  # how long a page may take to show what the server already has (live polling is 2 s)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("dashboard")
    db_url = f"sqlite:///{tmp / 'server.db'}"
    port = free_port()
    # No decision loop: the simulated agents are the only source of commands besides the operator.
    proc: Proc = server_proc(db_url, port, tmp / "server.log", "--decision-interval", "0",
                             "--heartbeat-interval", "60").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("the server to answer /healthz", Operator(url).healthy, timeout_s=60)
        yield url, db_url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def fleet(server: tuple[str, str]) -> SimulatedFleet:
    url, db_url = server
    source = SimulatedFleet(url, db_url=db_url)
    source.populate()
    return source


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM) and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (`make browser-deps` installs it)")
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _context(browser: Any, url: str, viewport: dict[str, int] = LAPTOP, **extra: Any) -> Any:
    context = browser.new_context(base_url=url, viewport=viewport, **extra)
    context.set_default_timeout(WAIT_MS)
    return context


def sign_in(page: Any, token: str = ADMIN) -> None:
    page.goto("/login")
    page.fill("#token", token)
    page.click("button[type=submit]")


@pytest.fixture
def page(browser: Any, server: tuple[str, str], fleet: SimulatedFleet) -> Iterator[Any]:
    context = _context(browser, server[0])
    tab = context.new_page()
    sign_in(tab)
    expect(tab.locator("h1")).to_have_text("Fleet")
    yield tab
    context.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def test_without_a_session_every_page_and_fragment_redirects_to_login(browser, server, fleet):
    url = server[0]
    for path in ("/", f"/workloads/{fleet.workload}", "/notices", "/commands?status=failed", "/ui/fleet",
                 f"/ui/workloads/{fleet.workload}", "/ui/notices", "/ui/commands"):
        response = httpx.get(url + path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next="), path
    context = _context(browser, url)
    tab = context.new_page()
    tab.goto(f"/workloads/{fleet.workload}")
    assert re.search(r"/login\?next=%2Fworkloads%2Fweb$", tab.url)
    sign_in(tab, "not-the-admin-token")
    expect(tab.locator(".flash.err")).to_contain_text("not valid")
    shot(tab, "login.png")
    sign_in(tab)
    expect(tab.locator("h1")).to_have_text("Fleet")  # `next` is kept only on the failed attempt's form
    context.close()


def test_session_cookie_is_httponly_strict_and_never_the_token(page):
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["so_session"]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"
    assert ADMIN not in session["value"]
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it


def test_posts_without_the_csrf_token_are_refused(page, fleet, server):
    request = page.context.request
    toggle = f"/agents/{fleet.primary_agent}/toggles"
    form = {"name": "auto_switching", "value": "on", "confirmed": "yes", "back": "/"}
    assert request.post(toggle, form=form).status == 403
    assert request.post(toggle, form={**form, "csrf_token": "forged"}).status == 403
    command = {"type": "collect_inventory", "agent_id": fleet.primary_agent, "confirmed": "yes"}
    assert request.post(f"/workloads/{fleet.workload}/commands", form=command).status == 403
    assert request.post("/logout", form={}).status == 403
    assert httpx.post(server[0] + "/login", data={"token": ADMIN}).status_code == 403
    assert fleet.toggles_seen_by_agent(fleet.primary_agent)["auto_switching"] is False
    kinds = [c["type"] for c in Operator(server[0]).get("/commands", workload=fleet.workload)]
    assert kinds.count("collect_inventory") == 1  # only the one the fleet ran while populating


def test_fleet_shows_pools_roles_agents_costs_and_savings(page, browser, fleet, server):
    row = page.locator(f"tr[data-workload='{fleet.workload}']")
    expect(row.locator("td[data-label='Primary']")).to_contain_text("m5.large · us-east-1a")
    expect(row.locator("td[data-label='Primary']")).to_contain_text(fleet.primary_instance)
    expect(row.locator("td[data-label='Replicas']")).to_contain_text("us-east-1b")
    expect(row.locator("td[data-label='Zombies']")).to_contain_text(fleet.zombie_instance)
    expect(row.locator("td[data-label='Agents'] .badge")).to_have_count(3)
    expect(row.locator("td[data-label='Agents']")).to_contain_text("online")
    expect(row.locator("td[data-label='Agents']")).to_contain_text("ago")
    cost = row.locator("td[data-label='Cost now']").inner_text()
    dollars = [float(x) for x in re.findall(r"\$([0-9.]+)/h", cost)]
    assert dollars[0] < dollars[1] == pytest.approx(3 * 0.096)  # three spot instances vs three on-demand
    saved = float(re.search(r"\$([0-9.,]+)", row.locator("td[data-label='Savings to date']").inner_text())
                  .group(1).replace(",", ""))
    assert saved > 0
    batch = page.locator(f"tr[data-workload='{fleet.other_workload}']")
    expect(batch.locator("td[data-label='Primary']")).to_contain_text("on-demand")
    expect(batch.locator("td[data-label='Cost now']")).to_contain_text("estimate")
    shot(page, "fleet.png")
    phone = _context(browser, server[0], PHONE, is_mobile=True, has_touch=True)
    tab = phone.new_page()
    sign_in(tab)
    expect(tab.locator(f"tr[data-workload='{fleet.workload}']")).to_be_visible()
    assert tab.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1  # no sideways scrolling
    shot(tab, "fleet-phone.png")
    phone.close()


def test_a_toggle_changed_with_confirmation_reaches_the_agent(page, fleet):
    page.goto(f"/workloads/{fleet.workload}")
    row = page.locator(f"#toggles tr[data-agent='{fleet.primary_agent}']")
    expect(row.locator("[data-toggle='auto_terminate']")).to_have_text("off")
    row.locator("[data-action='toggle-auto_terminate']").click()
    expect(page.locator(".confirm .question")).to_contain_text("Turn auto_terminate ON")
    assert fleet.toggles_seen_by_agent(fleet.primary_agent)["auto_terminate"] is False  # not before confirming
    page.click(".confirm button[type=submit]")
    expect(page.locator(".flash.ok")).to_contain_text("auto_terminate is now on")
    expect(row.locator("[data-toggle='auto_terminate']")).to_have_text("on")
    assert fleet.toggles_seen_by_agent(fleet.primary_agent)["auto_terminate"] is True
    page.locator(f"#toggles tr[data-agent='{fleet.primary_agent}'] [data-action='toggle-auto_terminate']").click()
    page.click(".confirm a.button")  # cancel
    expect(page.locator("h1")).to_contain_text("Workload")
    assert fleet.toggles_seen_by_agent(fleet.primary_agent)["auto_terminate"] is True


def test_a_promotion_from_the_workload_page_goes_through_the_command_path(page, fleet, server):
    page.goto(f"/workloads/{fleet.workload}")
    expect(page.locator("#timeline")).to_contain_text("us-east-1b is the cheapest safe pool")  # a rationale
    page.locator(f"tr[data-instance='{fleet.replica_instance}'] [data-action='promote']").click()
    expect(page.locator(".confirm .question")).to_contain_text(f"instance_id={fleet.replica_instance}")
    page.click(".confirm button[type=submit]")
    flash = page.locator(".flash.ok")
    expect(flash).to_contain_text("(promote) issued")
    command_id = re.search(r"command ([0-9a-f]{32})", flash.inner_text()).group(1)
    stored = Operator(server[0]).get(f"/commands/{command_id}")
    assert (stored["type"], stored["status"], stored["source"]) == ("promote", "pending", "manual")
    assert stored["params"]["instance_id"] == fleet.replica_instance
    assert stored["params"]["old_instance_id"] == fleet.primary_instance
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text(f"command {command_id} promote issued")
    # The agent runs it while the page stays open: the live timeline shows the result without a reload.
    fleet.finish_command(stored["agent_id"], command_id)
    fleet.promote_done(fleet.replica_instance, fleet.primary_instance)
    expect(timeline).to_contain_text(f"command {command_id} succeeded")
    expect(page.locator(f"tr[data-instance='{fleet.replica_instance}'] .badge.role-primary")).to_be_visible()
    expect(page.locator(".chart .change")).not_to_have_count(0)
    shot(page, "workload.png")
    page.goto(f"/commands?kind=promote&workload={fleet.workload}")
    expect(page.locator(f"tr[data-command='{command_id}'] .badge")).to_have_text("succeeded")


def test_a_failed_command_shows_its_error_and_lists_filter(page, fleet, server):
    page.goto("/commands")
    operator = Operator(server[0])
    failed = operator.command(fleet.primary_agent, "launch", instance_type="m5.large", az="us-east-1c")
    expect(page.locator(f"tr[data-command='{failed['command_id']}'] .badge")).to_have_text("pending")
    fleet.finish_command(fleet.primary_agent, failed["command_id"],
                         error="no spot capacity for m5.large in us-east-1c", error_code="InsufficientInstanceCapacity")
    row = page.locator(f"tr[data-command='{failed['command_id']}']")
    expect(row.locator("[data-testid='command-error']")).to_contain_text(
        "InsufficientInstanceCapacity: no spot capacity for m5.large in us-east-1c")
    shot(page, "commands.png")
    page.select_option("select[name=status]", "failed")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#commands tbody tr")).to_have_count(1)
    expect(page.locator("#commands tbody tr")).to_have_attribute("data-command", failed["command_id"])
    page.goto("/notices")
    expect(page.locator("#notices tbody tr")).to_have_count(2)
    shot(page, "notices.png")
    page.select_option("select[name=kind]", "interruption")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#notices tbody tr")).to_have_count(1)
    expect(page.locator("#notices tbody tr")).to_contain_text(fleet.zombie_instance)


def test_sign_out_ends_the_session(page):
    page.click("header form.signout button")
    expect(page.locator("#token")).to_be_visible()
    page.goto("/commands")
    assert "/login" in page.url
