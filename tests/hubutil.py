"""Start a real JupyterHub (with its real proxy) on free loopback ports for the tests, and talk to it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
CHP = ROOT / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    "A JupyterHub process for one test module, in its own project folder."

    def __init__(self, root: Path, extra_ini: str = "", env: dict | None = None):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (root / "settings.ini").write_text(f"[hub]\nport = {self.port}\n{extra_ini}")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AITRADE_") or k.startswith("AITRADE_TEST")
        }
        self.env |= {
            "AITRADE_SETTINGS": str(root / "settings.ini"),
            "AITRADE_HUB_PROXY_API_PORT": str(free_port()),
            "AITRADE_HUB_INTERNAL_PORT": str(free_port()),
            **(env or {}),
        }
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
                raise RuntimeError(f"JupyterHub exited: {(self.root / 'hub.log').read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/hub/api/", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise RuntimeError(
            f"JupyterHub did not answer in {timeout}s: {(self.root / 'hub.log').read_text()[-3000:]}"
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "log", None):
            self.log.close()

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
        import json

        return json.loads(out.stdout)
