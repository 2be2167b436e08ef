"""Backtests through the production order path, on SQLite and PostgreSQL: daily P&L equals the fills' cash
flows plus the change in marked value, limits / kill switch / failed calibration reject the backtest's orders
with the production reasons, approvals are granted by the named backtest policy, the rich/cheap strategy sells
the richest and buys the cheapest quote, the summary matches a hand computation, the same seed gives the same
result."""

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from aitrade import audit, backtest, config, execution, limits, marketdata, store, surfaces
from aitrade.auth import BACKTEST_POLICY, Principal
from aitrade.backtest import DayContext, RichCheap, performance_summary, run_backtest

RITA = Principal.with_roles("rita", ["risk"])
START, END = "2012-03-01", "2012-03-14"  # 10 trading days (the stock history ends in 2013)


def hand_daily_pnl(r) -> pd.Series:
    "Change in marked value (quantity x multiplier x mark) plus the day's cash flows of the fills."
    mv = (r.marks["quantity"] * r.marks["multiplier"] * r.marks["mark"]).groupby(r.marks["day"]).sum()
    f = r.fills
    cash = (-(f["qty"] * f["price"] * f["multiplier"]) - f["commission"] - f["fees"]).groupby(f["day"]).sum()
    days = pd.Index(r.days)
    mv = mv.reindex(days, fill_value=0.0)
    return mv - mv.shift(1, fill_value=0.0) + cash.reindex(days, fill_value=0.0)


def test_two_symbols_ten_days_daily_pnl_is_fills_plus_marks(db):
    with store.session_scope() as s:
        r = run_backtest("short_vol", ["SPX", "AAPL"], START, END, seed=0, session=s)
        stored = execution.list_orders(s)
        n_fills = s.execute(sa.select(sa.func.count()).select_from(execution.Fill)).scalar_one()
        n_quotes = s.execute(sa.select(sa.func.count()).select_from(marketdata.OptionQuote)).scalar_one()
    assert len(r.days) == 10
    # the production tables hold what the result reports
    assert len(stored) == len(r.orders) and n_fills == len(r.fills) and n_quotes > 10 * 2 * 400
    np.testing.assert_allclose(
        r.daily["total"].to_numpy(), hand_daily_pnl(r).to_numpy(), rtol=1e-9, atol=1e-6
    )
    assert r.summary["total_pnl"] == pytest.approx(r.daily["total"].sum())
    # both underlyings: a short straddle each (sold at the stored bid), hedged daily in the underlying
    opts = r.fills[r.fills["option_type"] != "S"]
    assert set(opts["symbol"]) == {"SPX", "AAPL"}
    first = opts[opts["day"] == r.days[0]]
    assert len(first) == 4 and (first["side"] == "sell").all()
    with store.session_scope() as s:
        for f in first.itertuples():
            q = marketdata.quote(s, f.symbol, f.expiry, f.strike, f.option_type, as_of=f.ts)
            assert f.price == pytest.approx(q["bid"])
    hedges = r.orders[r.orders["option_type"] == "S"]
    assert len(hedges) >= 10 and (hedges["state"] == "filled").all()
    # hedged: the book's delta after each day is within one unit of the underlying
    assert (r.greeks["delta"].abs() <= 1.0 + 1e-9).all()
    assert (r.daily["vega"] < 0).all() and (r.daily["gamma_ccy"] < 0).all()
    assert set(r.calibrations["status"]) == {"ok"} and r.calibrations["rejected_quotes"].sum() > 0


def test_tight_limit_rejects_the_backtests_orders(db):
    with store.session_scope() as s:
        r = run_backtest(
            "short_vol", ["SPX"], "2015-03-02", "2015-03-04", session=s, limits={("SPX", "vega"): 10.0}
        )
        recs = audit.query(s, action="limit.set")
    opts = r.orders[r.orders["option_type"] != "S"]
    assert len(opts) == 6 and (opts["state"] == "rejected").all()  # two legs a day, three days
    assert opts["reason"].str.startswith("pre-trade limit check failed: limit SPX:vega (max abs 10.00)").all()
    assert opts["reason"].str.contains("current 0.00, post-trade").all()
    assert r.fills.empty and (r.daily["total"] == 0).all() and r.summary["orders_rejected"] == 6
    assert [x.actor for x in recs] == ["backtest:risk"]


def test_engaged_kill_switch_stops_the_backtest(db):
    with store.session_scope() as s:
        limits.engage_kill_switch(s, RITA, "drill")
        r = run_backtest("short_vol", ["SPX"], "2015-03-02", "2015-03-03", session=s)
    assert len(r.orders) == 4 and (r.orders["state"] == "rejected").all()
    assert r.orders["reason"].str.startswith("kill switch engaged by rita: drill").all()
    assert r.fills.empty


