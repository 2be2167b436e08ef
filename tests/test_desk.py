"""The desk service on the bus: P&L equals the sum of its attribution, marks equal the positions priced
independently from the ticks, on the embedded bus and on Redis; a consumer restarted mid-stream resumes where it
stopped; a consumer behind a trimmed stream gets a gap message; the demo book's seeding, removal and its absence
on PostgreSQL unless forced."""

from __future__ import annotations

import pytest

from aitrade import bus, config, desk, store
from aitrade.auth import Principal
from aitrade.marketdata import SyntheticMarket, run_feed

DAY = "2012-06-01"
MARKET = SyntheticMarket(seed=7)


@pytest.fixture(params=["embedded", "redis"])
def platform_bus(request, sqlite_db, monkeypatch):
    "A migrated SQLite database with the demo book, and the platform bus (embedded or Redis), emptied."
    if request.param == "redis":
        monkeypatch.setenv("AITRADE_REDIS__URL", request.getfixturevalue("redis_url"))
    config.reload_settings()
    store.upgrade()
    b = bus.get_bus()
    for s in desk.STREAM_RIGHTS:
        b.delete(s)
    assert desk.seed_demo({s: MARKET.chain(s, DAY) for s in ("AAPL", "IBM")}) == 6
    yield b
    for s in desk.STREAM_RIGHTS:
        b.delete(s)


def _mids(ticks) -> dict:
    return {
        desk.contract_key(t["symbol"], t["option_type"], t["expiry"], t["strike"]): desk.usable_mid(
            t["bid"], t["ask"]
        )
        for t in ticks
        if t["type"] == "quote"
    }


def _check_pnl(msg: dict, mids: dict) -> None:
    for part in [msg, *msg["by_underlying"].values(), *msg["by_strategy"].values()]:
        for att in part["attribution"].values():
            assert abs(sum(att[k] for k in desk.PARTS) - att["total"]) < 1e-9
    marked = [p for p in msg["positions"] if p["mark_source"] == "quote"]
    assert len(marked) == 6
    for p in marked:
        assert (
            abs(p["mark"] - mids[desk.contract_key(p["symbol"], p["option_type"], p["expiry"], p["strike"])])
            < 1e-12
        )
        assert abs(p["unrealized"] - (p["mark"] - p["avg_cost"]) * p["quantity"] * p["multiplier"]) < 1e-9
    assert abs(msg["total"] - sum(p["total"] for p in msg["positions"])) < 1e-9


def test_desk_publishes_pnl_equal_to_its_attribution(platform_bus):
    ticks = list(MARKET.feed(["AAPL", "IBM"], DAY, interval_s=300).ticks())
    half = len(ticks) // 2
    for t in ticks:
        t["replay"] = {"of": DAY, "speed": 1.0, "source": "synthetic"}
    d = desk.Desk(throttle_s=0)
    msgs, sub = [], platform_bus.subscribe("ticks", last_id="0", block_ms=0)
    for seen in (ticks[:half], ticks):
        for t in seen[len(ticks[:half]) if seen is ticks else 0 :]:
            platform_bus.publish("ticks", t)
        for _, t in sub:  # the desk reads the bus, where it stopped
            d.on_tick(t)
        assert set(d.publish()) >= {desk.PNL_STREAM, desk.GREEKS_STREAM, desk.LIMITS_STREAM}
        msgs.append(list(desk.follow(desk.PNL_STREAM, "0", block_ms=0))[-1][1])
        _check_pnl(msgs[-1], _mids(seen))
    first, second = msgs
    assert (
        second["replay"] == {"of": DAY, "speed": 1.0, "source": "synthetic"}
        and second["as_of"] > first["as_of"]
    )
    assert abs(second["total"] - first["total"] - second["attribution"]["since_last"]["total"]) < 1e-9
    assert abs(second["attribution"]["since_open"]["total"] - (second["total"] - first["total"])) < 1e-9
    assert second["attribution"]["since_last"]["delta"] != 0.0
    g = next(iter(platform_bus.subscribe(desk.GREEKS_STREAM, last_id="0", block_ms=0)))[1]
    assert set(g["by_underlying"]) == {"AAPL", "IBM"} and g["total"]["delta_ccy"] is not None
    ks = next(iter(platform_bus.subscribe(desk.KILLSWITCH_STREAM, last_id="0", block_ms=0)))[1]
    assert ks["engaged"] is False


