"""Browser test: Playwright driving Debian's chromium (headless, every request off loopback blocked) logs a quant
in through the Hub's login form, reaches JupyterLab, creates a notebook and runs a cell that imports aitrade and
prices an option.

Prerequisites: `apt-get install -y chromium-headless-shell` (/usr/bin/chromium-headless-shell) and the Python package `playwright`; Playwright's
own browser downloads are never used. Without them the test skips locally and fails under CI=true.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from urllib.parse import urlsplit

import pytest
from hubutil import CHROMIUM, CHROMIUM_ARGS, LOOPBACK, Hub, open_new_notebook

from aitrade.auth import ROLES
from aitrade.pricing.black import bsm_price

USER, PASSWORD = "quinn", "correct-horse-battery-staple-9"
CELL = (
    "from aitrade.pricing.black import bsm_price; print(bsm_price(100,100,1,0.01,0,0.2,True)); "
    # the research client, as the quant, with the server's own token: no password, no database URL
    "from aitrade.client import Client; me = Client().whoami(); print(me['name'], ','.join(sorted(me['rights'])))"
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, playwright_api):
    h = Hub(tmp_path_factory.mktemp("browser-hub"))
    try:
        h.start_as_admin(note="browser test")
        # a local account: NativeAuthenticator's sign-up, approved by the admin, in the `quant` group
        h.sign_up(USER, PASSWORD, "quant", note="browser test")
        yield h
    finally:
        h.stop()


def test_quant_logs_in_reaches_jupyterlab_and_prices_an_option(hub, playwright_api, tmp_path):
    expected = float(bsm_price(100, 100, 1, 0.01, 0, 0.2, True))
    assert 8.0 < expected < 9.0  # ATM call, 1y, 20% vol: about 8.43

    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    blocked: list[str] = []
    seen: list[str] = []

    def loopback_only(route):
        url = route.request.url
        seen.append(url)
        if urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            blocked.append(url)
            route.abort("blockedbyclient")

    profile = tmp_path / "chromium-profile"  # a new, empty user-data dir
    profile.mkdir()
    ctx = playwright_api.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 900},
    )
    ctx.set_default_timeout(60_000)
    page = None
    try:
        ctx.route("**/*", loopback_only)
        page = ctx.pages[0] if ctx.pages else ctx.new_page()

        # the Hub's login form; the Hub spawns the server (spawn-pending page) and hands over to JupyterLab
        panel = open_new_notebook(page, hub.url, USER, PASSWORD)
        cell = panel.locator(".jp-Notebook .jp-Cell").first
        cell.locator(".cm-content").click()
        page.keyboard.insert_text(CELL)  # insert_text: no auto-closed brackets
        stdout = cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']")
        prompt = cell.locator(".jp-InputPrompt")
        # run it in place (Ctrl+Enter). JupyterLab drops a run that comes before its session has the kernel (the
        # prompt stays "[ ]:"), so a run that did not start is repeated; one that started ("[*]:") is waited for.
        deadline = time.monotonic() + 180
        while True:
            cell.locator(".cm-content").click()
            page.keyboard.press("Control+Enter")
            try:
                stdout.first.wait_for(state="visible", timeout=15_000)
                break
            except PlaywrightTimeout:
                if time.monotonic() > deadline:
                    raise
                state = prompt.inner_text()
                if re.search(r"\d", state):  # it ran, yet printed nothing: the assertions below show why
                    break
                if "*" in state:  # running (importing aitrade, compiling): keep waiting
                    stdout.first.wait_for(
                        state="visible", timeout=max(1_000, (deadline - time.monotonic()) * 1000)
                    )
                    break
        assert stdout.count() == 1, f"no printed output; the cell shows: {cell.inner_text()}"
        text = stdout.first.inner_text()
        # both prints are in; an error after the first would show here
        page.wait_for_function(
            "(c) => !/\\[\\*\\]/.test(c.innerText)", arg=prompt.element_handle(), timeout=60_000
        )
        text = stdout.first.inner_text()
        outputs = cell.locator(".jp-OutputArea").inner_text()
        code = cell.locator(".cm-content").inner_text()
        page.screenshot(path=str(tmp_path / "jupyterlab.png"), full_page=True)
    finally:
        if page is not None and not (tmp_path / "jupyterlab.png").exists():
            with contextlib.suppress(Exception):  # best effort: the failure itself is what matters
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        ctx.close()

    assert code.strip() == CELL, code
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 2, outputs
    printed = float(lines[0])
    assert lines[1] == f"{USER} {','.join(sorted(ROLES['quant']))}", lines[1]
    assert math.isclose(printed, expected, rel_tol=1e-12), (printed, expected)
    assert (tmp_path / "jupyterlab.png").stat().st_size > 10_000
    # it really was JupyterLab on the Hub's proxy, and nothing left loopback
    assert any(urlsplit(u).path.startswith(f"/user/{USER}/lab") for u in seen)
    assert all(urlsplit(u).hostname in LOOPBACK for u in seen if u not in blocked)
    print(f"blocked off-loopback requests: {blocked}")
