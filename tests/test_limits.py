"""Limits, pre-trade check, kill switch and fail-closed checks on SQLite and PostgreSQL: only the risk role
changes limits (audited before/after), breaches name the limit with current and post-trade values, the kill
switch survives a restart and stops all order flow, stale data or a failed calibration blocks orders."""

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from aitrade import audit, execution, limits, store
from aitrade.auth import PermissionDenied, Principal
from aitrade.limits import Limit

TOM = Principal.with_roles("tom", ["trader"])
ANN = Principal.with_roles("ann", ["trader"])
RITA = Principal.with_roles("rita", ["risk"])
ADMIN = Principal.with_roles("root", ["admin"])
EXPIRY = date(2030, 6, 21)


def seed_quote(symbol="SPX", ts=None, bid=4.9, ask=5.1, bid_size=10, ask_size=7, spot=100.0, strike=100.0):
    "One stored option quote (and its underlying): the market data fail-closed and the paper broker read."
    ts = ts or datetime.now(UTC)
    with store.session_scope() as s:
        if not s.execute(sa.text("SELECT 1 FROM underlyings WHERE symbol = :s"), {"s": symbol}).first():
            s.execute(
                sa.text(
                    "INSERT INTO underlyings (symbol, kind, currency, name) VALUES (:s, 'index', 'USD', :s)"
                ),
                {"s": symbol},
            )
        s.execute(
            sa.text(
                "INSERT INTO option_quotes (underlying, quote_date, ts, expiry, strike, option_type, bid, ask, "
                "bid_size, ask_size, underlying_price) VALUES (:u, :d, :ts, :e, :k, 'C', :b, :a, :bs, :as_, :sp)"
            ),
            dict(
                u=symbol,
                d=ts.date(),
                ts=ts if s.bind.dialect.name == "postgresql" else ts.replace(tzinfo=None),
                e=EXPIRY,
                k=strike,
                b=bid,
                a=ask,
                bs=bid_size,
                as_=ask_size,
                sp=spot,
            ),
        )


def test_only_the_risk_role_changes_limits_and_every_change_is_audited(db):
    with store.session_scope() as s, pytest.raises(PermissionDenied, match="limits:write"):
        limits.set_limit(s, TOM, "SPX", "delta", 1e6, "trader tries")
    with store.session_scope() as s:
        limits.set_limit(s, RITA, "SPX", "delta", 1e6, "desk limit")
    with store.session_scope() as s:
        limits.set_limit(s, RITA, "SPX", "delta", 5e5, "tighter after review")
        limits.set_limit(s, ADMIN, "portfolio", "vega", 2e5, "book vega")
    with store.session_scope() as s:
        assert [(x.scope, x.metric, x.max_abs, x.updated_by) for x in limits.limits(s)] == [
            ("SPX", "delta", 5e5, "rita"),
            ("portfolio", "vega", 2e5, "root"),
        ]
        recs = sorted(audit.query(s, action="limit."), key=lambda r: r.seq)
        assert [(r.actor, r.target) for r in recs] == [
            ("rita", "limit:SPX:delta"),
            ("rita", "limit:SPX:delta"),
            ("root", "limit:portfolio:vega"),
        ]
        assert recs[0].before is None and recs[0].after["max_abs"] == 1e6
        assert recs[1].before["max_abs"] == 1e6 and recs[1].after["max_abs"] == 5e5
        assert recs[1].after["reason"] == "tighter after review"
        assert audit.verify(s).ok
    # a failed change leaves neither the change nor its record
    with pytest.raises(RuntimeError), store.session_scope() as s:
        limits.set_limit(s, RITA, "SPX", "delta", 1.0, "will roll back")
        raise RuntimeError("boom")
    with store.session_scope() as s:
        assert s.execute(sa.select(Limit.max_abs).where(Limit.scope == "SPX")).scalar_one() == 5e5
        assert len(audit.query(s, action="limit.")) == 3
        assert limits.remove_limit(s, RITA, "portfolio", "vega", "not needed")
        assert not limits.remove_limit(s, RITA, "portfolio", "vega", "again")
    with store.session_scope() as s:
        assert [x.name for x in limits.limits(s)] == ["SPX:delta"]
        assert audit.query(s, action="limit.remove")[0].before["max_abs"] == 2e5


