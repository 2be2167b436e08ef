"""Benchmark: implied volatility (`aitrade.pricing.iv`) against py_vollib_vectorized and vollib.

Workload: N = 1,000,000 random Black-76 options, drawn with a fixed seed:
total volatility s = σ√T uniform on [0.01, 1.5], log-moneyness ln(F/K) uniform on [-3 s, 3 s], calls and puts
50/50, F = 100, T uniform on [0.05, 2] years, r uniform on [0, 5%]; prices are discounted and made with
`aitrade.pricing.iv.normalised_black`. Rows whose time value is below 1e-8 of the forward are excluded
from the error metric (for all libraries alike), not from the timing.

Metrics: options per second (wall clock, best of 3 after a warm-up call that compiles numba), and the largest
price-relative repricing error of the returned volatilities (repriced with the same Black function).

Peers run in their own virtual environments because their pins conflict with ours:
`bench/.venv-vollib` (py_vollib==1.0.1, py_lets_be_rational==1.0.1, py_vollib_vectorized) and
`bench/.venv-vollib-new` (vollib, the current name of py_vollib). `ensure_peer_venvs()` creates them; each
peer is run with `subprocess` on the same inputs (an .npz file) and is timed inside its own process. vollib is
a scalar pure-Python API, so it is timed on a subset and its rate reported per option.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from timing import best_of  # the timer and row of every bench file

HERE = Path(__file__).resolve().parent
VENV_VV = HERE / ".venv-vollib"
VENV_NEW = HERE / ".venv-vollib-new"
PEER_PKGS = {
    VENV_VV: ["py_vollib==1.0.1", "py_lets_be_rational==1.0.1", "py_vollib_vectorized==0.1.1"],
    VENV_NEW: ["vollib"],
}
N_FULL, N_QUICK = 1_000_000, 100_000
VOLLIB_SUBSET_FULL, VOLLIB_SUBSET_QUICK = 20_000, 2_000
TARGET_RATE = 10e6  # options/s on 2 cores
TARGET_SPEEDUP = 5.0  # vs py_vollib_vectorized


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_peer_venvs(verbose: bool = False) -> dict[str, str | None]:
    "Create the peers' virtual environments if missing; return {venv: error or None}."
    status: dict[str, str | None] = {}
    for venv, pkgs in PEER_PKGS.items():
        py = _venv_python(venv)
        marker = venv / ".installed"
        if marker.exists():
            status[venv.name] = None
            continue
        try:
            if not py.exists():
                subprocess.run(
                    [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=not verbose
                )
            subprocess.run(
                [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pkgs],
                check=True,
                capture_output=not verbose,
                text=True,
            )
            marker.write_text(" ".join(pkgs))
            status[venv.name] = None
        except subprocess.CalledProcessError as e:
            status[venv.name] = f"pip install {' '.join(pkgs)} failed: {(e.stderr or '')[-500:]}"
    return status


def make_options(n: int, seed: int = 20240611) -> dict[str, np.ndarray]:
    from aitrade.pricing.iv import normalised_black

    rng = np.random.default_rng(seed)
    s = rng.uniform(0.01, 1.5, n)
    x = rng.uniform(-3.0, 3.0, n) * s
    call = rng.random(n) < 0.5
    F = np.full(n, 100.0)
    K = F * np.exp(-x)
    T = rng.uniform(0.05, 2.0, n)
    r = rng.uniform(0.0, 0.05, n)
    x = np.where((F >= 0.5 * K) & (F <= 2 * K), np.log1p((F - K) / K), np.log(F / K))
    df = np.exp(-r * T)
    price = df * np.sqrt(F * K) * normalised_black(x, s, np.where(call, 1.0, -1.0))
    tv = price - df * np.maximum(np.where(call, F - K, K - F), 0.0)
    return dict(price=price, F=F, K=K, T=T, r=r, call=call, keep=tv >= 1e-8 * F)


def reprice_error(o: dict[str, np.ndarray], vol: np.ndarray) -> tuple[float, int]:
    "Max price-relative repricing error over the kept rows, and the number of kept rows that failed (NaN)."
    from aitrade.pricing.iv import normalised_black

    F, K, T, r = o["F"], o["K"], o["T"], o["r"]
    x = np.where((F >= 0.5 * K) & (F <= 2 * K), np.log1p((F - K) / K), np.log(F / K))
    rep = (
        np.exp(-r * T)
        * np.sqrt(F * K)
        * normalised_black(x, vol * np.sqrt(T), np.where(o["call"], 1.0, -1.0))
    )
    err = np.abs(rep / o["price"] - 1.0)[o["keep"]]
    return float(np.nanmax(err)), int(np.isnan(err).sum())


_PEER_SCRIPT = r"""
import sys, time, json
import numpy as np
which, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
d = np.load(path)
price, F, K, T, r, call = (d[k] for k in ("price", "F", "K", "T", "r", "call"))
res = {}
if which == "vectorized":
    import py_vollib_vectorized as pvv
    flag = np.where(call, "c", "p")
    f = lambda: pvv.vectorized_implied_volatility_black(price, F, K, r, T, flag, return_as="numpy")
    f_small = lambda: pvv.vectorized_implied_volatility_black(price[:100], F[:100], K[:100], r[:100], T[:100],
                                                              flag[:100], return_as="numpy")
    f_small()  # compile
    best, cpu = 1e99, 1e99
    for _ in range(3):
        t0 = time.perf_counter(); c0 = time.process_time(); vol = f()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if dt < best: best, cpu = dt, dc
    res["seconds"] = best; res["cpu"] = cpu; res["n"] = int(price.size)
    np.save(out, np.asarray(vol, dtype=float).ravel())
