"""Voila for managers, the landing page and the offline API docs, in a real browser behind a real Hub.

Playwright drives Debian's chromium (as tests/test_browser.py does: headless, every request off loopback blocked)
through one JupyterHub with the platform's services. The project is seeded as the desk would leave it: two stored
vol surfaces, a `pnl` and a `limits` message on the bus, a daily report file.

- a manager (no server) logs in, lands on the Hub's landing page, opens the daily summary (Voila) and sees its
  numbers, with no code, no input and no action button; their server was never started; the page loads no
  JupyterLab extension but pygments';
- the landing page of a trader, an auditor and a manager lists what each may open and do, and nothing else;
- an auditor may not open the summary;
- the API's /docs renders Swagger UI with nothing fetched off loopback.

Set SCREENSHOTS_DIR (e.g. docs/screenshots) to keep the pages' screenshots there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hubutil import LOOPBACK, Hub, free_port

PASSWORD = "correct-horse-battery-staple-9"
USERS = {"meg": "manager", "tara": "trader", "audrey": "auditor"}
SUMMARY = "/services/aitrade-voila/voila/render/daily_summary.ipynb"

SEED = """
from aitrade import marketdata, store, surfaces
from aitrade.bus import get_bus
from aitrade.config import get_settings
from aitrade.desk import LIMITS_STREAM, PNL_STREAM

market = marketdata.SyntheticMarket(seed=7)
with store.session_scope() as s:
    for sym in ("SPX", "IXIC"):
        surfaces.store_surface(s, surfaces.calibrate_chain(market.chain(sym, "2018-06-29"), heston=False))
part = {"total": 1250.5, "realized": 200.25, "unrealized": 1050.25}
get_bus().publish(PNL_STREAM, {"type": "pnl", **part, "n_positions": 3, "by_underlying": {"SPX": part}})
limit = {"name": "spx-delta", "scope": "SPX", "metric": "delta", "max_abs": 5e5, "value": 4.5e5}
get_bus().publish(LIMITS_STREAM, {"type": "limits", "limits": [limit | {"utilisation": 0.9, "breached": False}]})
out = get_settings().path("var/reports")
out.mkdir(parents=True, exist_ok=True)
(out / "daily-2018-06-29.html").write_text("<html><body><h1>Daily report 2018-06-29</h1></body></html>")
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory, browser):
    h = Hub(
        tmp_path_factory.mktemp("voila-hub"),
        env={"AITRADE_VOILA_PORT": str(free_port()), "AITRADE_HUB__VOILA_KERNELS": "2"},
    )
    try:
        h.start_as_admin(note="voila test")
        for name, group in USERS.items():
            h.sign_up(name, PASSWORD, group, note="voila test")
        out = subprocess.run(
            [sys.executable, "-c", SEED], env=h.env, cwd=h.root, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        yield h
    finally:
        h.stop()


class Visit:
    "One person's browser context: loopback only (every other request is blocked and listed)."

    def __init__(self, browser, hub: Hub, user: str):
        self.hub, self.blocked, self.seen = hub, [], []
        self.ctx = browser.new_context(viewport={"width": 1300, "height": 900})
        self.ctx.set_default_timeout(60_000)
        self.ctx.route("**/*", self._loopback_only)
        self.page = self.ctx.new_page()
        self.page.goto(hub.url + "/hub/login")
        self.page.fill("#username_input", user)
        self.page.fill("#password_input", PASSWORD)
        self.page.click("#login_submit")
        self.page.wait_for_url(re.compile(r"/hub/home"))

    def _loopback_only(self, route):
        url = route.request.url
        self.seen.append(url)
        if urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")

    def shot(self, name: str, tmp_path: Path) -> Path:
        path = tmp_path / name
        self.page.screenshot(path=str(path), full_page=True)
        if keep := os.environ.get("SCREENSHOTS_DIR"):
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / name)
        return path

    def close(self):
        self.ctx.close()


@pytest.fixture
def visit(browser, hub):
    opened = []

    def open_as(user: str) -> Visit:
        opened.append(Visit(browser, hub, user))
        return opened[-1]

    yield open_as
    for v in opened:
        v.close()


