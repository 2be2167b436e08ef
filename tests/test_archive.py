"""Executed-notebook archive: write-once content addressing, manifests and their hash chain, tamper detection
(one changed byte, a removed run, a reordering), offline verification of exported bundles, retention and legal
hold, audit records written with every change, rendering and the `aitrade archive` CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aitrade import __version__, archive, config, store
from aitrade.archive import (
    GENESIS,
    Archive,
    ArchiveError,
    LegalHoldError,
    RetentionError,
    RunNotFound,
    WriteOnceError,
    archive_run,
    environment_lock,
    git_state,
    sha256_hex,
)
from aitrade.audit import AuditRecord, canonical_json
from aitrade.cli import archive as archive_cli

ROOT = Path(__file__).resolve().parents[1]
GIT = {"commit": "0123abcd", "dirty": False}


def small_nb(text: str, error: bool = False, html: str | None = None):
    nb = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python", "version": "3.11.9"},
        }
    )
    c = nbformat.v4.new_code_cell(f"print({text!r})", execution_count=1)
    c.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text + "\n")]
    if error:
        c.outputs.append(
            nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=["ValueError: bad"])
        )
    if html:
        c.outputs.append(nbformat.v4.new_output("display_data", data={"text/html": html}))
    nb.cells = [nbformat.v4.new_markdown_cell("# run"), c]
    return nb


def fill(a: Archive, n: int = 4, pipeline: str = "report", **kw) -> list:
    return [
        a.add(small_nb(f"result {i}"), pipeline=pipeline, user="ops", run_id=f"{pipeline}-{i}", git=GIT, **kw)
        for i in range(1, n + 1)
    ]


@pytest.fixture
def arc(tmp_path, sqlite_db):
    a = Archive(tmp_path / "archive")
    fill(a)
    return a


def local(a: Archive, rel: str) -> Path:
    return Path(a._p(rel))


def flip(path: Path, pos: int, xor: int = 0x01) -> bytes:
    "Change one byte of a (read-only) archived file; return the original bytes."
    orig = path.read_bytes()
    b = bytearray(orig)
    b[pos % len(b)] ^= xor
    os.chmod(path, 0o644)
    path.write_bytes(bytes(b))
    return orig


def restore(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)


def audit_rows(url: str, action: str | None = None) -> list[AuditRecord]:
    with store.session_scope(url) as s:
        q = sa.select(AuditRecord).order_by(AuditRecord.seq)
        if action:
            q = q.where(AuditRecord.action == action)
        return list(s.execute(q).scalars())


# --- manifest ----------------------------------------------------------------------------------------------------


def test_manifest_records_provenance(tmp_path, db):
    a = Archive(tmp_path / "archive", policies={"orders": "FINRA"})
    nb_path = tmp_path / "out.ipynb"
    nbformat.write(small_nb("P&L 1.5m"), nb_path)
    data_file = tmp_path / "quotes.csv"
    data_file.write_bytes(b"abc")
    t0 = datetime(2025, 3, 3, 21, 0, tzinfo=UTC)
    r = archive_run(
        nb_path,
        archive=a,
        pipeline="orders",
        user="rita",
        run_id="orders-2025-03-03",
        parameters={"date": "2025-03-03", "limit": 1e6},
        inputs={"quotes": data_file, "fills": b"", "model": "sha256:" + "ab" * 32},
        started_at=t0,
        finished_at=t0 + timedelta(minutes=2, seconds=3.5),
    )
    m = r.manifest
    assert a.get_object(r.notebook_sha256) == nb_path.read_bytes()  # stored byte for byte
    assert m["notebook"] == {
        "sha256": sha256_hex(nb_path.read_bytes()),
        "size": nb_path.stat().st_size,
        "name": "out.ipynb",
    }
    # FIPS 180-2 test vectors: SHA-256("abc") and SHA-256("")
    assert (
        m["inputs"]["quotes"]["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert m["inputs"]["quotes"]["source"] == str(data_file)
    assert m["inputs"]["fills"] == {
        "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "size": 0,
    }
    assert m["inputs"]["model"] == {"sha256": "ab" * 32}
    assert m["parameters"] == {"date": "2025-03-03", "limit": 1e6}
    assert (m["pipeline"], m["run_id"], m["user"], m["status"], m["error"]) == (
        "orders",
        "orders-2025-03-03",
        "rita",
        "succeeded",
        None,
    )
    assert m["timings"] == {
        "started_at": "2025-03-03T21:00:00.000000+00:00",
        "finished_at": "2025-03-03T21:02:03.500000+00:00",
        "duration_s": 123.5,
    }
    assert m["kernel"] == {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
        "language_version": "3.11.9",
    }
    assert m["aitrade_version"] == __version__
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert git_state(ROOT)["commit"] == head.stdout.strip()
    lock = environment_lock()
    assert m["environment"]["sha256"] == sha256_hex(lock.encode())
    assert a.get_object(m["environment"]["sha256"]).decode() == lock  # the lock itself is archived
    assert f"fsspec=={__import__('fsspec').__version__}" in lock.splitlines()
    assert m["environment"]["distributions"] == len(lock.splitlines()) - 1
    assert (m["retention"]["rule"], m["retention"]["years"]) == ("FINRA", 6)
    assert datetime.fromisoformat(m["retention"]["until"]) == archive.store._add_years(r.archived_at, 6)
    assert (m["seq"], m["prev_manifest"]) == (1, GENESIS)
    # the manifest is stored as canonical JSON at its own hash
    assert sha256_hex(a.get_object(r.manifest_sha256)) == r.manifest_sha256
    assert json.loads(a.get_object(r.manifest_sha256)) == m
    # default retention comes from settings, a number of years and a rule name override it
    assert a.add(small_nb("x"), pipeline="report", user="ops", git=GIT).manifest["retention"]["years"] == 7
    assert (
        a.add(small_nb("y"), pipeline="report", user="ops", git=GIT, retention=10).manifest["retention"][
            "years"
        ]
        == 10
    )


def test_failed_runs_are_archived_too(tmp_path, sqlite_db):
    a = Archive(tmp_path / "archive")
    r = a.add(
        small_nb("boom", error=True),
        pipeline="calibrate",
        user="ops",
        status="failed",
        error="PapermillExecutionError: ValueError: bad",
        git=GIT,
    )
    assert (r.status, r.manifest["error"]) == ("failed", "PapermillExecutionError: ValueError: bad")
    assert [x.run_id for x in a.list(status="failed")] == [r.run_id]
    assert r.run_id.startswith("calibrate-")


def test_chain_links_each_manifest_to_the_previous(arc):
    runs = arc.list()
    assert [r.seq for r in runs] == [4, 3, 2, 1]
    for newer, older in zip(runs, runs[1:], strict=False):
        assert newer.manifest["prev_manifest"] == older.manifest_sha256
    assert runs[-1].manifest["prev_manifest"] == GENESIS
    assert arc.head() == (4, runs[0].manifest_sha256)
    assert [r.run_id for r in arc.list(limit=2)] == ["report-4", "report-3"]
    assert arc.list(pipeline="other") == []


# --- write once ----------------------------------------------------------------------------------------------------


def test_write_to_existing_address_is_refused(arc):
    r = arc.show("report-2")
    nb = arc.get_object(r.notebook_sha256)
    with pytest.raises(WriteOnceError, match=f"object {r.notebook_sha256}: address already exists"):
        arc.put_object(nb)
    with pytest.raises(WriteOnceError, match="chain/000000000002.json: already exists"):
        arc.create("chain/000000000002.json", b"{}")
    with pytest.raises(WriteOnceError, match="run report-2: already archived"):
        arc.add(small_nb("other"), pipeline="report", user="ops", run_id="report-2", git=GIT)
    assert arc.get_object(r.notebook_sha256) == nb
    assert arc.head()[0] == 4
    # local objects are read-only files
    mode = stat.S_IMODE(local(arc, arc.object_path(r.notebook_sha256)).stat().st_mode)
    assert mode == 0o444


def test_identical_outputs_share_one_object(tmp_path, sqlite_db, monkeypatch):
    a = Archive(tmp_path / "archive")
    nb = small_nb("same")
    r1 = a.add(nb, pipeline="p", user="ops", run_id="p-1", git=GIT, retention=1)
    r2 = a.add(nb, pipeline="p", user="ops", run_id="p-2", git=GIT, retention=1)
    assert r1.notebook_sha256 == r2.notebook_sha256 and r1.manifest_sha256 != r2.manifest_sha256
    monkeypatch.setattr(archive.manifest, "now", lambda: store.utcnow() + timedelta(days=400))
    t = a.delete("p-1", actor="ops", reason="retention over")
    assert t["notebook_removed"] is False  # p-2 still needs it
    assert a.get_object(r2.notebook_sha256)
    assert a.delete("p-2", actor="ops", reason="retention over")["notebook_removed"] is True
    assert not a.exists(a.object_path(r2.notebook_sha256))
    assert a.verify().ok


# --- verification ------------------------------------------------------------------------------------------------


def test_intact_archive_verifies(arc):
    res = arc.verify(audit=True)
    assert res.ok and res.runs == 4 and res.head_seq == 4 and res.problems == []
    assert str(res).startswith("archive intact: 4 runs, head #4")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    run=st.integers(1, 4),
    kind=st.sampled_from(["notebook", "manifest"]),
    pos=st.integers(0, 10**6),
    xor=st.integers(1, 255),
)
def test_any_one_byte_change_is_detected_and_named(arc, run, kind, pos, xor):
    r = arc.show(f"report-{run}")
    path = local(arc, arc.object_path(r.notebook_sha256 if kind == "notebook" else r.manifest_sha256))
    orig = flip(path, pos, xor)
    try:
        res = arc.verify()
        assert not res.ok
        assert res.broken_runs == [f"report-{run}"], str(res)
        assert f"{kind} does not match its hash (altered)" in str(res)
    finally:
        restore(path, orig)
    assert arc.verify().ok


def test_first_middle_last_byte_of_every_object(arc):
    for r in arc.list():
        for sha, kind in ((r.notebook_sha256, "notebook"), (r.manifest_sha256, "manifest")):
            path = local(arc, arc.object_path(sha))
            n = path.stat().st_size
            for pos in (0, n // 2, n - 1):
                orig = flip(path, pos)
                res = arc.verify()
                restore(path, orig)
                assert res.broken_runs == [r.run_id] and kind in str(res), (r.run_id, kind, pos)


def test_changed_chain_entry_pointer_or_environment_is_detected(arc):
    p = local(arc, "chain/000000000003.json")
    orig = p.read_bytes()
    restore(p, orig.replace(b'"seq":3', b'"seq":2'))
    res = arc.verify()
    assert res.broken_runs == ["report-3"] and "runs reordered" in str(res)
    restore(p, orig)
    p = local(arc, "runs/report-2.json")
    orig = flip(p, 7)
    res = arc.verify()
    assert res.broken_runs == ["report-2"] and "run pointer" in str(res)
    restore(p, orig)
    env = arc.show("report-1").manifest["environment"]["sha256"]
    p = local(arc, arc.object_path(env))
    orig = flip(p, 100)
    res = arc.verify()
    assert res.broken_runs == ["report-1", "report-2", "report-3", "report-4"]  # one lock, shared by all
    assert "environment lock does not match its hash" in str(res)
    restore(p, orig)
    assert arc.verify().ok


def _remove_run(a: Archive, run_id: str) -> None:
    r = a.show(run_id)
    for rel in (
        f"chain/{r.seq:012d}.json",
        f"runs/{run_id}.json",
        a.object_path(r.manifest_sha256),
        a.object_path(r.notebook_sha256),
    ):
        local(a, rel).unlink()


def test_removed_run_is_detected(arc):
    _remove_run(arc, "report-2")
    res = arc.verify()
    assert not res.ok
    text = str(res)
    assert "archive (#2): chain position #2 missing (run removed)" in text
    assert "run report-3 (#3): link to the previous manifest (run report-1) does not match" in text
    # the audit log knows which run it was
    res = arc.verify(audit=True)
    assert "run report-2 (#2): in the audit log" in str(res) and "not in the archive (removed)" in str(res)


def test_removed_notebook_manifest_or_chain_entry_is_named(arc):
    r = arc.show("report-3")
    local(arc, arc.object_path(r.notebook_sha256)).unlink()
    res = arc.verify()
    assert res.broken_runs == ["report-3"] and "notebook missing" in str(res)
    local(arc, arc.object_path(r.manifest_sha256)).unlink()
    res = arc.verify()
    assert res.broken_runs == ["report-3"] and "manifest" in str(res) and "missing (removed)" in str(res)
    local(arc, "chain/000000000003.json").unlink()
    res = arc.verify()
    assert "report-3" in res.broken_runs and "run pointer without a chain entry" in str(res)


def test_removed_newest_run_is_caught_by_the_audit_anchor(arc):
    _remove_run(arc, "report-4")
    assert arc.verify().ok  # storage alone cannot see a cut-off tail ...
    res = arc.verify(audit=True)  # ... the audit log can, and names the run
    assert res.broken_runs == ["report-4"] and "not in the archive (removed)" in str(res)


def test_reordered_runs_are_detected(arc):
    p2, p3 = local(arc, "chain/000000000002.json"), local(arc, "chain/000000000003.json")
    b2, b3 = p2.read_bytes(), p3.read_bytes()
    restore(p2, b3)
    restore(p3, b2)
    res = arc.verify()
    assert not res.ok and {"report-2", "report-3"} <= set(res.broken_runs)
    assert "runs reordered" in str(res)
    # a cleverer reordering that also rewrites the entries' own seq fields: the manifests still disagree
    restore(p2, b3.replace(b'"seq":3', b'"seq":2'))
    restore(p3, b2.replace(b'"seq":2', b'"seq":3'))
    res = arc.verify()
    assert {"report-2", "report-3"} <= set(res.broken_runs)
    assert "manifest is run report-3 #3 but the chain puts run report-3 at #2" in str(res)


def test_chain_rewritten_with_fresh_hashes_is_caught_by_the_audit_anchor(arc):
    "An attacker with storage access replaces the newest run with a consistent forgery."
    r = arc.show("report-4")
    m = dict(r.manifest, parameters={"forged": True})
    mb = canonical_json(m).encode()
    arc.put_object(mb)
    for rel, body in (
        (
            "chain/000000000004.json",
            {"seq": 4, "run_id": "report-4", "pipeline": "report", "manifest": sha256_hex(mb)},
        ),
        ("runs/report-4.json", {"seq": 4, "manifest": sha256_hex(mb)}),
    ):
        restore(local(arc, rel), canonical_json(body).encode())
    assert arc.verify().ok
    res = arc.verify(audit=True)
    assert res.broken_runs == ["report-4"] and "differs from the audit log" in str(res)


# --- export --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "tar", "tar.gz"])
def test_exported_bundle_verifies_elsewhere_offline(arc, tmp_path, monkeypatch, kind):
    dest = tmp_path / ("bundle" if kind == "folder" else f"bundle.{kind}")
    out = arc.export(dest, actor="auditor")
    assert (out["runs"], out["head"]["seq"]) == (4, 4)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / dest.name
    (shutil.copytree if kind == "folder" else shutil.copy)(dest, moved)
    shutil.rmtree(arc.url)  # the original archive is gone ...

    def no_db(*a, **k):
        raise AssertionError("offline verification touched the database")

    monkeypatch.setattr(archive.verify, "session_scope", no_db)  # ... and so is the database
    b = Archive(moved)
    res = b.verify()
    assert res.ok, str(res)
    assert res.runs == 4 and res.head_manifest == out["head"]["manifest"]
    assert [r.run_id for r in b.list()] == ["report-4", "report-3", "report-2", "report-1"]
    bundle_json = b.read("BUNDLE.json")
    assert sha256_hex(bundle_json) == out["bundle_sha256"]
    assert "aitrade archive verify" in b.read("README.txt").decode()
    if kind != "folder":
        assert out["tar_sha256"] == sha256_hex(moved.read_bytes())
        with pytest.raises(ArchiveError, match="read-only bundle"):
            b.add(small_nb("x"), pipeline="p", user="u", git=GIT)


def test_export_is_audited(arc, tmp_path):
    out = arc.export(tmp_path / "b.tar", actor="auditor")
    (rec,) = audit_rows(config.get_settings().database_url, "archive.export")
    assert (rec.actor, rec.after["bundle_sha256"], rec.after["tar_sha256"]) == (
        "auditor",
        out["bundle_sha256"],
        out["tar_sha256"],
    )


def test_tampered_bundle_is_detected(arc, tmp_path):
    dest = tmp_path / "bundle"
    arc.export(dest, actor="auditor")
    b = Archive(dest)
    r = b.show("report-2")
    p = dest / b.object_path(r.notebook_sha256)
    orig = flip(p, 50)
    res = b.verify()
    assert res.broken_runs == ["report-2"]
    assert f"bundle file {b.object_path(r.notebook_sha256)} does not match BUNDLE.json (altered)" in str(res)
    restore(p, orig)
    # cutting off the newest run (chain entry, pointer, manifest, notebook) contradicts the bundle's head
    _remove_run(b, "report-4")
    res = b.verify()
    assert "bundle was cut at head #4" in str(res) and "missing (removed)" in str(res)


def test_partial_export_and_bad_destinations(arc, tmp_path):
    out = arc.export(tmp_path / "one.tar", actor="auditor", runs=["report-2"])
    b = Archive(tmp_path / "one.tar")
    res = b.verify()
    assert res.ok and out["runs"] == 1
    assert res.notebooks_not_included == ["report-1", "report-3", "report-4"]
    assert b.get_object(b.show("report-2").notebook_sha256)
    assert not b.exists(b.object_path(b.show("report-3").notebook_sha256))
    with pytest.raises(WriteOnceError, match="already exists"):
        arc.export(tmp_path / "one.tar", actor="auditor")
    with pytest.raises(RunNotFound, match="report-9"):
        arc.export(tmp_path / "two.tar", actor="auditor", runs=["report-9"])
    assert not (tmp_path / "two.tar").exists()


# --- retention, legal hold, deletion -------------------------------------------------------------------------------


def years_later(monkeypatch, days: int) -> None:
    monkeypatch.setattr(archive.manifest, "now", lambda: store.utcnow() + timedelta(days=days))


def test_deletion_inside_retention_is_refused(arc, monkeypatch):
    with pytest.raises(RetentionError, match=r"run report-1: retained until \d{4}-.* \(default, 7 years\)"):
        arc.delete("report-1", actor="ops", reason="cleanup")
    years_later(monkeypatch, 6 * 365)
    with pytest.raises(RetentionError, match="deletion inside retention refused"):
        arc.delete("report-1", actor="ops", reason="cleanup")
    assert arc.verify().ok and arc.show("report-1").deleted is None
    assert audit_rows(config.get_settings().database_url, "archive.delete") == []


def test_retention_per_pipeline(tmp_path, sqlite_db, monkeypatch):
    a = Archive(tmp_path / "archive", policies={"orders": "FINRA", "report": "SOX", "scratch": 2})
    for p in ("orders", "report", "scratch"):
        a.add(small_nb(p), pipeline=p, user="ops", run_id=f"{p}-1", git=GIT)
    years_later(monkeypatch, 6 * 366)
    a.delete("orders-1", actor="ops", reason="FINRA 4511: 6 years over")
    a.delete("scratch-1", actor="ops", reason="2 years over")
    with pytest.raises(RetentionError, match=r"\(SOX, 7 years\)"):
        a.delete("report-1", actor="ops", reason="too early")
    with pytest.raises(ArchiveError, match="unknown rule 'SEC'"):
        Archive(tmp_path / "x", policies={"p": "SEC"})


def test_legal_hold_blocks_deletion_after_retention(arc, monkeypatch):
    url = config.get_settings().database_url
    ev = arc.hold("report-1", actor="legal", reason="matter 2025-17")
    assert arc.show("report-1").legal_hold == ev and arc.list()[-1].legal_hold == ev
    with pytest.raises(ArchiveError, match="already under legal hold"):
        arc.hold("report-1", actor="legal", reason="again")
    years_later(monkeypatch, 8 * 366)
    with pytest.raises(
        LegalHoldError, match=r"run report-1: under legal hold since .* by legal \(matter 2025-17\)"
    ):
        arc.delete("report-1", actor="ops", reason="retention over")
    assert arc.show("report-1").deleted is None
    arc.release("report-1", actor="legal", reason="matter closed")
    with pytest.raises(ArchiveError, match="not under legal hold"):
        arc.release("report-1", actor="legal", reason="again")
    t = arc.delete("report-1", actor="ops", reason="retention over")
    r = arc.show("report-1")
    assert r.deleted == t and t["notebook_removed"] and not arc.exists(arc.object_path(r.notebook_sha256))
    with pytest.raises(ArchiveError, match="already deleted"):
        arc.delete("report-1", actor="ops", reason="again")
    with pytest.raises(ArchiveError, match="nothing to hold"):
        arc.hold("report-1", actor="legal", reason="too late")
    res = arc.verify(audit=True)
    assert res.ok, str(res)  # manifest and chain entry stay; the tombstone explains the missing notebook
    acts = [(x.action, x.actor, x.target) for x in audit_rows(url) if x.action != "archive.write"]
    assert acts == [
        ("archive.hold", "legal", "archive:report-1"),
        ("archive.release", "legal", "archive:report-1"),
        ("archive.delete", "ops", "archive:report-1"),
    ]
    delete_rec = audit_rows(url, "archive.delete")[0]
    assert (
        delete_rec.after["manifest"] == r.manifest_sha256 and delete_rec.after["reason"] == "retention over"
    )
    # the hold history is a write-once chain of events
    evs = arc._hold_events("report-1")
    assert [e["action"] for e in evs] == ["hold", "release"]
    assert evs[1]["prev"] == sha256_hex(canonical_json(evs[0]).encode())


def test_forged_deletion_inside_retention_is_detected(arc):
    r = arc.show("report-2")
    tomb = {
        "run_id": "report-2",
        "seq": 2,
        "manifest": r.manifest_sha256,
        "notebook": r.notebook_sha256,
        "deleted_at": archive.iso_time(store.utcnow()),
        "actor": "mallory",
        "reason": "x",
    }
    arc.create("deleted/report-2.json", canonical_json(tomb).encode())
    local(arc, arc.object_path(r.notebook_sha256)).unlink()
    res = arc.verify()
    assert res.broken_runs == ["report-2"] and "inside retention" in str(res)


def test_bad_input_names_the_field(arc, tmp_path):
    nb = small_nb("x")
    cases = [
        (dict(pipeline="a/b"), "pipeline: must be"),
        (dict(run_id="../x"), "run_id: must be"),
        (dict(user=""), "user: must be a non-empty string"),
        (dict(status="done"), "status: must be one of succeeded, failed"),
        (dict(started_at=datetime(2025, 1, 1)), "started_at: naive datetime"),
        (
            dict(started_at=datetime(2025, 1, 2, tzinfo=UTC), finished_at=datetime(2025, 1, 1, tzinfo=UTC)),
            "finished_at: 2025-01-01T00:00:00+00:00 is before started_at",
        ),
        (dict(parameters={"x": object()}), "parameters/extra: not JSON-serialisable"),
        (dict(inputs={"q": tmp_path / "missing.csv"}), "inputs['q']: cannot read"),
        (dict(inputs={"q": "sha256:xyz"}), "inputs['q']: 'sha256:' must be followed by 64 hex digits"),
        (dict(inputs={"q": 3}), "inputs['q']: give bytes"),
        (dict(retention=0), "retention: years must be between 1 and 100"),
        (dict(error=ValueError("x")), "error: must be a string"),
    ]
    for kw, msg in cases:
        fields = dict(pipeline="report", user="ops", git=GIT) | kw
        with pytest.raises(ArchiveError) as e:
            arc.add(nb, **fields)
        assert msg in str(e.value), (kw, str(e.value))
    with pytest.raises(ArchiveError, match="notebook: not a Jupyter notebook"):
        arc.add(b'{"cells": 3}', pipeline="report", user="ops", git=GIT)
    with pytest.raises(ArchiveError, match="notebook: cannot read"):
        arc.add(tmp_path / "nope.ipynb", pipeline="report", user="ops", git=GIT)
    with pytest.raises(ArchiveError, match="actor: must be"):
        arc.hold("report-1", actor="", reason="x")
    with pytest.raises(ArchiveError, match="reason: must be"):
        arc.delete("report-1", actor="ops", reason=" ")
    with pytest.raises(RunNotFound, match="run report-9: not in archive"):
        arc.show("report-9")
    assert arc.head()[0] == 4 and arc.verify(audit=True).ok  # nothing half-written


# --- transactions and concurrency -----------------------------------------------------------------------------------


def test_failed_storage_write_leaves_no_audit_record(arc, monkeypatch):
    url = config.get_settings().database_url
    before = len(audit_rows(url))
    real = Archive.create

    def failing(self, rel, data):
        if rel.startswith("chain/"):
            raise OSError("bucket unavailable")
        return real(self, rel, data)

    monkeypatch.setattr(Archive, "create", failing)
    with pytest.raises(OSError, match="bucket unavailable"):
        arc.add(small_nb("z"), pipeline="report", user="ops", run_id="report-5", git=GIT)
    monkeypatch.setattr(Archive, "create", real)
    assert len(audit_rows(url)) == before and arc.head()[0] == 4 and not arc.exists("runs/report-5.json")
    assert arc.verify(audit=True).ok  # an unreferenced object is harmless
    assert arc.add(small_nb("z"), pipeline="report", user="ops", run_id="report-5", git=GIT).seq == 5


def test_failed_audit_write_leaves_nothing_in_storage(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/unmigrated.db"
    a = Archive(tmp_path / "archive", db_url=url)
    with pytest.raises(sa.exc.OperationalError, match="audit_head"):
        a.add(small_nb("z"), pipeline="report", user="ops", git=GIT)
    assert a.files("") == []


def test_concurrent_writers_never_fork_the_chain(tmp_path, db):
    a = Archive(tmp_path / "archive")
    errors = []

    def writer(w):
        try:
            for i in range(4):
                Archive(tmp_path / "archive").add(
                    small_nb(f"{w}-{i}"), pipeline="p", user=f"u{w}", run_id=f"w{w}-{i}", git=GIT
                )
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    res = a.verify(audit=True)
    assert res.ok and res.runs == 16, str(res)
    assert sorted(r.seq for r in a.list()) == list(range(1, 17))


# --- storage backends ------------------------------------------------------------------------------------------------


def test_memory_filesystem_and_default_location(sqlite_db, tmp_path):
    import fsspec

    a = Archive("memory://test-archive-" + os.urandom(4).hex())
    try:
        fill(a, 3)
        assert a.url.startswith("memory://") and a.verify(audit=True).ok
        fs = fsspec.filesystem("memory")
        p = a._p(a.object_path(a.show("report-2").manifest_sha256))
        fs.pipe_file(p, fs.cat_file(p).replace(b'"user":"ops"', b'"user":"eve"'))
        assert a.verify().broken_runs == ["report-2"]
        with pytest.raises(ArchiveError, match="run report-2: manifest does not match its address"):
            a.show("report-2")
        assert [r.intact for r in a.list()] == [True, False, True]
        out = a.export(tmp_path / "m.tar", actor="auditor")
        assert out["runs"] == 3 and Archive(tmp_path / "m.tar").verify().broken_runs == ["report-2"]
    finally:
        a.fs.rm(a.root, recursive=True)
    # default: [archive] url = var/archive under the project root
    d = Archive()
    assert d.url == str(config.get_settings().root / "var" / "archive")
    d.add(small_nb("x"), pipeline="p", user="ops", run_id="p-1", git=GIT)
    assert (tmp_path / "var" / "archive" / "runs" / "p-1.json").is_file()


# --- render ----------------------------------------------------------------------------------------------------------


def test_render_writes_read_only_html(tmp_path, sqlite_db):
    a = Archive(tmp_path / "archive")
    r = a.add(
        small_nb("P&L 1.5m", error=True, html="<b>bold</b><script>alert(1)</script>"),
        pipeline="report",
        user="ops",
        run_id="r-1",
        status="failed",
        error="ValueError: bad",
        git=GIT,
    )
    out = a.render("r-1", tmp_path / "r-1.html")
    html = Path(out).read_text()
    assert "P&amp;L 1.5m" in html and "ValueError" in html and "<b>bold</b>" in html
    assert "<script>alert(1)" not in html  # untrusted output is sanitised
    assert r.manifest_sha256 in html and r.notebook_sha256 in html and "failed" in html
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o444
    with pytest.raises(WriteOnceError, match="already exists"):
        a.render("r-1", tmp_path / "r-1.html")
    p = local(a, a.object_path(r.notebook_sha256))
    flip(p, 10)
    with pytest.raises(ArchiveError, match=r"run r-1: object .*\(altered\); refusing to render"):
        a.render("r-1", tmp_path / "r-2.html")


# --- CLI ---------------------------------------------------------------------------------------------------------


def test_cli(arc, tmp_path, monkeypatch):
    monkeypatch.setenv("AITRADE_ARCHIVE__URL", arc.url)
    config.reload_settings()
    run = CliRunner().invoke
    r = run(archive_cli.app, ["list"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == [
        "seq",
        "run_id",
        "pipeline",
        "status",
        "user",
        "archived_at",
        "retain_until",
        "hold",
        "deleted",
    ]
    assert [ln.split()[1] for ln in lines[1:]] == ["report-4", "report-3", "report-2", "report-1"]
    r = run(archive_cli.app, ["list", "--json", "--limit", "1"])
    assert json.loads(r.output)["run_id"] == "report-4"
    r = run(archive_cli.app, ["show", "report-2"])
    assert r.exit_code == 0 and json.loads(r.output)["manifest"]["run_id"] == "report-2"
    r = run(archive_cli.app, ["show", "report-9"])
    assert r.exit_code == 2 and "run report-9: not in archive" in r.output
    r = run(archive_cli.app, ["verify"])  # the configured archive, checked against the audit log
    assert r.exit_code == 0 and r.output.startswith("archive intact: 4 runs"), r.output
    r = run(archive_cli.app, ["export", str(tmp_path / "b.tar"), "--actor", "auditor"])
    assert r.exit_code == 0 and "exported 4 runs" in r.output
    r = run(archive_cli.app, ["verify", str(tmp_path / "b.tar")])
    assert r.exit_code == 0 and "archive intact: 4 runs" in r.output
    r = run(archive_cli.app, ["render", "report-1", "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0 and (tmp_path / "r.html").is_file()
    r = run(archive_cli.app, ["hold", "report-1", "--reason", "matter 7", "--actor", "legal"])
    assert r.exit_code == 0 and "under legal hold" in r.output
    r = run(archive_cli.app, ["delete", "report-1", "--reason", "cleanup", "--actor", "ops"])
    assert r.exit_code == 2 and "retained until" in r.output
    years_later(monkeypatch, 8 * 366)
    r = run(archive_cli.app, ["delete", "report-1", "--reason", "cleanup", "--actor", "ops"])
    assert r.exit_code == 2 and "under legal hold" in r.output
    r = run(archive_cli.app, ["release", "report-1", "--reason", "closed", "--actor", "legal"])
    assert r.exit_code == 0
    r = run(archive_cli.app, ["delete", "report-1", "--reason", "cleanup", "--actor", "ops"])
    assert r.exit_code == 0 and "notebook deleted" in r.output
    p = local(arc, arc.object_path(arc.show("report-3").notebook_sha256))
    flip(p, 33)
    r = run(archive_cli.app, ["verify"])
    assert (
        r.exit_code == 1
        and "archive BROKEN" in r.output
        and "run report-3 (#3): notebook does not match" in r.output
    )
    r = run(archive_cli.app, ["verify", str(tmp_path / "b.tar")])  # the earlier bundle is unaffected
    assert r.exit_code == 0
    monkeypatch.setenv("AITRADE_DATABASE__URL", f"sqlite:///{tmp_path}/empty.db")
    config.reload_settings()
    r = run(archive_cli.app, ["verify"])
    assert r.exit_code == 2 and "cannot check against the audit log" in r.output and "--no-audit" in r.output
    r = run(archive_cli.app, ["verify", "--no-audit"])
    assert r.exit_code == 1 and "run report-3 (#3)" in r.output


def test_bundle_tar_is_plain_tar(arc, tmp_path):
    "An auditor without aitrade can still open the bundle and check addresses with sha256sum."
    arc.export(tmp_path / "b.tar", actor="auditor")
    with tarfile.open(tmp_path / "b.tar") as t:
        names = t.getnames()
        assert "BUNDLE.json" in names and "chain/000000000001.json" in names
        for n in names:
            if n.startswith("objects/"):
                assert hashlib.sha256(t.extractfile(n).read()).hexdigest() == n.rsplit("/", 1)[1]
