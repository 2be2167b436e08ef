"""The trust boundary, for real: `aitrade up` started by root splits the host into the platform's service account
and one system account per person, and a quant attacks it from their own JupyterLab: from a terminal (Jupyter's
terminal API, through the Hub's proxy) and from a notebook in a real browser (Playwright driving Debian's
chromium). Every probe must be refused; the refusals the platform sees (the API's) are audited.

The probes (PROBE below) and what each must meet:
- reading each secret and state file of `var/` (admin password, database, bus, Hub cookie secret and database,
  the cluster's TLS key, the logs), and listing `var/`: the OS refuses (`PermissionError`);
- opening the database read-only with sqlite3: refused;
- the production Dask scheduler: over TLS without a certificate, over plain TCP, and with a certificate from a
  CA of one's own: no connection;
- the CLI approving a pending order as someone else (`--user`), as oneself, and engaging the kill switch:
  refused by `aitrade.cli.common.principal` (people act through the API);
- the Hub: minting a token for another user: refused by the Hub;
- the API: another user's revoked token, one's own expired token, a forged one (401, each audited as
  `api.unauthenticated`), and approving with one's own token, which lacks `orders:approve` (403, audited as
  `api.denied`).

It also runs the research notebook `nbs/research.ipynb` in the quant's JupyterLab: a surface through the API with
the quant's token, recalibrated on their own cluster from the Hub's dask-gateway, whose workers run as the quant.

That platform keeps its database in SQLite under `var/`. The production column runs too: the platform on a
PostgreSQL server of the test's own with password authentication (the suite's shared server trusts every local
connection, as no production server would), where a person's account can neither log in as the platform's role
(without the password, or guessing it) or as the superuser, nor read the password from a platform process's
environment.

Needs root: it creates system accounts (a service account and people's, with names unique to the run) and
removes them afterwards, and restores the folder modes it opened for them. Without root, or without chromium and
playwright, it skips locally and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import requests
from hubutil import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LOOPBACK,
    ROOT,
    Hub,
    free_port,
    free_port_block,
    open_new_notebook,
    platform_env,
    unavailable,
)

from aitrade import accounts

SFX = uuid.uuid4().hex[:6]
SVC = f"aits{SFX}"  # the service account of this run
PREFIX = f"aitp{SFX}-"  # people's accounts of this run
QUANT, TRADER, OTHER = "quinn", "tara", "theo"
PASSWORD = "correct-horse-battery-staple-9"
API = "/services/aitrade-api/v1"

SEED = """
import datetime as dt
from aitrade import store, surfaces
from aitrade.marketdata import OptionQuote, SyntheticMarket, ensure_underlyings

with store.session_scope() as s:  # a calibrated surface for the research notebook
    surfaces.store_surface(s, surfaces.calibrate_chain(SyntheticMarket(seed=3).chain("SPX", "2016-02-10")))
now = store.utcnow()
with store.session_scope() as s:  # a fresh quote, so the trader's order is accepted (and waits for approval)
    ensure_underlyings(s, ["SPX"])
    s.add(OptionQuote(underlying="SPX", quote_date=now.date(), ts=now, expiry=(now + dt.timedelta(days=180)).date(),
                      strike=100.0, option_type="C", bid=4.9, ask=5.1, bid_size=10, ask_size=7, underlying_price=100.0))