def test_desk_run_and_a_consumer_restarted_mid_stream(platform_bus):
    import threading

    run_feed(MARKET.feed(["AAPL", "IBM"], DAY, interval_s=600), bus=platform_bus)
    d, stop = desk.Desk(throttle_s=0.05), threading.Event()
    th = threading.Thread(target=d.run, kwargs=dict(stop=stop, block_ms=50), daemon=True)
    th.start()
    try:
        first = []
        for mid, msg in desk.follow(desk.PNL_STREAM, "0", block_ms=10_000):
            first.append((mid, msg))
            if len(first) == 3:
                break
        last_id = first[-1][0]  # the consumer stops here ...
        import time

        time.sleep(0.5)
    finally:
        stop.set()
        th.join(10)
    everything = list(platform_bus.subscribe(desk.PNL_STREAM, last_id="0", block_ms=0))
    resumed = list(desk.follow(desk.PNL_STREAM, last_id, block_ms=0))  # ... and resumes where it stopped
    assert [m for m, _ in first] + [m for m, _ in resumed] == [m for m, _ in everything]
    assert len(resumed) >= 1 and all(r[1]["type"] == "pnl" for r in resumed)


def test_a_consumer_behind_a_trimmed_stream_is_told(platform_bus):
    ids = [platform_bus.publish("pnl", {"type": "pnl", "n": i}) for i in range(10)]
    assert [m["type"] for _, m in desk.follow("pnl", ids[2], block_ms=0)] == ["pnl"] * 7
    if isinstance(platform_bus, bus.SqliteBus):
        platform_bus.trim("pnl", 5)
    else:
        platform_bus.r.xtrim(platform_bus.prefix + "pnl", maxlen=5, approximate=False)
    got = [m for _, m in desk.follow("pnl", ids[2], block_ms=0)]
    assert got[0] == {"type": "gap", "stream": "pnl", "after": ids[2]} and [m["n"] for m in got[1:]] == [
        5,
        6,
        7,
        8,
        9,
    ]
    assert [m["n"] for _, m in desk.follow("pnl", ids[6], block_ms=0)] == [7, 8, 9]  # nothing missed after 6
    assert [m["n"] for _, m in desk.follow("pnl", "0", block_ms=0)] == [
        5,
        6,
        7,
        8,
        9,
    ]  # "every kept one": no gap


def test_demo_book_removal_is_audited(platform_bus):
    from aitrade import audit

    assert desk.seed_demo({"AAPL": MARKET.chain("AAPL", DAY)}) == 0  # once only
    with pytest.raises(Exception, match="orders:cancel"):
        desk.remove_demo(Principal.with_roles("mia", ["manager"]))
    assert desk.remove_demo(Principal.with_roles("rita", ["risk"])) == 6
    with store.session_scope() as s:
        assert desk.book_positions(s).empty
        assert [r.action for r in audit.query(s, action="demo.removed")] == ["demo.removed"]


def test_no_demo_book_on_postgresql_unless_forced(pg_url, monkeypatch):
    monkeypatch.setenv("AITRADE_DATABASE__URL", pg_url)
    config.reload_settings()
    store.upgrade(url=pg_url)
    chains = {"AAPL": MARKET.chain("AAPL", DAY)}
    with pytest.raises(Exception, match="force"):
        desk.seed_demo(chains)
    with store.session_scope() as s:
        assert desk.book_positions(s).empty
    assert desk.seed_demo(chains, force=True) == 3


