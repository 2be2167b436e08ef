"""Retention and legal holds over database records (issue 14, item 2), on SQLite and PostgreSQL.

With a frozen clock: a record one day inside its retention is refused by the CLI and by the database itself; one
day past it is removed and audited; a legal hold blocks removal past retention, in the database too. The audit
log's expired prefix goes behind a checkpoint and the chain (and its anchors) still verify."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from hubutil import run_cli_here as _cli

from aitrade import audit, clock, config, marketdata, store
from aitrade.archive import anchors
from aitrade.audit import AuditHead, AuditRecord
from aitrade.ops import retention
from aitrade.ops.retention import RetentionRefused, cutoff

NOW = store.utcnow().replace(
    microsecond=0
)  # the frozen clock of these tests (the database's is the real one)


def _order(s, oid: int, t, strategy: str | None = None) -> None:
    "An order with one lifecycle event and one fill, all at time `t`."
    s.execute(
        sa.text(
            "INSERT INTO orders (id, client_order_id, request_hash, submitted_by, strategy, symbol, option_type, "
            "multiplier, side, quantity, order_type, state, reason, needs_approval, approval_reason, venue, "
            "filled_quantity, created_at, updated_at) VALUES (:id, :c, 'h', 'tom', :st, 'SPX', 'C', 100, 'buy', 1, "
            "'limit', 'filled', '', false, '', 'paper', 1, :t, :t)"
        ),
        {"id": oid, "c": f"c{oid}", "t": t, "st": strategy},
    )
    s.execute(
        sa.text(
            "INSERT INTO order_events (order_id, ts, from_state, to_state, actor, reason) "
            "VALUES (:id, :t, 'new', 'filled', 'tom', '')"
        ),
        {"id": oid, "t": t},
    )
    s.execute(
        sa.text(
            "INSERT INTO fills (order_id, venue, broker_fill_id, ts, quantity, price, commission, fees) "
            "VALUES (:id, 'paper', :b, :t, 1, 1.5, 0, 0)"
        ),
        {"id": oid, "b": f"b{oid}", "t": t},
    )


def _at(t):
    "A time as the database stores it (SQLite: naive UTC)."
    return t.replace(tzinfo=None) if config.get_settings().database_url.startswith("sqlite") else t


YEARS = {"orders": 6, "audit_log": 7, "runs": 7, "market_data": 6}
INSIDE = lambda cls: cutoff(YEARS[cls], NOW) + timedelta(days=1)  # noqa: E731  one day inside retention
PAST = lambda cls: cutoff(YEARS[cls], NOW) - timedelta(days=1)  # noqa: E731  one day past it


def test_order_inside_retention_is_refused_past_it_removed(db):
    with store.session_scope() as s:
        _order(s, 1, _at(INSIDE("orders")))
        _order(s, 2, _at(PAST("orders")))
    r = _cli("retention", "delete", "orders", "1", "--reason", "tidy")
    assert r.returncode == 2 and "deletion inside retention refused" in r.stderr
    assert "FINRA, 6 years" in r.stderr
    for table, col in (("fills", "order_id"), ("order_events", "order_id"), ("orders", "id")):
        with pytest.raises(sa.exc.DatabaseError, match="inside its retention"), store.session_scope() as s:
            s.execute(sa.text(f"DELETE FROM {table} WHERE {col} = 1"))  # the database refuses too
    r = _cli("retention", "delete", "orders", "2", "--reason", "retention expired")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "orders 2: removed 1 fills, 1 order_events, 1 orders"
    with store.session_scope() as s:
        assert s.execute(sa.text("SELECT id FROM orders")).scalars().all() == [1]
        rec = audit.query(s, action="retention.remove")[0]
        assert (rec.target, rec.before["rows"]["orders"], rec.after["reason"]) == (
            "orders:2",
            1,
            "retention expired",
        )
        assert audit.verify(s).ok


def test_legal_hold_blocks_removal_past_retention(db):
    with store.session_scope() as s:
        _order(s, 3, _at(PAST("orders")))
        _order(s, 4, _at(PAST("orders")))
    r = _cli("retention", "hold", "orders", "--key", "3", "--reason", "SEC inquiry 2026-14")
    assert r.returncode == 0 and r.stdout.startswith("hold 1: orders 3 under legal hold since")
    r = _cli("retention", "delete", "orders", "3", "--reason", "tidy")
    assert r.returncode == 2 and "under legal hold 1" in r.stderr and "SEC inquiry 2026-14" in r.stderr
    with pytest.raises(sa.exc.DatabaseError, match="under legal hold"), store.session_scope() as s:
        s.execute(sa.text("DELETE FROM fills WHERE order_id = 3"))
    rep = retention.run("system:retention", apply=True, now=NOW)  # the job passes over the held order
    assert rep.expired["orders"] == {"fills": 1, "order_events": 1, "orders": 1}
    with store.session_scope() as s:
        assert s.execute(sa.text("SELECT id FROM orders")).scalars().all() == [3]
    # a hold over a time window covers every record in it, without a key
    with store.session_scope() as s:
        _order(s, 5, _at(PAST("orders")))
        h = retention.place_hold(
            s,
            "lee",
            "orders",
            "litigation",
            since=PAST("orders") - timedelta(days=2),
            until=PAST("orders") + timedelta(days=2),
        )
    assert retention.run(apply=False, now=NOW).expired["orders"]["orders"] == 0
    with store.session_scope() as s:
        retention.release_hold(s, "lee", h.id, "settled")
        retention.release_hold(s, "lee", 1, "inquiry closed")
        with pytest.raises(RetentionRefused, match="already released"):
            retention.release_hold(s, "lee", 1, "again")
    rep = retention.run(apply=True, now=NOW)
    assert rep.expired["orders"]["orders"] == 2
    with store.session_scope() as s:
        assert s.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 0
        actions = [r.action for r in audit.query(s, action="retention.", limit=50)]
        assert actions.count("retention.hold") == 2 and actions.count("retention.release") == 2
        assert "retention.plan" in actions and "retention.remove" in actions


def test_demo_orders_are_not_records(db):
    with store.session_scope() as s:
        _order(s, 9, _at(NOW), strategy="demo")
        for t in ("fills", "order_events", "orders"):
            s.execute(sa.text(f"DELETE FROM {t} WHERE {'id' if t == 'orders' else 'order_id'} = 9"))


def _append_at(s, ts, action="order.submit", after=None) -> AuditRecord:
    "An audit record written at `ts` (as if the clock had been there), extending the chain as `append` does."
    head = s.get(AuditHead, 1)
    rec = AuditRecord(
        seq=head.seq + 1,
        ts=ts,
        actor="tom",
        action=action,
        target=f"order:{head.seq + 1}",
        before_json=None,
        after_json=audit.canonical_json(after or {"qty": 1}),
        correlation_id="c",
        prev_hash=head.hash,
    )
    rec.hash = rec.compute_hash()
    s.add(rec)
    s.flush()
    head.seq, head.hash = rec.seq, rec.hash
    s.flush()
    return rec


def test_audit_log_expires_behind_a_checkpoint(db):
    with store.session_scope() as s:
        for d in (30, 20, 10):
            _append_at(s, PAST("audit_log") - timedelta(days=d))
        _append_at(s, PAST("audit_log"))
        _append_at(s, INSIDE("audit_log"))  # one day inside retention: stays, and so does all after it
    anchors.write_anchor()  # anchored before the removal: the anchor still matches after it
    with store.session_scope() as s:
        held = retention.place_hold(s, "lee", "audit_log", "audit of 2019", key="4")
    rep = retention.run(apply=False, now=NOW)
    assert rep.expired["audit_log"] == {"audit_log": 3}  # record 4 is held: the prefix stops before it
    with store.session_scope() as s:
        retention.release_hold(s, "lee", held.id, "audit closed")
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.session_scope() as s:
        s.execute(sa.text("DELETE FROM audit_log WHERE seq = 1"))  # no checkpoint yet: the database refuses
    rep = retention.run(apply=True, now=NOW)
    assert rep.expired["audit_log"] == {"audit_log": 4}
    with store.session_scope() as s:
        assert s.execute(sa.select(sa.func.min(AuditRecord.seq))).scalar() == 5
        cp = s.get(AuditRecord, rep.checkpoint["seq"])
        assert cp.action == audit.CHECKPOINT_ACTION and cp.after["through"] == 4
        res = audit.verify(s)
        assert res.ok, res
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            s.execute(sa.text("DELETE FROM audit_log WHERE seq = 5"))  # inside retention, checkpoint or not
    res = anchors.verify_log()
    assert res.ok, res
    r = _cli("audit", "verify")
    assert r.returncode == 0 and "audit chain intact" in r.stdout


def test_market_data_and_runs_expire(db):
    with store.session_scope() as s:
        s.execute(
            sa.text(
                "INSERT INTO underlyings (symbol, kind, currency, name) VALUES ('SPX', 'index', 'USD', '')"
            )
        )
        for t in (PAST("market_data"), INSIDE("market_data")):
            s.execute(
                sa.text(
                    "INSERT INTO underlying_prices (symbol, date, close, div_yield) VALUES ('SPX', :d, 100, 0)"
                ),
                {"d": t.date()},
            )
        for rid, t in (("daily-old", PAST("runs")), ("daily-new", INSIDE("runs"))):
            s.execute(
                sa.text(
                    'INSERT INTO job_runs (id, pipeline, trigger, "user", status, parameters, spec, attempt, '
                    "created_at, deadline_alerted, cancel_requested, lease_epoch) VALUES (:id, 'daily', 'manual', "
                    "'ops', 'succeeded', '{}', '{}', 1, :t, false, false, 0)"
                ),
                {"id": rid, "t": _at(t)},
            )
            s.execute(
                sa.text(
                    "INSERT INTO job_logs (run_id, notebook, attempt, ts, stream, text) "
                    "VALUES (:id, 'ingest', 1, :t, 'stdout', 'hello')"
                ),
                {"id": rid, "t": _at(t)},
            )
        retention.place_hold(s, "lee", "market_data", "pricing dispute", key="SPX")
    with pytest.raises(sa.exc.DatabaseError, match="under legal hold"), store.session_scope() as s:
        s.execute(sa.text("DELETE FROM underlying_prices"))
    with pytest.raises(sa.exc.DatabaseError, match="inside its retention"), store.session_scope() as s:
        s.execute(sa.text("DELETE FROM job_runs WHERE id = 'daily-new'"))
    rep = retention.run(apply=True, now=NOW)
    assert set(rep.expired["market_data"].values()) == {0}  # held
    assert rep.expired["runs"] == {"job_runs": 1}
    with store.session_scope() as s:
        assert s.execute(sa.text("SELECT id FROM job_runs")).scalars().all() == ["daily-new"]
        assert s.execute(sa.text("SELECT run_id FROM job_logs")).scalars().all() == ["daily-new"]
        retention.release_hold(s, "lee", 1, "resolved")
    rep = retention.run(apply=True, now=NOW)
    assert rep.expired["market_data"]["underlying_prices"] == 1
    with store.session_scope() as s:
        assert s.execute(sa.text("SELECT count(*) FROM underlying_prices")).scalar() == 1


def test_policy_changes_are_audited_and_checked(db):
    r = _cli("retention", "set", "orders", "8", "--reason", "the desk's counsel asks eight years")
    assert r.returncode == 0 and r.stdout.strip() == "orders: 8 years (8 years)"
    r = _cli("retention", "set", "orders", "SOX", "--reason", "back to a named rule")
    assert r.returncode == 0 and r.stdout.strip() == "orders: SOX (7 years)"
    r = _cli("retention", "set", "trades", "SOX", "--reason", "x")
    assert r.returncode == 2 and "record_class: unknown record class 'trades'" in r.stderr
    r = _cli("retention", "set", "orders", "forever", "--reason", "x")
    assert r.returncode == 2 and "rule: give SOX, FINRA or a number of years" in r.stderr
    with store.session_scope() as s:
        recs = audit.query(s, action="retention.policy")
        assert [(x.before["years"], x.after["years"]) for x in recs] == [(8, 7), (6, 8)]
        with pytest.raises(sa.exc.DatabaseError, match="DELETE refused|append-only"):
            s.execute(sa.text("DELETE FROM retention_policies WHERE record_class = 'orders'"))


def test_the_retention_pipeline_plans_then_removes(sqlite_db, tmp_path, monkeypatch):
    "The shipped `retention` pipeline (jobs/retention.ipynb, daily at 02:15 UTC) on the jobs engine, archived."
    from typer.testing import CliRunner

    from aitrade import jobs
    from aitrade.archive import Archive
    from aitrade.cli import jobs as jobs_cli

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    monkeypatch.setenv("AITRADE_ARCHIVE__URL", str(tmp_path / "archive"))
    config.reload_settings()
    cluster = jobs.dask_client(n_workers=1, threads_per_worker=1)  # its kernels see this test's database
    monkeypatch.setenv("AITRADE_DASK_ADDRESS", cluster.scheduler.address)
    config.reload_settings()
    spec = jobs.get_pipeline("retention", root / "jobs" / "pipelines.yaml")
    assert (spec.schedule.cron, spec.schedule.timezone) == ("15 2 * * *", "UTC")
    with store.session_scope() as s:
        _order(s, 7, _at(PAST("orders")))
        _order(s, 8, _at(INSIDE("orders")))
    args = [
        "run",
        "retention",
        "--file",
        str(root / "jobs" / "pipelines.yaml"),
        "-p",
        f"now={NOW.isoformat()}",
    ]
    try:
        r = CliRunner().invoke(jobs_cli.app, args)
    finally:
        jobs.close_client(cluster)
    assert r.exit_code == 0, r.output[-3000:]
    assert "expired: 3 records and archived notebooks" in r.output
    with store.session_scope() as s:
        assert s.execute(sa.text("SELECT id FROM orders")).scalars().all() == [8]
        plans = audit.query(s, action="retention.plan")
        assert [p.after["apply"] for p in plans] == [True, False]  # the dry run first, then the removal
        assert audit.query(s, action="retention.remove")[0].before["rows"] == {
            "fills": 1,
            "order_events": 1,
            "orders": 1,
        }
    run = jobs.list_runs("retention")[0]
    assert run["status"] == "succeeded"
    assert Archive(tmp_path / "archive").list(pipeline="retention")[0].manifest["retention"]["rule"] == "SOX"


def test_api_reads_policies_and_places_holds_as_the_caller(db):
    from fastapi.testclient import TestClient

    from aitrade import api
    from aitrade.auth import ROLES

    tokens = {f"tok-{r}": api.hub_model(f"u-{r}", ROLES[r]) for r in ("ops", "auditor", "trader")}
    app = api.create_app(api.StaticResolver(tokens), prefix="/p")
    with TestClient(app) as c:
        H = lambda t: {"Authorization": f"token tok-{t}"}  # noqa: E731
        r = c.put(
            "/p/v1/retention/policies/orders", json={"rule": "7", "reason": "counsel"}, headers=H("ops")
        )
        assert r.status_code == 200 and (r.json()["years"], r.json()["updated_by"]) == (7, "u-ops")
        assert (
            c.put(
                "/p/v1/retention/policies/orders", json={"rule": "0", "reason": "x"}, headers=H("ops")
            ).status_code
            == 422
        )
        assert (
            c.put(
                "/p/v1/retention/policies/orders", json={"rule": "SOX", "reason": "x"}, headers=H("trader")
            ).status_code
            == 403
        )
        body = {
            "record_class": "orders",
            "key": "42",
            "reason": "SEC inquiry",
            "since": "2020-01-01T00:00:00Z",
        }
        r = c.post("/p/v1/retention/holds", json=body, headers=H("auditor"))
        assert r.status_code == 200 and r.json()["placed_by"] == "u-auditor"
        hid = r.json()["id"]
        got = c.get("/p/v1/retention", headers=H("auditor")).json()
        assert {p["record_class"]: p["years"] for p in got["policies"]}["orders"] == 7
        assert [h["record_key"] for h in got["holds"]] == ["42"]
        r = c.post(f"/p/v1/retention/holds/{hid}/release", json={"reason": "closed"}, headers=H("auditor"))
        assert r.status_code == 200 and r.json()["released_by"] == "u-auditor"
        r = c.post(f"/p/v1/retention/holds/{hid}/release", json={"reason": "again"}, headers=H("auditor"))
        assert r.status_code == 409 and "already released" in r.text
        assert c.get("/p/v1/retention", headers=H("auditor")).json()["holds"] == []
    app.state.fanout.close()
    with store.session_scope() as s:
        assert [r.actor for r in audit.query(s, action="retention.")] == ["u-auditor", "u-auditor", "u-ops"]


def _chain(ts, bids) -> pd.DataFrame:
    "One underlying's quotes at `ts`: a call per strike 90, 100, ... with these bids (asks 0.1 above)."
    n = len(bids)
    day = pd.Timestamp(ts.date())
    return pd.DataFrame(
        {
            "underlying": "SPX", "quote_date": day, "ts": pd.Timestamp(ts), "expiry": day + pd.Timedelta(days=30),
            "strike": [90.0 + 10 * i for i in range(n)], "option_type": "C", "bid": bids,
            "ask": [b + 0.1 for b in bids], "bid_size": 10, "ask_size": 10, "underlying_price": 100.0,
        }
    )  # fmt: skip


def _session_before(t):
    "`t`, or the last XNYS trading day before it (at the same time of day)."
    while not clock.is_session(t.date()):
        t -= timedelta(days=1)
    return t


def test_market_data_inside_retention_goes_only_as_a_kept_version(db):
    "By hand, a quote or close inside retention cannot be deleted; a re-ingest keeps each row it replaces."
    t = _session_before(NOW - timedelta(days=1))  # a quote's date must be a trading day
    with store.session_scope() as s:
        marketdata.store_chain(s, _chain(t, [12.0, 5.0, 1.0]))
        marketdata.store_prices(s, pd.DataFrame({"symbol": ["SPX"], "date": [t.date()], "close": [100.0]}))
    for table in ("option_quotes", "underlying_prices"):
        with pytest.raises(sa.exc.DatabaseError, match="inside its retention"), store.session_scope() as s:
            s.execute(sa.text(f"DELETE FROM {table}"))
    with store.session_scope() as s:  # a replay of the same data changes nothing
        ids = s.execute(sa.text("SELECT id FROM option_quotes ORDER BY id")).scalars().all()
        marketdata.store_chain(s, _chain(t, [12.0, 5.0, 1.0]))
        assert s.execute(sa.text("SELECT id FROM option_quotes ORDER BY id")).scalars().all() == ids
        # a correction: the second bid changes, the third quote is withdrawn; a close is corrected
        marketdata.store_chain(s, _chain(t, [12.0, 5.5]))
        marketdata.store_prices(s, pd.DataFrame({"symbol": ["SPX"], "date": [t.date()], "close": [101.0]}))
    with store.session_scope() as s:
        live = s.execute(sa.text("SELECT strike, bid FROM option_quotes ORDER BY strike")).all()
        assert [tuple(r) for r in live] == [(90.0, 12.0), (100.0, 5.5)]
        kept = s.execute(sa.text("SELECT id, strike, bid FROM option_quotes_replaced ORDER BY strike")).all()
        assert [tuple(r)[1:] for r in kept] == [(100.0, 5.0), (110.0, 1.0)]
        assert {r[0] for r in kept} <= set(ids)  # the rows as they were, their ids too
        closes = s.execute(sa.text("SELECT close FROM underlying_prices_replaced")).scalars().all()
        assert closes == [100.0] and marketdata.prices(s, "SPX")["close"].tolist() == [101.0]
    for sql, why in (
        ("DELETE FROM option_quotes_replaced", "inside its retention"),
        ("DELETE FROM underlying_prices_replaced", "inside its retention"),
        ("UPDATE option_quotes_replaced SET bid = 0", "UPDATE refused"),
    ):
        with pytest.raises(sa.exc.DatabaseError, match=why), store.session_scope() as s:
            s.execute(sa.text(sql))
    if config.get_settings().database_url.startswith("postgresql"):  # a TRUNCATE would skip the row triggers
        for table in ("option_quotes", "option_quotes_replaced", "orders", "job_runs"):
            with pytest.raises(sa.exc.DatabaseError, match="TRUNCATE refused"), store.session_scope() as s:
                s.execute(sa.text(f"TRUNCATE {table} CASCADE"))
    # past retention, the retention job removes live and kept versions alike; what is inside stays
    old = _session_before(PAST("market_data"))
    with store.session_scope() as s:
        for bid, close in ((3.0, 90.0), (3.5, 91.0)):  # stored, then corrected
            marketdata.store_chain(s, _chain(old, [bid]))
            marketdata.store_prices(
                s, pd.DataFrame({"symbol": ["SPX"], "date": [old.date()], "close": [close]})
            )
    rep = retention.run(apply=True, now=NOW)
    assert rep.expired["market_data"] == {
        "option_quotes": 1, "underlying_prices": 1, "option_quotes_replaced": 1, "underlying_prices_replaced": 1,
    }  # fmt: skip
    with store.session_scope() as s:
        n = {t: s.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in rep.expired["market_data"]}
    assert n == {
        "option_quotes": 2, "underlying_prices": 1, "option_quotes_replaced": 2, "underlying_prices_replaced": 1,
    }  # fmt: skip