else:
    from vollib.black.implied_volatility import implied_volatility as iv
    m = int(sys.argv[4])
    vol = np.full(m, np.nan)
    for i in range(10):
        try:
            iv(float(price[i]), float(F[i]), float(K[i]), float(r[i]), float(T[i]), "c" if call[i] else "p")
        except Exception:
            pass
    t0 = time.perf_counter()
    for i in range(m):
        try:
            vol[i] = iv(float(price[i]), float(F[i]), float(K[i]), float(r[i]), float(T[i]), "c" if call[i] else "p")
        except Exception:
            vol[i] = np.nan
    res["seconds"] = time.perf_counter() - t0; res["n"] = m
    np.save(out, vol)
print(json.dumps(res))
"""


def _run_peer(which: str, venv: Path, o: dict[str, np.ndarray], subset: int | None = None):
    "Run a peer on the options in its venv; return (seconds, n, vol) or raise RuntimeError."
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npy")
        np.savez(inp, **{k: o[k] for k in ("price", "F", "K", "T", "r", "call")})
        cmd = [str(_venv_python(venv)), "-c", _PEER_SCRIPT, which, inp, out] + (
            [str(subset)] if subset else []
        )
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{which} failed: {p.stderr[-800:]}")
        res = json.loads(p.stdout.strip().splitlines()[-1])
        return res["seconds"], res["n"], np.load(out), res.get("cpu")


def run(quick: bool = False) -> list[dict]:
    from aitrade.kernels import cpu_threads
    from aitrade.pricing.iv import implied_vol_black76

    n = N_QUICK if quick else N_FULL
    o = make_options(n)
    args = (o["price"], o["F"], o["K"], o["T"], o["r"], o["call"])
    implied_vol_black76(*(a[:100] for a in args))  # warm-up (numba compile or cache load)
    vol = implied_vol_black76(*args)
    secs, cpu, _ = best_of(lambda: implied_vol_black76(*args))
    rate = n / secs
    err, nan = reprice_error(o, vol)
    threads = cpu_threads()
    rows: list[dict] = []
    setup = ensure_peer_venvs()

    # py_vollib_vectorized
    peer = "py_vollib_vectorized 0.1.1 (py_lets_be_rational 1.0.1)"
    try:
        if setup.get(VENV_VV.name):
            raise RuntimeError(setup[VENV_VV.name])
        p_secs, p_n, p_vol, p_cpu = _run_peer("vectorized", VENV_VV, o)
        p_rate = p_n / p_secs
        p_err, p_nan = reprice_error(o, p_vol)
    except RuntimeError as e:
        print(f"[bench_iv] {peer}: {e}", file=sys.stderr)
        p_rate = p_err = p_cpu = None
        p_nan = None
    rows.append(
        dict(
            benchmark=f"IV Black-76, {n:,} options ({threads} threads)",
            metric="options/s",
            aitrade=rate,
            peer=peer,
            peer_value=p_rate,
            ratio=(rate / p_rate) if p_rate else None,
            target=f">= {TARGET_RATE:.0e} options/s and >= {TARGET_SPEEDUP:g}x peer",
            met=bool(rate >= TARGET_RATE and (p_rate is None or rate >= TARGET_SPEEDUP * p_rate)),
        )
    )
    # CPU time per option is robust to other load on the machine (wall time is not): a quiet-machine
    # estimate of the 2-core rate is 2 / (CPU seconds per option)
    ns, p_ns = 1e9 * cpu / n, (1e9 * p_cpu / n if p_cpu else None)
    rows.append(
        dict(
            benchmark=f"IV Black-76, {n:,} options: process CPU time per option",
            metric="ns CPU / option",
            aitrade=ns,
            peer=peer,
            peer_value=p_ns,
            ratio=(p_ns / ns) if p_ns else None,
            target="<= 200 ns (10M options/s on 2 cores)",
            met=bool(ns <= 200.0),
        )
    )
    rows.append(
        dict(
            benchmark=f"IV Black-76, {n:,} options: max reprice error (time value >= 1e-8 F)",
            metric="max |price(σ̂)/price - 1|",
            aitrade=err,
            peer=peer + (f"; {p_nan} NaN rows" if p_nan else ""),
            peer_value=p_err,
            ratio=(p_err / err) if (p_err is not None and err > 0) else None,
            target="<= 1e-12, no NaN",
            met=bool(err <= 1e-12 and nan == 0),
        )
    )

    # vollib (scalar, pure Python): a subset
    m = VOLLIB_SUBSET_QUICK if quick else VOLLIB_SUBSET_FULL
    peer = f"vollib (scalar API, timed on the first {m:,} options)"
    try:
        if setup.get(VENV_NEW.name):
            raise RuntimeError(setup[VENV_NEW.name])
        v_secs, v_n, v_vol, _ = _run_peer("vollib", VENV_NEW, o, subset=m)
        v_rate = v_n / v_secs
        sub = {k: o[k][:m] for k in o}
        v_err, v_nan = reprice_error(sub, v_vol)
    except RuntimeError as e:
        print(f"[bench_iv] vollib: {e}", file=sys.stderr)
        v_rate = v_err = None
        v_nan = None
    rows.append(
        dict(
            benchmark=f"IV Black-76 ({threads} threads) vs vollib",
            metric="options/s",
            aitrade=rate,
            peer=peer,
            peer_value=v_rate,
            ratio=(rate / v_rate) if v_rate else None,
            target=f">= {TARGET_RATE:.0e} options/s",
            met=bool(rate >= TARGET_RATE),
        )
    )
    rows.append(
        dict(
            benchmark=f"IV Black-76, first {m:,} options: max reprice error",
            metric="max |price(σ̂)/price - 1|",
            aitrade=reprice_error({k: o[k][:m] for k in o}, vol[:m])[0],
            peer=peer + (f"; {v_nan} NaN rows" if v_nan else ""),
            peer_value=v_err,
            ratio=None,
            target="<= 1e-12",
            met=None,
        )
    )
    if rows[-1]["peer_value"] is not None and rows[-1]["aitrade"] > 0:
        rows[-1]["ratio"] = rows[-1]["peer_value"] / rows[-1]["aitrade"]
    rows[-1]["met"] = bool(rows[-1]["aitrade"] <= 1e-12)
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import print_table  # the one table printer of bench/

    print_table(run(quick="--quick" in sys.argv))
