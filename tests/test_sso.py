"""SSO end to end: a real JupyterHub with GenericOAuthenticator against a real OpenID Connect provider
(tests/oidc/provider.mjs, the npm package `oidc-provider`) on 127.0.0.1, driven with `requests`.

The identity provider's `groups` claim becomes Hub groups (`manage_groups`), so IdP groups decide the aitrade
roles; a group removed at the provider removes the role at the next login; Hub logout clears the session and
follows `logout_redirect_url` to the provider's end_session endpoint. Logins, refusals, group syncs and logouts
land in the audit log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from hubutil import ROOT, Hub, free_port, unavailable

from aitrade.auth import ROLES
from aitrade.hub import SERVER_SCOPES

PROVIDER = ROOT / "tests" / "oidc" / "provider.mjs"
OIDC_PROVIDER_PKG = ROOT / "hub" / "node_modules" / "oidc-provider" / "package.json"
CLIENT_ID = "aitrade-hub"
PASSWORDS = {"alice": "alice-pw-7f3k", "bob": "bob-pw-2m9q", "carol": "carol-pw-5x1z"}


def rights(scopes) -> set[str]:
    return {s.removeprefix("custom:aitrade:") for s in scopes if s.startswith("custom:aitrade:")}


class Forms(HTMLParser):
    "The forms of a page: action, method and the named inputs' values."

    def __init__(self, html: str):
        super().__init__()
        self.forms: list[dict] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get"), "data": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["data"][a["name"]] = a.get("value", "")


def submit(s: requests.Session, r: requests.Response, index: int = 0, **fields) -> requests.Response:
    "Submit the page's form number `index` with its inputs plus `fields`, following redirects."
    forms = Forms(r.text).forms
    assert len(forms) > index, f"no form {index} at {r.url}: {r.text[:500]}"
    f = forms[index]
    return s.request(f["method"].upper(), urljoin(r.url, f["action"]), data=f["data"] | fields, timeout=30)


class Provider:
    "The OIDC provider process; accounts live in a JSON file that it reads at every sign-in and claims request."

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.secret = os.urandom(16).hex()
        self.file = root / "oidc.json"
        self.conf = {
            "port": self.port,
            "client": {"client_id": CLIENT_ID, "client_secret": self.secret, "redirect_uris": []},
            "accounts": {},
        }

    def set_account(self, name: str, groups: list[str]) -> None:
        self.conf["accounts"][name] = {"password": PASSWORDS[name], "groups": groups}
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.conf))
        tmp.replace(self.file)  # atomic: the provider never reads half a file

    def start(self, redirect_uri: str, timeout: float = 30) -> Provider:
        self.conf["client"]["redirect_uris"] = [redirect_uri]
        self.set_account("alice", [])
        self.log = open(self.root / "oidc.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            ["node", str(PROVIDER), str(self.file)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the OIDC provider exited: {(self.root / 'oidc.log').read_text()}")
            try:
                r = requests.get(self.issuer + "/.well-known/openid-configuration", timeout=2)
                if r.status_code == 200:
                    self.discovery = r.json()
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the OIDC provider did not answer in {timeout}s")

    def stop(self) -> None:
        if getattr(self, "proc", None) is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def sso(tmp_path_factory):
    if shutil.which("node") is None:
        unavailable("the SSO test", "node (Node.js >= 20) is not on PATH")
    if not OIDC_PROVIDER_PKG.exists():
        unavailable(
            "the SSO test",
            f"{OIDC_PROVIDER_PKG.parent} is missing: run `make install-dev` (npm ci --prefix hub)",
        )
    root = tmp_path_factory.mktemp("sso")
    idp = Provider(root)
    hub = Hub(
        root,
        extra_ini=f"authenticator = oidc\noidc_issuer = {idp.issuer}\noidc_client_id = {CLIENT_ID}\n",
        env={"AITRADE_HUB__OIDC_CLIENT_SECRET": idp.secret},
    )
    try:
        idp.start(
            redirect_uri=hub.url + "/hub/oauth_callback"
        )  # the Hub reads its discovery document at start
        hub.prepare()
        hub.start()
        yield hub, idp
    finally:
        hub.stop()
        idp.stop()


def sso_login(hub: Hub, idp: Provider, user: str, s: requests.Session | None = None):
    """Log in through /hub/oauth_login → provider sign-in → consent → /hub/oauth_callback.

    Returns the session, the final response (with `trail`: the paths of every request on the way) and the provider
    prompts that were shown."""
    s = s or requests.Session()
    r = s.get(hub.url + "/hub/oauth_login", params={"next": "/hub/home"}, timeout=30)
    prompts, trail = [], [urlsplit(h.url).path for h in r.history]
    for _ in range(4):
        if not r.url.startswith(idp.issuer + "/interaction/"):
            break
        if 'name="password"' in r.text:
            prompts.append("login")
            r = submit(s, r, login=user, password=PASSWORDS[user])
        elif "<h1>Authorize</h1>" in r.text:
            prompts.append("consent")
            assert "groups" in r.text, "the Hub must ask for the groups scope"
            r = submit(s, r)  # form 0: Continue
        else:
            raise AssertionError(f"unexpected provider page {r.url}: {r.text[:500]}")
        trail += [urlsplit(h.url).path for h in r.history]
    r.trail = trail + [urlsplit(r.url).path]
    return s, r, prompts


def token_for(hub: Hub, s: requests.Session, user: str) -> str:
    r = s.post(
        hub.url + f"/hub/api/users/{user}/tokens",
        headers={"X-XSRFToken": s.cookies.get("_xsrf")},
        json={"note": "sso test", "expires_in": 600},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return r.json()["token"]


def audit_of(hub: Hub, user: str) -> list[dict]:
    return [a for a in hub.audit() if a["target"] == f"user:{user}"]


def test_sso_login_turns_idp_groups_into_roles(sso):
    hub, idp = sso
    idp.set_account("alice", ["quant", "risk"])
    s, r, prompts = sso_login(hub, idp, "alice")
    assert r.status_code == 200 and urlsplit(r.url).path == "/hub/home", (r.url, r.text[:500])
    assert prompts == ["login", "consent"]
    assert r.trail[:2] == ["/hub/oauth_login", "/auth"], r.trail
    assert r.trail[-2:] == ["/hub/oauth_callback", "/hub/home"], r.trail
    me = hub.api("GET", "/user", token_for(hub, s, "alice")).json()
    assert me["name"] == "alice"
    assert sorted(me["groups"]) == ["quant", "risk"]
    assert rights(me["scopes"]) == set(ROLES["quant"] | ROLES["risk"])
    assert "custom:aitrade:limits:write" in me["scopes"]  # risk
    assert "custom:aitrade:models:promote" in me["scopes"]  # quant
    assert not me["admin"]
    logins = [a for a in audit_of(hub, "alice") if a["action"] == "hub.login"]
    assert logins and logins[-1]["actor"] == "alice"
    assert logins[-1]["after"] == {"authenticator": "GenericOAuthenticator", "groups": ["quant", "risk"]}
    # the provider's name and email claims are held as personal data, encrypted under alice's own key
    code = (
        "import json; from aitrade import privacy, store\n"
        "with store.session_scope() as s:\n"
        "    print(json.dumps(privacy.export(s, 'system:test', 'alice')['personal_data']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=hub.env, cwd=hub.root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    held = {p["category"]: (p["value"], p["source"]) for p in json.loads(out.stdout)}
    assert held == {"profile.name": ("alice", "oidc"), "contact.email": ("alice@example.test", "oidc")}
    recorded = [a for a in hub.audit("privacy.") if a["action"] == "privacy.record"]
    assert len(recorded) == 2 and all("alice@example.test" not in json.dumps(a) for a in recorded)


def test_manager_gets_read_only_rights_and_no_server(sso):
    hub, idp = sso
    idp.set_account("bob", ["manager"])
    s, r, _ = sso_login(hub, idp, "bob")
    assert urlsplit(r.url).path == "/hub/home", r.url
    tok = token_for(hub, s, "bob")
    me = hub.api("GET", "/user", tok).json()
    assert me["groups"] == ["manager"]
    assert rights(me["scopes"]) == set(ROLES["manager"])
    assert "custom:aitrade:limits:write" not in me["scopes"]
    assert not set(SERVER_SCOPES) & set(me["scopes"])
    assert hub.api("POST", "/users/bob/server", tok).status_code == 403, "a manager must not get a server"
    assert hub.api("GET", "/users", tok).status_code == 403


def test_wrong_password_at_the_provider_gives_no_hub_session(sso):
    hub, idp = sso
    idp.set_account("carol", ["visitors"])
    s = requests.Session()
    r = s.get(hub.url + "/hub/oauth_login", params={"next": "/hub/home"}, timeout=30)
    assert r.url.startswith(idp.issuer + "/interaction/") and 'name="password"' in r.text
    r = submit(s, r, login="carol", password="not-her-password")
    assert r.status_code == 401 and "Invalid login or password" in r.text
    assert s.get(hub.url + "/hub/api/user", timeout=30).status_code == 403


def test_user_without_an_aitrade_group_is_refused_and_audited(sso):
    hub, idp = sso
    idp.set_account("carol", ["visitors"])
    _, r, prompts = sso_login(hub, idp, "carol")
    assert prompts == ["login", "consent"]
    assert r.status_code == 403 and urlsplit(r.url).path == "/hub/oauth_callback", (r.status_code, r.url)
    acts = audit_of(hub, "carol")
    assert [a["action"] for a in acts] == ["hub.login.denied"]
    assert acts[0]["after"] == {"groups": ["visitors"]}


def test_group_removed_at_the_provider_removes_the_role_at_next_login(sso):
    hub, idp = sso
    idp.set_account("alice", ["quant", "risk"])
    s, r, _ = sso_login(hub, idp, "alice")
    old_token = token_for(hub, s, "alice")
    assert "custom:aitrade:limits:write" in hub.api("GET", "/user", old_token).json()["scopes"]

    idp.set_account("alice", ["quant"])  # the IdP admin takes alice out of `risk`
    # same browser: the provider's session is still alive, so the next login needs no password and no consent
    s, r, prompts = sso_login(hub, idp, "alice", s)
    assert prompts == [] and urlsplit(r.url).path == "/hub/home", (prompts, r.url)
    me = hub.api("GET", "/user", token_for(hub, s, "alice")).json()
    assert me["groups"] == ["quant"]
    assert rights(me["scopes"]) == set(ROLES["quant"])
    assert "custom:aitrade:limits:write" not in me["scopes"]
    # a token issued before the change follows its owner's roles: the right is gone from it as well
    old = hub.api("GET", "/user", old_token).json()["scopes"]
    assert "custom:aitrade:limits:write" not in old and "custom:aitrade:models:promote" in old
    syncs = [a for a in audit_of(hub, "alice") if a["action"] == "hub.groups.sync"]
    assert syncs, "the group change must be audited"
    assert syncs[-1]["before"] == {"groups": ["quant", "risk"]}
    assert syncs[-1]["after"] == {"groups": ["quant"]}

    idp.set_account("alice", ["risk", "quant"])  # and back: the role returns at the next login
    s, r, _ = sso_login(hub, idp, "alice", s)
    assert "custom:aitrade:limits:write" in hub.api("GET", "/user", old_token).json()["scopes"]
    syncs = [a for a in audit_of(hub, "alice") if a["action"] == "hub.groups.sync"]
    assert syncs[-1]["before"] == {"groups": ["quant"]} and syncs[-1]["after"] == {
        "groups": ["quant", "risk"]
    }


def test_logout_clears_the_hub_session_and_ends_the_provider_session(sso):
    hub, idp = sso
    idp.set_account("alice", ["quant"])
    s, r, _ = sso_login(hub, idp, "alice")
    assert s.get(hub.url + "/hub/home", allow_redirects=False, timeout=30).status_code == 200

    r = s.get(hub.url + "/hub/logout", timeout=30)
    assert r.history and urlsplit(r.history[0].url).path == "/hub/logout"
    end_session = idp.discovery["end_session_endpoint"]
    assert r.history[0].headers["Location"] == end_session, "logout must go on to the provider's end_session"
    assert r.url.startswith(end_session) and r.status_code == 200
    # the Hub session is gone
    home = s.get(hub.url + "/hub/home", allow_redirects=False, timeout=30)
    assert home.status_code == 302 and "/hub/login" in home.headers["Location"]
    assert s.get(hub.url + "/hub/api/user", timeout=30).status_code == 403
    # confirm the sign-out at the provider (its form carries the provider's xsrf token)
    r = submit(s, r, logout="yes")
    assert r.status_code == 200 and 'id="signed-out"' in r.text, r.text[:500]
    # the provider session is gone too: the next SSO login asks for the password again
    s, r, prompts = sso_login(hub, idp, "alice", s)
    assert prompts[:1] == ["login"] and urlsplit(r.url).path == "/hub/home", (prompts, r.url)

    acts = [a["action"] for a in audit_of(hub, "alice")]
    i = acts.index("hub.logout")
    assert "hub.login" in acts[:i] and "hub.login" in acts[i + 1 :]
    logout = next(a for a in audit_of(hub, "alice") if a["action"] == "hub.logout")
    assert logout["actor"] == "alice" and logout["after"] == {"redirect": end_session}
