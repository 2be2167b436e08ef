"""Rate curves: interpolation checked by hand, discount factors, prices, implied vols and Greeks with the curve
against QuantLib on a flat and on an upward-sloping curve; the store round trip on SQLite and PostgreSQL; the
file loader's rejections; the synthetic market priced with its curve.

QuantLib reference: `ql.FlatForward` (flat) and `ql.DiscountCurve` (upward: log-linear discount factors, the
same interpolation as `RateCurve`, built from the curve's own discount factors at its tenors), Actual365Fixed,
continuous compounding, a flat dividend curve and a flat vol, `BlackScholesMertonProcess` and
`AnalyticEuropeanEngine`. Tenors and expiries are whole days, so QuantLib's dates give the same `T = days/365`.

Theta: both sides give theta per year of calendar time (QuantLib's `theta()`, not `thetaPerDay()` = theta/365),
the derivative of the value as time passes with the zero rate to the option's expiry, the dividend yield and
the vol held fixed (QuantLib's `BlackCalculator::theta` is rV − (r−q)SΔ − ½σ²S²Γ/… with r the equivalent
flat rate of D(T)); neither rolls down the curve. Like is compared with like.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from aitrade import errors, rates, store
from aitrade.pricing.black import bsm_greeks, bsm_price
from aitrade.pricing.iv import implied_vol_bsm

ql = pytest.importorskip("QuantLib")

REF = ql.Date(1, 6, 2015)
DAY = pd.Timestamp("2015-06-01")
DC = ql.Actual365Fixed()
S, Q, VOL = 100.0, 0.01, 0.25
STRIKES = (60.0, 85.0, 100.0, 115.0, 150.0)
EXPIRY_DAYS = (7, 30, 91, 200, 365, 730, 1500)

# price: relative 1e-10 (absolute 1e-12 for prices below a cent); IV: 1e-9 absolute; Greeks: 1e-8 relative
# with an absolute floor of 1e-10 (a deep out-of-the-money gamma is ~1e-12)
PRICE_RTOL, PRICE_ATOL, IV_ATOL, GREEK_RTOL, GREEK_ATOL = 1e-10, 1e-12, 1e-9, 1e-8, 1e-10

FLAT = rates.RateCurve.flat(0.03, DAY)
UP_DAYS = np.array([30, 91, 182, 365, 730, 1825, 3650])
UP = rates.RateCurve(DAY, UP_DAYS / 365, [0.005, 0.008, 0.012, 0.017, 0.022, 0.028, 0.032], "test-up")


def ql_curve(curve: rates.RateCurve):
    "The same curve in QuantLib: FlatForward for a flat curve, else a log-linear DiscountCurve on its nodes."
    if curve.tenors.size == 1:
        return ql.FlatForward(REF, float(curve.rates[0]), DC, ql.Continuous)
    days = np.rint(curve.tenors * 365).astype(int)
    assert np.allclose(days / 365, curve.tenors, rtol=0, atol=1e-15)  # whole days
    dates = [REF] + [REF + int(n) for n in days]
    c = ql.DiscountCurve(dates, [1.0] + [float(x) for x in curve.discount(days / 365)], DC)
    c.enableExtrapolation()
    return c


@pytest.fixture(autouse=True)
def _evaluation_date():
    ql.Settings.instance().evaluationDate = REF
    yield


def ql_results(curve: rates.RateCurve) -> pd.DataFrame:
    ts = ql.YieldTermStructureHandle(ql_curve(curve))
    div = ql.YieldTermStructureHandle(ql.FlatForward(REF, Q, DC, ql.Continuous))
    vol = ql.BlackVolTermStructureHandle(ql.BlackConstantVol(REF, ql.NullCalendar(), VOL, DC))
    proc = ql.BlackScholesMertonProcess(ql.QuoteHandle(ql.SimpleQuote(S)), div, ts, vol)
    eng = ql.AnalyticEuropeanEngine(proc)
    rows = []
    for n in EXPIRY_DAYS:
        for K in STRIKES:
            for call in (True, False):
                opt = ql.EuropeanOption(
                    ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, K),
                    ql.EuropeanExercise(REF + n),
                )
                opt.setPricingEngine(eng)
                price = opt.NPV()
                rows.append(
                    dict(
                        T=n / 365,
                        K=K,
                        call=call,
                        price=price,
                        delta=opt.delta(),
                        gamma=opt.gamma(),
                        vega=opt.vega(),
                        theta=opt.theta(),
                        ql_iv=opt.impliedVolatility(price, proc, 1e-14, 1000, 1e-4, 4.0),
                    )
                )
    return pd.DataFrame(rows)


# --- interpolation by hand ----------------------------------------------------------------------------------


def test_interpolation_by_hand():
    c = rates.RateCurve("2015-06-01", [0.5, 1.0, 2.0], [0.01, 0.02, 0.03])
    # r*T at the nodes: 0.005, 0.02, 0.06; linear in r*T between them, flat zero rate outside
    assert c.zero(0.75) == pytest.approx(0.0125 / 0.75, rel=1e-15)
    assert c.zero(1.25) == pytest.approx((0.02 + 0.25 * 0.04) / 1.25, rel=1e-15)
    assert c.zero(1.5) == pytest.approx(0.04 / 1.5, rel=1e-15)
    assert c.discount(1.5) == pytest.approx(np.exp(-0.04), rel=1e-15)
    # the forward rate between two nodes is constant: -d ln D / dT = (0.06 - 0.02) / 1
    T = np.array([1.1, 1.4, 1.9])
    fwd = -(np.log(c.discount(T + 1e-6)) - np.log(c.discount(T - 1e-6))) / 2e-6
    np.testing.assert_allclose(fwd, 0.04, rtol=1e-7)
    np.testing.assert_array_equal(c.zero([0.0, 0.25, 0.5]), [0.01, 0.01, 0.01])  # flat before the first
    np.testing.assert_array_equal(c.zero([2.0, 5.0, 100.0]), [0.03, 0.03, 0.03])  # flat after the last
    assert c.discount(0.0) == 1.0 and np.isnan(c.zero(np.nan))
    assert c.zero(np.ones((3, 2))).shape == (3, 2)


@pytest.mark.parametrize(
    "tenors, rates_, match",
    [
        ([], [], "tenors: a curve needs"),
        ([1.0, 0.5], [0.01, 0.02], "tenors: not increasing"),
        ([1.0, 1.0], [0.01, 0.02], "tenors: duplicate"),
        ([-0.5, 1.0], [0.01, 0.02], "tenors: must be > 0"),
        ([0.0, 1.0], [0.01, 0.02], "tenors: must be > 0"),
        ([1.0, np.nan], [0.01, 0.02], "tenors: not finite"),
        ([1.0, 2.0], [0.01, np.inf], "rates: not finite"),
        ([1.0, 2.0], [0.01], "rates: 1 rates for 2 tenors"),
        ([1.0], [3.0], "rates: 3.0 at tenor 1.0 is not a decimal rate"),
    ],
)
def test_bad_curves_name_the_field(tenors, rates_, match):
    with pytest.raises(errors.FieldError, match=match):
        rates.RateCurve("2015-06-01", tenors, rates_)


# --- QuantLib agreement ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", [FLAT, UP], ids=["flat", "upward"])
def test_discount_factors_agree_with_quantlib(curve):
    qc = ql_curve(curve)
    days = np.r_[1, 7, 30, 45, 91, 100, 182, 250, 365, 500, 730, 1000, 1825, 3000, 3650]
    ours = curve.discount(days / 365)
    theirs = np.array([qc.discount(REF + int(n)) for n in days])
    np.testing.assert_allclose(ours, theirs, rtol=1e-14, atol=0)
    zq = np.array([qc.zeroRate(REF + int(n), DC, ql.Continuous).rate() for n in days])
    # zero rates to 1e-13 absolute (QuantLib takes -ln D / t: at one day its own round-off is ~1e-14)
    np.testing.assert_allclose(curve.zero(days / 365), zq, rtol=0, atol=1e-13)


@pytest.mark.parametrize("curve", [FLAT, UP], ids=["flat", "upward"])
def test_prices_ivs_and_greeks_agree_with_quantlib(curve):
    ref = ql_results(curve)
    T, K, call = ref["T"].to_numpy(), ref["K"].to_numpy(), ref["call"].to_numpy()
    r = curve.zero(T)
    if curve is UP:
        assert np.ptp(r) > 0.02  # the rate really differs by expiry
    g = bsm_greeks(S, K, T, r, Q, VOL, call, ("price", "delta", "gamma", "vega", "theta"))
    np.testing.assert_allclose(
        bsm_price(S, K, T, r, Q, VOL, call), ref["price"], rtol=PRICE_RTOL, atol=PRICE_ATOL
    )
    np.testing.assert_allclose(g["price"], ref["price"], rtol=PRICE_RTOL, atol=PRICE_ATOL)
    for name in ("delta", "gamma", "vega", "theta"):
        np.testing.assert_allclose(g[name], ref[name], rtol=GREEK_RTOL, atol=GREEK_ATOL, err_msg=name)
    # the implied vol of QuantLib's price, with the curve's r(T), is the vol QuantLib priced with; and back
    ours_iv = implied_vol_bsm(ref["price"].to_numpy(), S, K, T, r, Q, call)
    # a price known to double precision (relative 1e-16, times a few ulps) fixes the vol to ~1e-14 price / vega:
    # 1e-9 needs vega > 1e-5 price. Deep in the money a few days out (vega / price down to 1e-49) no vol can be
    # read back from the price, by aitrade or by QuantLib; far out of the money, at prices of 1e-8, aitrade's
    # implied vol is good to ~5e-8 only. Rows outside (vega > 1e-5 price, price > 1e-6) are left out.
    price, vega = ref["price"].to_numpy(), ref["vega"].to_numpy()
    usable = (vega > 1e-5 * price) & (price > 1e-6)
    assert usable.sum() >= 0.8 * len(ref)
    np.testing.assert_allclose(ours_iv[usable], VOL, rtol=0, atol=IV_ATOL)
    np.testing.assert_allclose(ref["ql_iv"][usable], VOL, rtol=0, atol=IV_ATOL)


def test_a_curve_is_not_a_flat_rate():
    "Pricing with r(T) differs from pricing with the one-year rate for a two-year option (the test has teeth)."
    T = 2.0
    p_curve = bsm_price(S, 100.0, T, UP.zero(T), Q, VOL, True)
    p_flat = bsm_price(S, 100.0, T, UP.zero(1.0), Q, VOL, True)
    assert abs(p_curve - p_flat) > 0.05


# --- the store -------------------------------------------------------------------------------------------------


def test_store_round_trip(db):
    with store.session_scope() as s:
        with pytest.raises(errors.NotFound, match="no rate curve stored on or before 2015-06-01"):
            rates.curve(s, "2015-06-01")
        assert rates.curve(s, "2015-06-01", default=0.01).zero(3.0) == 0.01
        assert rates.store_curve(s, UP) == UP.tenors.size
        rates.store_curve(s, rates.synthetic_curve("2015-06-03"))
    with store.session_scope() as s:
        back = rates.curve(s, "2015-06-02")
        assert back.as_of == DAY and back.source == "test-up"
        np.testing.assert_array_equal(back.tenors, UP.tenors)
        np.testing.assert_array_equal(back.rates, UP.rates)
        assert rates.curve(s, "2016-01-01").source == rates.SYNTHETIC_SOURCE
        rates.store_curve(s, rates.RateCurve.flat(0.04, DAY, "again"))  # replaces the day's curve
    with store.session_scope() as s:
        assert rates.curve(s, DAY).source == "again" and rates.curve(s, DAY).tenors.size == 1
        n = s.scalar(sa.select(sa.func.count()).select_from(rates.RatePoint))
        assert n == 1 + len(rates.SYNTHETIC_TENORS)


def test_the_database_refuses_a_duplicate_tenor(db):
    with pytest.raises(sa.exc.IntegrityError), store.session_scope() as s:
        rates.store_curve(s, FLAT)
        s.execute(
            sa.insert(rates.RatePoint),
            [dict(date=DAY.date(), tenor=1.0, zero_rate=0.01, source="x", created_at=store.utcnow())],
        )


def test_migration_creates_and_drops_the_table(db):
    assert "rate_curves" in sa.inspect(store.get_engine()).get_table_names()
    store.downgrade("0004")
    store.dispose_engines()
    assert "rate_curves" not in sa.inspect(store.get_engine()).get_table_names()
    store.upgrade()


# --- the file loader -------------------------------------------------------------------------------------------


def test_loader_stores_good_files(db, tmp_path):
    f = tmp_path / "curves.csv"
    f.write_text("date,tenor,rate,comment\n2015-06-02,1,0.02,x\n2015-06-02,0.25,0.01,\n2015-06-01,2,0.03,\n")
    with store.session_scope() as s:
        got = rates.load_curves_file(s, f)
    assert [(c.as_of, list(c.tenors)) for c in got] == [
        (pd.Timestamp("2015-06-01"), [2.0]),
        (pd.Timestamp("2015-06-02"), [0.25, 1.0]),
    ]
    with store.session_scope() as s:
        c = rates.curve(s, "2015-06-05")
        assert c.source == "curves.csv" and c.zero(0.5) == pytest.approx(
            (0.0025 + 0.25 / 0.75 * 0.0175) / 0.5
        )


def test_loader_rejects_bad_rows_and_stores_nothing(db, tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text(
        "date,tenor,rate\n"
        "2015-06-03,1,0.02\n"  # line 2: fine
        "2015-06-03,1,0.021\n"  # line 3: the same tenor again
        "06/03/2015x,2,0.03\n"  # line 4: not a date
        "2015-06-03,-1,0.01\n"  # line 5: negative tenor
        "2015-06-03,5,2.5\n"  # line 6: a percentage
        "2015-06-03,7,\n"  # line 7: no rate
        "2015-06-04,7,nan\n"  # line 8: not finite
    )
    raw = pd.read_csv(f, dtype=str, keep_default_na=False)
    _, rej = rates.parse_curves_frame(raw)
    assert list(rej["row"]) == [3, 4, 5, 6, 7, 8]
    reasons = list(rej["reason"])
    assert reasons[0] == "tenor: 1 given twice for 2015-06-03 (first on line 2)"
    assert reasons[1].startswith("date: not a date") and reasons[2].startswith("tenor: must be > 0")
    assert "2.5% is 0.025" in reasons[3] and reasons[4].startswith("rate: not a finite number")
    assert reasons[5].startswith("rate: not a finite number")
    with (
        pytest.raises(errors.FieldError, match=r"6 bad rows, nothing stored \(line 3"),
        store.session_scope() as s,
    ):
        rates.load_curves_file(s, f)
    with store.session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(rates.RatePoint)) == 0


@pytest.mark.parametrize(
    "text, match",
    [
        ("date,tenor\n2015-06-01,1\n", "columns: missing \\['rate'\\]"),
        ("date,tenor,rate\n", "file: no curve rows"),
    ],
)
def test_loader_refuses_a_file_that_is_not_a_curve_file(db, tmp_path, text, match):
    f = tmp_path / "x.csv"
    f.write_text(text)
    with pytest.raises(errors.FieldError, match=match), store.session_scope() as s:
        rates.load_curves_file(s, f)
    with pytest.raises(errors.FieldError, match="path: "), store.session_scope() as s:
        rates.load_curves_file(s, tmp_path / "missing.csv")


# --- the default source ----------------------------------------------------------------------------------------


def test_the_synthetic_curve_is_nelson_siegel_and_upward_sloping():
    c = rates.synthetic_curve("2012-03-01")
    np.testing.assert_allclose(c.rates, rates.nelson_siegel(c.tenors, **rates.SYNTHETIC_NS), rtol=1e-15)
    assert np.all(np.diff(c.rates) > 0) and c.rates[0] > 0.018 and c.rates[-1] < 0.03
    assert c.source == rates.SYNTHETIC_SOURCE and c.as_of == pd.Timestamp("2012-03-01")
    np.testing.assert_array_equal(c.rates, rates.synthetic_curve("2008-10-10").rates)  # the same every day


# --- the curve where prices, IVs and Greeks are computed ------------------------------------------------------


def test_risk_discounts_each_position_at_its_own_zero_rate():
    from aitrade.risk import CALL, MarketState, Portfolio, portfolio_greeks, position_greeks

    T = np.array([7, 91, 365, 730, 1500]) / 365
    K = np.array([90.0, 100.0, 110.0, 100.0, 120.0])
    kind = np.array([1, 2, 1, 1, 2])
    pf = Portfolio(
        ["A"] * 5 + ["A"], np.r_[kind, 0], np.r_[K, 0.0], np.r_[T, 0.0], np.r_[1.0, -2, 3, 1, 2, 50], 1.0
    )
    mkt = MarketState(["A"], [S], UP, Q, VOL)
    np.testing.assert_allclose(mkt.position_rate(pf), np.r_[UP.zero(T), UP.zero(0.0)], rtol=0, atol=0)
    ref = bsm_greeks(S, K, T, UP.zero(T), Q, VOL, kind == CALL, ("price", "delta", "gamma", "vega", "theta"))
    qty = np.r_[1.0, -2, 3, 1, 2]
    tot = portfolio_greeks(pf, mkt, by="symbol").iloc[0]
    assert tot["market_value"] == pytest.approx(float((qty * ref["price"]).sum() + 50 * S), rel=1e-12)
    assert tot["delta"] == pytest.approx(float((qty * ref["delta"]).sum() + 50), rel=1e-12)
    assert tot["theta"] * 365 == pytest.approx(float((qty * ref["theta"]).sum()), rel=1e-11)
    per = position_greeks(pf, mkt)  # the per-row path (the quant core) agrees with the fused kernel
    np.testing.assert_allclose(per["price"].to_numpy()[:5], ref["price"], rtol=1e-12)
    # a flat number per underlying is the flat curve, as before
    flat = portfolio_greeks(pf, MarketState(["A"], [S], 0.03, Q, VOL), by="symbol").iloc[0]
    flat_c = portfolio_greeks(pf, MarketState(["A"], [S], FLAT, Q, VOL), by="symbol").iloc[0]
    assert flat["market_value"] == pytest.approx(flat_c["market_value"], rel=1e-14)


def test_the_synthetic_chain_is_priced_on_its_curve():
    from aitrade import marketdata
    from aitrade.clock import time_to_expiry

    m = marketdata.SyntheticMarket(seed=3)
    ch = m.chain("SPX", "2015-06-01")
    T = time_to_expiry(ch["quote_date"], ch["expiry"])
    np.testing.assert_allclose(ch["rate"], rates.synthetic_curve("2015-06-01").zero(T), rtol=0, atol=0)
    assert ch.groupby("expiry")["rate"].first().is_monotonic_increasing and ch["rate"].nunique() > 5
    flat = marketdata.SyntheticMarket(seed=3, rate=0.02).chain("SPX", "2015-06-01")
    assert (flat["rate"] == 0.02).all()  # a flat rate, as before curves existed
    with pytest.raises(errors.FieldError, match="rate: must be None or a finite number"):
        marketdata.SyntheticMarket(rate=float("nan"))


def test_orders_and_calibration_read_the_stored_curve(db):
    from aitrade import execution, marketdata, surfaces
    from aitrade.clock import time_to_expiry

    m = marketdata.SyntheticMarket(seed=1)
    d = pd.Timestamp("2015-06-01")
    good = marketdata.validate_chain(m.chain("SPX", d)).good
    with store.session_scope() as s:
        marketdata.store_chain(s, good[list(marketdata.CHAIN_COLUMNS)])
        row = good.iloc[len(good) // 2]
        order = execution.Order(
            symbol="SPX",
            option_type=row["option_type"],
            expiry=row["expiry"].date(),
            strike=float(row["strike"]),
        )
        assert execution.marketdata_quote(s, order).rate == 0.0  # no curve stored: r = 0, as before
        rates.store_curve(s, m.curve(d))
    with store.session_scope() as s:
        q = execution.marketdata_quote(s, order)
        assert q.rate == pytest.approx(float(row["rate"]), abs=1e-15)
        assert q.rate == rates.synthetic_curve(d).zero(time_to_expiry(q.ts, row["expiry"]))
        # a stored chain has no `rate` column: calibration reads r(T) of the stored curve, per expiry
        stored = marketdata.chain(s, "SPX", d)
        T = time_to_expiry(stored["quote_date"], stored["expiry"])
        a = surfaces.calibrate_chain(stored, heston=False, rate=m.curve(d))
        b = surfaces.calibrate_chain(stored.assign(rate=m.curve(d).zero(T)), heston=False)
        pd.testing.assert_frame_equal(a.slices, b.slices)
        fit = surfaces.calibrate_and_store(s, "SPX", d, heston=False)
        pd.testing.assert_frame_equal(fit.slices, a.slices)
