"""The platform's processes for the tests: a real JupyterHub (with its real proxy) on free loopback ports, the
`aitrade` CLI in a subprocess, and the rule for a part that is missing (skip locally, fail under CI=true)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

# the browser tests drive Debian's chromium (never a downloaded browser), headless, with every request off loopback blocked.
# Its headless shell (package chromium-headless-shell), the build Playwright itself runs headless: the full browser's
# "new" headless mode also builds the browser's own UI for every tab (in Chromium 156 here, a WebUI omnibox popup of ~200 files),
# which on 2 cores adds 0.3-0.5 s to each page opened and CPU to every open tab, in the peer's pages as in ours.
CHROMIUM = Path("/usr/bin/chromium-headless-shell")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

ROOT = Path(__file__).resolve().parents[1]
CHP = ROOT / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str, why: str):
    "A part the test needs is missing: skip with the reason, or fail under CI=true (CI never skips a real part)."
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but {why}", pytrace=False)
    pytest.skip(f"{what}: {why}")


def platform_env(**overrides: str) -> dict:
    """This process's environment without the developer's AITRADE_* settings (the test ones stay), plus `overrides`.

    Single-account mode unless overridden: the suite's platforms live in pytest's private tmp folders, which no
    other account may enter (tests/test_boundary.py runs the real split of accounts). No pre-heated Voila kernel
    unless overridden (tests/test_voila.py keeps the default): each would run the summary notebook at every
    platform's start, ~6 s of CPU for a page that most tests never open."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AITRADE_") or k.startswith("AITRADE_TEST_")
    }
    # each platform's services serve /metrics and /readyz on ports of its own: two test modules run at once
    ports = {"AITRADE_TELEMETRY__METRICS_PORT": str(free_port_block(6))}
    quiet = {"AITRADE_ACCOUNTS__SERVICE_ACCOUNT": "", "AITRADE_HUB__VOILA_KERNELS": "0"}
    return env | quiet | ports | overrides


def run_cli(*args, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    "Run `aitrade ARGS...` in a fresh process, as an operator would type it; text stdout and stderr."
    return subprocess.run(
        [sys.executable, "-c", "from aitrade.cli import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
        env=platform_env(**(env or {})),
        cwd=cwd,
    )


def run_cli_here(*args) -> subprocess.CompletedProcess:
    "`run_cli` on this test's project: its settings file and its database (the test's `db` fixture)."
    from aitrade import config

    return run_cli(
        *args,
        env={
            "AITRADE_SETTINGS": os.environ["AITRADE_SETTINGS"],
            "AITRADE_DATABASE__URL": config.get_settings().database_url,
        },
    )


def _port_slice() -> range:
    """This process's ports for the servers its tests start: below the kernel's ephemeral range, a slice per xdist
    worker. A port found free and released is then not handed, before its server binds it, to a socket that another
    process binds to port 0 (a Jupyter kernel's ZeroMQ ports, seen taking a test Hub's API port); and two workers
    never pick the same port."""
    lo = 12000
    try:
        hi = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        hi = 32768
    hi = max(hi, lo + 2000)
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), worker + 1)
    size = (hi - lo) // workers
    return range(lo + worker * size, lo + (worker + 1) * size)


_PORTS = _port_slice()
# the next port's index in the slice; a random start, so a rerun does not find its last ports in TIME_WAIT
_next_port = [random.randrange(len(_PORTS))]


def free_port() -> int:
    "A port of this process's slice (`_port_slice`), free on 127.0.0.1 now and not handed out before by this process."
    for _ in range(len(_PORTS)):
        port = _PORTS[_next_port[0] % len(_PORTS)]
        _next_port[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS}")


def free_port_block(n: int) -> int:
    "A first port p of this process's slice with p..p+n-1 all free on 127.0.0.1 now, none handed out before by it."
    for _ in range(len(_PORTS)):
        start = _next_port[0] % len(_PORTS)
        if start + n > len(_PORTS):  # the block would run off the slice's end: wrap
            _next_port[0] += len(_PORTS) - start
            continue
        _next_port[0] += n
        socks = []
        try:
            for port in _PORTS[start : start + n]:
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return _PORTS[start]
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no block of {n} free ports in {_PORTS}")