def test_failed_calibration_fails_closed_for_that_underlying_only(monkeypatch):
    "AAPL's surface fails on the first day: its straddle is refused with the production reason; SPX trades."
    orig = surfaces.calibrate_chain

    def failing(chain_df, *a, **kw):
        fit = orig(chain_df, *a, **kw)
        if (
            chain_df["underlying"].iloc[0] == "AAPL"
            and str(chain_df["quote_date"].iloc[0])[:10] == "2012-03-01"
        ):
            fit.status, fit.error = "failed", "SABR failed for expiries (test)"
        return fit

    monkeypatch.setattr(surfaces, "calibrate_chain", failing)
    r = run_backtest("short_vol", ["SPX", "AAPL"], "2012-03-01", "2012-03-02")
    cal = r.calibrations.set_index(["day", "symbol"])["status"]
    assert cal.tolist() == ["ok", "failed", "ok", "ok"]
    o = r.orders
    day1 = o["client_order_id"].str.contains("-20120301-")
    aapl1 = o[day1 & (o["symbol"] == "AAPL")]
    assert len(aapl1) == 2 and (aapl1["state"] == "rejected").all()
    assert (
        aapl1["reason"].str.startswith("calibration failed for AAPL: SABR failed for expiries (test)").all()
    )
    assert (o.loc[day1 & (o["symbol"] == "SPX"), "state"] == "filled").all()
    # the next day AAPL's surface is fine again and the straddle is sold
    aapl2 = o[~day1 & (o["symbol"] == "AAPL") & (o["option_type"] != "S")]
    assert len(aapl2) == 2 and (aapl2["state"] == "filled").all()


def test_approvals_are_granted_by_the_backtest_policy(monkeypatch):
    monkeypatch.setenv("AITRADE_RISK__APPROVAL_NOTIONAL", "50000")
    config.reload_settings()
    r = run_backtest("short_vol", ["SPX"], "2015-03-02", "2015-03-04", keep_db=True)
    big = r.orders[r.orders["approved_by"] == BACKTEST_POLICY.name]
    assert len(big) >= 2 and (big["state"] == "filled").all()
    assert r.summary["orders_approved_by_policy"] == len(big)
    eng = sa.create_engine(r.db_url)
    with eng.connect() as c:
        ev = c.execute(
            sa.select(
                execution.OrderEvent.actor, execution.OrderEvent.from_state, execution.OrderEvent.to_state
            )
            .where(execution.OrderEvent.order_id == int(big["id"].iloc[0]))
            .order_by(execution.OrderEvent.id)
        ).all()
    eng.dispose()
    shutil.rmtree(Path(sa.make_url(r.db_url).database).parent)
    assert [(e.from_state, e.to_state) for e in ev][:3] == [
        (None, "new"),
        ("new", "pending_approval"),
        ("pending_approval", "approved"),
    ]
    assert ev[2].actor == "policy:backtest" and ev[0].actor == "backtest:short_vol"


def test_rich_cheap_sells_the_richest_and_buys_the_cheapest_vega_matched():
    m = marketdata.SyntheticMarket(seed=0)
    d = pd.Timestamp("2012-03-01")
    good = marketdata.validate_chain(m.chain("AAPL", d)).good
    fit = surfaces.calibrate_chain(good, heston=False)
    ch = backtest._enrich(good, fit, d)
    S = float(m.prices("AAPL", d, d)["close"].iloc[0])
    pos = pd.DataFrame(columns=["symbol", "option_type", "expiry", "strike", "multiplier", "quantity"])
    ctx = DayContext(d, None, m.curve(d), {"AAPL": ch}, {"AAPL": fit}, {"AAPL": S}, {"AAPL": 0.0}, pos)
    st = RichCheap(contracts=5, min_edge=0.0)
    sell, buy = st.propose(ctx)
    assert sell.quantity == -5 and buy.quantity > 0
    days = (ch["expiry"] - d).dt.days
    z = np.log(ch["strike"] / S) / (ch["iv"] * np.sqrt(ch["T"]))
    cand = ch[ch["otm"].astype(bool) & np.isfinite(ch["residual"]) & days.between(14, 90) & (z.abs() <= 1.5)]
    row = lambda p: ch[(ch["strike"] == p.strike) & (ch["option_type"] == p.option_type)  # noqa: E731
                       & (ch["expiry"] == pd.Timestamp(p.expiry))].iloc[0]  # fmt: skip
    assert row(sell)["residual"] == cand["residual"].max() > 0
    assert row(buy)["residual"] == cand["residual"].min() < 0
    from aitrade.pricing.black import bsm_greeks

    v = [float(bsm_greeks(S, row(p)["strike"], row(p)["T"], m.curve(d).zero(row(p)["T"]), 0.0, row(p)["iv"], p.option_type == "C",
                          greeks=("vega",))["vega"]) for p in (sell, buy)]  # fmt: skip
    assert buy.quantity == np.clip(round(5 * v[0] / v[1]), 1, 25)
    # with an edge larger than any residual, nothing is proposed
    assert RichCheap(min_edge=1.0).propose(ctx) == []


