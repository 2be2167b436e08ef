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
