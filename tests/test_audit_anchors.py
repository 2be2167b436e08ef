"""The audit log against its anchors outside the database (issue 14, item 0), on SQLite and PostgreSQL.

Someone who owns the database drops the append-only triggers and then cuts off the newest records and moves the
head back, deletes every record, or edits one byte of a record (and recomputes the chain after it). Each is found
by `aitrade audit verify` and named: the missing or rewritten sequence range and the last anchor that still
matches. The archive's chain and the audit log check each other both ways."""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid

import nbformat
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hubutil import run_cli_here as _cli

from aitrade import audit, config, store
from aitrade.archive import Archive, anchors, archive_run
from aitrade.audit import AuditRecord


def _fill(n: int, start: int = 0) -> None:
    with store.session_scope() as s:
        for i in range(start, start + n):
            audit.append(s, "tom", "order.submit", f"order:{i}", after={"qty": i + 1, "note": "x" * (i % 7)})


def _triggers(c) -> list[tuple[str, str]]:
    "(trigger, table) of the audit tables' own triggers."
    if c.dialect.name == "sqlite":
        rows = c.exec_driver_sql(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' AND tbl_name LIKE 'audit_%'"
        )
    else:
        rows = c.exec_driver_sql(
            "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND c.relname IN ('audit_log', 'audit_head') "
            "AND c.relnamespace = current_schema()::regnamespace"
        )
    return [tuple(r) for r in rows]


def _drop_triggers(eng) -> None:
    with eng.begin() as c:
        found = _triggers(c)
        assert len(found) >= 4, found  # the migration's triggers are there to be dropped
        for name, table in found:
            c.exec_driver_sql(
                f"DROP TRIGGER {name}" if c.dialect.name == "sqlite" else f'DROP TRIGGER "{name}" ON {table}'
            )


def _cut_tail(eng, keep: int) -> None:
    "Delete every record after `keep` and move the head back to record `keep`: a perfect, shorter chain."
    with eng.begin() as c:
        h = (
            c.execute(sa.text("SELECT hash FROM audit_log WHERE seq = :k"), {"k": keep}).scalar()
            if keep
            else None
        )
        c.execute(sa.text("DELETE FROM audit_log WHERE seq > :k"), {"k": keep})
        c.execute(
            sa.text("UPDATE audit_head SET seq = :k, hash = :h WHERE id = 1"),
            {"k": keep, "h": h or audit.GENESIS_HASH},
        )


def _rewrite_from(eng, seq: int) -> None:
    "Edit one byte of record `seq`, then recompute every hash after it and the head: a consistent forged chain."
    store.dispose_engines()
    with store.session_scope(eng.url.render_as_string(hide_password=False)) as s:
        recs = list(s.execute(sa.select(AuditRecord).order_by(AuditRecord.seq)).scalars())
        prev = audit.GENESIS_HASH
        for r in recs:
            if r.seq == seq:
                r.after_json = r.after_json.replace('"qty":', '"qtz":', 1)
            if r.seq >= seq:
                r.prev_hash = prev
                r.hash = r.compute_hash()
            prev = r.hash
        s.flush()
        s.execute(sa.text("UPDATE audit_head SET hash = :h WHERE id = 1"), {"h": prev})


