"""Black-Scholes-Merton / Black-76: QuantLib's AnalyticEuropeanEngine, finite differences, numba vs xp path.

QuantLib conventions made explicit (AnalyticEuropeanEngine on a BlackScholesMertonProcess, flat curves,
Actual365Fixed so that T = days / 365 exactly):

* ``theta()`` is per year and equals -dV/dT with spot, rates and vol fixed; ``thetaPerDay()`` = theta / 365.
* ``vega()`` is per 1.0 of volatility, ``rho()`` per 1.0 of the risk-free rate with the dividend curve fixed,
  ``dividendRho()`` per 1.0 of the dividend yield.
* Black-76 is the same engine with q = r and S = F (the forward then stays F for all T); its rho with F fixed is
  QuantLib's ``rho() + dividendRho()`` (both curves move together).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrade.pricing.black import (
    GREEKS,
    _black_xp,
    _prepare,
    black76_greeks,
    black76_price,
    black76_reason,
    bsm_greeks,
    bsm_price,
    bsm_reason,
)
from aitrade.pricing.normal import norm_cdf

ql = pytest.importorskip("QuantLib", reason="QuantLib is a dev dependency; install aitrade[dev]")

ALL = ("price",) + GREEKS


def _random_options(n: int, seed: int, days: bool = False):
    rng = np.random.default_rng(seed)
    S = rng.uniform(10, 300, n)
    K = S * np.exp(rng.normal(0, 0.35, n))
    T = rng.integers(1, 5 * 365, n) / 365.0 if days else rng.uniform(0.02, 5, n)
    r = rng.uniform(-0.01, 0.10, n)
    q = rng.uniform(-0.01, 0.08, n)
    sigma = rng.uniform(0.05, 1.2, n)
    c = rng.choice([True, False], n)
    return S, K, T, r, q, sigma, c


def _quantlib(S, K, days, r, q, sigma, is_call):
    today = ql.Date(15, ql.June, 2024)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    spot = ql.QuoteHandle(ql.SimpleQuote(S))
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc))
    qts = ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc))
    vts = ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), sigma, dc))
    process = ql.BlackScholesMertonProcess(spot, qts, rts, vts)
    payoff = ql.PlainVanillaPayoff(ql.Option.Call if is_call else ql.Option.Put, K)
    opt = ql.VanillaOption(payoff, ql.EuropeanExercise(today + int(days)))
    opt.setPricingEngine(ql.AnalyticEuropeanEngine(process))
    return {
        "price": opt.NPV(),
        "delta": opt.delta(),
        "gamma": opt.gamma(),
        "vega": opt.vega(),
        "theta": opt.theta(),
        "rho": opt.rho(),
        "dividendRho": opt.dividendRho(),
    }


def _assert_close(got, want, rtol, atol, what=""):
    got, want = np.asarray(got, float), np.asarray(want, float)
    bad = ~(np.abs(got - want) <= rtol * np.abs(want) + atol)
    assert not bad.any(), f"{what}: {np.flatnonzero(bad)[:5]} got {got[bad][:5]} want {want[bad][:5]}"


@pytest.mark.parametrize("model", ["bsm", "black76"])
def test_against_quantlib_analytic_european_engine(model):
    n = 400
    S, K, T, r, q, sigma, c = _random_options(n, seed=1 if model == "bsm" else 2, days=True)
    days = np.rint(T * 365).astype(int)
    if model == "black76":
        q = r  # forward = spot for all T
        got = black76_greeks(S, K, T, r, sigma, c, greeks=ALL)
    else:
        got = bsm_greeks(S, K, T, r, q, sigma, c, greeks=ALL)
    ref = {k: np.empty(n) for k in ("price", "delta", "gamma", "vega", "theta", "rho")}
    for i in range(n):
        res = _quantlib(S[i], K[i], days[i], r[i], q[i], sigma[i], bool(c[i]))
        for k in ref:
            ref[k][i] = res[k]
        if model == "black76":
            ref["rho"][i] = res["rho"] + res["dividendRho"]
    for k, want in ref.items():
        # QuantLib's own normal CDF and its term-structure arithmetic agree with exact values to ~1e-13
        _assert_close(got[k], want, rtol=1e-9, atol=1e-11 * S.max(), what=f"{model} {k}")


def _fd(f, x, h):
    "Fourth-order central difference."
    return (8 * (f(x + h) - f(x - h)) - (f(x + 2 * h) - f(x - 2 * h))) / (12 * h)


@pytest.mark.parametrize("model", ["bsm", "black76"])
def test_greeks_against_central_differences(model):
    n = 2000
    S, K, T, r, q, sigma, c = _random_options(n, seed=3 if model == "bsm" else 4)
    T = np.maximum(T, 0.1)

    def V(S=S, K=K, T=T, r=r, q=q, sigma=sigma, greeks=("price",)):
        if model == "black76":
            out = black76_greeks(S, K, T, r, sigma, c, greeks=greeks)
        else:
            out = bsm_greeks(S, K, T, r, q, sigma, c, greeks=greeks)
        return out if len(greeks) > 1 else out[greeks[0]]

    g = V(greeks=ALL)
    hS, hv, hT, hr = 1e-4 * S, 1e-4, 1e-4 * T, 1e-4
    fd = {
        "delta": _fd(lambda x: V(S=x), S, hS),
        "gamma": _fd(lambda x: V(S=x, greeks=("delta", "gamma"))["delta"], S, hS),
        "vega": _fd(lambda x: V(sigma=x), sigma, hv),
        "theta": -_fd(lambda x: V(T=x), T, hT),
        "rho": _fd(lambda x: V(r=x), r, hr),
        "vanna": _fd(lambda x: V(sigma=x, greeks=("delta", "vega"))["delta"], sigma, hv),
        "volga": _fd(lambda x: V(sigma=x, greeks=("vega", "delta"))["vega"], sigma, hv),
        "charm": -_fd(lambda x: V(T=x, greeks=("delta", "vega"))["delta"], T, hT),
    }
    # second derivatives straight from the price as well
    fd2_gamma = (V(S=S + 2e-4 * S) - 2 * g["price"] + V(S=S - 2e-4 * S)) / (2e-4 * S) ** 2
    fd2_volga = (V(sigma=sigma + 1e-4) - 2 * g["price"] + V(sigma=sigma - 1e-4)) / 1e-8
    scale = {
        "delta": 1.0,
        "gamma": 1 / S,
        "vega": S,
        "theta": S,
        "rho": S * T,
        "vanna": 1.0 / sigma,
        "volga": S / sigma,
        "charm": 1.0,
    }
    for k in GREEKS:
        _assert_close(g[k], fd[k], rtol=1e-6, atol=1e-7 * scale[k], what=f"{model} {k}")
    _assert_close(g["gamma"], fd2_gamma, rtol=1e-4, atol=1e-5 / S, what=f"{model} gamma (price)")
    _assert_close(g["volga"], fd2_volga, rtol=1e-4, atol=1e-4 * S, what=f"{model} volga (price)")


def _xp_numpy(names, black76, S, K, T, r, q, sigma, c):
    _, shape, flat = _prepare(dict(S=S, K=K, T=T, r=r, q=q, sigma=sigma, c=c))
    return {k: v.reshape(shape) for k, v in _black_xp(np, *flat, names, black76).items()}


def _check_kernel_vs_xp(S, K, T, r, q, sigma, c, black76):
    got = (
        black76_greeks(S, K, T, r, sigma, c, greeks=ALL)
        if black76
        else bsm_greeks(S, K, T, r, q, sigma, c, greeks=ALL)
    )
    ref = _xp_numpy(ALL, black76, S, K, T, r, r if black76 else q, sigma, c)
    sig = np.where(np.asarray(sigma) > 1e-6, sigma, 1e-6)  # NaN and tiny sigma: the 1e-6 floor
    for k in ALL:
        a, b = np.asarray(got[k]), np.asarray(ref[k])
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=k)
        m = ~np.isnan(a)
        # 1e-12 relative; where the closed form cancels (a price far below its two terms) rounding is
        # relative to the terms, hence the 1e-15 * (S + K) floor (raised for small sigma and long T, never lowered)
        floor = (
            1e-15
            * (np.asarray(S) + np.asarray(K))
            * np.maximum(1, np.asarray(T)) ** 2
            / np.minimum(sig, 1) ** 2
        )
        floor = np.broadcast_to(floor, a.shape)
        assert np.all(np.abs(a[m] - b[m]) <= 1e-12 * np.abs(b[m]) + floor[m]), k


@pytest.mark.parametrize("black76", [False, True])
def test_numba_kernel_equals_xp_path(black76):
    S, K, T, r, q, sigma, c = _random_options(200_000, seed=5)
    _check_kernel_vs_xp(S, K, T, r, q, sigma, np.where(c, 1.0, -1.0), black76)


finite = dict(allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    S=st.one_of(st.floats(1e-3, 1e4, **finite), st.sampled_from([0.0, -1.0, np.nan, np.inf])),
    K=st.one_of(st.floats(1e-3, 1e4, **finite), st.sampled_from([0.0, np.nan])),
    T=st.one_of(st.floats(0, 30, **finite), st.sampled_from([0.0, 1e-12, -1.0])),
    r=st.floats(-0.1, 0.3, **finite),
    q=st.floats(-0.1, 0.3, **finite),
    sigma=st.one_of(st.floats(0, 3, **finite), st.sampled_from([0.0, 1e-9, -0.1])),
    c=st.sampled_from([1.0, -1.0, 0.0, 2.0]),
    black76=st.booleans(),
)
def test_kernel_vs_xp_edges_and_parity(S, K, T, r, q, sigma, c, black76):
    _check_kernel_vs_xp(S, K, T, r, q, sigma, c, black76)
    reason = black76_reason(S, K, T, r, sigma, c) if black76 else bsm_reason(S, K, T, r, q, sigma, c)
    p = black76_price(S, K, T, r, sigma, c) if black76 else bsm_price(S, K, T, r, q, sigma, c)
    assert np.isnan(p) == (reason != ""), (p, reason)
    if reason == "" and c in (1.0, -1.0):
        pc = (black76_price if black76 else lambda *a: bsm_price(*a[:4], q, *a[4:]))(S, K, T, r, sigma, -c)
        call, put = (p, pc) if c == 1.0 else (pc, p)
        fwd = (S * np.exp(-r * T) if black76 else S * np.exp(-q * T)) - K * np.exp(-r * T)
        assert abs(call - put - fwd) <= 1e-12 * max(S, K) * max(1.0, np.exp(max(-q, -r) * T))
        assert p >= 0.0


def test_put_call_parity_1e12():
    S, K, T, r, q, sigma, _ = _random_options(500_000, seed=6)
    C, P = bsm_price(S, K, T, r, q, sigma, True), bsm_price(S, K, T, r, q, sigma, False)
    assert np.max(np.abs(C - P - (S * np.exp(-q * T) - K * np.exp(-r * T))) / np.maximum(S, K)) < 1e-12
    C, P = black76_price(S, K, T, r, sigma, 1), black76_price(S, K, T, r, sigma, -1)
    assert np.max(np.abs(C - P - np.exp(-r * T) * (S - K)) / np.maximum(S, K)) < 1e-12


def test_is_call_forms_and_broadcasting():
    S = np.array([[90.0], [100.0], [110.0]])
    K = np.array([95.0, 105.0])
    a = bsm_price(S, K, 0.5, 0.03, 0.01, 0.25, np.array([True, False]))
    b = bsm_price(S, K, 0.5, 0.03, 0.01, 0.25, [1, -1])
    c = bsm_price(S, K, 0.5, 0.03, 0.01, 0.25, np.array([1.0, 0.0]))
    assert a.shape == (3, 2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    g = bsm_greeks(S, K, 0.5, 0.03, 0.01, 0.25, True, greeks=("gamma",))
    assert list(g) == ["gamma"] and g["gamma"].shape == (3, 2)
    assert bsm_greeks(100, 100, 1, 0, 0, 0.2, True, greeks=()) == {}
    # a non-contiguous, integer, read-only mix is accepted and gives the same numbers
    Sx = np.arange(80, 120, dtype=np.int64)[::2]
    np.testing.assert_allclose(
        bsm_price(Sx, 100, 1, 0.01, 0, 0.2, True),
        bsm_price(Sx.astype(float), 100.0, 1.0, 0.01, 0.0, 0.2, True),
    )


def test_norm_cdf_lower_tail_relative_accuracy():
    from scipy.special import erfcx

    y = np.linspace(0, 37, 10_001)
    want = 0.5 * np.exp(-0.5 * y * y) * erfcx(y / np.sqrt(2))  # SciPy's exp carries y**2 * eps itself
    assert np.all(np.abs(norm_cdf(-y) / want - 1) < 2e-15 + 3e-16 * y**2)


def _cupy_or_skip():
    try:
        import cupy
    except Exception:
        pytest.skip("no CUDA GPU (cupy.cuda.is_available() is false)")
    if not cupy.cuda.is_available():
        pytest.skip("no CUDA GPU (cupy.cuda.is_available() is false)")
    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("black76", [False, True])
def test_gpu_equals_cpu(black76):
    cp = _cupy_or_skip()
    S, K, T, r, q, sigma, c = _random_options(100_000, seed=8)
    T[:100] = 0.0
    sigma[100:200] = 0.0
    S[200:300] = np.nan
    if black76:
        cpu = black76_greeks(S, K, T, r, sigma, c, greeks=ALL)
        gpu = black76_greeks(cp.asarray(S), K, T, r, sigma, c, greeks=ALL)
    else:
        cpu = bsm_greeks(S, K, T, r, q, sigma, c, greeks=ALL)
        gpu = bsm_greeks(cp.asarray(S), K, T, r, q, sigma, c, greeks=ALL)
    for k in ALL:
        assert isinstance(gpu[k], cp.ndarray)
        g = cp.asnumpy(gpu[k])
        np.testing.assert_array_equal(np.isnan(g), np.isnan(cpu[k]), err_msg=k)
        m = ~np.isnan(g)
        floor = 1e-15 * (S + K) * np.maximum(1, T) ** 2 / np.minimum(np.where(sigma > 0, sigma, 1), 1) ** 2
        assert np.all(np.abs(g[m] - cpu[k][m]) <= 1e-12 * np.abs(cpu[k][m]) + floor[m]), k


def _mp_reference(S, K, T, r, q, sigma, call, black76):
    "Price and Greeks from the closed forms in 50-digit arithmetic."
    mp = pytest.importorskip("mpmath", reason="mpmath is a dev dependency; install aitrade[dev]")
    mp.mp.dps = 50
    S, K, T, r, q, v = (mp.mpf(float(x)) for x in (S, K, T, r, q, sigma))
    w = 1 if call else -1
    sq = mp.sqrt(T)
    d1 = (mp.log(S / K) + (r - q + v * v / 2) * T) / (v * sq)
    d2 = d1 - v * sq
    N = lambda x: mp.erfc(-x / mp.sqrt(2)) / 2  # noqa: E731
    n1 = mp.exp(-d1 * d1 / 2) / mp.sqrt(2 * mp.pi)
    dq, dr = mp.exp(-q * T), mp.exp(-r * T)
    price = w * (S * dq * N(w * d1) - K * dr * N(w * d2))
    vega = S * dq * n1 * sq
    out = {
        "price": price,
        "delta": w * dq * N(w * d1),
        "gamma": dq * n1 / (S * v * sq),
        "vega": vega,
        "theta": -S * dq * n1 * v / (2 * sq) + w * (q * S * dq * N(w * d1) - r * K * dr * N(w * d2)),
        "rho": -T * price if black76 else w * T * K * dr * N(w * d2),
        "vanna": -dq * n1 * d2 / v,
        "volga": vega * d1 * d2 / v,
        "charm": dq * (w * q * N(w * d1) - n1 * ((r - q) / (v * sq) - d2 / (2 * T))),
    }
    return {k: float(x) for k, x in out.items()}


@pytest.mark.parametrize("black76", [False, True])
def test_against_50_digit_reference_including_deep_tails(black76):
    """Our rounding, not the formulas: every output vs the same closed forms in 50-digit arithmetic.

    Products of CDF/density terms (price, delta, gamma, vega, rho, vanna, volga) keep 1e-12 *relative* accuracy
    also deep out of the money, where the two terms of the price cancel (QuantLib and a plain SciPy version
    lose most digits there); theta and charm are sums of terms of either sign and are checked relative to
    their scale."""
    S, K, T, r, q, sigma, c = _random_options(300, seed=9)
    K[:100] = S[:100] * np.exp(np.random.default_rng(10).uniform(-1.5, 1.5, 100))  # far from the money
    sigma[:100] = np.minimum(sigma[:100], 0.15)
    if black76:
        q = r
        got = black76_greeks(S, K, T, r, sigma, c, greeks=ALL)
    else:
        got = bsm_greeks(S, K, T, r, q, sigma, c, greeks=ALL)
    ref = [_mp_reference(S[i], K[i], T[i], r[i], q[i], sigma[i], c[i], black76) for i in range(len(S))]
    n_tiny = 0
    for k in ALL:
        want = np.array([x[k] for x in ref])
        scale = {"gamma": 1 / S, "delta": 1.0, "charm": 1.0, "vanna": 1.0 / sigma, "volga": S / sigma}.get(
            k, S
        )
        if k in ("theta", "charm"):
            _assert_close(got[k], want, rtol=1e-12, atol=1e-14 * scale, what=k)
        elif k in ("vanna", "volga"):  # proportional to d2, which is d1 - sigma sqrt(T) and can cancel
            _assert_close(got[k], want, rtol=1e-12, atol=1e-15 * scale, what=k)
        else:
            _assert_close(got[k], want, rtol=1e-12, atol=1e-300, what=k)
        n_tiny += int(np.sum((k == "price") & (np.abs(want) < 1e-8 * S)))
    assert n_tiny >= 10  # the sample does reach the cancelling tail


def test_one_compiled_signature_and_empty_input():
    from aitrade.pricing.black import _greeks_cpu, _price_cpu

    S = np.linspace(50, 150, 11)
    for args in [
        (S, 100.0, 1.0, 0.01, 0.0, 0.2, True),
        (S.astype(np.float32), [100] * 11, 1, 0, 0, 0.2, np.ones(11, bool)),
        (S[::2], 100.0, 1.0, 0.01, 0.0, 0.2, [1, -1, 1, -1, 1, -1]),
        (list(S), 100.0, np.float64(1.0), 0.01, 0.0, 0.2, np.array([1.0] * 11)),
    ]:
        bsm_price(*args)
        bsm_greeks(*args, greeks=("delta", "vega"))
        black76_price(args[0], *args[1:4], *args[5:])
    assert len(_price_cpu.signatures) == 1 and len(_greeks_cpu.signatures) == 1
    assert bsm_price([], [], 1.0, 0.0, 0.0, 0.2, True).shape == (0,)
    assert bsm_greeks(np.empty((0, 3)), 100.0, 1.0, 0.0, 0.0, 0.2, True)["vanna"].shape == (0, 3)


def test_mills_coefficients_reproduce():
    "The derivation printed in the notebook, rerun in 50-digit arithmetic, gives the shipped `MILLS`."
    from math import comb

    from aitrade.pricing.normal import MILLS

    mp = pytest.importorskip("mpmath", reason="mpmath is a dev dependency; install aitrade[dev]")
    mp.mp.dps = 50
    k, deg, nodes = mp.mpf(5), 20, 64
    tmax = (40 - k) / (40 + k)

    def M(y):
        return mp.sqrt(mp.pi / 2) * mp.exp(y * y / 2) * mp.erfc(y / mp.sqrt(2))

    u = [mp.cos(mp.pi * (j + mp.mpf(1) / 2) / nodes) for j in range(nodes)]
    t = [-1 + (x + 1) * (tmax + 1) / 2 for x in u]
    g = [(k * (1 + x) / (1 - x) + k) * M(k * (1 + x) / (1 - x)) for x in t]
    c = [
        2 * mp.fsum(g[j] * mp.cos(mp.pi * i * (j + mp.mpf(1) / 2) / nodes) for j in range(nodes)) / nodes
        for i in range(deg + 1)
    ]
    c[0] /= 2
    T = [[mp.mpf(1)], [mp.mpf(0), mp.mpf(1)]]
    for n in range(2, deg + 1):
        T.append([2 * a - b for a, b in zip([0] + T[n - 1], T[n - 2] + [0, 0], strict=True)])
    mono = [mp.fsum(c[n] * T[n][i] for n in range(i, deg + 1) if i < len(T[n])) for i in range(deg + 1)]
    A = 2 / (tmax + 1)
    B = A - 1
    coef = [
        mp.fsum(mono[i] * comb(i, j) * A**j * B ** (i - j) for i in range(j, deg + 1)) for j in range(deg + 1)
    ]
    assert tuple(float(x) for x in coef) == MILLS
