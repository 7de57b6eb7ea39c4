"""Issue 13, the web console in headless Chromium (Debian's ``chromium``, driven by Playwright;
no browser is downloaded): the whole bot runs a gated ``/ops redis flushdb`` that an approver
approves, and a read-only ``/ops redis info`` by someone else; then, in the browser, the console
asks for a sign-in, Sign in with Slack (the OIDC emulator) lets the approver in, the runs list
filters by requester, and the run's page shows its policy decision with the rule, the approver
and the report — with no error in the browser's console (a CSP violation would be one). A
screenshot of the run's page is kept in the test's tmp directory (its path is printed).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.fakes.slack_oidc import SlackOidcEmulator
from tests.fakes.slack_workspace import TEAM_ID
from tests.scenarios.harness import APPROVER, LEAD, REQUESTER, harness, settings_for
from tests.scenarios.process import AuditFile
from tests.services import free_port

pytestmark = pytest.mark.docker
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def oidc():
    with SlackOidcEmulator("4242.5151", "oidc-client-secret", TEAM_ID) as emulator:
        yield emulator


async def test_the_console_in_chromium(slack_emulator, redis_server, redis_db, sandbox_image,
                                       tmp_path, oidc):
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), \
        "Debian's chromium is missing: scripts/install.sh installs it"
    port = free_port()
    settings = settings_for(
        slack_emulator, redis_server.url, tmp_path / "data", port=port,
        console_groups=f"{APPROVER},S0NOBODY", slack_client_id=oidc.client_id,
        slack_client_secret=oidc.client_secret, slack_oidc_url=oidc.origin + "/",
        public_url=f"http://127.0.0.1:{port}")
    redis_db.set("k", "v")
    oidc.user = APPROVER  # who signs in at Slack's consent page
    async with harness(settings, slack_emulator) as h:
        await h.command("redis flushdb")
        thread = await h.run_thread()
        await h.click(await h.card(thread, timeout=90), APPROVER)
        await h.report(thread, timeout=90)
        await h.command("redis info", user=LEAD)
        await h.report(await h.run_thread(1), timeout=90)
        audit = AuditFile(settings.data_dir)
        flush = audit.rows("task")[0]["run_id"]
        policy = audit.rows("policy", flush)[0]["data"]
        shot = await browse(h.bot.url, flush, policy["rule"], tmp_path)
    print(f"console screenshot: {shot}")
    assert shot.stat().st_size > 10_000


async def browse(url: str, flush: str, rule: str, tmp_path: Path) -> Path:
    problems: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = await browser.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        try:
            await page.goto(f"{url}/console/runs")
            assert page.url.endswith("/console/login"), "the console asks for a sign-in first"
            await page.get_by_role("link", name="Sign in with Slack").click()
            await page.wait_for_url("**/console/runs")
            assert f"signed in as {APPROVER}" in await page.inner_text("nav")
            rows = page.locator("table.runs tbody tr")
            assert await rows.count() == 2
            await page.fill("input[name=requester]", REQUESTER)
            await page.get_by_role("button", name="Filter").click()
            await page.wait_for_url("**requester=*")
            assert await rows.count() == 1 and flush in await rows.first.inner_text()
            await page.get_by_role("link", name=flush).click()
            await page.wait_for_url(f"**/console/runs/{flush}")
            timeline = await page.inner_text("ol.timeline")
            assert "approve by rule" in timeline and rule in timeline
            assert f"approved by {APPROVER}" in timeline
            assert "report: done" in timeline
            approvals = await page.inner_text("table.approvals")
            assert "approved" in approvals and APPROVER in approvals
            shot = tmp_path / "console-run.png"
            await page.screenshot(path=str(shot), full_page=True)
        finally:
            await browser.close()
    assert problems == [], f"the browser's console reported errors: {problems}"
    return shot
