"""The web dashboard in Debian's Chromium, driven by Playwright, against a running emulated region: a real
server process, moto, and a real agent process per running instance (`dashboard_fleet.EmulatedFleet` on a
`LocalStack`, one per module). Toggles are checked in the agent's own config file, promotions in EC2's
tags. Screenshots of every page land in docs/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from dashboard_fleet import EmulatedFleet, SimulatedFleet

from e2e.conftest import FAST_SERVER, make_stack
from helpers.procs import ADMIN, ENROLL, Operator, Proc, free_port, server_proc, wait_for
from spot_optimizer.demo.stack import LocalStack

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev extra")
expect = playwright_api.expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
WIDER_THAN_SCREEN = """[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right >
    document.documentElement.clientWidth + 1).slice(0, 5).map(e => e.tagName + '.' + e.className + ': ' +
    e.textContent.slice(0, 60) + ' ' + Math.round(e.getBoundingClientRect().right))"""
WAIT_MS = 15_000  # how long a page may take to show what the server already has (live polling is 2 s)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # No decision loop: the tests set roles by hand through commands and the dashboard's buttons; a live
    # loop would demote the manual replica (nobody asked for it) and, once the toggle test turns
    # auto_terminate on, terminate the zombie under the tests' feet.
    flags = (*FAST_SERVER, "--decision-interval", "0")
    with make_stack(tmp_path_factory.mktemp("dashboard"), workloads=2, server_flags=flags, admin_token=ADMIN,
                    enrollment_token=ENROLL) as running:
        yield running


@pytest.fixture(scope="module")
def server(stack: LocalStack) -> tuple[str, str]:
    return stack.server.url, stack.db_url


@pytest.fixture(scope="module")
def fleet(stack: LocalStack) -> EmulatedFleet:
    source = EmulatedFleet(stack)
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
def page(browser: Any, server: tuple[str, str], fleet: EmulatedFleet) -> Iterator[Any]:
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
    assert tab.url.endswith("/login?next=" + quote(f"/workloads/{fleet.workload}", safe=""))
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
    before = Operator(server[0]).get("/commands")
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
    assert Operator(server[0]).get("/commands") == before  # no command was issued


def test_fleet_shows_pools_roles_agents_and_costs(page, browser, fleet, server):
    row = page.locator(f"tr[data-workload='{fleet.workload}']")
    primary = row.locator("td[data-label='Primary']")
    expect(primary).to_contain_text(f"{fleet.instance_type} · {fleet.az_of(fleet.primary_instance)}")
    expect(primary).to_contain_text(fleet.primary_instance)
    expect(row.locator("td[data-label='Replicas']")).to_contain_text(fleet.az_of(fleet.replica_instance))
    expect(row.locator("td[data-label='Zombies']")).to_contain_text(fleet.zombie_instance)
    expect(row.locator("td[data-label='Agents'] .badge")).to_have_count(3)
    expect(row.locator("td[data-label='Agents'] .badge", has_text="online")).to_have_count(3)
    expect(row.locator("td[data-label='Agents']")).to_contain_text("ago")
    cost = row.locator("td[data-label='Cost now']").inner_text()
    dollars = [float(x) for x in re.findall(r"\$([0-9.]+)/h", cost)]
    assert dollars[0] < dollars[1] == pytest.approx(3 * fleet.od_price(fleet.instance_type))  # 3 spot vs 3 OD
    other = page.locator(f"tr[data-workload='{fleet.other_workload}'] td[data-label='Primary']")
    expect(other).to_contain_text(fleet.other_instance)
    expect(other.locator(".badge")).to_have_text("spot")
    shot(page, "fleet.png")
    phone = _context(browser, server[0], PHONE, is_mobile=True, has_touch=True)
    tab = phone.new_page()
    sign_in(tab)
    expect(tab.locator(f"tr[data-workload='{fleet.workload}']")).to_be_visible()
    wide = tab.evaluate(WIDER_THAN_SCREEN)
    assert tab.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1, wide  # no sideways scroll
    shot(tab, "fleet-phone.png")
    phone.close()


def test_a_toggle_changed_with_confirmation_reaches_the_agent(page, fleet):
    agent = fleet.primary_agent
    page.goto(f"/workloads/{fleet.workload}")
    row = page.locator(f"#toggles tr[data-agent='{agent}']")
    expect(row.locator("[data-toggle='auto_terminate']")).to_have_text("off")
    row.locator("[data-action='toggle-auto_terminate']").click()
    expect(page.locator(".confirm .question")).to_contain_text("Turn auto_terminate ON")
    assert fleet.toggles_seen_by_agent(agent)["auto_terminate"] is False  # not before confirming
    page.click(".confirm button[type=submit]")
    expect(page.locator(".flash.ok")).to_contain_text("auto_terminate is now on")
    expect(row.locator("[data-toggle='auto_terminate']")).to_have_text("on")
    # The real agent got it at a heartbeat, logged it and saved it in its own config file.
    assert fleet.toggles_seen_by_agent(agent)["auto_terminate"] is True
    assert any("'auto_terminate': True" in line for line in fleet.config_updates(agent))
    page.locator(f"#toggles tr[data-agent='{agent}'] [data-action='toggle-auto_terminate']").click()
    page.click(".confirm a.button")  # cancel
    expect(page.locator("h1")).to_contain_text("Workload")
    assert fleet.toggles_seen_by_agent(agent)["auto_terminate"] is True


def _issued(page: Any, kind: str) -> str:
    flash = page.locator(".flash.ok")
    expect(flash).to_contain_text(f"({kind}) issued")
    return re.search(r"command ([0-9a-f]{32})", flash.inner_text()).group(1)


def test_a_replica_launched_and_promoted_from_the_workload_page(page, fleet, server):
    operator = Operator(server[0])
    old_primary = fleet.primary_instance
    page.goto(f"/workloads/{fleet.workload}")
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("is the cheapest safe pool")  # a decision's rationale
    # Launch a replica with the dashboard's form: the primary's agent launches it in EC2 (moto).
    az = fleet.az_of(fleet.zombie_instance)
    page.select_option("form.launch select[name=instance_type]", fleet.instance_type)
    page.select_option("form.launch select[name=az]", az)
    page.click("[data-action='launch']")
    expect(page.locator(".confirm .question")).to_contain_text(f"az={az}")
    page.click(".confirm button[type=submit]")
    launch_id = _issued(page, "launch")
    fleet.finish_command(fleet.primary_agent, launch_id)
    launched = operator.get(f"/commands/{launch_id}")
    assert launched["status"] == "succeeded", launched
    new = launched["result"]["instance_id"]
    assert fleet.roles_in_ec2()[new] == "replica"
    fleet.stack.wait_agent(new, timeout_s=60)  # the new instance's own agent process is up
    # It shows up on the open page as a replica with a Promote button; promote it.
    promote = page.locator(f"tr[data-instance='{new}'] [data-action='promote']")
    promote.click()
    expect(page.locator(".confirm .question")).to_contain_text(f"instance_id={new}")
    page.click(".confirm button[type=submit]")
    command_id = _issued(page, "promote")
    stored = operator.get(f"/commands/{command_id}")
    assert (stored["type"], stored["source"]) == ("promote", "manual")
    assert stored["params"]["instance_id"] == new and stored["params"]["old_instance_id"] == old_primary
    expect(timeline).to_contain_text(f"command {command_id} promote issued")
    # The agent runs it while the page stays open: the live timeline shows the result and the role changes.
    fleet.finish_command(stored["agent_id"], command_id)
    assert operator.get(f"/commands/{command_id}")["status"] == "succeeded"
    fleet.wait_roles({new: "primary", old_primary: "zombie"})  # EC2 tags, the server and both agents
    fleet.primary_instance = new
    fleet.refresh_inventory()  # the launch result said "pending"; the inventory says what EC2 says now
    expect(page.locator(f"tr[data-instance='{new}'] td[data-label='State']")).to_have_text("running")
    expect(timeline).to_contain_text(f"command {command_id} succeeded")
    expect(timeline).to_contain_text(f"instance {new} role replica -> primary")
    expect(timeline).to_contain_text(f"instance {old_primary} role primary -> zombie")
    expect(page.locator(f"tr[data-instance='{new}'] .badge.role-primary")).to_be_visible()
    expect(page.locator(f"tr[data-instance='{old_primary}'] .badge.role-zombie")).to_be_visible()
    expect(page.locator(".chart .change")).not_to_have_count(0)
    shot(page, "workload.png")
    page.goto(f"/commands?kind=promote&workload={fleet.workload}")
    expect(page.locator(f"tr[data-command='{command_id}'] .badge")).to_have_text("succeeded")


def test_a_failed_command_shows_its_error_and_lists_filter(page, fleet, server):
    page.goto("/commands")
    az = fleet.az_of(fleet.replica_instance)
    fault = fleet.stack.region.faults.insufficient_capacity(fleet.instance_type, az)
    try:
        failed = Operator(server[0]).command(fleet.primary_agent, "launch", instance_type=fleet.instance_type,
                                             az=az, market="spot")
        fleet.finish_command(fleet.primary_agent, failed["command_id"])
    finally:
        fleet.stack.region.faults.remove(fault)
    row = page.locator(f"tr[data-command='{failed['command_id']}']")
    expect(row.locator(".badge")).to_have_text("failed")
    expect(row.locator("[data-testid='command-error']")).to_contain_text("InsufficientInstanceCapacity")
    expect(row.locator("[data-testid='command-error']")).to_contain_text(f"{fleet.instance_type}/{az}/spot")
    shot(page, "commands.png")
    page.select_option("select[name=status]", "failed")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#commands tbody tr")).to_have_count(1)
    expect(page.locator("#commands tbody tr")).to_have_attribute("data-command", failed["command_id"])
    page.goto("/notices")
    expect(page.locator("#notices tbody tr")).to_have_count(2)  # the primary's rebalance, the zombie's notice
    shot(page, "notices.png")
    page.select_option("select[name=kind]", "interruption")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#notices tbody tr")).to_have_count(1)
    expect(page.locator("#notices tbody tr")).to_contain_text(fleet.interrupted_instance)


def test_sign_out_ends_the_session(page):
    page.click("header form.signout button")
    expect(page.locator("#token")).to_be_visible()
    page.goto("/commands")
    assert "/login" in page.url


# --- what the emulated region cannot show ----------------------------------------------------------------
# Its instances are seconds old when the page is looked at, so savings to date round to $0.00, and its
# Pricing API knows every type it runs, so no on-demand price is ever an estimate. The simulated agents
# report instances launched hours ago, an on-demand primary and a type the Pricing API lacks.


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedFleet]:
    tmp = tmp_path_factory.mktemp("dashboard-simulated")
    db_url = f"sqlite:///{tmp / 'server.db'}"
    port = free_port()
    proc: Proc = server_proc(db_url, port, tmp / "server.log", "--decision-interval", "0",
                             "--heartbeat-interval", "60").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("the server to answer /healthz", Operator(url).healthy, timeout_s=60)
        source = SimulatedFleet(url, db_url=db_url)
        source.populate()
        yield source
    finally:
        proc.stop()


def test_fleet_shows_savings_to_date_and_estimated_on_demand_prices(browser, simulated):
    context = _context(browser, simulated.url)
    tab = context.new_page()
    sign_in(tab)
    row = tab.locator(f"tr[data-workload='{simulated.workload}']")
    saved = float(re.search(r"\$([0-9.,]+)", row.locator("td[data-label='Savings to date']").inner_text())
                  .group(1).replace(",", ""))
    assert saved > 0  # hours of three spot instances against on-demand
    batch = tab.locator(f"tr[data-workload='{simulated.other_workload}']")
    expect(batch.locator("td[data-label='Primary']")).to_contain_text("on-demand")
    expect(batch.locator("td[data-label='Cost now']")).to_contain_text("estimate")
    context.close()
