"""Dense accuracy and robustness checks of `aitrade.pricing.iv` (Jäckel 2015, "Let's be rational").

The notebook `nbs/11_pricing_iv.ipynb` has the quick checks; these are the heavy ones: a dense random + grid
sample of the whole domain the issue asks for (total volatility 1e-4..5, |ln F/K| up to 5 total vols, calls and
puts, discounting, spot/yield), independent high-precision references, the bad-row contract, the `xp` path
against the numba kernel, and the same on a GPU when there is one.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrade.kernels import cupy_module
from aitrade.pricing import iv
from aitrade.pricing.iv import implied_vol_black76, implied_vol_bsm, normalised_black

REPRICE_TOL = 1e-12  # price-relative, the requirement
TV_FLOOR = 1e-8  # ... for every option whose time value is at least this fraction of spot


def ln_f_over_k(F, K):
    "ln(F/K) accurate also near the money (the module's own helper, on NumPy)."
    return iv._xp_ln_f_over_k(np, np.asarray(F, float), np.asarray(K, float))


def black76(F, K, T, r, vol, is_call):
    "Discounted Black-76 price from the module's normalised Black function."
    theta = np.where(np.asarray(is_call, bool), 1.0, -1.0)
    return np.exp(-r * T) * np.sqrt(F * K) * normalised_black(ln_f_over_k(F, K), vol * np.sqrt(T), theta)


def b_mp(x: float, s: float, theta: int = 1, dps: int = 60) -> float:
    "Normalised Black with mpmath at `dps` digits."
    with mp.workdps(dps):
        x, s = mp.mpf(x), mp.mpf(s)
        ncdf = lambda z: mp.erfc(-z / mp.sqrt(2)) / 2
        return float(
            theta
            * (mp.exp(x / 2) * ncdf(theta * (x / s + s / 2)) - mp.exp(-x / 2) * ncdf(theta * (x / s - s / 2)))
        )


def domain_sample(n_random: int = 400_000, seed: int = 7):
    """Options over the issue's domain: s = σ√T in [1e-4, 5], |ln(F/K)| <= 5 s, calls and puts.

    A grid (60 total vols log-spaced × 81 moneyness values × call/put) plus `n_random` random rows; forwards
    between 1e-2 and 1e4, expiries 1 day to 30 years, rates -5%..15%.
    """
    rng = np.random.default_rng(seed)
    sg, zg, cg = np.meshgrid(np.geomspace(1e-4, 5.0, 60), np.linspace(-5, 5, 81), [1.0, 0.0], indexing="ij")
    s = np.concatenate([sg.ravel(), np.exp(rng.uniform(np.log(1e-4), np.log(5.0), n_random))])
    z = np.concatenate([zg.ravel(), rng.uniform(-5, 5, n_random)])
    call = np.concatenate([cg.ravel(), (rng.random(n_random) < 0.5).astype(float)])
    n = s.size
    F = np.exp(rng.uniform(np.log(1e-2), np.log(1e4), n))
    K = F * np.exp(-z * s)
    T = np.exp(rng.uniform(np.log(1 / 365), np.log(30.0), n))
    r = rng.uniform(-0.05, 0.15, n)
    vol = s / np.sqrt(T)
    return F, K, T, r, vol, call


@pytest.fixture(scope="module")
def sample():
    F, K, T, r, vol, call = domain_sample()
    price = black76(F, K, T, r, vol, call)
    df = np.exp(-r * T)
    spot = F * df  # spot of a stock with q = 0 whose forward is F
    tv = price - df * np.maximum(np.where(call == 1.0, F - K, K - F), 0.0)
    return dict(F=F, K=K, T=T, r=r, vol=vol, call=call, price=price, tv=tv, keep=tv >= TV_FLOOR * spot)


def test_dense_reprice_black76(sample):
    d = sample
    assert d["keep"].sum() > 350_000
    vol, why = implied_vol_black76(d["price"], d["F"], d["K"], d["T"], d["r"], d["call"], return_reason=True)
    k = d["keep"]
    assert (why[k] == 0).all() and not np.isnan(vol[k]).any()
    rep = black76(d["F"], d["K"], d["T"], d["r"], vol, d["call"])
    err = np.abs(rep[k] / d["price"][k] - 1.0)
    assert err.max() <= REPRICE_TOL, (err.max(), np.argmax(err))
    # and the volatility itself is recovered wherever vega is not negligible
    s = d["vol"] * np.sqrt(d["T"])
    x = ln_f_over_k(d["F"], d["K"])
    well = k & (np.abs(x) <= 3 * s) & (s >= 1e-3) & (s <= 3.0) & (d["price"] <= 10 * d["tv"])
    assert np.max(np.abs(vol[well] / d["vol"][well] - 1.0)) <= 1e-12


def test_dense_reprice_bsm(sample):
    d = sample
    rng = np.random.default_rng(3)
    q = rng.uniform(-0.02, 0.08, d["F"].size)
    S = d["F"] * np.exp(-(d["r"] - q) * d["T"])
    vol = implied_vol_bsm(d["price"], S, d["K"], d["T"], d["r"], q, d["call"] == 1.0)
    F = S * np.exp((d["r"] - q) * d["T"])  # the forward as the function forms it
    rep = black76(F, d["K"], d["T"], d["r"], vol, d["call"])
    k = d["keep"]
    assert not np.isnan(vol[k]).any()
    assert np.max(np.abs(rep[k] / d["price"][k] - 1.0)) <= 1e-11  # the forward itself moves by an ulp


def test_reprice_against_mpmath_prices():
    """Independent reference: prices made with 60-digit arithmetic invert and reprice (with 60 digits) to 1e-12."""
    rng = np.random.default_rng(19)
    n = 400
    s = np.exp(rng.uniform(np.log(1e-4), np.log(5.0), n))
    x = rng.uniform(-5, 5, n) * s
    theta = np.where(rng.random(n) < 0.5, 1, -1)
    F = 100.0
    K = F * np.exp(-x)
    x = ln_f_over_k(F, K)
    beta = np.array([b_mp(a, b, int(c)) for a, b, c in zip(x, s, theta, strict=True)])
    price = math.sqrt(F) * np.sqrt(K) * beta
    tv = price - np.maximum(theta * (F - K), 0.0)
    keep = tv >= TV_FLOOR * F
    vol = implied_vol_black76(price, F, K, 1.0, 0.0, theta > 0)
    rep = np.array([b_mp(a, b, int(c)) for a, b, c in zip(x[keep], vol[keep], theta[keep], strict=True)])
    rep = math.sqrt(F) * np.sqrt(K[keep]) * rep
    assert keep.sum() > 300
    assert np.max(np.abs(rep / price[keep] - 1.0)) <= REPRICE_TOL


@pytest.mark.parametrize(
    "h_lo,h_hi,t_lo,t_hi,region",
    [
        (-10.0, 0.0, 1e-6, 0.21, "small t"),
        (-40.0, -10.2, 1e-6, 0.2, "asymptotic"),
        (-10.0, 0.8, 0.22, 4.0, "erfcx"),
        (-10.0, 0.0, 0.9, 8.0, "tails"),
    ],
)
def test_normalised_black_regions_against_mpmath(h_lo, h_hi, t_lo, t_hi, region):
    rng = np.random.default_rng(int(abs(h_lo * 100 + t_hi)))
    h = rng.uniform(h_lo, h_hi, 300)
    t = rng.uniform(t_lo, t_hi, 300)
    if region == "erfcx":
        t = np.minimum(t, 0.85 - h)
        t = np.maximum(t, 0.22)
    if region == "tails":
        t = 0.86 - h + t
    s = 2 * t
    x = h * s
    b = normalised_black(x, s, 1.0)
    ref = np.array([b_mp(a, c) for a, c in zip(x, s, strict=True)])
    cond = 1.0 + 0.5 * ((x / s) ** 2 + (s / 2) ** 2)  # relative change of b per relative ulp of x or s
    ok = ref > 1e-300
    assert ok.sum() > 200
    err = np.abs(b[ok] / ref[ok] - 1.0)
    assert np.all(err <= 2e-15 * cond[ok] + 1e-15), (region, np.max(err / cond[ok]))


def test_bad_rows_are_nan_with_reason():
    price = np.array([10.0, np.nan, 10.0, -1.0, 10.0, 0.0, 10.0, 10.0, 0.5, 120.0, 10.0, 10.0, 99.0, np.inf])
    K = np.array(
        [100.0, 100.0, -5.0, 100.0, 100.0, 100.0, 0.0, 100.0, 80.0, 100.0, 100.0, 100.0, 100.0, 100.0]
    )
    T = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, -2.0, 1.0, 1.0, 1.0, np.nan, 1.0, 1.0])
    c = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    vol, why = implied_vol_black76(price, 100.0, K, T, 0.0, c, return_reason=True)
    np.testing.assert_array_equal(why, [0, 5, 5, 4, 3, 4, 5, 3, 1, 2, 0, 5, 0, 5])
    np.testing.assert_array_equal(np.isnan(vol), why != 0)
    assert why.dtype == np.int8
    ref = implied_vol_black76(10.0, 100.0, 100.0, 1.0, 0.0, True)
    assert vol[0] == ref and vol[10] == ref  # put-call symmetric at the money with r = 0
    # the put at 99 with K = 100, F = 100 is below K: fine; at K·df it is at the bound
    assert (
        implied_vol_black76(100.0 * math.exp(-0.05), 100.0, 100.0, 1.0, 0.05, False, return_reason=True)[1]
        == 2
    )
    # price exactly intrinsic: zero volatility, not an error
    v, w = implied_vol_black76(20.0 * math.exp(-0.01), 120.0, 100.0, 1.0, 0.01, True, return_reason=True)
    assert v == 0.0 and w == 0


def test_bad_rows_bsm():
    S = np.array([100.0, 0.0, -1.0, np.nan, 100.0, 100.0])
    q = np.array([0.0, 0.0, 0.0, 0.0, np.inf, 0.01])
    T = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    vol, why = implied_vol_bsm(5.0, S, 100.0, T, 0.02, q, True, return_reason=True)
    np.testing.assert_array_equal(why, [0, 5, 5, 5, 5, 3])
    np.testing.assert_array_equal(np.isnan(vol), why != 0)


def test_errors_name_the_field():
    with pytest.raises(ValueError, match="is_call cannot be read"):
        implied_vol_black76(1.0, 100.0, 100.0, 1.0, 0.0, "call")
    with pytest.raises(ValueError, match=r"do not broadcast.*K=\(2,\).*T=\(3,\)"):
        implied_vol_black76(1.0, 100.0, [100.0, 90.0], [1.0, 2.0, 3.0], 0.0, True)


def test_shapes_and_scalars():
    v = implied_vol_black76(8.0, 100.0, 100.0, 1.0, 0.0, True)
    assert isinstance(v, np.floating) and 0.19 < v < 0.21
    prices = np.array([[5.0, 8.0, 12.0], [1.0, 2.0, 3.0]])
    vol, why = implied_vol_black76(
        prices, 100.0, np.array([[100.0], [130.0]]), 1.0, 0.0, True, return_reason=True
    )
    assert vol.shape == (2, 3) and why.shape == (2, 3)
    assert np.all(np.diff(vol, axis=1) > 0)
    b = normalised_black(np.linspace(-1, 1, 5)[:, None], np.array([0.1, 0.2]), 1.0)
    assert b.shape == (5, 2)


@settings(max_examples=300, deadline=None)
@given(
    s=st.floats(1e-4, 5.0),
    z=st.floats(-5.0, 5.0),
    call=st.booleans(),
    F=st.floats(1e-3, 1e5),
    T=st.floats(1e-3, 50.0),
    r=st.floats(-0.1, 0.3),
)
def test_round_trip_property(s, z, call, F, T, r):
    K = F * math.exp(-z * s)
    vol = s / math.sqrt(T)
    price = float(black76(np.array(F), np.array(K), T, r, vol, call))
    df = math.exp(-r * T)
    if price - df * max((F - K) if call else (K - F), 0.0) < TV_FLOOR * F * df:
        return
    got = implied_vol_black76(price, F, K, T, r, call)
    assert abs(float(black76(np.array(F), np.array(K), T, r, got, call)) / price - 1.0) <= REPRICE_TOL


def test_two_iterations_reach_machine_precision():
    "The normalised solver with the paper's two Householder(3) steps recovers s to a few ulp on a dense grid."
    assert iv._N_ITER == 2
    s, z = np.meshgrid(np.geomspace(1e-4, 5.0, 120), np.linspace(-5, 5, 121))
    s, x = s.ravel(), -np.abs(z.ravel() * s.ravel())
    beta = normalised_black(x, s, 1.0)
    ok = (beta > 1e-300) & (beta < np.exp(0.5 * x))
    got = np.array([iv._normalised_iv_otm(b, v) for b, v in zip(beta[ok], x[ok], strict=True)])
    # relative error of s allowed: a few ulp times 1/(s·b'/b), the conditioning of b ↦ s
    _, vega = iv._xp_bcall_vega(np, x[ok], s[ok])
    cond = 1.0 + beta[ok] / (s[ok] * vega)
    assert np.all(np.abs(got / s[ok] - 1.0) <= 2e-15 * cond)


def test_xp_path_with_numpy_equals_numba(sample):
    d = sample
    n = 60_000
    args = [d[k][:n] for k in ("price", "F", "K", "T", "r", "call")]
    vol_nb, why_nb = implied_vol_black76(*args, return_reason=True)
    vol_xp, why_xp = iv._xp_black76(np, *args)
    np.testing.assert_array_equal(why_nb, why_xp)
    # well conditioned rows: the full path agrees to 1e-12 (ITM rows amplify NumPy's vs libm's exp ulp)
    wc = d["keep"][:n] & (d["price"][:n] <= 1e3 * d["tv"][:n])
    assert wc.sum() > 40_000
    assert np.max(np.abs(vol_xp[wc] / vol_nb[wc] - 1.0)) <= 1e-12
    # the normalised solver (same x, beta) agrees on every row of the domain
    x = -np.abs(ln_f_over_k(d["F"][:n], d["K"][:n]))
    beta = normalised_black(x, d["vol"][:n] * np.sqrt(d["T"][:n]), 1.0)
    ok = (beta > 1e-300) & (beta < np.exp(0.5 * x))
    s_nb = np.array(
        [iv._normalised_iv_otm(b, v) for b, v in zip(beta[ok][:20_000], x[ok][:20_000], strict=True)]
    )
    s_xp = iv._xp_normalised_iv_otm(np, beta[ok][:20_000], x[ok][:20_000])
    assert np.max(np.abs(s_xp / s_nb - 1.0)) <= 1e-12
    bx = iv._xp_normalised_black(np, x, d["vol"][:n] * np.sqrt(d["T"][:n]), np.ones(n))
    assert np.all(np.abs(bx - beta) <= 1e-13 * beta)


@pytest.mark.gpu
@pytest.mark.skipif(cupy_module() is None, reason="no CUDA GPU (cupy.cuda.is_available() is false)")
def test_gpu_matches_cpu(sample):
    import cupy as cp

    d = sample
    n = 100_000
    args = [d[k][:n] for k in ("price", "F", "K", "T", "r", "call")]
    vol_cpu, why_cpu = implied_vol_black76(*args, return_reason=True)
    vol_gpu, why_gpu = implied_vol_black76(*[cp.asarray(a) for a in args], return_reason=True)
    assert isinstance(vol_gpu, cp.ndarray)
    np.testing.assert_array_equal(why_cpu, cp.asnumpy(why_gpu))
    vg = cp.asnumpy(vol_gpu)
    wc = d["keep"][:n] & (d["price"][:n] <= 1e3 * d["tv"][:n])
    assert np.max(np.abs(vg[wc] / vol_cpu[wc] - 1.0)) <= 1e-12
    s = cp.asarray(d["vol"][:n] * np.sqrt(d["T"][:n]))
    x = cp.asarray(ln_f_over_k(d["F"][:n], d["K"][:n]))
    th = cp.asarray(np.where(d["call"][:n] == 1.0, 1.0, -1.0))
    b_gpu = cp.asnumpy(normalised_black(x, s, th))
    b_cpu = normalised_black(cp.asnumpy(x), cp.asnumpy(s), cp.asnumpy(th))
    assert np.all(np.abs(b_gpu - b_cpu) <= 1e-13 * b_cpu)
