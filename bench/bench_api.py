"""API benchmark: latency p50/p99 at a fixed offered rate (1,000 requests/s by default) and closed-loop
throughput of the trading API (aitrade.api) running as a real JupyterHub service, through the Hub's proxy and
direct to the service; order submission; WebSocket tick latency (bus publish -> client receive).

Peers, measured in the same run on the same machine:
  * reads: JupyterHub's own REST API `GET /hub/api/user` (token lookup + its database), through the same proxy /
    direct to the Hub's port, at the same rate;
  * order submission: JupyterHub's `POST /hub/api/users/<u>/activity` (a database write in the Hub), same rate;
  * WebSocket: a plain `aitrade.bus` subscriber on the same bus, without the API in between.

The load generator is a separate process (asyncio, raw HTTP/1.1 keep-alive connections) and open-loop: request i
is due at t0 + i/rate and its latency is counted from that due time, so a stalled server is not hidden by the
generator waiting (no coordinated omission). `ratio` = peer / aitrade latency (or aitrade / peer throughput), so
> 1 means aitrade is better.

The platform database is PostgreSQL (a fresh schema of AITRADE_TEST_DATABASE_URL, default the local server's
`test` database). The main table runs the API with 2 worker processes and the embedded bus; the scaling rows
repeat the limits read with 1, 2 and 4 workers (the 1-worker Hub runs its bus on Redis, AITRADE_TEST_REDIS_URL's
server, database 13, and gives the Redis WebSocket row).

Targets (issue 15): reads p99 <= 50 ms at 1,000 req/s through the proxy, closed loop >= 3x JupyterHub's own API;
orders p99 <= 50 ms at 200/s through the proxy, >= 1,000 orders/s closed loop, 0 errors; WebSocket p99 <= 10 ms
at 100 ticks/s on both buses.

The closed-loop order rows also give the CPU each part spent per request (the API service, the Hub, its proxy,
PostgreSQL, the load generator; `load_with_cpu`), for aitrade and the peer, and the throughput that cost allows
on this machine's cores: where an order's time goes, and how far the CPU alone lets a closed loop go.

Run: `.venv/bin/python bench/bench_api.py [--quick] [--orders]` (starts its own Hub on free ports in a temporary
folder; `--orders`: the order rows alone).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import requests
from timing import row  # the timer and row of every bench file

ROOT = Path(__file__).resolve().parents[1]
P = "/services/aitrade-api"
TARGET_P99_MS = 50.0


# ------------------------------------------------------------------------------------------------------------
# load generator (runs in its own process: `bench_api.py --loadgen '<json>'`)
# ------------------------------------------------------------------------------------------------------------
async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdr = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    if "content-length" in hdr:
        await reader.readexactly(int(hdr["content-length"]))
    elif hdr.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


def _request_bytes(cfg: dict, i: int) -> bytes:
    body = b""
    if cfg.get("body") is not None:
        body = json.dumps(cfg["body"]).replace("__N__", f"{cfg['tag']}-{i}").encode()
    lines = [f"{cfg['method']} {cfg['path']} HTTP/1.1", f"Host: {cfg['host']}:{cfg['port']}",
             f"Authorization: token {cfg['token']}", "Connection: keep-alive"]  # fmt: skip
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _loadgen(cfg: dict) -> dict:
    rate, duration, conns = cfg.get("rate"), float(cfg["duration"]), int(cfg["conns"])
    n_total = int(rate * duration) if rate else None
    lat, statuses, nxt = [], {}, [0]
    # the generator's CPU for the load alone, after its imports (`load_with_cpu`)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter() + 0.2
    t_end = t0 + duration

    async def worker():
        reader, writer = await asyncio.open_connection(cfg["host"], cfg["port"])
        try:
            while True:
                i = nxt[0]
                if (n_total is not None and i >= n_total) or time.perf_counter() > t_end + (5 if rate else 0):
                    return
                nxt[0] += 1
                due = t0 + i / rate if rate else time.perf_counter()
                if rate:
                    wait = due - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                writer.write(_request_bytes(cfg, i))
                await writer.drain()
                st = await _read_response(reader)
                done = time.perf_counter()
                if done > t_end + 5:
                    return
                lat.append(done - due)
                statuses[st] = statuses.get(st, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(conns)))
    elapsed = max(time.perf_counter() - t0, 1e-9)
    a = np.array(lat) * 1000
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": (ru.ru_utime + ru.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
        "n": len(lat),
        "p50_ms": float(np.percentile(a, 50)) if a.size else None,
        "p99_ms": float(np.percentile(a, 99)) if a.size else None,
        "achieved_rps": len(lat) / min(elapsed, duration + 5) if not rate else len(lat) / duration,
        "statuses": {str(k): v for k, v in statuses.items()},
    }


def load(cfg: dict) -> dict:
    "Run one load pattern in a separate process; its result."
    out = subprocess.run(
        [sys.executable, __file__, "--loadgen", json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=cfg["duration"] + 120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------------
# the system under test: a Hub with the API service, in a temporary project folder
# ------------------------------------------------------------------------------------------------------------
def _pg_schema(create: bool, schema: str) -> str:
    "The URL of a fresh PostgreSQL schema of the bench (created), or drop it."
    import sqlalchemy as sa

    base = os.environ.get("AITRADE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    eng = sa.create_engine(base, poolclass=sa.pool.NullPool)
    with eng.begin() as c:
        c.exec_driver_sql(
            f'CREATE SCHEMA "{schema}"' if create else f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'
        )
    eng.dispose()
    return (
        sa.make_url(base)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


def _start_hub(tmp: Path, workers: int = 1, database_url: str | None = None, redis_url: str | None = None):
    sys.path.insert(0, str(ROOT / "tests"))
    from hubutil import Hub, free_port

    (tmp / "jobs").mkdir()
    api_port = free_port()
    # the load is the point here: the per-token rate limit ([api] rate_limit, tested in test_api_edges) is off
    env = {
        "AITRADE_API_PORT": str(api_port),
        "AITRADE_API_LOG_LEVEL": "warning",
        "AITRADE_API__RATE_LIMIT": "",
        "AITRADE_API__WORKERS": str(workers),
        **({"AITRADE_DATABASE__URL": database_url} if database_url else {}),
        **({"AITRADE_REDIS__URL": redis_url} if redis_url else {}),
    }
    hub = Hub(tmp, env=env)
    hub.api_port = api_port
    hub.hub_port = int(hub.env["AITRADE_HUB_INTERNAL_PORT"])
    pw = hub.prepare()
    hub.start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(hub.url + P + "/health", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    else:
        hub.stop()
        raise RuntimeError("the API service did not come up")
    s, r = hub.login("admin", pw)
    admin = s.post(hub.url + "/hub/api/users/admin/tokens", headers={"X-XSRFToken": s.cookies.get("_xsrf")},
                   json={"note": "bench", "expires_in": 3600}).json()["token"]  # fmt: skip
    hub.api("POST", "/users/bench-trader", admin)
    hub.api("POST", "/groups/trader/users", admin, json={"users": ["bench-trader"]})
    hub.trader = hub.api("POST", "/users/bench-trader/tokens", admin, json={"expires_in": 3600}).json()[
        "token"
    ]
    code = (
        "import datetime as dt; from aitrade import store; from aitrade.marketdata import OptionQuote, ensure_underlyings\n"
        "now = store.utcnow(); exp = (now + dt.timedelta(days=120)).date()\n"
        "with store.session_scope() as s:\n"
        "    ensure_underlyings(s, ['SPX'])\n"
        "    for k in range(40):\n"
        "        s.add(OptionQuote(underlying='SPX', quote_date=now.date(), ts=now, expiry=exp, strike=80.0 + k,"
        " option_type='C', bid=4.9, ask=5.1, bid_size=10, ask_size=7, underlying_price=100.0))\n"
        "print(exp.isoformat())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=hub.env, cwd=tmp, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    hub.expiry = out.stdout.strip().splitlines()[-1]
    return hub


def _ws_latency(hub, n: int, rate: float, redis_url: str | None = None) -> tuple[dict, dict]:
    "p50/p99 ms publish -> receive through the proxy and the API, and for a plain bus subscriber (the peer)."
    from websockets.sync.client import connect

    from aitrade.bus import RedisBus, SqliteBus

    def make_bus():
        return RedisBus(redis_url) if redis_url else SqliteBus(hub.root / "var" / "bus.db")

    b = make_bus()
    api_lat, bus_lat, ready = [], [], threading.Event()

    def api_client():
        url = hub.url.replace("http://", "ws://") + P + "/v1/stream?streams=ticks"
        with connect(url, additional_headers={"Authorization": f"token {hub.trader}"}) as ws:
            json.loads(ws.recv(timeout=10))
            ready.set()
            while len(api_lat) < n:
                m = json.loads(ws.recv(timeout=30))
                api_lat.append(time.time() - m["data"]["t_pub"])

    def bus_client():
        sub = make_bus().subscribe("ticks", "$", block_ms=30_000)
        for _, m in sub:
            bus_lat.append(time.time() - m["t_pub"])
            if len(bus_lat) >= n:
                return

    th = [threading.Thread(target=api_client, daemon=True), threading.Thread(target=bus_client, daemon=True)]
    for t in th:
        t.start()
    ready.wait(30)
    time.sleep(0.5)
    for i in range(n):
        b.publish("ticks", {"symbol": "SPX", "price": 100.0 + i * 1e-3, "t_pub": time.time()})
        time.sleep(1.0 / rate)
    for t in th:
        t.join(30)

    def pct(x):
        a = np.array(x) * 1000
        return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(a)}

    return pct(api_lat), pct(bus_lat)


def _read_rows(hub, base: dict, rate: float, where_ports) -> list[dict]:
    "p50/p99 of the hot reads at `rate` requests/s, beside JupyterHub's own `GET /hub/api/user`."
    rows = []
    reads = [
        ("GET /v1/risk/limits", f"{P}/v1/risk/limits"),
        ("GET /v1/orders?limit=20", f"{P}/v1/orders?limit=20"),
        ("GET /v1/marketdata/SPX/chain", f"{P}/v1/marketdata/SPX/chain?date={time.strftime('%Y-%m-%d', time.gmtime())}"),
    ]  # fmt: skip
    for _, path in reads:  # warm up: token cache, database pool, the answers' caches
        load({**base, "method": "GET", "path": path, "port": hub.port, "rate": 200, "duration": 1.0})
    for where, port, hub_port in where_ports:
        peer = load({**base, "method": "GET", "path": PEER_READ, "port": hub_port, "rate": rate})
        peer_name = f"JupyterHub GET /hub/api/user ({where})"
        for name, path in reads:
            r = load({**base, "method": "GET", "path": path, "port": port, "rate": rate})
            ok = set(r["statuses"]) == {"200"}
            bench = f"api {name} via {where} @{rate:.0f} rps"
            rows.append(row(bench, "p50 ms", r["p50_ms"], peer_name, peer["p50_ms"], higher_is_better=False))
            rows.append(row(bench, "p99 ms" + ("" if ok else f" (statuses {r['statuses']})"), r["p99_ms"], peer_name,
                            peer["p99_ms"], target=f"p99 <= {TARGET_P99_MS:.0f} ms",
                            met=ok and r["p99_ms"] <= TARGET_P99_MS, higher_is_better=False))  # fmt: skip
    return rows


def _closed_loop_read(hub, base: dict, where: str, port: int, hub_port: int, need: float | None) -> tuple[dict, dict]:  # fmt: skip
    "Closed loop, 32 connections: the limits read and the peer's read."
    r = load(
        {**base, "method": "GET", "path": f"{P}/v1/risk/limits", "port": port, "rate": None, "conns": 32}
    )
    pr = load({**base, "method": "GET", "path": PEER_READ, "port": hub_port, "rate": None, "conns": 32})
    return r, pr


def _cpu_parts(hub) -> dict[str, list[psutil.Process]]:
    "The processes a request crosses, by part: the API service (its supervisor and workers), the Hub, its proxy, PostgreSQL."
    listening = {c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == hub.api_port}  # fmt: skip
    # the API: the Hub's child that is, or started, a process listening on its port, and all below it
    api, tree = [], []
    for child in psutil.Process(hub.proc.pid).children():
        below = child.children(recursive=True)
        tree += [child, *below]
        if listening & {child.pid, *(p.pid for p in below)}:
            api += [child, *below]
    return {
        "API service": api,
        "JupyterHub": [psutil.Process(hub.proc.pid)],
        "proxy": [p for p in tree if p.name() == "node"],
        "PostgreSQL": [p for p in psutil.process_iter() if p.name() == "postgres"],
    }


def _cpu_s(parts: dict[str, list[psutil.Process]]) -> dict[tuple[str, int], float]:
    out = {}
    for part, procs in parts.items():
        for p in procs:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            out[(part, p.pid)] = t.user + t.system
    return out


def load_with_cpu(hub, cfg: dict) -> tuple[dict, dict[str, float]]:
    """`load(cfg)` and the CPU seconds each part spent on it (`_cpu_parts`, plus the load generator's own): where
    a request's cost goes, and what the machine's cores allow at that cost (the CPU ceiling of a closed loop)."""
    parts = _cpu_parts(hub)
    before = _cpu_s(parts)
    r = load(cfg)
    after = _cpu_s(_cpu_parts(hub))  # PostgreSQL backends that started during the run count from zero
    spent = {part: 0.0 for part in parts}
    for (part, pid), t in after.items():
        spent[part] += t - before.get((part, pid), 0.0)
    spent["load generator"] = r["cpu_s"]
    return r, spent


def _cpu_rows(bench: str, r: dict, spent: dict, peer_name: str, pr: dict, peer_spent: dict) -> list[dict]:
    "Per request: CPU ms of each part, aitrade and the peer, and the throughput those costs allow on this machine."
    rows = []
    for part in spent:
        ours, theirs = spent[part] / max(r["n"], 1) * 1e3, peer_spent[part] / max(pr["n"], 1) * 1e3
        rows.append(
            row(bench, f"CPU ms per request: {part}", ours, peer_name, theirs, higher_is_better=False)
        )
    cores = os.cpu_count() or 1
    total = sum(spent.values()) / max(r["n"], 1)
    peer_total = sum(peer_spent.values()) / max(pr["n"], 1)
    rows.append(row(bench, f"CPU ceiling req/s ({cores} cores / CPU per request)", cores / total if total else None,
                    peer_name, cores / peer_total if peer_total else None))  # fmt: skip
    return rows


def _order_rows(hub, base: dict, where_ports, rates=(200.0, 1000.0)) -> list[dict]:
    "Orders at fixed rates (each a new client_order_id: a real order, pre-trade checks, audit) and closed loop."
    rows = []
    order = {"client_order_id": "__N__", "symbol": "SPX", "side": "buy", "quantity": 1, "option_type": "C",
             "expiry": hub.expiry, "strike": 100.0}  # fmt: skip
    activity = {"last_activity": "2024-01-02T00:00:00Z"}
    peer_path = "/hub/api/users/bench-trader/activity"
    # warm up, as the reads do: each worker's pools and caches. Through each way in: the proxy keeps only a few
    # connections to the API alive, and those may all have landed on one of its workers
    for _, port, _ in where_ports:
        load({**base, "method": "POST", "path": f"{P}/v1/orders", "port": port, "body": order,
              "tag": uuid.uuid4().hex[:8], "rate": 50, "duration": 2.0})  # fmt: skip
    for orate in (*rates, None):
        for where, port, hub_port in where_ports:
            if orate is None and where != "proxy":
                continue
            tag = uuid.uuid4().hex[:8]
            extra = {"rate": orate} if orate else {"rate": None, "conns": 32}
            r, spent = load_with_cpu(hub, {**base, **extra, "method": "POST", "path": f"{P}/v1/orders", "port": port, "body": order, "tag": tag})  # fmt: skip
            pr, peer_spent = load_with_cpu(hub, {**base, **extra, "method": "POST", "path": peer_path, "port": hub_port, "body": activity, "tag": tag})  # fmt: skip
            ok = set(r["statuses"]) == {"201"}
            peer_name = f"JupyterHub POST /hub/api/users/<u>/activity ({where})"
            st = "" if ok else f" (statuses {r['statuses']})"
            if orate is None:
                bench = f"api POST /v1/orders via {where}, closed loop 32 conns"
                rows.append(row(bench, "orders/s" + st, r["achieved_rps"], peer_name, pr["achieved_rps"],
                                target=">= 1000 orders/s, 0 errors", met=ok and r["achieved_rps"] >= 1000))  # fmt: skip
                rows.append(
                    row(bench, "p99 ms", r["p99_ms"], peer_name, pr["p99_ms"], higher_is_better=False)
                )
                rows += _cpu_rows(bench, r, spent, peer_name, pr, peer_spent)
                continue
            bench = f"api POST /v1/orders via {where} @{orate:.0f} rps"
            rows.append(row(bench, "p50 ms", r["p50_ms"], peer_name, pr["p50_ms"], higher_is_better=False))
            target = orate <= 200 and where == "proxy"
            rows.append(row(bench, "p99 ms" + st, r["p99_ms"], peer_name, pr["p99_ms"],
                            target=f"p99 <= {TARGET_P99_MS:.0f} ms" if target else "",
                            met=(ok and r["p99_ms"] <= TARGET_P99_MS) if target else None, higher_is_better=False))  # fmt: skip
            rows.append(row(bench, "achieved req/s", r["achieved_rps"], peer_name, pr["achieved_rps"]))
    return rows


def _ws_rows(hub, n: int, bus_name: str, redis_url: str | None = None) -> list[dict]:
    ws, busl = _ws_latency(hub, n=n, rate=100.0, redis_url=redis_url)
    bench = f"WebSocket tick publish -> client (via proxy, 100 ticks/s, {bus_name})"
    peer = f"aitrade.bus subscriber, no API (same {bus_name} bus)"
    return [
        row(bench, "p50 ms", ws["p50_ms"], peer, busl["p50_ms"], higher_is_better=False),
        row(bench, "p99 ms", ws["p99_ms"], peer, busl["p99_ms"], higher_is_better=False, target="p99 <= 10 ms",
            met=ws["p99_ms"] <= 10.0),
    ]  # fmt: skip


def _scaling_rows(hub, base: dict, rate: float, w: int) -> list[dict]:
    "The limits read through the proxy at `rate` and closed loop, with `w` API workers."
    r = load({**base, "method": "GET", "path": f"{P}/v1/risk/limits", "port": hub.port, "rate": rate})
    c, pc = _closed_loop_read(hub, base, "proxy", hub.port, hub.port, None)
    bench = f"scaling: GET /v1/risk/limits via proxy, {w} API worker{'s' if w > 1 else ''}"
    peer = "JupyterHub GET /hub/api/user (proxy)"
    return [
        row(bench, f"p99 ms @{rate:.0f} rps", r["p99_ms"], peer, None, higher_is_better=False),
        row(bench, "closed loop req/s", c["achieved_rps"], peer, pc["achieved_rps"]),
    ]


PEER_READ = "/hub/api/user"
MAIN_WORKERS = 2  # the API's processes in the main table: one per core of the 2-core machine it was sized on


def run(quick: bool = False, workers: tuple[int, ...] = (1, 2, 4), orders_only: bool = False) -> list[dict]:
    """The main table with `MAIN_WORKERS` API processes on PostgreSQL (reads, orders, WebSocket on the embedded
    bus), then the scaling rows (the limits read at 1,000 req/s and closed loop, through the proxy) for each
    count in `workers`; the 1-worker Hub runs on Redis and gives the Redis WebSocket row. `orders_only`: the
    order rows alone, with `MAIN_WORKERS` processes (for comparing versions of the order path)."""
    if orders_only:
        workers = (MAIN_WORKERS,)
    dur = 3.0 if quick else 10.0
    rate = 1000.0
    rows: list[dict] = []
    scaling: list[dict] = []
    redis_url = os.environ.get("AITRADE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/13"
    for w in sorted(set(workers) | {MAIN_WORKERS}, key=lambda w: (w != MAIN_WORKERS, w)):
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        main, use_redis = w == MAIN_WORKERS, w == 1
        with tempfile.TemporaryDirectory() as d:
            hub = _start_hub(Path(d), workers=w, database_url=_pg_schema(True, schema),
                             redis_url=redis_url if use_redis else None)  # fmt: skip
            try:
                base = {"host": "127.0.0.1", "token": hub.trader, "duration": dur, "conns": 64}
                proxy = ("proxy", hub.port, hub.port)
                direct = ("direct", hub.api_port, hub.hub_port)
                if orders_only:
                    rows += _order_rows(hub, base, (proxy, direct))
                elif main:
                    rows += _read_rows(hub, base, rate, (proxy, direct))
                    for where, port, hub_port in (proxy, direct):
                        r, pr = _closed_loop_read(hub, base, where, port, hub_port, None)
                        rows.append(row(f"api GET /v1/risk/limits via {where}, closed loop 32 conns", "throughput req/s",
                                        r["achieved_rps"], f"JupyterHub GET /hub/api/user ({where})", pr["achieved_rps"],
                                        target=">= 3x the peer", need=3.0))  # fmt: skip
                    scaling += _scaling_rows(hub, base, rate, w)  # before the orders leave work queued
                    rows += _order_rows(hub, base, (proxy, direct))
                    rows += _ws_rows(hub, 200 if quick else 1000, "embedded")
                else:
                    for _ in range(2):  # warm up
                        load({**base, "method": "GET", "path": f"{P}/v1/risk/limits", "port": hub.port, "rate": 200, "duration": 1.0})  # fmt: skip
                if use_redis and not orders_only:
                    rows += _ws_rows(hub, 200 if quick else 1000, "Redis", redis_url)
                if not main:
                    scaling += _scaling_rows(hub, base, rate, w)
            finally:
                hub.stop()
                _pg_schema(False, schema)
    return rows + scaling


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--loadgen":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        print(json.dumps(asyncio.run(_loadgen(json.loads(sys.argv[2])))))
        sys.exit(0)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import print_table

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print_table(run(quick="--quick" in sys.argv, orders_only="--orders" in sys.argv))
