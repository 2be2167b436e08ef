"""Signal-layer benchmarks for the daily universe: the graph network's inference for one day (the seed's target:
<= 200 ms for the whole universe) and its training, and the day's lead/lag graph, at the desk's 5 underlyings and
at 50.

* GNN inference: `GNNForecaster.predict` for one day of every underlying (features: today's and yesterday's
  return), on the planted lead/lag market; the peer is the same network with no graph (the per-node MLP), so the
  ratio is the cost of the message passing.
* GNN training: `fit` on 1,000 days (early stopping; the epochs run are in the row's name).
* The Gaussian lead/lag graph of the day (250 days, lag 1, 200 circular shifts): the `signals` notebook's cost.

Run: `.venv/bin/python bench/bench_signals.py [--quick]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from timing import best_of, row  # the timer and row of every bench file

from aitrade.signals.gnn import GNNForecaster
from aitrade.signals.leadlag import lead_lag_graph, planted_lead_lag


def _market(n: int, T: int):
    R, truth = planted_lead_lag(n_nodes=n, n_edges=max(1, n // 3), T=T, lags=(1,), coef=0.4, seed=1)
    long = R.stack()
    long.index = long.index.set_names(["date", "underlying"])
    X = long.to_frame("ret_1d")
    X["ret_1d_prev"] = R.shift(1).stack(future_stack=True).reindex(X.index)
    y = R.shift(-1).stack(future_stack=True).reindex(X.index)
    return R, truth, X, y


def _size(n: int, T: int, rep: int) -> list[dict]:
    "The rows of one universe size."
    R, truth, X, y = _market(n, T)
    train = X.index.get_level_values("date") < R.index[-50]
    Xt, yt = X[train], y[train]
    day = X.loc[[R.index[-2]]]  # one day, every underlying
    t_fit = best_of(lambda: GNNForecaster("te", truth, hidden=32, epochs=300, seed=0).fit(Xt, yt), 1)
    gnn = t_fit.result
    plain = GNNForecaster("none", None, hidden=32, epochs=300, seed=0).fit(Xt, yt)
    gnn.predict(day), plain.predict(day)  # warm
    t = best_of(lambda: gnn.predict(day), rep)
    t_plain = best_of(lambda: plain.predict(day), rep)
    t_graph = best_of(lambda: lead_lag_graph(R, window=250, lags=(1,), n_surr=200), 1)
    return [
        row(f"GNN inference, one day of {n} underlyings ({len(gnn.used)} edges), 2 threads", "ms", t.wall * 1e3,
            "the same network with no graph", t_plain.wall * 1e3, higher_is_better=False,
            target="<= 200 ms (the seed's)", met=bool(t.wall <= 0.2)),
        row(f"GNN training, {int(train.sum() // n)} days x {n} underlyings, early stopping", "s", t_fit.wall,
            higher_is_better=False, target="(the weekly train job's cost)"),
        row(f"Gaussian lead/lag graph, {n} underlyings x 250 days, lag 1, 200 shifts", "s", t_graph.wall,
            higher_is_better=False, target="(the daily signals notebook's cost)"),
    ]  # fmt: skip


def _run(sizes, T: int, rep: int) -> list[dict]:
    torch.set_num_threads(2)
    return [r for n in sizes for r in _size(n, T, rep)]


def run(quick: bool = False) -> list[dict]:
    if quick:
        return _run((5,), 400, 3)
    return _run((5, 50), 1050, 20)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import print_table  # the one table printer of bench/

    print_table(run(quick="--quick" in sys.argv))
