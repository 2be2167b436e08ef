"""The trading API (aitrade.api): in process with an injected scope resolver (TestClient, SQLite and PostgreSQL),
and as a real JupyterHub service behind the Hub's proxy (one Hub for this module): Hub tokens, narrowed tokens,
the Hub OAuth browser login, the RBAC matrix of every role x every endpoint, the WebSocket stream, and the audit
correlation id."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import nbformat
import psutil
import pytest
import requests
from fastapi.testclient import TestClient
from hubutil import Hub, free_port
from seed import fresh_quote
from starlette.testclient import WebSocketDenialResponse

from aitrade import api, archive, audit, bus, execution, store
from aitrade.auth import RIGHTS, ROLES

P = "/services/aitrade-api"
PIPELINES = """pipelines:
  tiny:
    description: a one-notebook pipeline for the API tests
    notebooks:
      only:
        path: only.ipynb
    parameters:
      n:
        type: int
        default: 1
"""

# One request per scope-guarded endpoint, keyed by (method, path under the prefix); the tests check this covers
# every endpoint the OpenAPI document lists, so a new endpoint cannot escape the RBAC matrix.
PATH_VALUES = {"symbol": "SPX", "scope": "SPX", "metric": "vega", "order_id": "987654", "run_id": "tiny-nope",
               "name": "rbac-model", "alias": "candidate", "request_id": "987654", "kind": "privileged",
               "record_class": "orders", "hold_id": "987654"}  # fmt: skip
MODEL_LINEAGE = {"feature_set_hash": "a" * 64, "data_start": "2012-01-03", "data_end": "2019-12-31",
                 "data_sha256": "b" * 64}  # fmt: skip
SAMPLES = {
    ("GET", "/v1/marketdata/{symbol}/chain"): {"params": {"date": "2024-01-02"}},
    ("GET", "/v1/marketdata/{symbol}/surface"): {},
    ("GET", "/v1/marketdata/{symbol}/smiles"): {},
    ("GET", "/v1/signals/graph"): {},
    ("GET", "/v1/signals/drift"): {},
    ("GET", "/v1/signals/forecasts"): {},
    ("GET", "/v1/risk/report"): {"params": {"by": "symbol"}},
    ("GET", "/v1/risk/limits"): {},
    ("PUT", "/v1/risk/limits/{scope}/{metric}"): {"json": {"value": 1e12, "reason": "rbac"}},
    ("DELETE", "/v1/risk/limits/{scope}/{metric}"): {"params": {"reason": "rbac"}},
    ("GET", "/v1/killswitch"): {},
    ("POST", "/v1/killswitch/engage"): {"json": {"reason": "rbac drill"}},
    ("POST", "/v1/killswitch/release"): {"json": {"reason": "rbac drill over"}},
    ("GET", "/v1/orders"): {},
    ("POST", "/v1/orders"): {
        "json": {"client_order_id": None, "symbol": "SPX", "side": "buy", "quantity": 1}
    },
    ("GET", "/v1/orders/{order_id}"): {},
    ("POST", "/v1/orders/{order_id}/approve"): {"json": {"reason": "rbac"}},
    ("POST", "/v1/orders/{order_id}/reject"): {"json": {"reason": "rbac"}},
    ("POST", "/v1/orders/{order_id}/cancel"): {"json": {"reason": "rbac"}},
    ("GET", "/v1/positions"): {},
    ("GET", "/v1/jobs/pipelines"): {},
    ("GET", "/v1/jobs/runs"): {},
    ("POST", "/v1/jobs/runs"): {"json": {"pipeline": "tiny", "parameters": {"n": 2}}},
    ("GET", "/v1/jobs/runs/{run_id}"): {},
    ("GET", "/v1/jobs/runs/{run_id}/logs"): {},
    ("POST", "/v1/jobs/runs/{run_id}/cancel"): {},
    ("POST", "/v1/jobs/runs/{run_id}/retry"): {},
    ("GET", "/v1/archive/runs"): {},
    ("GET", "/v1/archive/runs/{run_id}"): {},
    ("GET", "/v1/archive/runs/{run_id}/render"): {},
    ("GET", "/v1/archive/verify"): {},
    ("POST", "/v1/archive/export"): {"json": {}},
    ("GET", "/v1/audit"): {"params": {"limit": 5}},
    ("GET", "/v1/audit/verify"): {},
    ("GET", "/v1/retention"): {},
    ("PUT", "/v1/retention/policies/{record_class}"): {"json": {"rule": "SOX", "reason": "rbac"}},
    ("POST", "/v1/retention/holds"): {"json": {"record_class": "orders", "reason": "rbac"}},
    ("POST", "/v1/retention/holds/{hold_id}/release"): {"json": {"reason": "rbac"}},
    ("GET", "/v1/reports/compliance/{kind}"): {"params": {"from": "2026-01-01", "to": "2026-01-02"}},
    ("GET", "/v1/models"): {},
    ("GET", "/v1/models/{name}/versions"): {},
    ("POST", "/v1/models/{name}/versions"): {"json": {"artifact": "cmJhYw==", "lineage": MODEL_LINEAGE}},
    ("PUT", "/v1/models/{name}/aliases/{alias}"): {"json": {"version": 1}},
    ("GET", "/v1/models/promotions"): {},
    ("POST", "/v1/models/{name}/promotions"): {"json": {"version": 1, "reason": "rbac"}},
    ("POST", "/v1/models/promotions/{request_id}/approve"): {"json": {"reason": "rbac"}},
    ("POST", "/v1/models/promotions/{request_id}/reject"): {"json": {"reason": "rbac"}},
    ("POST", "/v1/models/promotions/{request_id}/withdraw"): {"json": {"reason": "rbac"}},
    ("POST", "/v1/models/{name}/rollback"): {"json": {"reason": "rbac"}},
}


def endpoints(app) -> list[tuple[str, str, str]]:
    "(method, path under the prefix, right) of every guarded endpoint; fails if one has no sample request."
    out = [(m, p.removeprefix(P), r) for m, p, r in api.api_rights(app)]
    missing = {(m, p) for m, p, _ in out} - set(SAMPLES)
    assert not missing, f"endpoints without a sample request in SAMPLES: {sorted(missing)}"
    assert set(SAMPLES) == {(m, p) for m, p, _ in out}, "SAMPLES names endpoints the API does not have"
    return out


def sample(method: str, path: str) -> tuple[str, dict]:
    kw = json.loads(json.dumps(SAMPLES[(method, path)]))
    if kw.get("json", {}).get("client_order_id", "x") is None:
        kw["json"]["client_order_id"] = uuid.uuid4().hex[:20]
    return path.format(**PATH_VALUES), kw


def check_matrix(call, role_tokens: dict[str, str], eps) -> list[str]:
    "Every role x every endpoint: allowed iff the role holds the right; the problems found (empty: none)."
    problems = []
    for role, tok in role_tokens.items():
        for method, path, right in eps:
            url, kw = sample(method, path)
            r = call(method, url, tok, **kw)
            expect = right in ROLES[role]
            if expect:
                if r.status_code in (401, 403) or r.status_code >= 500:
                    problems.append(
                        f"{role} {method} {path}: expected allow, got {r.status_code} {r.text[:200]}"
                    )
            elif r.status_code != 403 or r.json()["error"] != "missing_scope":
                problems.append(f"UNEXPECTED ALLOW {role} {method} {path}: {r.status_code} {r.text[:200]}")
    return problems


# ------------------------------------------------------------------------------------------------------------
# In process: TestClient, the Hub replaced by a StaticResolver
# ------------------------------------------------------------------------------------------------------------
TOKENS = {f"tok-{r}": api.hub_model(f"u-{r}", ROLES[r]) for r in ROLES}
TOKENS["tok-admin"]["scopes"].append("read:metrics")
TOKENS["tok-ann"] = api.hub_model("ann", ROLES["trader"])
TOKENS["tok-narrow"] = api.hub_model("rita", ["risk:read"])  # a risk manager's token narrowed to risk:read
TOKENS["tok-svc"] = api.hub_model("feeder", ["marketdata:read"], kind="service")


@pytest.fixture
def client(db, isolated_settings):
    (isolated_settings.parent / "jobs").mkdir()
    (isolated_settings.parent / "jobs" / "pipelines.yaml").write_text(PIPELINES)
    app = api.create_app(api.StaticResolver(TOKENS), prefix=P)
    with TestClient(app) as c:
        yield c
    app.state.fanout.close()


def H(tok: str, **extra) -> dict:
    return {"Authorization": f"token {tok}", **extra}


def test_rbac_matrix_in_process(client):
    eps = endpoints(client.app)
    assert {r for _, _, r in eps} == set(RIGHTS) - {"dashboards:view"}

    def call(method, url, tok, **kw):
        return client.request(method, P + url, headers=H(tok), **kw)

    problems = check_matrix(call, {r: f"tok-{r}" for r in ROLES}, eps)
    assert problems == [], "\n".join(problems)
    # no credentials: 401 everywhere, with a WWW-Authenticate challenge; a made-up token: 401
    for method, path, _ in eps:
        url, kw = sample(method, path)
        r = client.request(method, P + url, **kw)
        assert r.status_code == 401 and r.json()["error"] == "unauthenticated", (method, path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert client.request(method, P + url, headers=H("made-up"), **kw).status_code == 401
    # a token narrower than its owner gets only its scopes
    got = {(m, p) for m, p, r in eps if client.request(m, P + sample(m, p)[0], headers=H("tok-narrow"),
                                                        **sample(m, p)[1]).status_code != 403}  # fmt: skip
    assert got == {(m, p) for m, p, r in eps if r == "risk:read"}
    assert client.get(P + "/health").json()["status"] == "ok"
    assert client.get(P + "/v1/whoami", headers=H("tok-svc")).json() == {
        "name": "service:feeder", "kind": "service", "via": "token", "rights": ["marketdata:read"]}  # fmt: skip


def test_orders_four_eyes_kill_switch_and_correlation(client):
    exp = fresh_quote()
    big = {"client_order_id": "api-1", "symbol": "SPX", "side": "buy", "quantity": 200, "option_type": "C",
           "expiry": exp.isoformat(), "strike": 100.0}  # fmt: skip
    r = client.post(P + "/v1/orders", headers=H("tok-trader", **{"X-Request-Id": "req-submit-1"}), json=big)
    assert r.status_code == 201, r.text
    o = r.json()
    assert (o["state"], o["submitted_by"], r.headers["x-request-id"]) == (
        "pending_approval",
        "u-trader",
        "req-submit-1",
    )
    assert "approval_notional" in o["approval_reason"]
    r = client.post(P + "/v1/orders", headers=H("tok-trader"), json={**big, "quantity": 201})
    assert (r.status_code, r.json()["error"], r.json()["fields"][0]["field"]) == (
        409,
        "duplicate_client_order_id",
        "client_order_id",
    )
    r = client.post(P + f"/v1/orders/{o['id']}/approve", headers=H("tok-trader"), json={"reason": "mine"})
    assert (r.status_code, r.json()["error"]) == (409, "four_eyes")
    r = client.post(P + f"/v1/orders/{o['id']}/reject", headers=H("tok-trader"), json={"reason": "mine"})
    assert (r.status_code, r.json()["error"]) == (409, "four_eyes")
    r = client.post(P + f"/v1/orders/{o['id']}/approve", headers=H("tok-ann", **{"X-Request-Id": "req-approve-1"}),
                    json={"reason": "hedge checked"})  # fmt: skip
    # approved, sent to the paper venue and filled as far as the quote's 7 contracts at the ask go
    assert (r.status_code, r.json()["state"], r.json()["approved_by"]) == (200, "partially_filled", "ann")
    assert (r.json()["filled_quantity"], r.json()["avg_fill_price"]) == (7.0, 5.1)
    r = client.post(P + f"/v1/orders/{o['id']}/approve", headers=H("tok-ann"), json={"reason": "again"})
    assert (r.status_code, r.json()["error"]) == (409, "illegal_transition")
    detail = client.get(P + f"/v1/orders/{o['id']}", headers=H("tok-manager")).json()
    hist = [(e["to_state"], e["actor"]) for e in detail["history"]]
    assert hist == [("new", "u-trader"), ("pending_approval", "system:pre-trade"), ("approved", "ann"),
                    ("sent", "system:order-router"), ("partially_filled", "system:broker")]  # fmt: skip
    assert client.get(P + "/v1/orders/424242", headers=H("tok-manager")).status_code == 404
    # the audit records of the change carry the request's correlation id, with the acting user
    with store.session_scope() as s:
        recs = {(x.actor, x.action, x.correlation_id) for x in audit.query(s, target=f"order:{o['id']}")}
    assert ("u-trader", "order.submit", "req-submit-1") in recs
    assert ("ann", "order.approved", "req-approve-1") in recs
    # kill switch: trader engages, new orders 409 (the rejection is recorded), approvals 409, only risk releases
    small = {**big, "client_order_id": "api-2", "quantity": 1}
    r = client.post(P + "/v1/killswitch/engage", headers=H("tok-trader"), json={"reason": "drill"})
    assert r.json()["engaged"] is True and r.json()["changed_by"] == "u-trader"
    r = client.post(P + "/v1/orders", headers=H("tok-trader"), json=small)
    assert (r.status_code, r.json()["error"]) == (409, "kill_switch_engaged")
    rejected = client.get(P + "/v1/orders", headers=H("tok-trader"), params={"state": "rejected"}).json()
    assert [x["client_order_id"] for x in rejected] == ["api-2"]
    r = client.post(P + "/v1/orders", headers=H("tok-trader"), json={**big, "client_order_id": "api-3"})
    assert (r.status_code, r.json()["error"]) == (409, "kill_switch_engaged")  # a big one too
    assert (
        client.post(P + "/v1/killswitch/release", headers=H("tok-trader"), json={"reason": "x"}).status_code
        == 403
    )
    assert client.get(P + "/v1/killswitch", headers=H("tok-manager")).json()["engaged"] is True
    r = client.post(P + "/v1/killswitch/release", headers=H("tok-risk"), json={"reason": "drill over"})
    assert r.json()["engaged"] is False
    # cancel: the submitter's own order (pending) is cancelled with a reason
    r = client.post(P + "/v1/orders", headers=H("tok-trader"), json={**big, "client_order_id": "api-4"})
    assert r.json()["state"] == "pending_approval"
    r = client.post(
        P + f"/v1/orders/{r.json()['id']}/cancel", headers=H("tok-trader"), json={"reason": "changed mind"}
    )
    assert (r.status_code, r.json()["state"], r.json()["reason"]) == (200, "cancelled", "changed mind")
    # a refused change is audited as api.denied
    with store.session_scope() as s:
        denied = audit.query(s, action="api.denied")
    assert denied[0].actor == "u-trader" and denied[0].after["scope"] == "custom:aitrade:killswitch:release"


def test_orders_that_arrive_together_share_one_commit_and_keep_their_own_answers(client):
    "Group commit (`store.GroupCommit`): a group commits once; a unit that fails makes each run alone."
    exp = fresh_quote()
    orders = client.app.state.orders

    def body(cid, qty=1):
        return {"client_order_id": cid, "symbol": "SPX", "side": "buy", "quantity": qty, "option_type": "C",
                "expiry": exp.isoformat(), "strike": 100.0}  # fmt: skip

    def queued(n):
        deadline = time.monotonic() + 20
        while orders._queue.qsize() != n:
            assert time.monotonic() < deadline, f"{orders._queue.qsize()} queued, not {n}"
            time.sleep(0.005)

    def together(calls):
        "Hold the group's thread on a first unit while `calls` queue up; then their responses, in order."
        release = threading.Event()
        with ThreadPoolExecutor(len(calls) + 1) as pool:
            first = pool.submit(orders.run, lambda s: release.wait(20))
            queued(0)
            futs = [
                pool.submit(client.post, P + "/v1/orders", headers=H("tok-trader"), json=b) for b in calls
            ]
            queued(len(calls))
            groups = orders.groups
            release.set()
            assert first.result() is True
            return [f.result() for f in futs], orders.groups - groups

    # four new orders and a retry of one of them: one group, one commit, one order per client_order_id
    rs, groups = together([body("g-1"), body("g-2"), body("g-3"), body("g-4"), body("g-2")])
    assert groups == 1 and [r.status_code for r in rs] == [201] * 5, [r.text for r in rs]
    metrics = client.get(P + "/metrics", headers=H("tok-admin")).text
    assert 'aitrade_api_order_group_size_bucket{le="4.0"} 1.0' in metrics  # the held unit alone
    assert 'aitrade_api_order_group_size_bucket{le="8.0"} 2.0' in metrics  # and the five together
    assert [r.json()["state"] for r in rs] == ["filled"] * 5
    assert len({r.json()["id"] for r in rs}) == 4 and rs[1].json()["id"] == rs[4].json()["id"]
    # one of a group reuses a client_order_id with other contents: it alone is refused, the others commit
    rs, _ = together([body("g-5"), body("g-1", qty=2), body("g-6")])
    assert [r.status_code for r in rs] == [201, 409, 201], [r.text for r in rs]
    assert rs[1].json()["error"] == "duplicate_client_order_id"
    with store.session_scope() as s:
        stored = {o.client_order_id: o for o in execution.list_orders(s)}
        assert sorted(stored) == ["g-1", "g-2", "g-3", "g-4", "g-5", "g-6"]
        assert {o.state for o in stored.values()} == {"filled"}
        hist = [(e.from_state, e.to_state) for e in execution.order_history(s, stored["g-5"].id)]
        assert hist == [(None, "new"), ("new", "approved"), ("approved", "sent"), ("sent", "filled")]
        assert len(audit.query(s, action="order.submit", limit=100)) == 6
        assert audit.verify(s).ok


def test_validation_errors_name_the_field(client):
    exp = fresh_quote()
    base = {"client_order_id": "v-1", "symbol": "SPX", "side": "buy", "quantity": 1, "option_type": "C",
            "expiry": exp.isoformat(), "strike": 100.0}  # fmt: skip

    def err(r):
        assert r.status_code == 422, r.text
        b = r.json()
        assert b["error"] == "validation_error" and b["request_id"] == r.headers["x-request-id"]
        return [f["field"] for f in b["fields"]]

    post = lambda body: client.post(P + "/v1/orders", headers=H("tok-trader"), json=body)  # noqa: E731
    assert err(post({**base, "quantity": -1})) == ["quantity"]
    assert err(post({**base, "side": "hold"})) == ["side"]
    assert err(post({**base, "colour": "red"})) == ["colour"]
    assert err(post({**base, "expiry": None})) == ["expiry"]  # the platform's rule: an option needs an expiry
    assert err(post({**base, "quantity": 1.5})) == ["quantity"]  # options trade in whole contracts
    assert err(post({**base, "order_type": "limit"})) == ["limit_price"]
    r = client.post(
        P + "/v1/orders",
        headers={**H("tok-trader"), "Content-Type": "application/json"},
        content=b'{"quantity": NaN}',
    )
    assert r.status_code == 422
    assert err(
        client.put(P + "/v1/risk/limits/SPX/theta", headers=H("tok-risk"), json={"value": 1, "reason": "x"})
    ) == ["metric"]
    assert err(
        client.put(P + "/v1/risk/limits/SPX/vega", headers=H("tok-risk"), json={"value": -1, "reason": "x"})
    ) == ["value"]
    assert err(
        client.put(
            P + "/v1/risk/limits/SPX/concentration", headers=H("tok-risk"), json={"value": 2, "reason": "x"}
        )
    ) == ["value"]
    assert err(client.post(P + "/v1/killswitch/engage", headers=H("tok-risk"), json={"reason": "   "})) == [
        "reason"
    ]
    assert err(client.get(P + "/v1/marketdata/SPX/chain", headers=H("tok-trader"))) == ["date"]
    assert err(client.post(P + "/v1/jobs/runs", headers=H("tok-ops"), json={"pipeline": "nope"})) == [
        "pipeline"
    ]
    assert err(
        client.post(
            P + "/v1/jobs/runs", headers=H("tok-ops"), json={"pipeline": "tiny", "parameters": {"n": "x"}}
        )
    ) == ["parameters"]
    # a bad X-Request-Id is replaced by a new one
    r = client.get(P + "/v1/risk/limits", headers=H("tok-risk", **{"X-Request-Id": "bad id with spaces"}))
    assert r.status_code == 200 and len(r.headers["x-request-id"]) == 32


def test_limits_marketdata_risk_jobs_archive_audit(client, isolated_settings):
    exp = fresh_quote()
    r = client.put(P + "/v1/risk/limits/portfolio/vega", headers=H("tok-risk", **{"X-Request-Id": "lim-1"}),
                   json={"value": 5e4, "reason": "desk limit"})  # fmt: skip
    assert r.status_code == 200 and r.json()["max_abs"] == 5e4 and r.json()["updated_by"] == "u-risk"
    assert [x["metric"] for x in client.get(P + "/v1/risk/limits", headers=H("tok-manager")).json()] == [
        "vega"
    ]
    r = client.request(
        "DELETE", P + "/v1/risk/limits/portfolio/vega", headers=H("tok-risk"), params={"reason": "x"}
    )
    assert r.json() == {"removed": True}
    recs = client.get(P + "/v1/audit", headers=H("tok-auditor"), params={"action": "limit."}).json()
    assert [(x["action"], x["actor"]) for x in recs] == [("limit.remove", "u-risk"), ("limit.set", "u-risk")]
    assert recs[1]["correlation_id"] == "lim-1"
    assert (
        client.get(P + "/v1/audit", headers=H("tok-auditor"), params={"correlation_id": "lim-1"}).json()[0][
            "seq"
        ]
        == recs[1]["seq"]
    )
    assert client.get(P + "/v1/audit/verify", headers=H("tok-auditor")).json()["ok"] is True
    # market data
    chain = client.get(P + "/v1/marketdata/SPX/chain", headers=H("tok-quant"),
                       params={"date": store.utcnow().date().isoformat()}).json()  # fmt: skip
    assert [(q["strike"], q["bid"], q["ask"], q["expiry"]) for q in chain["quotes"]] == [
        (100.0, 4.9, 5.1, exp.isoformat())
    ]
    assert client.get(P + "/v1/marketdata/SPX/surface", headers=H("tok-quant")).status_code == 404
    rep = client.get(P + "/v1/risk/report", headers=H("tok-manager")).json()
    assert rep["positions"] == 0 and rep["greeks"] == [] and rep["worst"] == {"TOTAL": 0.0}
    # jobs: queue a run, read it back, cancel and retry it (ops)
    assert [p["name"] for p in client.get(P + "/v1/jobs/pipelines", headers=H("tok-quant")).json()] == [
        "tiny"
    ]
    r = client.post(
        P + "/v1/jobs/runs",
        headers=H("tok-quant", **{"X-Request-Id": "job-1"}),
        json={"pipeline": "tiny", "parameters": {"n": 3}},
    )
    assert r.status_code == 201 and r.json()["status"] == "queued"
    rid = r.json()["run_id"]
    st = client.get(P + f"/v1/jobs/runs/{rid}", headers=H("tok-auditor")).json()
    assert (st["user"], st["parameters"], [n["notebook"] for n in st["notebooks"]]) == (
        "u-quant",
        {"n": 3},
        ["only"],
    )
    assert client.get(P + f"/v1/jobs/runs/{rid}/logs", headers=H("tok-ops")).json() == []
    assert client.get(P + "/v1/jobs/runs/nope-1/logs", headers=H("tok-ops")).status_code == 404
    assert client.post(P + f"/v1/jobs/runs/{rid}/cancel", headers=H("tok-quant")).status_code == 403
    assert (
        client.post(P + f"/v1/jobs/runs/{rid}/cancel", headers=H("tok-ops")).json()["status"] == "cancelled"
    )
    assert client.post(P + f"/v1/jobs/runs/{rid}/cancel", headers=H("tok-ops")).status_code == 409
    assert client.post(P + f"/v1/jobs/runs/{rid}/retry", headers=H("tok-ops")).json()["status"] == "queued"
    with store.session_scope() as s:
        assert audit.query(s, action="job.run.create")[0].correlation_id == "job-1"
    # archive: one archived run, listed, shown, rendered as sandboxed HTML, verified
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# archived for the API test")])
    run = archive.archive_run(
        nbformat.writes(nb).encode(), pipeline="tiny", user="u-ops", git={"commit": None, "dirty": False}
    )
    runs = client.get(P + "/v1/archive/runs", headers=H("tok-auditor")).json()
    assert [(x["run_id"], x["pipeline"], x["intact"]) for x in runs] == [(run.run_id, "tiny", True)]
    shown = client.get(P + f"/v1/archive/runs/{run.run_id}", headers=H("tok-auditor")).json()
    assert shown["manifest"]["run_id"] == run.run_id and shown["notebook_sha256"] == run.notebook_sha256
    r = client.get(P + f"/v1/archive/runs/{run.run_id}/render", headers=H("tok-auditor"))
    assert r.status_code == 200 and "archived for the API test" in r.text
    assert (
        r.headers["content-type"].startswith("text/html")
        and "sandbox" in r.headers["content-security-policy"]
    )
    assert client.get(P + "/v1/archive/runs/nope-1", headers=H("tok-auditor")).status_code == 404
    v = client.get(P + "/v1/archive/verify", headers=H("tok-auditor")).json()
    assert (v["ok"], v["runs"], v["head_seq"]) == (True, 1, 1)


def test_websocket_streams_scopes_and_filters(client):
    with client.websocket_connect(
        P + "/v1/stream?streams=ticks,fills&symbols=SPX", headers=H("tok-trader")
    ) as ws:
        assert ws.receive_json() == {"type": "hello", "user": "u-trader", "streams": ["ticks", "fills"]}
        bus.publish("ticks", {"symbol": "NDX", "price": 1.0})  # filtered out
        bus.publish("ticks", {"symbol": "SPX", "price": 101.25})
        bus.publish("fills", {"order_id": 7, "symbol": "NDX", "quantity": 2.0})  # fills are not filtered
        got = [ws.receive_json(), ws.receive_json()]
        assert sorted((m["stream"], m["data"].get("price", m["data"].get("quantity"))) for m in got) == [
            ("fills", 2.0), ("ticks", 101.25)]  # fmt: skip
    with client.websocket_connect(
        P + "/v1/stream?token=tok-auditor"
    ) as ws:  # default: every stream it may read
        assert ws.receive_json()["streams"] == [
            "fills",
            "pnl",
            "greeks",
            "limits",
            "killswitch",
            "orders",
            "jobs",
        ]
        bus.publish("pnl", {"total": -12.5})
        assert ws.receive_json()["data"] == {"total": -12.5}
    for url, headers, status in [
        (P + "/v1/stream?streams=ticks&token=tok-auditor", {}, 403),  # the auditor has no marketdata:read
        (P + "/v1/stream?streams=ticks", {}, 401),
        (P + "/v1/stream?streams=ticks&token=made-up", {}, 401),
        (P + "/v1/stream?streams=nope", H("tok-admin"), 422),
    ]:
        with pytest.raises(WebSocketDenialResponse) as e:
            with client.websocket_connect(url, headers=headers):
                pass
        assert e.value.status_code == status, url
    m = client.get(P + "/metrics", headers=H("tok-admin")).text
    assert 'aitrade_api_ws_messages_total{stream="ticks"} 1.0' in m


def test_websocket_on_the_redis_bus(redis_url, db, monkeypatch):
    "Production bus: the same stream over Redis Streams (blocking XREAD in the fan-out's reader thread)."
    from aitrade import config

    monkeypatch.setenv("AITRADE_REDIS__URL", redis_url)
    config.reload_settings()
    assert type(bus.get_bus()).__name__ == "RedisBus"
    app = api.create_app(api.StaticResolver(TOKENS), prefix=P)
    with (
        TestClient(app) as c,
        c.websocket_connect(P + "/v1/stream?streams=fills", headers=H("tok-manager")) as ws,
    ):
        assert ws.receive_json()["streams"] == ["fills"]
        bus.publish("fills", {"order_id": 1, "price": 5.1})
        m = ws.receive_json()
        assert (m["stream"], m["data"]["price"]) == ("fills", 5.1) and "-" in m["id"]
    app.state.fanout.close()


def test_metrics_need_read_metrics_and_hide_parameters(client):
    client.get(P + "/v1/orders/12345", headers=H("tok-trader"))
    assert client.get(P + "/metrics").status_code == 401
    r = client.get(P + "/metrics", headers=H("tok-trader"))
    assert (r.status_code, r.json()["required_scope"]) == (403, "read:metrics")
    r = client.get(P + "/metrics", headers=H("tok-admin"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'route="/services/aitrade-api/v1/orders/{order_id}",status="404"' in r.text
    assert "12345" not in r.text and "u-trader" not in r.text
    # the run history and the backups, read from the database at each scrape
    assert "aitrade_jobs_metrics_up 1.0" in r.text and "aitrade_backup_metrics_up 1.0" in r.text, r.text


def test_liveness_and_readiness_probes(client):
    "`/livez` answers while the process runs; `/readyz` only while the database and the bus do, naming what does not."
    from aitrade import config

    assert client.get(P + "/livez").json() == {"status": "ok"}
    r = client.get(P + "/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready", "checks": {"database": "ok", "bus": "ok"}})
    url = config.get_settings().database_url
    os.environ["AITRADE_DATABASE__URL"] = (
        "postgresql+psycopg://nobody@127.0.0.1:1/down"  # nothing listens there
    )
    config.reload_settings()
    try:
        r = client.get(P + "/readyz")
        assert r.status_code == 503 and r.json()["status"] == "not ready", r.text
        assert r.json()["checks"]["database"].startswith("error: ") and r.json()["checks"]["bus"] == "ok"
        assert "127.0.0.1" not in r.text and client.get(P + "/livez").status_code == 200  # alive, not ready
    finally:
        os.environ["AITRADE_DATABASE__URL"] = url
        config.reload_settings()


def test_cookie_credentials_need_the_xsrf_header(client):
    client.cookies.set("service-aitrade-api", "tok-risk")
    r = client.get(P + "/v1/whoami")
    assert r.json()["via"] == "cookie" and "limits:write" in r.json()["rights"]
    r = client.post(P + "/v1/killswitch/engage", json={"reason": "cookie"})
    assert (r.status_code, r.json()["error"]) == (403, "xsrf")
    client.cookies.set("service-aitrade-api-xsrf", "abc123")
    r = client.post(P + "/v1/killswitch/engage", json={"reason": "cookie"}, headers={"X-XSRFToken": "nope"})
    assert r.status_code == 403
    r = client.post(P + "/v1/killswitch/engage", json={"reason": "cookie"}, headers={"X-XSRFToken": "abc123"})
    assert r.status_code == 200 and r.json()["changed_by"] == "u-risk"
    # a cross-origin WebSocket riding on the cookie is refused
    with pytest.raises(WebSocketDenialResponse) as e:
        with client.websocket_connect(P + "/v1/stream", headers={"Origin": "http://evil.example"}):
            pass
    assert e.value.status_code == 403


def test_hub_unreachable_is_503(db):
    async def down(token):
        raise api.HubUnavailable("hub auth: cannot check the token with the Hub (connection refused)")

    with TestClient(api.create_app(down, prefix=P)) as c:
        r = c.get(P + "/v1/orders", headers=H("x"))
        assert (r.status_code, r.json()["error"]) == (503, "hub_unavailable")
    # outside the Hub (no service token in the environment) the default resolver says so
    with TestClient(api.create_app(prefix=P)) as c:
        r = c.get(P + "/v1/orders", headers=H("x"))
        assert r.status_code == 503 and "JUPYTERHUB_API_TOKEN" in r.json()["detail"]
        assert c.get(P + "/login").status_code == 503


# ------------------------------------------------------------------------------------------------------------
# For real: the API as a JupyterHub-managed service behind the Hub's proxy (one Hub for the module)
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubapi")
    (root / "jobs").mkdir()
    (root / "jobs" / "pipelines.yaml").write_text(PIPELINES)
    api_port = free_port()
    # two API worker processes: the login's OAuth state must open in either (api.identity.sealed_state_oauth)
    # [hub] auth_cache_s = 3: the bound within which a revoked token that the API has seen is refused
    h = Hub(
        root,
        extra_ini="[api]\nworkers = 2\n",
        env={"AITRADE_API_PORT": str(api_port), "AITRADE_HUB__AUTH_CACHE_S": "3"},
    )
    h.api_url = f"http://127.0.0.1:{api_port}"
    try:
        h.start_as_admin(note="api tests")
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(h.url + P + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the API service did not come up: {(root / 'hub.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        h.tokens = {"admin": h.admin_token}
        for role in ROLES:
            if role != "admin":
                h.tokens[role] = h.make_user(f"api-{role}", role, note="api")
        yield h
    finally:
        h.stop()


def via_hub(hub, base=None):
    def call(method, url, tok, **kw):
        return requests.request(method, (base or hub.url) + P + url, headers={"Authorization": f"token {tok}"},
                                timeout=30, **kw)  # fmt: skip

    return call


def test_service_behind_the_hub_and_direct(hub):
    r = requests.get(hub.url + P + "/health", timeout=10)
    assert r.json()["status"] == "ok" and r.json()["service"] == "aitrade-api"
    doc = requests.get(hub.url + P + "/openapi.json", timeout=10).json()
    scopes = {op.get("x-required-scope") for ops in doc["paths"].values() for op in ops.values()}
    assert {f"custom:aitrade:{x}" for x in ("orders:submit", "limits:write", "audit:read")} <= scopes
    assert requests.get(hub.url + P + "/docs", timeout=10).status_code == 200
    # the service answers on its own port too (127.0.0.1 only), with the same auth
    assert requests.get(hub.api_url + P + "/v1/orders", timeout=10).status_code == 401
    me = requests.get(
        hub.api_url + P + "/v1/whoami", headers={"Authorization": f"Bearer {hub.tokens['trader']}"}
    ).json()
    assert me["name"] == "api-trader" and me["rights"] == sorted(ROLES["trader"])


@pytest.mark.parametrize("role", sorted(ROLES))
def test_rbac_matrix_through_the_hub(hub, role):
    eps = endpoints(api.create_app(api.StaticResolver({}), prefix=P))
    problems = check_matrix(via_hub(hub), {role: hub.tokens[role]}, eps)
    assert problems == [], "\n".join(problems)
    m = requests.get(
        hub.url + P + "/metrics", headers={"Authorization": f"token {hub.tokens[role]}"}, timeout=10
    )
    assert m.status_code == (200 if role == "admin" else 403)  # the Hub's read:metrics: admins only


def test_no_credentials_and_narrow_tokens_through_the_hub(hub):
    eps = endpoints(api.create_app(api.StaticResolver({}), prefix=P))
    call = via_hub(hub)
    for method, path, _ in eps:
        url, kw = sample(method, path)
        assert requests.request(method, hub.url + P + url, timeout=30, **kw).status_code == 401, (
            method,
            path,
        )
    assert call("GET", "/v1/orders", "not-a-hub-token").status_code == 401
    narrow = hub.make_user("api-rita", "risk", scopes=["custom:aitrade:risk:read"], note="api")
    allowed = {
        (m, p) for m, p, _ in eps if call(m, sample(m, p)[0], narrow, **sample(m, p)[1]).status_code != 403
    }
    assert allowed == {(m, p) for m, p, r in eps if r == "risk:read"}
    # a revoked token is refused (the service caches the Hub's answers for at most 30 s; this one was never seen)
    tok = hub.make_user("api-rita", "risk", note="api")
    toks = hub.api("GET", "/users/api-rita/tokens", hub.admin_token).json()["api_tokens"]
    tid = max(toks, key=lambda t: t["created"])["id"]
    assert hub.api("DELETE", f"/users/api-rita/tokens/{tid}", hub.admin_token).status_code == 204
    assert call("GET", "/v1/risk/limits", tok).status_code == 401


def test_a_revoked_token_the_api_has_cached_is_refused_within_the_bound(hub):
    "The API reuses the Hub's answer about a token for [hub] auth_cache_s (3 s here): no longer."
    call = via_hub(hub)
    tok = hub.make_user("api-rita2", "risk", note="api")
    for _ in range(4):  # both API workers have seen it, and keep the Hub's answer
        assert call("GET", "/v1/risk/limits", tok).status_code == 200
    toks = hub.api("GET", "/users/api-rita2/tokens", hub.admin_token).json()["api_tokens"]
    tid = max(toks, key=lambda t: t["created"])["id"]
    assert hub.api("DELETE", f"/users/api-rita2/tokens/{tid}", hub.admin_token).status_code == 204
    t0, codes = time.monotonic(), []
    while time.monotonic() - t0 < 10:
        codes.append(call("GET", "/v1/risk/limits", tok).status_code)
        if codes[-4:] == [401] * 4:  # refused by every worker, steadily
            break
        time.sleep(0.1)
    assert codes[-4:] == [401] * 4, codes
    assert time.monotonic() - t0 < 3 + 1.5, "refused within auth_cache_s (and a request's time)"


def test_browser_login_with_hub_oauth(hub):
    # with two API workers, /login and /oauth_callback are answered by either: several logins cross over
    parents = [p for p in psutil.process_iter(["cmdline", "cwd"])
               if "from aitrade.api import main" in " ".join(p.info["cmdline"] or []) and p.info["cwd"] == str(hub.root)]  # fmt: skip
    assert len(parents) == 1 and len(parents[0].children()) >= 2, "the API runs [api] workers = 2 processes"
    for _ in range(4):
        s, r = hub.login("admin", hub.admin_password)
        assert r.status_code == 302
        r = s.get(hub.url + P + "/login", params={"next": P + "/v1/whoami"}, timeout=30)
        assert r.status_code == 200, r.text
    me = r.json()
    assert me["name"] == "admin" and me["via"] == "cookie"
    assert set(me["rights"]) == set(RIGHTS)  # the OAuth token carries the user's aitrade scopes
    cookie = {c.name for c in s.cookies if c.path == P}
    assert {"service-aitrade-api", "service-aitrade-api-xsrf"} <= cookie
    assert s.get(hub.url + P + "/v1/killswitch", timeout=10).status_code == 200
    r = s.post(hub.url + P + "/v1/killswitch/engage", json={"reason": "browser"}, timeout=10)
    assert (r.status_code, r.json()["error"]) == (403, "xsrf")
    xsrf = next(c.value for c in s.cookies if c.name == "service-aitrade-api-xsrf")
    r = s.post(
        hub.url + P + "/v1/killswitch/engage", json={"reason": "browser"}, headers={"X-XSRFToken": xsrf}
    )
    assert r.status_code == 200 and r.json()["changed_by"] == "admin"
    r = s.post(
        hub.url + P + "/v1/killswitch/release", json={"reason": "browser"}, headers={"X-XSRFToken": xsrf}
    )
    assert r.json()["engaged"] is False
    # a callback with a state that is not this browser's is refused
    r = requests.get(hub.url + P + "/oauth_callback", params={"code": "x", "state": "forged"}, timeout=10)
    assert (r.status_code, r.json()["error"]) == (403, "oauth_state")


def test_websocket_through_the_hub(hub):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    b = bus.SqliteBus(hub.root / "var" / "bus.db")
    ws_url = hub.url.replace("http://", "ws://") + P + "/v1/stream"
    with connect(ws_url + "?streams=ticks", additional_headers={"Authorization": f"token {hub.tokens['manager']}"},
                 open_timeout=30) as ws:  # fmt: skip
        assert json.loads(ws.recv(timeout=10))["streams"] == ["ticks"]
        b.publish("ticks", {"symbol": "SPX", "price": 99.5, "t_pub": time.time()})
        m = json.loads(ws.recv(timeout=10))
        assert (m["stream"], m["data"]["price"]) == ("ticks", 99.5)
    with connect(ws_url + f"?streams=fills&token={hub.tokens['auditor']}", open_timeout=30) as ws:
        assert json.loads(ws.recv(timeout=10))["user"] == "api-auditor"
    with pytest.raises(InvalidStatus) as e:
        connect(ws_url + f"?streams=ticks&token={hub.tokens['auditor']}", open_timeout=30)
    assert e.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as e:
        connect(ws_url + "?streams=ticks", open_timeout=30)
    assert e.value.response.status_code == 401


def test_correlation_id_joins_the_audit_log(hub):
    cid = "corr-" + uuid.uuid4().hex[:12]
    r = requests.put(hub.url + P + "/v1/risk/limits/NDX/delta", json={"value": 2e6, "reason": "joined"},
                     headers={"Authorization": f"token {hub.tokens['risk']}", "X-Request-Id": cid}, timeout=30)  # fmt: skip
    assert r.status_code == 200 and r.headers["x-request-id"] == cid
    recs = [a for a in hub.audit("limit.set") if a["correlation_id"] == cid]
    assert [(a["actor"], a["target"], a["after"]["max_abs"]) for a in recs] == [
        ("api-risk", "limit:NDX:delta", 2e6)
    ]
    denied = [a for a in hub.audit("api.denied") if a["actor"] == "api-manager"]
    assert denied, "a refused state change through the Hub is audited"