@pytest.fixture
def owner_url(db, db_url):
    """The URL as the database's owner: on PostgreSQL a plain (non-superuser) role that owns the schema and the
    audit tables, as a DBA or the application's own role would; on SQLite whoever can write the file."""
    if not db_url.startswith("postgresql"):
        yield db_url
        return
    role = f"own_{uuid.uuid4().hex[:10]}"
    su = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    schema = sa.make_url(db_url).query["options"].split("=", 1)[1]
    with su.begin() as c:
        c.exec_driver_sql(f"CREATE ROLE {role} LOGIN NOSUPERUSER")
        c.exec_driver_sql(f'ALTER SCHEMA "{schema}" OWNER TO {role}')
        for t in ("audit_log", "audit_head"):
            c.exec_driver_sql(f'ALTER TABLE "{schema}".{t} OWNER TO {role}')
    u = sa.make_url(db_url).set(username=role)
    try:
        yield u.render_as_string(hide_password=False)
    finally:
        store.dispose_engines()
        with su.begin() as c:
            c.exec_driver_sql(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
            c.exec_driver_sql(f"DROP OWNED BY {role}")
            c.exec_driver_sql(f"DROP ROLE {role}")
        su.dispose()


def _cli_verify(db_url):
    return _cli("audit", "verify")


def test_cut_tail_is_found_and_named(db, db_url, owner_url):
    _fill(4)
    a4 = anchors.write_anchor()
    _fill(3, 4)
    a7 = anchors.write_anchor()
    assert (a4.seq, a7.seq) == (4, 7)
    assert anchors.verify_log().ok
    r = _cli_verify(db_url)
    assert (
        r.returncode == 0
        and "audit chain intact: 7 records; anchored: newest anchor anchors/000000000007.json" in r.stdout
    )
    eng = sa.create_engine(owner_url, poolclass=sa.pool.NullPool)
    _drop_triggers(eng)
    _cut_tail(eng, 5)  # two records cut off, the head moved back: the chain alone is perfect
    with store.session_scope() as s:
        assert audit.verify(s).ok  # ... which is why the anchors exist
    res = anchors.verify_log()
    assert not res.ok and res.chain.ok
    assert res.problems == [
        "records 6-7 missing: the log ends at record 5 but anchors/000000000007.json "
        f"(record 7, {a7.at}) holds record 7 (newest records removed)"
    ]
    assert res.last_match == a4
    r = _cli_verify(db_url)
    assert r.returncode == 1, r.stdout + r.stderr
    assert (
        "records 6-7 missing" in r.stderr
        and "last anchor that still matches: anchors/000000000004.json" in r.stderr
    )
    with pytest.raises(anchors.AnchorError, match="records 6-7 were removed"):
        anchors.write_anchor()  # the anchoring service refuses to bless the cut log, and says why
    _fill(2, 100)  # new records take the cut numbers 6 and 7: still not the anchored record 7
    res = anchors.verify_log()
    assert res.problems[0].startswith("record 7 differs from anchors/000000000007.json")
    eng.dispose()


def test_whole_log_deleted_is_found(db, db_url, owner_url):
    _fill(3)
    anchors.write_anchor()
    eng = sa.create_engine(owner_url, poolclass=sa.pool.NullPool)
    _drop_triggers(eng)
    _cut_tail(eng, 0)
    res = anchors.verify_log()
    assert res.chain.ok and res.chain.checked == 0
    assert not res.ok and res.problems[0].startswith("records 1-3 missing: the log ends at record 0")
    assert res.last_match is None  # the only anchor held record 3
    r = _cli_verify(db_url)
    assert r.returncode == 1 and "records 1-3 missing" in r.stderr
    eng.dispose()


@pytest.mark.parametrize("seq", [1, 3, 6])
def test_one_byte_edited_is_found(db, owner_url, seq):
    _fill(3)
    a3 = anchors.write_anchor()
    _fill(3, 3)
    anchors.write_anchor()
    eng = sa.create_engine(owner_url, poolclass=sa.pool.NullPool)
    _drop_triggers(eng)
    with eng.begin() as c:  # one byte, nothing else
        c.execute(
            sa.text(
                "UPDATE audit_log SET after_json = replace(after_json, '\"qty\":', '\"qtz\":') WHERE seq = :s"
            ),
            {"s": seq},
        )
    res = anchors.verify_log()
    assert not res.ok and res.chain.broken_seq == seq and "record altered" in res.chain.reason
    _rewrite_from(eng, seq)  # now recompute the chain after it: the chain is perfect again ...
    res = anchors.verify_log()
    assert res.chain.ok and not res.ok  # ... but the anchors are not fooled
    assert res.problems[0].startswith("record 6 differs from anchors/000000000006.json")
    assert res.last_match == (a3 if seq > 3 else None)  # the first anchor was at record 3
    eng.dispose()


def test_forged_anchor_is_named(db):
    _fill(2)
    anchors.write_anchor()
    a = Archive()
    forger = Ed25519PrivateKey.generate()
    fake = anchors._sign(forger, 9, "f" * 64, anchors.now())  # signed, but not with the platform's key
    a.create(fake.where, audit.canonical_json({**fake.body(), "signature": fake.signature}).encode())
    res = anchors.verify_log(a)
    assert not res.ok and any("not the platform's key" in p for p in res.problems)
    # an auditor verifies with the public key they were given, without the platform's secret
    pub = anchors.public_key_b64(anchors.anchor_key().public_key())
    r = _cli("audit", "anchor-key")
    assert r.returncode == 0 and r.stdout.strip() == pub
    res = anchors.verify_log(a, public=anchors.public_key_from_b64(pub))
    assert any(p.startswith("anchors/000000000009.json: signed by key") for p in res.problems)


def test_key_from_the_secret_setting(db, monkeypatch, tmp_path):
    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    monkeypatch.setenv("AITRADE_AUDIT__ANCHOR_KEY", base64.b64encode(raw).decode())
    config.reload_settings()
    _fill(1)
    a = anchors.write_anchor()
    assert a.key_id == anchors.key_id(Ed25519PrivateKey.from_private_bytes(raw).public_key())
    assert not (
        tmp_path / "var" / "secrets" / "audit-anchor.key"
    ).exists()  # no key file when the secret is set
    monkeypatch.setenv("AITRADE_AUDIT__ANCHOR_KEY", "not-a-key")
    config.reload_settings()
    with pytest.raises(
        anchors.AnchorError, match=r"\[audit\] anchor_key \(setting\): not a base64 Ed25519 key"
    ):
        anchors.anchor_key()


def _small_nb(text: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"print({text!r})")]
    return nb


