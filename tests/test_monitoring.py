"""Metrics everywhere (issue 16, item 1): the alert rules and their promtool tests, the Alertmanager routes, the
shipped scrape configuration, and a running platform whose every target answers /metrics with the families the
README lists, while every metric that an alert rule or a Grafana panel names was seen in that scrape."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from hubutil import free_port, free_port_block, platform_env
from prometheus_client.parser import text_string_to_metric_families

from aitrade import monitoring, platform
from aitrade.config import Settings

ROOT = Path(__file__).resolve().parents[1]
MON = ROOT / "monitoring"
ALERTS = MON / "alerts.yml"
GRAFANA = MON / "grafana" / "aitrade.json"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # CI installs Debian's prometheus and prometheus-alertmanager; never a silent skip
        pytest.fail(f"{name} is not installed (apt-get install prometheus prometheus-alertmanager)")
    return path


def _run(*cmd: str, cwd: Path = MON) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def _rules() -> dict[str, dict]:
    return {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}


def _panel_exprs() -> list[str]:
    dash = json.loads(GRAFANA.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


# --- PromQL: the metric names an expression reads -----------------------------------------------------------
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}


def metric_names(expr: str) -> set[str]:
    "The metric names a PromQL expression selects (functions, keywords, labels, strings and durations left out)."
    e = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w:.])[A-Za-z_:][A-Za-z0-9_:]*", e):  # not the unit of a number (5m, 1e6)
        tail = e[m.end() :].lstrip()
        if tail.startswith("(") or m.group() in _KEYWORDS:  # a function call or a keyword
            continue
        names.add(m.group())
    return names


def test_metric_names_of_promql():
    assert metric_names('sum by (le) (rate(a_bucket{x="y(z)"}[5m])) / on() b > 2 * c') == {
        "a_bucket",
        "b",
        "c",
    }
    assert metric_names("time() - x offset 5m") == {"x"}


# --- the rules, their tests, the routes ---------------------------------------------------------------------
def test_alert_rules_check_and_every_alert_has_a_firing_and_a_quiet_case():
    _run(_tool("promtool"), "check", "rules", "alerts.yml")
    out = _run(_tool("promtool"), "test", "rules", "alerts_test.yml")
    assert "SUCCESS" in out, out
    cases = [
        c
        for t in yaml.safe_load((MON / "alerts_test.yml").read_text())["tests"]
        for c in t["alert_rule_test"]
    ]
    for name in _rules():
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no firing case"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no quiet case"
    # the seed's list: service down, job failed or late, stale market data, limit breach, kill switch, backup age,
    # error rate and latency objectives
    wanted = {"AitradeTargetDown", "AitradeServiceDown", "AitradeJobFailed", "AitradeJobDeadlineMissed",
              "AitradeMarketDataStale", "AitradeLimitBreach", "AitradeKillSwitchEngaged", "AitradeBackupTooOld",
              "AitradeApiErrorRate", "AitradeApiLatency"}  # fmt: skip
    assert wanted <= set(_rules())


def test_a_broken_rule_fails_promtool(tmp_path):
    "The check above can fail: promtool refuses a rule whose expression does not parse."
    (tmp_path / "bad.yml").write_text("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: rate(up[5m]\n")
    r = subprocess.run([_tool("promtool"), "check", "rules", str(tmp_path / "bad.yml")], capture_output=True)
    assert r.returncode != 0


def test_alertmanager_routes_pages_to_pagerduty_and_tickets_to_slack():
    am = _tool("amtool")
    _run(am, "check-config", "alertmanager.yml")
    route = lambda *labels: _run(am, "config", "routes", "test", "--config.file=alertmanager.yml", *labels).split()[0]  # fmt: skip
    assert route("severity=page", "alertname=AitradeKillSwitchEngaged") == "pagerduty-and-slack"
    assert route("severity=ticket", "alertname=AitradeJobFailed") == "slack"
    cfg = yaml.safe_load((MON / "alertmanager.yml").read_text())
    receivers = {r["name"]: r for r in cfg["receivers"]}
    assert receivers["pagerduty-and-slack"]["pagerduty_configs"][0]["routing_key_file"]
    assert {r["labels"]["severity"] for r in _rules().values()} == {"page", "ticket"}


def test_grafana_queries_parse():
    exprs = _panel_exprs()
    assert len(exprs) >= 25
    rules = {"groups": [{"name": "grafana", "rules": [{"record": f"grafana:panel{i}", "expr": e} for i, e in enumerate(exprs)]}]}  # fmt: skip
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"grafana-exprs-{os.getpid()}.yml"
    path.write_text(yaml.safe_dump(rules))
    try:
        _run(_tool("promtool"), "check", "rules", str(path))
    finally:
        path.unlink()


def test_the_shipped_scrape_configuration_is_the_defaults(monkeypatch):
    for k in list(os.environ):
        if k.startswith("AITRADE_") and k.endswith("_PORT"):
            monkeypatch.delenv(k)
    assert (MON / "prometheus.yml").read_text() == monitoring.render(monitoring.scrape_config(Settings()))


def test_readme_lists_every_family():
    readme = (ROOT / "README.md").read_text()
    for service, families in monitoring.FAMILIES.items():
        for f in families:
            assert f"`{f}`" in readme, f"README: {service}'s {f} is not listed"


# --- a running platform, scraped -----------------------------------------------------------------------------
def _families(text: str) -> set[str]:
    "Family and sample names of a scrape (a counter's `_total`, a histogram's `_bucket`, even without samples)."
    out = set()
    for fam in text_string_to_metric_families(text):
        out.add(fam.name)
        out |= {s.name for s in fam.samples}
        if fam.type == "counter":
            out.add(fam.name + "_total")
        if fam.type == "histogram":
            out |= {fam.name + x for x in ("_bucket", "_sum", "_count")}
    return out


def _scrape(cfg: dict) -> dict[str, tuple[str, str]]:
    "service -> (url, body) for every target of a scrape configuration."
    out = {}
    for job in cfg["scrape_configs"]:
        headers = {}
        if auth := job.get("authorization"):
            headers["Authorization"] = "Bearer " + Path(auth["credentials_file"]).read_text().strip()
        for sc in job["static_configs"]:
            url = f"http://{sc['targets'][0]}{job['metrics_path']}"
            r = requests.get(url, headers=headers, timeout=30)
            assert r.status_code == 200, (url, r.status_code, r.text[:300])
            out[sc["labels"]["service"]] = (url, r.text)
    return out


def test_every_service_of_a_running_platform_exports_its_metrics(tmp_path):
    hub_port, base = free_port_block(8), free_port_block(6)  # the Hub's services default to its port + 1..7
    (tmp_path / "settings.ini").write_text(
        f"[hub]\nport = {hub_port}\n[dask]\nscheduler_port = {free_port()}\ndashboard_port = {free_port()}\n"
        f"[telemetry]\nmetrics_port = {base}\n[backup]\ninterval_s = 10\ndrill_interval_s = 1\n"
    )
    env = platform_env(
        AITRADE_SETTINGS=str(tmp_path / "settings.ini"),
        AITRADE_HUB_INTERNAL_PORT=str(free_port()),
        AITRADE_TELEMETRY__METRICS_PORT=str(base),
        **{f"AITRADE_{k}_PORT": str(free_port()) for k in ("API", "VOILA", "DASHBOARDS", "HUB_PROXY_API")},
    )
    cli = [sys.executable, "-c", "from aitrade.cli import main; main()"]
    # a limit, so the desk has one to report (the database made as `up` makes it)
    seed = (
        "from aitrade import store, limits; from aitrade.auth import Principal; store.upgrade()\n"
        "with store.session_scope() as s: limits.set_limit(s, Principal('test:risk', frozenset({'limits:write'})),"
        " 'portfolio', 'delta', 1e6, 'monitoring test')"
    )
    subprocess.run([sys.executable, "-c", seed], env=env, cwd=tmp_path, check=True, timeout=120)
    log = tmp_path / "up.log"
    pid = str(tmp_path.resolve())
    with open(log, "w") as out:
        up = subprocess.Popen([*cli, "up", "--first-run", ""], env=env, cwd=tmp_path, stdout=out,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "aitrade platform started" not in log.read_text():
            assert up.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        said = log.read_text()
        written = tmp_path / "var" / "metrics" / "prometheus.yml"
        assert f"Prometheus configuration in {written}" in said, said
        assert f"desk                 http://127.0.0.1:{base + 3}/metrics" in said, said
        _run(_tool("promtool"), "check", "config", str(written), cwd=tmp_path)  # rule files and token found
        cfg = yaml.safe_load(written.read_text())

        # the services' own endpoints: alive and ready
        for name, off in (("platform", 0), ("job-scheduler", 1), ("market-clock", 2), ("desk", 3), ("backup", 4), ("audit-anchor", 5)):  # fmt: skip
            for probe in ("livez", "readyz"):
                r = requests.get(f"http://127.0.0.1:{base + off}/{probe}", timeout=10)
                assert r.status_code == 200, (name, probe, r.text)
        ready = requests.get(f"http://127.0.0.1:{base + 3}/readyz", timeout=10).json()
        assert ready == {"status": "ready", "checks": {"database": "ok", "bus": "ok"}}

        # behind the proxy, /metrics asks for read:metrics: nothing without the token
        for svc in ("aitrade-api", "aitrade-dashboards", "aitrade-voila"):
            r = requests.get(f"http://127.0.0.1:{hub_port}/services/{svc}/metrics", timeout=30)
            assert r.status_code in (401, 403), (svc, r.status_code)
            r = requests.get(f"http://127.0.0.1:{hub_port}/services/{svc}/readyz", timeout=30)
            assert r.status_code == 200, (svc, r.text)

        # every target answers with its families; the backup drill's appear once the first drill is recorded
        deadline = time.monotonic() + 120
        while True:
            scraped = _scrape(cfg)
            seen = {svc: _families(body) for svc, (_, body) in scraped.items()}
            if "aitrade_backup_drill_ok" in seen["aitrade-api"] and "aitrade_limit_breached" in seen["desk"]:
                break
            assert time.monotonic() < deadline, sorted(seen["aitrade-api"])
            time.sleep(2)
        assert set(scraped) == set(monitoring.FAMILIES), sorted(scraped)
        for svc, families in monitoring.FAMILIES.items():
            missing = [f for f in families if f not in seen[svc]]
            assert not missing, f"{svc} ({scraped[svc][0]}) lacks {missing}"
        assert 'aitrade_limit_breached{limit="portfolio delta"} 0.0' in scraped["desk"][1] or re.search(
            r'aitrade_limit_breached\{limit="[^"]+"\} 0\.0', scraped["desk"][1]
        ), scraped["desk"][1]
        assert re.search(r"^aitrade_kill_switch_engaged 0\.0$", scraped["desk"][1], re.M)

        # every metric an alert or a Grafana panel reads was in that scrape
        everything = set().union(*seen.values()) | {"up"}  # `up` is Prometheus' own, per target
        for name, rule in _rules().items():
            assert metric_names(rule["expr"]) <= everything, (name, metric_names(rule["expr"]) - everything)
        for expr in _panel_exprs():
            assert metric_names(expr) <= everything, (expr, metric_names(expr) - everything)

        up.send_signal(signal.SIGINT)
        up.wait(120)
        assert "aitrade platform stopped" in log.read_text(), log.read_text()[-3000:]
        assert platform.members(pid) == []
    finally:
        if up.poll() is None:
            up.kill()
        platform.sweep(pid)
