"""Heavier checks of `aitrade.pricing.montecarlo` (Andersen's QE-M Heston Monte Carlo).

Reference prices: QuantLib's `AnalyticHestonEngine` (adaptive Gauss-Lobatto, relative tolerance 1e-14), the
Lewis values of QuantLib's test-suite (`test-suite/hestonmodel.cpp`, copied in shared/reference), and
the platform's own COS pricer `aitrade.pricing.heston.heston_price_cos`.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import QuantLib as ql
import scipy.special as sps
import scipy.stats

from aitrade.kernels import cpu_threads, cupy_module
from aitrade.pricing.montecarlo import (
    McResult,
    _qe_log_returns_cpu,
    _qe_log_returns_xp,
    _uniform_xp,
    heston_mc,
    ndtri_as241,
    qe_constants,
    stream_key,
)

# (S, T in days of 365, r, q, v0, kappa, theta, sigma, rho, n_steps)
CASES = {
    # Andersen (2008), test cases I-III: strongly Feller-violating, long-dated
    "andersen-I": (100.0, 3650, 0.0, 0.0, 0.04, 0.5, 0.04, 1.0, -0.9, 80),
    "andersen-II": (100.0, 5475, 0.0, 0.0, 0.04, 0.3, 0.04, 0.9, -0.5, 60),
    "andersen-III": (100.0, 1825, 0.0, 0.0, 0.09, 1.0, 0.09, 1.0, -0.3, 40),
    "positive-rho": (100.0, 365, 0.03, 0.01, 0.04, 1.5, 0.04, 0.3, 0.5, 24),
    "short-dated": (100.0, 73, 0.05, 0.0, 0.09, 2.0, 0.06, 0.5, -0.7, 16),
    "feller-violating-rho+": (50.0, 730, 0.02, 0.03, 0.06, 0.5, 0.06, 1.5, 0.3, 48),
}
MONEYNESS = np.array([0.7, 0.85, 1.0, 1.15, 1.4])

NO_GPU = "no CUDA GPU (cupy.cuda.is_available() is false)"
gpu = pytest.mark.skipif(cupy_module() is None, reason=NO_GPU)


def _ql_prices(S, days, r, q, v0, kappa, theta, sigma, rho, strikes, calls):
    today = ql.Date(15, 1, 2024)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc, ql.Continuous))
    qts = ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc, ql.Continuous))
    process = ql.HestonProcess(rts, qts, ql.QuoteHandle(ql.SimpleQuote(S)), v0, kappa, theta, sigma, rho)
    engine = ql.AnalyticHestonEngine(ql.HestonModel(process), 1e-14, 100_000)
    out = []
    for k, c in zip(strikes, calls, strict=True):
        payoff = ql.PlainVanillaPayoff(ql.Option.Call if c else ql.Option.Put, float(k))
        opt = ql.EuropeanOption(payoff, ql.EuropeanExercise(today + int(days)))
        opt.setPricingEngine(engine)
        out.append(opt.NPV())
    return np.array(out)


def _case(name):
    S, days, r, q, v0, kappa, theta, sigma, rho, n_steps = CASES[name]
    T = days / 365.0
    fwd = S * math.exp((r - q) * T)
    k = np.round(fwd * MONEYNESS, 2)
    strikes = np.concatenate([k, k])
    calls = np.array([True] * len(k) + [False] * len(k))
    return (S, days, T, r, q, v0, kappa, theta, sigma, rho, n_steps), strikes, calls


@pytest.fixture(scope="module")
def mc_runs():
    "One 100k-path run per parameter set; calls and puts of five strikes from the same paths."
    runs = {}
    for name in CASES:
        (S, days, T, r, q, v0, kappa, theta, sigma, rho, n_steps), strikes, calls = _case(name)
        res = heston_mc(
            S,
            strikes,
            T,
            r,
            q,
            v0,
            kappa,
            theta,
            sigma,
            rho,
            is_call=calls,
            n_paths=100_000,
            n_steps=n_steps,
            seed=1,
        )
        runs[name] = (res, strikes, calls)
    return runs


@pytest.mark.parametrize("name", list(CASES))
def test_within_3_stderr_of_quantlib_analytic(name, mc_runs):
    (S, days, T, r, q, v0, kappa, theta, sigma, rho, _), strikes, calls = _case(name)
    res, _, _ = mc_runs[name]
    ref = _ql_prices(S, days, r, q, v0, kappa, theta, sigma, rho, strikes, calls)
    z = (res.price - ref) / res.stderr
    assert np.all(res.stderr > 0)
    assert np.all(np.abs(z) < 3.0), dict(zip(strikes, np.round(z, 2), strict=True))


@pytest.mark.parametrize("name", list(CASES))
def test_within_3_stderr_of_cos(name, mc_runs):
    "The platform's own semi-analytic price (COS) is the reference the desk uses; it agrees with QuantLib first."
    from aitrade.pricing.heston import heston_price_cos

    (S, days, T, r, q, v0, kappa, theta, sigma, rho, _), strikes, calls = _case(name)
    res, _, _ = mc_runs[name]
    ref = np.asarray(heston_price_cos(S, strikes, T, r, q, v0, kappa, theta, sigma, rho, is_call=calls))
    ql_ref = _ql_prices(S, days, r, q, v0, kappa, theta, sigma, rho, strikes, calls)
    assert np.max(np.abs(ref - ql_ref)) < 1e-6 * S
    assert np.all(np.abs(res.price - ref) < 3.0 * res.stderr)


def test_lewis_reference_prices():
    "Lewis's prices (QuantLib test-suite, 1e-15 accurate), five strikes, calls and puts, from one path set."
    strikes = np.array([80.0, 90.0, 100.0, 110.0, 120.0])
    calls = np.array(
        [26.774758743998856, 20.93334900059671, 16.070154917028844, 12.132211516709845, 9.024913483457835]
    )
    puts = np.array(
        [7.958878113256768, 12.017966707346305, 17.05527096127011, 23.0178258984428, 29.81102620268247]
    )
    k = np.concatenate([strikes, strikes])
    is_call = np.array([True] * 5 + [False] * 5)
    res = heston_mc(
        100.0,
        k,
        1.0,
        0.01,
        0.02,
        0.04,
        4.0,
        0.25,
        1.0,
        -0.5,
        is_call=is_call,
        n_paths=200_000,
        n_steps=32,
        seed=1,
    )
    ref = np.concatenate([calls, puts])
    assert np.all(np.abs(res.price - ref) < 3.0 * res.stderr)
    assert np.all(res.stderr < 0.06)


def test_martingale_correction_with_large_steps():
    """With one step a year the QE-M forward is still unbiased (Andersen's martingale correction)."""
    for S, T, r, q, v0, kappa, theta, sigma, rho in [
        (100.0, 5.0, 0.03, 0.0, 0.09, 1.0, 0.09, 1.0, -0.3),
        (100.0, 10.0, 0.0, 0.0, 0.04, 0.5, 0.04, 1.0, -0.9),
        (100.0, 4.0, 0.02, 0.01, 0.04, 1.0, 0.04, 0.5, 0.6),
    ]:
        res = heston_mc(
            S,
            S,
            T,
            r,
            q,
            v0,
            kappa,
            theta,
            sigma,
            rho,
            n_paths=200_000,
            n_steps=int(T),
            seed=9,
            return_terminal=True,
        )
        pair_means = res.terminal.mean(axis=0)
        se = pair_means.std(ddof=1) / math.sqrt(pair_means.size)
        fwd = S * math.exp((r - q) * T)
        assert abs(pair_means.mean() - fwd) < 3 * se, (pair_means.mean(), fwd, se)


def test_put_call_parity_in_sample():
    k = np.array([60.0, 100.0, 150.0])
    args = (100.0, k, 2.0, 0.03, 0.01, 0.05, 1.2, 0.05, 0.8, -0.6)
    c = heston_mc(*args, is_call=True, n_paths=10_000, n_steps=20, seed=4, return_terminal=True)
    p = heston_mc(*args, is_call=False, n_paths=10_000, n_steps=20, seed=4)
    np.testing.assert_allclose(
        c.price - p.price, math.exp(-0.06) * (c.terminal.mean() - k), rtol=1e-10, atol=1e-11
    )


def test_stderr_is_from_antithetic_pair_averages():
    args = (100.0, [90.0, 110.0], 1.0, 0.02, 0.0, 0.04, 1.5, 0.04, 0.5, -0.7)
    res = heston_mc(*args, n_paths=20_000, n_steps=10, seed=2, return_terminal=True)
    assert res.terminal.shape == (2, 10_000)
    df = math.exp(-0.02)
    for j, k in enumerate([90.0, 110.0]):
        y = np.maximum(res.terminal - k, 0.0).mean(axis=0)
        assert math.isclose(res.price[j], df * y.mean(), rel_tol=1e-13)
        assert math.isclose(res.stderr[j], df * y.std(ddof=1) / math.sqrt(10_000), rel_tol=1e-13)
    plain = heston_mc(*args, n_paths=20_000, n_steps=10, seed=2, antithetic=False, return_terminal=True)
    assert plain.terminal.shape == (1, 20_000)
    y = np.maximum(plain.terminal[0] - 90.0, 0.0)
    assert math.isclose(plain.stderr[0], df * y.std(ddof=1) / math.sqrt(20_000), rel_tol=1e-13)
    # antithetics pay off here: a smaller error for the same number of paths
    assert np.all(res.stderr < plain.stderr)


def test_reproducible_and_thread_count_independent():
    args = (100.0, [80.0, 100.0, 120.0], 3.0, 0.01, 0.0, 0.04, 0.5, 0.04, 1.0, -0.9)
    kw = dict(n_paths=50_000, n_steps=30, seed=123, return_terminal=True)
    a = heston_mc(*args, **kw)
    b = heston_mc(*args, **kw)
    nt = cpu_threads()
    numba.set_num_threads(1)
    try:
        c = heston_mc(*args, **kw)
    finally:
        numba.set_num_threads(nt)
    for other in (b, c):
        np.testing.assert_array_equal(a.terminal, other.terminal)
        np.testing.assert_array_equal(a.price, other.price)
        np.testing.assert_array_equal(a.stderr, other.stderr)
    assert (a.n_paths, a.n_steps, a.seed) == (50_000, 30, 123)
    d = heston_mc(*args, **{**kw, "seed": 124})
    assert np.all(d.price != a.price)
    # counters are per unit: a smaller run is a prefix of a larger one with the same seed
    e = heston_mc(*args, **{**kw, "n_paths": 10_000})
    np.testing.assert_array_equal(e.terminal, a.terminal[:, :5_000])


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("antithetic", [True, False])
def test_xp_path_with_numpy_matches_numba(name, antithetic):
    (S, _, T, r, q, v0, kappa, theta, sigma, rho, n_steps), strikes, calls = _case(name)
    kw = dict(
        is_call=calls, n_paths=4_000, n_steps=n_steps, seed=77, antithetic=antithetic, return_terminal=True
    )
    cpu = heston_mc(S, strikes, T, r, q, v0, kappa, theta, sigma, rho, backend="cpu", **kw)
    ref = heston_mc(S, strikes, T, r, q, v0, kappa, theta, sigma, rho, backend="numpy", **kw)
    np.testing.assert_allclose(cpu.terminal, ref.terminal, rtol=1e-12, atol=0)
    np.testing.assert_allclose(cpu.price, ref.price, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cpu.stderr, ref.stderr, rtol=1e-12, atol=1e-14)


def test_both_qe_branches_and_fallback_exercised():
    "The Feller-violating sets use the exponential branch; the kernels agree there too (log-returns)."
    c = qe_constants(0.25, 0.3, 0.04, 0.9, -0.5)
    key = stream_key(5)
    x_cpu = _qe_log_returns_cpu(key, 3_000, 40, True, 0.04, c)
    x_xp = _qe_log_returns_xp(np, key, 3_000, 40, True, 0.04, c)
    np.testing.assert_allclose(x_cpu, x_xp, rtol=1e-12, atol=1e-13)
    # share of exponential-branch steps is material for this set: psi > 1.5 where v is small
    dt, kappa, theta, sigma = 0.25, 0.3, 0.04, 0.9
    e = math.exp(-kappa * dt)
    v = np.linspace(0.0, 0.2, 201)
    m = theta + (v - theta) * e
    s2 = v * sigma**2 * e * (1 - e) / kappa + theta * sigma**2 * (1 - e) ** 2 / (2 * kappa)
    assert np.any(s2 / m**2 > 1.5) and np.any(s2 / m**2 <= 1.5)


def test_random_stream_statistics():
    key = stream_key(0)
    i = np.arange(400_000, dtype=np.uint64)
    u = _uniform_xp(np, key, i)
    assert u.min() > 0 and u.max() < 1
    assert np.all(1.0 - (1.0 - u) == u)  # U = (j + 1/2) 2^-52: the complement is exact
    assert scipy.stats.kstest(u, "uniform").pvalue > 1e-3
    z = np.array([ndtri_as241(x) for x in u[:100_000]])
    assert scipy.stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(np.corrcoef(z[0::2], z[1::2])[0, 1]) < 0.02
    assert stream_key(0) != stream_key(1)


def test_ndtri_as241_accuracy():
    p = np.concatenate(
        [
            np.linspace(0.0, 1.0, 100_001)[1:-1],
            10.0 ** -np.arange(1.0, 308.0),
            1.0 - 10.0 ** -np.arange(1.0, 16.0),
            [2.0**-53, 0.5 * 2.0**-52, 1 - 2.0**-53],
        ]
    )
    ref = sps.ndtri(p)
    mine = np.array([ndtri_as241(x) for x in p])
    assert np.all(np.abs(mine - ref) <= 2e-15 * np.abs(ref))


@pytest.mark.parametrize(
    ("field", "kwargs", "message"),
    [
        ("S", dict(S=-1.0), "S must be > 0"),
        ("S", dict(S=[100.0, 101.0]), "S must be a scalar"),
        ("T", dict(T=0.0), "T must be > 0"),
        ("r", dict(r=float("inf")), "r must be finite"),
        ("q", dict(q="x"), "q must be a real number"),
        ("v0", dict(v0=-0.01), "v0 must be >= 0"),
        ("kappa", dict(kappa=0.0), "kappa must be > 0"),
        ("theta", dict(theta=0.0), "theta must be > 0"),
        ("sigma", dict(sigma=float("nan")), "sigma must be finite"),
        ("rho", dict(rho=1.01), "rho must be in [-1, 1]"),
        ("n_paths", dict(n_paths=999), "n_paths must be even"),
        ("n_paths", dict(n_paths=1.5e4), "n_paths must be an integer"),
        ("n_steps", dict(n_steps=0), "n_steps must be in [1"),
        ("seed", dict(seed=-1), "seed must be in [0"),
        ("psi_c", dict(psi_c=2.5), "psi_c must be in [1, 2]"),
    ],
)
def test_bad_scalar_inputs_raise_naming_the_field(field, kwargs, message):
    base = dict(
        S=100.0,
        K=100.0,
        T=1.0,
        r=0.0,
        q=0.0,
        v0=0.04,
        kappa=1.0,
        theta=0.04,
        sigma=0.5,
        rho=-0.5,
        n_paths=1_000,
        n_steps=5,
    )
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        heston_mc(**{**base, **kwargs})


SMALL = (
    1.0,
    0.0,
    0.0,
    0.04,
    1.0,
    0.04,
    0.5,
    -0.5,
)  # T, r, q, v0, kappa, theta, sigma, rho of the checks below


def test_bad_strikes_give_nan_rows_only():
    k = np.array([[90.0, -5.0, np.inf], [np.nan, 100.0, 0.0]])
    res = heston_mc(
        100.0,
        k,
        *SMALL,
        is_call=[True, False, True],
        n_paths=2_000,
        n_steps=5,
    )
    assert isinstance(res, McResult)
    assert res.price.shape == (2, 3) and res.stderr.shape == (2, 3)
    bad = np.array([[False, True, True], [True, False, True]])
    np.testing.assert_array_equal(np.isnan(res.price), bad)
    np.testing.assert_array_equal(np.isnan(res.stderr), bad)
    good = heston_mc(
        100.0,
        [90.0, 100.0],
        *SMALL,
        is_call=[True, False],
        n_paths=2_000,
        n_steps=5,
    )
    np.testing.assert_array_equal(res.price[~bad], good.price)


def test_scalar_strike_gives_scalar():
    res = heston_mc(100.0, 100.0, *SMALL, n_paths=2_000, n_steps=5)
    assert isinstance(res.price, np.floating) and isinstance(res.stderr, np.floating)
    assert res.terminal is None


def test_gpu_backend_without_gpu_raises():
    if cupy_module() is not None:
        pytest.skip("a CUDA GPU is present; the error path needs a machine without one")
    with pytest.raises(RuntimeError, match=r"cupy.cuda.is_available\(\) is false"):
        heston_mc(100.0, 100.0, *SMALL, n_paths=2_000, n_steps=5, backend="gpu")


@pytest.mark.gpu
@gpu
def test_gpu_path_matches_cpu():
    import cupy as cp

    (S, _, T, r, q, v0, kappa, theta, sigma, rho, n_steps), strikes, calls = _case("andersen-I")
    kw = dict(n_paths=200_000, n_steps=n_steps, seed=3, return_terminal=True)
    cpu = heston_mc(S, strikes, T, r, q, v0, kappa, theta, sigma, rho, is_call=calls, **kw)
    dev = heston_mc(
        S, cp.asarray(strikes), T, r, q, v0, kappa, theta, sigma, rho, is_call=cp.asarray(calls), **kw
    )
    assert isinstance(dev.price, cp.ndarray) and isinstance(dev.terminal, cp.ndarray)
    np.testing.assert_allclose(dev.terminal.get(), cpu.terminal, rtol=1e-10)
    np.testing.assert_allclose(dev.price.get(), cpu.price, rtol=1e-10)
