"""Audit log on SQLite and PostgreSQL: chain, same-transaction writes, database-enforced append-only,
one-byte tampering found by `aitrade audit verify`, and concurrent writers that never fork the chain."""

import multiprocessing as mp

import pytest
import sqlalchemy as sa
from hubutil import run_cli

from aitrade import audit, store
from aitrade.audit import GENESIS_HASH, AuditRecord


def _append_n(url, n, who, barrier):
    store.dispose_engines()
    with store.session_scope(url) as s:  # connect and warm up first, so that the writers start together
        audit.verify(s)
    barrier.wait()
    for i in range(n):
        with store.session_scope(url) as s:
            audit.append(s, who, "test.concurrent", f"item:{i}", after={"i": i, "who": who})


def _tamper(url, sql, params):
    "Change a row the way someone with direct database access would: around the triggers."
    eng = store.get_engine(url)
    with eng.begin() as c:
        if eng.dialect.name == "postgresql":
            c.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER USER")
            c.execute(sa.text(sql), params)
            c.exec_driver_sql("ALTER TABLE audit_log ENABLE TRIGGER USER")
        else:
            c.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
            c.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_delete")
            c.execute(sa.text(sql), params)


def _fill(n=5):
    with store.session_scope() as s:
        for i in range(n):
            audit.append(
                s, "tom", "order.submit", f"order:{i}", before=None, after={"qty": i + 1, "px": 1.25 * i}
            )


def test_chain_links_and_verifies(db):
    _fill(5)
    with store.session_scope() as s:
        recs = sorted(audit.query(s, limit=10), key=lambda r: r.seq)
        assert [r.seq for r in recs] == [1, 2, 3, 4, 5]
        assert recs[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in zip(recs, recs[1:], strict=False))
        assert all(r.ts.tzinfo is not None for r in recs)
        assert audit.verify(s).ok and audit.verify(s).checked == 5
    r = run_cli("audit", "verify", env={"AITRADE_DATABASE__URL": db})
    assert r.returncode == 0 and "intact: 5 records" in r.stdout


def test_record_and_change_share_one_transaction(db):
    meta = sa.MetaData()
    limits = sa.Table(
        "t_limits", meta, sa.Column("name", sa.String, primary_key=True), sa.Column("value", sa.Float)
    )
    meta.create_all(store.get_engine())
    with store.session_scope() as s:
        s.execute(limits.insert().values(name="vega", value=1e5))
        audit.append(s, "rita", "limit.create", "limit:vega", after={"value": 1e5})
    with pytest.raises(sa.exc.IntegrityError), store.session_scope() as s:  # the change fails: no record
        s.execute(limits.insert().values(name="vega", value=2e5))
        audit.append(s, "rita", "limit.create", "limit:vega")
    with pytest.raises(ValueError), store.session_scope() as s:  # the record fails: no change
        s.execute(limits.update().values(value=3e5))
        audit.append(s, "", "limit.change", "limit:vega")
    with store.session_scope() as s:
        assert s.execute(sa.select(limits.c.value)).scalar_one() == 1e5
        assert [r.action for r in audit.query(s)] == ["limit.create"]
        assert audit.verify(s).ok


@pytest.mark.parametrize(
    "stmt",
    [
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
        "UPDATE audit_head SET seq = 0, hash = '{0}'",
        "DELETE FROM audit_head",
    ],
)
def test_database_refuses_update_and_delete(db, stmt):
    _fill(2)
    with pytest.raises(sa.exc.DatabaseError, match="append-only|cannot be deleted|may only advance"):
        with store.session_scope() as s:
            s.execute(sa.text(stmt.format(GENESIS_HASH)))
    with store.session_scope() as s:
        assert audit.verify(s).ok and audit.verify(s).checked == 2


def test_postgres_refuses_truncate(pg_url):
    store.upgrade(url=pg_url)
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.session_scope(pg_url) as s:
        s.execute(sa.text("TRUNCATE audit_log CASCADE"))


COLUMNS = [
    "ts",
    "actor",
    "action",
    "target",
    "before_json",
    "after_json",
    "correlation_id",
    "prev_hash",
    "hash",
]


@pytest.mark.parametrize("column", COLUMNS)
def test_one_changed_byte_in_any_column_is_found(db, column):
    _fill(5)
    with store.session_scope() as s:
        rec = s.get(AuditRecord, 3)
        value = getattr(rec, column)
    if column == "ts":
        ts = rec.ts.replace(microsecond=(rec.ts.microsecond + 1) % 1_000_000)
        _tamper(
            db,
            "UPDATE audit_log SET ts = :v WHERE seq = 3",
            {
                "v": ts
                if store.get_engine().dialect.name == "postgresql"
                else ts.strftime("%Y-%m-%d %H:%M:%S.%f")
            },
        )
    else:
        value = value if value is not None else "null"
        changed = value[:-1] + chr(ord(value[-1]) ^ 1)  # flip one bit of the last character
        _tamper(db, f"UPDATE audit_log SET {column} = :v WHERE seq = 3", {"v": changed})
    with store.session_scope() as s:
        res = audit.verify(s)
    # a changed hash is caught at its own record (content does not match); every other column likewise
    assert not res.ok and res.broken_seq == 3, res
    r = run_cli("audit", "verify", env={"AITRADE_DATABASE__URL": db})
    assert r.returncode == 1 and f"broken at record {res.broken_seq}" in r.stderr


