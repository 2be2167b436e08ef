"""Traces (issue 16, item 2), with an in-memory span exporter: an order from the API through the database and the
bus to the desk that takes its fill is one trace, and its log lines carry the trace id; a job run from the
scheduler's driver through Dask into the notebook's cells is one trace, carried into the kernel."""

from __future__ import annotations

import io
import json
import logging

import nbformat
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from seed import fresh_quote

from aitrade import config, desk, jobs, logs, store, telemetry
from aitrade.api import StaticResolver, create_app, hub_model
from aitrade.auth import Principal


@pytest.fixture
def traced(tmp_path, monkeypatch):
    "A fresh platform in `tmp_path`, tracing into memory; tracing is off again afterwards."
    (tmp_path / "settings.ini").write_text(f"[database]\nurl = sqlite:///{tmp_path}/t.db\n")
    monkeypatch.setenv("AITRADE_SETTINGS", str(tmp_path / "settings.ini"))
    config.reload_settings()
    store.dispose_engines()
    store.upgrade()
    mem = InMemorySpanExporter()
    assert telemetry.setup_tracing("test", exporter=mem)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield mem
    telemetry.stop_tracing()
    root.handlers[:], root.level = (
        handlers,
        level,
    )  # as before (a handler on pytest's captured stream would outlive it)
    store.dispose_engines()
    config.get_settings.cache_clear()


def _by_name(mem) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in mem.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


def test_off_by_default_nothing_travels():
    assert not telemetry.tracing_on()
    assert telemetry.carrier() == {}
    from aitrade.bus import encode_message

    assert json.loads(encode_message({"a": 1})) == {"a": 1}  # no traceparent in a message


def test_an_order_is_one_trace_from_the_api_through_the_database_and_the_bus_to_the_desk(traced):
    exp = fresh_quote("SPX")  # a call, strike 100, quoted now
    tokens = {"tok-tom": hub_model("tom", ["orders:submit", "orders:read"])}
    d = desk.Desk(throttle_s=0)  # the desk, reading the fills from the bus
    fills = d.bus.subscribe(desk.FILLS_STREAM, last_id="$", block_ms=0)
    buf = io.StringIO()
    logs.configure_logging(config.Settings(logging={"format": "json"}), stream=buf)
    with TestClient(create_app(resolver=StaticResolver(tokens))) as client:
        r = client.post(
            "/services/aitrade-api/v1/orders",
            headers={"Authorization": "token tok-tom"},
            json=dict(client_order_id="trace-1", symbol="SPX", side="buy", quantity=1, option_type="C",
                      expiry=str(exp), strike=100.0),
        )  # fmt: skip
        client.app.state.fanout.close()
    assert r.status_code == 201 and r.json()["state"] == "filled", r.text
    got = list(fills)
    assert len(got) == 1 and got[0][1]["order_id"] == r.json()["id"] and "traceparent" in got[0][1]
    d.on_fill(got[0][1])

    spans = _by_name(traced)
    server = [s for s in traced.get_finished_spans() if s.kind.name == "SERVER" and "orders" in s.name]
    assert len(server) == 1, [s.name for s in traced.get_finished_spans()]
    tid = server[0].context.trace_id
    sql = [s for s in traced.get_finished_spans() if s.attributes.get("db.system") == "sqlite"]
    assert sql and all(s.context.trace_id == tid for s in sql if s.start_time >= server[0].start_time
                       and s.end_time <= server[0].end_time)  # fmt: skip
    (fill_span,) = spans["desk.fill"]
    assert fill_span.context.trace_id == tid  # the desk continues the API's trace from the bus message
    assert fill_span.attributes["order_id"] == str(r.json()["id"])
    # the access log line of that request carries the trace id beside the correlation id
    lines = [json.loads(x) for x in buf.getvalue().splitlines() if x.startswith("{")]
    (line,) = [x for x in lines if "POST /services/aitrade-api/v1/orders -> 201" in x["event"]]
    assert line["trace_id"] == format(tid, "032x") and line["correlation_id"] == r.headers["x-request-id"], (
        line
    )


def test_a_job_run_is_one_trace_from_the_driver_through_dask_into_the_cells_and_the_kernel(traced, tmp_path):
    from distributed import Client

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})  # fmt: skip
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os\nprint('TRACEPARENT=' + os.environ.get('TRACEPARENT', ''))"),
        nbformat.v4.new_code_cell("y = x + 1"),
    ]
    nbformat.write(nb, str(tmp_path / "a.ipynb"))
    (tmp_path / "pipelines.yaml").write_text("pipelines:\n  t:\n    notebooks:\n      a: {path: a.ipynb}\n")
    spec = jobs.get_pipeline("t", tmp_path / "pipelines.yaml")
    run_id = jobs.create_run(spec, principal=Principal.with_roles("olga", ["ops"]))
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        status = jobs.execute_run(run_id, client, archive_url=str(tmp_path / "archive"),
                                  output_dir=str(tmp_path / "runs"), engine="papermill", timeout=180)  # fmt: skip
    assert status == "succeeded", jobs.run_status(run_id)
    spans = _by_name(traced)
    (run,) = spans["job.run"]
    tid = run.context.trace_id
    (task,) = spans["job.notebook"]
    assert task.context.trace_id == tid and task.parent.span_id == run.context.span_id  # through Dask's task
    cells = spans["notebook.cell"]
    assert len(cells) == 3 and all(
        c.context.trace_id == tid and c.parent.span_id == task.context.span_id for c in cells
    )
    assert [c.attributes["cell.first_line"] for c in cells] == ["x = 1", "import os", "y = x + 1"]
    out = nbformat.read(str(next((tmp_path / "runs").rglob("a.*.ipynb"))), as_version=4)
    printed = "".join(o.get("text", "") for c in out.cells for o in c.get("outputs", []))
    assert f"TRACEPARENT=00-{format(tid, '032x')}-" in printed, printed  # the kernel holds the run's trace
