"""aitrade.risk on books of realistic size: aggregation against a hand loop over the quant core, the scenario
grid against direct repricing, the array-namespace path against the numba kernel, VaR/ES against closed forms,
and the errors of bad input."""

from __future__ import annotations

import math

import numba
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from aitrade import risk
from aitrade.pricing.black import bsm_greeks, bsm_price
from aitrade.risk import (
    BUCKETS,
    CALL,
    DEFAULT_SPOT_SHOCKS,
    DEFAULT_VOL_SHOCKS,
    LIMIT_METRICS,
    STOCK,
    MarketState,
    Portfolio,
    historical_var,
    mc_var,
    portfolio_greeks,
    position_greeks,
    position_problems,
    pre_trade_metrics,
    risk_report,
    scenario_grid,
    var_es,
)


def make_book(n=2000, nu=30, seed=0, stock_share=0.1, one_symbol=False):
    rng = np.random.default_rng(seed)
    syms = np.array([f"U{i:03d}" for i in range(nu)])
    spot = rng.uniform(20, 500, nu)
    u = np.zeros(n, np.int64) if one_symbol else rng.integers(0, nu, n)
    kind = np.where(rng.random(n) < stock_share, 0, rng.integers(1, 3, n))
    K = spot[u] * np.exp(rng.normal(0, 0.2, n))
    T = rng.choice([2 / 365, 10 / 365, 45 / 365, 200 / 365, 1.5], n) * rng.uniform(0.8, 1.2, n)
    qty = rng.integers(-50, 51, n).astype(float)
    mult = np.where(kind == 0, 1.0, 100.0)
    pf = Portfolio(syms[u], kind, K, T, qty, mult)
    vol = rng.uniform(0.08, 0.7, n)
    mkt = MarketState(syms, spot, rng.uniform(0.0, 0.05, nu), rng.uniform(0, 0.03, nu), vol)
    return pf, mkt


@pytest.fixture(scope="module")
def book():
    return make_book()


def hand_greeks(pf, mkt):
    "A plain loop over positions with bsm_greeks, summed per (symbol, bucket) in dicts."
    out = {}
    idx = {s: i for i, s in enumerate(mkt.symbols)}
    vols = np.asarray(mkt.position_vol(pf))
    j = np.array([idx[s] for s in pf.symbol])
    ref = bsm_greeks(
        mkt.spot[j],
        pf.strike,
        pf.expiry_t,
        mkt.r[j],
        mkt.q[j],
        vols,
        pf.kind == CALL,
        ("price", "delta", "gamma", "vega", "theta"),
    )
    for i in range(len(pf)):
        S = mkt.spot[j[i]]
        qm = pf.quantity[i] * pf.multiplier[i]
        if pf.kind[i] == STOCK:
            b, g = "spot", dict(price=S, delta=1.0, gamma=0.0, vega=0.0, theta=0.0)
        else:
            days = pf.expiry_t[i] * 365
            b = BUCKETS[1 + int(np.searchsorted([7, 30, 90, 365], days, side="right"))]
            g = {k: float(v[i]) for k, v in ref.items()}
        acc = out.setdefault(
            (pf.symbol[i], b),
            dict(
                market_value=0.0,
                delta=0.0,
                delta_ccy=0.0,
                gamma=0.0,
                gamma_ccy=0.0,
                vega=0.0,
                theta=0.0,
                notional=0.0,
                scale=0.0,
            ),
        )
        acc["market_value"] += qm * g["price"]
        acc["delta"] += qm * g["delta"]
        acc["delta_ccy"] += qm * g["delta"] * S
        acc["gamma"] += qm * g["gamma"]
        acc["gamma_ccy"] += qm * g["gamma"] * S * S / 100
        acc["vega"] += qm * g["vega"] / 100
        acc["theta"] += qm * g["theta"] / 365
        acc["notional"] += abs(qm) * S
        acc["scale"] += abs(qm) * S  # size of the terms, for a relative tolerance on sums of +/- terms
    return out