class Hub:
    "A JupyterHub process for one test module, in its own project folder."

    def __init__(self, root: Path, extra_ini: str = "", env: dict | None = None):
        self.root = root
        # its services' default ports are its own + 1..7 (aitrade.hub.SERVICE_PORTS): the block keeps them free
        self.port = free_port_block(8)
        self.url = f"http://127.0.0.1:{self.port}"
        (root / "settings.ini").write_text(f"[hub]\nport = {self.port}\n{extra_ini}")
        self.env = platform_env(
            AITRADE_SETTINGS=str(root / "settings.ini"),
            AITRADE_HUB_PROXY_API_PORT=str(free_port()),
            AITRADE_HUB_INTERNAL_PORT=str(free_port()),
            AITRADE_PLATFORM_ID=str(
                root.resolve()
            ),  # every process it starts carries it (aitrade.platform.members)
            **(env or {}),
        )
        self.proc = None

    def prepare(self) -> str | None:
        "Migrate the platform database and create the first admin; return the admin password."
        code = "from aitrade import hub, store; store.upgrade(); print(hub.ensure_admin()[2])"
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, cwd=self.root, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def start(self, timeout: float = 90) -> Hub:
        if not CHP.exists():
            raise RuntimeError(f"{CHP} is missing: run `make install-dev` (npm ci --prefix hub)")
        self.log = open(self.root / "hub.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(ROOT / "hub" / "jupyterhub_config.py")],
            env=self.env,
            cwd=self.root,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()  # what it started before it failed (its proxy, its services) goes with it
                raise RuntimeError(f"JupyterHub exited: {(self.root / 'hub.log').read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/hub/api/", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"JupyterHub did not answer in {timeout}s: {(self.root / 'hub.log').read_text()[-3000:]}"
        )

    def stop(self) -> None:
        "Stop the Hub and everything it started (proxy, services, servers): none outlives the test."
        if self.proc and self.proc.poll() is None:
            try:
                tree = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                tree = []
            self.proc.terminate()  # the Hub stops its managed services and the proxy itself
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            for p in tree:  # what it could not stop in time (a service stuck in shutdown)
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.terminate()
            _, alive = psutil.wait_procs(tree, timeout=5)
            for p in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
        # and what outlived a Hub that exited on its own (its children, orphaned): every process carrying its id
        from aitrade.platform import sweep

        sweep(self.env["AITRADE_PLATFORM_ID"], grace=5)
        if getattr(self, "log", None):
            self.log.close()

    def start_as_admin(self, note: str = "tests", timeout: float = 90) -> Hub:
        "Prepare, start, log the first admin in and keep an admin API token (`admin_password`, `admin_token`)."
        self.admin_password = self.prepare()
        self.start(timeout)
        s, r = self.login("admin", self.admin_password)
        assert r.status_code == 302, r.text
        tok = s.post(
            self.url + "/hub/api/users/admin/tokens",
            headers={"X-XSRFToken": s.cookies.get("_xsrf")},
            json={"note": note, "expires_in": 3600},
        )
        assert tok.status_code == 201, tok.text
        self.admin_token = tok.json()["token"]
        return self

    def make_user(self, name: str, group: str, scopes: list[str] | None = None, note: str = "tests") -> str:
        "Create `name` (if new) in `group` and return a 15-minute API token of theirs (narrowed to `scopes`)."
        assert self.api("POST", f"/users/{name}", self.admin_token).status_code in (201, 409)
        r = self.api("POST", f"/groups/{group}/users", self.admin_token, json={"users": [name]})
        assert r.status_code == 200, r.text
        body = {"note": note, "expires_in": 900} | ({"scopes": scopes} if scopes else {})
        r = self.api("POST", f"/users/{name}/tokens", self.admin_token, json=body)
        assert r.status_code == 201, r.text
        return r.json()["token"]

    def sign_up(self, name: str, password: str, group: str, note: str = "tests") -> None:
        "A local account: NativeAuthenticator's sign-up with `password`, approved by the admin, in `group`."
        su = requests.Session()
        su.get(self.url + "/hub/signup", timeout=30)
        r = su.post(
            self.url + "/hub/signup",
            data={
                "username": name,
                "signup_password": password,
                "signup_password_confirmation": password,
                "_xsrf": su.cookies.get("_xsrf"),
            },
            timeout=30,
        )
        assert r.status_code == 200 and "Something went wrong" not in r.text, r.text[:500]
        s, _ = self.login("admin", self.admin_password)
        assert s.get(self.url + f"/hub/authorize/{name}", allow_redirects=False).status_code == 302
        self.make_user(name, group, note=note)

    def login(self, user: str, password: str) -> tuple[requests.Session, requests.Response]:
        s = requests.Session()
        s.get(self.url + "/hub/login", timeout=10)
        r = s.post(
            self.url + "/hub/login",
            data={"username": user, "password": password, "_xsrf": s.cookies.get("_xsrf")},
            allow_redirects=False,
            timeout=30,
        )
        return s, r

    def api(self, method: str, path: str, token: str, **kw) -> requests.Response:
        return requests.request(
            method,
            self.url + "/hub/api" + path,
            headers={"Authorization": f"token {token}"},
            timeout=30,
            **kw,
        )

    def audit(self, action_prefix: str = "hub.") -> list[dict]:
        code = (
            "import json; from aitrade import audit, store\n"
            "with store.session_scope() as s:\n"
            f"    print(json.dumps([r.to_dict() for r in audit.query(s, action={action_prefix!r}, limit=1000)][::-1]))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, cwd=self.root, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


def open_new_notebook(page, hub_url: str, user: str, password: str):
    """Log `user` in through the Hub's form on `page`, wait for their JupyterLab (the Hub spawns the server on the
    way), open a new notebook and wait until its kernel is connected and idle; the notebook panel."""
    import re

    page.goto(hub_url + "/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(re.compile(rf"/user/{user}/lab"), timeout=180_000)
    page.locator(".jp-LauncherCard[data-category='Notebook']").first.click(timeout=180_000)
    # the status bar says "Python 3 (ipykernel) | Idle" once the kernel is connected
    page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\|\s*Idle")).first.wait_for(timeout=180_000)
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
