"""Pipelines on a real Dask LocalCluster (worker processes), on SQLite and PostgreSQL: independent notebooks in
parallel, a failing notebook (run failed, failing cell and error recorded, output archived, alert received by a
local HTTP receiver), a worker killed mid-notebook (retried per policy, run completes), live logs, cancel,
timeout, retry, replay of an archived run, and the `aitrade jobs` CLI."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from aitrade import jobs, store
from aitrade.archive import Archive
from aitrade.audit import AuditRecord
from aitrade.auth import Principal
from aitrade.cli import jobs as jobs_cli

ROOT = Path(__file__).resolve().parents[1]
OPS = Principal.with_roles("olga", ["ops"])
WAIT = 120  # seconds: the longest any test waits for a run


@pytest.fixture(scope="module")
def cluster():
    "One LocalCluster of 2 worker processes for the module (allowed-failures 0, as `dask_client` sets it)."
    client = jobs.dask_client(n_workers=2, threads_per_worker=1)
    client.wait_for_workers(2, timeout=60)
    assert all(n >= 1 for n in jobs.warm_workers(client, wait=60).values())
    yield client
    jobs.close_client(client)


class Receiver:
    "A Slack-webhook stand-in on 127.0.0.1: records every JSON body POSTed to it."

    def __init__(self):
        self.bodies: list[dict] = []
        got = self.bodies

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                got.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def notebook(path: Path, *sources: str, params: str = "x = 1") -> None:
    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, str(path))


def pipeline(tmp_path: Path, body: str, name: str = "t") -> jobs.PipelineSpec:
    f = tmp_path / "pipelines.yaml"
    f.write_text(f"pipelines:\n  {name}:\n" + body)
    return jobs.get_pipeline(name, f)


def drive(run_id, client, tmp_path, **kw) -> str:
    return jobs.execute_run(
        run_id,
        client,
        archive_url=str(tmp_path / "archive"),
        output_dir=str(tmp_path / "runs"),
        engine="warm",
        timeout=WAIT,
        **kw,
    )


def wait_for(cond, timeout=WAIT, every=0.1):
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if v := cond():
            return v
        time.sleep(every)
    raise AssertionError("condition not met in time")


def nb_row(run_id, name):
    with store.session_scope() as s:
        r = s.execute(
            sa.select(jobs.JobNotebookRun).where(
                jobs.JobNotebookRun.run_id == run_id, jobs.JobNotebookRun.notebook == name
            )
        ).scalar_one()
        s.expunge(r)
        return r


# -- definitions ---------------------------------------------------------------------------------------------------


def test_shipped_daily_pipeline_validates_before_its_notebooks_exist():
    spec = jobs.get_pipeline("daily", ROOT / "jobs" / "pipelines.yaml")
    assert spec.order() == ["ingest", "calibrate", "signals", "risk_orders", "report"]
    assert spec.schedule.cron == "30 17 * * 1-5" and spec.schedule.calendar == "XNYS"
    assert spec.concurrency == 1 and spec.retention == "SOX"
    assert spec.alerts[0].url_env == "AITRADE_ALERT_WEBHOOK"


def test_cli_refuses_bad_parameters_naming_them(db):
    r = CliRunner().invoke(
        jobs_cli.app,
        ["run", "daily", "--file", str(ROOT / "jobs/pipelines.yaml"), "--param", "as_of=29/06/2018"],
    )
    assert r.exit_code == 2 and "parameter 'as_of': expected date (YYYY-MM-DD), got '29/06/2018'" in r.output
    r = CliRunner().invoke(
        jobs_cli.app,
        ["run", "daily", "--file", str(ROOT / "jobs/pipelines.yaml"), "--param", "asof=2018-06-29"],
    )
    assert r.exit_code == 2 and "unknown parameter 'asof'" in r.output
    with store.session_scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(jobs.JobRun)) == 0  # nothing half-written


def test_missing_notebook_fails_the_run_at_run_time_naming_it(db, cluster, tmp_path):
    notebook(tmp_path / "b.ipynb", "print('b')")
    spec = pipeline(
        tmp_path, "    notebooks:\n      a: {path: nowhere.ipynb}\n      b: {path: b.ipynb, after: [a]}\n"
    )
    rid = jobs.create_run(spec, principal=OPS)
    assert drive(rid, cluster, tmp_path) == "failed"
    st = jobs.run_status(rid)
    assert "notebook file not found" in st["error"] and "nowhere.ipynb" in st["error"]
    assert [n["status"] for n in st["notebooks"]] == ["failed", "skipped"]


# -- execution on Dask ----------------------------------------------------------------------------------------------


def test_independent_notebooks_run_in_parallel_on_two_workers(db, cluster, tmp_path):
    stamp = "import time, os, json\nt0 = time.time()\ntime.sleep(2)\nprint(json.dumps([t0, time.time(), os.getppid()]))"
    notebook(tmp_path / "a.ipynb", "print('a', x)")
    notebook(tmp_path / "b.ipynb", stamp)
    notebook(tmp_path / "c.ipynb", stamp)
    spec = pipeline(
        tmp_path,
        "    notebooks:\n      a: {path: a.ipynb}\n      b: {path: b.ipynb, after: [a]}\n"
        "      c: {path: c.ipynb, after: [a]}\n    parameters:\n      x: {type: int, default: 1}\n",
    )
    rid = jobs.create_run(spec, {"x": 4}, principal=OPS)
    assert drive(rid, cluster, tmp_path) == "succeeded"
    st = jobs.run_status(rid)
    assert all(n["status"] == "succeeded" and n["attempts"] == 1 for n in st["notebooks"])
    spans = {}
    for n in ("b", "c"):
        out = nbformat.read(nb_row(rid, n).output, as_version=4)
        spans[n] = json.loads(out.cells[-1].outputs[0]["text"])
    (b0, b1, bw), (c0, c1, cw) = spans["b"], spans["c"]
    assert b0 < c1 and c0 < b1, f"b {b0}-{b1} and c {c0}-{c1} did not overlap"
    assert bw != cw  # two worker processes
    # every executed notebook archived, with the run's parameters
    arch = Archive(tmp_path / "archive")
    for n in st["notebooks"]:
        r = arch.show(n["archive_id"])
        assert r.status == "succeeded" and r.manifest["extra"]["job_run"] == rid
    assert arch.show(f"{rid}.a.1").manifest["parameters"] == {"x": 4}


def test_failing_notebook_fails_run_records_cell_archives_and_alerts(db, cluster, tmp_path, receiver):
    notebook(tmp_path / "ok.ipynb", "print('fine')")
    notebook(
        tmp_path / "bad.ipynb", "y = 2 * x", "print('before the error')\nraise ValueError(f'bad quote {y}')"
    )
    spec = pipeline(
        tmp_path,
        "    notebooks:\n      ok: {path: ok.ipynb}\n      bad: {path: bad.ipynb, after: [ok]}\n"
        "      after_bad: {path: ok.ipynb, after: [bad]}\n"
        "    parameters:\n      x: {type: int, default: 21}\n"
        f"    alerts:\n      - url: {receiver.url}\n        events: [failure]\n",
    )
    rid = jobs.create_run(spec, principal=OPS)
    assert drive(rid, cluster, tmp_path) == "failed"
    st = jobs.run_status(rid)
    by = {n["notebook"]: n for n in st["notebooks"]}
    assert (by["ok"]["status"], by["bad"]["status"], by["after_bad"]["status"]) == (
        "succeeded",
        "failed",
        "skipped",
    )
    bad = by["bad"]
    assert bad["attempts"] == 1 and bad["error"] == "ValueError: bad quote 42"
    assert bad["failing_cell"] == 3 and bad["failing_source"].endswith("raise ValueError(f'bad quote {y}')")
    assert st["error"] == "notebook bad failed after 1 attempt(s) at cell 3: ValueError: bad quote 42"
    # the failed output is archived, with its traceback
    arch = Archive(tmp_path / "archive")
    rec = arch.show(bad["archive_id"])
    assert rec.status == "failed" and "cell 3: ValueError: bad quote 42" in rec.manifest["error"]
    assert b"bad quote 42" in arch.get_object(rec.notebook_sha256)
    # one Slack-compatible alert
    wait_for(lambda: receiver.bodies, timeout=10)
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert rid in body["text"] and "failure" in body["text"] and "failing cell 3" in body["text"]
    assert body["blocks"][0]["type"] == "section" and body["aitrade"]["status"] == "failed"
    # the run's creation and end are audited
    with store.session_scope() as s:
        acts = (
            s.execute(sa.select(AuditRecord.action).where(AuditRecord.target == f"job_run:{rid}"))
            .scalars()
            .all()
        )
    assert acts == ["job.run.create", "job.run.finish"]


def test_worker_killed_mid_notebook_is_retried_and_run_completes(db, cluster, tmp_path):
    notebook(
        tmp_path / "slow.ipynb",
        "print('start', flush=True)",
        "import time\ntime.sleep(20 if x == 1 else 0)",
        "print('done')",
    )
    spec = pipeline(
        tmp_path,
        "    notebooks:\n      slow: {path: slow.ipynb}\n    parameters:\n      x: {type: int, default: 1}\n"
        "    retries: {attempts: 2, backoff: 0.5}\n",
    )
    rid = jobs.create_run(spec, principal=OPS)
    result = {}
    th = threading.Thread(target=lambda: result.setdefault("status", drive(rid, cluster, tmp_path)))
    th.start()
    row = wait_for(lambda: (r := nb_row(rid, "slow")).worker and r.cells_done >= 3 and r)
    pid = int(row.worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)  # the Dask worker process, mid-notebook
    # the retry runs the same notebook again: let it finish quickly this time
    notebook(
        tmp_path / "slow.ipynb", "print('start', flush=True)", "import time\ntime.sleep(0)", "print('done')"
    )
    th.join(WAIT)
    assert result.get("status") == "succeeded"
    st = jobs.run_status(rid)
    nb = st["notebooks"][0]
    assert nb["status"] == "succeeded" and nb["attempts"] == 2
    first, second = nb["history"]
    assert (
        first["status"] == "failed" and "worker lost" in first["error"] and "KilledWorker" in first["error"]
    )
    assert second["status"] == "succeeded" and second["worker"] != first["worker"]
    wait_for(lambda: len(cluster.scheduler_info()["workers"]) == 2, timeout=60)  # the nanny restarted it


def test_logs_stream_while_running_and_cli_follow(db, cluster, tmp_path):
    notebook(
        tmp_path / "chatty.ipynb",
        "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.7)",
        "print('end')",
    )
    spec = pipeline(tmp_path, "    notebooks:\n      chatty: {path: chatty.ipynb}\n")
    rid = jobs.create_run(spec, principal=OPS)
    th = threading.Thread(target=drive, args=(rid, cluster, tmp_path))
    th.start()
    seen = []
    status = jobs.follow_logs(rid, lambda r: seen.append((time.time(), r)), poll_s=0.1, timeout=WAIT)
    th.join(WAIT)
    assert status == "succeeded"
    fin = jobs.run_status(rid)["finished_at"]
    from datetime import datetime

    t_end = datetime.fromisoformat(fin).timestamp()
    ticks = [(t, r) for t, r in seen if r["stream"] == "stdout" and "tick 0" in r["text"]]
    assert ticks and ticks[0][0] < t_end - 0.5, "the first line arrived only after the run ended"
    assert any(r["stream"] == "progress" and r["text"].strip() == "cell 3/3" for _, r in seen)
    out = CliRunner().invoke(jobs_cli.app, ["logs", rid, "--follow"])
    assert out.exit_code == 0 and "[chatty#1] tick 2" in out.output and f"run {rid}: succeeded" in out.output
    out = CliRunner().invoke(jobs_cli.app, ["status", rid])
    assert "chatty" in out.output and "succeeded" in out.output and "cells 3/3" in out.output


def test_cancel_interrupts_a_running_notebook(sqlite_db, cluster, tmp_path):
    notebook(tmp_path / "long.ipynb", "import time\ntime.sleep(60)")
    spec = pipeline(tmp_path, "    notebooks:\n      long: {path: long.ipynb}\n")
    rid = jobs.create_run(spec, principal=OPS)
    result = {}
    th = threading.Thread(target=lambda: result.setdefault("status", drive(rid, cluster, tmp_path)))
    th.start()
    wait_for(lambda: nb_row(rid, "long").worker)
    t = time.monotonic()
    r = CliRunner().invoke(jobs_cli.app, ["cancel", rid])
    assert r.exit_code == 0, r.output
    th.join(WAIT)
    assert result["status"] == "cancelled" and time.monotonic() - t < 20
    st = jobs.run_status(rid)
    assert (
        st["notebooks"][0]["status"] == "cancelled" and "cancelled on request" in st["notebooks"][0]["error"]
    )


def test_timeout_kills_the_notebook_and_counts_as_a_failure(sqlite_db, cluster, tmp_path):
    notebook(tmp_path / "long.ipynb", "import time\ntime.sleep(60)")
    spec = pipeline(tmp_path, "    notebooks:\n      long: {path: long.ipynb, timeout: 3}\n")
    rid = jobs.create_run(spec, principal=OPS)
    t = time.monotonic()
    assert drive(rid, cluster, tmp_path) == "failed"
    assert time.monotonic() - t < 30
    nb = jobs.run_status(rid)["notebooks"][0]
    assert nb["error"].startswith("timeout: notebook long ran longer than 3 s")
    assert Archive(tmp_path / "archive").show(nb["archive_id"]).status == "failed"  # partial output archived


def test_retry_reruns_only_what_failed(sqlite_db, cluster, tmp_path):
    notebook(tmp_path / "a.ipynb", "print('a')")
    notebook(tmp_path / "b.ipynb", "assert x > 1, 'x too small'")
    spec = pipeline(
        tmp_path,
        "    notebooks:\n      a: {path: a.ipynb}\n      b: {path: b.ipynb, after: [a]}\n"
        "    parameters:\n      x: {type: int, default: 1}\n",
    )
    rid = jobs.create_run(spec, principal=OPS)
    assert drive(rid, cluster, tmp_path) == "failed"
    notebook(tmp_path / "b.ipynb", "assert x > 0, 'x too small'")
    r = CliRunner().invoke(jobs_cli.app, ["retry", rid, "--queue"])
    assert r.exit_code == 0, r.output
    assert drive(rid, cluster, tmp_path) == "succeeded"
    st = jobs.run_status(rid)
    assert [(n["notebook"], n["attempts"]) for n in st["notebooks"]] == [("a", 1), ("b", 2)]
    assert st["attempt"] == 2


def test_replay_reports_per_cell_differences(sqlite_db, cluster, tmp_path):
    data = tmp_path / "quotes.csv"
    data.write_text("SPX,100\n")
    notebook(
        tmp_path / "r.ipynb",
        "from aitrade.jobs import record_inputs\nrecord_inputs(quotes=path)",
        "print(open(path).read().strip(), x)",
        "print('constant')",
        params="path = ''\nx = 0",
    )
    spec = pipeline(
        tmp_path,
        "    notebooks:\n      r: {path: r.ipynb}\n    parameters:\n      path: {type: str}\n"
        "      x: {type: int, default: 5}\n",
    )
    rid = jobs.create_run(spec, {"path": str(data)}, principal=OPS)
    assert drive(rid, cluster, tmp_path) == "succeeded"
    arch = Archive(tmp_path / "archive")
    aid = f"{rid}.r.1"
    assert arch.show(aid).manifest["inputs"]["quotes"]["sha256"]  # the declared input was hashed
    same = jobs.replay(rid, principal=OPS, archive=arch, engine="warm")
    assert same.identical and same.notebooks[0].inputs == {"quotes": "same"}
    assert arch.show(same.notebooks[0].replay_id).manifest["extra"]["replay_of"] == aid
    data.write_text("SPX,101\n")
    diff = jobs.replay(aid, principal=OPS, archive=arch, engine="warm")
    assert not diff.identical and diff.notebooks[0].inputs == {"quotes": "changed"}
    changed = diff.changed()
    assert len(changed) == 1 and changed[0][1].index == 2 and changed[0][1].status == "changed"
    assert "-[stdout] SPX,100 5" in changed[0][1].diff() and "+[stdout] SPX,101 5" in changed[0][1].diff()
    assert "cell 2 changed" in str(diff)


def test_cli_run_pipeline_now_on_the_configured_cluster(sqlite_db, cluster, tmp_path, monkeypatch):
    from aitrade import config

    monkeypatch.setenv("AITRADE_DASK_ADDRESS", cluster.scheduler.address)
    monkeypatch.setenv("AITRADE_ARCHIVE__URL", str(tmp_path / "archive"))
    config.reload_settings()
    notebook(tmp_path / "ingest.ipynb", "print('ingest', as_of)", params="as_of = ''")
    notebook(tmp_path / "report.ipynb", "print('report', as_of)", params="as_of = ''")
    f = tmp_path / "pipelines.yaml"
    f.write_text(
        "pipelines:\n  daily:\n    notebooks:\n      ingest: {path: ingest.ipynb}\n"
        "      report: {path: report.ipynb, after: [ingest]}\n"
        "    parameters:\n      as_of: {type: date, default: $scheduled_date}\n"
    )
    r = CliRunner().invoke(jobs_cli.app, ["run", "daily", "--file", str(f), "--param", "as_of=2018-06-29"])
    assert r.exit_code == 0, r.output
    assert "[ingest#1] ingest 2018-06-29" in r.output and "[report#1] report 2018-06-29" in r.output
    rid = jobs.list_runs("daily")[0]["id"]
    assert f"run {rid}: succeeded" in r.output
    r = CliRunner().invoke(jobs_cli.app, ["list", "--file", str(f)])
    assert "daily: manual" in r.output and "report <- ingest" in r.output
    r = CliRunner().invoke(jobs_cli.app, ["list", "--runs"])
    assert rid in r.output and "succeeded" in r.output
