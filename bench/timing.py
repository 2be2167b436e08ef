"""The timer and the result row every bench_*.py shares; `bench/run.py` prints the rows as one table.

from timing import best_of, row
t = best_of(lambda: price(...), repeat=5)      # t.wall, t.cpu: the fastest run; t.result: what the last run returned
rows.append(row("BS price, 10M", "options/s", n / t.wall, "NumPy/SciPy", n / t_peer.wall, target=">= 5x", need=5))
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple


class Timing(NamedTuple):
    "The fastest of several runs: its wall-clock seconds, the process CPU seconds of that run, and its result."

    wall: float
    cpu: float
    result: Any


def best_of(fn: Callable[[], Any], repeat: int = 3) -> Timing:
    """Call `fn` `repeat` times; the fastest run (wall clock) with its CPU time, and the last run's return value.

    No result is kept alive while another run is timed: holding a large output (the Greeks of 10M options are
    720 MB) across runs slowed the next run by ~10% here, a cost of the harness and not of the code timed."""
    best = Timing(math.inf, math.inf, None)
    n = max(1, repeat)
    for i in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best.wall:
            best = Timing(wall, cpu, None)
        if i < n - 1:
            del out
    return best._replace(result=out)


def row(
    benchmark: str,
    metric: str,
    ours: float | None,
    peer: str | None = None,
    peer_value: float | None = None,
    *,
    higher_is_better: bool = True,
    target: str = "",
    need: float | None = None,
    met: bool | None = None,
) -> dict:
    """One result: the ratio is ours over the peer's (inverted when lower is better, e.g. latency), so > 1 means
    aitrade is ahead; `met` is given, or judged as ratio >= `need` when a needed ratio is named."""
    ratio = None
    if ours and peer_value:
        ratio = float(ours / peer_value if higher_is_better else peer_value / ours)
    if met is None and need is not None and ratio is not None:
        met = bool(ratio >= need)
    return {
        "benchmark": benchmark,
        "metric": metric,
        "aitrade": None if ours is None else float(ours),
        "peer": peer,
        "peer_value": None if peer_value is None else float(peer_value),
        "ratio": ratio,
        "target": target,
        "met": met,
    }