def test_the_websocket_relays_the_desk_streams_with_resume_and_gaps(platform_bus):
    from fastapi.testclient import TestClient
    from starlette.testclient import WebSocketDenialResponse

    from aitrade import api
    from aitrade.auth import ROLES

    P = "/services/aitrade-api"
    tokens = {f"tok-{r}": api.hub_model(f"u-{r}", ROLES[r]) for r in ("manager", "auditor")}
    app = api.create_app(api.StaticResolver(tokens), prefix=P)
    H = {"Authorization": "token tok-manager"}
    run_feed(MARKET.feed(["AAPL", "IBM"], DAY, interval_s=1800), bus=platform_bus)
    d = desk.Desk(throttle_s=0)
    for _, t in platform_bus.subscribe("ticks", last_id="0", block_ms=0):
        d.on_tick(t)
    try:
        with TestClient(app) as c:
            with c.websocket_connect(P + "/v1/stream?streams=pnl,greeks", headers=H) as ws:
                assert ws.receive_json()["streams"] == ["pnl", "greeks"]
                first = d.publish(force=True)
                got = {m["stream"]: m for m in (ws.receive_json(), ws.receive_json())}
                assert got["pnl"]["id"] == first["pnl"] and got["pnl"]["data"]["n_positions"] == 6
            second = d.publish(force=True)  # published while the client was away
            url = P + f"/v1/stream?streams=pnl&since=pnl:{first['pnl']}"
            with c.websocket_connect(url, headers=H) as ws:  # reconnects and resumes
                ws.receive_json()
                assert ws.receive_json()["id"] == second["pnl"]
            for _ in range(3):
                d.publish(force=True)
            if isinstance(platform_bus, bus.SqliteBus):
                platform_bus.trim("pnl", 1)
            else:
                platform_bus.r.xtrim(platform_bus.prefix + "pnl", maxlen=1, approximate=False)
            with c.websocket_connect(url, headers=H) as ws:  # too far behind: told so
                ws.receive_json()
                assert ws.receive_json() == {"type": "gap", "stream": "pnl", "after": first["pnl"]}
                assert ws.receive_json()["stream"] == "pnl"
            with pytest.raises(WebSocketDenialResponse):  # the auditor has no marketdata:read
                with c.websocket_connect(P + "/v1/stream?streams=ticks&token=tok-auditor"):
                    pass
            with c.websocket_connect(P + "/v1/stream?token=tok-auditor") as ws:  # every stream it may read
                assert ws.receive_json()["streams"] == [s for s in desk.STREAM_RIGHTS if s != "ticks"]
    finally:
        app.state.fanout.close()


def test_up_runs_the_desk_which_seeds_the_demo_book_and_publishes(tmp_path):
    from hubutil import run_cli

    from aitrade import platform

    (tmp_path / "settings.ini").write_text(
        "[dask]\n# free ports\nscheduler_port = 0\ndashboard_port = 0\n[replay]\n# a fast replay of one day\n"
        "day = 2012-06-29\nspeed = 100000\nsymbols = SPX\ninterval_s = 600\nn_options = 4\n"
    )
    cfg = config.load_settings(False)
    desk_svc = [s for s in platform.plan_services(cfg, with_hub=False) if s.name == "desk"]
    assert desk_svc and desk_svc[0].cmd[-2:] == ["desk", "run"]
    r = run_cli("up", "--no-hub", "--no-scheduler", "--exit-after", "25", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (tmp_path / "var" / "log" / "desk.log").read_text()
    assert "desk: demo book seeded (3 orders" in log, log
    b = bus.SqliteBus(tmp_path / "var" / "bus.db")
    pnl = [m for _, m in b.subscribe("pnl", "0", block_ms=100)]
    assert pnl, log
    last = pnl[-1]
    assert last["by_strategy"]["demo"]["n_positions"] == 3 and last["replay"]["of"] == "2012-06-29"
    att = last["attribution"]["since_open"]
    assert abs(sum(att[k] for k in desk.PARTS) - att["total"]) < 1e-9
    r = run_cli("demo", "remove", "--user", "rita", "--role", "risk", cwd=tmp_path)
    assert r.returncode == 0 and "3 orders removed" in r.stdout, r.stdout + r.stderr
