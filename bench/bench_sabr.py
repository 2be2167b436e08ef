"""SABR benchmarks: vol throughput and per-expiry calibration time, against QuantLib (and SciPy).

Rows follow the house format; `ratio` = aitrade / peer oriented so that > 1 means aitrade is better.
Run: `.venv/bin/python bench/bench_sabr.py [--quick]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import QuantLib as ql
from scipy.optimize import least_squares
from timing import best_of, row  # the timer and row of every bench file

from aitrade.kernels import cpu_threads
from aitrade.pricing.sabr import _lognormal_xp, calibrate_sabr, sabr_vol


def _random_inputs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    F = rng.uniform(0.005, 0.1, n)
    K = F * np.exp(rng.uniform(-1.0, 1.0, n))
    T = rng.uniform(0.05, 30.0, n)
    b = rng.uniform(0.0, 1.0, n)
    a = rng.uniform(0.05, 0.6, n) * F ** (1 - b)
    r = rng.uniform(-0.95, 0.95, n)
    nu = rng.uniform(0.0, 1.5, n)
    return F, K, T, a, b, r, nu


def _smiles(n_exp: int, n_k: int, seed: int = 1, noise: float = 1e-3):
    rng = np.random.default_rng(seed)
    T = np.sort(rng.uniform(0.1, 15.0, n_exp))
    F = rng.uniform(0.01, 0.06, n_exp)
    alpha = rng.uniform(0.1, 0.5, n_exp) * F**0.5
    rho = rng.uniform(-0.7, 0.5, n_exp)
    nu = rng.uniform(0.15, 1.0, n_exp)
    half = np.minimum(0.6, 1.8 / (nu * np.sqrt(T)))[:, None]
    K = F[:, None] * np.exp(np.linspace(-1, 1, n_k)[None, :] * half)
    V = sabr_vol(F[:, None], K, T[:, None], alpha[:, None], 0.5, rho[:, None], nu[:, None])
    return F, K, T, V + rng.normal(0.0, noise, V.shape)


def run(quick: bool = False) -> list[dict]:
    rows = []
    # ---- vol throughput
    n = 200_000 if quick else 2_000_000
    n_ql = 20_000 if quick else 100_000
    args = _random_inputs(n)
    sabr_vol(*[a[:10] for a in args])  # warm up numba (serial and parallel kernels)
    sabr_vol(*args)
    rep = 3 if quick else 5
    t_nb = best_of(lambda: sabr_vol(*args), rep).wall
    flat = list(args) + [np.zeros(n)]
    t_xp = best_of(lambda: _lognormal_xp(np, *flat, False), rep).wall
    F, K, T, a, b, r, nu = (x[:n_ql].tolist() for x in args)
    sv = ql.sabrVolatility

    def ql_loop():
        for i in range(n_ql):
            sv(K[i], F[i], T[i], a[i], b[i], nu[i], r[i])

    t_ql = best_of(ql_loop, 1 if quick else 2).wall
    rate_nb, rate_xp, rate_ql = n / t_nb, n / t_xp, n_ql / t_ql
    rows.append(
        row(
            f"sabr_vol lognormal, {n:,} random inputs, numba {cpu_threads()} threads",
            "vols/s",
            rate_nb,
            "QuantLib sabrVolatility (Python loop)",
            rate_ql,
            need=5.0,
            target=">= 5x QuantLib",
        )
    )
    rows.append(
        row(
            f"sabr_vol lognormal, {n:,} inputs, xp path with NumPy (GPU algorithm on CPU)",
            "vols/s",
            rate_xp,
            "QuantLib sabrVolatility (Python loop)",
            rate_ql,
            target="informational",
            need=1.0,
        )
    )
    rows[-1]["met"] = None

    # ---- calibration per expiry
    n_exp, n_k = (32, 15) if quick else (256, 15)  # quick: serial kernel; full: parallel over expiries
    Fe, Ke, Te, Ve = _smiles(n_exp, n_k)
    calibrate_sabr(Fe[:2], Ke[:2], Te[:2], Ve[:2], 0.5)  # warm up (serial kernel)
    calibrate_sabr(Fe, Ke, Te, Ve, 0.5)  # warm up (parallel kernel)
    t_ours = best_of(lambda: calibrate_sabr(Fe, Ke, Te, Ve, 0.5), rep).wall
    fit = calibrate_sabr(Fe, Ke, Te, Ve, 0.5)

    ql_rmse = np.empty(n_exp)

    def ql_calib():
        for e in range(n_exp):
            interp = ql.SABRInterpolation(
                ql.Array(Ke[e].tolist()),
                ql.Array(Ve[e].tolist()),
                float(Te[e]),
                float(Fe[e]),
                0.1 * Fe[e] ** 0.5,
                0.5,
                0.3,
                0.0,
                False,
                True,
                False,
                False,
                False,  # not vega weighted: the same objective as ours
            )
            # the constructor calibrates; the rmse uses QuantLib's parameters in the same Hagan formula
            model = sabr_vol(Fe[e], Ke[e], Te[e], interp.alpha(), 0.5, interp.rho(), interp.nu())
            ql_rmse[e] = np.sqrt(np.mean((model - Ve[e]) ** 2))

    t_ql_cal = best_of(ql_calib, 1).wall

    sp_rmse = np.empty(n_exp)

    def sp_calib():
        for e in range(n_exp):

            def res(p, e=e):
                return sabr_vol(Fe[e], Ke[e], Te[e], p[0], 0.5, p[1], p[2]) - Ve[e]

            x0 = [0.2 * Fe[e] ** 0.5, 0.0, 0.3]
            sol = least_squares(res, x0, bounds=([1e-8, -0.9999, 0.0], [np.inf, 0.9999, 10.0]))
            sp_rmse[e] = np.sqrt(np.mean(sol.fun**2))

    t_sp = best_of(sp_calib, 1).wall
    per = 1e3 / n_exp
    rows.append(
        row(
            f"calibrate_sabr, {n_exp} expiries x {n_k} strikes, beta=0.5, noisy",
            "ms per expiry",
            t_ours * per,
            "QuantLib SABRInterpolation (per expiry)",
            t_ql_cal * per,
            higher_is_better=False,
            target="faster than QuantLib",
            need=1.0,
        )
    )
    rows.append(
        row(
            f"calibrate_sabr, {n_exp} expiries x {n_k} strikes, beta=0.5, noisy",
            "ms per expiry",
            t_ours * per,
            "scipy least_squares + sabr_vol (per expiry)",
            t_sp * per,
            higher_is_better=False,
            target="faster than SciPy",
            need=1.0,
        )
    )
    rows.append(
        row(
            "calibration quality, same quotes",
            "mean rmse (vol)",
            float(np.mean(fit.rmse)),
            "QuantLib SABRInterpolation",
            float(np.mean(ql_rmse)),
            higher_is_better=False,
            need=1.0 - 1e-6,
            target="rmse <= QuantLib's",
        )
    )
    rows.append(
        row(
            "calibration quality, same quotes",
            "mean rmse (vol)",
            float(np.mean(fit.rmse)),
            "scipy least_squares",
            float(np.mean(sp_rmse)),
            higher_is_better=False,
            need=1.0 - 1e-6,
            target="rmse <= SciPy's",
        )
    )
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import print_table  # the one table printer of bench/

    print_table(run(quick="--quick" in sys.argv))
