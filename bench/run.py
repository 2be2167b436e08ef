"""Run every benchmark in bench/ and print one table, aitrade side by side with the peer measured in the same run.

    make bench                      # all benchmarks
    .venv/bin/python bench/run.py iv heston   # only bench_iv.py and bench_heston.py
    .venv/bin/python bench/run.py --quick     # smaller sizes, for a smoke run

Each bench_<area>.py has `run(quick=False) -> list[dict]` with the keys of COLUMNS; it times with
`timing.best_of` and makes its rows with `timing.row` (bench/timing.py). Results are also written
to bench/results/<utc time>.json. Figures depend on the machine: the targets in the issues are for 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ["benchmark", "metric", "aitrade", "peer", "peer_value", "ratio", "target", "met"]


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def print_table(rows: list[dict]) -> None:
    cells = [[_fmt(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for x in cells:
        print("  ".join(v.ljust(w) for v, w in zip(x, widths, strict=True)))


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    only = [a for a in argv if not a.startswith("-")]
    files = sorted(HERE.glob("bench_*.py"))
    if only:
        files = [f for f in files if f.stem.removeprefix("bench_") in only]
    rows: list[dict] = []
    for f in files:
        spec = importlib.util.spec_from_file_location(f.stem, f)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        t = time.perf_counter()
        try:
            rows += mod.run(quick=quick)
        except Exception as e:  # one broken benchmark must not hide the others
            rows.append({"benchmark": f.stem, "metric": f"FAILED: {type(e).__name__}: {e}"})
        print(f"# {f.name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print_table(rows)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"{stamp}.json").write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
