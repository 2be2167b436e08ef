"""Transfer entropy and the lead/lag graph (aitrade.signals).

* Discrete TE against PyInform 0.2 (its C library Inform does the arithmetic): `np.array_equal`, i.e. the same
  bits, for the average and the local values, k = 1..3, on random series of 2..5 symbols and on edge cases
  (constant series, one observation, a source that is a copy of the target's past, int32/int64/list input), and
  all ordered pairs of a matrix. Equality is exact because the kernels sum the same terms in Inform's order.
* The Gaussian estimator against the closed form of a coupled AR(1) pair at N = 200,000 (≤ 0.005 nats), with the
  target history k = 1 and k → ∞ resolved separately (they differ by 0.06 nats at the parameters used), and
  T_{Y→X} = 0.
* The KSG kernel against a brute-force O(N²) implementation of the same algorithm (to 1e-12), and against the
  closed form within 0.02 nats at N = 10,000.
* Surrogate tests: the false-positive rate over 2,000 independent AR(1) pairs (φ = 0.5) at α = 0.05 lies in
  [0.03, 0.07] (the exact null rate with 200 surrogates is 10/201 = 0.0498; the binomial sd over 2,000 pairs is
  0.0049, so the interval is ±4 sd); power ≥ 0.9 at N = 2,000 for a moderately coupled pair (Gaussian, 100
  pairs at TE = 0.0066 nats; KSG, 20 pairs at 0.055 nats); BH against statsmodels.
* The planted network (30 and 50 nodes, chains and common drivers included) recovered with precision and recall
  ≥ 0.9, lags included; the Dask path equal to the in-process one; storage on SQLite and PostgreSQL.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyinform
import pytest
import sqlalchemy as sa
from scipy.signal import lfilter
from scipy.special import digamma
from statsmodels.stats.multitest import multipletests

from aitrade import errors, store
from aitrade.signals import leadlag as sg
from aitrade.signals import te

# --- discrete TE: bit for bit PyInform ------------------------------------------------------------------------


def _random_pairs(n_cases: int, seed: int):
    rng = np.random.default_rng(seed)
    for case in range(n_cases):
        b = int(rng.integers(2, 6))
        k = int(rng.integers(1, 4))
        n = int(rng.integers(k + 2, 600))
        x = rng.integers(0, b, n)
        kind = case % 4
        if kind == 0:  # independent
            y = rng.integers(0, b, n)
        elif kind == 1:  # y copies x one step later, with noise
            y = np.where(rng.random(n) < 0.7, np.roll(x, 1), rng.integers(0, b, n))
        elif kind == 2:  # y copies its own past and x
            y = (np.roll(x, 1) + np.roll(x, 2)) % b
        else:  # a sparse target
            y = (rng.random(n) < 0.05).astype(np.int64)
        yield x, y, k


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_discrete_te_equals_pyinform_bit_for_bit(seed):
    for x, y, k in _random_pairs(300, seed):
        ref = pyinform.transfer_entropy(x, y, k=k)
        assert te.transfer_entropy(x, y, k) == ref, (x, y, k)
        loc = pyinform.transfer_entropy(x, y, k=k, local=True)[0]
        assert np.array_equal(te.transfer_entropy(x, y, k, local=True), loc), (x, y, k)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_discrete_te_edge_cases_equal_pyinform(k):
    rng = np.random.default_rng(k)
    n = 40
    cases = [
        (np.zeros(n, int), rng.integers(0, 2, n)),  # constant source
        (rng.integers(0, 2, n), np.zeros(n, int)),  # constant target
        (np.zeros(n, int), np.zeros(n, int)),  # both constant
        (np.ones(n, int), np.ones(n, int)),
        (rng.integers(0, 2, k + 1), rng.integers(0, 2, k + 1)),  # one observation
        (rng.integers(0, 2, k + 2), rng.integers(0, 2, k + 2)),
        (np.roll(y := rng.integers(0, 3, n), 1), y),  # the source is the target's last value
        (rng.integers(0, 4, n).astype(np.int32), rng.integers(0, 4, n).astype(np.int32)),
        (list(rng.integers(0, 2, n)), list(rng.integers(0, 2, n))),
        (np.array([0, 1, 1, 1, 1, 0, 0, 0, 0]), np.array([0, 0, 1, 1, 1, 1, 0, 0, 0])),
        (np.arange(n) % 5, np.arange(n) % 3),  # periodic
    ]
    for x, y in cases:
        assert te.transfer_entropy(x, y, k) == pyinform.transfer_entropy(x, y, k=k), (x, y)
        assert np.array_equal(
            te.transfer_entropy(x, y, k, local=True), pyinform.transfer_entropy(x, y, k=k, local=True)[0]
        ), (x, y)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_te_matrix_equals_pyinform_on_all_ordered_pairs(k):
    rng = np.random.default_rng(10 + k)
    S = rng.integers(0, 3, (8, 400))
    S[1:] = np.where(rng.random((7, 400)) < 0.4, np.roll(S[:-1], 1, axis=1), S[1:])  # a chain of leads
    M = te.te_matrix(S, k)
    ref = np.full((8, 8), np.nan)
    for i in range(8):
        for j in range(8):
            if i != j:
                ref[i, j] = pyinform.transfer_entropy(S[i], S[j], k=k)
    assert np.array_equal(M, ref, equal_nan=True)


def test_discrete_block_counts_its_surrogates():
    "The kernel's surrogate counts equal the TE of each shifted source, computed one by one."
    rng = np.random.default_rng(3)
    S = rng.integers(0, 2, (3, 300))
    S[2] = np.where(rng.random(300) < 0.2, np.roll(S[0], 2), S[2])
    shifts = te.circular_shifts(300, 40, seed=1)
    v, ge, top = te.te_block(S, [2], (1, 2), 2, shifts, "discrete")
    for i in (0, 1):
        for m, lag in enumerate((1, 2)):
            obs = te.transfer_entropy(S[i], S[2], 2, lag=lag)
            assert v[0, i, m] == obs
            sur = [te.transfer_entropy(np.roll(S[i], s), S[2], 2, lag=lag) for s in shifts]
            assert ge[0, i, m] == sum(s >= obs for s in sur)
    tops = [
        max(te.transfer_entropy(np.roll(S[i], s), S[2], 2, lag=lag) for i in (0, 1) for lag in (1, 2))
        for s in shifts
    ]
    assert np.array_equal(top[0], tops)


# --- Gaussian TE against the closed form ----------------------------------------------------------------------


def coupled_ar1(N: int, a: float, b: float, c: float, seed: int = 0, burn: int = 1000):
    "X_t = aX_{t−1} + e_x, Y_t = bY_{t−1} + cX_{t−1} + e_y, unit noises."
    e = np.random.default_rng(seed).standard_normal((2, N + burn))
    x = lfilter([1.0], [1.0, -a], e[0])
    y = lfilter([1.0], [1.0, -b], c * np.r_[0.0, x[:-1]] + e[1])
    return x[burn:], y[burn:]


A, B, C = 0.95, 0.1, 0.6  # T(k=1) = 0.3396, T(k→∞) = 0.2785 nats


def test_closed_form_resolves_the_history_length():
    t1, tinf = te.coupled_ar1_te(A, B, C, k=1), te.coupled_ar1_te(A, B, C, k=None)
    assert t1 - tinf > 0.05
    assert (
        abs(te.coupled_ar1_te(A, B, C, k=60) - tinf) < 1e-12
    )  # the Toeplitz form reaches the spectral limit


def test_gaussian_te_matches_the_closed_form_at_200k():
    x, y = coupled_ar1(200_000, A, B, C, seed=7)
    assert abs(te.gaussian_te(x, y, k=1) - te.coupled_ar1_te(A, B, C, k=1)) <= 0.005
    assert abs(te.gaussian_te(x, y, k=30) - te.coupled_ar1_te(A, B, C, k=None)) <= 0.005
    assert abs(te.gaussian_te(x, y, k=3) - te.coupled_ar1_te(A, B, C, k=3)) <= 0.005
    # the two ends are told apart: k = 1 is not within 0.005 of the limit, nor k = 30 of k = 1
    assert abs(te.gaussian_te(x, y, k=1) - te.coupled_ar1_te(A, B, C, k=None)) > 0.05
    assert abs(te.gaussian_te(y, x, k=1)) <= 0.005 and abs(te.gaussian_te(y, x, k=30)) <= 0.005


# --- KSG ------------------------------------------------------------------------------------------------------


def _ksg_brute(Z, X, Y, K, w):
    "KSG algorithm 1 for I(X; Y | Z) by brute force (Z: columns; X, Y: one column each)."
    N = len(Z)
    tot = 0.0
    t = np.arange(N)
    for p in range(N):
        ok = np.abs(t - p) > w
        dz = np.max(np.abs(Z - Z[p]), axis=1)
        dxz = np.maximum(dz, np.abs(X - X[p]))
        dyz = np.maximum(dz, np.abs(Y - Y[p]))
        eps = np.sort(np.maximum(dxz, dyz)[ok])[K - 1]
        tot += digamma((ok & (dxz < eps)).sum() + 1) + digamma((ok & (dyz < eps)).sum() + 1)
        tot -= digamma((ok & (dz < eps)).sum() + 1)
    return digamma(K) - tot / N


@pytest.mark.parametrize("K,theiler,k", [(4, 0, 1), (4, 3, 1), (2, 0, 1), (6, 10, 1), (4, 0, 2), (3, 2, 3)])
def test_ksg_equals_brute_force(K, theiler, k):
    x, y = coupled_ar1(600, 0.8, 0.3, 0.5, seed=K + theiler + k)
    got = te.ksg_te(x, y, k, K=K, theiler=theiler, noise=0.0)
    zx, zy = ((v - v.mean()) / v.std() for v in (x, y))
    N = len(zy)
    Z = np.column_stack([zy[k - d : N - d] for d in range(1, k + 1)])  # the target's past
    assert abs(got - _ksg_brute(Z, zy[k:], zx[k - 1 : N - 1], K, theiler)) < 1e-12


def test_ksg_conditional_equals_brute_force():
    "A third series as a conditioning column (the graph's pruning step): Z = (y_{t-1}, w_{t-2})."
    x, y = coupled_ar1(500, 0.8, 0.3, 0.5, seed=21)
    w = np.roll(x, 1) + np.random.default_rng(0).standard_normal(500)
    X = np.stack([x, y, w])
    got = te.ksg_te_block(X, 1, [0], [1], 1, cond=[(2, 2)], noise=0.0)[0][0, 0]
    zx, zy, zw = ((v - v.mean()) / v.std() for v in X)
    Z = np.column_stack([zy[1:-1], zw[:-2]])
    assert abs(got - _ksg_brute(Z, zy[2:], zx[1:-1], 4, 0)) < 1e-12


def test_ksg_within_002_nats_of_the_closed_form_at_10k():
    for a, b, c, k in [(0.8, 0.3, 0.5, 1), (0.5, 0.5, 0.3, 1), (0.95, 0.1, 0.6, 1), (0.8, 0.3, 0.5, 2)]:
        x, y = coupled_ar1(10_000, a, b, c, seed=11)
        assert abs(te.ksg_te(x, y, k=k) - te.coupled_ar1_te(a, b, c, k=k)) <= 0.02, (a, b, c, k)
        assert abs(te.ksg_te(y, x, k=k)) <= 0.02


# --- significance ---------------------------------------------------------------------------------------------


def _ar1_matrix(n: int, T: int, phi: float, seed: int) -> np.ndarray:
    e = np.random.default_rng(seed).standard_normal((n, T + 200))
    return lfilter([1.0], [1.0, -phi], e, axis=1)[:, 200:]


@pytest.mark.slow
def test_false_positive_rate_on_autocorrelated_independent_pairs():
    "2,000 independent AR(1) pairs (φ = 0.5), T = 500, 200 circular shifts, α = 0.05: Gaussian and discrete."
    n_pairs, T, n_surr = 2000, 500, 200
    X = _ar1_matrix(2 * n_pairs, T, 0.5, seed=1)
    S = te.symbolise(X, 2)
    rates = {}
    for method, data in (("gaussian", X), ("discrete", S)):
        hits = 0
        for p in range(n_pairs):
            shifts = te.circular_shifts(T, n_surr, seed=p)
            _, ge, _ = te.te_block(data[2 * p : 2 * p + 2], [1], [1], 1, shifts, method)
            hits += te.p_values(ge[0, 0, 0], n_surr) <= 0.05
        rates[method] = hits / n_pairs
    assert all(0.03 <= r <= 0.07 for r in rates.values()), rates


@pytest.mark.slow
def test_power_on_a_moderately_coupled_pair():
    """N = 2,000, a = b = 0.5: Gaussian at c = 0.1 (TE = 0.0066 nats), 100 pairs, 200 shifts; KSG at c = 0.3
    (TE = 0.055 nats; at c = 0.2, 0.026 nats, its power is about 0.75), 20 pairs, 50 shifts."""
    a, b = 0.5, 0.5
    found = [
        te.surrogate_test(*coupled_ar1(2000, a, b, 0.1, seed=s), seed=s).p_value <= 0.05 for s in range(100)
    ]
    assert np.mean(found) >= 0.9, np.mean(found)
    found = [
        te.surrogate_test(*coupled_ar1(2000, a, b, 0.3, seed=s), method="ksg", n_surr=50, seed=s).p_value
        <= 0.05
        for s in range(20)
    ]
    assert np.mean(found) >= 0.9, np.mean(found)


def test_p_value_counts_the_observed_among_the_surrogates():
    x, y = coupled_ar1(800, 0.5, 0.5, 0.0, seed=5)
    shifts = te.circular_shifts(800, 99, seed=2)
    r = te.surrogate_test(x, y, n_surr=99, seed=2)
    sur = [te.gaussian_te(np.roll(x, s), y) for s in shifts]
    assert r.n_ge == sum(s >= r.te for s in sur)
    assert r.p_value == (1 + r.n_ge) / 100


def test_circular_shifts_stay_away_from_zero():
    s = te.circular_shifts(500, 300, min_shift=60, seed=0)
    assert s.min() >= 60 and s.max() <= 440 and np.unique(s).size == 300
    with pytest.raises(errors.FieldError, match="n_surr"):
        te.circular_shifts(500, 400, min_shift=60)
    with pytest.raises(errors.FieldError, match="min_shift"):
        te.circular_shifts(500, 10, min_shift=0)


def test_bh_equals_statsmodels():
    rng = np.random.default_rng(0)
    for m in (1, 7, 500):
        p = rng.random(m) ** 3
        p[: m // 3] = p[0]  # ties
        np.testing.assert_allclose(te.fdr_bh(p), multipletests(p, method="fdr_bh")[1], rtol=0, atol=1e-15)


def test_bad_input_is_refused_with_its_field():
    with pytest.raises(errors.FieldError, match="method"):
        te.te_block(np.zeros((2, 50)), method="granger")
    with pytest.raises(errors.FieldError, match="lags"):
        te.te_block(np.zeros((2, 50)), lags=(0,))
    with pytest.raises(errors.FieldError, match="X: not finite"):
        te.te_block(np.array([[np.nan] * 9, [0.0] * 9]))
    with pytest.raises(errors.FieldError, match="X: symbols are non-negative integers"):
        te.te_block(np.zeros((2, 50)), method="discrete")
    with pytest.raises(errors.FieldError, match="params: the discrete estimator does not take"):
        te.te_block(np.zeros((2, 50), int), method="discrete", K=4)
    with pytest.raises(errors.FieldError, match=r"params: the gaussian estimator does not take \['K'\]"):
        sg.lead_lag_graph(sg.planted_lead_lag(4, 2, 100)[0], window=100, n_surr=50, K=4)
    with pytest.raises(errors.FieldError, match="K"):
        te.ksg_te(np.arange(50.0), np.arange(50.0) ** 2, K=0)


# --- the lead/lag graph ---------------------------------------------------------------------------------------


def _edges(df) -> set:
    return set(df[["source", "target", "lag"]].itertuples(index=False, name=None))


def _score(found: set, true: set) -> tuple[float, float]:
    tp = len(found & true)
    return tp / max(1, len(found)), tp / len(true)


@pytest.mark.slow
@pytest.mark.parametrize("n_nodes,n_edges,seed", [(30, 12, 0), (30, 12, 1), (50, 20, 2)])
def test_planted_network_is_recovered(n_nodes, n_edges, seed):
    R, truth = sg.planted_lead_lag(n_nodes, n_edges, 1000, seed=seed)
    chains = set(truth["source"]) & set(truth["target"])
    assert chains  # the planted network has chains, so indirect edges are there to be refused
    g = sg.lead_lag_graph(R, window=1000, lags=(1, 2))
    precision, recall = _score(_edges(g), _edges(truth))
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


@pytest.mark.slow
@pytest.mark.parametrize("method,kw", [("ksg", dict(n_surr=60)), ("discrete", dict(bins=2))])
@pytest.mark.parametrize("seed", [3, 4])
def test_planted_network_other_estimators(method, kw, seed):
    "Smaller networks (8 nodes, 4 edges at lag 1, 600 days): KSG costs ~1,000× a Gaussian estimate per test."
    R, truth = sg.planted_lead_lag(8, 4, 600, lags=(1,), coef=0.5, seed=seed)
    g = sg.lead_lag_graph(R, window=600, method=method, **kw)
    precision, recall = _score(_edges(g), _edges(truth))
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


def test_dask_client_gives_the_same_graph():
    import distributed

    R, _ = sg.planted_lead_lag(10, 4, 400, seed=5)
    local = sg.lead_lag_graph(R, window=400, lags=(1, 2), n_surr=100)
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as client:
        remote = sg.lead_lag_graph(R, window=400, lags=(1, 2), n_surr=100, client=client, block=3)
    pd.testing.assert_frame_equal(local, remote)
    assert len(local) >= 3


def test_graph_uses_only_the_window_up_to_as_of():
    R, truth = sg.planted_lead_lag(8, 3, 600, seed=6)
    day = R.index[399]
    g = sg.lead_lag_graph(R, as_of=day, window=300, n_surr=100)
    assert g.attrs["as_of"] == day
    R2 = R.copy()
    R2.iloc[400:] = np.random.default_rng(0).standard_normal(R2.iloc[400:].shape)  # the future changed
    pd.testing.assert_frame_equal(g, sg.lead_lag_graph(R2, as_of=day, window=300, n_surr=100))


# --- storage --------------------------------------------------------------------------------------------------

DAY = pd.Timestamp("2019-03-01")


def _graph_frame():
    R, _ = sg.planted_lead_lag(10, 4, 500, seed=8)
    return sg.lead_lag_graph(R, window=500, lags=(1, 2), n_surr=100)


def test_store_round_trip(db):
    g = _graph_frame()
    assert len(g) >= 3
    with store.session_scope() as s:
        with pytest.raises(
            errors.NotFound, match="no gaussian lead/lag graph stored on or before 2019-03-01"
        ):
            sg.graph(s, DAY)
        assert sg.store_graph(s, DAY, g) == len(g)
        sg.store_graph(s, DAY - pd.Timedelta(days=1), g.iloc[:1])
        sg.store_graph(s, DAY, g.iloc[:2], method="ksg", window=250)
    with store.session_scope() as s:
        back = sg.graph(s, "2019-03-05")
        assert back.attrs["as_of"] == DAY and back.attrs["window"] == 500 and back.attrs["lags"] == [1, 2]
        pd.testing.assert_frame_equal(back, g, check_like=False)
        assert len(sg.graph(s, DAY - pd.Timedelta(days=1))) == 1
        assert len(sg.graph(s, DAY, method="ksg")) == 2
        sg.store_graph(s, DAY, g.iloc[:0])  # the same day again, no edge: replaces the day's graph
    with store.session_scope() as s:
        assert len(sg.graph(s, DAY)) == 0 and sg.graph(s, DAY).attrs["as_of"] == DAY
        assert len(sg.graph(s, DAY, method="ksg")) == 2  # another method's graph of the day is kept
        assert s.scalar(sa.select(sa.func.count()).select_from(sg.LeadLagEdge)) == 1 + 2


def test_a_bad_graph_stores_nothing(db):
    g = _graph_frame()
    with store.session_scope() as s:
        sg.store_graph(s, DAY, g)
    bad = g.copy()
    bad.loc[bad.index[-1], "te"] = np.nan
    with pytest.raises(errors.FieldError, match="edges: te: not a finite number"), store.session_scope() as s:
        sg.store_graph(s, DAY, bad)
    dup = pd.concat([g, g.iloc[:1]])
    dup.attrs.update(g.attrs)
    with pytest.raises(errors.FieldError, match="given twice"), store.session_scope() as s:
        sg.store_graph(s, DAY, dup)
    with store.session_scope() as s:
        pd.testing.assert_frame_equal(sg.graph(s, DAY), g)


def test_the_database_refuses_a_duplicate_edge(db):
    g = _graph_frame()
    with pytest.raises(sa.exc.IntegrityError), store.session_scope() as s:
        sg.store_graph(s, DAY, g)
        r = g.iloc[0]
        s.execute(
            sa.insert(sg.LeadLagEdge),
            [
                dict(as_of=DAY.date(), source=r.source, target=r.target, lag=int(r.lag), te=0.1, p_value=0.01,
                     q_value=0.01, method="gaussian", window=500, created_at=store.utcnow())
            ],
        )  # fmt: skip


def test_migration_creates_and_drops_the_tables(db):
    names = sa.inspect(store.get_engine()).get_table_names()
    assert {"lead_lag_graphs", "lead_lag_edges"} <= set(names)
    store.downgrade("0006")  # below 0007, whatever migrations came after it
    store.dispose_engines()
    assert not {"lead_lag_graphs", "lead_lag_edges"} & set(sa.inspect(store.get_engine()).get_table_names())
    store.upgrade()
