"""Honest evaluation of the signal models (issue 12 item 5): writes docs/signals_evaluation.md.

Two markets, each split into a dev period and a later holdout period fixed below, before any result was seen:

1. a synthetic market with planted structure (`planted_market`: a sparse lead/lag network on 30 nodes and a
   planted volatility signal): next-day returns and next-5-day realised vol;
2. the real offline daily history of SPX, IXIC, AAPL, MSFT and IBM (`aitrade.marketdata.history`, the days all five
   have): next-5-day realised vol (annualised) and next-day returns.

Dev rows are out-of-fold forecasts from purged walk-forward folds over the dev days; holdout rows come from models
fitted once on all dev days, frozen, and asked once. Whatever the numbers are, they are written as measured.

    .venv/bin/python tools/signals_report.py            # about 5-10 minutes on 2 cores
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

# --- fixed in advance: never tuned on the holdout ----------------------------------------------------------------
SYNTH = dict(n_nodes=30, n_edges=12, T=1500, seed=0)  # planted market
SYNTH_DEV_DAYS = 1000  # the first 1,000 feature days are dev
SYNTH_GAP = 5  # days between dev and holdout (>= the 5-day vol horizon)
REAL = ["SPX", "IXIC", "AAPL", "MSFT", "IBM"]
REAL_START, REAL_END = "2000-03-01", "2013-03-01"  # the days all five have
DEV_END, HOLDOUT_START = "2007-12-31", "2008-01-10"  # dev 2000-2007, holdout 2008 to March 2013
HORIZON = 5  # days of the realised-vol target
N_BOOT, BLOCK, LEVEL = 300, 10.0, 0.9  # stationary bootstrap: draws, mean block (days), coverage
N_SPLITS = 5  # walk-forward folds over the dev days
GNN = dict(hidden=16, epochs=200, patience=30, seed=0, device="cpu")
OUT = Path(__file__).resolve().parents[1] / "docs" / "signals_evaluation.md"
VOLS = ["rv_1d", "rv_5d", "rv_22d"]


def returns_models():
    from aitrade.signals.ensemble import Lgbm, Linear, Signal, Zero

    return [
        Zero(),
        Signal("ret_22d"),
        Signal("ret_1d", "mean_reversion", -1),
        Linear(),
        Lgbm(n_estimators=100),
    ]


def synthetic_returns_models():
    from aitrade.signals.ensemble import Ensemble, GraphGnn, LeadLagRidge, Lgbm, Linear, Signal
    from aitrade.signals.gnn import GNNForecaster

    members = lambda: [  # noqa: E731
        Signal("ret_22d"),
        Linear(),
        Lgbm(n_estimators=100),
        GraphGnn(n_surr=100, **GNN),
        LeadLagRidge(n_surr=100),
    ]
    return [
        *returns_models(),
        GraphGnn(n_surr=100, **GNN),  # the GNN on the TE graph estimated on each fit's training days
        GNNForecaster("none", **GNN),  # the same network with no graph: what the graph adds
        LeadLagRidge(n_surr=100),  # a sparse VAR on the same TE graph
        Ensemble(members(), rule="stack", n_splits=3, test_size=60),
    ]


def vol_models(signal: bool = False):
    from aitrade.signals.ensemble import Column, Ensemble, Garch, Har, Lgbm, Linear

    extra = [Linear(cols=[*VOLS, "vol_signal"], name="ridge_signal")] if signal else []
    members = lambda: [Column("rv_5d"), Har(VOLS), Garch(horizon=HORIZON), Lgbm(n_estimators=200), *extra]  # noqa: E731
    return [*members(), Ensemble(members(), rule="stack", n_splits=3, test_size=60, purge=HORIZON)]


def real_returns() -> pd.DataFrame:
    from aitrade.marketdata import history

    closes = pd.concat({s: history(s)["close"] for s in REAL}, axis=1, join="inner").loc[REAL_START:REAL_END]
    return np.log(closes).diff().iloc[1:]


def run(name, X, y, models, dev_end, holdout_start, kind, purge, log) -> tuple[str, pd.DataFrame]:
    from aitrade.signals.evaluation import evaluate, report_markdown

    t0 = time.time()
    t = evaluate(X, y, models, dev_end, holdout_start, kind=kind, n_boot=N_BOOT, block=BLOCK, level=LEVEL,
                 n_splits=N_SPLITS, purge=purge)  # fmt: skip
    log(f"{name}: {time.time() - t0:.0f} s")
    return report_markdown(t), t


def main() -> int:
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from aitrade.signals.evaluation import compare, planted_market, returns_panel
    from aitrade.signals.leadlag import lead_lag_graph

    t_all = time.time()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    parts = []

    # 1. the planted market ------------------------------------------------------------------------------------
    R, truth, sig = planted_market(**SYNTH)
    X, T = returns_panel(R, horizon=HORIZON, extra={"vol_signal": sig})
    days = X.index.get_level_values("date").unique()
    dev_end, ho = days[SYNTH_DEV_DAYS - 1], days[SYNTH_DEV_DAYS - 1 + SYNTH_GAP]
    g = lead_lag_graph(R.loc[:dev_end], window=len(R.loc[:dev_end]), lags=(1,), n_surr=200)
    found = set(zip(g["source"], g["target"], strict=True))
    true = set(zip(truth["source"], truth["target"], strict=True))
    tp = len(found & true)
    md_ret, t_ret = run(
        "synthetic returns", X, T["ret"], synthetic_returns_models(), dev_end, ho, "return", 1, log
    )
    md_vol, t_vol = run(
        "synthetic vol", X, T["vol"], vol_models(signal=True), dev_end, ho, "vol", HORIZON, log
    )
    heads = []
    for base in ["zero", "momentum", "mean_reversion", "ridge", "lgbm", "gnn_nograph"]:
        for m in ["gnn_te", "leadlag_ridge", "ens_stack"]:
            c = compare(t_ret, base, m)
            heads.append(
                f"| {m} | {base} | {c['gain']:.4f} [{c['lo']:.4f}, {c['hi']:.4f}] | {c['dm_p']:.4f} |"
            )
    vheads = []
    for base in ["random_walk", "har", "garch", "lgbm"]:
        for m in ["ridge_signal", "ens_stack"]:
            c = compare(t_vol, base, m)
            vheads.append(
                f"| {m} | {base} | {c['gain']:.4f} [{c['lo']:.4f}, {c['hi']:.4f}] | {c['dm_p']:.4f} |"
            )
    parts += [
        "## 1. Synthetic market with planted structure",
        "",
        f"`planted_market({', '.join(f'{k}={v}' for k, v in SYNTH.items())})`: a sparse lead/lag network (each "
        "follower loads ±0.4 on a leader's return of the day before, at most two leaders each, nodes' own AR(1) "
        "0.2) and every return scaled by a persistent planted vol (log-vol AR(1), persistence 0.98, sd 0.35); the "
        "feature `vol_signal` is the next day's vol with 10% log-noise. Features: `returns_panel` (returns and "
        f"realised vols over 1, 5, 22 days, and `vol_signal`). Dev: the first {SYNTH_DEV_DAYS} feature days (to "
        f"{dev_end.date()}); holdout from {ho.date()} ({SYNTH_GAP} days later) to the end.",
        "",
        f"**Network recovered on the dev days** (`lead_lag_graph`, Gaussian TE, lag 1, 200 surrogates, FDR 5%): "
        f"{len(found)} edges found, {len(true)} planted, {tp} right: precision {tp / max(1, len(found)):.2f}, "
        f"recall {tp / len(true):.2f}.",
        "",
        "### Next-day return",
        "",
        "Members: `zero`, `momentum` (22-day return, slope >= 0), `mean_reversion` (1-day return, slope <= 0), "
        "`ridge` (all features), `lgbm`, `gnn_te` (GNNForecaster on the TE graph estimated on each fit's own "
        "training days), `gnn_nograph` (the same network, no edges), `leadlag_ridge` (a ridge per underlying on its "
        "own features and its TE parents' returns: a sparse VAR on the same graph), `ens_stack` (non-negative "
        "stacking of momentum, ridge, lgbm, gnn_te and leadlag_ridge on purged out-of-fold forecasts). `r2` is "
        "against the zero forecast; `r2_diff` against the benchmark (`zero`); `hit` on rows where the forecast "
        "is not zero; `ic` the mean daily Spearman across the nodes.",
        "",
        md_ret,
        "",
        "Head to head on the holdout (gain in R² of the first over the second, interval, one-sided DM p):",
        "",
        "| model | against | R² gain [interval] | DM p |",
        "|---|---|---|---|",
        *heads,
        "",
        "### Next-5-day realised vol (annualised)",
        "",
        "Members: `random_walk` (the last 5-day realised vol), `har` (Corsi 2009, on 1/5/22-day realised vols), "
        "`garch` (GARCH(1,1) per underlying, 5-day mean variance), `lgbm` (all features), `ridge_signal` (ridge on "
        "the realised vols and `vol_signal`), `ens_stack`. QLIKE on variances (lower is better); `qlike_gain` and "
        "`r2_vs_bench` against `random_walk`.",
        "",
        md_vol,
        "",
        "Head to head on the holdout (QLIKE gain of the first over the second, interval, one-sided DM p):",
        "",
        "| model | against | QLIKE gain [interval] | DM p |",
        "|---|---|---|---|",
        *vheads,
        "",
    ]

    # 2. the real offline history ------------------------------------------------------------------------------
    R = real_returns()
    X, T = returns_panel(R, horizon=HORIZON)
    md_rvol, t_rvol = run("real vol", X, T["vol"], vol_models(), DEV_END, HOLDOUT_START, "vol", HORIZON, log)
    md_rret, t_rret = run(
        "real returns", X, T["ret"], returns_models(), DEV_END, HOLDOUT_START, "return", 1, log
    )
    rheads = []
    for base in ["random_walk", "har", "garch"]:
        for m in ["har", "garch", "lgbm", "ens_stack"]:
            if m != base:
                c = compare(t_rvol, base, m)
                rheads.append(
                    f"| {m} | {base} | {c['gain']:.4f} [{c['lo']:.4f}, {c['hi']:.4f}] | {c['dm_p']:.4f} |"
                )
    parts += [
        "## 2. Real offline history: SPX, IXIC, AAPL, MSFT, IBM",
        "",
        f"Daily closes from `aitrade.marketdata.history` (arch and bokeh sample data), the {len(R)} days from "
        f"{R.index[0].date()} to {R.index[-1].date()} that all five have; log returns. Dev: to {DEV_END}; holdout "
        f"from {HOLDOUT_START} (fixed in advance; it holds the 2008 crisis, which dev does not). Features as above "
        "(no vol signal: none exists here).",
        "",
        "### Next-5-day realised vol (annualised)",
        "",
        "Members: `random_walk`, `har`, `garch`, `lgbm`, `ens_stack` (of the four). QLIKE on variances; gains "
        "against `random_walk`.",
        "",
        md_rvol,
        "",
        "Head to head on the holdout (QLIKE gain of the first over the second):",
        "",
        "| model | against | QLIKE gain [interval] | DM p |",
        "|---|---|---|---|",
        *rheads,
        "",
        "### Next-day return",
        "",
        "Members: `zero`, `momentum`, `mean_reversion`, `ridge`, `lgbm`, as in section 1; rank IC across the five.",
        "",
        md_rret,
        "",
    ]
    head = [
        "# Signals: honest evaluation",
        "",
        "Written by `tools/signals_report.py` (do not edit by hand); numbers as measured, nothing tuned on a "
        "holdout. Method: `nbs/23_signals_evaluation.ipynb` — dev rows are out-of-fold forecasts from purged "
        f"walk-forward folds ({N_SPLITS} folds covering the second half of the dev days); holdout rows come from "
        "models fitted once on all dev days and frozen. Every interval is a "
        f"{LEVEL:.0%} stationary-bootstrap interval over days (Politis & Romano 1994; mean block {BLOCK:g} days, "
        f"{N_BOOT} draws); `dm_p` is the one-sided Diebold–Mariano p-value (1995) that the model's daily loss is "
        "below the benchmark's (the first model of each table); Hansen's SPA p-value (2005, `arch.bootstrap.SPA`) "
        "tests whether any model beats the benchmark given all that were tried. QLIKE: Patton (2011). Baselines: "
        "GARCH(1,1) (Bollerslev 1986), HAR (Corsi 2009).",
        "",
    ]
    text = "\n".join(head + parts + [f"Run time: {time.time() - t_all:.0f} s on this machine's CPUs.", ""])
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    log(f"wrote {OUT} in {time.time() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
