"""The desk service on the bus: P&L equals the sum of its attribution, marks equal the positions priced
independently from the ticks, on the embedded bus and on Redis; a consumer restarted mid-stream resumes where it
stopped; a consumer behind a trimmed stream gets a gap message; the demo book's seeding, removal and its absence
on PostgreSQL unless forced."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from aitrade import bus, config, desk, store
from aitrade.auth import Principal
from aitrade.execution import accounting
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
    for s in [*desk.STREAM_RIGHTS, desk.MARKS_STREAM]:
        b.delete(s)
    assert desk.seed_demo({s: MARKET.chain(s, DAY) for s in ("AAPL", "IBM")}) == 6
    yield b
    for s in [*desk.STREAM_RIGHTS, desk.MARKS_STREAM]:
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
        assert accounting.positions(s, by_strategy=True).empty
        assert [r.action for r in audit.query(s, action="demo.removed")] == ["demo.removed"]


def test_no_demo_book_on_postgresql_unless_forced(pg_url, monkeypatch):
    monkeypatch.setenv("AITRADE_DATABASE__URL", pg_url)
    config.reload_settings()
    store.upgrade(url=pg_url)
    chains = {"AAPL": MARKET.chain("AAPL", DAY)}
    with pytest.raises(Exception, match="force"):
        desk.seed_demo(chains)
    with store.session_scope() as s:
        assert accounting.positions(s, by_strategy=True).empty
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
    r = run_cli("up", "--no-hub", "--no-scheduler", "--exit-after", "45", cwd=tmp_path)
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


# -- the content of the limits, orders and jobs streams; the model mark; a restart from the marks snapshot ------

EMBEDDED = pytest.mark.parametrize("platform_bus", ["embedded"], indirect=True)


def _feed(b, ticks) -> desk.Desk:
    "Publish `ticks` with a replay mapping on `b` and return a desk that has read them from the bus."
    for t in ticks:
        b.publish("ticks", {**t, "replay": {"of": DAY, "speed": 1.0, "source": "synthetic"}})
    d = desk.Desk(throttle_s=0)
    for _, t in b.subscribe("ticks", last_id="0", block_ms=0):
        d.on_tick(t)
    return d


def _store_curve():
    from aitrade import rates

    with store.session_scope() as s:
        rates.store_curve(s, rates.synthetic_curve(DAY))
        return rates.curve(s, DAY)


def _metrics(ticks, curve):
    "The book's limit metrics from the ticks, computed here: `risk.pre_trade_metrics` of the positions at the mids."
    import numpy as np
    import pandas as pd

    from aitrade import risk
    from aitrade.pricing.iv import implied_vol_bsm

    now = pd.Timestamp(ticks[-1]["ts"]).to_pydatetime()
    spot = {t["symbol"]: t["price"] for t in ticks if t["type"] == "underlying"}
    mids = _mids(ticks)
    with store.session_scope() as s:
        pos = accounting.positions(s)
    pos = pos[pos["quantity"] != 0].reset_index(drop=True)
    pf = accounting.portfolio_from_positions(pos, now)
    vol = [
        implied_vol_bsm(
            mids[desk.contract_key(p.symbol, p.option_type, p.expiry, p.strike)],
            spot[p.symbol],
            p.strike,
            T,
            curve.zero(T),
            0.0,
            p.option_type == "C",
        )
        for p, T in zip(pos.itertuples(), pf.expiry_t, strict=True)
    ]
    syms = np.unique(pf.symbol)
    mkt = risk.MarketState(
        symbols=syms,
        spot=np.array([spot[s] for s in syms]),
        r=curve,
        q=np.zeros(len(syms)),
        vol=np.array(vol),
    )
    return risk.pre_trade_metrics(pf, mkt)


@EMBEDDED
def test_limits_messages_carry_each_limits_value_utilisation_and_breach(platform_bus):
    from aitrade import limits

    curve = _store_curve()
    ticks = list(MARKET.feed(["AAPL", "IBM"], DAY, interval_s=1800).ticks())
    m = _metrics(ticks, curve)
    wanted = {  # name -> (scope, metric, limit as a multiple of the current |value|): 0.5 is a breach
        "portfolio:delta": ("portfolio", "delta", 2.0),
        "portfolio:vega": ("portfolio", "vega", 0.5),
        "portfolio:loss": ("portfolio", "loss", 3.0),
        "AAPL:notional": ("AAPL", "notional", 0.5),
        "IBM:gamma": ("IBM", "gamma", 2.0),
    }
    risk_officer = Principal.with_roles("rita", ["risk"])
    with store.session_scope() as s:
        for scope, metric, f in wanted.values():
            assert abs(m.value(scope, metric)) > 0
            limits.set_limit(s, risk_officer, scope, metric, f * abs(m.value(scope, metric)), "test")
    _feed(platform_bus, ticks).publish(force=True)
    msg = list(desk.follow(desk.LIMITS_STREAM, "0", block_ms=0))[-1][1]
    got = {lim["name"]: lim for lim in msg["limits"]}
    assert set(got) == set(wanted)
    for name, (scope, metric, f) in wanted.items():
        v = m.value(scope, metric)
        assert got[name]["value"] == pytest.approx(v, rel=1e-9)
        assert got[name]["max_abs"] == pytest.approx(f * abs(v), rel=1e-12)
        assert got[name]["utilisation"] == pytest.approx(1 / f, rel=1e-9)
        assert got[name]["breached"] is (f < 1), name
    assert [b.split()[:2] for b in sorted(msg["breaches"])] == [
        ["limit", "AAPL:notional"],
        ["limit", "portfolio:vega"],
    ]
    assert msg["as_of"] == ticks[-1]["ts"] and msg["replay"]["of"] == DAY


def _events(stream: str) -> list[dict]:
    return [e for _, m in desk.follow(stream, "0", block_ms=0) for e in m["events"]]


@EMBEDDED
def test_the_orders_stream_carries_each_state_change_once_in_order(platform_bus, monkeypatch):
    import pandas as pd

    from aitrade.execution import (
        OrderEvent,
        OrderRequest,
        PaperBroker,
        Quote,
        approve_order,
        process_fills,
        reject_order,
        submit_order,
    )

    monkeypatch.setenv("AITRADE_RISK__APPROVAL_NOTIONAL", "0")  # every order waits for a second pair of eyes
    config.reload_settings()
    d = _feed(platform_bus, list(MARKET.feed(["AAPL"], DAY, interval_s=1800).ticks()))
    d.publish(force=True)  # the demo book's history is older than the desk's first cycle: not sent
    assert _events(desk.ORDERS_STREAM) == []
    trader, risk_officer = Principal.with_roles("tom", ["trader"]), Principal.with_roles("rita", ["risk"])
    c = next(desk.demo_contracts(MARKET.chain("AAPL", DAY)).itertuples(index=False))
    ts = pd.Timestamp(c.ts).to_pydatetime()
    quote = Quote(c.bid, c.ask, 10_000, 10_000, c.underlying_price, ts, c.div_yield, c.rate)
    tape = lambda _s, _o, _now: quote
    broker = PaperBroker(quotes=tape)
    req = lambda cid, side: OrderRequest(
        cid, "AAPL", side, 1, c.option_type, pd.Timestamp(c.expiry).date(), float(c.strike), strategy="t"
    )
    with store.session_scope() as s:
        a = submit_order(s, trader, req("t-1", "buy"), quotes=tape, now=ts).id
    d.publish(force=True)
    with store.session_scope() as s:
        approve_order(s, risk_officer, a, "ok", broker=broker)
    d.publish(force=True)
    with store.session_scope() as s:
        assert process_fills(s, broker, ts, [a])
    d.publish(force=True)
    with store.session_scope() as s:  # two changes of another order within one cycle
        b = submit_order(s, trader, req("t-2", "sell"), quotes=tape, now=ts).id
        reject_order(s, risk_officer, b, "too late")
    d.publish(force=True)
    d.publish(force=True)  # nothing new: no message
    with store.session_scope() as s:
        rows = s.scalars(sa.select(OrderEvent).where(OrderEvent.order_id.in_([a, b])).order_by(OrderEvent.id))
        want = [(e.order_id, e.from_state, e.to_state, e.actor) for e in rows]
    got = [(e["order_id"], e["from_state"], e["to_state"], e["actor"]) for e in _events(desk.ORDERS_STREAM)]
    assert got == want
    assert got == [
        (a, None, "new", "tom"),
        (a, "new", "pending_approval", "system:pre-trade"),
        (a, "pending_approval", "approved", "rita"),
        (a, "approved", "sent", "system:order-router"),
        (a, "sent", "filled", "system:broker"),
        (b, None, "new", "tom"),
        (b, "new", "pending_approval", "system:pre-trade"),
        (b, "pending_approval", "rejected", "rita"),
    ]
    msgs = [m for _, m in desk.follow(desk.ORDERS_STREAM, "0", block_ms=0)]
    assert len(msgs) == 4 and all(m["replay"]["of"] == DAY and m["as_of"] for m in msgs)


@EMBEDDED
def test_the_jobs_stream_carries_each_run_state_change_once(platform_bus, tmp_path):
    from aitrade import jobs
    from aitrade.store import utcnow

    ops = Principal.with_roles("olga", ["ops"])
    (tmp_path / "pipelines.yaml").write_text("pipelines:\n  t:\n    notebooks:\n      a: {path: a.ipynb}\n")
    spec = jobs.get_pipeline("t", tmp_path / "pipelines.yaml")
    d = desk.Desk(throttle_s=0)
    d.publish(force=True)
    first = jobs.create_run(spec, principal=ops)
    d.publish(force=True)
    assert jobs.claim_run(first, "test-driver", 60) is not None
    d.publish(force=True)
    with store.session_scope() as s:  # the driver's last write: the run's outcome
        r = s.get(jobs.JobRun, first)
        r.status, r.finished_at = "succeeded", utcnow()
    d.publish(force=True)
    second = jobs.create_run(spec, principal=ops)
    d.publish(force=True)
    assert jobs.cancel(second, principal=ops) == "cancelled"
    d.publish(force=True)
    d.publish(force=True)  # nothing changed: no message
    got = [(e["run_id"], e["pipeline"], e["status"]) for e in _events(desk.JOBS_STREAM)]
    assert got == [
        (first, "t", "queued"),
        (first, "t", "running"),
        (first, "t", "succeeded"),
        (second, "t", "queued"),
        (second, "t", "cancelled"),
    ]
    ev = _events(desk.JOBS_STREAM)
    assert ev[1]["started_at"] and ev[2]["finished_at"] and ev[4]["error"] == "cancelled on request"


@EMBEDDED
def test_a_position_without_a_usable_quote_is_marked_at_the_stored_surface(platform_bus):
    import pandas as pd

    from aitrade import surfaces
    from aitrade.clock import time_to_expiry
    from aitrade.pricing.black import bsm_price

    curve = _store_curve()
    chain = MARKET.chain("AAPL", DAY)
    fit = surfaces.calibrate_chain(chain, heston=False, rate=curve)
    assert fit.ok, fit.error
    with store.session_scope() as s:
        surfaces.store_surface(s, fit)
    c = next(desk.demo_contracts(chain).itertuples(index=False))  # its quotes on the bus are unusable
    key = desk.contract_key("AAPL", c.option_type, c.expiry, c.strike)
    ticks = list(MARKET.feed(["AAPL", "IBM"], DAY, interval_s=1800).ticks())
    for t in ticks:
        if (
            t["type"] == "quote"
            and desk.contract_key(t["symbol"], t["option_type"], t["expiry"], t["strike"]) == key
        ):
            t["bid"], t["ask"] = t["ask"] + 1.0, t["ask"]  # crossed
    _feed(platform_bus, ticks).publish(force=True)
    msg = list(desk.follow(desk.PNL_STREAM, "0", block_ms=0))[-1][1]
    pos = {
        desk.contract_key(p["symbol"], p["option_type"], p["expiry"], p["strike"]): p
        for p in msg["positions"]
    }
    p = pos[key]
    assert p["mark_source"] == "model"
    assert sum(q["mark_source"] == "quote" for q in msg["positions"]) == 5
    S = [t["price"] for t in ticks if t["type"] == "underlying" and t["symbol"] == "AAPL"][-1]
    T = float(time_to_expiry(pd.Timestamp(ticks[-1]["ts"]).to_pydatetime(), c.expiry))
    vol = float(fit.vol(pd.Timestamp(c.expiry), float(c.strike)))
    want = float(bsm_price(S, float(c.strike), T, curve.zero(T), 0.0, vol, c.option_type == "C"))
    assert p["mark"] == pytest.approx(want, rel=1e-12) and p["vol"] == pytest.approx(vol, rel=1e-12)
    assert p["unrealized"] == pytest.approx(
        (want - p["avg_cost"]) * p["quantity"] * p["multiplier"], rel=1e-9
    )
    att = msg["attribution"]["since_open"]
    assert abs(sum(att[k] for k in desk.PARTS) - att["total"]) < 1e-9


def test_a_restarted_desk_resumes_from_its_marks_snapshot(platform_bus):
    import threading

    ticks = list(MARKET.feed(["AAPL", "IBM"], DAY, interval_s=600).ticks())
    half = len(ticks) // 2
    ids = [platform_bus.publish("ticks", t) for t in ticks[:half]]
    d, stop = desk.Desk(throttle_s=0.01, snapshot_s=0.0), threading.Event()
    th = threading.Thread(target=d.run, kwargs=dict(stop=stop, block_ms=50), daemon=True)
    th.start()
    try:
        for _, snap in desk.follow(desk.MARKS_STREAM, "0", block_ms=10_000):
            if snap["ticks_id"] == ids[-1]:
                break
    finally:
        stop.set()
        th.join(10)
    assert platform_bus.length(desk.MARKS_STREAM) == 1  # the latest snapshot only
    ids += [platform_bus.publish("ticks", t) for t in ticks[half:]]
    restarted = desk.Desk(throttle_s=0)
    assert restarted.resume() == ids[half - 1]
    read = 0
    for _, t in platform_bus.subscribe("ticks", last_id=ids[half - 1], block_ms=0):
        restarted.on_tick(t)
        read += 1
    assert read == len(ticks) - half  # only the ticks after the snapshot
    everything = desk.Desk(throttle_s=0)
    assert everything.resume() == ids[half - 1]
    everything.marks = desk.Marks()
    for _, t in platform_bus.subscribe("ticks", last_id="0", block_ms=0):
        everything.marks.update(t)
    a, b = restarted.marks, everything.marks
    assert (a.spot, a.quotes, a.as_of, a.replay, a.n) == (b.spot, b.quotes, b.as_of, b.replay, b.n)
    assert restarted.publish(force=True)[desk.PNL_STREAM]
    empty = desk.Desk(throttle_s=0)
    platform_bus.delete(desk.MARKS_STREAM)
    assert empty.resume() == "0" and empty.marks.n == 0  # no snapshot: every kept tick
