"""Benchmark: Black-Scholes-Merton prices and Greeks, aitrade (numba, fused kernel) vs NumPy/SciPy and QuantLib.

Run: ``python bench/bench_black.py [--quick]``. Target (issue 3): >= 200 M prices/s for 10 M options on 2 cores.
The NumPy/SciPy peer is a plain vectorised implementation of the same formulas, measured in the same run on the
same arrays; the public `bsm_price` is timed interleaved with the fused kernel alone (one run of each per round,
best of the rounds), so that load from other processes on a shared machine hits both alike and the row
comparing them (target: the public call within 1.5x of the kernel) measures the call's overhead, not the load; QuantLib's AnalyticEuropeanEngine is timed on a 20k sample (build + NPV + Greeks per option) and
scaled to options/s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import ndtr
from timing import best_of, row  # the timer and row of every bench file

from aitrade.kernels import cpu_threads
from aitrade.pricing.black import GREEKS, _price_cpu, bsm_greeks, bsm_price

TARGET = 200e6


def _inputs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    S = rng.uniform(50, 150, n)
    K = rng.uniform(50, 150, n)
    T = rng.uniform(0.02, 3, n)
    r = rng.uniform(0.0, 0.06, n)
    q = rng.uniform(0.0, 0.04, n)
    sigma = rng.uniform(0.05, 0.8, n)
    c = rng.random(n) < 0.5
    return S, K, T, r, q, sigma, c


def numpy_price(S, K, T, r, q, sigma, c):
    w = np.where(c, 1.0, -1.0)
    v = sigma * np.sqrt(T)
    d1 = (np.log(S / K) + (r - q) * T) / v + 0.5 * v
    d2 = d1 - v
    return w * (S * np.exp(-q * T) * ndtr(w * d1) - K * np.exp(-r * T) * ndtr(w * d2))


def numpy_greeks(S, K, T, r, q, sigma, c):
    w = np.where(c, 1.0, -1.0)
    sq = np.sqrt(T)
    v = sigma * sq
    d1 = (np.log(S / K) + (r - q) * T) / v + 0.5 * v
    d2 = d1 - v
    dq, dr = np.exp(-q * T), np.exp(-r * T)
    N1, N2 = ndtr(w * d1), ndtr(w * d2)
    n1 = np.exp(-0.5 * d1 * d1) / np.sqrt(2 * np.pi)
    price = w * (S * dq * N1 - K * dr * N2)
    vega = S * dq * n1 * sq
    return {
        "price": price,
        "delta": w * dq * N1,
        "gamma": dq * n1 / (S * v),
        "vega": vega,
        "theta": -S * dq * n1 * sigma / (2 * sq) + w * (q * S * dq * N1 - r * K * dr * N2),
        "rho": w * T * K * dr * N2,
        "vanna": -dq * n1 * d2 / sigma,
        "volga": vega * d1 * d2 / sigma,
        "charm": dq * (w * q * N1 - n1 * ((r - q) / v - d2 / (2 * T))),
    }


def quantlib_greeks(S, K, T, r, q, sigma, c):
    import QuantLib as ql

    today = ql.Date(15, ql.June, 2024)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    out = np.empty((6, len(S)))
    for i in range(len(S)):
        proc = ql.BlackScholesMertonProcess(
            ql.QuoteHandle(ql.SimpleQuote(S[i])),
            ql.YieldTermStructureHandle(ql.FlatForward(today, q[i], dc)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, r[i], dc)),
            ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), sigma[i], dc)),
        )
        opt = ql.VanillaOption(
            ql.PlainVanillaPayoff(ql.Option.Call if c[i] else ql.Option.Put, K[i]),
            ql.EuropeanExercise(today + max(1, int(round(T[i] * 365)))),
        )
        opt.setPricingEngine(ql.AnalyticEuropeanEngine(proc))
        out[:, i] = opt.NPV(), opt.delta(), opt.gamma(), opt.vega(), opt.theta(), opt.rho()
    return out


def run(quick: bool = False) -> list[dict]:
    n = 1_000_000 if quick else 10_000_000
    n_ql = 2_000 if quick else 20_000
    repeat = 2 if quick else 3
    S, K, T, r, q, sigma, c = _inputs(n)
    # warm up numba (compilation or cache load) on the same argument types
    bsm_price(S[:1000], K[:1000], T[:1000], r[:1000], q[:1000], sigma[:1000], c[:1000])
    bsm_greeks(
        S[:1000], K[:1000], T[:1000], r[:1000], q[:1000], sigma[:1000], c[:1000], greeks=("price",) + GREEKS
    )
    threads = cpu_threads()

    t_greeks = best_of(lambda: bsm_greeks(S, K, T, r, q, sigma, c, greeks=("price",) + GREEKS), repeat).wall
    t_np_price = best_of(lambda: numpy_price(S, K, T, r, q, sigma, c), repeat).wall
    t_np_greeks = best_of(lambda: numpy_greeks(S, K, T, r, q, sigma, c), 1 if not quick else repeat).wall

    # the fused kernel alone: inputs already prepared, output preallocated (no allocation / page faults)
    flat = [np.ascontiguousarray(a) for a in (S, K, T, r, q, sigma)]
    codes = c.astype(np.int8)
    for a in (*flat, codes):
        a.flags.writeable = False
    out = np.zeros(n)
    _price_cpu(*flat, codes, False, out)
    # interleaved: the public call and the kernel alone see the same load (best of the rounds for each)
    t_price = t_kernel = np.inf
    for _ in range(2 * repeat):
        t_kernel = min(t_kernel, best_of(lambda: _price_cpu(*flat, codes, False, out), 1).wall)
        t_price = min(t_price, best_of(lambda: bsm_price(S, K, T, r, q, sigma, c), 1).wall)

    rows = [
        row(
            f"BSM price, fused kernel only (prepared inputs, preallocated output), {threads} threads",
            "prices/s",
            n / t_kernel,
            "NumPy/SciPy vectorised",
            n / t_np_price,
            target=">= 2e8 prices/s",
            met=n / t_kernel >= TARGET,
        ),
        row(
            f"BSM price via bsm_price (allocates output), {n / 1e6:g}M options, {threads} threads",
            "prices/s",
            n / t_price,
            "NumPy/SciPy vectorised",
            n / t_np_price,
            target=">= 2e8 prices/s",
            met=n / t_price >= TARGET,
        ),
        row(
            "bsm_price overhead: public call time / fused kernel time (interleaved runs)",
            "time ratio",
            t_price / t_kernel,
            None,
            None,
            target="<= 1.5",
            met=t_price / t_kernel <= 1.5,
        ),
        row(
            f"BSM price + 8 Greeks, {n / 1e6:g}M options, {threads} threads",
            "options/s",
            n / t_greeks,
            "NumPy/SciPy vectorised",
            n / t_np_greeks,
            target="faster than peer",
            met=n / t_greeks > n / t_np_greeks,
        ),
    ]

    # QuantLib on a sample, scaled to options/s (price + delta, gamma, vega, theta, rho per option)
    Sq, Kq, Tq, rq, qq, sq_, cq = (a[:n_ql] for a in (S, K, T, r, q, sigma, c))
    Tq = np.maximum(1, np.rint(Tq * 365)) / 365.0
    t0 = time.perf_counter()
    ql_out = quantlib_greeks(Sq, Kq, Tq, rq, qq, sq_, cq)
    t_ql = time.perf_counter() - t0
    rows.append(
        row(
            f"BSM price + Greeks vs QuantLib ({n_ql} options sampled)",
            "options/s",
            n / t_greeks,
            "QuantLib AnalyticEuropeanEngine (per option build + NPV + 5 Greeks)",
            n_ql / t_ql,
            target="faster than peer",
            met=n / t_greeks > n_ql / t_ql,
        )
    )

    # accuracy against both peers on the same inputs (not timed)
    ours = bsm_greeks(Sq, Kq, Tq, rq, qq, sq_, cq, greeks=("price", "delta", "gamma", "vega", "theta", "rho"))
    # differences relative to each quantity's natural scale (S for price, vega, theta, rho; 1 for delta; 1/S for
    # gamma): deep out-of-the-money values cancel in any closed-form implementation, so plain relative
    # differences there measure the peers' rounding, not ours (see the notebook: ours is within 2e-13 relative
    # of a 50-digit reference, QuantLib's AnalyticEuropeanEngine is not in the far tails)
    scale = {"price": Sq, "delta": 1.0, "gamma": 1 / Sq, "vega": Sq, "theta": Sq, "rho": Sq}
    err_ql = max(
        float(np.max(np.abs(ours[k] - ql_out[j]) / scale[k]))
        for j, k in enumerate(("price", "delta", "gamma", "vega", "theta", "rho"))
    )
    rows.append(
        row(
            "max |difference| / scale vs QuantLib (sample, price + 5 Greeks)",
            "abs. diff / scale",
            err_ql,
            "QuantLib",
            None,
            target="<= 1e-12",
            met=err_ql <= 1e-12,
        )
    )
    m = 1_000_000
    ref = numpy_price(S[:m], K[:m], T[:m], r[:m], q[:m], sigma[:m], c[:m])
    got = bsm_price(S[:m], K[:m], T[:m], r[:m], q[:m], sigma[:m], c[:m])
    err_np = float(np.max(np.abs(got - ref) / S[:m]))
    rows.append(
        row(
            "max |difference| / S vs NumPy/SciPy (1M prices)",
            "abs. diff / scale",
            err_np,
            "NumPy/SciPy",
            None,
            target="<= 1e-12",
            met=err_np <= 1e-12,
        )
    )
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import print_table  # the one table printer of bench/

    print_table(run(quick="--quick" in sys.argv))