def test_greeks_equal_a_hand_loop_over_positions(book):
    pf, mkt = book
    g = portfolio_greeks(pf, mkt).set_index(["symbol", "bucket"])
    hand = hand_greeks(pf, mkt)
    assert len(g) == len(hand)
    assert g["positions"].sum() == len(pf)
    for key, h in hand.items():
        row = g.loc[key]
        for col in ("market_value", "delta_ccy", "gamma_ccy", "vega", "theta", "notional"):
            assert row[col] == pytest.approx(h[col], rel=1e-10, abs=1e-11 * h["scale"]), (key, col)
        assert row["delta"] == pytest.approx(h["delta"], rel=1e-10, abs=1e-11 * h["scale"] / row["spot"])


def test_greeks_by_symbol_and_total_are_sums_of_buckets(book):
    pf, mkt = book
    g = portfolio_greeks(pf, mkt)
    by_sym = portfolio_greeks(pf, mkt, by="symbol").set_index("symbol")
    total = portfolio_greeks(pf, mkt, by="total").iloc[0]
    s = g.groupby("symbol")[["delta", "vega", "notional"]].sum()
    np.testing.assert_allclose(by_sym[["delta", "vega", "notional"]].to_numpy(), s.to_numpy(), rtol=1e-12)
    assert total["vega"] == pytest.approx(g["vega"].sum(), rel=1e-12)
    assert total["positions"] == len(pf)
    assert "delta" not in total.index  # shares do not add up across underlyings


def test_fused_kernel_agrees_with_bsm_greeks_per_position():
    "Single-position books: the fused kernel's per-unit Greeks equal bsm_greeks to rounding."
    rng = np.random.default_rng(3)
    for _ in range(60):
        S, K = rng.uniform(10, 300), rng.uniform(10, 300)
        T, r, q, v = (
            rng.uniform(0.01, 3),
            rng.uniform(-0.01, 0.08),
            rng.uniform(0, 0.05),
            rng.uniform(0.05, 1.0),
        )
        kind = int(rng.integers(1, 3))
        pf = Portfolio(["A"], [kind], [K], [T], [1.0], 1.0)
        g = portfolio_greeks(pf, MarketState(["A"], [S], r, q, [v])).iloc[0]
        ref = bsm_greeks(S, K, T, r, q, v, kind == CALL, ("price", "delta", "gamma", "vega", "theta"))
        assert g["market_value"] == pytest.approx(float(ref["price"]), rel=1e-12, abs=1e-13 * S)
        assert g["delta"] == pytest.approx(float(ref["delta"]), rel=1e-12, abs=1e-15)
        assert g["gamma"] == pytest.approx(float(ref["gamma"]), rel=1e-11, abs=1e-300)
        assert g["vega"] * 100 == pytest.approx(float(ref["vega"]), rel=1e-11, abs=1e-300)
        assert g["theta"] * 365 == pytest.approx(float(ref["theta"]), rel=1e-11, abs=1e-12 * S)


def test_scenario_grid_equals_direct_repricing(book):
    pf, mkt = book
    sc = scenario_grid(pf, mkt)
    assert sc.pnl.shape == (30, 7, 3) and sc.spot_shocks.size * sc.vol_shocks.size == 21
    pg = position_greeks(pf, mkt)
    is_opt = pf.kind != STOCK
    idx = {s: i for i, s in enumerate(mkt.symbols)}
    j = np.array([idx[s] for s in pf.symbol])
    S, r, q = mkt.spot[j], mkt.r[j], mkt.q[j]
    vol = np.asarray(mkt.vol)
    qm = pf.quantity * pf.multiplier
    base = pg["market_value"].to_numpy() / np.where(qm == 0, 1, qm)
    for a, ds in enumerate(sc.spot_shocks):
        for b, dv in enumerate(sc.vol_shocks):
            opt_val = bsm_price(
                S * (1 + ds), pf.strike, pf.expiry_t, r, q, np.maximum(vol + dv, 0), pf.kind == CALL
            )
            val = np.where(is_opt, opt_val, S * (1 + ds))
            pnl = pd.Series(qm * (val - base)).groupby(pf.symbol).sum()
            scale = pd.Series(np.abs(qm) * S).groupby(pf.symbol).sum()
            got = pd.Series(sc.pnl[:, a, b], index=sc.symbols)
            np.testing.assert_allclose(got[pnl.index], pnl, rtol=0, atol=1e-11 * scale.max())
    assert sc.frame().query("symbol == 'TOTAL'")["pnl"].to_numpy() == pytest.approx(sc.total.ravel())


