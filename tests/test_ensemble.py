"Ensemble: purged walk-forward folds, members, combination rules, pickling, bad input."

import pickle

import numpy as np
import pandas as pd
import pytest

from aitrade.errors import FieldError
from aitrade.signals.ensemble import (
    Ensemble,
    Har,
    Lgbm,
    Linear,
    Signal,
    Zero,
    out_of_fold,
    purged_walk_forward,
)


def _frame(n_days=300, names="abcdef", beta=0.3, seed=0):
    days = pd.bdate_range("2022-01-03", periods=n_days)
    idx = pd.MultiIndex.from_product([days, list(names)], names=["date", "underlying"])
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"r1": rng.normal(size=len(idx)), "noise": rng.normal(size=len(idx))}, index=idx)
    y = pd.Series(beta * X["r1"].to_numpy() + rng.normal(size=len(idx)), index=idx)
    y[idx.get_level_values(0) == days[-1]] = np.nan
    return X, y


@pytest.mark.parametrize("purge,embargo", [(0, 0), (1, 0), (3, 5), (10, 2)])
def test_purge_embargo(purge, embargo):
    days = pd.bdate_range("2020-01-01", periods=400)
    folds = purged_walk_forward(days, n_splits=5, test_size=30, purge=purge, embargo=embargo, min_train=100)
    pos = {d: i for i, d in enumerate(days)}
    tests = [set(te) for _, te in folds]
    for k, (tr, te) in enumerate(folds):
        a = pos[te.min()]
        assert max(pos[d] for d in tr) < a - purge  # nothing from the future, purge respected
        for j in range(k):  # no training day within the embargo after an earlier test block
            end = pos[folds[j][1].max()]
            assert not any(end < pos[d] <= end + embargo for d in tr)
        assert not set(tr) & set(te)
        if k:
            assert folds[k - 1][1].max() < te.min()
    assert sum(len(t) for t in tests) == 150


def test_field_errors():
    with pytest.raises(FieldError):
        purged_walk_forward(pd.bdate_range("2020-01-01", periods=50), n_splits=5, test_size=20)
    with pytest.raises(FieldError):
        purged_walk_forward(pd.bdate_range("2020-01-01", periods=500), purge=-1)
    with pytest.raises(FieldError):
        Ensemble([Zero()], rule="median")
    with pytest.raises(FieldError):
        Ensemble([Zero(), Zero()])
    X, y = _frame(100)
    with pytest.raises(FieldError):
        Zero().fit(X.reset_index(drop=True), y)
    with pytest.raises(FieldError):
        Signal("missing").fit(X, y)


def test_oof_rows_only_test_days():
    X, y = _frame()
    folds = purged_walk_forward(X.index.get_level_values(0), 4, 40, 1, 2, 60)
    P = out_of_fold([Zero(), Signal("r1")], X, y, folds)
    assert set(P.index.get_level_values(0)) == set(np.concatenate([te for _, te in folds]))
    assert list(P.columns) == ["zero", "momentum"]


@pytest.mark.parametrize("rule", ["stack", "rank", "vote"])
def test_ensemble_beats_zero_and_pickles(rule):
    X, y = _frame(seed=2)
    cut = X.index.get_level_values(0) < pd.Timestamp("2022-10-01")
    ens = Ensemble([Zero(), Signal("r1"), Linear(), Lgbm(n_estimators=50)], rule=rule, test_size=25).fit(
        X[cut], y[cut]
    )
    assert (ens.weights >= 0).all() and 0.7 < ens.weights.sum() < 1.3
    p = ens.predict(X[~cut])
    ok = y[~cut].notna()
    mse = float(((y[~cut][ok] - p[ok]) ** 2).mean())
    assert mse < float((y[~cut][ok] ** 2).mean())
    q = pickle.loads(pickle.dumps(ens)).predict(X[~cut])
    assert np.allclose(q, p) and q.name == f"ens_{rule}"


def test_lgbm_deterministic_and_har():
    X, y = _frame(150)
    a = Lgbm(seed=3, n_estimators=30).fit(X, y).predict(X)
    b = Lgbm(seed=3, n_estimators=30).fit(X, y).predict(X)
    assert a.equals(b)
    h = Har(["r1", "noise"]).fit(X, y)
    assert h.name == "har" and h.predict(X).corr(y) > 0.2


def test_evaluate_planted_signal_and_no_leak():
    from aitrade.signals.evaluation import evaluate, report_markdown

    X, y = _frame(400, beta=0.3, seed=5)
    dev_end, ho = pd.Timestamp("2022-12-30"), pd.Timestamp("2023-01-05")
    models = [Zero(), Signal("r1"), Linear()]
    t = evaluate(X, y, models, dev_end, ho, n_boot=200)
    r = t.loc["holdout"]
    assert r.loc["momentum", "dm_p"] < 0.05 and r.loc["momentum", "r2_diff_lo"] > 0
    assert r.loc["ridge", "r2"] > 0.03
    assert "momentum" in report_markdown(t)
    y2 = y.copy()  # a leak planted into the holdout period changes nothing fitted on dev
    y2[X.index.get_level_values(0) >= ho] = 100 * X["r1"][X.index.get_level_values(0) >= ho]
    m2 = [Zero(), Signal("r1"), Linear()]
    evaluate(X, y2, m2, dev_end, ho, n_boot=50)
    assert m2[1].slope == models[1].slope
