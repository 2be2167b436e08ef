"""SABR vols and calibration (`aitrade.pricing.sabr`) against the reference values, QuantLib and SciPy.

Reference values: a copy of /work/shared/reference/sabr_hagan.json (Hagan et al. 2002 lognormal expansion; values from
the pysabr test suite, QuantLib agrees). Peers: QuantLib's `sabrVolatility` / `shiftedSabrVolatility`
(Hagan 2002 lognormal, and its series-expanded normal variant), QuantLib's `sabrFlochKennedyVolatility` (whose
T = 0 term is Obloj's exact zero-order term), SciPy's `least_squares`.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrade.kernels import cupy_module
from aitrade.pricing import sabr as S
from aitrade.pricing.sabr import calibrate_sabr, sabr_normal_vol, sabr_vol

ql = pytest.importorskip("QuantLib", reason="QuantLib (dev dependency) is needed for the peer comparisons")

NO_GPU = "no CUDA GPU (cupy.cuda.is_available() is false)"
needs_gpu = pytest.mark.skipif(cupy_module() is None, reason=NO_GPU)


# Hagan et al. (2002) lognormal expansion; values from the pysabr test suite (QuantLib agrees);
# a copy of /work/shared/reference/sabr_hagan.json. "single": forward and strike already include a 3% shift.
REF = {
    "single": {
        "forward": 0.0552715567337258,
        "strike": 0.0602715567337258,
        "expiry": 10.0,
        "alpha": 0.0252982247897366,
        "beta": 0.5,
        "rho": -0.246333975445481,
        "nu": 0.290846563252973,
        "lognormal_vol_percent": 10.8917434151064,
    },
    "smile": {
        "forward_percent_unshifted": 2.5271,
        "shift_percent": 3.0,
        "expiry": 10.0,
        "alpha": 0.0253,
        "beta": 0.5,
        "rho": -0.2463,
        "nu": 0.2908,
        "strikes_percent_unshifted": [
            -0.4729,
            0.5271,
            1.0271,
            1.5271,
            1.7771,
            2.0271,
            2.2771,
            2.4021,
            2.5271,
            2.6521,
            2.7771,
            3.0271,
            3.2771,
            3.5271,
            4.0271,
            4.5271,
            5.5271,
        ],
        "lognormal_vols_percent": [
            19.641923,
            15.785344,
            14.305103,
            13.073869,
            12.550007,
            12.088721,
            11.691661,
            11.51766,
            11.360133,
            11.219058,
            11.094293,
            10.892464,
            10.750834,
            10.663653,
            10.623862,
            10.714479,
            11.103755,
        ],
    },
}


@pytest.fixture(scope="module")
def ref():
    return REF


def random_params(n, seed, positive=True):
    rng = np.random.default_rng(seed)
    F = rng.uniform(0.005, 0.1, n)
    K = F * np.exp(rng.uniform(-1.0, 1.0, n))
    T = rng.uniform(0.05, 30.0, n)
    b = rng.uniform(0.0, 1.0, n)
    b[: n // 20] = 0.0
    b[n // 20 : n // 10] = 1.0
    a = rng.uniform(0.05, 0.6, n) * F ** (1 - b)
    r = rng.uniform(-0.95, 0.95, n)
    nu = rng.uniform(0.0, 1.5, n)
    nu[: n // 50] = 0.0
    return F, K, T, a, b, r, nu


def xp_args(*args):
    "Broadcast to flat float64 arrays, as Plan.inputs does, for calling the xp path with NumPy."
    arrs = np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in args])
    return [np.ascontiguousarray(a.ravel()) for a in arrs]


def rel_err(a, b):
    return np.abs(np.asarray(a) / np.asarray(b) - 1.0)


# ---------------------------------------------------------------- reference values (pysabr / Hagan 2002)


def test_reference_single(ref):
    s = ref["single"]
    args = (s["forward"], s["strike"], s["expiry"], s["alpha"], s["beta"], s["rho"], s["nu"])
    want = s["lognormal_vol_percent"] / 100
    assert rel_err(sabr_vol(*args), want) < 1e-12
    assert rel_err(S._lognormal_xp(np, *xp_args(*args, 0.0), False)[0], want) < 1e-12
    # the forward and strike already include a 3% shift: the shifted call gives the same
    assert rel_err(sabr_vol(s["forward"] - 0.03, s["strike"] - 0.03, *args[2:], shift=0.03), want) < 1e-12


def test_reference_smile(ref):
    m = ref["smile"]
    K = np.array(m["strikes_percent_unshifted"]) / 100
    want = np.array(m["lognormal_vols_percent"])
    args = (m["forward_percent_unshifted"] / 100, K, m["expiry"], m["alpha"], m["beta"], m["rho"], m["nu"])
    got = sabr_vol(*args, shift=m["shift_percent"] / 100) * 100
    assert np.max(np.abs(got - want)) <= 5e-7  # the values are rounded to 6 decimals
    got_xp = S._lognormal_xp(np, *xp_args(*args, m["shift_percent"] / 100), False) * 100
    assert np.max(np.abs(got_xp - want)) <= 5e-7
    # QuantLib agrees (the reference's own claim)
    qlv = [ql.shiftedSabrVolatility(k, args[0], 10.0, 0.0253, 0.5, 0.2908, -0.2463, 0.03) * 100 for k in K]
    assert np.max(np.abs(np.array(qlv) - want)) <= 5e-7


def test_reference_smile_calibrates_back(ref):
    m = ref["smile"]
    K = np.array(m["strikes_percent_unshifted"]) / 100
    fit = calibrate_sabr(
        m["forward_percent_unshifted"] / 100,
        K,
        m["expiry"],
        np.array(m["lognormal_vols_percent"]) / 100,
        m["beta"],
        shift=m["shift_percent"] / 100,
    )
    assert fit.converged[0]
    np.testing.assert_allclose(fit.params[0], [m["alpha"], m["rho"], m["nu"]], rtol=2e-5)
    assert fit.rmse[0] < 5e-9  # rounding of the quotes


# ---------------------------------------------------------------- QuantLib


def test_lognormal_matches_quantlib_random():
    F, K, T, a, b, r, nu = random_params(3000, seed=1)
    ours = sabr_vol(F, K, T, a, b, r, nu)
    qlv = np.array([ql.sabrVolatility(K[i], F[i], T[i], a[i], b[i], nu[i], r[i]) for i in range(len(F))])
    # QuantLib's x(z) = log((sqrt(.)+z-rho)/(1-rho)) loses ~eps/|z| near the money; elsewhere 1e-13
    z = np.abs(nu / a * (F * K) ** ((1 - b) / 2) * np.log(F / K))
    tol = 1e-13 + 5e-16 / np.maximum(z, 1e-300)
    assert np.all(rel_err(ours, qlv) <= np.maximum(tol, 1e-13)), np.max(rel_err(ours, qlv) / tol)
    assert np.max(rel_err(ours, qlv)[z > 1e-2]) < 1e-13


def test_shifted_matches_quantlib_random():
    F, K, T, a, b, r, nu = random_params(2000, seed=2)
    shift = 0.03
    Fs, Ks = F - 0.04, K - 0.04  # negative rates, shifted back into the positive range (or not)
    ok = (Fs + shift > 0) & (Ks + shift > 0)
    ours = sabr_vol(Fs, Ks, T, a, b, r, nu, shift=shift)
    assert np.isnan(ours[~ok]).all() and np.isfinite(ours[ok]).all()
    qlv = np.array(
        [
            ql.shiftedSabrVolatility(Ks[i], Fs[i], T[i], a[i], b[i], nu[i], r[i], shift)
            for i in np.flatnonzero(ok)
        ]
    )
    fs, ks = (Fs + shift)[ok], (Ks + shift)[ok]
    z = np.abs(nu[ok] / a[ok] * (fs * ks) ** ((1 - b[ok]) / 2) * np.log(fs / ks))
    assert np.max(rel_err(ours[ok], qlv)[z > 1e-2]) < 1e-12  # the shifted inputs differ by a rounding
    assert np.max(rel_err(ours[ok], qlv)) < 1e-10


def test_near_money_is_accurate_where_quantlib_cancels():
    "Next to the money our x(z) keeps full precision; check against a long-double evaluation."
    F, _, T, a, b, r, nu = random_params(500, seed=3)
    rng = np.random.default_rng(3)
    K = F * (1 + rng.choice([-1, 1], F.shape) * np.exp(rng.uniform(np.log(1e-5), np.log(1e-3), F.shape)))
    nu = np.maximum(nu, 0.05)  # z from ~1e-6 to ~1e-2: the long-double form is good to ~1e-13 there
    ours = sabr_vol(F, K, T, a, b, r, nu)
    L = np.longdouble
    f, k, t, al, be, rh, v = (x.astype(L) for x in (F, K, T, a, b, r, nu))
    q = 1 - be
    u = np.log(f / k)
    fk = (f * k) ** (q / 2)
    z = v / al * fk * u
    x = np.log((np.sqrt(1 - 2 * rh * z + z * z) + z - rh) / (1 - rh))
    zx = np.where(z == 0, L(1), z / np.where(z == 0, L(1), x))
    corr = 1 + t * (
        q * q * al * al / (24 * fk * fk) + rh * be * v * al / (4 * fk) + (2 - 3 * rh * rh) * v * v / 24
    )
    exact = al / (fk * (1 + q * q * u * u / 24 + q**4 * u**4 / 1920)) * zx * corr
    assert np.max(rel_err(ours, exact.astype(np.float64))) < 1e-12
    qlv = np.array([ql.sabrVolatility(K[i], F[i], T[i], a[i], b[i], nu[i], r[i]) for i in range(len(F))])
    print("QuantLib's max rel. error near the money:", np.max(rel_err(qlv, exact.astype(np.float64))))


def test_normal_matches_quantlib_at_the_money_and_near_it():
    F, K, T, a, b, r, nu = random_params(2000, seed=4)
    atm = sabr_normal_vol(F, F, T, a, b, r, nu)
    qla = np.array(
        [ql.sabrVolatility(F[i], F[i], T[i], a[i], b[i], nu[i], r[i], ql.Normal) for i in range(len(F))]
    )
    assert np.max(rel_err(atm, qla)) < 1e-13
    # away from the money, eq. (B.67) and QuantLib's series form differ by the expansion's own order:
    # the relative gap is O(u^2) in u = log(F/K)
    ours = sabr_normal_vol(F, K, T, a, b, r, nu)
    qlv = np.array(
        [ql.sabrVolatility(K[i], F[i], T[i], a[i], b[i], nu[i], r[i], ql.Normal) for i in range(len(F))]
    )
    u = np.abs(np.log(F / K))
    gap = rel_err(ours, qlv)
    assert np.all(gap <= 0.06 * u**2 + 1e-11), np.max(gap / (u**2 + 1e-12))
    assert np.max(gap[u < 1e-3]) < 1e-10


def test_obloj_equals_exact_zero_order_term():
    """At T = 0 Obloj's formula is the exact short-expiry smile (Berestycki-Busca-Florent), which is also the
    zero-order term of QuantLib's Floch-Kennedy expansion (used there away from 0.25% of the money, beta < 1)."""
    F, K, _, a, b, r, nu = random_params(3000, seed=5)
    use = (np.abs(F / K - 1) > 0.003) & (b < 1) & (nu > 0)  # Floch-Kennedy divides by 1 - beta and by nu
    ours = sabr_vol(F, K, 0.0, a, b, r, nu, obloj=True)
    fk = np.array(
        [ql.sabrFlochKennedyVolatility(K[i], F[i], 0.0, a[i], b[i], nu[i], r[i]) for i in range(len(F))]
    )
    assert np.max(rel_err(ours[use], fk[use])) < 1e-11


