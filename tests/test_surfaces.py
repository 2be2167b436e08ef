"""The calibration pipeline: IV per quote, SABR per expiry, Heston per underlying; failed fits stored with status
'failed' and the error (SQLite and PostgreSQL); a pure function that runs in another process (a Dask task)."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest

from aitrade import marketdata as md
from aitrade import store
from aitrade import surfaces as sf
from aitrade.pricing.sabr import sabr_vol

MKT = md.SyntheticMarket(seed=4)


@pytest.mark.parametrize(
    "symbol,date", [("SPX", "2010-05-20"), ("IXIC", "2016-06-24"), ("AAPL", "2011-08-08")]
)
def test_sabr_slices_recover_the_generating_parameters(symbol, date):
    ch = MKT.chain(symbol, date)
    fit = sf.calibrate_chain(ch)
    assert fit.status == "ok", fit.error
    assert fit.error is None and fit.underlying == symbol and fit.quote_date == pd.Timestamp(date)
    assert fit.as_of == md.session_close(date).to_pydatetime()
    sl = fit.slices
    gen = MKT.smile_params(symbol, date, sl["T"].to_numpy())
    # parity forward and discount: F within 2 bp, D = exp(-r(T) T) of the market's curve within 2e-3 (tick noise on the short expiries)
    np.testing.assert_allclose(sl["forward"], gen["F"], rtol=2e-4)
    np.testing.assert_allclose(sl["discount"], MKT.curve(date).discount(sl["T"].to_numpy()), atol=2e-3)
    np.testing.assert_allclose(sl["alpha"], gen["alpha"], rtol=0.01)
    np.testing.assert_allclose(sl["rho"], gen["rho"], atol=0.05)
    np.testing.assert_allclose(sl["nu"], gen["nu"], rtol=0.08)
    assert (sl["status"] == "ok").all() and (sl["n_quotes"] >= 8).all() and (sl["beta"] == 1.0).all()
    assert fit.rmse < 2e-3
    h = fit.heston
    assert h["success"] and h["rmse"] < 0.03 and -1 < h["rho"] < 0 and h["v0"] > 0
    good = ch[ch["bad"] == ""]
    assert len(fit.quotes) == len(good) and fit.n_quotes == sl["n_quotes"].sum()


def test_heston_recovers_a_heston_generated_surface():
    m = md.SyntheticMarket(seed=4, model="heston")
    ch = m.chain("SPX", "2017-03-15")
    fit = sf.calibrate_chain(ch, sabr_max_rmse=0.02)
    h = fit.heston
    assert h["success"] and h["rmse"] < 2e-3, h
    v0, theta = md._v0_theta("SPX", md.history("SPX").loc["2017-03-15"])
    assert h["v0"] == pytest.approx(v0, rel=0.1)
    assert h["rho"] == pytest.approx(-0.7, abs=0.1)


def test_implied_vols_per_quote_match_the_generating_vols():
    ch = MKT.chain("IBM", "2007-02-27")
    fit = sf.calibrate_chain(ch, heston=False)
    q = fit.quotes.merge(ch[ch["bad"] == ""][["expiry", "strike", "option_type", "model_vol"]])
    assert len(q) == len(fit.quotes)
    err = np.abs(q["iv"] - q["model_vol"])
    assert (q["iv_reason"] == 0).mean() > 0.99
    assert np.nanmedian(err) < 2e-3 and np.nanpercentile(err, 90) < 1e-2


def test_vol_interpolates_between_slices():
    fit = sf.calibrate_chain(MKT.chain("SPX", "2010-05-20"), heston=False)
    sl = fit.slices
    r = sl.iloc[2]
    K = np.array([0.9, 1.0, 1.1]) * r["forward"]
    np.testing.assert_allclose(
        fit.vol(r["expiry"], K),
        sabr_vol(r["forward"], K, r["T"], r["alpha"], 1.0, r["rho"], r["nu"]),
        rtol=1e-12,
    )
    Tm = 0.5 * (sl["T"].iloc[2] + sl["T"].iloc[3])
    atm_lo, atm_hi = (
        fit.vol(sl["T"].iloc[2], sl["forward"].iloc[2]),
        fit.vol(sl["T"].iloc[3], sl["forward"].iloc[3]),
    )
    mid = fit.vol(Tm, np.exp(np.interp(Tm, sl["T"], np.log(sl["forward"]))))
    tv = (atm_lo**2 * sl["T"].iloc[2] + atm_hi**2 * sl["T"].iloc[3]) / 2
    assert mid == pytest.approx(np.sqrt(tv / Tm), rel=1e-9)


def test_failures_are_results_with_the_error():
    ch = MKT.chain("SPX", "2010-05-20")
    assert "no valid quotes" in sf.calibrate_chain(ch.iloc[:0]).error
    two = sf.calibrate_chain(pd.concat([ch, MKT.chain("IXIC", "2010-05-20")]))
    assert two.status == "failed" and "exactly one underlying" in two.error
    two_days = sf.calibrate_chain(pd.concat([ch, MKT.chain("SPX", "2010-05-21")]))
    assert two_days.status == "failed" and "exactly one quote_date" in two_days.error
    rng = np.random.default_rng(1)
    junk = ch.assign(
        bid=ch["bid"] * rng.uniform(0.3, 1.0, len(ch)), ask=ch["ask"] * rng.uniform(1.0, 2.0, len(ch))
    )
    f = sf.calibrate_chain(junk)
    assert f.status == "failed" and "SABR failed for expiries" in f.error
    assert (f.slices["status"] == "failed").any()
    with pytest.raises(TypeError, match="chain_df: must be a pandas DataFrame"):
        sf.calibrate_chain({"underlying": ["SPX"]})


def test_failed_and_ok_fits_are_stored_and_the_latest_is_read(db):
    d = "2010-05-20"
    ch = MKT.chain("SPX", d)
    ok = sf.calibrate_chain(ch)
    rng = np.random.default_rng(2)
    bad = sf.calibrate_chain(
        ch.assign(bid=ch["bid"] * rng.uniform(0.3, 1, len(ch)), ask=ch["ask"] * rng.uniform(1, 2, len(ch)))
    )
    with store.session_scope() as s:
        sf.store_surface(s, ok)
    with store.session_scope() as s:
        back = sf.latest_surface(s, "SPX", d)
        assert back.status == "ok" and back.error is None
        np.testing.assert_allclose(back.slices["nu"], ok.slices["nu"], rtol=1e-12)
        assert back.heston == pytest.approx(ok.heston)
        np.testing.assert_allclose(back.vol(0.2, [1000.0, 1100.0]), ok.vol(0.2, [1000.0, 1100.0]), rtol=1e-12)
        sf.store_surface(s, bad)  # a later fit of the same day fails: risk must see the failure
    with store.session_scope() as s:
        latest = sf.latest_surface(s, "SPX")
        assert latest.status == "failed" and "SABR failed" in latest.error
        assert sf.latest_surface(s, "SPX", "2010-05-21") is None and sf.latest_surface(s, "AAPL") is None


def test_calibrate_and_store_from_the_database(db):
    d = "2011-08-08"
    with store.session_scope() as s:
        md.store_chain(s, md.validate_chain(MKT.chain("AAPL", d)).good)
    with store.session_scope() as s:
        fit = sf.calibrate_and_store(s, "AAPL", d)
        assert fit.status == "ok", fit.error
        empty = sf.calibrate_and_store(s, "MSFT", d)  # no chain stored: a failed surface is recorded
        assert empty.status == "failed"
    with store.session_scope() as s:
        assert sf.latest_surface(s, "AAPL", d).status == "ok"
        m = sf.latest_surface(s, "MSFT", d)
        assert m.status == "failed" and "no valid quotes" in m.error


def test_pure_function_runs_in_another_process():
    ch = MKT.chain("SPX", "2016-06-24")
    here = sf.calibrate_chain(ch)
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        there = ex.submit(sf.calibrate_chain, ch).result(timeout=300)
    assert there.status == here.status == "ok"
    np.testing.assert_allclose(
        there.slices[["alpha", "rho", "nu"]].to_numpy(), here.slices[["alpha", "rho", "nu"]], rtol=1e-10
    )
    assert there.heston["v0"] == pytest.approx(here.heston["v0"], rel=1e-8)
    again = pickle.loads(pickle.dumps(here))
    pd.testing.assert_frame_equal(again.quotes, here.quotes)
