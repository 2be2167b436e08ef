"""Market data: the synthetic market (deterministic, anchored to history, reproduces its model surface), the
CBOE-layout file loaders (bad rows rejected with reasons, good rows load) and the tables, on SQLite and
PostgreSQL; the live feed over the bus (embedded and Redis)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from aitrade import bus, config, store
from aitrade import marketdata as md
from aitrade.clock import time_to_expiry
from aitrade.pricing.black import bsm_greeks
from aitrade.pricing.iv import implied_vol_bsm

MKT = md.SyntheticMarket(seed=11)


# --- the synthetic market ---------------------------------------------------------------------------------


def test_history_is_the_real_series():
    spx, aapl = md.history("SPX"), md.history("AAPL")
    assert spx.index[0] == pd.Timestamp("1999-01-04") and spx.index[-1] == pd.Timestamp("2018-12-31")
    assert spx.loc["2008-09-15", "close"] == pytest.approx(
        1192.699951, rel=1e-8
    )  # Lehman day, arch.data.sp500
    assert md.history("IXIC").loc["2000-03-10", "close"] == pytest.approx(
        5048.620117, rel=1e-8
    )  # dot-com peak
    assert aapl.index[0] == pd.Timestamp("2000-03-01") and aapl.index[-1] == pd.Timestamp("2013-03-01")
    # split-free: the unadjusted close halves over the 2:1 split of 2005-02-28; the replayed series does not
    raw = __import__("bokeh_sampledata.stocks", fromlist=["data"]).data
    raw = raw[raw["ticker"] == "AAPL"].set_index("date")["close"]
    assert raw.loc["2005-02-28"] / raw.loc["2005-02-25"] < 0.55
    assert abs(np.log(aapl.loc["2005-02-28", "close"] / aapl.loc["2005-02-25", "close"])) < 0.05
    assert set(MKT.symbols) == {"SPX", "IXIC", "AAPL", "FB", "GOOG", "IBM", "MSFT"}


def test_atm_level_follows_the_vix_and_realised_vol():
    vix = md._vix()
    for d in ["2014-03-03", "2015-08-24", "2018-02-05", "2018-12-24"]:
        sp = MKT.smile_params("SPX", d, 30 / 365)
        from aitrade.pricing.sabr import sabr_vol

        assert sabr_vol(sp["F"], sp["F"], 30 / 365, sp["alpha"], 1.0, sp["rho"], sp["nu"])[
            0
        ] == pytest.approx(vix.loc[d], rel=1e-10)
    h = md.history("SPX")
    # outside the VIX years: a constant multiple of the EWMA realised vol, high in the 2008 crisis
    ratio = (h["atm_vol"] / h["ewma_vol"]).loc["2005":"2012"]
    inside = ratio[(h["atm_vol"] > 0.05) & (h["atm_vol"] < 2.0)]
    assert inside.std() < 1e-12 and 0.8 < inside.mean() < 2.5
    assert h.loc["2008-11-20", "atm_vol"] > 3 * h.loc["2006-06-01", "atm_vol"] / 2
    assert (
        (md.history("AAPL")["atm_vol"] / md.history("AAPL")["ewma_vol"])
        .loc["2005"]
        .between(1.0999, 1.1001)
        .all()
    )


@pytest.mark.parametrize("symbol,date", [("SPX", "2016-02-10"), ("IBM", "2009-03-09"), ("FB", "2012-12-03")])
def test_deterministic_for_a_seed(symbol, date):
    a = md.SyntheticMarket(seed=5).chain(symbol, date)
    md.SyntheticMarket(seed=5).chain("MSFT", "2010-01-04")  # another chain in between changes nothing
    b = md.SyntheticMarket(seed=5).chain(symbol, date)
    pd.testing.assert_frame_equal(a, b)
    c = md.SyntheticMarket(seed=6).chain(symbol, date)
    assert not np.array_equal(a["bid"].to_numpy(), c["bid"].to_numpy()[: len(a)]) or len(a) != len(c)


@pytest.mark.parametrize(
    "symbol,date,model",
    [
        ("SPX", "2015-08-24", "sabr"),
        ("SPX", "2003-03-11", "sabr"),
        ("IXIC", "2017-05-02", "sabr"),
        ("GOOG", "2008-10-10", "sabr"),
        ("AAPL", "2012-09-19", "heston"),
    ],
)
def test_chain_reproduces_the_model_surface(symbol, date, model):
    ch = md.SyntheticMarket(seed=2, model=model).chain(symbol, date)
    g = ch[ch["bad"] == ""]
    assert len(g) > 300
    T = time_to_expiry(g["quote_date"], g["expiry"])
    call = (g["option_type"] == "C").to_numpy()
    mid = 0.5 * (g["bid"] + g["ask"]).to_numpy()
    iv = implied_vol_bsm(mid, g["underlying_price"], g["strike"], T, g["rate"], g["div_yield"], call)
    vega = bsm_greeks(
        g["underlying_price"], g["strike"], T, g["rate"], g["div_yield"], g["model_vol"], call, "vega"
    )
    err = np.abs(iv - g["model_vol"].to_numpy())
    # the mid is within half a tick of the model price, so the vol error is within (tick/2)/vega (first order)
    assert np.all(err <= 1.5 * md._tick(mid) / 2 / vega["vega"] + 1e-9)
    assert np.median(err) < 2e-3
    assert (g["bid"] > 0).all() and (g["bid"] < g["ask"]).all()
    assert set(g["option_type"]) == {"C", "P"} and (g["expiry"] > g["quote_date"]).all()
    assert md.is_session(g["expiry"]).all()


def test_chain_layout_expiries_and_strikes():
    ch = MKT.chain("SPX", "2015-03-30")
    exp = sorted(pd.unique(ch["expiry"]))
    assert (
        pd.Timestamp("2015-04-02") in exp
    )  # Good Friday 2015-04-03 is a holiday: the weekly moves to Thursday
    assert pd.Timestamp("2015-04-17") in exp and pd.Timestamp("2015-12-18") in exp  # monthly, quarterly
    assert 8 <= len(exp) <= 14
    s = ch["underlying_price"].iloc[0]
    assert ch["strike"].min() < 0.95 * s and ch["strike"].max() > 1.03 * s
    assert (ch["ts"] == pd.Timestamp("2015-03-30 20:00", tz="UTC")).all()  # the NYSE close, in UTC (EDT)
    assert (ch["bid_size"] >= 1).all() and ch["bid_size"].dtype.kind == "i"


def test_bad_quotes_are_flagged_and_exactly_those_are_rejected():
    n_bad = 0
    for d in MKT.dates("SPX", "2016-01-04", "2016-01-15"):
        ch = MKT.chain("SPX", d)
        res = md.validate_chain(ch)
        assert set(res.rejected["row"]) == set(np.flatnonzero(ch["bad"] != ""))
        n_bad += len(res.rejected)
        assert (res.rejected["reason"] != "").all()
    assert n_bad >= 10  # ~1% of ~10 x 600 rows


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="seed:"):
        md.SyntheticMarket(seed=-1)
    with pytest.raises(ValueError, match="model:"):
        md.SyntheticMarket(model="bs")
    with pytest.raises(ValueError, match="date: 2015-01-03 is not a trading day of the SPX history"):
        MKT.chain("SPX", "2015-01-03")
    with pytest.raises(ValueError, match="symbol: unknown synthetic underlying 'TSLA'"):
        MKT.chain("TSLA", "2015-01-05")
    with pytest.raises(ValueError, match="date: not a date"):
        MKT.chain("SPX", "yesterday-ish")


# --- file loaders ------------------------------------------------------------------------------------------


def _file_with_bad_rows() -> tuple[pd.DataFrame, dict[int, str], int]:
    good = md.validate_chain(MKT.chain("MSFT", "2011-06-01")).good.iloc[:40]
    f = md.to_file_layout(good).astype(str)
    bad = pd.concat([f.iloc[[5]]] * 11, ignore_index=True)
    cases = {
        0: ({"bid_eod": "3.0", "ask_eod": "2.5"}, "crossed market: bid_eod > ask_eod"),
        1: ({"bid_eod": "2.5", "ask_eod": "2.5"}, "locked market: bid_eod == ask_eod"),
        2: ({"bid_eod": "0"}, "bid_eod: zero or negative price"),
        3: ({"ask_eod": "-1"}, "ask_eod: zero or negative price"),
        4: ({"expiration": "2011-05-20"}, "expiration: before quote_date"),
        5: ({"strike": "0"}, "strike: must be > 0"),
        6: ({"strike": "twenty"}, "strike: not a number (got 'twenty')"),
        7: ({"quote_date": "2011-05-30"}, "quote_date: not a trading day"),  # Memorial Day
        8: ({"expiration": "June"}, "expiration: not a date (got 'June')"),
        9: ({"ask_size_eod": ""}, "ask_size_eod: missing"),
        10: ({"option_type": "Z"}, "option_type: must be C or P (got 'Z')"),
    }
    for i, (change, _) in cases.items():
        for c, v in change.items():
            bad.loc[i, c] = v
    raw = pd.concat([f, bad, f.iloc[[7]]], ignore_index=True)
    expect = {40 + i: why for i, (_, why) in cases.items()}
    expect[51] = "duplicate: repeats row 7"
    return raw, expect, 39  # row 5 conflicts with the crossed/locked/… copies of it; row 7's repeat goes


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
def test_bad_quote_rows_are_rejected_with_reasons_while_good_rows_load(db, tmp_path, fmt):
    raw, expect, n_good = _file_with_bad_rows()
    path = tmp_path / f"quotes.{fmt}"
    raw.to_parquet(path) if fmt == "parquet" else raw.to_csv(path, index=False)
    res = md.load_quotes_file(path)
    why = dict(zip(res.rejected["row"], res.rejected["reason"], strict=True))
    for row, reason in expect.items():
        assert reason in why[row], (row, why.get(row))
    assert "duplicate contract with different quotes" in why[5]
    assert len(res.good) == n_good and set(why) == set(expect) | {5}
    assert list(res.good.columns) == list(md.CHAIN_COLUMNS)
    with store.session_scope() as s:
        assert md.store_chain(s, res.good) == n_good
    with store.session_scope() as s:
        back = md.chain(s, "MSFT", "2011-06-01")
        assert len(back) == n_good
        assert s.scalar(sa.select(sa.func.count()).select_from(md.OptionQuote)) == n_good
        exp = res.good.sort_values(["expiry", "strike", "option_type"]).reset_index(drop=True)
        np.testing.assert_array_equal(back["ask"].to_numpy(), exp["ask"].to_numpy())
        np.testing.assert_array_equal(back["bid_size"].to_numpy(), exp["bid_size"].to_numpy())
        assert (back["ts"] == md.session_close("2011-06-01")).all()


def test_missing_columns_refuse_the_whole_file(tmp_path):
    raw, _, _ = _file_with_bad_rows()
    raw.drop(columns=["ask_eod", "expiration"]).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match=r"missing required columns \['expiration', 'ask_eod'\]"):
        md.load_quotes_file(tmp_path / "x.csv")


def test_nothing_is_half_written(db):
    ch = MKT.chain("SPX", "2016-02-10")
    assert (ch["bad"] != "").any()
    with pytest.raises(ValueError, match="invalid rows, nothing stored"):
        with store.session_scope() as s:
            md.store_chain(s, ch)
    good = md.validate_chain(ch).good
    with pytest.raises(RuntimeError, match="boom"):
        with store.session_scope() as s:
            md.store_chain(s, good)
            raise RuntimeError("boom")  # e.g. a later step of the same ingest fails
    with store.session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(md.OptionQuote)) == 0
        assert md.latest_quote_time(s, "SPX") is None


def test_store_read_replace_and_point_quotes(db):
    d1, d2 = "2016-02-10", "2016-02-11"
    g1, g2 = (md.validate_chain(MKT.chain("SPX", d)).good for d in (d1, d2))
    with store.session_scope() as s:
        md.store_chain(s, g1)
        md.store_chain(s, g2)
        md.store_chain(s, g1)  # loading the same snapshot again replaces it, no duplicates
        md.store_prices(s, MKT.prices("SPX", "2016-01-01", d2))
    with store.session_scope() as s:
        assert len(md.chain(s, "SPX", d1)) == len(g1) and len(md.chain(s, "SPX", d2)) == len(g2)
        assert md.chain(s, "SPX", "2016-02-12").empty
        assert md.latest_quote_time(s, "SPX") == md.session_close(d2).to_pydatetime()
        row = g1.iloc[len(g1) // 2]
        close1 = md.session_close(d1).to_pydatetime()
        q = md.quote(s, "SPX", row["expiry"], row["strike"], row["option_type"], as_of=close1)
        assert q["bid"] == row["bid"] and q["ask"] == row["ask"] and q["ask_size"] == row["ask_size"]
        assert q["ts"] == close1
        newest = md.quote(s, "SPX", row["expiry"], row["strike"], row["option_type"])
        on_d2 = g2[
            (g2["expiry"] == row["expiry"])
            & (g2["strike"] == row["strike"])
            & (g2["option_type"] == row["option_type"])
        ]
        assert newest["ts"] == md.session_close(d2).to_pydatetime() and newest["bid"] == on_d2["bid"].iloc[0]
        early = md.session_close(d1).to_pydatetime().replace(hour=12)
        assert md.quote(s, "SPX", row["expiry"], row["strike"], row["option_type"], as_of=early) is None
        with pytest.raises(ValueError, match="option_type:"):
            md.quote(s, "SPX", row["expiry"], row["strike"], "call")
        p = md.prices(s, "SPX")
        assert len(p) == len(MKT.dates("SPX", "2016-01-01", d2))
        assert p["close"].iloc[-1] == pytest.approx(md.history("SPX").loc[d2, "close"])
        u = s.scalars(sa.select(md.Underlying).where(md.Underlying.symbol == "SPX")).one()
        assert (u.kind, u.currency) == ("index", "USD")


def test_chain_indexes_exist(db):
    insp = sa.inspect(store.get_engine(db))
    idx = {i["name"]: i["column_names"] for i in insp.get_indexes("option_quotes")}
    assert idx["ix_option_quotes_chain"] == ["underlying", "quote_date", "expiry", "strike"]
    assert idx["ix_option_quotes_underlying_ts"] == ["underlying", "ts"]
    assert {i["name"] for i in insp.get_indexes("vol_surfaces")} >= {"ix_vol_surfaces_lookup"}


# --- the live feed over the bus ------------------------------------------------------------------------------

FEEDER = """
import sys
from aitrade import marketdata as md
n = md.run_feed(md.SyntheticMarket(seed=11).feed(["SPX", "AAPL"], "2012-06-01", interval_s=900, n_options=2),
                stream=sys.argv[1])
print(n)
"""


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_feed_ticks_reach_another_process_over_the_bus(backend, request, monkeypatch, tmp_path):
    if backend == "redis":
        monkeypatch.setenv("AITRADE_REDIS__URL", request.getfixturevalue("redis_url"))
    config.reload_settings()
    stream = f"test-ticks-{uuid.uuid4().hex[:10]}"
    try:
        ticks = md.subscribe_ticks(["AAPL"], last_id="$", block_ms=1500, stream=stream)
        r = subprocess.run(
            [sys.executable, "-c", FEEDER, stream],
            capture_output=True,
            text=True,
            env=dict(os.environ),
            cwd=tmp_path,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        got = list(ticks)
        expected = [
            t
            for t in MKT.feed(["SPX", "AAPL"], "2012-06-01", interval_s=900, n_options=2).ticks()
            if t["symbol"] == "AAPL"
        ]
        assert int(r.stdout) > len(got) > 0
        assert got == expected
        assert got[-1]["type"] in ("underlying", "quote")
        closes = [t["price"] for t in got if t["type"] == "underlying"]
        assert closes[-1] == pytest.approx(md.history("AAPL").loc["2012-06-01", "close"])
    finally:
        bus.get_bus().delete(stream)
