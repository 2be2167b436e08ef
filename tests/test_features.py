"""Point-in-time features: values by hand on tiny frames, the causality check (it catches a planted one-day
look-ahead, a centred window and a full-sample normalisation, and passes the standard set), hash stability
(also across processes), the inputs read from a store (surfaces, `known_at`, the lead/lag graph or its absence),
storage of sets and values on SQLite and PostgreSQL, and drift: PSI by hand, no drift on one distribution,
drift on a shifted one with the alert in the audit chain and at a webhook."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from aitrade import audit, store
from aitrade import features as ft
from aitrade import features_drift as fd
from aitrade.errors import FieldError, NotFound
from aitrade.marketdata import ensure_underlyings, store_prices
from aitrade.surfaces import SurfaceFit, store_surface

DAYS = pd.bdate_range("2024-01-02", periods=6)


def tiny() -> ft.FeatureData:
    "Closes of A by hand (B is twice A) and a 20% implied vol rising to 25% on the last day."
    a = [100.0, 110.0, 99.0, 99.0, 103.95, 100.0]
    return ft.FeatureData(
        {
            "close": pd.DataFrame({"A": a, "B": [2 * x for x in a]}, index=DAYS),
            "iv_atm_30d": pd.DataFrame({"A": [0.2] * 5 + [0.25], "B": [0.3] * 6}, index=DAYS),
        }
    )


def random_panels(n=300, symbols=("A", "B", "C"), seed=1) -> dict[str, pd.DataFrame]:
    "Every standard input as a random daily panel; the closes a random walk."
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range("2020-01-01", periods=n)
    p = {
        k: pd.DataFrame(rng.normal(size=(n, len(symbols))), index=idx, columns=list(symbols))
        for k in ft.INPUTS
    }
    p["close"] = 100 * np.exp(p["close"].cumsum() * 0.01)
    return p


# --- values by hand --------------------------------------------------------------------------------------------


def test_returns_vol_and_premium_by_hand():
    std = ft.standard_features(windows=(2,), vrp_window=2, graph=False)
    f = ft.build_features(tiny(), std.select(["ret_1d", "ret_2d", "rv_2d", "vrp_2d", "iv_atm_30d"]))
    a = f.xs("A", level="underlying")
    r = np.log([1.1, 0.9, 1.0, 1.05, 100 / 103.95])
    np.testing.assert_allclose(a["ret_1d"].to_numpy()[1:], r, rtol=0, atol=1e-15)
    assert np.isnan(a["ret_1d"].iloc[0])
    assert a["ret_2d"].iloc[2] == pytest.approx(math.log(0.99), abs=1e-15)
    assert a["ret_2d"].iloc[3] == pytest.approx(math.log(0.9), abs=1e-15)
    rv = math.sqrt(252 / 2 * (r[3] ** 2 + r[4] ** 2))  # the last two returns, zero mean, annualised
    assert a["rv_2d"].iloc[5] == pytest.approx(rv, rel=1e-13)
    assert a["vrp_2d"].iloc[5] == pytest.approx(0.25**2 - rv**2, rel=1e-13)  # variance, not vol
    assert np.isnan(a["rv_2d"].iloc[:2]).all()  # fewer than two returns
    # B = 2A: the same returns, vols and (with its own implied vol) premium
    b = f.xs("B", level="underlying")
    np.testing.assert_allclose(b["rv_2d"], a["rv_2d"], rtol=1e-13)
    assert b["vrp_2d"].iloc[5] == pytest.approx(0.3**2 - rv**2, rel=1e-13)


def test_changes_and_differences_by_hand():
    std = ft.standard_features(graph=False)
    data = ft.FeatureData(
        {
            "iv_atm_30d": pd.DataFrame({"A": [0.20, 0.22, np.nan, 0.25]}, index=DAYS[:4]),
            "iv_atm_91d": pd.DataFrame({"A": [0.21, 0.22, 0.23, 0.23]}, index=DAYS[:4]),
            "iv_90_30d": pd.DataFrame({"A": [0.25, 0.26, 0.27, 0.28]}, index=DAYS[:4]),
            "iv_110_30d": pd.DataFrame({"A": [0.18, 0.18, 0.18, 0.19]}, index=DAYS[:4]),
            "sabr_alpha": pd.DataFrame({"A": [0.2, 0.21, 0.19, 0.2]}, index=DAYS[:4]),
        }
    )
    f = ft.build_features(data, std.select(["term_slope", "skew_30d", "d_sabr_alpha_30d"]))
    a = f.xs("A", level="underlying")
    np.testing.assert_allclose(a["term_slope"], [0.01, 0.0, np.nan, -0.02], atol=1e-15)
    np.testing.assert_allclose(a["skew_30d"], [0.07, 0.08, 0.09, 0.09], atol=1e-15)
    np.testing.assert_allclose(a["d_sabr_alpha_30d"], [np.nan, 0.01, -0.02, 0.01], atol=1e-15)


def flat_fit(symbol, day, vols=(0.2, 0.3), Ts=(0.05, 0.3), rho=0.0, heston=True, status="ok", error=None):
    "A stored-surface stand-in: flat SABR smiles (nu = 0) at `vols` for expiries `Ts`."
    sl = pd.DataFrame(
        dict(expiry=[pd.Timestamp(day) + pd.Timedelta(days=round(T * 365)) for T in Ts], T=list(Ts),
             forward=[100.0] * len(Ts), discount=[1.0] * len(Ts), alpha=list(vols), beta=[1.0] * len(Ts),
             rho=[rho] * len(Ts), nu=[0.0] * len(Ts), rmse=[0.0] * len(Ts), n_quotes=[10] * len(Ts),
             status=["ok"] * len(Ts))
    )  # fmt: skip
    h = (
        dict(v0=0.04, kappa=2.0, theta=0.05, sigma=0.5, rho=-0.7, rmse=0.001, success=True)
        if heston
        else None
    )
    return SurfaceFit(symbol, pd.Timestamp(day), pd.Timestamp(day, tz="UTC").to_pydatetime(), status, error,
                      spot=100.0, n_quotes=20, rmse=0.0, slices=sl, heston=h)  # fmt: skip


def test_surface_inputs_by_hand():
    si = ft.surface_inputs(flat_fit("A", DAYS[0]).to_params(), DAYS[0])
    x = (30 / 365 - 0.05) / 0.25  # between the expiries: total variance linear in T
    assert si["iv_atm_30d"] == pytest.approx(
        math.sqrt(((1 - x) * 0.04 * 0.05 + x * 0.09 * 0.3) / (30 / 365)), rel=1e-12
    )
    x91 = (91 / 365 - 0.05) / 0.25
    assert si["iv_atm_91d"] == pytest.approx(
        math.sqrt(((1 - x91) * 0.04 * 0.05 + x91 * 0.09 * 0.3) / (91 / 365)), rel=1e-12
    )
    far = ft.surface_inputs(flat_fit("A", DAYS[0], Ts=(0.02, 0.05)).to_params(), DAYS[0])
    assert far["iv_atm_91d"] == pytest.approx(0.3, rel=1e-12)  # past the last expiry: flat
    assert si["iv_90_30d"] == pytest.approx(si["iv_110_30d"], abs=1e-14)  # flat smiles: no skew
    assert si["sabr_alpha"] == pytest.approx(0.2 + 0.1 * x, rel=1e-12)
    assert (si["heston_v0"], si["heston_sigma"], si["heston_rho"]) == (0.04, 0.5, -0.7)
    # a failed slice is left out; a Heston failure drops the Heston inputs only
    p = flat_fit("A", DAYS[0]).to_params()
    p["slices"]["status"] = ["failed", "ok"]
    si = ft.surface_inputs(p, DAYS[0], error="Heston failed: max iterations")
    assert si["iv_atm_30d"] == pytest.approx(0.3, rel=1e-12) and math.isnan(si["heston_v0"])


def test_skew_sign_on_a_sabr_smile():
    "With rho < 0 and nu > 0 the 90% strike's vol is above the 110% strike's: a positive skew."
    fit = flat_fit("A", DAYS[0], rho=-0.6)
    fit.slices["nu"] = 1.0
    si = ft.surface_inputs(fit.to_params(), DAYS[0])
    assert si["iv_90_30d"] - si["iv_110_30d"] > 0.01


# --- causality ------------------------------------------------------------------------------------------------


def _tomorrow(data):
    return np.log(data["close"]).diff().shift(-1)


def _centred(data):
    return np.log(data["close"]).diff().rolling(5, center=True).mean()


def _zscore_full_sample(data):
    r = np.log(data["close"]).diff()
    return (r - r.mean()) / r.std()


def test_check_causal_catches_planted_look_aheads_and_passes_the_standard_set():
    p = random_panels()
    std = ft.standard_features()
    planted = [ft.Feature("peek", _tomorrow, window=2), ft.Feature("centred", _centred, window=5),
               ft.Feature("zscore", _zscore_full_sample, window=300)]  # fmt: skip
    rep = ft.check_causal(ft.FeatureSet([*std, *planted]), p, n=10)
    assert rep.attrs["causal"] is False
    assert not rep.loc[["peek", "centred", "zscore"], "causal"].any()
    assert rep.loc["peek", "violations"] == rep.loc["peek", "checked"] == 10 * 3
    assert rep.drop(["peek", "centred", "zscore"])["causal"].all()
    assert (rep["checked"] == 30).all()
    # the standard set alone passes, on every day but the last
    assert ft.check_causal(std, p, dates=p["close"].index[:-1:7]).attrs["causal"] is True


def test_check_causal_catches_an_understated_window():
    p = random_panels(n=120)
    sets = ft.FeatureSet([
        ft.Feature("rv_21d", ft.standard_features()["rv_21d"].fn, window=21, params=dict(window=21)),  # needs 22
        ft.Feature("ok_21d", ft.standard_features()["rv_21d"].fn, window=22, params=dict(window=21)),
    ])  # fmt: skip
    rep = ft.check_causal(sets, p)
    assert rep["causal"].all() and rep.attrs["causal"]
    assert rep["window_ok"].tolist() == [False, True] and not rep.attrs["window_ok"]
    assert ft.check_causal(ft.standard_features(), p).attrs["window_ok"]


def test_build_features_never_reads_past_end():
    p = random_panels(n=40)
    leaky = ft.FeatureSet([ft.standard_features()["ret_1d"], ft.Feature("peek", _tomorrow, window=2)])
    end = p["close"].index[20]
    f = ft.build_features(p, leaky, end=end)
    assert f.loc[end, "peek"].isna().all() and f.loc[end, "ret_1d"].notna().all()  # tomorrow is cut off
    assert f.index.get_level_values("date").max() <= end
    full = ft.build_features(p, leaky)
    assert full.loc[(end, "A"), "peek"] == pytest.approx(
        math.log(p["close"]["A"].iloc[21] / p["close"]["A"].iloc[20])
    )


# --- hash ------------------------------------------------------------------------------------------------------


def _ret(data, window):
    return np.log(data["close"]).diff(window)


def _ret_edited(data, window):
    return np.log(data["close"]).diff(window) * 1.0


def test_hash_is_stable_and_changes_with_each_part_of_a_definition():
    base = ft.FeatureSet([ft.Feature("r", _ret, window=6, params=dict(window=5))])
    same = ft.FeatureSet([ft.Feature("r", _ret, window=6, params=dict(window=5))], name="another label")
    assert base.hash == same.hash and len(base.hash) == 64
    variants = [
        ft.Feature("r", _ret, window=6, params=dict(window=6)),  # a parameter
        ft.Feature("r", _ret, window=7, params=dict(window=5)),  # the window
        ft.Feature("r", _ret, window=6, params=dict(window=5), version=2),  # the version
        ft.Feature("r", _ret_edited, window=6, params=dict(window=5)),  # the source
        ft.Feature("r", _ret, window=6, params=dict(window=5), inputs=("close", "x")),  # the inputs
        ft.Feature("r2", _ret, window=6, params=dict(window=5)),  # the name
    ]
    hashes = {ft.FeatureSet([v]).hash for v in variants}
    assert len(hashes) == len(variants) and base.hash not in hashes
    std = ft.standard_features()
    assert ft.FeatureSet(reversed(std.features)).hash == std.hash  # order is not identity


def test_hash_is_the_same_in_another_process():
    code = "from aitrade.features import standard_features as s; print(s().hash)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ft.standard_features().hash


def test_bad_definitions_are_refused_by_field():
    with pytest.raises(FieldError, match="name: lower case"):
        ft.Feature("Bad-Name", _ret)
    with pytest.raises(FieldError, match="version: r: a whole number"):
        ft.Feature("r", _ret, version=0)
    with pytest.raises(FieldError, match="params: r: not JSON"):
        ft.Feature("r", _ret, params=dict(x=object()))
    with pytest.raises(FieldError, match="fn: r: a function"):
        ft.Feature("r", 3)
    with pytest.raises(FieldError, match="features: 'r' is declared twice"):
        ft.FeatureSet([ft.Feature("r", _ret), ft.Feature("r", _ret)])
    with pytest.raises(
        FieldError, match="inputs: feature iv_atm_30d reads 'iv_atm_30d', which is not in the data"
    ):
        ft.build_features(
            {"close": random_panels(n=5)["close"]}, ft.standard_features().select(["iv_atm_30d"])
        )
    with pytest.raises(FieldError, match="end: .* is before start"):
        ft.build_features(random_panels(n=5), ft.standard_features(), "2020-01-06", "2020-01-02")
    with pytest.raises(FieldError, match="source: a Session"):
        ft.build_features([1, 2], ft.standard_features())


# --- from the store, and storage -------------------------------------------------------------------------------


def fill(s, days, symbols=("A", "B")):
    "Closes for `days` and flat-smile surfaces for the last three."
    ensure_underlyings(s, symbols)
    for i, u in enumerate(symbols):
        px = (
            100
            * (1 + i)
            * np.exp(np.cumsum(np.r_[0.0, np.random.default_rng(i).normal(0, 0.01, len(days) - 1)]))
        )
        store_prices(s, pd.DataFrame(dict(symbol=u, date=days, close=px, div_yield=0.0)))
        for d in days[-3:]:
            store_surface(s, flat_fit(u, d, vols=(0.2 + 0.01 * i, 0.3)))


def test_inputs_from_the_store(db):
    days = pd.bdate_range("2024-01-02", periods=80)
    with store.session_scope() as s:
        fill(s, days)
    std = ft.standard_features()
    with store.session_scope() as s:
        f = ft.build_features(s, std, days[-5], days[-1])
        data = ft.load_data(s, days[-5], days[-1], lookback=std.window)
    assert f.index.get_level_values("date").min() == days[-5]
    assert data.dates[0] <= days[-5 - std.window]  # enough history for the 63-day window
    a = f.xs("A", level="underlying")
    assert a["iv_atm_30d"].notna().tolist() == [False, False, True, True, True]
    x = (30 / 365 - 0.05) / 0.25
    assert a["iv_atm_30d"].iloc[-1] == pytest.approx(
        math.sqrt(((1 - x) * 0.04 * 0.05 + x * 0.09 * 0.3) / (30 / 365))
    )
    assert a["d_sabr_alpha_30d"].notna().sum() == 2 and a["d_sabr_alpha_30d"].iloc[-1] == pytest.approx(
        0.0, abs=1e-15
    )
    assert a["heston_kappa"].iloc[-1] == 2.0 and a["rv_63d"].notna().all()
    assert f[["ll_in_degree", "ll_te_out"]].isna().all().all()  # no lead/lag graph stored: NaN
    # point in time from the store: a build ending on day t equals a longer build's rows up to t
    with store.session_scope() as s:
        short = ft.build_features(s, std, days[-5], days[-2])
    pd.testing.assert_frame_equal(short, f.loc[: days[-2]], check_freq=False)
    # the same as building from the loaded inputs
    pd.testing.assert_frame_equal(f, ft.build_features(data, std, days[-5], days[-1]), check_freq=False)
    # a recalibration stored later replaces the day's surface, unless the build is as known before it
    before = pd.Timestamp.now(tz="UTC").to_pydatetime()
    with store.session_scope() as s:
        store_surface(s, flat_fit("A", days[-1], vols=(0.4, 0.4)))
    with store.session_scope() as s:
        now = ft.build_features(s, std, days[-1], days[-1])
        then = ft.build_features(s, std, days[-1], days[-1], known_at=before)
    assert now.loc[(days[-1], "A"), "iv_atm_30d"] == pytest.approx(0.4)
    assert then.loc[(days[-1], "A"), "iv_atm_30d"] == pytest.approx(a["iv_atm_30d"].iloc[-1])


def test_lead_lag_graph_statistics(db):
    from aitrade.signals import store_graph

    days = pd.bdate_range("2024-01-02", periods=30)
    edges = pd.DataFrame(dict(source=["A", "A", "C", "A"], target=["B", "B", "B", "C"], lag=[1, 2, 1, 1],
                              te=[0.1, 0.05, 0.02, 0.03], p_value=[0.001] * 4, q_value=[0.01] * 4))  # fmt: skip
    with store.session_scope() as s:
        fill(s, days, ("A", "B", "C"))
        store_graph(s, days[-3], edges, method="gaussian", window=250)
    g = ft.FeatureSet(
        [
            ft.Feature(x, ft.standard_features()[x].fn, inputs=(x,), params=dict(input=x))
            for x in ft.GRAPH_INPUTS
        ]
    )
    with store.session_scope() as s:
        f = ft.build_features(s, g, days[-5], days[-1])
        stale = ft.build_features(s, g, days[-1], days[-1], graph_max_age_days=1)
    assert days[-4] not in f.index.get_level_values("date")  # before the first graph: all NaN, no row
    last = f.loc[days[-1]]  # the graph of days[-3], still the newest
    assert last.loc["B", "ll_in_degree"] == 2 and last.loc["B", "ll_out_degree"] == 0
    assert last.loc["B", "ll_te_in"] == pytest.approx(0.17)  # 0.1 + 0.05 (two lags) + 0.02
    assert last.loc["A", "ll_out_degree"] == 2 and last.loc["A", "ll_te_out"] == pytest.approx(0.18)
    assert last.loc["C", "ll_in_degree"] == 1 and last.loc["C", "ll_out_degree"] == 1
    assert stale[["ll_in_degree"]].isna().all().all()  # older than a day: not used


def test_store_and_load_round_trip(db):
    p = random_panels(n=30)
    std = ft.standard_features(graph=False)
    f = ft.build_features(p, std)
    with store.session_scope() as s:
        n = ft.store_features(s, std, f)
        assert ft.register_feature_set(s, std) == std.hash  # a second registration is a no-op
    assert n == f.size
    with store.session_scope() as s:
        back = ft.load_features(s, std.hash)
        rec = ft.stored_feature_set(s, std.hash)
        assert s.scalar(sa.select(sa.func.count()).select_from(ft.FeatureSetRecord)) == 1
    pd.testing.assert_frame_equal(back, f, check_freq=False)
    assert back.attrs["feature_set"] == std.hash
    assert (
        rec["definitions"] == std.definitions()
        and rec["order"] == list(std.names)
        and rec["name"] == "standard"
    )
    # a day stored again replaces that day only
    day = f.index.get_level_values("date")[-1]
    again = f.loc[[day]] + 1.0
    again.attrs["feature_set"] = std.hash
    with store.session_scope() as s:
        ft.store_features(s, std, again)
    with store.session_scope() as s:
        back = ft.load_features(s, std, start=day - pd.Timedelta(days=3))
        older = ft.load_features(s, std, end=day - pd.Timedelta(days=1))
    pd.testing.assert_frame_equal(back.loc[[day]], again, check_freq=False)
    pd.testing.assert_frame_equal(older, f.loc[: day - pd.Timedelta(days=1)], check_freq=False)
    with store.session_scope() as s, pytest.raises(NotFound):
        ft.load_features(s, "0" * 64)


def test_a_refused_frame_writes_nothing(db):
    p = random_panels(n=10)
    std = ft.standard_features(graph=False)
    f = ft.build_features(p, std)
    bad = f.copy()
    bad.iloc[-1, 0] = np.inf
    with store.session_scope() as s, pytest.raises(FieldError, match="frame: ret_1d: not finite"):
        ft.store_features(s, std, bad)
    with pytest.raises(FieldError, match="frame: the columns must be the set's features"):
        with store.session_scope() as s:
            ft.store_features(s, std, f.drop(columns="rv_5d"))
    with pytest.raises(FieldError, match="frame: built by feature set"):
        with store.session_scope() as s:
            ft.store_features(s, ft.standard_features(windows=(5,), graph=False), f)
    with store.session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ft.FeatureValue)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(ft.FeatureSetRecord)) == 0


def test_the_database_refuses_a_duplicate_value(db):
    with pytest.raises(sa.exc.IntegrityError), store.session_scope() as s:
        ft.register_feature_set(s, ft.standard_features())
        h = ft.standard_features().hash
        now = pd.Timestamp.now(tz="UTC").to_pydatetime()
        for _ in range(2):
            s.add(ft.FeatureValue(set_hash=h, date=DAYS[0].date(), underlying="A", feature="ret_1d", value=0.1,
                                  created_at=now))  # fmt: skip
            s.flush()


# --- drift -----------------------------------------------------------------------------------------------------


def test_psi_by_hand():
    ref = np.repeat([0.5, 1.5, 2.5, 3.5], 25)
    cur = np.repeat([0.5, 1.5, 2.5, 3.5], [40, 30, 20, 10])
    by_hand = 0.15 * math.log(1.6) + 0.05 * math.log(1.2) - 0.05 * math.log(0.8) - 0.15 * math.log(0.4)
    assert fd.psi(ref, cur, bins=4) == pytest.approx(by_hand, rel=1e-12)
    # an empty bin is floored at eps = 1e-4
    cur2 = np.repeat([0.5, 1.5, 2.5], [50, 30, 20])
    exp = (
        0.25 * math.log(2)
        + 0.05 * math.log(1.2)
        - 0.05 * math.log(0.8)
        + (1e-4 - 0.25) * math.log(1e-4 / 0.25)
    )
    assert fd.psi(ref, cur2, bins=4) == pytest.approx(exp, rel=1e-12)


def frames(shift=0.0, n=1000, seed=0):
    rng = np.random.default_rng(seed)
    cols = ["x", "y", "z"]
    ref = pd.DataFrame(rng.normal(size=(n, 3)), columns=cols)
    cur = pd.DataFrame(rng.normal(size=(n, 3)), columns=cols)
    cur["y"] += shift
    return ref, cur


class Hook(BaseHTTPRequestHandler):
    got: list = []

    def do_POST(self):
        Hook.got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def webhook():
    Hook.got = []
    srv = HTTPServer(("127.0.0.1", 0), Hook)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}/hook", Hook.got
    srv.shutdown()
    srv.server_close()


def test_no_drift_on_one_distribution(db, webhook):
    url, got = webhook
    rep = fd.drift_report(*frames())
    assert (rep["psi"] < fd.PSI_MODERATE).all() and not rep["drifted"].any()
    assert (rep["level"] == "none").all() and (rep["ks_p"] > 0.001).all()
    with store.session_scope() as s:
        assert fd.drift_alert(rep, s, "h" * 64, [url]) is None
        assert audit.query(s, action="features.drift") == []
    assert got == []


def test_drift_on_a_shifted_distribution_raises_the_alert(db, webhook, monkeypatch):
    from aitrade.jobs.spec import AlertSpec

    url, got = webhook
    rep = fd.drift_report(*frames(shift=1.0))
    by = rep.set_index("feature")
    assert (
        by.loc["y", "psi"] > fd.PSI_SIGNIFICANT
        and by.loc["y", "drifted"]
        and by.loc["y", "level"] == "significant"
    )
    assert by.loc["y", "ks_p"] < 1e-10
    assert not by.loc[["x", "z"], "drifted"].any()
    monkeypatch.setenv("DRIFT_HOOK", url)
    monkeypatch.delenv("UNSET_HOOK", raising=False)
    targets = [AlertSpec(url_env="DRIFT_HOOK"), AlertSpec(url_env="UNSET_HOOK"), "http://127.0.0.1:9/refused"]
    with store.session_scope() as s:
        p = fd.drift_alert(rep, s, "h" * 64, targets, window={"reference": ["2020-01-01", "2020-12-31"],
                                                               "current": ["2021-01-01", "2021-03-31"]})  # fmt: skip
    assert p["delivered"] == 1  # the unset variable and the refused port do not fail the caller
    assert [g["aitrade"]["event"] for g in got] == ["drift"] and list(got[0]["aitrade"]["features"]) == ["y"]
    assert "`y`: PSI" in got[0]["text"]
    with store.session_scope() as s:
        recs = audit.query(s, action="features.drift")
        assert [(r.actor, r.target) for r in recs] == [("system:features", "feature_set:" + "h" * 64)]
        after = json.loads(recs[0].after_json)
        assert after["features"]["y"]["psi"] == pytest.approx(by.loc["y", "psi"])
        assert audit.verify(s).ok


def test_drift_report_refusals_and_small_samples():
    ref, cur = frames()
    with pytest.raises(FieldError, match="current: has no feature 'z'"):
        fd.drift_report(ref, cur[["x", "y"]])
    with pytest.raises(FieldError, match="threshold"):
        fd.drift_report(ref, cur, threshold=-1)
    rep = fd.drift_report(ref.head(10), cur)
    assert (rep["level"] == "insufficient").all() and rep["psi"].isna().all() and not rep["drifted"].any()


def test_drift_figure():
    import holoviews as hv

    rep = fd.drift_report(*frames(shift=1.0))
    fig = fd.drift_figure(rep)
    assert isinstance(fig, hv.Overlay)
    assert [type(e).__name__ for e in fig] == ["Bars", "HLine", "HLine"]
    assert sorted(e.data for e in fig if type(e).__name__ == "HLine") == [0.1, 0.25]
    bars = next(iter(fig))
    assert bars.data.set_index("feature")["level"].to_dict() == rep.set_index("feature")["level"].to_dict()