def landing(v: Visit) -> tuple[list[str], list[str]]:
    "The doors and the rights the landing page lists."
    doors = v.page.locator(".aitrade-door a").all_inner_texts()
    rights = v.page.locator("#aitrade-rights li").all_inner_texts()
    return [d.strip() for d in doors], [r.strip() for r in rights]


def test_manager_without_a_server_sees_the_daily_summary_read_only(hub, visit, tmp_path):
    v = visit("meg")
    v.page.locator(".aitrade-door a", has_text="Daily summary").click()
    v.page.wait_for_url(re.compile(re.escape(SUMMARY)), timeout=120_000)
    v.page.locator("table.pnl-total").wait_for(timeout=120_000)
    v.page.locator("table.atm-vols").wait_for()
    text = v.page.inner_text("body")
    v.page.set_viewport_size({"width": 1300, "height": 2400})  # Voila scrolls inside its page: show it all
    shot = v.shot("voila_summary.png", tmp_path)
    # the numbers the desk published and the stored surfaces'
    assert "1,250.50" in text and "200.25" in text, text[:2000]
    assert "spx-delta" in text and "90%" in text, text[:2000]
    assert "SPX" in text and "IXIC" in text and re.search(r"\d+\.\d%", text), text[:2000]
    assert "daily-2018-06-29.html" in text
    assert v.page.frame_locator("iframe.daily-report").locator("h1").inner_text() == "Daily report 2018-06-29"
    # read only: no source, no input, no button, nothing editable
    page = v.page
    assert "daily_summary()" not in page.content() and "wait_for_request" not in page.content()
    for code_or_input in (".jp-CodeCell .jp-InputArea", ".jp-Editor, .cm-editor", "textarea, input, select"):
        assert page.locator(code_or_input).count() == 0, code_or_input
    assert page.locator("[contenteditable=true]").count() == 0
    assert page.locator("button, [role=button]").count() == 0
    assert shot.stat().st_size > 10_000
    # of the JupyterLab extensions installed, the page loads only pygments' (voila_config's extension_allowlist)
    loaded = {u.split("/labextensions/")[1].split("/static/")[0] for u in v.seen if "/labextensions/" in u}
    assert loaded == {"jupyterlab_pygments"}, loaded
    # no server was started for the manager, and nothing left loopback
    assert hub.api("GET", "/users/meg", hub.admin_token).json()["servers"] == {}
    assert v.blocked == [], v.blocked


def test_the_summary_refuses_someone_without_its_scope(hub, visit):
    v = visit("audrey")
    r = v.page.goto(hub.url + SUMMARY)
    assert r.status == 403, (r.status, v.page.inner_text("body")[:500])


@pytest.mark.parametrize(
    "user, opens, may, may_not",
    [
        ("tara", ["Daily summary", "API docs"], ["submit orders"], ["query and verify the audit log"]),
        ("audrey", ["API docs"], ["query and verify the audit log"], ["submit orders"]),
        ("meg", ["Daily summary", "API docs"], ["read daily and compliance reports"], ["submit orders"]),
    ],
)
def test_the_landing_page_lists_what_each_role_may_open(hub, visit, tmp_path, user, opens, may, may_not):
    v = visit(user)
    doors, rights = landing(v)
    v.shot(f"landing_{USERS[user]}.png", tmp_path)
    assert [d for d in doors if d != "Dashboards"] == opens, doors  # the Panel app's door is its own test's
    assert "JupyterLab" not in doors and v.page.locator("#start").count() == 0
    assert set(may) <= set(rights) and not set(may_not) & set(rights), rights
    if user == "audrey":
        assert "Daily summary" not in doors


def test_api_docs_render_offline(hub, visit):
    v = visit("tara")
    v.page.locator(".aitrade-door a", has_text="API docs").click()
    v.page.wait_for_url(re.compile(r"/services/aitrade-api/docs"))
    v.page.locator(".swagger-ui .info .title", has_text="aitrade API").wait_for()
    assert v.page.locator(".opblock").count() >= 20
    assert v.blocked == [], v.blocked
    assert any(urlsplit(u).path.endswith("/docs/static/swagger-ui-bundle.js") for u in v.seen)