# ---------------------------------------------------------------- independent textbook forms


def textbook_lognormal(F, K, T, a, b, r, nu, obloj=False):
    q = 1 - b
    u = np.log(F / K)
    corr = 1 + T * (
        q * q * a * a / (24 * (F * K) ** q)
        + r * b * nu * a / (4 * (F * K) ** (q / 2))
        + (2 - 3 * r * r) * nu * nu / 24
    )

    def x(z):
        return np.log((np.sqrt(1 - 2 * r * z + z * z) + z - r) / (1 - r))

    if obloj:
        z = nu * (F**q - K**q) / (a * q)
        return nu * u / x(z) * corr
    z = nu / a * (F * K) ** (q / 2) * u
    return a / ((F * K) ** (q / 2) * (1 + q * q * u * u / 24 + q**4 * u**4 / 1920)) * z / x(z) * corr


def textbook_normal(F, K, T, a, b, r, nu):
    q = 1 - b
    fav = np.sqrt(F * K)
    zeta = nu / a * (F - K) / fav**b
    x = np.log((np.sqrt(1 - 2 * r * zeta + zeta * zeta) + zeta - r) / (1 - r))
    corr = 1 + T * (
        -b * (2 - b) * a * a / (24 * fav ** (2 * q))
        + r * a * nu * b / (4 * fav**q)
        + (2 - 3 * r * r) * nu * nu / 24
    )
    return a * q * (F - K) / (F**q - K**q) * zeta / x * corr


