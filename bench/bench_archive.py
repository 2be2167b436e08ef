"""Executed-notebook archive: archiving throughput against git's content-addressed object store
(`git hash-object -w`), and verification throughput against `sha256sum -c` over the same bytes.

The archive does more per run than the peers (manifest, environment lock, chain entry, run pointer and an audit
record in a SQLite transaction), so the targets ask for a fraction of the peers' speed, not parity.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from timing import row  # the timer and row of every bench file


def _notebook(i: int, kb: int) -> bytes:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    c = nbformat.v4.new_code_cell(f"run({i})", execution_count=1)
    c.outputs = [nbformat.v4.new_output("stream", name="stdout", text=(f"{i:08d} " * 128 + "\n") * kb)]
    nb.cells = [c]
    return nbformat.writes(nb).encode()


def run(quick: bool = False) -> list[dict]:
    saved = {k: os.environ.get(k) for k in ("AITRADE_SETTINGS", "AITRADE_DATABASE__URL")}
    try:
        return _run(quick)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from aitrade import config

        config.reload_settings()


def _run(quick: bool) -> list[dict]:
    from aitrade import config, store
    from aitrade.archive import Archive, archive_run

    n, kb = (20, 64) if quick else (200, 256)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "settings.ini").write_text("")
        os.environ["AITRADE_SETTINGS"] = str(d / "settings.ini")
        os.environ["AITRADE_DATABASE__URL"] = f"sqlite:///{d}/bench.db"
        config.reload_settings()
        store.upgrade()
        nbs = d / "nbs"
        nbs.mkdir()
        paths = []
        for i in range(n):
            p = nbs / f"run-{i}.ipynb"
            p.write_bytes(_notebook(i, kb))
            paths.append(p)
        mb = sum(p.stat().st_size for p in paths) / 2**20
        a = Archive(d / "archive")
        archive_run(
            _notebook(-1, 1), archive=a, pipeline="warm", user="bench", git={"commit": None, "dirty": None}
        )

        t = time.perf_counter()
        for i, p in enumerate(paths):
            archive_run(p, archive=a, pipeline="bench", user="bench", run_id=f"b-{i}", parameters={"i": i})
        ours = n / (time.perf_counter() - t)

        peer = None
        if shutil.which("git"):
            subprocess.run(["git", "init", "-q", str(d / "repo")], check=True)
            t = time.perf_counter()
            for p in paths:  # one object at a time, as a job runner would store each run's output
                subprocess.run(
                    ["git", "-C", str(d / "repo"), "hash-object", "-w", str(p)],
                    check=True,
                    capture_output=True,
                )
            peer = n / (time.perf_counter() - t)
        rows.append(
            row(
                "archive_run",
                f"runs/s ({n} notebooks, {kb} KiB each)",
                ours,
                "git hash-object -w",
                peer,
                need=0.5,
                target=">= 0.5x git (archive also writes manifest, chain and an audit record)",
            )
        )

        t = time.perf_counter()
        res = a.verify()
        ours = mb / (time.perf_counter() - t)
        assert res.ok, str(res)
        peer = None
        if shutil.which("sha256sum"):
            objs = [str(p) for p in (d / "archive" / "objects").rglob("*") if p.is_file()]
            listing = "".join(f"{Path(o).name}  {o}\n" for o in objs)
            t = time.perf_counter()
            subprocess.run(
                ["sha256sum", "--quiet", "-c", "-"], input=listing.encode(), check=True, capture_output=True
            )
            peer = mb / (time.perf_counter() - t)
        rows.append(
            row(
                "verify",
                f"MB/s of notebooks checked ({mb:.0f} MB, {n + 1} runs)",
                ours,
                "sha256sum -c",
                peer,
                need=0.5,
                target=">= 0.5x sha256sum (verify also checks links and pointers)",
            )
        )

        t = time.perf_counter()
        out = a.export(d / "bundle.tar", actor="bench")
        export_s = time.perf_counter() - t
        t = time.perf_counter()
        ok = Archive(d / "bundle.tar").verify().ok
        bundle_verify_s = time.perf_counter() - t
        assert ok and out["runs"] == n + 1
        peer = None
        if shutil.which("tar"):
            t = time.perf_counter()
            subprocess.run(["tar", "-cf", str(d / "peer.tar"), "-C", str(d / "archive"), "."], check=True)
            peer = time.perf_counter() - t
        rows.append(
            row(
                "export",
                "seconds to write the .tar bundle",
                export_s,
                "GNU tar -cf",
                peer,
                need=0.0,
                target="report only",
            )
            | {"ratio": (peer / export_s) if peer else None, "met": None}
        )
        rows.append(
            row(
                "verify bundle",
                "seconds to verify the .tar bundle offline",
                bundle_verify_s,
                "-",
                None,
                need=0.0,
                target="report only",
            )
        )
        store.dispose_engines()
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import print_table

    print_table(run(quick="--quick" in sys.argv))