@pytest.mark.parametrize(
    "args,match",
    [
        (("", "delta", 1.0, "r"), "limit scope"),
        (("SPX", "theta", 1.0, "r"), "limit metric"),
        (("SPX", "delta", -1.0, "r"), "limit value"),
        (("SPX", "delta", float("nan"), "r"), "limit value"),
        (("SPX", "delta", "lots", "r"), "limit value"),
        (("SPX", "concentration", 1.5, "r"), "limit value"),
        (("SPX", "delta", 1.0, " "), "limit reason"),
    ],
)
def test_bad_limit_input_names_the_field(db, args, match):
    with store.session_scope() as s, pytest.raises(ValueError, match=match):
        limits.set_limit(s, RITA, *args)


def test_breach_names_the_limit_the_current_and_the_post_trade_value(db):
    with store.session_scope() as s:
        limits.set_limit(s, RITA, "SPX", "delta", 500_000, "desk")
        limits.set_limit(s, RITA, "portfolio", "notional", 10_000_000, "book")
        limits.set_limit(s, RITA, "NDX", "delta", 1, "not this order's underlying")
    cur = {"portfolio": {"notional": 4e6}, "SPX": {"delta": 420_000.0}, "NDX": {"delta": 9e9}}
    post = {"portfolio": {"notional": 5e6}, "SPX": {"delta": 610_000.0}, "NDX": {"delta": 9e9}}
    with store.session_scope() as s:
        res = limits.pre_trade_check(s, cur, post, symbols=["SPX"])
    assert not res.ok
    assert [(b.limit, b.max_abs, b.current, b.post_trade) for b in res.breaches] == [
        ("SPX:delta", 500_000.0, 420_000.0, 610_000.0)
    ]
    assert (
        res.reason
        == "limit SPX:delta (max abs 500,000.00) breached: current 420,000.00, post-trade 610,000.00"
    )
    # inside the limit, and a short delta beyond it on the other side
    with store.session_scope() as s:
        assert limits.pre_trade_check(s, cur, {**post, "SPX": {"delta": 499_999.0}}, symbols=["SPX"]).ok
        res = limits.pre_trade_check(s, cur, {**post, "SPX": {"delta": -500_001.0}}, symbols=["SPX"])
        assert [b.post_trade for b in res.breaches] == [-500_001.0]


def test_risk_reducing_orders_pass_and_unknown_values_fail_closed(db):
    with store.session_scope() as s:
        limits.set_limit(s, RITA, "SPX", "vega", 100.0, "desk")
        over = {"SPX": {"vega": 300.0}}
        assert limits.pre_trade_check(s, over, {"SPX": {"vega": 250.0}}, symbols=["SPX"]).ok
        assert not limits.pre_trade_check(s, over, {"SPX": {"vega": 301.0}}, symbols=["SPX"]).ok
        res = limits.pre_trade_check(s, over, {"SPX": {"vega": float("nan")}}, symbols=["SPX"])
        assert not res.ok and res.breaches[0].limit == "SPX:vega"
        res = limits.pre_trade_check(s, over, {"SPX": {}}, symbols=["SPX"])
        assert not res.ok
        # an underlying the book does not hold yet starts from zero
        res = limits.pre_trade_check(s, {}, {"SPX": {"vega": 150.0}}, symbols=["SPX"])
        assert [(b.current, b.post_trade) for b in res.breaches] == [(0.0, 150.0)]


def _ks_cli(url, code):
    "Run `code` in a fresh interpreter against `url` (a restart: nothing shared with this process)."
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADE_")}
    env["AITRADE_DATABASE__URL"] = url
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_kill_switch_rights_audit_and_it_survives_a_restart(db):
    with store.session_scope() as s:
        assert not limits.kill_switch_state(s).engaged
        with pytest.raises(PermissionDenied, match="killswitch:engage"):
            limits.engage_kill_switch(s, Principal.with_roles("mia", ["manager"]), "x")
        limits.engage_kill_switch(s, TOM, "runaway algo")
    with store.session_scope() as s, pytest.raises(PermissionDenied, match="killswitch:release"):
        limits.release_kill_switch(s, TOM, "trader cannot release")
    store.dispose_engines()
    code = (
        "import json; from aitrade import store, limits\n"
        "with store.session_scope() as s:\n"
        "    st = limits.kill_switch_state(s)\n"
        "    print(json.dumps([st.engaged, st.reason, st.changed_by]))\n"
    )
    r = _ks_cli(db, code)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [True, "runaway algo", "tom"]
    r = _ks_cli(
        db,
        "from aitrade import store, limits\nfrom aitrade.auth import Principal\n"
        "with store.session_scope() as s:\n"
        "    limits.release_kill_switch(s, Principal.with_roles('rita', ['risk']), 'fixed')\n",
    )
    assert r.returncode == 0, r.stderr
    with store.session_scope() as s:
        st = limits.kill_switch_state(s)
        assert (st.engaged, st.reason, st.changed_by) == (False, "fixed", "rita")
        recs = sorted(audit.query(s, target="killswitch"), key=lambda r: r.seq)
        assert [(r.actor, r.action, r.after["engaged"]) for r in recs] == [
            ("tom", "killswitch.engage", True),
            ("rita", "killswitch.release", False),
        ]
        assert recs[1].before["reason"] == "runaway algo"


