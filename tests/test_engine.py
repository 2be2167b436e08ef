"""The warm-kernel papermill engine: registered with papermill under its name, same outputs as plain papermill,
a fresh kernel for every notebook (no state leaks), kernels that die in the pool are replaced, a kernel killed
mid-notebook fails that notebook only, and the engine setting is validated."""

from __future__ import annotations

import os
import signal
import time

import nbformat
import papermill as pm
import pytest

from aitrade import engine


def small(path, *sources, params="x = 1"):
    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, str(path))
    return path


def outputs(nb):
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if o["output_type"] == "stream":
                out.append((o["name"], o["text"]))
            elif o["output_type"] in ("execute_result", "display_data"):
                out.append(("data", o["data"].get("text/plain")))
    return out


@pytest.fixture
def pool():
    p = engine.get_pool("python3", size=2)
    assert p.wait_ready(timeout=120), p.errors
    yield p
    engine.close_pools()


def test_registered_with_papermill_and_same_outputs_as_plain(pool, tmp_path):
    src = small(
        tmp_path / "n.ipynb",
        "import sys\nprint('hello', x)\nprint('warn', file=sys.stderr)",
        "{'x': x, 'sq': x * x}",
        "from IPython.display import display\ndisplay(3.5)",
    )
    warm = pm.execute_notebook(
        src, tmp_path / "w.ipynb", {"x": 6}, engine_name="aitrade-warm", progress_bar=False
    )
    plain = pm.execute_notebook(
        src, tmp_path / "p.ipynb", {"x": 6}, engine_name="aitrade", progress_bar=False
    )
    stock = pm.execute_notebook(src, tmp_path / "s.ipynb", {"x": 6}, progress_bar=False)
    assert outputs(warm) == outputs(plain) == outputs(stock)
    assert outputs(warm) == [
        ("stdout", "hello 6\n"),
        ("stderr", "warn\n"),
        ("data", "{'x': 6, 'sq': 36}"),
        ("data", "3.5"),
    ]
    assert warm.metadata["papermill"]["parameters"] == {"x": 6}
    assert warm.metadata["language_info"]["name"] == "python"


def test_every_notebook_gets_a_fresh_kernel(pool, tmp_path):
    a = small(tmp_path / "a.ipynb", "secret = 42\nimport os\nprint(os.getpid())")
    b = small(tmp_path / "b.ipynb", "import os\nprint('secret' in globals(), os.getpid())")
    pids = []
    for i in range(4):
        nb = engine.execute_notebook(a if i % 2 == 0 else b, tmp_path / f"o{i}.ipynb", engine="warm")
        text = nb.cells[-1].outputs[0]["text"].split()
        if i % 2:
            assert text[0] == "False", "state leaked from the previous notebook"
        pids.append(int(text[-1]))
    assert len(set(pids)) == 4
    assert pool.wait_ready(timeout=120) and pool.started == 2 + 4  # each used kernel was replaced


def test_a_kernel_that_died_in_the_pool_is_replaced(pool, tmp_path):
    for km in list(pool._ready.queue):
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
    time.sleep(0.2)
    nb = engine.execute_notebook(small(tmp_path / "n.ipynb", "print(x + 1)"), tmp_path / "o.ipynb", {"x": 1})
    assert nb.cells[-1].outputs[0]["text"] == "2\n"


def test_kernel_killed_mid_notebook_fails_only_that_notebook(pool, tmp_path):
    kms = []
    src = small(tmp_path / "slow.ipynb", "import time\ntime.sleep(30)")

    def on_kernel(km):
        kms.append(km)
        # kill it as soon as the notebook is under way
        import threading

        threading.Timer(1.0, lambda: km.provisioner.process.kill()).start()

    t = time.monotonic()
    with pytest.raises(Exception, match="(?i)kernel died|dead"):
        engine.execute_notebook(src, tmp_path / "o.ipynb", engine="warm", on_kernel=on_kernel)
    assert time.monotonic() - t < 20
    nb = engine.execute_notebook(
        small(tmp_path / "ok.ipynb", "print('ok')"), tmp_path / "ok.out.ipynb", engine="warm"
    )
    assert nb.cells[-1].outputs[0]["text"] == "ok\n"


def test_engine_setting(monkeypatch):
    "The engine and the pool size are settings ([dask] engine, kernel_pool), validated at start-up."
    from aitrade import config

    assert engine.engine_name("warm") == "aitrade-warm" and engine.engine_name("papermill") == "aitrade"
    assert engine.engine_name() == "aitrade-warm" and engine.pool_size_setting() == 2
    monkeypatch.setenv("AITRADE_DASK__ENGINE", "papermill")
    config.reload_settings()
    assert engine.engine_name() == "aitrade"
    monkeypatch.setenv("AITRADE_DASK__ENGINE", "fast")
    with pytest.raises(config.ConfigError, match=r"\[dask\] engine .*'warm' or 'papermill'"):
        config.reload_settings()
    monkeypatch.setenv("AITRADE_DASK__ENGINE", "warm")
    monkeypatch.setenv("AITRADE_DASK__KERNEL_POOL", "0")
    with pytest.raises(config.ConfigError, match=r"\[dask\] kernel_pool .*greater than or equal to 1"):
        config.reload_settings()
    with pytest.raises(engine.EngineError, match="engine: must be one of warm, papermill"):
        engine.engine_name("fast")
    with pytest.raises(engine.EngineError, match="pool size"):
        engine.KernelPool(size=0)
