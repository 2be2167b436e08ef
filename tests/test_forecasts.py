"""The production volatility forecaster (aitrade.forecasts) on SQLite and PostgreSQL: on a market with a planted,
mean-reverting volatility the trained candidate beats the random walk on the holdout with confidence; it is
registered by system:trainer with its lineage and audited; the trainer cannot approve its promotion, two people
can; the day's forecasts come from the production version and a rerun replaces them; a model trained on another
feature set is refused by name; bad input names the field; and the `train` and `signals` job notebooks run the
same path through papermill."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from aitrade import audit, forecasts, marketdata, registry
from aitrade.auth import TRAINER, Principal
from aitrade.engine import execute_notebook
from aitrade.errors import Conflict, FieldError
from aitrade.registry import PromotionFourEyes
from aitrade.store import session_scope

ROOT = Path(__file__).resolve().parents[1]
ANN, BOB = (Principal.with_roles(n, ["quant"]) for n in ("ann", "bob"))
DAY = "2019-08-30"  # the last of 2,000 business days from 2012-01-02


def planted_closes(
    n: int = 8, T: int = 2000, phi: float = 0.97, sd: float = 0.5, seed: int = 0
) -> pd.DataFrame:
    "Closes whose daily vol is 20% x exp(x), x a Gaussian AR(1) (persistence `phi`, stationary sd `sd`)."
    rng = np.random.default_rng(seed)
    x = np.zeros((T, n))
    e = rng.standard_normal((T, n)) * sd * np.sqrt(1 - phi**2)
    for t in range(1, T):
        x[t] = phi * x[t - 1] + e[t]
    r = 0.2 * np.exp(x) / np.sqrt(252) * rng.standard_normal((T, n))
    days = pd.bdate_range("2012-01-02", periods=T)
    return pd.DataFrame(100 * np.exp(np.cumsum(r, axis=0)), index=days, columns=[f"U{i}" for i in range(n)])


def _store(closes: pd.DataFrame) -> None:
    with session_scope() as s:
        marketdata.ensure_underlyings(s, list(closes.columns))
        for u in closes:
            marketdata.store_prices(
                s,
                pd.DataFrame(
                    {"symbol": u, "date": closes.index, "close": closes[u].to_numpy(), "div_yield": 0.0}
                ),
            )


def _promote(version: int) -> None:
    with session_scope() as s:
        req = registry.request_promotion(
            s, ANN, forecasts.MODEL, version, "beats the random walk on the holdout"
        )
        with pytest.raises(PromotionFourEyes, match="not a person"):
            registry.approve_promotion(s, TRAINER, req.id, "my own model")
        with pytest.raises(PromotionFourEyes, match="requested"):
            registry.approve_promotion(s, ANN, req.id, "my own request")
        registry.approve_promotion(s, BOB, req.id, "holdout table checked")


def test_train_promote_and_forecast(db):
    closes = planted_closes()
    _store(closes)
    syms = list(closes.columns)
    with session_scope() as s:
        assert (
            forecasts.predict_day(s, DAY, syms) is None
        )  # no production version: nothing, and nothing stored
        assert forecasts.stored_forecasts(s, DAY).empty
        v, table = forecasts.train_candidate(s, TRAINER, DAY, syms, holdout_days=250, run_id="train-20190830")
        version, lineage = v.version, v.lineage
    # the planted mean reversion is there to find: the candidate beats the random walk with confidence
    for period in (
        "dev",
        "holdout",
    ):  # dev: purged out-of-fold forecasts; holdout: fitted on dev, scored once
        row = table.loc[(period, "vol_stack")]
        assert row["qlike_gain_lo"] > 0 and row["dm_p"] < 0.05, table
        assert table.attrs["spa_p"][period] < 0.05
    assert table.attrs["dev_end"] < table.attrs["holdout"][0]
    # lineage: feature set, data range and hash, the run, the holdout metrics, the stacking weights
    assert lineage["feature_set_hash"] == forecasts.forecast_features().hash
    assert (lineage["data_start"], lineage["data_end"]) == (
        str(closes.index[63].date()),
        DAY,
    )  # rv_63d: 64 closes
    assert len(lineage["data_sha256"]) == 64 and lineage["run_id"] == "train-20190830"
    assert lineage["trained_by"] == "system:trainer" and lineage["format"] == "pickle"
    assert lineage["metrics"]["holdout_vol_stack_qlike_gain_lo"] == pytest.approx(
        table.loc[("holdout", "vol_stack"), "qlike_gain_lo"]
    )
    assert lineage["metrics"]["spa_p_holdout"] == pytest.approx(table.attrs["spa_p"]["holdout"])
    assert set(lineage["params"]["weights"]) == {"random_walk", "har", "ridge", "lgbm"}
    assert lineage["params"]["underlyings"] == sorted(syms)
    with session_scope() as s:
        assert registry.aliases(s, forecasts.MODEL) == {"candidate": version}
        rec = audit.query(s, action="model.register")
        assert [(r.actor, json.loads(r.after_json)["version"]) for r in rec] == [("system:trainer", version)]
        # the same model on the same data registers nothing new (idempotent)
        again, _ = forecasts.train_candidate(s, TRAINER, DAY, syms, holdout_days=250, run_id="train-20190830")
        assert again.version == version
    _promote(version)
    with session_scope() as s:
        f = forecasts.predict_day(s, DAY, syms + ["NOPE"], run_id="daily-1")
    assert sorted(f["underlying"]) == syms and f.attrs["missing"] == ["NOPE"]
    assert (f["version"] == version).all() and f.attrs["target"] == "rv_fwd_21d"
    assert f.attrs["elapsed_ms"] > 0
    # the forecast follows the planted vol: high where the last month's realised vol is high
    rv21 = np.sqrt((np.log(closes).diff().iloc[-21:] ** 2).sum() * 252 / 21)
    fv = f.set_index("underlying")["value"].reindex(syms)
    assert np.corrcoef(fv, rv21)[0, 1] > 0.8 and ((fv > 0.03) & (fv < 2.0)).all()
    with session_scope() as s:
        back = forecasts.stored_forecasts(s, DAY)
        assert back.attrs["versions"] == [version]
        np.testing.assert_allclose(back.reindex(syms).to_numpy(), fv.to_numpy(), rtol=0, atol=1e-12)
        rows = s.scalars(sa.select(forecasts.Forecast)).all()
        assert {(r.run_id, r.feature_set_hash) for r in rows} == {("daily-1", lineage["feature_set_hash"])}
    with session_scope() as s:  # a rerun of the day replaces its rows
        forecasts.predict_day(s, DAY, syms[:3], run_id="daily-2")
    with session_scope() as s:
        rows = s.scalars(sa.select(forecasts.Forecast)).all()
        assert sorted(r.underlying for r in rows) == syms[:3] and {r.run_id for r in rows} == {"daily-2"}


def test_a_model_of_another_feature_set_is_refused(db):
    _store(planted_closes(n=2, T=300))
    with session_scope() as s:
        lineage = dict(feature_set_hash="0" * 64, data_start="2012-01-02", data_end="2012-12-31",
                       data_sha256="d" * 64, format="pickle")  # fmt: skip
        v = registry.register(s, TRAINER, forecasts.MODEL, pickle.dumps(forecasts.default_model()), lineage)
    _promote(v.version)
    with (
        session_scope() as s,
        pytest.raises(Conflict, match="trained on feature set 0{64}, this code computes"),
    ):
        forecasts.predict_day(s, "2013-02-22", ["U0", "U1"])
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(forecasts.Forecast)) == 0


def test_bad_input_names_the_field(db):
    with pytest.raises(FieldError, match="horizon"):
        forecasts.forward_realised_vol(planted_closes(n=1, T=50), horizon=0)
    with pytest.raises(FieldError, match="close"):
        forecasts.forward_realised_vol(pd.DataFrame({"A": [1.0, 2.0]}))
    _store(planted_closes(n=2, T=300))
    with session_scope() as s:
        with pytest.raises(FieldError, match="underlyings"):
            forecasts.closes(s, [], DAY)
        with pytest.raises(FieldError, match="as_of"):
            forecasts.train_candidate(s, TRAINER, "not a day", ["U0"])
        with pytest.raises(
            FieldError, match="X: 216 days; at least 791"
        ):  # too short a history for a holdout
            forecasts.train_candidate(s, TRAINER, "2013-02-22", ["U0", "U1"])
        with pytest.raises(FieldError, match="underlyings"):
            forecasts.train_candidate(s, TRAINER, "2013-02-22", ["NOPE"])
        with pytest.raises(Exception, match="models:promote"):
            forecasts.train_candidate(s, Principal.with_roles("tom", ["trader"]), "2013-02-22", ["U0"])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_train_and_signals_jobs_run_the_same_path(db, tmp_path):
    closes = planted_closes(n=3, T=1200)
    _store(closes)
    day, syms = str(closes.index[-1].date()), list(closes.columns)
    common = dict(engine="papermill", cwd=str(ROOT / "jobs"))
    out = execute_notebook(ROOT / "jobs/train.ipynb", tmp_path / "train.ipynb",
                           {"as_of": day, "underlyings": syms, "holdout_days": 120}, **common)  # fmt: skip
    text = json.dumps([c["outputs"] for c in out["cells"] if c["cell_type"] == "code"])
    assert f"{forecasts.MODEL} version 1 is candidate" in text
    with session_scope() as s:
        assert registry.aliases(s, forecasts.MODEL) == {"candidate": 1}
        assert registry.get_version(s, forecasts.MODEL, 1).run_id == f"train-{day.replace('-', '')}"
    params = {"as_of": day, "underlyings": syms, "window": 250, "n_surr": 20}
    out = execute_notebook(ROOT / "jobs/signals.ipynb", tmp_path / "s1.ipynb", params, **common)
    assert "is production, none stored" in json.dumps(out["cells"][-1]["outputs"])
    _promote(1)
    out = execute_notebook(ROOT / "jobs/signals.ipynb", tmp_path / "s2.ipynb", params, **common)
    assert "version 1, 3 underlying(s)" in json.dumps(out["cells"][-1]["outputs"])
    with session_scope() as s:
        assert sorted(forecasts.stored_forecasts(s, day).index) == syms