def test_zero_shock_gives_exactly_zero(book):
    pf, mkt = book
    sc = scenario_grid(pf, mkt, spot_shocks=[-0.1, 0.0, 0.1], vol_shocks=[0.0, 0.02])
    assert (sc.pnl[:, 1, 0] == 0.0).all()
    assert (sc.total[1, 0] == 0.0) and (sc.total[0, 0] != 0.0)


def test_xp_path_with_numpy_equals_numba_kernel():
    pf, mkt = make_book(n=3000, nu=12, seed=5)
    vol = np.asarray(mkt.vol).copy()
    vol[:3] = 0.0  # deterministic limit
    vol[3] = np.nan  # one invalid row
    T = pf.expiry_t.copy()
    T[4:6] = 0.0  # expiring today
    pf = Portfolio(pf.symbol, pf.kind, pf.strike, T, pf.quantity, pf.multiplier)
    mkt = MarketState(mkt.symbols, mkt.spot, mkt.r, mkt.q, vol)
    nsym = len(pf.layout().uniques)
    _, _, f, vm, va = risk.shock_arrays(nsym, DEFAULT_SPOT_SHOCKS, DEFAULT_VOL_SHOCKS)
    vm = vm * np.linspace(0.7, 1.3, vm.size).reshape(vm.shape)  # multiplicative vol moves as well
    a = risk.evaluate(pf, mkt, f, vm, va)
    b = risk.evaluate(pf, mkt, f, vm, va, force_xp=np)
    np.testing.assert_array_equal(np.isnan(a.G), np.isnan(b.G))
    np.testing.assert_array_equal(np.isnan(a.P), np.isnan(b.P))
    ok = ~np.isnan(a.G[:, 0])
    assert ok.sum() >= len(ok) - 1
    np.testing.assert_allclose(a.G[ok], b.G[ok], rtol=0, atol=1e-12 * np.nanmax(np.abs(a.G), axis=0).max())
    np.testing.assert_allclose(a.P[ok], b.P[ok], rtol=0, atol=1e-12 * np.nanmax(np.abs(a.P)))


def test_results_do_not_depend_on_the_thread_count():
    pf, mkt = make_book(n=5000, nu=3, seed=2, one_symbol=True)  # one underlying: split into blocks
    assert pf.layout().blk_code.size > 4
    n0 = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        g1, s1 = risk_report(pf, mkt)
        numba.set_num_threads(n0)
        g2, s2 = risk_report(pf, mkt)
    finally:
        numba.set_num_threads(n0)
    pd.testing.assert_frame_equal(g1, g2)
    np.testing.assert_array_equal(s1.pnl, s2.pnl)
    hand = hand_greeks(pf, mkt)
    got = g2.set_index(["symbol", "bucket"])
    for key, h in hand.items():
        assert got.loc[key, "vega"] == pytest.approx(h["vega"], rel=1e-10, abs=1e-11 * h["scale"])


def test_empty_portfolio():
    pf = Portfolio(np.array([], dtype=str), [], [], [], [])
    mkt = MarketState(["A"], [100.0])
    assert len(portfolio_greeks(pf, mkt)) == 0
    assert scenario_grid(pf, mkt).pnl.shape == (0, 7, 3)
    m = pre_trade_metrics(pf, mkt)
    assert m.value("portfolio", "notional") == 0.0 and m.value("portfolio", "loss") == 0.0


# ---- VaR / ES


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=400),
    st.floats(0.51, 0.999),
)
def test_es_is_never_below_var(pnl, conf):
    v, e = var_es(np.array(pnl), conf)
    assert e >= v
    assert -max(pnl) <= v <= -min(pnl)


