"""Backtest speed: simulated days per second for 5 underlyings (issue 4), through the production path of
`aitrade.backtest.run_backtest` (ingest + store the chains, SABR calibration, fail-closed and pre-trade checks,
orders, paper-broker fills, marks, Greeks) in a throwaway SQLite database.

Peer, measured in the same run: a plain pandas/NumPy research loop of the same delta-hedged short straddle on
the same synthetic chains (chain generation and quote validation included, no database, no calibration, no
order path: fills at bid/ask, marks at mid, BSM delta at the implied vol of the mid). `ratio` = aitrade days/s
/ peer days/s (> 1 would mean aitrade is faster; the production path does strictly more work, so < 1 is
expected: the ratio is the cost of running the real checks).

The benchmark for the risk engine itself (100,000 positions) is `bench/bench_risk.py`; this file does not repeat it.
Run: `.venv/bin/python bench/bench_risk_backtest.py [--quick]`.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from aitrade import marketdata
from aitrade.backtest import run_backtest
from aitrade.clock import time_to_expiry
from aitrade.pricing.black import bsm_greeks
from aitrade.pricing.iv import implied_vol_bsm

SYMBOLS = ["SPX", "IXIC", "AAPL", "IBM", "MSFT"]
START = "2012-03-01"


def peer_short_vol(
    symbols, days, seed: int = 0, contracts: int = 5, target_days: int = 30, roll_days: int = 5
):
    "The research-notebook version: same chains, same straddle/roll/hedge rules, pandas + NumPy, no database."
    m = marketdata.SyntheticMarket(seed=seed)
    pos: dict[tuple, float] = {}
    cash, prev_mv, pnl = 0.0, 0.0, []
    for d in days:
        mv = 0.0
        for s in symbols:
            ch = marketdata.validate_chain(m.chain(s, d)).good
            ch = ch.assign(mid=0.5 * (ch["bid"] + ch["ask"]), T=time_to_expiry(d, ch["expiry"]))
            S = float(ch["underlying_price"].iloc[0])
            key = ch.set_index(["expiry", "strike", "option_type"])
            held = [k for k in pos if k[0] == s and k[1] != "S" and pos[k] != 0]
            for k in held:  # roll
                if (k[2] - d).days <= roll_days and (k[2], k[3], k[1]) in key.index:
                    q = key.loc[(k[2], k[3], k[1])]
                    cash -= -pos[k] * 100 * (q["ask"] if pos[k] < 0 else q["bid"])
                    pos[k] = 0.0
            if not any(pos[k] for k in pos if k[0] == s and k[1] != "S"):
                exps = pd.DatetimeIndex(pd.unique(ch["expiry"]))
                dd = (exps - d).days
                e = exps[dd > roll_days][np.argmin(np.abs(dd[dd > roll_days] - target_days))]
                ce = (
                    ch[ch["expiry"] == e]
                    .pivot_table(index="strike", columns="option_type", values="bid")
                    .dropna()
                )
                K = float(ce.index[np.argmin(np.abs(ce.index - S))])
                for ot in ("C", "P"):
                    pos[(s, ot, e, K)] = pos.get((s, ot, e, K), 0.0) - contracts
                    cash += contracts * 100 * float(ce.loc[K, ot])
            delta = pos.get((s, "S", None, None), 0.0)
            for k, qty in pos.items():
                if k[0] == s and k[1] != "S" and qty and (k[2], k[3], k[1]) in key.index:
                    q = key.loc[(k[2], k[3], k[1])]
                    r = q["rate"]  # the curve's zero rate to this expiry, as the chain was priced
                    vol = implied_vol_bsm(q["mid"], S, k[3], q["T"], r, q["div_yield"], k[1] == "C")
                    g = bsm_greeks(S, k[3], q["T"], r, q["div_yield"], vol, k[1] == "C", greeks=("delta",))
                    delta += qty * 100 * float(g["delta"])
                    mv += qty * 100 * q["mid"]
            h = -float(round(delta))
            pos[(s, "S", None, None)] = pos.get((s, "S", None, None), 0.0) + h
            cash -= h * S
            mv += pos[(s, "S", None, None)] * S
        pnl.append(mv + cash - prev_mv)
        prev_mv, cash = mv, 0.0
    return np.array(pnl)


def run(quick: bool = False) -> list[dict]:
    n_days = 5 if quick else 20
    m = marketdata.SyntheticMarket(seed=0)
    days = list(m.dates("SPX", START)[:n_days])
    end = days[-1]
    run_backtest("short_vol", ["SPX"], START, START)  # warm up numba, calendars and the histories
    peer_short_vol(["SPX"], days[:1])
    rows = []
    for strat in ("short_vol", "rich_cheap"):
        t0 = time.perf_counter()
        r = run_backtest(strat, SYMBOLS, START, end, seed=0)
        t_ait = time.perf_counter() - t0
        dps = len(r.days) / t_ait
        t0 = time.perf_counter()
        peer_short_vol(SYMBOLS, days)
        t_peer = time.perf_counter() - t0
        peer_dps = len(days) / t_peer
        rows.append(
            {
                "benchmark": f"backtest {strat}, {len(SYMBOLS)} underlyings x {len(r.days)} days, production path",
                "metric": "simulated days per second",
                "aitrade": dps,
                "peer": "pandas/NumPy research loop (short straddle, no DB/checks)",
                "peer_value": peer_dps,
                "ratio": dps / peer_dps,
                "target": ">= 1 day/s on 2 cores",
                "met": bool(dps >= 1.0),
            }
        )
    return rows


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv)
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_colwidth", 70):
        print(df.to_string(index=False, float_format=lambda v: f"{v:,.3f}"))