@pytest.mark.parametrize("obloj", [False, True])
def test_lognormal_equals_textbook_form(obloj):
    F, K, T, a, b, r, nu = random_params(2000, seed=6)
    b = np.clip(b, 0.0, 0.98)  # textbook Obloj form divides by 1 - beta
    nu = np.maximum(nu, 0.05)
    far = np.abs(np.log(F / K)) > 0.05  # textbook forms are 0/0 at the money
    got = sabr_vol(F, K, T, a, b, r, nu, obloj=obloj)[far]
    want = textbook_lognormal(F, K, T, a, b, r, nu, obloj)[far]
    assert np.max(rel_err(got, want)) < 1e-11


def test_normal_equals_textbook_form():
    F, K, T, a, b, r, nu = random_params(2000, seed=7)
    b = np.clip(b, 0.01, 0.98)
    nu = np.maximum(nu, 0.05)
    far = np.abs(np.log(F / K)) > 0.05
    got = sabr_normal_vol(F, K, T, a, b, r, nu)[far]
    assert np.max(rel_err(got, textbook_normal(F, K, T, a, b, r, nu)[far])) < 1e-11


def test_normal_beta0_negative_rates():
    rng = np.random.default_rng(8)
    F = rng.uniform(-0.01, 0.03, 500)
    K = F + rng.uniform(-0.02, 0.02, 500)
    a, r, nu, T = (
        rng.uniform(0.002, 0.015, 500),
        rng.uniform(-0.9, 0.9, 500),
        rng.uniform(0.05, 1.0, 500),
        2.0,
    )
    zeta = nu / a * (F - K)
    x = np.log((np.sqrt(1 - 2 * r * zeta + zeta**2) + zeta - r) / (1 - r))
    want = a * zeta / x * (1 + (2 - 3 * r**2) * nu**2 / 24 * T)
    got = sabr_normal_vol(F, K, T, a, 0.0, r, nu)
    far = np.abs(zeta) > 1e-3
    assert np.max(rel_err(got[far], want[far])) < 1e-12
    # shift is irrelevant for beta = 0
    np.testing.assert_allclose(sabr_normal_vol(F, K, T, a, 0.0, r, nu, shift=0.05), got, rtol=1e-13)


