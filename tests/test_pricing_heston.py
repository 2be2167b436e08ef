"""Heavier checks of aitrade.pricing.heston: QuantLib comparisons, random parameters, the DAX calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from aitrade.pricing import heston as H
from aitrade.pricing.heston import (
    HestonParams,
    calibrate_heston,
    dax_surface,
    heston_cf,
    heston_cf_grad,
    heston_price_cos,
    heston_price_lewis,
    heston_surface,
)

REF = Path(__file__).resolve().parents[2] / "shared" / "reference"
if not REF.exists():
    REF = Path("/work/shared/reference")

ql = pytest.importorskip("QuantLib", reason="QuantLib is a dev dependency")


def _random_cases(seed: int, n: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        prm = HestonParams(
            v0=rng.uniform(0.005, 0.3),
            kappa=rng.uniform(0.2, 6.0),
            theta=rng.uniform(0.005, 0.3),
            sigma=rng.uniform(0.05, 1.5),
            rho=rng.uniform(-0.95, 0.6),
        )
        days = int(rng.integers(30, 1500))
        strikes = 100.0 * np.exp(rng.uniform(-0.6, 0.5, 7))
        r, q = rng.uniform(-0.01, 0.06), rng.uniform(0.0, 0.04)
        yield prm, days, strikes, r, q


def _ql_prices(S, strikes, days, r, q, prm, is_call):
    today = ql.Date(2, 1, 2024)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc))
    qts = ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc))
    model = ql.HestonModel(ql.HestonProcess(rts, qts, ql.QuoteHandle(ql.SimpleQuote(S)), *prm))
    engine = ql.AnalyticHestonEngine(model, 1e-12, 100000)  # adaptive Gauss-Lobatto, tight tolerance
    out = []
    for K, c in zip(strikes, is_call, strict=True):
        opt = ql.VanillaOption(
            ql.PlainVanillaPayoff(ql.Option.Call if c else ql.Option.Put, float(K)),
            ql.EuropeanExercise(today + days),
        )
        opt.setPricingEngine(engine)
        out.append(opt.NPV())
    return np.array(out)


# --- reference values -------------------------------------------------------------------------------------------


def test_lewis_reference_both_methods():
    ref = json.loads((REF / "heston_lewis_prices.json").read_text())
    p = ref["params"]
    args = (p["spot"], np.array(ref["strikes"], float), p["maturity"], p["rate"], p["dividend_yield"])
    prm = (p["v0"], p["kappa"], p["theta"], p["sigma"], p["rho"])
    for is_call, key in ((True, "calls"), (False, "puts")):
        want = np.array(ref[key])
        np.testing.assert_allclose(heston_price_cos(*args, *prm, is_call=is_call), want, rtol=1e-10, atol=0)
        np.testing.assert_allclose(
            heston_price_cos(*args, *prm, is_call=is_call, N=192), want, rtol=1e-11, atol=0
        )
        np.testing.assert_allclose(heston_price_lewis(*args, *prm, is_call=is_call), want, rtol=1e-10, atol=0)


# --- random parameters against QuantLib -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_random_parameters_against_quantlib(seed):
    worst_cos, worst_lewis = 0.0, 0.0
    for prm, days, strikes, r, q in _random_cases(seed, 10):
        T = days / 365.0
        is_call = np.arange(strikes.size) % 2 == 0
        want = _ql_prices(100.0, strikes, days, r, q, prm, is_call)
        cos = heston_price_cos(100.0, strikes, T, r, q, *prm, is_call=is_call)
        lew = heston_price_lewis(100.0, strikes, T, r, q, *prm, is_call=is_call)
        worst_cos = max(worst_cos, np.max(np.abs(cos - want)))
        worst_lewis = max(worst_lewis, np.max(np.abs(lew - want)))
    # absolute on a spot of 100: both agree with QuantLib's adaptive engine to ~1e-10 of the spot
    assert worst_cos < 1e-8, worst_cos
    assert worst_lewis < 1e-7, worst_lewis


def test_surface_equals_pointwise_and_shares_expiries():
    prm = HestonParams(0.05, 2.0, 0.06, 0.6, -0.7)
    strikes = np.linspace(60, 160, 11)
    T = np.array([0.1, 0.5, 1.0, 2.0])
    r = np.array([0.01, 0.02, 0.025, 0.03])
    surf = heston_surface(100.0, strikes, T, r, 0.01, prm)
    assert surf.shape == (4, 11)
    F = 100.0 * np.exp((r - 0.01) * T)[:, None]
    point = heston_price_cos(100.0, strikes, T[:, None], r[:, None], 0.01, *prm, is_call=strikes >= F)
    np.testing.assert_allclose(surf, point, rtol=1e-14, atol=1e-14)
    assert np.all(surf > 0)


# --- the GPU algorithm on the CPU ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_xp_path_matches_numba(seed):
    for prm, days, strikes, r, q in _random_cases(100 + seed, 5):
        T = np.array([days / 365.0, days / 730.0])[:, None]
        is_call = (np.arange(strikes.size) % 3 == 0)[None, :]
        a = heston_price_cos(100.0, strikes, T, r, q, *prm, is_call=is_call)
        b = H._heston_price_cos_xp(100.0, strikes, T, r, q, *prm, is_call=is_call)
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-11)
    u = np.linspace(0, 50, 101) - 0.5j
    np.testing.assert_allclose(
        np.exp(H._lnphi_xp(np, u, 1.3, 0.04, 1.5, 0.05, 0.7, -0.6)),
        heston_cf(u, 1.3, 0.04, 1.5, 0.05, 0.7, -0.6),
        rtol=1e-13,
    )


def _has_gpu():
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="no CUDA GPU (cupy.cuda.is_available() is false)")
def test_cupy_path_matches_numba():
    import cupy

    prm = (0.05, 2.0, 0.06, 0.6, -0.7)
    strikes = np.linspace(60, 160, 101)
    T = np.array([0.1, 0.5, 2.0])[:, None]
    a = heston_price_cos(100.0, strikes, T, 0.02, 0.01, *prm, is_call=True)
    b = heston_price_cos(100.0, cupy.asarray(strikes), cupy.asarray(T), 0.02, 0.01, *prm, is_call=True)
    assert type(b).__module__.startswith("cupy")
    np.testing.assert_allclose(cupy.asnumpy(b), a, rtol=1e-12, atol=1e-11)


# --- gradient ----------------------------------------------------------------------------------------------------


def test_cf_gradient_against_finite_differences_random():
    rng = np.random.default_rng(7)
    for prm, days, _, _, _ in _random_cases(7, 20):
        x = np.array(prm)
        u = np.concatenate([rng.uniform(0.01, 30, 6), rng.uniform(0.01, 10, 3) - 0.5j])
        _, grad = heston_cf_grad(u, days / 365.0, *x)
        for j in range(5):
            h = 1e-6 * max(1.0, abs(x[j]))
            up, dn = x.copy(), x.copy()
            up[j] += h
            dn[j] -= h
            fd = (heston_cf(u, days / 365.0, *up) - heston_cf(u, days / 365.0, *dn)) / (2 * h)
            # central differences carry rounding ~ 1e-16 * (kappa theta / sigma^2) / h in ln phi
            noise = 1e-9 * (1.0 + prm.kappa * prm.theta / prm.sigma**2)
            np.testing.assert_allclose(
                fd, grad[:, j], rtol=1e-6, atol=noise, err_msg=f"{prm} {H.PARAM_NAMES[j]}"
            )


# --- calibration -------------------------------------------------------------------------------------------------


def _black(F, K, T, vol, call):
    sd = vol * np.sqrt(T)
    d1 = (np.log(F / K) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    return F * norm.cdf(d1) - K * norm.cdf(d2) if call else K * norm.cdf(-d2) - F * norm.cdf(-d1)


def _independent_sse(dax, params):
    "SSE of the DAX test with model prices from the Lewis pricer and IVs from scipy's brentq (independent path)."
    S, K, T, r = dax["S"], dax["strikes"], dax["expiries"], dax["r"]
    mkt = dax["market_vols_or_prices"]
    sse = 0.0
    for m in range(T.size):
        F = S * np.exp(r[m] * T[m])
        D = np.exp(-r[m] * T[m])
        calls = K >= F
        prices = heston_price_lewis(S, K, T[m], r[m], 0.0, *params, is_call=calls, n_nodes=160)
        for k in range(K.size):
            p = prices[k] / D
            iv = brentq(
                lambda v, k=k, p=p, F=F, m=m, c=calls: _black(F, K[k], T[m], v, c[k]) - p,
                1e-4,
                5.0,
                xtol=1e-14,
            )
            sse += (100 * (iv - mkt[m, k])) ** 2
    return sse


def test_dax_calibration_reaches_quantlib_sse():
    ref = json.loads((REF / "heston_dax_calibration.json").read_text())
    dax = dax_surface(ref)
    np.testing.assert_allclose(dax["expiries"], ref["expiries"]["year_fractions"], rtol=1e-14)
    fit = calibrate_heston(**dax)
    assert fit.success, fit.message
    assert fit.sse <= 177.3, fit.sse
    assert not fit.feller_ok
    assert abs(_independent_sse(dax, fit.params) - fit.sse) < 1e-4
    q = ref["quantlib_result_measured"]
    np.testing.assert_allclose(np.array(fit.params), [q[k] for k in H.PARAM_NAMES], rtol=2e-3)


@pytest.mark.parametrize("kind", ["vol", "price"])
def test_calibration_recovers_parameters(kind):
    true = HestonParams(0.045, 1.8, 0.06, 0.55, -0.65)
    strikes = np.linspace(70, 140, 15)
    T = np.array([0.1, 0.25, 0.5, 1.0, 2.0])
    r = np.array([0.01, 0.015, 0.02, 0.025, 0.03])
    prices = heston_surface(100.0, strikes, T, r, 0.005, true)
    if kind == "price":
        market = prices
    else:
        F = 100.0 * np.exp((r - 0.005) * T)
        market = np.empty_like(prices)
        for m in range(T.size):
            for k in range(strikes.size):
                c = strikes[k] >= F[m]
                p = prices[m, k] * np.exp(r[m] * T[m])
                market[m, k] = brentq(
                    lambda v, m=m, k=k, c=c, p=p: _black(F[m], strikes[k], T[m], v, c) - p,
                    1e-4,
                    5.0,
                    xtol=1e-15,
                )
    market[2, 3] = np.nan  # a missing quote is skipped
    fit = calibrate_heston(
        100.0, strikes, T, market, r, 0.005, kind=kind, x0=(0.1, 1.0, 0.1, 0.3, -0.3), tol=1e-12
    )
    assert fit.success, fit.message
    np.testing.assert_allclose(np.array(fit.params), np.array(true), rtol=1e-5)
    assert fit.sse < 1e-10
    assert fit.residuals.size == strikes.size * T.size - 1
    assert fit.feller_ok == (2 * true.kappa * true.theta >= true.sigma**2)


def test_calibration_weights_and_bounds():
    true = HestonParams(0.045, 1.8, 0.06, 0.55, -0.65)
    strikes = np.linspace(70, 140, 8)
    T = np.array([0.25, 1.0, 2.0])
    prices = heston_surface(100.0, strikes, T, 0.02, 0.0, true)
    fit = calibrate_heston(
        100.0,
        strikes,
        T,
        prices,
        0.02,
        0.0,
        kind="price",
        weights=np.ones_like(prices),
        bounds=((1e-4, 1.0), (0.1, 10.0), (1e-4, 1.0), (0.01, 0.4), (-0.99, 0.99)),
    )
    assert fit.params.sigma <= 0.4 + 1e-15  # the bound holds; the true 0.55 is outside
    assert fit.sse > 1e-8


def test_bad_input_messages():
    k = np.linspace(80, 120, 5)
    T = np.array([0.5, 1.0])
    v = np.full((2, 5), 0.2)
    with pytest.raises(ValueError, match="S: must be a positive"):
        calibrate_heston(-1.0, k, T, v, 0.0, 0.0)
    with pytest.raises(ValueError, match="market_vols_or_prices: must have shape"):
        calibrate_heston(100.0, k, T, v.T, 0.0, 0.0)
    with pytest.raises(ValueError, match="r: must be a scalar or one value per expiry"):
        calibrate_heston(100.0, k, T, v, [0.0, 0.1, 0.2], 0.0)
    with pytest.raises(ValueError, match="kind:"):
        calibrate_heston(100.0, k, T, v, 0.0, 0.0, kind="iv")
    with pytest.raises(ValueError, match="sigma: must be > 0"):
        calibrate_heston(100.0, k, T, v, 0.0, 0.0, x0=(0.04, 1.0, 0.04, -0.1, 0.0))
    with pytest.raises(ValueError, match="n_nodes"):
        heston_price_lewis(100.0, 100.0, 1.0, 0.0, 0.0, 0.04, 1.0, 0.04, 0.5, -0.5, n_nodes=1000)
    out = heston_price_cos(
        100.0,
        np.array([100.0, np.nan, 100.0, 100.0]),
        np.array([1.0, 1.0, -1.0, 1.0]),
        0.0,
        0.0,
        np.array([0.04, 0.04, 0.04, -0.04]),
        1.0,
        0.04,
        0.5,
        -0.5,
    )
    assert np.isfinite(out[0]) and np.all(np.isnan(out[1:]))
