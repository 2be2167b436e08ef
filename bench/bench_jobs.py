"""Jobs engine benchmarks (issue 5).

1. Per-notebook overhead of a trivial notebook (a parameters cell and a print): plain in-process papermill
   (`papermill.execute_notebook`, its nbclient engine: a kernel started and shut down per notebook) against the
   warm-kernel engine (`aitrade-warm`: a pre-started kernel from the pool, replaced after use). Median wall time
   of one notebook with the pool refilled between notebooks (the latency a notebook sees), plus the back-to-back
   rate, where kernel replacement competes for the CPU. Target: <= 0.3 s.
2. 20 independent CPU-bound notebooks (a pipeline with no dependencies) on a LocalCluster of 2 worker processes
   against 1 worker, the same pipeline through `aitrade.jobs.execute_run`, with each engine. Target: >= 1.8x.
   With the warm engine the 1-worker baseline is flattered: the replacement kernels start on the otherwise idle
   second core, while with 2 workers they compete with the notebooks for both cores (an ipykernel start costs
   roughly half a CPU-second). The papermill-engine row measures the cluster's scaling without that effect.

Run alone: `.venv/bin/python bench/bench_jobs.py [--quick]`.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _setup(tmp: Path) -> None:
    "Isolated settings and database under `tmp` (set before any worker process starts, so workers inherit it)."
    (tmp / "settings.ini").write_text("[dask]\ndashboard_port = 0\n")
    os.environ["AITRADE_SETTINGS"] = str(tmp / "settings.ini")
    os.environ["AITRADE_DATABASE__URL"] = f"sqlite:///{tmp}/bench.db"
    os.environ["AITRADE_ARCHIVE__URL"] = str(tmp / "archive")
    from aitrade import config, store

    config.reload_settings()
    store.upgrade()


def _notebook(path: Path, *sources: str, params: str = "x = 1") -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, str(path))
    return path


def bench_overhead(tmp: Path, n: int) -> list[dict]:
    import logging

    import papermill as pm

    from aitrade import engine

    logging.getLogger("papermill").setLevel(logging.WARNING)
    src = _notebook(tmp / "trivial.ipynb", "print(x)")
    pool = engine.get_pool("python3", size=2)
    pool.wait_ready(timeout=120)
    # warm up both paths (imports, first kernel)
    pm.execute_notebook(src, tmp / "o.ipynb", {"x": 0}, progress_bar=False)
    engine.execute_notebook(src, tmp / "o.ipynb", {"x": 0}, engine="warm")
    plain, warm = [], []
    for i in range(n):
        t = time.perf_counter()
        pm.execute_notebook(src, tmp / "p.ipynb", {"x": i}, progress_bar=False)
        plain.append(time.perf_counter() - t)
        pool.wait_ready(timeout=120)  # not timed: the pool refills between notebooks
        t = time.perf_counter()
        engine.execute_notebook(src, tmp / "w.ipynb", {"x": i}, engine="warm")
        warm.append(time.perf_counter() - t)
    pool.wait_ready(timeout=120)
    t = time.perf_counter()
    for i in range(n):
        engine.execute_notebook(src, tmp / "w.ipynb", {"x": i}, engine="warm")
    b2b = (time.perf_counter() - t) / n
    engine.close_pools()
    w, p = statistics.median(warm), statistics.median(plain)
    peer = f"papermill {pm.__version__} (nbclient engine, in-process)"
    return [
        {
            "benchmark": "trivial notebook overhead",
            "metric": f"s per notebook, median of {n} (pool refilled)",
            "aitrade": w,
            "peer": peer,
            "peer_value": p,
            "ratio": p / w,
            "target": "<= 0.3 s",
            "met": w <= 0.3,
        },
        {
            "benchmark": "trivial notebook, back to back",
            "metric": f"s per notebook, {n} in a row (pool size 2)",
            "aitrade": b2b,
            "peer": peer,
            "peer_value": p,
            "ratio": p / b2b,
            "target": "(informational)",
            "met": None,
        },
    ]


def _wall(n_workers: int, spec, work_s: float, engine: str) -> float:
    from aitrade import jobs
    from aitrade.auth import Principal

    client = jobs.dask_client(n_workers=n_workers, threads_per_worker=1)
    try:
        client.wait_for_workers(n_workers, timeout=120)
        jobs.warm_workers(client, wait=120)
        rid = jobs.create_run(spec, {"work": work_s}, principal=Principal.with_roles("bench", ["ops"]))
        t = time.perf_counter()
        status = jobs.execute_run(rid, client, lease_s=60, engine=engine)
        wall = time.perf_counter() - t
        if status != "succeeded":
            raise RuntimeError(f"run {rid}: {status}: {jobs.run_status(rid)['error']}")
        return wall
    finally:
        jobs.close_client(client)


def bench_scaling(tmp: Path, n_nb: int, work_s: float) -> list[dict]:
    from aitrade import jobs

    _notebook(
        tmp / "cpu.ipynb",
        "import time\nt = time.process_time()\nacc = 0\nwhile time.process_time() - t < work:\n"
        "    acc += sum(range(1000))\nprint(acc > 0)",
        params="work = 1.0",
    )
    nbs = "".join(f"      n{i:02d}: {{path: cpu.ipynb}}\n" for i in range(n_nb))
    (tmp / "pipelines.yaml").write_text(
        f"pipelines:\n  scale:\n    notebooks:\n{nbs}    parameters:\n      work: {{type: float, default: 1.0}}\n"
    )
    spec = jobs.get_pipeline("scale", tmp / "pipelines.yaml")
    rows = []
    for engine in ("papermill", "warm"):
        t1 = _wall(1, spec, work_s, engine)
        t2 = _wall(2, spec, work_s, engine)
        rows.append(
            {
                "benchmark": f"{n_nb} independent notebooks ({work_s:g} CPU-s each), engine {engine}",
                "metric": "wall s on 2 workers (peer: 1 worker); ratio = speed-up",
                "aitrade": t2,
                "peer": "aitrade on 1 worker",
                "peer_value": t1,
                "ratio": t1 / t2,
                "target": ">= 1.8x",
                "met": t1 / t2 >= 1.8,
            }
        )
    return rows


def run(quick: bool = False) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="aitrade-bench-jobs-") as d:
        tmp = Path(d)
        _setup(tmp)
        rows = bench_overhead(tmp, 5 if quick else 15)
        rows += bench_scaling(tmp, 6 if quick else 20, 0.3 if quick else 1.0)
        from aitrade import store

        store.dispose_engines()
        return rows


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    from run import print_table

    print_table(run(quick="--quick" in sys.argv))