def test_rich_cheap_backtest_trades_and_hedges():
    r = run_backtest("rich_cheap", ["AAPL"], "2012-03-01", "2012-03-07", seed=0)
    opts = r.orders[r.orders["option_type"] != "S"]
    assert {"buy", "sell"} <= set(opts["side"]) and (r.orders["state"] == "filled").all()
    np.testing.assert_allclose(
        r.daily["total"].to_numpy(), hand_daily_pnl(r).to_numpy(), rtol=1e-9, atol=1e-6
    )
    assert (r.greeks["delta"].abs() <= 1.0 + 1e-9).all()


def test_summary_statistics_against_hand_computation():
    x = np.array([120.0, -40.0, 0.0, 65.5, -200.0, 30.0, 10.0])
    s = performance_summary(x, traded_value=7000.0, contracts=12)
    mean = x.sum() / 7
    sd = math.sqrt(((x - mean) ** 2).sum() / 6)
    assert s["sharpe"] == pytest.approx(mean / sd * math.sqrt(252), rel=1e-12)
    # cumulative: 120, 80, 80, 145.5, -54.5, -24.5, -14.5; peak 145.5 -> trough -54.5
    assert s["max_drawdown"] == pytest.approx(200.0)
    assert s["hit_rate"] == pytest.approx(4 / 6)
    assert s["total_pnl"] == pytest.approx(-14.5) and s["turnover_per_day"] == pytest.approx(1000.0)
    assert math.isnan(performance_summary([5.0])["sharpe"]) and math.isnan(
        performance_summary([0.0, 0.0])["hit_rate"]
    )


def test_result_summary_is_the_summary_of_its_daily_pnl_and_fills():
    r = run_backtest("short_vol", ["SPX"], "2015-03-02", "2015-03-06", seed=3)
    s = performance_summary(r.daily["total"])
    for k in ("sharpe", "max_drawdown", "hit_rate", "total_pnl"):
        assert r.summary[k] == pytest.approx(s[k], nan_ok=True)
    f = r.fills
    assert r.summary["turnover"] == pytest.approx((f["quantity"] * f["multiplier"] * f["price"]).sum())
    assert r.summary["contracts_traded"] == f.loc[f["option_type"] != "S", "quantity"].sum()


def test_same_seed_same_result_other_seed_other_result(tmp_path):
    a = run_backtest("short_vol", ["IBM"], "2012-06-01", "2012-06-07", seed=1, out_dir=tmp_path)
    b = run_backtest("short_vol", ["IBM"], "2012-06-01", "2012-06-07", seed=1)
    c = run_backtest("short_vol", ["IBM"], "2012-06-01", "2012-06-07", seed=2)
    pd.testing.assert_frame_equal(a.daily, b.daily)
    pd.testing.assert_frame_equal(a.fills.drop(columns=["ts"]), b.fills.drop(columns=["ts"]))
    assert not np.allclose(a.daily["total"], c.daily["total"])
    for name in ("daily.csv", "fills.csv", "orders.csv", "summary.json", "pnl.png", "greeks.png"):
        assert (tmp_path / name).stat().st_size > 100, name
    assert (tmp_path / "pnl.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(strategy="carry"), "strategy: unknown 'carry'"),
        (dict(symbols=[]), "symbols: give at least one"),
        (dict(symbols=["XYZ"]), "symbol: unknown synthetic underlying 'XYZ'"),
        (dict(start="2015-03-10", end="2015-03-02"), "end: 2015-03-02 is before start"),
        (dict(start="2015-03-07", end="2015-03-08"), "no common trading day"),
        (dict(model="bs"), "model: must be 'sabr' or 'heston'"),
        (dict(seed=-1), "seed: must be an int >= 0"),
        (dict(start="2015-02-30"), "start: not a date"),
    ],
)
def test_bad_input_names_the_field(kw, msg):
    args = dict(strategy="short_vol", symbols=["SPX"], start="2015-03-02", end="2015-03-03") | kw
    with pytest.raises(ValueError, match=msg):
        run_backtest(args.pop("strategy"), args.pop("symbols"), args.pop("start"), args.pop("end"), **args)