def test_small_z_series_matches_direct_form():
    "The Taylor series of z/x(z) used below |z| < 1e-6 is continuous with the direct form."
    for rho in (-0.9, -0.3, 0.0, 0.5, 0.95):
        for z in (1e-6 * (1 - 1e-12), 1e-6 * (1 + 1e-12), -1e-6 * (1 - 1e-12), -1e-6 * (1 + 1e-12)):
            series_side = S._zx(z, rho)
            L, zl, rl = np.longdouble, np.longdouble(z), np.longdouble(rho)
            direct = zl / np.log((np.sqrt(1 - 2 * rl * zl + zl * zl) + zl - rl) / (1 - rl))
            assert abs(series_side / float(direct) - 1) < 1e-12, (L, rho, z)
        a, b = S._zx(0.999999e-6, rho), S._zx(1.000001e-6, rho)
        assert abs(a / b - 1) < 1e-12


# ---------------------------------------------------------------- limits, shapes, bad input


def test_limits_are_continuous():
    F, K, T, a, r, nu = 0.025, np.array([0.01, 0.02, 0.025, 0.03, 0.06]), 5.0, 0.01, -0.4, 0.5
    np.testing.assert_allclose(
        sabr_vol(F, K, T, a, 1 - 1e-13, r, nu), sabr_vol(F, K, T, a, 1.0, r, nu), rtol=1e-11
    )
    np.testing.assert_allclose(
        sabr_vol(F, K, T, a, 1e-13, r, nu), sabr_vol(F, K, T, a, 0.0, r, nu), rtol=1e-11
    )
    np.testing.assert_allclose(
        sabr_normal_vol(F, K, T, a, 1e-13, r, nu), sabr_normal_vol(F, K, T, a, 0.0, r, nu), rtol=1e-11
    )
    np.testing.assert_allclose(
        sabr_normal_vol(F, K, T, a, 1 - 1e-13, r, nu), sabr_normal_vol(F, K, T, a, 1.0, r, nu), rtol=1e-11
    )
    for fn in (sabr_vol, sabr_normal_vol):
        np.testing.assert_allclose(fn(F, K, T, a, 0.5, r, 1e-14), fn(F, K, T, a, 0.5, r, 0.0), rtol=1e-12)
        atm = fn(F, F, T, a, 0.5, r, nu)
        for eps in (1e-15, 1e-12, 1e-9):
            assert abs(fn(F, F * (1 + eps), T, a, 0.5, r, nu) / atm - 1) < 10 * eps + 1e-15
            assert abs(fn(F, F * (1 - eps), T, a, 0.5, r, nu) / atm - 1) < 10 * eps + 1e-15


