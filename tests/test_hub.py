"""The JupyterHub front door, for real: a Hub process with its proxy, local accounts (NativeAuthenticator),
roles granted to groups, narrowed tokens, lockout, and every event in the audit log."""

import json
import time

import pytest
from hubutil import Hub

from aitrade.auth import RIGHTS, ROLES
from aitrade.hub import SERVER_ROLES

LOCK_S = 4
STRONG = "correct-horse-battery-staple-7"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = Hub(tmp_path_factory.mktemp("hub"), extra_ini=f"lockout_attempts = 3\nlockout_seconds = {LOCK_S}\n")
    h.start_as_admin()
    yield h
    h.stop()


def signup(hub, user, password):
    s = __import__("requests").Session()
    s.get(hub.url + "/hub/signup")
    return s.post(
        hub.url + "/hub/signup",
        data={
            "username": user,
            "signup_password": password,
            "signup_password_confirmation": password,
            "_xsrf": s.cookies.get("_xsrf"),
        },
    )


def approve(hub, user):
    s, _ = hub.login("admin", hub.admin_password)
    r = s.get(hub.url + f"/hub/authorize/{user}", allow_redirects=False)
    assert r.status_code == 302, r.status_code


def test_first_admin_logs_in_and_is_audited(hub):
    _, r = hub.login("admin", "not-the-password")
    assert r.status_code == 403
    actions = [(a["actor"], a["action"], a["target"]) for a in hub.audit()]
    assert ("system:make-run", "hub.admin.create", "user:admin") in actions
    assert ("admin", "hub.login.failed", "user:admin") in actions
    assert ("admin", "hub.login", "user:admin") in actions
    assert ("admin", "hub.token.create", "user:admin") in actions
    assert (hub.root / "var" / "admin-password").stat().st_mode & 0o777 == 0o600


def test_password_policy_and_admin_approval(hub):
    r = signup(hub, "shorty", "Ab1!short")  # shorter than min_password_length (12)
    assert "Something went wrong" in r.text
    r = signup(hub, "commoner", "1qaz2wsx3edc")  # 12 characters, but on the common-password list
    assert "Something went wrong" in r.text
    r = signup(hub, "newbie", STRONG)
    assert "Something went wrong" not in r.text
    _, r = hub.login("newbie", STRONG)
    assert r.status_code == 403, "a sign-up must not log in before an admin approves it"
    approve(hub, "newbie")
    s, r = hub.login("newbie", STRONG)
    assert r.status_code == 302
    assert any(a["action"] == "hub.signup.approve" and a["target"] == "user:newbie" for a in hub.audit())
    s.get(hub.url + "/hub/logout", timeout=30)
    assert (
        s.get(hub.url + "/hub/api/user", headers={"X-XSRFToken": s.cookies.get("_xsrf") or ""}).status_code
        == 403
    )
    acts = [a["action"] for a in hub.audit() if a["target"] == "user:newbie"]
    assert acts[-2:] == ["hub.login", "hub.logout"], acts


def test_lockout_locks_refuses_right_password_and_expires(hub):
    signup(hub, "lockme", STRONG)
    approve(hub, "lockme")
    for _ in range(3):
        assert hub.login("lockme", "wrong-password-123")[1].status_code == 403
    assert hub.login("lockme", STRONG)[1].status_code == 403, "right password must fail while locked"
    time.sleep(LOCK_S + 1.5)
    assert hub.login("lockme", STRONG)[1].status_code == 302, "the lock must expire"
    acts = [a["action"] for a in hub.audit() if a["target"] == "user:lockme"]
    assert acts.count("hub.login.failed") == 3
    assert "hub.lockout" in acts and "hub.login.refused_locked" in acts and acts[-1] == "hub.login"


def test_a_lockout_survives_a_hub_restart(tmp_path):
    "NativeAuthenticator alone counts failures in the Hub's memory: a restart would unlock every account."
    h = Hub(tmp_path, extra_ini="lockout_attempts = 2\nlockout_seconds = 600\n")
    try:
        h.start_as_admin()
        signup(h, "keeplocked", STRONG)
        approve(h, "keeplocked")
        for _ in range(2):
            assert h.login("keeplocked", "wrong-password-123")[1].status_code == 403
        f = h.root / "var" / "hub" / "login-attempts.json"
        assert json.loads(f.read_text())["keeplocked"]["count"] == 2 and f.stat().st_mode & 0o777 == 0o600
        h.stop()
        h.start()
        assert h.login("keeplocked", STRONG)[1].status_code == 403, "still locked after the restart"
        acts = [a["action"] for a in h.audit() if a["target"] == "user:keeplocked"]
        assert acts[-1] == "hub.login.refused_locked", acts
        assert h.login("admin", h.admin_password)[1].status_code == 302  # others are not affected
    finally:
        h.stop()


@pytest.mark.parametrize("role", sorted(ROLES))
def test_role_gets_exactly_its_scopes(hub, role):
    token = hub.make_user(f"u-{role}", role)
    me = hub.api("GET", "/user", token).json()
    granted = {s.removeprefix("custom:aitrade:") for s in me["scopes"] if s.startswith("custom:aitrade:")}
    assert granted == set(ROLES[role]), f"{role}: unexpected {granted ^ set(ROLES[role])}"
    # a notebook server only for admin, quant and ops
    r = hub.api("POST", f"/users/u-{role}/server", token)
    if role in SERVER_ROLES:
        assert r.status_code in (201, 202), r.text
        hub.api("DELETE", f"/users/u-{role}/server", token)
    else:
        assert r.status_code == 403, f"{role} must not get a notebook server: {r.status_code}"
    # admin pages of the Hub: admins only
    assert (hub.api("GET", "/users", token).status_code == 200) == (role == "admin")
    acts = [(a["action"], a["target"]) for a in hub.audit()]
    assert ("hub.group.add_users", f"group:{role}") in acts


def test_token_narrower_than_owner_gets_only_its_scopes(hub):
    hub.make_user("rita", "risk")
    r = hub.api(
        "POST",
        "/users/rita/tokens",
        hub.admin_token,
        json={"note": "read-only bot", "expires_in": 60, "scopes": ["custom:aitrade:risk:read"]},
    )
    assert r.status_code == 201, r.text
    scopes = hub.api("GET", "/user", r.json()["token"]).json()["scopes"]
    assert {s for s in scopes if s.startswith("custom:")} == {"custom:aitrade:risk:read"}
    r = hub.api(
        "POST",
        "/users/rita/tokens",
        hub.admin_token,
        json={"note": "too much", "scopes": ["custom:aitrade:orders:submit"]},
    )
    assert r.status_code == 400 and "orders:submit" in r.text, "a token cannot hold a scope its owner lacks"


def test_expired_token_is_refused(hub):
    hub.make_user("tom", "trader")
    r = hub.api("POST", "/users/tom/tokens", hub.admin_token, json={"note": "short", "expires_in": 1})
    tok = r.json()["token"]
    time.sleep(2.5)
    assert hub.api("GET", "/user", tok).status_code == 403


def test_every_right_is_a_declared_scope(hub):
    r = hub.api("GET", "/user", hub.admin_token).json()
    assert {f"custom:aitrade:{x}" for x in RIGHTS} <= set(r["scopes"])