def test_removed_and_reordered_records_are_found(db):
    _fill(5)
    _tamper(db, "DELETE FROM audit_log WHERE seq = 2", {})
    with store.session_scope() as s:
        res = audit.verify(s)
    assert (res.ok, res.broken_seq) == (False, 2) and "missing" in res.reason


def test_swapped_records_are_found(db):
    _fill(4)
    with store.session_scope() as s:
        a, b = s.get(AuditRecord, 2), s.get(AuditRecord, 3)
        va, vb = {c: getattr(a, c) for c in COLUMNS}, {c: getattr(b, c) for c in COLUMNS}
    sets = ", ".join(f"{c} = :{c}" for c in COLUMNS)
    _tamper(db, f"UPDATE audit_log SET {sets} WHERE seq = 2", vb | {"hash": "x" * 64})
    _tamper(db, f"UPDATE audit_log SET {sets} WHERE seq = 3", va)
    _tamper(db, "UPDATE audit_log SET hash = :h WHERE seq = 2", {"h": vb["hash"]})
    with store.session_scope() as s:
        res = audit.verify(s)
    assert (res.ok, res.broken_seq) == (False, 2)


def test_truncated_tail_is_found(db):
    _fill(4)
    _tamper(db, "DELETE FROM audit_log WHERE seq = 4", {})
    with store.session_scope() as s:
        res = audit.verify(s)
    assert not res.ok and "tail removed" in res.reason


def test_bad_input_names_the_field(db):
    with store.session_scope() as s:
        with pytest.raises(ValueError, match="audit actor"):
            audit.append(s, " ", "x", "y")
        with pytest.raises(ValueError, match="audit action"):
            audit.append(s, "a", None, "y")
        with pytest.raises(ValueError, match="audit target: longer than 500"):
            audit.append(s, "a", "b", "t" * 501)


def test_correlation_id_groups_records(db):
    with audit.correlation("req-42"), store.session_scope() as s:
        audit.append(s, "tom", "order.submit", "order:1")
        audit.append(s, "ann", "order.approve", "order:1")
    with store.session_scope() as s:
        assert {r.actor for r in audit.query(s, correlation_id="req-42")} == {"tom", "ann"}
        assert [r.action for r in audit.query(s, target="order:")] == ["order.approve", "order.submit"]


@pytest.mark.parametrize("n_procs,per_proc", [(4, 100)])
def test_concurrent_writers_never_fork_the_chain(db, n_procs, per_proc):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n_procs)
    procs = [ctx.Process(target=_append_n, args=(db, per_proc, f"w{i}", barrier)) for i in range(n_procs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * n_procs
    with store.session_scope() as s:
        res = audit.verify(s)
        assert res.ok and res.checked == n_procs * per_proc, res
        writers = s.execute(sa.select(AuditRecord.actor, sa.func.count()).group_by(AuditRecord.actor)).all()
        assert dict(writers) == {f"w{i}": per_proc for i in range(n_procs)}
        # the writers really interleaved (otherwise the test proves nothing about concurrency)
        actors = [a for (a,) in s.execute(sa.select(AuditRecord.actor).order_by(AuditRecord.seq))]
        assert sum(a != b for a, b in zip(actors, actors[1:], strict=False)) > n_procs


def test_deferred_records_hold_no_lock_until_commit_and_chain_in_order(pg_url):
    "A transaction's deferred records take the head's lock at commit only: another writer commits meanwhile."
    import threading

    store.upgrade(url=pg_url)
    appended, go_on, errors = threading.Event(), threading.Event(), []

    def long_transaction():
        try:
            with store.session_scope(pg_url) as s:
                for i in range(3):
                    audit.append(s, "tom", "order.step", f"order:1:{i}", defer=True)
                appended.set()
                assert go_on.wait(20)  # the order is priced, checked, sent ... while others write
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=long_transaction)
    t.start()
    assert appended.wait(20)
    done = threading.Event()

    def other_writer():
        with store.session_scope(pg_url) as s:
            audit.append(s, "ann", "limit.set", "limit:SPX:vega")
        done.set()

    w = threading.Thread(target=other_writer)
    w.start()
    assert done.wait(10), "the other writer waited for the long transaction's lock"
    go_on.set()
    t.join(20)
    w.join(5)
    assert not errors, errors
    with store.session_scope(pg_url) as s:
        recs = sorted(audit.query(s, limit=10), key=lambda r: r.seq)
        assert [r.target for r in recs] == ["limit:SPX:vega", "order:1:0", "order:1:1", "order:1:2"]
        assert audit.verify(s).ok


def test_a_rolled_back_savepoint_takes_its_deferred_records_along(db):
    with store.session_scope() as s:
        audit.append(s, "tom", "order.submit", "order:1", defer=True)
        with pytest.raises(RuntimeError), s.begin_nested():
            audit.append(s, "tom", "order.note", "order:1", defer=True)
            raise RuntimeError("the savepoint fails")
        audit.append(s, "tom", "order.approved", "order:1", defer=True)
    with pytest.raises(RuntimeError), store.session_scope() as s:
        audit.append(s, "tom", "order.cancel", "order:1", defer=True)
        raise RuntimeError("the transaction fails")
    with store.session_scope() as s:
        assert [r.action for r in audit.query(s)] == ["order.approved", "order.submit"]
        assert audit.verify(s).ok