def test_nu_zero_beta_one_is_black():
    "nu = 0, beta = 1 is Black's model with vol alpha: the expansion gives alpha exactly."
    K = np.linspace(0.01, 0.1, 7)
    np.testing.assert_allclose(sabr_vol(0.04, K, 3.0, 0.2, 1.0, 0.3, 0.0), 0.2, rtol=1e-15)
    np.testing.assert_allclose(sabr_vol(0.04, K, 3.0, 0.2, 1.0, 0.3, 0.0, obloj=True), 0.2, rtol=1e-15)
    # nu = 0, beta = 0 is Bachelier's model with vol alpha
    np.testing.assert_allclose(sabr_normal_vol(0.04, K - 0.05, 3.0, 0.01, 0.0, 0.3, 0.0), 0.01, rtol=1e-15)


def test_bad_rows_are_nan_only():
    n = 9
    F, K, T, a, b, r, nu = (np.full(n, v) for v in (0.03, 0.035, 1.0, 0.02, 0.5, -0.2, 0.4))
    K[1] = -0.01  # K + shift <= 0
    T[2] = -1.0
    a[3] = 0.0
    b[4] = 1.2
    r[5] = 1.0
    nu[6] = -0.1
    F[7] = np.nan
    K[8] = np.inf
    for fn in (sabr_vol, sabr_normal_vol):
        v = fn(F, K, T, a, b, r, nu)
        assert np.isfinite(v[0]) and np.isnan(v[1:]).all()
        np.testing.assert_array_equal(
            np.isnan(S._lognormal_xp(np, F, K, T, a, b, r, nu, np.zeros(n), False)), np.isnan(v)
        )
    assert np.isnan(sabr_vol(-0.01, 0.02, 1.0, 0.02, 0.0, 0.0, 0.3))  # lognormal needs F + shift > 0


def test_broadcasting_and_scalars():
    K = np.linspace(0.01, 0.05, 5)
    v = sabr_vol(np.array([0.02, 0.03, 0.04])[:, None], K[None, :], 2.0, 0.02, 0.5, 0.0, 0.3)
    assert v.shape == (3, 5)
    np.testing.assert_array_equal(v[1], sabr_vol(0.03, K, 2.0, 0.02, 0.5, 0.0, 0.3))
    s = sabr_normal_vol(0.03, 0.03, 1.0, 0.02, 0.5, 0.0, 0.3)
    assert isinstance(s, np.floating) and np.ndim(s) == 0
    assert sabr_vol([0.03], [0.03], 1.0, 0.02, 0.5, 0.0, 0.3).shape == (1,)


# ---------------------------------------------------------------- xp path == numba


@pytest.mark.parametrize("kind", ["lognormal", "obloj", "normal", "shifted"])
def test_xp_path_equals_numba(kind):
    F, K, T, a, b, r, nu = random_params(20_000, seed=9)
    K[:50] = F[:50]  # at the money
    K[50:100] = F[50:100] * (1 + 1e-9)
    r[100:120] = 1.5  # bad rows
    shift = 0.02 if kind == "shifted" else 0.0
    if kind == "shifted":
        F, K = F - 0.015, K - 0.015
    flat = xp_args(F, K, T, a, b, r, nu, shift)
    if kind == "normal":
        want, got = sabr_normal_vol(F, K, T, a, b, r, nu), S._normal_xp(np, *flat)
    else:
        ob = kind == "obloj"
        want, got = sabr_vol(F, K, T, a, b, r, nu, shift=shift, obloj=ob), S._lognormal_xp(np, *flat, ob)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = np.isfinite(want)
    assert ok.sum() > 19_000
    assert np.max(rel_err(got[ok], want[ok])) <= 1e-12


def test_xp_normal_beta0_negative_rates_equals_numba():
    rng = np.random.default_rng(10)
    n = 2000
    F, K = rng.uniform(-0.02, 0.03, n), rng.uniform(-0.02, 0.03, n)
    b = np.where(np.arange(n) % 2 == 0, 0.0, 0.5)  # beta = 0.5 rows with F or K <= 0 are NaN
    args = (F, K, 1.5, 0.01, b, -0.3, 0.4)
    want = sabr_normal_vol(*args)
    got = S._normal_xp(np, *xp_args(*args, 0.0))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = np.isfinite(want)
    assert ok[b == 0].all()
    assert np.max(rel_err(got[ok], want[ok])) <= 1e-12


def test_parallel_kernel_equals_serial():
    F, K, T, a, b, r, nu = random_params(S._PAR_MIN * 2, seed=11)
    flat = xp_args(F, K, T, a, b, r, nu, 0.0)
    o1, o2 = np.empty(len(F)), np.empty(len(F))
    S._vec_serial(False, *flat, True, o1)
    S._vec_parallel(False, *flat, True, o2)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(sabr_vol(F, K, T, a, b, r, nu, obloj=True), o1)


