"""The graph network (aitrade.signals.gnn) judged against its controls, out of sample, on markets with a planted
lead/lag network (signals.leadlag.planted_lead_lag) and on one without: the graph must add what it carries and
nothing where there is nothing. Also determinism, the pickle round trip, causality and bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from aitrade.errors import FieldError
from aitrade.signals.gnn import GNNForecaster, correlation_edges, graph_controls
from aitrade.signals.leadlag import lead_lag_graph, planted_lead_lag

torch.set_num_threads(1)
T = 1500


def market(n_edges: int, seed: int = 0):
    "Returns, the planted edges, features (today's and yesterday's return), next-day target, the training mask."
    R, truth = planted_lead_lag(n_nodes=30, n_edges=n_edges, T=T, lags=(1,), coef=0.4, seed=seed)
    long = R.stack()
    long.index = long.index.set_names(["date", "underlying"])
    X = long.to_frame("ret_1d")
    X["ret_1d_prev"] = R.shift(1).stack(future_stack=True).reindex(X.index)
    y = R.shift(-1).stack(future_stack=True).reindex(X.index)
    cut = R.index[2 * T // 3]
    return R, truth, X, y, X.index.get_level_values("date") < cut, cut


def oos_r2(m, X, y, test, names=None) -> float:
    "Out-of-sample R² against the zero forecast, on `names` (default: every underlying)."
    p, t = m.predict(X[test]), y[test]
    ok = t.notna()
    if names is not None:
        ok &= t.index.get_level_values("underlying").isin(names)
    return 1 - float(((t[ok] - p[ok]) ** 2).sum() / (t[ok] ** 2).sum())


@pytest.mark.parametrize("source", ["planted", "estimated"])
def test_the_graph_adds_what_it_carries(source):
    R, truth, X, y, train, cut = market(n_edges=12)
    edges = truth
    if source == "estimated":  # the daily job's graph, from the training window only
        edges = lead_lag_graph(R.loc[R.index < cut], window=int(train.sum() // 30), lags=(1,), n_surr=200)
        found = set(zip(edges["source"], edges["target"], strict=True))
        planted = set(zip(truth["source"], truth["target"], strict=True))
        assert len(found & planted) / len(planted) >= 0.9 and len(found & planted) / len(found) >= 0.9
    models = graph_controls(edges, hidden=16, epochs=300, seed=0)
    for m in models.values():
        m.fit(X[train], y[train])
    r2 = {n: oos_r2(m, X, y, ~train) for n, m in models.items()}
    followers = {n: oos_r2(m, X, y, ~train, truth["target"]) for n, m in models.items()}
    # measured (seed 0): all 0.068 / 0.048 / 0.048; followers 0.116 / 0.058 / 0.057
    assert r2["gnn"] > r2["gnn_nograph"] + 0.01 and r2["gnn"] > r2["gnn_rewired"] + 0.01, r2
    assert followers["gnn"] > followers["gnn_nograph"] + 0.04 and followers["gnn"] > 0.08, followers


def test_no_gain_where_there_is_no_structure():
    R, _, X, y, train, _ = market(n_edges=0, seed=5)
    rng = np.random.default_rng(5)
    names = list(R.columns)
    fake = pd.DataFrame(
        [rng.choice(names, 2, replace=False) for _ in range(12)], columns=["source", "target"]
    )
    models = graph_controls(fake, hidden=16, epochs=300, seed=0)
    for m in models.values():
        m.fit(X[train], y[train])
    r2 = {n: oos_r2(m, X, y, ~train) for n, m in models.items()}
    assert abs(r2["gnn"] - r2["gnn_nograph"]) < 0.01, r2
    # only the nodes' own AR(1) (phi = 0.2: R² about 0.04) is there to find
    assert max(r2.values()) < 0.07, r2


def test_deterministic_picklable_and_causal():
    R, truth, X, y, train, cut = market(n_edges=6, seed=2)
    small = X.index.get_level_values("date") < R.index[600]
    a = GNNForecaster("te", truth, hidden=8, epochs=60, seed=3).fit(X[small], y[small])
    b = GNNForecaster("te", truth, hidden=8, epochs=60, seed=3).fit(X[small], y[small])
    day = R.index[700]
    rows = X.index.get_level_values("date") <= day
    pa = a.predict(X[rows])
    assert np.array_equal(pa.to_numpy(), b.predict(X[rows]).to_numpy())
    back = pickle.loads(pickle.dumps(a))
    assert np.array_equal(back.predict(X[rows]).to_numpy(), pa.to_numpy())
    later = X.copy()
    later.loc[later.index.get_level_values("date") > day] = (
        99.0  # the future changes; day's forecast must not
    )
    assert np.array_equal(a.predict(later).loc[day].to_numpy(), pa.loc[day].to_numpy())
    assert pa.name == "gnn" and pa.index.equals(X[rows].index)


def test_a_correlation_graph_and_bad_input():
    R, truth, X, y, train, cut = market(n_edges=6, seed=3)
    ce = correlation_edges(R.loc[R.index < cut], window=250, top_k=2)
    m = GNNForecaster("corr", ce, hidden=8, epochs=30).fit(X[train], y[train])
    assert m.predict(X[~train]).notna().all() and len(m.used) == len(ce)
    with pytest.raises(FieldError, match="X"):
        m.predict(X[~train].rename(index={"U00": "ZZZ"}, level="underlying"))
    with pytest.raises(FieldError, match="y"):
        GNNForecaster("te", truth).fit(X, y.iloc[:-1])
    with pytest.raises(FieldError, match="X"):
        GNNForecaster("te", truth).fit(X.reset_index(), y)
    with pytest.raises(FieldError, match="edges"):
        GNNForecaster("te", None)
    with pytest.raises(FieldError, match="model"):
        GNNForecaster("none").predict(X)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_on_the_gpu_the_same_forecasts_as_on_the_cpu():
    R, truth, X, y, train, cut = market(n_edges=6, seed=4)
    small = X.index.get_level_values("date") < R.index[600]
    gpu = GNNForecaster("te", truth, hidden=8, epochs=40, device="cuda").fit(X[small], y[small])
    cpu = pickle.loads(pickle.dumps(gpu))  # rebuilt on the CPU
    assert np.allclose(gpu.predict(X[~train]), cpu.predict(X[~train]), atol=1e-5)