def test_var_es_of_normal_pnl_match_the_closed_form():
    x = np.random.default_rng(11).standard_normal(2_000_000) * 1000.0
    for a in (0.95, 0.99):
        v, e = var_es(x, a)
        z = norm.ppf(a)
        assert v == pytest.approx(1000 * z, rel=0.01)
        assert e == pytest.approx(1000 * norm.pdf(z) / (1 - a), rel=0.01)


def test_historical_var_of_a_linear_portfolio_under_normal_returns():
    "Two stocks, long and short, with normal simple returns: VaR = z sigma_p, ES = sigma_p phi(z)/(1-a)."
    rng = np.random.default_rng(4)
    cov = np.array([[0.02**2, 0.3 * 0.02 * 0.015], [0.3 * 0.02 * 0.015, 0.015**2]])
    simple = rng.multivariate_normal([0, 0], cov, size=400_000)
    pf = Portfolio(["A", "B"], ["stock", "stock"], [np.nan] * 2, [0.0] * 2, [1000.0, -500.0], 1.0)
    mkt = MarketState(["A", "B"], [50.0, 80.0])
    res = historical_var(
        pf, mkt, pd.DataFrame(np.log1p(simple), columns=["A", "B"]), confidence=0.99, horizon_days=1
    )
    d = np.array([1000 * 50.0, -500 * 80.0])
    sp = math.sqrt(d @ cov @ d)
    z = norm.ppf(0.99)
    assert res.var == pytest.approx(z * sp, rel=0.01)
    assert res.es == pytest.approx(sp * norm.pdf(z) / 0.01, rel=0.01)
    assert res.n_scenarios == 400_000 and set(res.by_symbol.index) == {"A", "B"}
    assert res.by_symbol.loc["A", "var"] == pytest.approx(z * 0.02 * 50_000, rel=0.01)


def test_historical_horizon_overlapping_and_sqrt():
    rng = np.random.default_rng(8)
    r = rng.normal(0, 0.01, 300)
    pf = Portfolio(["X"], [0], [np.nan], [0.0], [100.0], 1.0)
    mkt = MarketState(["X"], [10.0])
    h5 = historical_var(pf, mkt, pd.DataFrame({"X": r}), confidence=0.95, horizon_days=5)
    sums = np.convolve(r, np.ones(5), mode="valid")
    assert h5.n_scenarios == 296
    assert h5.var == pytest.approx(var_es(1000.0 * np.expm1(sums), 0.95)[0], rel=1e-12)
    s5 = historical_var(pf, mkt, pd.DataFrame({"X": r}), confidence=0.95, horizon_days=5, scaling="sqrt")
    h1 = historical_var(pf, mkt, pd.DataFrame({"X": r}), confidence=0.95, horizon_days=1)
    assert s5.var == pytest.approx(h1.var * math.sqrt(5), rel=1e-12)
    assert s5.es == pytest.approx(h1.es * math.sqrt(5), rel=1e-12)
    # a P&L history directly
    pnl = rng.normal(0, 1, 1000)
    assert historical_var(pnl, confidence=0.99, horizon_days=1).var == pytest.approx(var_es(pnl, 0.99)[0])


def test_historical_full_and_dgv_agree_for_small_moves(book):
    pf, mkt = book
    rng = np.random.default_rng(9)
    rets = pd.DataFrame(rng.normal(0, 0.004, (250, 30)), columns=mkt.symbols)
    dvol = pd.DataFrame(rng.normal(0, 0.003, (250, 30)), columns=mkt.symbols)
    full = historical_var(pf, mkt, rets, vol_changes=dvol, confidence=0.99, horizon_days=1)
    dgv = historical_var(pf, mkt, rets, vol_changes=dvol, confidence=0.99, horizon_days=1, method="dgv")
    assert dgv.var == pytest.approx(full.var, rel=0.03)
    assert np.corrcoef(full.pnl, dgv.pnl)[0, 1] > 0.995


