"""`aitrade up` leaves nothing behind (issue 16's first check): every process of a platform carries its id, a second
`up` from the same folder is refused, an `up` killed with SIGKILL leaves the Hub's services running and the next
`up` stops them before it starts, a crashed service is started again by the supervisor, and Ctrl-C stops every
process the platform started, the Hub's services too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from hubutil import free_port, free_port_block, platform_env

from aitrade import platform

API_HEALTH = "/services/aitrade-api/health"
READY = "/services/aitrade-api/readyz"


def _up(root: Path, env: dict, name: str, timeout: float = 240) -> tuple[subprocess.Popen, Path]:
    "`aitrade up` (Hub, API, backups, anchors; no scheduler, clock or desk) in `root`, started: its process and log."
    log = root / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from aitrade.cli import main; main()", "up", "--no-market-clock", "--no-desk",
             "--no-scheduler", "--first-run", ""],
            env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while "aitrade platform started" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    return proc, log


def test_a_killed_platform_leaves_nothing_the_next_start_does_not_stop(tmp_path):
    port = free_port_block(8)  # the Hub's services default to its port + 1..7
    metrics = free_port_block(6)  # `up`'s own /metrics, the services' at +1..+5
    (tmp_path / "settings.ini").write_text(
        f"[hub]\nport = {port}\n[dask]\nscheduler_port = {free_port()}\ndashboard_port = 0\n"
        f"[telemetry]\nmetrics_port = {metrics}\n"
    )
    env = platform_env(
        AITRADE_SETTINGS=str(tmp_path / "settings.ini"),
        AITRADE_HUB_INTERNAL_PORT=str(free_port()),
        AITRADE_TELEMETRY__METRICS_PORT=str(metrics),
        **{f"AITRADE_{k}_PORT": str(free_port()) for k in ("API", "VOILA", "DASHBOARDS", "HUB_PROXY_API")},
    )
    url, pid = f"http://127.0.0.1:{port}", str(tmp_path.resolve())
    first, _ = _up(tmp_path, env, "up-1")
    try:
        assert requests.get(url + READY, timeout=10).status_code == 200  # "started" means the API is ready
        ours = platform.members(pid)
        api = [p for p in ours if "aitrade.api" in " ".join(p.cmdline())]
        assert api, [p.cmdline() for p in ours]  # the Hub's own service carries the platform's id

        again = subprocess.run(
            [sys.executable, "-c", "from aitrade.cli import main; main()", "up"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert again.returncode == 1 and "is already running" in again.stdout + again.stderr, again
        assert all(p.is_running() for p in ours)  # refused, not swept

        os.kill(first.pid, signal.SIGKILL)  # no chance to stop anything
        first.wait(30)
        assert api[0].is_running()  # orphaned, still holding its port: what the next start must clean up

        second, log = _up(tmp_path, env, "up-2")
        assert "an earlier, killed `aitrade up` left running" in log.read_text(), log.read_text()
        assert not any(p.is_running() for p in ours)
        assert requests.get(url + API_HEALTH, timeout=10).status_code == 200  # the new API, on the same port

        backup = [p for p in platform.members(pid) if p.cmdline()[-4:-2] == ["backup", "run"]]
        assert len(backup) == 1, [p.cmdline() for p in platform.members(pid)]
        backup[0].kill()  # a crashed service: the supervisor starts it again after its backoff
        deadline = time.monotonic() + 60
        while "restarted backup (restart 1)" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert "backup exited with -9; restarting in 1 s" in log.read_text()
        prom = requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=10).text
        assert 'aitrade_service_restarts_total{service="backup"} 1.0' in prom, prom
        assert 'aitrade_service_up{service="backup"} 1.0' in prom, prom

        second.send_signal(signal.SIGINT)  # Ctrl-C
        second.wait(120)
        assert "aitrade platform stopped" in log.read_text(), log.read_text()[-3000:]
        assert platform.members(pid) == [], [p.cmdline() for p in platform.members(pid)]
    finally:
        platform.sweep(pid)


def test_a_benchmarks_hub_leaves_no_process_and_no_port_behind(tmp_path):
    "bench/bench_api.py and bench/bench_dashboards.py start the platform's Hub with hubutil.Hub: its stop leaves nothing."
    from hubutil import Hub

    api_port = free_port()
    hub = Hub(tmp_path, env={"AITRADE_API_PORT": str(api_port)})
    hub.prepare()
    hub.start()
    pid = str(tmp_path.resolve())
    try:
        deadline = time.monotonic() + 90
        while requests.get(hub.url + READY, timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the API did not become ready behind the Hub"
            time.sleep(0.5)
        ours = platform.members(pid)
        assert any("aitrade.api" in " ".join(p.cmdline()) for p in ours), [p.cmdline() for p in ours]
    finally:
        hub.stop()
    assert platform.members(pid) == [], [p.cmdline() for p in platform.members(pid)]
    assert not platform.port_open("127.0.0.1", hub.port) and not platform.port_open("127.0.0.1", api_port)