print((now + dt.timedelta(days=180)).date())
"""

# run by the quant, as their own account: argv = var/, the production scheduler's address, the pending order,
# another user's revoked token, the quant's own expired token
PROBE = r'''
import json, os, sqlite3, subprocess, sys
var, dask, order, revoked, expired = sys.argv[1:6]
results = {}


def probe(name, fn):
    try:
        results[name] = f"ALLOWED: {fn()!r}"[:300]
    except BaseException as e:  # noqa: BLE001 (every failure is the refusal being looked for)
        results[name] = f"refused: {type(e).__name__}: {e}"[:300]


for f in ("admin-password", "aitrade.db", "bus.db", "hub/jupyterhub_cookie_secret", "hub/jupyterhub.sqlite",
          "secrets/dask/key.pem", "log/jupyterhub.log"):
    probe(f"read var/{f}", lambda f=f: open(os.path.join(var, f), "rb").read(16))
probe("list var/", lambda: os.listdir(var))
probe("open the database", lambda: sqlite3.connect(f"file:{var}/aitrade.db?mode=ro", uri=True)
      .execute("select count(*) from orders").fetchone())


def dask_connect(address, security=None):
    from distributed import Client

    c = Client(address, security=security, timeout=5, set_as_default=False)
    c.close()
    return "connected"


def own_certificate():
    from pathlib import Path

    from aitrade.cluster import ensure_tls, security
    from aitrade.config import load_settings

    home = Path.home() / "fake-ca"
    home.mkdir(exist_ok=True)
    (home / "settings.ini").write_text("")
    s = load_settings(home / "settings.ini")
    ensure_tls(s)
    return dask_connect(dask, security(dask, s))


probe("production Dask: TLS without a certificate", lambda: dask_connect(dask))
probe("production Dask: plain TCP", lambda: dask_connect(dask.replace("tls://", "tcp://")))
probe("production Dask: a certificate of one's own", own_certificate)


def cli(*args):
    exe = os.path.join(os.path.dirname(sys.executable), "aitrade")
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
    if r.returncode == 0:
        return r.stdout
    raise PermissionError(f"exit {r.returncode}: {r.stderr.strip()[-220:]}")


probe("CLI: approve the order as someone else", lambda: cli("orders", "approve", order, "--reason", "probe",
                                                            "--user", "tara", "--role", "trader"))
probe("CLI: approve the order as oneself", lambda: cli("orders", "approve", order, "--reason", "probe"))
probe("CLI: engage the kill switch", lambda: cli("killswitch", "on", "--reason", "probe"))


def call(url, token, method="GET", body=None):
    import httpx

    r = httpx.request(method, url, headers={"Authorization": f"token {token}"}, json=body, timeout=30)
    if r.status_code < 400:
        return r.status_code
    raise PermissionError(f"{r.status_code}: {r.text[:160]}")


api, mine = os.environ["AITRADE_API_URL"] + "/v1", os.environ["JUPYTERHUB_API_TOKEN"]
hub = os.environ["JUPYTERHUB_API_URL"]
probe("Hub: mint a token for another user", lambda: call(f"{hub}/users/tara/tokens", mine, "POST", {"note": "x"}))
probe("API: another user's revoked token", lambda: call(f"{api}/orders", revoked))
probe("API: one's own expired token", lambda: call(f"{api}/whoami", expired))
probe("API: a forged token", lambda: call(f"{api}/orders/{order}/approve", "f0rged" * 6, "POST", {"reason": "x"}))
probe("API: approve with one's own token", lambda: call(f"{api}/orders/{order}/approve", mine, "POST",
                                                         {"reason": "probe"}))
print("PROBES " + json.dumps(results))
'''  # fmt: skip

# what the platform sees of the probes, and audits
SEEN = {
    "API: another user's revoked token": "api.unauthenticated",
    "API: one's own expired token": "api.unauthenticated",
    "API: a forged token": "api.unauthenticated",
    "API: approve with one's own token": "api.denied",
}


class Platform(Hub):
    "`aitrade up` as root in separate-accounts mode, in a folder other accounts may pass; the Hub helpers work on it."

    def __init__(self, root: Path):
        self.root, self.port = root, free_port_block(8)  # the Hub's services default to its port + 1..7
        self.url = f"http://127.0.0.1:{self.port}"
        (root / "settings.ini").write_text(
            f"[hub]\nport = {self.port}\n[dask]\nscheduler_port = {free_port()}\ndashboard_port = 0\ngateway = hub\n"
            "[risk]\napproval_notional = 1\n"
            f"[accounts]\nservice_account = {SVC}\nperson_prefix = {PREFIX}\n"
        )
        ports = {
            f"AITRADE_{k}_PORT": str(free_port())
            for k in ("API", "VOILA", "DASHBOARDS", "HUB_PROXY_API", "DASK_GATEWAY")
        }
        self.env = platform_env(
            AITRADE_SETTINGS=str(root / "settings.ini"),
            AITRADE_ACCOUNTS__SERVICE_ACCOUNT=SVC,
            AITRADE_HUB_INTERNAL_PORT=str(free_port()),
            **ports,
        )
        self.proc = None

    def start(self, timeout: float = 180) -> Platform:
        self.log = open(self.root / "up.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from aitrade.cli import main; main()", "up", "--no-market-clock",
             "--no-desk", "--no-scheduler", "--first-run", ""],
            env=self.env, cwd=self.root, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while "aitrade platform started" not in (self.root / "up.log").read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"aitrade up did not start: {(self.root / 'up.log').read_text()[-3000:]}")
            time.sleep(0.5)
        while (
            requests.get(self.url + "/hub/api/", timeout=5).status_code != 200
        ):  # the proxy routes to the Hub
            assert time.monotonic() < deadline, (self.root / "up.log").read_text()[-3000:]
            time.sleep(0.5)
        self.admin_password = (self.root / "var" / "admin-password").read_text().strip()
        s, r = self.login("admin", self.admin_password)
        assert r.status_code == 302, r.text
        tok = s.post(self.url + "/hub/api/users/admin/tokens", headers={"X-XSRFToken": s.cookies.get("_xsrf")},
                     json={"note": "boundary test", "expires_in": 3600})  # fmt: skip
        assert tok.status_code == 201, tok.text
        self.admin_token = tok.json()["token"]
        return self

    def stop(self) -> None:
        "Stop `up` (it stops its services, the Hub its servers and proxy), then whatever of its tree outlived it."
        if self.proc and self.proc.poll() is None:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
            _, alive = psutil.wait_procs(tree, timeout=10)
            for p in alive:  # e.g. the Hub's proxy, when the Hub was killed before it could stop it
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
        if getattr(self, "log", None):
            self.log.close()

    def as_service(self, code: str) -> str:
        "Run Python `code` as the service account in the platform's folder (never as root: files it makes stay the service's)."
        a = accounts.Account.of(SVC)
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env | {"HOME": str(a.home)}, cwd=self.root,
            capture_output=True, text=True, user=a.uid, group=a.gid, extra_groups=[],
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def audit_of(self, action: str) -> list[dict]:
        code = (
            "import json; from aitrade import audit, store\n"
            "with store.session_scope() as s:\n"
            f"    print(json.dumps([r.to_dict() for r in audit.query(s, action={action!r}, limit=1000)]))"
        )
        return json.loads(self.as_service(code).splitlines()[-1])


@pytest.fixture(scope="module")
def platform():
    if os.geteuid() != 0:
        unavailable("the trust boundary test", "it needs root, to create system accounts")
    root = Path(tempfile.mkdtemp(prefix="aitrade-boundary-", dir="/var/tmp"))
    os.chmod(root, 0o711)  # others may pass, not list: as a service's folder under /srv would be
    # the folders `up` will open to other accounts (o+x), to close again afterwards
    here = Path(accounts.__file__).resolve().parent
    closed = {p: stat.S_IMODE(p.stat().st_mode) for x in (Path(sys.executable), Path(sys.prefix), ROOT, here)
              for p in accounts.blocked_on_the_way(x)}  # fmt: skip
    p = Platform(root)
    try:
        p.start()
        yield p
    finally:
        p.stop()
        made = [a.pw_name for a in pwd.getpwall() if a.pw_name == SVC or a.pw_name.startswith(PREFIX)]
        for name in made:
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        time.sleep(0.5)
        for name in made:
            accounts.remove_account(name)
        for d, mode in closed.items():
            os.chmod(d, mode)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def desk(platform):
    "The quant (local account, a server of their own), a trader with a pending order, a probe in the quant's home."
    expiry = platform.as_service(SEED).splitlines()[-1]
    platform.sign_up(QUANT, PASSWORD, "quant", note="boundary test")
    trader = platform.make_user(TRADER, "trader", note="boundary test")
    body = {"client_order_id": f"b-{SFX}", "symbol": "SPX", "side": "buy", "quantity": 10, "option_type": "C",
            "expiry": expiry, "strike": 100.0}  # fmt: skip
    r = requests.post(
        platform.url + API + "/orders", json=body, headers={"Authorization": f"token {trader}"}, timeout=60
    )
    assert r.status_code == 201 and r.json()["state"] == "pending_approval", r.text
    order = r.json()["id"]
    # another user's token that leaked and was revoked, and the quant's own that expired
    other = platform.make_user(OTHER, "trader", note="boundary test")
    tid = platform.api("GET", f"/users/{OTHER}/tokens", platform.admin_token).json()["api_tokens"]
    for t in tid:
        assert (
            platform.api("DELETE", f"/users/{OTHER}/tokens/{t['id']}", platform.admin_token).status_code
            == 204
        )
    r = platform.api(
        "POST", f"/users/{QUANT}/tokens", platform.admin_token, json={"note": "short", "expires_in": 1}
    )
    expired = r.json()["token"]
    # the quant's server, started by the Hub as the quant's own account
    assert platform.api("POST", f"/users/{QUANT}/server", platform.admin_token).status_code in (201, 202)
    deadline = time.monotonic() + 120
    while (
        not platform.api("GET", f"/users/{QUANT}", platform.admin_token)
        .json()["servers"]
        .get("", {})
        .get("ready")
    ):
        assert time.monotonic() < deadline, (platform.root / "var" / "log" / "jupyterhub.log").read_text()[
            -3000:
        ]
        time.sleep(1)
    person = accounts.Account.of(accounts.person_account_name(QUANT, PREFIX))
    for name, text in (
        ("probe.py", PROBE),
        ("research.ipynb", (ROOT / "nbs" / "research.ipynb").read_text()),
    ):
        (person.home / name).write_text(text)
        os.chown(person.home / name, person.uid, person.gid)
    dask = re.search(r"dask-scheduler\s+(tls://\S+)", (platform.root / "up.log").read_text()).group(1)
    return {"person": person, "dask": dask, "order": str(order), "revoked": other, "expired": expired}


def probe_args(platform, desk) -> str:
    return " ".join(
        [str(platform.root / "var"), desk["dask"], desk["order"], desk["revoked"], desk["expired"]]
    )


def test_services_run_as_the_service_account_and_var_is_theirs_alone(platform):
    up = psutil.Process(platform.proc.pid)
    users = {}
    for p in up.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            cmd = " ".join(p.cmdline())
            for key in ("dask scheduler", "dask worker", "aitrade.api import main", "aitrade.voila import main",
                        "dashboards serve", "jupyterhub_idle_culler", "jupyterhub -f", "configurable-http-proxy", "dask_gateway_server"):  # fmt: skip
                if key in cmd:
                    users.setdefault(key, set()).add(p.username())
    # root: the Hub, its proxy, and dask-gateway, which start people's servers and clusters as them
    assert [users.pop(k) for k in ("jupyterhub -f", "configurable-http-proxy", "dask_gateway_server")] == [
        {"root"}
    ] * 3
    assert users == {k: {SVC} for k in users} and len(users) == 6, users
    var = platform.root / "var"
    st = var.stat()
    assert (accounts.Account.of(SVC).uid, stat.S_IMODE(st.st_mode)) == (st.st_uid, 0o700)
    for f in ("admin-password", "aitrade.db", "secrets/dask/key.pem"):
        assert stat.S_IMODE((var / f).stat().st_mode) & 0o077 == 0, f
    assert "services as " + SVC in (platform.root / "up.log").read_text()


def test_a_quants_server_runs_as_their_own_account(platform, desk):
    person = desk["person"]
    assert person.name == f"{PREFIX}{QUANT}" and person.uid not in (0, accounts.Account.of(SVC).uid)
    assert stat.S_IMODE(person.home.stat().st_mode) == 0o700
    # the servers this platform's Hub started (other tests' hubs may run servers of their own meanwhile)
    servers = [p for p in psutil.Process(platform.proc.pid).children(recursive=True)
               if "jupyterhub-singleuser" in " ".join(p.cmdline())]  # fmt: skip
    assert [p.username() for p in servers] == [person.name]
    made = platform.audit_of("hub.account.create")
    assert [(r["actor"], r["target"], r["after"]["account"]) for r in made] == [
        ("system:hub", f"user:{QUANT}", person.name)
    ]


def terminal(
    platform: Platform, user: str, token: str, command: str, marker: str, timeout: float = 240
) -> str:
    "Type `command` into a new JupyterLab terminal of `user` (their token, through the Hub's proxy); its output."
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    base, auth = f"{platform.url}/user/{user}", {"Authorization": f"token {token}"}
    r = requests.post(base + "/api/terminals", headers=auth, json={}, timeout=60)
    assert r.status_code == 200, r.text
    name = r.json()["name"]

    async def session() -> str:
        ws = await websocket_connect(
            HTTPRequest(base.replace("http://", "ws://") + f"/terminals/websocket/{name}", headers=auth)
        )
        ws.write_message(json.dumps(["stdin", command + "\r"]))
        out, deadline = "", time.monotonic() + timeout
        while marker not in out:
            msg = await asyncio.wait_for(ws.read_message(), max(1.0, deadline - time.monotonic()))
            if msg is None:
                break
            kind, *rest = json.loads(msg)
            if kind == "stdout":
                out += rest[0]
        ws.close()
        return out

    try:
        return asyncio.run(session())
    finally:
        requests.delete(base + f"/api/terminals/{name}", headers=auth, timeout=30)


def check_probes(platform: Platform, output: str, since: int, order: str) -> dict:
    "Every probe in `output` was refused, and the platform audited each refusal it saw (records after `since`)."
    line = next(ln for ln in output.splitlines() if ln.startswith("PROBES "))
    results = json.loads(line.removeprefix("PROBES "))
    assert len(results) == 20, results
    allowed = {k: v for k, v in results.items() if not v.startswith("refused")}
    assert allowed == {}, allowed
    for k, v in results.items():
        if k.startswith(("read var/", "list var/")):
            assert "PermissionError" in v, (k, v)
        if k.startswith("CLI"):
            assert "cannot change the platform's state from the command line" in v, (k, v)
        if k.startswith("CLI: approve the order as someone else"):
            assert "only for the platform's service account" in v, v
    assert results["Hub: mint a token for another user"].startswith("refused: PermissionError: 40"), results
    for k in SEEN:
        code = "403" if SEEN[k] == "api.denied" else "401"
        assert results[k].startswith(f"refused: PermissionError: {code}"), (k, results[k])
    unauth = [r for r in platform.audit_of("api.unauthenticated") if r["seq"] > since]
    denied = [r for r in platform.audit_of("api.denied") if r["seq"] > since]
    assert len(unauth) == 3 and {r["actor"] for r in unauth} == {"anonymous"}, unauth
    assert [(r["actor"], r["target"]) for r in denied] == [(QUANT, f"api:POST {API}/orders/{order}/approve")]
    return results


def last_seq(platform: Platform) -> int:
    code = (
        "from aitrade import audit, store\n"
        "with store.session_scope() as s:\n"
        "    print(max([r.seq for r in audit.query(s, limit=1)] or [0]))"
    )
    return int(platform.as_service(code).splitlines()[-1])


def test_started_without_root_the_platform_runs_as_that_account_and_starts_no_servers(platform, desk):
    "`make run` by someone without root: everything as them, var/ theirs alone, no JupyterLab for anyone."
    person = desk["person"]
    here = person.home / "own-platform"
    here.mkdir()
    (here / "settings.ini").write_text(f"[dask]\nscheduler_port = {free_port()}\ndashboard_port = 0\n")
    os.chown(here, person.uid, person.gid)
    os.chown(here / "settings.ini", person.uid, person.gid)
    r = subprocess.run(
        [sys.executable, "-c", "from aitrade.cli import main; main()", "up", "--no-hub", "--no-scheduler",
         "--no-market-clock", "--no-desk", "--first-run", "", "--exit-after", "2"],
        env=platform_env(AITRADE_SETTINGS=str(here / "settings.ini"), AITRADE_ACCOUNTS__SERVICE_ACCOUNT=SVC,
                         HOME=str(person.home)),
        cwd=here, user=person.uid, group=person.gid, extra_groups=[], capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"everything as {person.name}; no JupyterLab servers" in r.stdout, r.stdout
    assert "needs the platform started by root" in r.stdout and f"var/ private to {person.name}" in r.stdout
    st = (here / "var").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (person.uid, 0o700)
    assert accounts.Account.of(SVC).uid != person.uid  # no account was made or switched to


def test_probes_from_a_quants_terminal_are_refused(platform, desk):
    token = platform.make_user(QUANT, "quant", note="boundary terminal")
    since = last_seq(platform)
    out = terminal(platform, QUANT, token, f"{sys.executable} ~/probe.py {probe_args(platform, desk)}; echo END-$((40+2))",
                   "END-42")  # fmt: skip
    results = check_probes(platform, out, since, desk["order"])
    print("\n".join(f"{k}: {v}" for k, v in results.items()))


def test_a_quant_in_jupyterlab_researches_on_their_own_cluster_and_every_probe_is_refused(
    platform, desk, playwright_api, tmp_path
):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    home = desk["person"].home
    cell = (
        # the research notebook's code cells, then the probe script, in this kernel
        "import nbformat; [get_ipython().run_cell(c.source) for c in "
        f"nbformat.read('{home}/research.ipynb', 4).cells if c.cell_type == 'code']; "
        f"get_ipython().run_line_magic('run', '{home}/probe.py {probe_args(platform, desk)}')"
    )
    seen: list[str] = []

    def loopback_only(route):
        seen.append(route.request.url)
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            route.abort("blockedbyclient")

    since = last_seq(platform)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    ctx = playwright_api.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 900},
    )  # fmt: skip
    ctx.set_default_timeout(60_000)
    try:
        ctx.route("**/*", loopback_only)
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        nb = open_new_notebook(page, platform.url, QUANT, PASSWORD).locator(".jp-Notebook .jp-Cell").first
        nb.locator(".cm-content").click()
        page.keyboard.insert_text(cell)
        out, prompt = nb.locator(".jp-OutputArea"), nb.locator(".jp-InputPrompt")
        deadline = time.monotonic() + 120
        while True:  # JupyterLab drops a run that comes before its kernel session is ready: run again
            nb.locator(".cm-content").click()
            page.keyboard.press("Control+Enter")
            try:
                page.wait_for_function(
                    "(p) => /[*\\d]/.test(p.innerText)", arg=prompt.element_handle(), timeout=10_000
                )
                break
            except PlaywrightTimeout:
                assert time.monotonic() < deadline, nb.inner_text()
        page.wait_for_function("(p) => /\\d/.test(p.innerText)", arg=prompt.element_handle(), timeout=300_000)
        text = out.inner_text()
        page.screenshot(path=str(tmp_path / "jupyterlab-boundary.png"), full_page=True)
    finally:
        ctx.close()
    assert (
        "Traceback" not in text and "Error" not in text.replace("PermissionError", "").split("PROBES")[0]
    ), text
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    assert lines[0].startswith(f"acting as {QUANT} with "), lines
    assert re.match(r"surface of 2016-02-10 status \w+ with \d+ quotes", lines[1]), lines
    # the quant's own cluster, from the Hub's dask-gateway, its workers running as the quant's account
    own = re.match(r"own cluster at (gateway://127\.0\.0\.1:(\d+)/\S+) as (\S+)$", lines[2])
    assert own and own.group(2) == platform.env["AITRADE_DASK_GATEWAY_PORT"], lines
    assert own.group(3) == desk["person"].name, lines
    refit = re.match(r"refit (\d+) expiries; worst rmse ([\d.]+) \(platform's ([\d.]+)\)", lines[3])
    assert refit and int(refit.group(1)) >= 3 and float(refit.group(2)) < 0.01, lines
    check_probes(platform, text, since, desk["order"])
    assert all(urlsplit(u).hostname in LOOPBACK for u in seen)
    if keep := os.environ.get("SCREENSHOTS_DIR"):  # as tests/test_dashboards.py: keep the page for the docs
        shutil.copy(tmp_path / "jupyterlab-boundary.png", Path(keep) / "jupyterlab-boundary.png")


# run by a person's account on the PostgreSQL platform: argv = the server's port, var/, the pid of a platform
# process (whose environment holds the database URL with its password)
PG_PROBE = r'''
import json, sys
port, var, pid = sys.argv[1:4]
results = {}


def probe(name, fn):
    try:
        results[name] = f"ALLOWED: {fn()!r}"[:300]
    except BaseException as e:  # noqa: BLE001
        results[name] = f"refused: {type(e).__name__}: {e}"[:300]


def connect(user, password=None):
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, dbname="aitrade", user=user, password=password,
                         connect_timeout=5) as c:
        return c.execute("select count(*) from orders").fetchone()


probe("PostgreSQL as the platform's role, no password", lambda: connect("aitrade_platform"))
probe("PostgreSQL as the platform's role, a guessed password", lambda: connect("aitrade_platform", "aitrade"))
probe("PostgreSQL as the superuser", lambda: connect("postgres"))
probe("the platform's environment (/proc)", lambda: open(f"/proc/{pid}/environ", "rb").read(64))
probe("read var/", lambda: __import__("os").listdir(var))
print("PROBES " + json.dumps(results))
'''  # fmt: skip


@pytest.fixture
def private_postgres(tmp_path_factory):
    "A PostgreSQL server of the test's own, on a free loopback port, with password (SCRAM) authentication only."
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if os.geteuid() != 0 or not bins or accounts.Account.of("postgres") is None:
        unavailable("the PostgreSQL boundary test", "it needs root and Debian's postgresql server binaries")
    pg = accounts.Account.of("postgres")
    d = Path(tempfile.mkdtemp(prefix="aitrade-pg-", dir="/var/tmp"))
    os.chown(d, pg.uid, pg.gid)
    port, password = free_port(), uuid.uuid4().hex
    (d / "pw").write_text(password)
    os.chown(d / "pw", pg.uid, pg.gid)
    as_pg = dict(user=pg.uid, group=pg.gid, extra_groups=[], capture_output=True, text=True, cwd=d)
    r = subprocess.run([str(bins[-1]), "-D", str(d / "data"), "-U", "postgres", "-A", "scram-sha-256",
                        f"--pwfile={d / 'pw'}"], **as_pg)  # fmt: skip
    assert r.returncode == 0, r.stderr
    ctl = str(bins[-1].parent / "pg_ctl")
    opts = f"-p {port} -k {d} -c listen_addresses=127.0.0.1"
    r = subprocess.run([ctl, "-D", str(d / "data"), "-o", opts, "-w", "-l", str(d / "log"), "start"], **as_pg)
    assert r.returncode == 0, r.stderr
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres",
                             autocommit=True) as c:  # fmt: skip
            c.execute(f"CREATE ROLE aitrade_platform LOGIN PASSWORD '{password}'")
            c.execute("CREATE DATABASE aitrade OWNER aitrade_platform")
        yield port, f"postgresql+psycopg://aitrade_platform:{password}@127.0.0.1:{port}/aitrade"
    finally:
        subprocess.run([ctl, "-D", str(d / "data"), "-m", "fast", "stop"], **as_pg)
        shutil.rmtree(d, ignore_errors=True)


def test_on_postgresql_the_database_refuses_a_person_and_its_password_stays_with_the_platform(
    private_postgres,
):
    "The production column: the platform's database password lives only in the platform's processes."
    port, url = private_postgres
    root = Path(tempfile.mkdtemp(prefix="aitrade-boundary-pg-", dir="/var/tmp"))
    os.chmod(root, 0o711)
    svc, person = f"aitq{SFX}", accounts.person_account_name("pia", f"aitq{SFX}-")
    (root / "settings.ini").write_text(f"[dask]\nscheduler_port = {free_port()}\ndashboard_port = 0\n")
    here = Path(accounts.__file__).resolve().parent
    closed = {p: stat.S_IMODE(p.stat().st_mode) for x in (Path(sys.executable), Path(sys.prefix), ROOT, here)
              for p in accounts.blocked_on_the_way(x)}  # fmt: skip
    env = platform_env(AITRADE_SETTINGS=str(root / "settings.ini"), AITRADE_ACCOUNTS__SERVICE_ACCOUNT=svc,
                       AITRADE_DATABASE_URL=url)  # fmt: skip
    log = open(root / "up.log", "w")  # noqa: SIM115 (closed below)
    up = subprocess.Popen(
        [sys.executable, "-c", "from aitrade.cli import main; main()", "up", "--no-hub", "--no-market-clock",
         "--no-scheduler", "--first-run", ""],
        env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "aitrade platform started" not in (root / "up.log").read_text():
            assert up.poll() is None and time.monotonic() < deadline, (root / "up.log").read_text()[-3000:]
            time.sleep(0.5)
        text = (root / "up.log").read_text()
        assert f"postgresql+psycopg://aitrade_platform:***@127.0.0.1:{port}/aitrade" in text, text
        desk = next(
            p for p in psutil.Process(up.pid).children(recursive=True) if "desk run" in " ".join(p.cmdline())
        )
        assert desk.username() == svc
        a = accounts.ensure_account(person, Path("/home") / person)
        (a.home / "probe.py").write_text(PG_PROBE)
        r = subprocess.run(
            [sys.executable, str(a.home / "probe.py"), str(port), str(root / "var"), str(desk.pid)],
            user=a.uid, group=a.gid, extra_groups=[], capture_output=True, text=True, cwd=a.home,
            env={"PATH": os.environ["PATH"], "HOME": str(a.home)}, timeout=120,
        )  # fmt: skip
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("PROBES ")), None)
        assert line, r.stderr
        results = json.loads(line.removeprefix("PROBES "))
        print("\n".join(f"{k}: {v}" for k, v in results.items()))
        assert len(results) == 5 and all(v.startswith("refused") for v in results.values()), results
        assert all("password authentication failed" in v or "no password supplied" in v
                   for k, v in results.items() if k.startswith("PostgreSQL")), results  # fmt: skip
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            up.wait(60)
        log.close()
        for name in (svc, person):
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        time.sleep(0.5)
        for name in (svc, person):
            accounts.remove_account(name)
        for d, mode in closed.items():
            os.chmod(d, mode)
        shutil.rmtree(root, ignore_errors=True)