def test_mc_var_lognormal_stock_closed_form():
    pf = Portfolio(["X"], [0], [np.nan], [0.0], [1000.0], 1.0)
    mkt = MarketState(["X"], [100.0])
    a, s, h = 0.99, 0.3, 10
    res = mc_var(pf, mkt, [[s * s]], n_paths=400_000, seed=1, confidence=a, horizon_days=h)
    tau = h / 252
    mu, sd = -0.5 * s * s * tau, s * math.sqrt(tau)
    q = mu + sd * norm.ppf(1 - a)
    var = 1e5 * (1 - math.exp(q))
    es = 1e5 * (1 - math.exp(mu + 0.5 * sd * sd) * norm.cdf(norm.ppf(1 - a) - sd) / (1 - a))
    assert res.var == pytest.approx(var, rel=0.01)
    assert res.es == pytest.approx(es, rel=0.01)


def test_mc_var_reproducible_and_uses_vol_moves(book):
    pf, mkt = book
    cov = pd.DataFrame(np.diag(np.full(30, 0.04)) + 0.01, index=mkt.symbols, columns=mkt.symbols)
    a = mc_var(pf, mkt, cov, n_paths=500, seed=42)
    b = mc_var(pf, mkt, cov, n_paths=500, seed=42)
    c = mc_var(pf, mkt, cov, n_paths=500, seed=43)
    flat = mc_var(pf, mkt, cov, n_paths=500, seed=42, vol_of_vol=0.0)
    np.testing.assert_array_equal(a.pnl, b.pnl)
    assert (a.var, a.es) == (b.var, b.es)
    assert a.var != c.var and a.var != flat.var
    assert a.es >= a.var and a.confidence == 0.99 and a.horizon_days == 1  # the [risk] defaults
    dgv = mc_var(pf, mkt, cov, n_paths=500, seed=42, method="dgv")
    assert np.corrcoef(a.pnl, dgv.pnl)[0, 1] > 0.95


def test_mc_var_estimates_cov_from_returns():
    rng = np.random.default_rng(0)
    pf = Portfolio(["X"], [0], [np.nan], [0.0], [1000.0], 1.0)
    mkt = MarketState(["X"], [100.0])
    rets = pd.DataFrame({"X": rng.normal(0, 0.01, 5000)})
    res = mc_var(pf, mkt, returns=rets, n_paths=100_000, confidence=0.99, horizon_days=1)
    assert res.var == pytest.approx(1e5 * 0.01 * norm.ppf(0.99), rel=0.04)


# ---- pre-trade metrics


def test_pre_trade_metrics_are_additive(book):
    pf, mkt = book
    order = Portfolio(
        ["U003", "NEW"], ["call", "stock"], [100.0, np.nan], [0.2, 0.0], [15.0, -200.0], [100.0, 1.0]
    )
    m_all = MarketState(
        np.r_[mkt.symbols, ["NEW"]],
        np.r_[mkt.spot, [40.0]],
        np.r_[mkt.r, [0.01]],
        np.r_[mkt.q, [0.0]],
        np.r_[mkt.vol, [0.3, 0.0]],
    )
    m_book = MarketState(m_all.symbols, m_all.spot, m_all.r, m_all.q, np.asarray(mkt.vol))
    m_order = MarketState(m_all.symbols, m_all.spot, m_all.r, m_all.q, [0.3, 0.0])
    inc = pre_trade_metrics(pf, m_book) + pre_trade_metrics(order, m_order)
    joint = pre_trade_metrics(Portfolio.concat(pf, order), m_all)
    for scope in ("portfolio", "U003", "NEW", "U010"):
        for metric in LIMIT_METRICS + ("theta",):
            want = joint.value(scope, metric)
            assert inc.value(scope, metric) == pytest.approx(want, rel=1e-9, abs=1e-9), (scope, metric)
    assert joint.value("NEW", "notional") == 200 * 40.0
    shares = joint.by_symbol["concentration"]
    assert shares.sum() == pytest.approx(1.0) and joint.value("portfolio", "concentration") == shares.max()


