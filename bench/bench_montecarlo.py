"""Heston Monte Carlo (Andersen QE-M, antithetic) throughput: aitrade's numba kernel against QuantLib's
`MCEuropeanHestonEngine` (same QE-M discretisation, antithetic, same paths and steps) and a plain NumPy
vectorised QE (aitrade's `xp` path run with NumPy), all measured in the same run.

Run: `.venv/bin/python bench/bench_montecarlo.py [--quick]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import QuantLib as ql
from timing import best_of  # the timer and row of every bench file

from aitrade.kernels import cpu_threads
from aitrade.pricing.montecarlo import heston_mc

PARAMS = dict(S=100.0, T=1.0, r=0.03, q=0.0, v0=0.04, kappa=1.5, theta=0.04, sigma=0.5, rho=-0.7)
K = 100.0
TARGET = 100e6  # path-steps per second on 2 cores


def _ql_setup():
    today = ql.Date(15, 1, 2024)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    p = PARAMS
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, p["r"], dc, ql.Continuous))
    qts = ql.YieldTermStructureHandle(ql.FlatForward(today, p["q"], dc, ql.Continuous))
    process = ql.HestonProcess(
        rts,
        qts,
        ql.QuoteHandle(ql.SimpleQuote(p["S"])),
        p["v0"],
        p["kappa"],
        p["theta"],
        p["sigma"],
        p["rho"],
        ql.HestonProcess.QuadraticExponentialMartingale,
    )
    option = ql.EuropeanOption(ql.PlainVanillaPayoff(ql.Option.Call, K), ql.EuropeanExercise(today + 365))
    option.setPricingEngine(ql.AnalyticHestonEngine(ql.HestonModel(process), 1e-14, 100_000))
    return process, option, option.NPV()


def _ql_mc(process, option, n_paths: int, n_steps: int) -> tuple[float, float]:
    engine = ql.MCEuropeanHestonEngine(
        process,
        "pseudorandom",
        timeSteps=n_steps,
        antitheticVariate=True,
        requiredSamples=n_paths // 2,
        seed=42,
    )
    option.setPricingEngine(engine)
    return option.NPV(), option.errorEstimate()


def run(quick: bool = False) -> list[dict]:
    n_paths, n_steps = (20_000, 50) if quick else (200_000, 100)
    ql_paths = 10_000 if quick else 50_000  # QuantLib is timed on fewer paths; throughput is per path-step
    np_paths = 10_000 if quick else 50_000
    work = n_paths * n_steps
    process, option, analytic = _ql_setup()

    heston_mc(K=K, **PARAMS, n_paths=1_000, n_steps=5)  # compile / load the numba cache
    t_ait, _, res = best_of(lambda: heston_mc(K=K, **PARAMS, n_paths=n_paths, n_steps=n_steps, seed=1), 3)
    rate_ait = work / t_ait

    t_ql, _, (ql_price, ql_err) = best_of(lambda: _ql_mc(process, option, ql_paths, n_steps), 1)
    rate_ql = ql_paths * n_steps / t_ql

    t_np, *_ = best_of(
        lambda: heston_mc(K=K, **PARAMS, n_paths=np_paths, n_steps=n_steps, seed=1, backend="numpy"), 1
    )
    rate_np = np_paths * n_steps / t_np

    z_ait = abs(res.price - analytic) / res.stderr
    z_ql = abs(ql_price - analytic) / ql_err
    tag = f"Heston QE-M antithetic, {n_steps} steps, {cpu_threads()} threads"
    rows = [
        {
            "benchmark": f"{tag}, {n_paths:,} paths",
            "metric": "path-steps/s",
            "aitrade": rate_ait,
            "peer": f"QuantLib {ql.__version__} MCEuropeanHestonEngine ({ql_paths:,} paths)",
            "peer_value": rate_ql,
            "ratio": rate_ait / rate_ql,
            "target": ">= 100M path-steps/s on 2 cores",
            "met": rate_ait >= TARGET,
        },
        {
            "benchmark": f"{tag}, {n_paths:,} paths",
            "metric": "path-steps/s",
            "aitrade": rate_ait,
            "peer": f"NumPy {np.__version__} vectorised QE-M ({np_paths:,} paths)",
            "peer_value": rate_np,
            "ratio": rate_ait / rate_np,
            "target": "faster than NumPy",
            "met": rate_ait > rate_np,
        },
        {
            "benchmark": f"{tag}: ATM call vs AnalyticHestonEngine",
            "metric": "|error| / stderr",
            "aitrade": z_ait,
            "peer": f"QuantLib MCEuropeanHestonEngine ({ql_paths:,} paths)",
            "peer_value": z_ql,
            "ratio": None,
            "target": "< 3",
            "met": bool(z_ait < 3),
        },
        {
            "benchmark": f"{tag}: ATM call",
            "metric": "seconds to stderr 0.01",
            "aitrade": t_ait * (res.stderr / 0.01) ** 2,
            "peer": "QuantLib MCEuropeanHestonEngine",
            "peer_value": t_ql * (ql_err / 0.01) ** 2,
            "ratio": (t_ql * (ql_err / 0.01) ** 2) / (t_ait * (res.stderr / 0.01) ** 2),
            "target": "-",
            "met": None,
        },
    ]
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import print_table  # the one table printer of bench/

    print_table(run(quick="--quick" in sys.argv))