def test_one_compiled_signature_per_kernel():
    "Broadcast (read-only) and owned inputs, scalars and arrays all reuse one numba specialisation."
    K = np.linspace(0.01, 0.05, 7)
    sabr_vol(0.03, K, 1.0, 0.02, 0.5, 0.0, 0.3)
    sabr_vol(np.full(7, 0.03), K, np.ones(7), 0.02, np.full(7, 0.5), 0.0, 0.3, shift=0.01)
    sabr_normal_vol(0.03, K[:, None], [1.0, 2.0], 0.02, 0.5, -0.1, np.array([0.3, 0.4]))
    assert len(S._vec_serial.signatures) == 1
    F, Kc, T, V, _ = make_smiles(3, 6, seed=23)
    calibrate_sabr(F, Kc, T, V, 0.5)
    calibrate_sabr(F, Kc[0], T, V, [0.5, 0.5, 0.5], weights=1.0, shift=0.0)
    assert len(S._calibrate_serial.signatures) == 1


@settings(max_examples=300, deadline=None)
@given(
    F=st.floats(1e-4, 1.0),
    m=st.floats(-2.0, 2.0),
    T=st.floats(0.0, 40.0),
    atm=st.floats(0.01, 1.0),
    b=st.floats(0.0, 1.0),
    r=st.floats(-0.999, 0.999),
    nu=st.floats(0.0, 3.0),
    obloj=st.booleans(),
)
def test_property_finite_and_xp_equal(F, m, T, atm, b, r, nu, obloj):
    K = F * np.exp(m)
    a = atm * F ** (1 - b)
    v = sabr_vol(F, K, T, a, b, r, nu, obloj=obloj)
    vn = sabr_normal_vol(F, K, T, a, b, r, nu)
    assert np.isfinite(v) and np.isfinite(vn)
    flat = xp_args(F, K, T, a, b, r, nu, 0.0)
    assert rel_err(S._lognormal_xp(np, *flat, obloj)[0], v) <= 1e-12
    assert rel_err(S._normal_xp(np, *flat)[0], vn) <= 1e-12


# ---------------------------------------------------------------- calibration


@pytest.mark.parametrize("normal,obloj", [(False, False), (False, True), (True, False)])
def test_calibration_model_equals_public_vol(normal, obloj):
    "The LM loop evaluates vols from hoisted per-strike terms; they must equal sabr_vol / sabr_normal_vol."
    F, K, T, a, b, r, nu = random_params(3000, seed=22)
    shift = 0.01
    terms = np.empty(4)
    got = np.empty(len(F))
    for i in range(len(F)):
        S._terms1(normal, F[i], K[i], b[i], shift, obloj, terms)
        L, Z, c1, c2 = terms
        corr = 1 + T[i] * (c1 * a[i] ** 2 + c2 * r[i] * nu[i] * a[i] + (2 - 3 * r[i] ** 2) * nu[i] ** 2 / 24)
        got[i] = a[i] * L * S._zx(nu[i] / a[i] * Z, r[i]) * corr
    if normal:
        want = sabr_normal_vol(F, K, T, a, b, r, nu, shift=shift)
    else:
        want = sabr_vol(F, K, T, a, b, r, nu, shift=shift, obloj=obloj)
    assert np.max(rel_err(got, want)) < 1e-13


def make_smiles(n_exp, n_k, seed, beta=0.5, vol_type="lognormal", shift=0.0, obloj=False):
    rng = np.random.default_rng(seed)
    T = np.sort(rng.uniform(0.1, 15.0, n_exp))
    F = rng.uniform(0.01, 0.06, n_exp) - shift / 2  # with a shift, partly negative forwards
    atm = rng.uniform(0.1, 0.5, n_exp) if vol_type == "lognormal" else rng.uniform(0.004, 0.012, n_exp)
    fs = F + shift
    alpha = atm * fs ** (1 - beta) if vol_type == "lognormal" else atm / fs**beta
    rho = rng.uniform(-0.7, 0.5, n_exp)
    nu = rng.uniform(0.15, 1.0, n_exp)
    half = np.minimum(0.6, 1.8 / (nu * np.sqrt(T)))[:, None]
    K = fs[:, None] * np.exp(np.linspace(-1, 1, n_k)[None, :] * half) - shift
    col = lambda x: x[:, None]
    if vol_type == "lognormal":
        V = sabr_vol(col(F), K, col(T), col(alpha), beta, col(rho), col(nu), shift=shift, obloj=obloj)
    else:
        V = sabr_normal_vol(col(F), K, col(T), col(alpha), beta, col(rho), col(nu), shift=shift)
    return F, K, T, V, np.column_stack([alpha, rho, nu])