def test_archive_and_audit_log_check_each_other(db, owner_url):
    """Each archived run carries the audit head; the audit log carries each run's archive.write record. Cutting
    either one's tail is found by the other."""
    _fill(2)
    r1 = archive_run(
        _small_nb("one"), pipeline="daily", user="system:scheduler", git={"commit": "x", "dirty": False}
    )
    _fill(1, 2)
    r2 = archive_run(
        _small_nb("two"), pipeline="daily", user="system:scheduler", git={"commit": "x", "dirty": False}
    )
    assert r1.manifest["audit_head"] == {"seq": 2, "hash": r1.manifest["audit_head"]["hash"]}
    assert r2.manifest["audit_head"]["seq"] == 4  # 2 + run 1's archive.write + 1
    with store.session_scope() as s:
        assert s.get(AuditRecord, 2).hash == r1.manifest["audit_head"]["hash"]
    assert anchors.verify_log().ok and Archive().verify(audit=True).ok
    # no signed anchor at all: the newest run's manifest alone finds the audit log's cut tail
    eng = sa.create_engine(owner_url, poolclass=sa.pool.NullPool)
    _drop_triggers(eng)
    _cut_tail(eng, 3)  # cuts record 4 (anchored by run 2) and run 2's archive.write (5)
    res = anchors.verify_log()
    assert res.anchors == 0 and not res.ok
    assert res.problems[0].startswith(f"records 4-4 missing: the log ends at record 3 but run {r2.run_id}")
    v = Archive().verify(audit=True)
    assert not v.ok and any(p.run_id == r2.run_id and "no archive.write record" in p.what for p in v.problems)
    eng.dispose()


def test_archive_tail_cut_is_found_by_the_audit_log(db):
    r1 = archive_run(
        _small_nb("one"), pipeline="daily", user="system:scheduler", git={"commit": "x", "dirty": False}
    )
    r2 = archive_run(
        _small_nb("two"), pipeline="daily", user="system:scheduler", git={"commit": "x", "dirty": False}
    )
    a = Archive()
    for rel in (f"chain/{r2.seq:012d}.json", f"runs/{r2.run_id}.json"):
        p = f"{a.root}/{rel}"
        os.chmod(p, 0o644)
        os.remove(p)
    v = a.verify(audit=True)
    assert not v.ok and r1.seq == 1
    assert [(p.seq, p.run_id) for p in v.problems] == [(2, r2.run_id)]
    assert v.problems[0].what.endswith("but not in the archive (removed)")


def test_checkpoint_keeps_the_chain_verifiable(db, owner_url):
    "When the oldest records expire, the chain verifies from the checkpoint record that vouches for them."
    _fill(4)
    with store.session_scope() as s:
        h3 = s.get(AuditRecord, 3).hash
        audit.append(
            s, "system:retention", audit.CHECKPOINT_ACTION, "audit:1-3", after={"through": 3, "hash": h3}
        )
    anchors.write_anchor()
    eng = sa.create_engine(owner_url, poolclass=sa.pool.NullPool)
    _drop_triggers(eng)
    with eng.begin() as c:
        c.exec_driver_sql("DELETE FROM audit_log WHERE seq <= 3")
    with store.session_scope() as s:
        res = audit.verify(s)
        assert res.ok and res.checked == 2  # records 4 and 5, from the checkpoint
    assert anchors.verify_log().ok
    with eng.begin() as c:  # a checkpoint that vouches for less than was removed does not help
        c.exec_driver_sql("DELETE FROM audit_log WHERE seq = 4")
    with store.session_scope() as s:
        res = audit.verify(s)
    assert not res.ok and res.reason == "records 1-4 missing and no checkpoint vouches for them"
    eng.dispose()


def test_anchor_service_anchors_on_its_interval(db):
    "`aitrade audit anchor --every N` (the audit-anchor service) anchors each new head within one interval."
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            _fill(1, i)
            i += 1
            time.sleep(0.2)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    done = threading.Event()
    th = threading.Thread(target=anchors.anchor_forever, kwargs={"every": 1.0, "stop": done}, daemon=True)
    th.start()
    time.sleep(3.5)
    stop.set()
    t.join()
    time.sleep(1.5)  # one more tick anchors the final head
    done.set()
    th.join(5)
    assert not th.is_alive()
    names = anchors.anchor_names(Archive())
    assert len(names) >= 3, names
    newest = anchors.read_anchor(Archive(), names[-1])
    with store.session_scope() as s:
        assert newest.seq == s.get(audit.AuditHead, 1).seq  # the last head is anchored
    times = [anchors.read_anchor(Archive(), n).at for n in names]
    assert times == sorted(times)
