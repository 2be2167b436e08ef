"""Risk benchmark: Greeks per (underlying, expiry bucket) plus the 21-point full-revaluation scenario grid for
100,000 option positions over 500 underlyings, against a plain pandas/NumPy version measured in the same run
(vectorized NumPy/SciPy Black-Scholes-Merton over the whole book, pandas groupby for the sums).

Rows follow the house format; `ratio` = peer time / aitrade time, so > 1 means aitrade is faster.
Run: `.venv/bin/python bench/bench_risk.py [--quick]`.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
from scipy.special import ndtr
from timing import best_of  # the timer and row of every bench file

from aitrade.kernels import cpu_threads
from aitrade.risk import (
    BUCKET_EDGES_DAYS,
    BUCKETS,
    DEFAULT_SPOT_SHOCKS,
    DEFAULT_VOL_SHOCKS,
    MarketState,
    Portfolio,
    historical_var,
    risk_report,
)


def make_book(n: int, nu: int, seed: int = 0):
    "n option positions (calls and puts, expiries 1 day to 2 years) over nu underlyings."
    rng = np.random.default_rng(seed)
    syms = np.array([f"U{i:04d}" for i in range(nu)])
    spot = rng.uniform(20, 500, nu)
    u = rng.integers(0, nu, n)
    kind = rng.integers(1, 3, n).astype(np.int8)
    K = np.round(spot[u] * np.exp(rng.normal(0, 0.15, n)), 1)
    T = rng.uniform(1 / 365, 2.0, n)
    qty = rng.integers(-50, 51, n).astype(float)
    vol = rng.uniform(0.1, 0.6, n)
    r, q = np.full(nu, 0.03), rng.uniform(0, 0.03, nu)
    frame = pd.DataFrame(
        {
            "symbol": syms[u],
            "kind": kind,
            "strike": K,
            "expiry_t": T,
            "quantity": qty,
            "multiplier": 100.0,
            "vol": vol,
        }
    )
    market = pd.DataFrame({"symbol": syms, "spot": spot, "r": r, "q": q})
    return frame, market


def peer_risk(frame: pd.DataFrame, market: pd.DataFrame):
    "The plain version: vectorized NumPy/SciPy BSM for the whole book (base + 21 points), pandas groupby."
    df = frame.merge(market, on="symbol", how="left")
    S, K, T, r, q, sig = (df[c].to_numpy() for c in ("spot", "strike", "expiry_t", "r", "q", "vol"))
    w = np.where(df["kind"].to_numpy() == 1, 1.0, -1.0)
    qm = (df["quantity"] * df["multiplier"]).to_numpy()
    sq = np.sqrt(T)

    def price(S, sig):  # S, sig: (n, 21)
        c = lambda a: a[:, None]
        v = sig * c(sq)
        d1 = (np.log(S / c(K)) + c((r - q) * T)) / v + 0.5 * v
        return c(w) * (
            S * c(np.exp(-q * T)) * ndtr(c(w) * d1) - c(K * np.exp(-r * T)) * ndtr(c(w) * (d1 - v))
        )

    v = sig * sq
    d1 = (np.log(S / K) + (r - q) * T) / v + 0.5 * v
    d2 = d1 - v
    dq, dr = np.exp(-q * T), np.exp(-r * T)
    n1 = np.exp(-0.5 * d1 * d1) / np.sqrt(2 * np.pi)
    p0 = w * (S * dq * ndtr(w * d1) - K * dr * ndtr(w * d2))
    out = pd.DataFrame(
        {
            "symbol": df["symbol"],
            "bucket": pd.cut(T * 365, [0, *BUCKET_EDGES_DAYS, np.inf], right=False, labels=list(BUCKETS[1:])),
            "market_value": qm * p0,
            "delta": qm * w * dq * ndtr(w * d1),
            "gamma": qm * dq * n1 / (S * v),
            "vega": qm * S * dq * n1 * sq / 100,
            "theta": qm
            * (-S * dq * n1 * sig / (2 * sq) + w * (q * S * dq * ndtr(w * d1) - r * K * dr * ndtr(w * d2)))
            / 365,
            "spot": S,
        }
    )
    out["delta_ccy"] = out["delta"] * S
    out["gamma_ccy"] = out["gamma"] * S * S / 100
    cols = ["market_value", "delta", "delta_ccy", "gamma", "gamma_ccy", "vega", "theta"]
    greeks = out.groupby(["symbol", "bucket"], observed=True)[cols].sum()
    ss = np.repeat(1 + np.array(DEFAULT_SPOT_SHOCKS), len(DEFAULT_VOL_SHOCKS))
    vs = np.tile(np.array(DEFAULT_VOL_SHOCKS), len(DEFAULT_SPOT_SHOCKS))
    pnl = qm[:, None] * (price(S[:, None] * ss, np.maximum(sig[:, None] + vs, 0.0)) - p0[:, None])
    grid = pd.DataFrame(pnl).groupby(df["symbol"].to_numpy()).sum()
    return greeks, grid


def run(quick: bool = False) -> list[dict]:
    n, nu = (20_000, 100) if quick else (100_000, 500)
    rep = 3 if quick else 7
    frame, market = make_book(n, nu)
    mkt = MarketState(market["symbol"], market["spot"], market["r"], market["q"], frame["vol"].to_numpy())
    pf = Portfolio.from_frame(frame)
    risk_report(pf, mkt)  # warm up numba (compiles or loads the cache) and the portfolio's cached sort
    t_warm = best_of(lambda: risk_report(pf, mkt), rep).wall
    cpu = np.inf  # CPU seconds of all threads: the work, less sensitive to other load on the machine
    for _ in range(rep):
        c0 = time.process_time()
        risk_report(pf, mkt)
        cpu = min(cpu, time.process_time() - c0)
    t_cold = best_of(lambda: risk_report(Portfolio.from_frame(frame), mkt), max(3, rep // 2)).wall
    peer_risk(frame.head(100), market)
    t_peer = best_of(lambda: peer_risk(frame, market), 3 if quick else 5).wall

    # the two must agree before their times are compared
    g, sc = risk_report(pf, mkt, by="symbol")
    pg, pgrid = peer_risk(frame, market)
    pg_sym = pg.groupby(level="symbol").sum()
    scale = (frame["quantity"].abs() * 100 * frame["symbol"].map(market.set_index("symbol")["spot"])).sum()
    assert np.allclose(g.set_index("symbol")["vega"], pg_sym["vega"], rtol=1e-9, atol=1e-12 * scale)
    assert np.allclose(
        sc.pnl.reshape(len(sc.symbols), -1), pgrid.loc[sc.symbols].to_numpy(), rtol=1e-9, atol=1e-12 * scale
    )

    th = cpu_threads()
    rows = [
        {
            "benchmark": f"risk: Greeks by (underlying, bucket) + 21-point grid, {n:,} options / {nu} underlyings, "
            f"numba {th} threads",
            "metric": "seconds",
            "aitrade": t_warm,
            "peer": "pandas/NumPy/SciPy vectorized BSM + groupby",
            "peer_value": t_peer,
            "ratio": t_peer / t_warm,
            "target": "<= 0.100 s on 2 cores" if not quick else "informational (quick size)",
            "met": bool(t_warm <= 0.100) if not quick else None,
        },
        {
            "benchmark": f"risk: same, CPU time of all {th} threads together (wall on an idle machine ~ this / {th})",
            "metric": "CPU seconds",
            "aitrade": cpu,
            "peer": "-",
            "peer_value": None,
            "ratio": None,
            "target": "informational",
            "met": None,
        },
        {
            "benchmark": f"risk: same, cold (portfolio built from its frame and sorted in the timed call), {n:,} options",
            "metric": "seconds",
            "aitrade": t_cold,
            "peer": "pandas/NumPy/SciPy vectorized BSM + groupby",
            "peer_value": t_peer,
            "ratio": t_peer / t_cold,
            "target": "informational",
            "met": None,
        },
    ]
    # historical VaR over one year of daily moves (252 scenarios): full revaluation vs delta-gamma-vega
    rng = np.random.default_rng(1)
    days = 60 if quick else 252
    rets = pd.DataFrame(rng.normal(0, 0.015, (days, nu)), columns=market["symbol"])
    dvol = pd.DataFrame(rng.normal(0, 0.01, (days, nu)), columns=market["symbol"])
    historical_var(pf, mkt, rets.iloc[:5], vol_changes=dvol.iloc[:5])
    t_full = best_of(lambda: historical_var(pf, mkt, rets, vol_changes=dvol), 1 if quick else 2).wall
    t_dgv = best_of(lambda: historical_var(pf, mkt, rets, vol_changes=dvol, method="dgv"), 3).wall
    rows.append(
        {
            "benchmark": f"risk: historical VaR/ES, {days} days, full revaluation of {n:,} options",
            "metric": "seconds",
            "aitrade": t_full,
            "peer": "aitrade delta-gamma-vega (method='dgv')",
            "peer_value": t_dgv,
            "ratio": None,
            "target": "informational",
            "met": None,
        }
    )
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    from run import print_table

    print_table(run(quick="--quick" in sys.argv))