@pytest.mark.parametrize("n_exp", [8, S._PAR_MIN_EXPIRIES + 6])  # serial kernel, parallel kernel
def test_calibration_recovers_parameters(n_exp):
    F, K, T, V, true = make_smiles(n_exp, 15, seed=12)
    fit = calibrate_sabr(F, K, T, V, beta=0.5)
    assert fit.converged.all(), fit.status
    np.testing.assert_allclose(fit.params, true, rtol=1e-6, atol=1e-8)
    assert np.max(fit.rmse) < 1e-10
    assert fit.params.shape == (n_exp, 3) and fit.status.dtype.kind == "i"


def test_calibration_serial_and_parallel_agree():
    F, K, T, V, _ = make_smiles(S._PAR_MIN_EXPIRIES, 12, seed=13)
    V = V + np.random.default_rng(13).normal(0, 5e-4, V.shape)
    a = calibrate_sabr(F, K, T, V, 0.5)
    b = calibrate_sabr(F[:-1], K[:-1], T[:-1], V[:-1], 0.5)  # one expiry fewer: serial kernel
    np.testing.assert_array_equal(a.params[:-1], b.params)
    np.testing.assert_array_equal(a.status[:-1], b.status)


@pytest.mark.parametrize(
    "beta,vol_type,shift,obloj",
    [
        (0.0, "normal", 0.0, False),
        (0.5, "normal", 0.01, False),
        (0.3, "lognormal", 0.03, False),
        (0.7, "lognormal", 0.0, True),
        (1.0, "lognormal", 0.0, False),
    ],
)
def test_calibration_variants(beta, vol_type, shift, obloj):
    F, K, T, V, true = make_smiles(8, 13, seed=14, beta=beta, vol_type=vol_type, shift=shift, obloj=obloj)
    if shift >= 0.03:
        assert (F < 0).any() and (K < 0).any()  # partly negative rates
    fit = calibrate_sabr(F, K, T, V, beta, shift=shift, obloj=obloj, vol_type=vol_type)
    assert fit.converged.all(), fit.status
    np.testing.assert_allclose(fit.params, true, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fit.vols(K), V, rtol=1e-9)


def test_calibration_negative_rates_normal_beta0():
    rng = np.random.default_rng(15)
    F = np.array([-0.004, -0.001, 0.0, 0.002, 0.005, 0.01])
    T = np.array([0.5, 1, 2, 5, 10, 20.0])
    K = F[:, None] + np.linspace(-0.015, 0.015, 11)[None, :]
    true = np.column_stack([rng.uniform(0.004, 0.01, 6), rng.uniform(-0.5, 0.5, 6), rng.uniform(0.2, 0.6, 6)])
    V = sabr_normal_vol(F[:, None], K, T[:, None], true[:, :1], 0.0, true[:, 1:2], true[:, 2:])
    fit = calibrate_sabr(F, K, T, V, 0.0, vol_type="normal")
    assert fit.converged.all()
    np.testing.assert_allclose(fit.params, true, rtol=1e-6)


def test_calibration_with_noise_matches_scipy_least_squares():
    from scipy.optimize import least_squares

    F, K, T, V, true = make_smiles(6, 15, seed=16)
    rng = np.random.default_rng(16)
    Vn = V + rng.normal(0, 2e-3, V.shape)
    W = rng.uniform(0.5, 2.0, V.shape)
    fit = calibrate_sabr(F, K, T, Vn, 0.5, weights=W)
    assert fit.converged.all()
    for e in range(6):

        def res(p, e=e):
            return np.sqrt(W[e]) * (sabr_vol(F[e], K[e], T[e], p[0], 0.5, p[1], p[2]) - Vn[e])

        sp = least_squares(
            res,
            true[e],
            bounds=([1e-8, -0.9999, 0.0], [np.inf, 0.9999, 10.0]),
            xtol=1e-15,
            ftol=1e-15,
            gtol=1e-15,
        )
        ours = 0.5 * np.sum(res(fit.params[e]) ** 2)
        assert ours <= sp.cost * (1 + 1e-9), (e, ours, sp.cost)
        np.testing.assert_allclose(fit.params[e], sp.x, rtol=1e-4, atol=1e-6)
        err = sabr_vol(F[e], K[e], T[e], fit.alpha[e], 0.5, fit.rho[e], fit.nu[e]) - Vn[e]
        assert abs(fit.rmse[e] - np.sqrt(np.mean(err**2))) < 1e-15  # rmse is unweighted
    # noise of 0.2 vol points: the parameters come back roughly
    assert np.max(np.abs(fit.alpha / true[:, 0] - 1)) < 0.05
    assert np.max(np.abs(fit.rho - true[:, 1])) < 0.15


