"""The API's edge (aitrade.api.edges) wired into the real app: body-size limits that refuse before anything is
written, per-token rate limits with 429 and Retry-After (shared across processes through Redis), the security
headers, and the refusals in the metrics."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import sqlalchemy as sa
from fastapi.testclient import TestClient
from hubutil import free_port

from aitrade import api, config, store
from aitrade.api.edges import RateLimiter
from aitrade.auth import ROLES
from aitrade.execution import Order

P = "/services/aitrade-api"
TOKENS = {
    "tok-trader": api.hub_model("tess", ROLES["trader"]),
    "tok-other": api.hub_model("otto", ROLES["trader"]),
    "tok-quant": api.hub_model("quinn", ROLES["quant"]),
    "tok-admin": api.hub_model("ada", ROLES["admin"]),
}
TOKENS["tok-admin"]["scopes"].append("read:metrics")


def H(tok: str) -> dict:
    return {"Authorization": f"token {tok}"}


def make_client(isolated_settings, monkeypatch, **api_settings) -> TestClient:
    for k, v in api_settings.items():
        monkeypatch.setenv(f"AITRADE_API__{k.upper()}", str(v))
    config.reload_settings()
    return TestClient(api.create_app(api.StaticResolver(TOKENS), prefix=P))


def orders_count() -> int:
    with store.session_scope() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(Order))


def test_a_body_over_the_limit_is_refused_unread_and_writes_nothing(db, isolated_settings, monkeypatch):
    with make_client(isolated_settings, monkeypatch, max_body_bytes=4096) as c:
        order = {"underlying": "SPX", "side": "buy", "quantity": 1, "client_order_id": uuid.uuid4().hex[:20],
                 "note": "x" * 5000}  # fmt: skip
        r = c.post(P + "/v1/orders", json=order, headers=H("tok-trader"))
        assert (r.status_code, r.json()["error"]) == (413, "payload_too_large")
        assert "4096 bytes" in r.json()["detail"] and r.headers["x-request-id"]
        # streamed without a Content-Length: counted as it arrives, refused at the limit
        r = c.post(
            P + "/v1/orders", content=iter([b"{" + b" " * 3000, b" " * 3000 + b"}"]), headers=H("tok-trader")
        )
        assert r.status_code == 413
        assert orders_count() == 0
        # a model upload has its own, larger limit: 6 KiB of body reaches the route (and is judged there)
        body = {"artifact": "AAAA" * 1500, "lineage": {"feature_set_hash": "a" * 64, "data_start": "2012-01-03",
                "data_end": "2019-12-31", "data_sha256": "b" * 64}}  # fmt: skip
        r = c.post(P + "/v1/models/edge-model/versions", json=body, headers=H("tok-quant"))
        assert r.status_code == 201, r.text
        m = c.get(P + "/metrics", headers=H("tok-admin")).text
        assert 'aitrade_api_refused_total{reason="payload_too_large"} 2.0' in m


def test_a_token_over_its_rate_gets_429_with_retry_after_and_others_go_on(db, isolated_settings, monkeypatch):
    with make_client(isolated_settings, monkeypatch, rate_limit="5/minute") as c:
        got = [c.get(P + "/v1/positions", headers=H("tok-trader")).status_code for _ in range(7)]
        assert got == [200] * 5 + [429] * 2
        r = c.get(P + "/v1/positions", headers=H("tok-trader"))
        assert (r.status_code, r.json()["error"]) == (429, "rate_limited")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert c.get(P + "/v1/positions", headers=H("tok-other")).status_code == 200  # its own budget
        assert [c.get(P + "/health").status_code for _ in range(8)] == [200] * 8  # probes are exempt
        m = c.get(P + "/metrics", headers=H("tok-admin")).text
        assert 'aitrade_api_refused_total{reason="rate_limited"} 3.0' in m


def test_every_answer_carries_the_security_headers(db, isolated_settings, monkeypatch):
    with make_client(isolated_settings, monkeypatch) as c:
        for r in (
            c.get(P + "/v1/positions", headers=H("tok-trader")),  # allowed
            c.get(P + "/v1/positions", headers=H("nope")),  # 401
            c.get(P + "/docs"),  # the offline Swagger page
        ):
            h = r.headers
            assert (h["x-content-type-options"], h["x-frame-options"]) == ("nosniff", "DENY"), r.url
            assert (
                h["content-security-policy"] == "frame-ancestors 'none'"
                and h["referrer-policy"] == "no-referrer"
            )
            assert h["cache-control"] and h["x-request-id"]


def test_the_default_rate_is_from_settings_ini_and_can_be_switched_off(db, isolated_settings, monkeypatch):
    assert config.get_settings().api.rate_limit == "100/second;3000/minute"
    with make_client(isolated_settings, monkeypatch, rate_limit="") as c:
        assert c.app.user_middleware  # the edge is there, without a limiter
        assert {c.get(P + "/v1/positions", headers=H("tok-trader")).status_code for _ in range(120)} == {200}


COUNT = """
import asyncio, json, sys
from aitrade.api.edges import RateLimiter
rl = RateLimiter(sys.argv[1], sys.argv[2])
async def main():
    return [await rl.check(sys.argv[3]) for _ in range(int(sys.argv[4]))]
print(json.dumps(sum(w is None for w in asyncio.run(main()))))
"""


def _allowed_in_two_processes(rate: str, redis_url: str, key: str, n: int) -> list[int]:
    procs = [subprocess.Popen([sys.executable, "-c", COUNT, rate, redis_url, key, str(n)], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]  # fmt: skip
    return [json.loads(p.communicate(timeout=60)[0]) for p in procs]


def test_with_redis_every_process_shares_one_budget(redis_url):
    key = f"token:{uuid.uuid4().hex}"
    allowed = _allowed_in_two_processes("10/minute", redis_url, key, 10)
    assert sum(allowed) == 10, allowed  # two API workers together, not 10 each
    # without Redis each process counts alone: the budget doubles (why production sets [redis] url)
    assert _allowed_in_two_processes("10/minute", "", key, 10) == [10, 10]


def test_redis_down_lets_requests_through():
    rl = RateLimiter("1/minute", f"redis://127.0.0.1:{free_port()}/0")

    async def three():
        return [await rl.check("token:x") for _ in range(3)]

    assert asyncio.run(three()) == [None, None, None]
