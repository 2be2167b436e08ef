"""The scheduler daemon on SQLite and PostgreSQL: two schedulers create each due run exactly once; a scheduler
killed with SIGKILL mid-run is taken over and the run completes exactly once; a missed deadline raises one
Slack-compatible alert at a local HTTP receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_jobs import WAIT, Receiver, nb_row, notebook, wait_for

from aitrade import jobs, store
from aitrade.audit import AuditRecord
from aitrade.scheduler import Scheduler, due_times

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    client = jobs.dask_client(n_workers=2, threads_per_worker=1)
    client.wait_for_workers(2, timeout=60)
    jobs.warm_workers(client, wait=60)
    yield client
    jobs.close_client(client)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def runs_of(pipeline: str) -> list[jobs.JobRun]:
    with store.session_scope() as s:
        rows = list(s.execute(sa.select(jobs.JobRun).where(jobs.JobRun.pipeline == pipeline)).scalars())
        for r in rows:
            s.expunge(r)
        return rows


def test_two_schedulers_create_each_due_run_exactly_once(db, tmp_path):
    f = tmp_path / "pipelines.yaml"
    f.write_text(
        "pipelines:\n  every_minute:\n    notebooks:\n      a: {path: a.ipynb}\n"
        "    schedule: {cron: '* * * * *', missed: catch_up, catch_up_window: 30m}\n"
    )
    now = datetime(2018, 6, 29, 21, 0, 30, tzinfo=UTC)
    spec = jobs.get_pipeline("every_minute", f)
    assert len(due_times(spec, now, None)) == 30
    a, b = Scheduler(f, db_url=db), Scheduler(f, db_url=db)
    created: list[str] = []
    barrier = threading.Barrier(2)

    def fire(s):
        barrier.wait()
        for _ in range(3):  # each scheduler ticks again while the other is still inserting
            created.extend(s.fire_due(now))

    ths = [threading.Thread(target=fire, args=(s,)) for s in (a, b)]
    [t.start() for t in ths]
    [t.join(WAIT) for t in ths]
    rows = runs_of("every_minute")
    assert len(rows) == 30 and len(created) == 30
    assert len({r.scheduled_for for r in rows}) == 30
    assert min(r.scheduled_for for r in rows) == datetime(2018, 6, 29, 20, 31, tzinfo=UTC)
    assert all(
        r.trigger == "schedule" and r.user == "system:scheduler" and r.status == "queued" for r in rows
    )
    with store.session_scope() as s:
        n = s.scalar(
            sa.select(sa.func.count()).select_from(AuditRecord).where(AuditRecord.action == "job.run.create")
        )
    assert n == 30  # no audit record for the refused duplicates


def _daemon(tmp_path: Path, cluster, db_url: str, f: Path, name: str) -> subprocess.Popen:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AITRADE_") or k.startswith("AITRADE_TEST_")
    }
    env.update(
        AITRADE_SETTINGS=os.environ["AITRADE_SETTINGS"],
        AITRADE_DATABASE__URL=db_url,
        AITRADE_DASK_ADDRESS=cluster.scheduler.address,
        AITRADE_ARCHIVE__URL=str(tmp_path / "archive"),
        AITRADE_LOGGING__FILE=str(tmp_path / f"{name}.log"),
    )
    code = "from aitrade.cli import main; main()"
    args = ["scheduler", "--pipelines", str(f), "--lease", "3", "--stale", "4", "--poll", "0.2"]
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=tmp_path,
        stdout=open(tmp_path / f"{name}.out", "w"),
        stderr=subprocess.STDOUT,
    )


def test_scheduler_killed_mid_run_is_taken_over_and_the_run_completes_once(db, cluster, tmp_path):
    for n in ("n1", "n2", "n3"):
        sleep = "time.sleep(6)\n" if n == "n2" else ""
        notebook(
            tmp_path / f"{n}.ipynb",
            f"import time\n{sleep}open({str(tmp_path / (n + '.txt'))!r}, 'a').write('ran\\n')",
        )
    # a schedule that is due exactly once: this very minute, caught up within the hour
    t = datetime.now(UTC).replace(second=0, microsecond=0)
    f = tmp_path / "pipelines.yaml"
    f.write_text(
        "pipelines:\n  crashy:\n    notebooks:\n      n1: {path: n1.ipynb}\n      n2: {path: n2.ipynb, after: [n1]}\n"
        "      n3: {path: n3.ipynb, after: [n2]}\n"
        f"    schedule: {{cron: '{t.minute} {t.hour} {t.day} {t.month} *', missed: catch_up, catch_up_window: 1h}}\n"
        "    retries: {attempts: 2, backoff: 0.5}\n"
    )
    a = _daemon(tmp_path, cluster, db, f, "a")
    b = None
    try:
        run = wait_for(lambda: (rs := runs_of("crashy")) and rs[0])
        wait_for(lambda: nb_row(run.id, "n2").status == "running" and nb_row(run.id, "n2").worker)
        a.send_signal(signal.SIGKILL)  # mid-run: n1 done, n2 executing on a worker
        a.wait(10)
        assert nb_row(run.id, "n3").status == "pending"
        b = _daemon(tmp_path, cluster, db, f, "b")
        wait_for(lambda: runs_of("crashy")[0].status in jobs.TERMINAL, timeout=WAIT)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(20)
    rows = runs_of("crashy")
    assert len(rows) == 1, "the run was created once"
    r = rows[0]
    assert r.status == "succeeded", (tmp_path / "b.out").read_text()[-2000:]
    assert r.scheduled_for == t and r.lease_epoch == 2  # claimed by a, taken over by b
    st = jobs.run_status(r.id)
    assert [(n["notebook"], n["status"], n["attempts"]) for n in st["notebooks"]] == [
        ("n1", "succeeded", 1),
        ("n2", "succeeded", 1),  # adopted while it was still heartbeating, not run again
        ("n3", "succeeded", 1),
    ]
    for n in ("n1", "n2", "n3"):
        assert (tmp_path / f"{n}.txt").read_text() == "ran\n", f"{n} executed more than once"
    with store.session_scope() as s:
        fin = s.scalar(
            sa.select(sa.func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.action == "job.run.finish", AuditRecord.target == f"job_run:{r.id}")
        )
    assert fin == 1, "the run finished exactly once"


def test_missed_deadline_alerts_once(db, tmp_path, receiver):
    f = tmp_path / "pipelines.yaml"
    f.write_text(
        "pipelines:\n  late:\n    notebooks:\n      a: {path: a.ipynb}\n"
        "    schedule: {cron: '0 * * * *', missed: catch_up, catch_up_window: 2h, deadline: 10m}\n"
        f"    alerts:\n      - url: {receiver.url}\n        events: [deadline]\n"
    )
    now = datetime.now(UTC)
    a, b = Scheduler(f, db_url=db), Scheduler(f, db_url=db)  # no executor: nobody runs it, so it is late
    a.tick(now)
    b.tick(now)
    late = [r for r in runs_of("late") if r.deadline_at < now]
    assert late, "a run more than 10 minutes old exists"
    a.tick(now + timedelta(seconds=1))
    b.tick(now + timedelta(seconds=1))
    assert len(receiver.bodies) == len(late)
    body = receiver.bodies[0]
    assert (
        body["aitrade"]["event"] == "deadline"
        and "deadline" in body["text"]
        and late[0].id in {x["aitrade"]["run_id"] for x in receiver.bodies}
    )
    with store.session_scope() as s:
        assert all(s.get(jobs.JobRun, r.id).deadline_alerted for r in late)