def test_calibration_weights_ignore_outlier():
    F, K, T, V, true = make_smiles(4, 15, seed=17)
    Vb = V.copy()
    Vb[:, 3] += 0.05  # one bad quote per expiry
    W = np.ones_like(V)
    W[:, 3] = 0.0
    fit = calibrate_sabr(F, K, T, Vb, 0.5, weights=W)
    np.testing.assert_allclose(fit.params, true, rtol=1e-6)
    W[:, 3] = np.nan  # NaN weight also drops the quote
    np.testing.assert_allclose(calibrate_sabr(F, K, T, Vb, 0.5, weights=W).params, true, rtol=1e-6)
    unweighted = calibrate_sabr(F, K, T, Vb, 0.5)
    assert np.max(np.abs(unweighted.params[:, 0] / true[:, 0] - 1)) > 1e-3


def test_calibration_ragged_and_bad_expiries():
    F, K, T, V, true = make_smiles(6, 12, seed=18)
    K[0, 8:] = np.nan
    V[1, :4] = np.nan
    V[2, 2:] = np.nan  # two quotes left: too few
    F[3] = np.nan  # bad forward
    T[4] = -1.0  # bad expiry
    fit = calibrate_sabr(F, K, T, V, 0.5)
    np.testing.assert_array_equal(fit.status[2:5], [-1, -2, -2])
    assert np.isnan(fit.params[2:5]).all() and not fit.converged[2:5].any()
    np.testing.assert_allclose(fit.params[[0, 1, 5]], true[[0, 1, 5]], rtol=1e-6)
    assert set(fit.status.tolist()) <= set(S.STATUS)


def test_calibration_beta_per_expiry_and_shared_strikes():
    F = np.full(3, 0.03)
    T = np.array([1.0, 2.0, 5.0])
    K = np.linspace(0.015, 0.05, 9)  # one strike row for all expiries
    betas = np.array([0.0, 0.5, 1.0])
    true = np.array([[0.005, -0.3, 0.5], [0.03, -0.2, 0.4], [0.2, 0.1, 0.3]])
    V = sabr_vol(F[:, None], K[None, :], T[:, None], true[:, :1], betas[:, None], true[:, 1:2], true[:, 2:])
    fit = calibrate_sabr(F, K, T, V, betas)
    np.testing.assert_allclose(fit.params, true, rtol=1e-6)
    np.testing.assert_array_equal(fit.beta, betas)


def test_calibration_input_errors():
    F, K, T, V, _ = make_smiles(3, 5, seed=19)
    with pytest.raises(ValueError, match="beta"):
        calibrate_sabr(F, K, T, V, -0.1)
    with pytest.raises(ValueError, match="vol_type"):
        calibrate_sabr(F, K, T, V, 0.5, vol_type="black")
    with pytest.raises(ValueError, match="K"):
        calibrate_sabr(F, K[:, :2], T, V, 0.5)
    with pytest.raises(ValueError, match="weights"):
        calibrate_sabr(F, K, T, V, 0.5, weights=-np.ones_like(V))
    with pytest.raises(ValueError, match="F"):
        calibrate_sabr(F[:2], K, T, V, 0.5)
    with pytest.raises(ValueError, match="max_iter"):
        calibrate_sabr(F, K, T, V, 0.5, max_iter=0)


# ---------------------------------------------------------------- GPU (CuPy)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("kind", ["lognormal", "obloj", "normal"])
def test_gpu_equals_numba(kind):
    import cupy as cp

    F, K, T, a, b, r, nu = random_params(100_000, seed=20)
    if kind == "normal":
        want = sabr_normal_vol(F, K, T, a, b, r, nu)
        got = sabr_normal_vol(cp.asarray(F), K, T, a, b, r, nu)
    else:
        want = sabr_vol(F, K, T, a, b, r, nu, obloj=kind == "obloj")
        got = sabr_vol(cp.asarray(F), K, T, a, b, r, nu, obloj=kind == "obloj")
    assert isinstance(got, cp.ndarray)
    got = cp.asnumpy(got)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = np.isfinite(want)
    assert np.max(rel_err(got[ok], want[ok])) <= 1e-12


@pytest.mark.gpu
@needs_gpu
def test_gpu_calibration_returns_cupy():
    import cupy as cp

    F, K, T, V, true = make_smiles(4, 11, seed=21)
    fit = calibrate_sabr(cp.asarray(F), cp.asarray(K), T, cp.asarray(V), 0.5)
    assert isinstance(fit.alpha, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(fit.params), true, rtol=1e-6)