# ---- bad input


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: Portfolio(["A"], [5], [1.0], [1.0], [1.0]), "kind"),
        (lambda: Portfolio(["A"], ["straddle"], [1.0], [1.0], [1.0]), "kind: unknown value 'straddle'"),
        (
            lambda: Portfolio(["A", "B"], [1, 1], [1.0, 1.0], [1.0], [1.0, 1.0]),
            "expiry_t: has 1 rows, expected 2",
        ),
        (lambda: Portfolio(["A"], [1], ["x"], [1.0], [1.0]), "strike: cannot be read"),
        (lambda: Portfolio([""], [1], [1.0], [1.0], [1.0]), "symbol: empty"),
        (lambda: MarketState(["A", "B"], [1.0]), "spot: has shape (1,)"),
        (lambda: MarketState(["A", "A"], [1.0, 2.0]), "symbols: duplicate symbol 'A'"),
        (lambda: MarketState(["A"], [1.0], vol=[[0.2]]), "vol"),
        (
            lambda: portfolio_greeks(Portfolio(["B"], [0], [0.0], [0.0], [1.0]), MarketState(["A"], [1.0])),
            "symbol: no market data for ['B']",
        ),
        (
            lambda: portfolio_greeks(
                Portfolio(["A"] * 2, [1, 1], [1.0] * 2, [1.0] * 2, [1.0] * 2),
                MarketState(["A"], [1.0], vol=[0.2, 0.2, 0.2]),
            ),
            "vol: has 3 rows",
        ),
        (
            lambda: portfolio_greeks(
                Portfolio(["A"], [1], [1.0], [1.0], [1.0]), MarketState(["A"], [1.0]), by="x"
            ),
            "by:",
        ),
        (
            lambda: scenario_grid(
                Portfolio(["A"], [0], [0.0], [0.0], [1.0]), MarketState(["A"], [1.0]), spot_shocks=[-1.5]
            ),
            "spot_shocks",
        ),
        (lambda: var_es([1.0], 0.3), "confidence: must be a number in (0.5, 1)"),
        (lambda: var_es([], 0.9), "pnl: needs at least one scenario"),
        (lambda: historical_var([1.0, 2.0], horizon_days=0), "horizon_days"),
        (lambda: historical_var([1.0, 2.0], horizon_days=5), "shorter than horizon_days=5"),
        (
            lambda: historical_var(
                Portfolio(["A"], [0], [0.0], [0.0], [1.0]),
                MarketState(["A"], [1.0]),
                pd.DataFrame({"A": [0.01, np.nan]}),
            ),
            "returns: not a finite number for 'A'",
        ),
        (lambda: mc_var(Portfolio(["A"], [0], [0.0], [0.0], [1.0]), MarketState(["A"], [1.0])), "cov:"),
        (
            lambda: mc_var(Portfolio(["A"], [0], [0.0], [0.0], [1.0]), MarketState(["A"], [1.0]), [[-1.0]]),
            "cov: is not positive semi-definite",
        ),
        (
            lambda: mc_var(
                Portfolio(["A"], [0], [0.0], [0.0], [1.0]), MarketState(["A"], [1.0]), [[0.1]], n_paths=0
            ),
            "n_paths",
        ),
        (
            lambda: mc_var(
                Portfolio(["A"], [0], [0.0], [0.0], [1.0]),
                MarketState(["A"], [1.0]),
                [[0.1]],
                spot_vol_corr=2.0,
            ),
            "spot_vol_corr",
        ),
        (
            lambda: mc_var(
                Portfolio(["A"], [0], [0.0], [0.0], [1.0]), MarketState(["A"], [1.0]), [[0.1]], method="delta"
            ),
            "method",
        ),
    ],
)
def test_bad_input_names_the_field(call, message):
    with pytest.raises(ValueError) as e:
        call()
    assert message in str(e.value)


