"""Where the API spends a request: py-spy flame graphs of the API process under a closed loop of one client, for a
read of the limits, a chain read and an order, each direct and through the Hub's proxy (issue "latency", item 1).

    python -m venv /tmp/prof && /tmp/prof/bin/pip install py-spy   # py-spy is not a dependency of the project
    PY_SPY=/tmp/prof/bin/py-spy .venv/bin/python bench/profile_api.py docs/profiles

Writes `<kind>-<direct|proxy>.svg` to the folder given and prints the client's latency per phase. A Hub in
single-account mode in a temporary folder, the seeded desk of tests/test_dashboards.py, no rate limit, orders
small enough to pass without approval. The latencies are taken while py-spy samples (200 Hz), so they are for
comparing runs with each other, not figures against a target (bench/bench_api.py gives those).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path, seconds: float = 14.0) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import psutil
    import requests
    import test_dashboards as td
    from hubutil import Hub, free_port

    spy = os.environ.get("PY_SPY", "py-spy")
    out.mkdir(parents=True, exist_ok=True)
    ports = {f"AITRADE_{k}_PORT": str(free_port()) for k in ("API", "VOILA", "DASHBOARDS")}
    ini = "[risk]\napproval_notional = 1000000000\napproval_vega = 1000000000\n[api]\nrate_limit =\n"
    h = Hub(Path(tempfile.mkdtemp(prefix="aitrade-profile-")), extra_ini=ini, env=ports)
    h.start_as_admin()
    try:
        hdr = {"Authorization": f"token {h.make_user('tara', 'trader')}"}
        expiry = td.run_py(h, td.SEED).splitlines()[-1]
        bases = {
            "direct": f"http://127.0.0.1:{ports['AITRADE_API_PORT']}/services/aitrade-api/v1",
            "proxy": h.url + "/services/aitrade-api/v1",
        }
        api = next(
            p
            for p in psutil.Process(h.proc.pid).children(recursive=True)
            if "aitrade.api import main" in " ".join(p.cmdline())
        )

        def call(s, kind: str, base: str):
            if kind == "limits":
                return s.get(base + "/risk/limits", headers=hdr)
            if kind == "chain":
                return s.get(
                    base + "/marketdata/SPX/chain", params={"date": time.strftime("%Y-%m-%d")}, headers=hdr
                )
            body = {"client_order_id": uuid.uuid4().hex, "symbol": "SPX", "side": "buy", "quantity": 1,
                    "option_type": "C", "expiry": expiry, "strike": 100.0}  # fmt: skip
            return s.post(base + "/orders", json=body, headers=hdr)

        def loop(kind: str, base: str, secs: float) -> dict:
            s, lat, end = requests.Session(), [], time.monotonic() + secs
            while time.monotonic() < end:
                t0 = time.perf_counter()
                r = call(s, kind, base)
                lat.append((time.perf_counter() - t0) * 1000)
                assert r.status_code < 300, r.text
            lat.sort()
            return {
                "n": len(lat),
                "p50_ms": round(lat[len(lat) // 2], 2),
                "p99_ms": round(lat[int(len(lat) * 0.99)], 2),
            }

        result = {}
        for kind in ("limits", "chain", "order"):
            for where, base in bases.items():
                loop(kind, base, 3)  # warm
                rec = subprocess.Popen(
                    [spy, "record", "-o", str(out / f"{kind}-{where}.svg"), "--pid", str(api.pid),
                     "--duration", str(int(seconds) + 1), "--rate", "200", "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1)
                result[f"{kind} {where}"] = loop(kind, base, seconds)
                rec.wait()
                print(f"{kind:<7} {where:<7} {result[f'{kind} {where}']}", flush=True)
        return result
    finally:
        h.stop()


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1] if len(sys.argv) > 1 else "profiles")), indent=1))