def test_kill_switch_stops_submissions_approvals_and_fills(db):
    seed_quote()
    broker = execution.PaperBroker()
    with store.session_scope() as s:
        working = execution.submit_order(
            s, TOM, execution.OrderRequest("w1", "SPX", "buy", 20, "C", EXPIRY, 100.0), broker=broker
        )
        pending = execution.submit_order(
            s, TOM, execution.OrderRequest("p1", "SPX", "buy", 200, "C", EXPIRY, 100.0), broker=broker
        )
        assert (working.state, pending.state) == ("sent", "pending_approval")
        limits.engage_kill_switch(s, RITA, "stop")
    with store.session_scope() as s:
        o = execution.submit_order(s, TOM, execution.OrderRequest("k1", "SPX", "buy", 1, "C", EXPIRY, 100.0))
        assert o.state == "rejected" and o.reason == "kill switch engaged by rita: stop"
        with pytest.raises(limits.KillSwitchEngaged, match="stop"):
            execution.approve_order(s, ANN, pending.id, "ok")
        assert execution.process_fills(s, broker) == []
        assert broker.fills(s, execution.get_order(s, working.id)) == []
    with store.session_scope() as s:
        assert execution.get_order(s, pending.id).state == "pending_approval"
        assert execution.get_order(s, working.id).filled_quantity == 0
        limits.release_kill_switch(s, RITA, "resume")
    with store.session_scope() as s:
        assert [f.quantity for f in execution.process_fills(s, broker)] == [7.0]


def test_stale_market_data_blocks_orders_with_the_reason(db, monkeypatch):
    old = datetime.now(UTC) - timedelta(seconds=3600)
    seed_quote(ts=old)
    req = execution.OrderRequest("s1", "SPX", "buy", 1, "C", EXPIRY, 100.0)
    with store.session_scope() as s:
        why = limits.fail_closed_reason(s, "SPX")
        assert (
            why.startswith("stale market data for SPX: last quote at")
            and "(max_data_age_seconds = 900)" in why
        )
        o = execution.submit_order(s, TOM, req)
        assert o.state == "rejected" and o.reason.startswith("stale market data for SPX")
        assert limits.fail_closed_reason(s, "NDX") == "no market data for NDX: fail closed"
    with store.session_scope() as s:  # stored with the reason, and a retry returns the same rejected order
        o2 = execution.submit_order(s, TOM, req)
        assert (o2.id, o2.state, o2.reason) == (o.id, "rejected", o.reason)
        ev = execution.order_history(s, o.id)
        assert [(e.from_state, e.to_state) for e in ev] == [(None, "new"), ("new", "rejected")]
        assert ev[-1].reason == o.reason
    # a longer configured age lets the same data through
    monkeypatch.setenv("AITRADE_RISK__MAX_DATA_AGE_SECONDS", "7200")
    from aitrade import config

    config.reload_settings()
    with store.session_scope() as s:
        assert limits.fail_closed_reason(s, "SPX") is None


def test_failed_calibration_blocks_orders_with_the_reason(db):
    seed_quote()
    now = datetime.now(UTC)
    with store.session_scope() as s:
        s.execute(
            sa.text(
                "INSERT INTO vol_surfaces (underlying, quote_date, as_of, status, error, n_quotes, params, "
                "created_at) VALUES ('SPX', :d, :t, 'failed', 'SABR did not converge', 0, '{}', :t)"
            ),
            dict(d=now.date(), t=now if s.bind.dialect.name == "postgresql" else now.replace(tzinfo=None)),
        )
    with store.session_scope() as s:
        o = execution.submit_order(s, TOM, execution.OrderRequest("f1", "SPX", "buy", 1, "C", EXPIRY, 100.0))
        assert o.state == "rejected"
        assert o.reason.startswith("calibration failed for SPX") and "SABR did not converge" in o.reason