def test_bad_rows_are_nan_only_in_their_aggregates(book):
    pf, mkt = book
    vol = np.asarray(mkt.vol).copy()
    bad = int(np.flatnonzero((pf.symbol == "U007") & (pf.kind != STOCK))[0])
    vol[bad] = -0.1
    m2 = MarketState(mkt.symbols, mkt.spot, mkt.r, mkt.q, vol)
    g = portfolio_greeks(pf, m2, by="symbol").set_index("symbol")
    ref = portfolio_greeks(pf, mkt, by="symbol").set_index("symbol")
    assert np.isnan(g.loc["U007", "vega"]) and g.loc["U007", "invalid"] == 1
    others = g.index != "U007"
    pd.testing.assert_frame_equal(g[others], ref[others])
    sc = scenario_grid(pf, m2)
    assert np.isnan(sc.pnl[sc.symbols == "U007"]).all() and not np.isnan(sc.pnl[sc.symbols != "U007"]).any()
    assert position_problems(pf, m2)[bad] == "vol: must be a finite number >= 0"
    assert (position_problems(pf, mkt) == "").all()
    assert np.isnan(pre_trade_metrics(pf, m2).value("portfolio", "delta"))


def test_callable_vol_surface(book):
    pf, mkt = book
    calls = []

    def surface(sym_idx, T, K):
        calls.append(len(sym_idx))
        return 0.2 + 0.01 * sym_idx + 0.05 * np.sqrt(np.abs(np.nan_to_num(T)))

    m2 = MarketState(mkt.symbols, mkt.spot, mkt.r, mkt.q, surface)
    g = portfolio_greeks(pf, m2)
    j = pd.Index(mkt.symbols).get_indexer(pf.symbol)
    m3 = MarketState(mkt.symbols, mkt.spot, mkt.r, mkt.q, 0.2 + 0.01 * j + 0.05 * np.sqrt(pf.expiry_t))
    pd.testing.assert_frame_equal(g, portfolio_greeks(pf, m3))
    assert calls == [len(pf)]


def test_from_frame_with_expiry_dates_and_option_type():
    df = pd.DataFrame(
        {
            "symbol": ["SPX", "SPX", "SPX"],
            "option_type": ["C", "P", None],
            "strike": [4000.0, 3800.0, np.nan],
            "expiry": pd.to_datetime(["2024-03-15", "2024-06-21", None]),
            "quantity": [1.0, -2.0, 50.0],
        }
    )
    pf = Portfolio.from_frame(df, as_of="2024-03-01")
    assert pf.kind.tolist() == [1, 2, 0]
    assert pf.expiry_t[0] == pytest.approx(14 / 365) and pf.multiplier.tolist() == [100.0, 100.0, 1.0]
    g = portfolio_greeks(pf, MarketState(["SPX"], [4000.0], 0.03, 0.01, 0.2))
    assert g["bucket"].tolist() == ["spot", "7-30d", "90d-1y"]


@pytest.mark.gpu
def test_gpu_path_matches_the_cpu_kernel():
    import cupy as cp

    pf, mkt = make_book(n=20_000, nu=50, seed=1)
    g_cpu, s_cpu = risk_report(pf, mkt)
    gm = MarketState(
        mkt.symbols, cp.asarray(mkt.spot), cp.asarray(mkt.r), cp.asarray(mkt.q), cp.asarray(mkt.vol)
    )
    g_gpu, s_gpu = risk_report(pf, gm)
    cols = ["market_value", "delta_ccy", "gamma_ccy", "vega", "theta", "notional"]
    scale = np.abs(g_cpu[cols].to_numpy()).max()
    np.testing.assert_allclose(g_gpu[cols].to_numpy(), g_cpu[cols].to_numpy(), rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(s_gpu.pnl, s_cpu.pnl, rtol=0, atol=1e-12 * np.abs(s_cpu.pnl).max())
    h = mc_var(pf, gm, np.eye(50) * 0.04, n_paths=256, seed=3)
    c = mc_var(pf, mkt, np.eye(50) * 0.04, n_paths=256, seed=3)
    assert h.var == pytest.approx(c.var, rel=1e-10)
