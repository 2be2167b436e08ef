"""The research client (aitrade.client) against the real API app in process (SQLite and PostgreSQL): each read
function parses the API's real answers, writes go through the API's checks, and a person gets exactly their
scopes. In a quant's JupyterLab behind the Hub it is tested in tests/test_browser.py."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from seed import fresh_quote

from aitrade import api, store
from aitrade.auth import ROLES
from aitrade.client import Client, Refused

P = "/services/aitrade-api"
TOKENS = {f"tok-{r}": api.hub_model(f"u-{r}", ROLES[r]) for r in ROLES}


@pytest.fixture
def app_transport(db, isolated_settings):
    (isolated_settings.parent / "jobs").mkdir()
    (isolated_settings.parent / "jobs" / "pipelines.yaml").write_text("pipelines: {}\n")
    app = api.create_app(api.StaticResolver(TOKENS), prefix=P)
    yield app
    app.state.fanout.close()


def client(app, role: str) -> Client:
    "A Client whose HTTP session is Starlette's TestClient (an httpx.Client) on the real app, in process."
    return Client(f"tok-{role}", base="http://testserver" + P, session=TestClient(app))


def test_read_functions_parse_the_real_answers(app_transport):
    fresh_quote()
    now = store.utcnow()
    quant, risk = client(app_transport, "quant"), client(app_transport, "risk")
    me = quant.whoami()
    assert (me["name"], set(me["rights"])) == ("u-quant", set(ROLES["quant"]))
    chain = quant.chain("SPX", now.date())
    assert chain[["strike", "bid", "ask"]].values.tolist() == [[100.0, 4.9, 5.1]]
    assert chain.attrs["symbol"] == "SPX" and chain.attrs["date"] == now.date().isoformat()
    # a write through the same client: the API checks the scope, audits, and the read shows it
    risk.call("PUT", "/risk/limits/portfolio/vega", json={"value": 5e4, "reason": "research test"})
    assert risk.limits()[["metric", "max_abs", "updated_by"]].values.tolist() == [["vega", 5e4, "u-risk"]]
    report = risk.risk()
    assert report["positions"] == 0 and report["greeks"].empty and len(report["scenarios"]) == 21
    assert risk.positions().empty and client(app_transport, "ops").runs().empty
    assert quant.models().empty
    with pytest.raises(Refused) as e:
        quant.surface("SPX")
    assert (e.value.status, e.value.error, e.value.detail) == (
        404,
        "not_found",
        "surface: no fit stored for SPX",
    )


def test_a_person_gets_exactly_their_scopes(app_transport):
    auditor = client(app_transport, "auditor")
    with pytest.raises(Refused) as e:
        auditor.chain("SPX", "2024-01-02")
    assert (e.value.status, e.value.error) == (403, "missing_scope")
    with pytest.raises(Refused) as e:
        client(app_transport, "quant").call(
            "PUT", "/risk/limits/portfolio/vega", json={"value": 1, "reason": "x"}
        )
    assert e.value.status == 403
    assert auditor.runs().empty  # auditors read runs


def test_a_person_acts_through_the_client_as_themselves(app_transport, monkeypatch):
    "The state-changing calls: the API's rights, four eyes, the kill switch and the audit log all apply."
    from aitrade import audit, config

    monkeypatch.setenv("AITRADE_RISK__APPROVAL_NOTIONAL", "1")  # every order waits for a second person
    config.reload_settings()
    expiry = fresh_quote()
    trader, risk, quant = (client(app_transport, r) for r in ("trader", "risk", "quant"))
    o = trader.submit_order(
        "SPX", "buy", 10, client_order_id="c-1", option_type="C", expiry=expiry, strike=100.0
    )
    assert (o["state"], o["submitted_by"]) == ("pending_approval", "u-trader")
    assert trader.submit_order("SPX", "buy", 10, client_order_id="c-1", option_type="C", expiry=expiry,
                               strike=100.0)["id"] == o["id"]  # fmt: skip
    with pytest.raises(Refused) as e:  # never one's own order
        trader.approve(o["id"], "mine")
    assert e.value.status in (403, 409) and "four eyes" in e.value.detail
    with pytest.raises(Refused) as e:  # a quant holds no orders:approve
        quant.approve(o["id"], "looks fine")
    assert (e.value.status, e.value.error) == (403, "missing_scope")
    assert risk.approve(o["id"], "checked")["approved_by"] == "u-risk"
    o2 = trader.submit_order("SPX", "sell", 5, option_type="C", expiry=expiry, strike=100.0)
    assert risk.reject(o2["id"], "too late")["state"] == "rejected"
    assert risk.kill_switch(True, "drill")["engaged"] is True
    with pytest.raises(Refused) as e:
        trader.submit_order("SPX", "buy", 1, option_type="C", expiry=expiry, strike=100.0)
    assert "kill switch" in e.value.detail
    assert risk.kill_switch(False, "drill over")["engaged"] is False
    assert risk.set_limit("portfolio", "delta", 1e3, "research")["max_abs"] == 1e3
    with store.session_scope() as s:
        actions = {(r.actor, r.action) for r in audit.query(s, limit=100)}
    assert {("u-trader", "order.submit"), ("u-risk", "order.approved"), ("u-risk", "limit.set")} <= actions, (
        actions
    )
