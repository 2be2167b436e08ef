"""Orders on SQLite and PostgreSQL: idempotent client order ids (also across processes), four eyes, two
processes approving the same order (exactly one wins), the state machine, the paper broker's partial fills and
commissions, positions and P&L, and P&L attribution."""

import multiprocessing as mp
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from test_limits import ANN, EXPIRY, RITA, TOM, seed_quote

from aitrade import audit, bus, execution, limits, store
from aitrade.auth import PermissionDenied, Principal
from aitrade.execution import IllegalTransition, Order, OrderRequest, PaperBroker, Quote

NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def req(cid="c1", qty=12, side="buy", **kw):
    return OrderRequest(
        cid,
        "SPX",
        side,
        qty,
        kw.pop("option_type", "C"),
        kw.pop("expiry", EXPIRY),
        kw.pop("strike", 100.0),
        **kw,
    )


class Tape:
    "A quote source the test moves by hand."

    def __init__(self, *quotes):
        self.quotes = list(quotes)

    def push(self, q):
        self.quotes.append(q)

    def __call__(self, session, order, as_of):
        return self.quotes[-1] if self.quotes else None


def q(bid, ask, bid_size, ask_size, ts, spot=100.0):
    return Quote(bid, ask, bid_size, ask_size, spot, ts)


@pytest.fixture
def market(db):
    seed_quote()
    return db


# ---------------------------------------------------------------- idempotency


def test_same_client_order_id_twice_gives_one_order(market):
    with store.session_scope() as s:
        a = execution.submit_order(s, TOM, req("dup"))
    with store.session_scope() as s:
        b = execution.submit_order(s, TOM, req("dup"))
        assert b.id == a.id
        assert s.execute(sa.select(sa.func.count()).select_from(Order)).scalar_one() == 1
        with pytest.raises(execution.DuplicateClientOrderId, match="different contents"):
            execution.submit_order(s, TOM, req("dup", qty=13))
        assert len(audit.query(s, action="order.submit")) == 1


def _warm_up():
    "Compile/load the pricing kernels before the race, so no process holds a lock while it compiles."
    execution.order_risk(req("warm"), q(4.9, 5.1, 1, 1, NOW), NOW)


def _submit_same(url, barrier, out):
    store.dispose_engines()
    _warm_up()
    barrier.wait()
    with store.session_scope(url) as s:
        o = execution.submit_order(s, TOM, req("race"))
        time.sleep(0.5)  # keep the insert uncommitted so the other submitter runs into the unique index
        oid = o.id
    out.put(oid)


def test_concurrent_submissions_of_one_client_order_id_give_one_order(market):
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_submit_same, args=(market, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    ids = {out.get(timeout=5), out.get(timeout=5)}
    with store.session_scope() as s:
        assert s.execute(sa.select(sa.func.count()).select_from(Order)).scalar_one() == 1
        assert ids == {s.execute(sa.select(Order.id)).scalar_one()}


def test_bad_order_input_names_the_field(market):
    bad = [
        (req(side="hold"), "order side"),
        (req(qty=0), "order quantity"),
        (req(qty=1.5), "order quantity"),
        (req(option_type="X"), "order option_type"),
        (req(strike=-1.0), "order strike"),
        (req(expiry=None), "order expiry"),
        (req(order_type="limit"), "order limit_price"),
        (req(limit_price=3.0), "order limit_price"),
        (OrderRequest("", "SPX", "buy", 1), "order client_order_id"),
        (OrderRequest("u1", "SPX", "buy", 1, "S", strike=100.0), "order strike"),
    ]
    with store.session_scope() as s:
        for r, match in bad:
            with pytest.raises(ValueError, match=match):
                execution.submit_order(s, TOM, r)
        with pytest.raises(PermissionDenied, match="orders:submit"):
            execution.submit_order(s, Principal.with_roles("mia", ["manager"]), req())
        assert s.execute(sa.select(sa.func.count()).select_from(Order)).scalar_one() == 0


# ---------------------------------------------------------------- four eyes


def test_submitter_cannot_approve_and_approvals_are_audited_with_reason(market, monkeypatch):
    with store.session_scope() as s:
        big = execution.submit_order(s, TOM, req("big", qty=200))  # 200 x 100 x 100 = 2,000,000 notional
        small = execution.submit_order(s, TOM, req("small", qty=1))
        assert big.state == "pending_approval" and "approval_notional" in big.approval_reason
        assert small.state == "approved" and small.approved_by == execution.AUTO_APPROVER
    with store.session_scope() as s:
        with pytest.raises(execution.FourEyesViolation, match="four eyes"):
            execution.approve_order(s, TOM, big.id, "my own")
        with pytest.raises(execution.FourEyesViolation):
            execution.reject_order(s, TOM, big.id, "my own")
        with pytest.raises(PermissionDenied, match="orders:approve"):
            execution.approve_order(s, Principal.with_roles("mia", ["manager"]), big.id, "x")
        with pytest.raises(ValueError, match="approval reason"):
            execution.approve_order(s, ANN, big.id, "")
    with store.session_scope() as s:
        o = execution.approve_order(s, ANN, big.id, "checked the hedge")
        assert (o.state, o.approved_by) == ("approved", "ann")
        with pytest.raises(IllegalTransition, match="approved"):
            execution.approve_order(s, RITA, big.id, "twice")
    with store.session_scope() as s:
        rec = audit.query(s, action="order.approved", target=f"order:{big.id}")
        assert [(r.actor, r.after["reason"]) for r in rec] == [("ann", "checked the hedge")]
    # manual strategies always need approval; rejection is audited with its reason
    with store.session_scope() as s:
        with pytest.raises(PermissionDenied, match="limits:write"):
            execution.set_strategy(s, TOM, "discretionary", True)
        execution.set_strategy(s, RITA, "discretionary", True)
        m = execution.submit_order(s, TOM, req("man", qty=1, strategy="discretionary"))
        assert m.state == "pending_approval" and m.approval_reason == "strategy discretionary is manual"
        execution.reject_order(s, RITA, m.id, "no discretionary trades today")
    with store.session_scope() as s:
        rec = audit.query(s, action="order.rejected", target=f"order:{m.id}")
        assert [(r.actor, r.after["reason"]) for r in rec] == [("rita", "no discretionary trades today")]
    # the vega threshold
    monkeypatch.setenv("AITRADE_RISK__APPROVAL_VEGA", "10")
    from aitrade import config

    config.reload_settings()
    with store.session_scope() as s:
        v = execution.submit_order(s, TOM, req("vega", qty=1))
        assert v.state == "pending_approval" and "approval_vega" in v.approval_reason and v.est_vega > 10


def _approve(url, order_id, who, barrier, out):
    store.dispose_engines()
    me = Principal.with_roles(who, ["risk"])
    _warm_up()
    barrier.wait()
    try:
        with store.session_scope(url) as s:
            execution.approve_order(s, me, order_id, f"approved by {who}")
            time.sleep(0.5)  # hold the row: the other approver runs into it
        out.put((who, "approved"))
    except IllegalTransition as e:
        out.put((who, f"refused: {e}"))


def test_two_processes_approving_the_same_order_exactly_one_takes_effect(market):
    with store.session_scope() as s:
        oid = execution.submit_order(s, TOM, req("contested", qty=200)).id
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_approve, args=(market, oid, w, barrier, out)) for w in ("ann", "bob")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    results = dict(out.get(timeout=5) for _ in procs)
    winners = [w for w, r in results.items() if r == "approved"]
    assert len(winners) == 1, results
    loser = ({"ann", "bob"} - set(winners)).pop()
    assert results[loser].startswith(f"refused: order {oid} is approved")
    with store.session_scope() as s:
        o = execution.get_order(s, oid)
        assert (o.state, o.approved_by) == ("approved", winners[0])
        ev = [(e.to_state, e.actor) for e in execution.order_history(s, oid)]
        assert ev.count(("approved", winners[0])) == 1 and [t for t, _ in ev].count("approved") == 1
        assert len(audit.query(s, action="order.approved")) == 1
        assert audit.verify(s).ok


# ---------------------------------------------------------------- state machine


def test_illegal_transitions_are_refused(market):
    tape = Tape(q(4.9, 5.1, 50, 50, NOW))
    broker = PaperBroker(quotes=tape)
    with store.session_scope() as s:
        o = execution.submit_order(s, TOM, req("sm", qty=3), broker=broker)
        assert o.state == "sent"
        execution.process_fills(s, broker, NOW)
        assert o.state == "filled"
        with pytest.raises(IllegalTransition, match="filled: cannot move to cancelled"):
            execution.cancel_order(s, TOM, o.id, "too late")
        with pytest.raises(IllegalTransition):
            execution.approve_order(s, ANN, o.id, "late")
        with pytest.raises(IllegalTransition, match="cannot move to sent"):
            execution.send_order(s, TOM, o.id, broker)
        p = execution.submit_order(s, TOM, req("sm2", qty=200))
        execution.cancel_order(s, TOM, p.id, "changed my mind")
        with pytest.raises(IllegalTransition):
            execution.approve_order(s, ANN, p.id, "late")
    assert set(execution.TRANSITIONS) == set(execution.STATES)
    assert all(not execution.TRANSITIONS[t] for t in ("filled", "cancelled", "rejected"))
    with store.session_scope() as s:
        hist = [(e.from_state, e.to_state) for e in execution.order_history(s, o.id)]
        assert hist == [(None, "new"), ("new", "approved"), ("approved", "sent"), ("sent", "filled")]


# ---------------------------------------------------------------- paper broker


def test_paper_broker_partial_fills_slippage_and_commissions(market):
    t0 = NOW
    tape = Tape(q(4.9, 5.1, 10, 7, t0))
    broker = PaperBroker(slippage_bps=10, commission_per_contract=0.65, fee_per_contract=0.05, quotes=tape)
    with store.session_scope() as s:
        o = execution.submit_order(s, TOM, req("pf", qty=12), broker=broker)
        f1 = execution.process_fills(s, broker, t0)
        assert [(f.quantity, f.commission, f.fees) for f in f1] == [(7.0, 7 * 0.65, pytest.approx(7 * 0.05))]
        assert f1[0].price == pytest.approx(5.1 * 1.001)  # buy at the ask, 10 bp worse
        assert (o.state, o.filled_quantity) == ("partially_filled", 7.0)
        assert execution.process_fills(s, broker, t0) == []  # the same quote's size is used once
    tape.push(q(4.8, 5.0, 10, 3, t0 + timedelta(minutes=1)))
    with store.session_scope() as s:
        assert [f.quantity for f in execution.process_fills(s, broker, t0)] == [3.0]
    tape.push(q(4.8, 5.0, 10, 100, t0 + timedelta(minutes=2)))
    with store.session_scope() as s:
        assert [f.quantity for f in execution.process_fills(s, broker, t0)] == [2.0]
        o = execution.get_order(s, o.id)
        assert (o.state, o.filled_quantity) == ("filled", 12.0)
        assert o.avg_fill_price == pytest.approx((7 * 5.1 * 1.001 + 5 * 5.0 * 1.001) / 12)
        # sell at the bid, moved down by slippage; a limit above the bid does not fill
        lim = execution.submit_order(
            s, TOM, req("lim", qty=5, side="sell", order_type="limit", limit_price=4.9), broker=broker
        )
        assert execution.process_fills(s, broker, t0, order_ids=[lim.id]) == []
        tape.push(q(5.0, 5.2, 4, 4, t0 + timedelta(minutes=3)))
        [f] = execution.process_fills(s, broker, t0, order_ids=[lim.id])
        assert (f.quantity, f.price) == (4.0, pytest.approx(5.0 * 0.999))
        execution.cancel_order(s, TOM, lim.id, "rest not needed", broker=broker)
        assert execution.get_order(s, lim.id).state == "cancelled"
    with pytest.raises(ValueError, match="PaperBroker slippage_bps"):
        PaperBroker(slippage_bps=-1)
    assert isinstance(broker, execution.BrokerAdapter)


def test_paper_broker_fills_from_stored_quotes_and_publishes_to_the_bus(market):

    broker = PaperBroker(
        commission_per_contract=1.0, fee_per_contract=0.0
    )  # default quote source: the database
    with store.session_scope() as s:
        o = execution.submit_order(s, TOM, req("db", qty=9), broker=broker)
        [f] = execution.process_fills(s, broker)
        assert (f.quantity, f.price, f.commission) == (7.0, 5.1, 7.0)  # seed_quote: ask 5.1 x 7
        oid = o.id
    msgs = [m for _, m in bus.subscribe("fills", last_id="0", block_ms=0)]
    assert [(m["order_id"], m["quantity"], m["price"], m["state"]) for m in msgs] == [
        (oid, 7.0, 5.1, "partially_filled")
    ]
    # a rolled-back fill is never published
    with pytest.raises(RuntimeError), store.session_scope() as s:
        seed_quote(ts=datetime.now(UTC) + timedelta(seconds=1))
        execution.process_fills(s, broker)
        raise RuntimeError("crash before commit")
    assert len(list(bus.subscribe("fills", last_id="0", block_ms=0))) == 1


def test_an_order_that_is_sent_and_filled_writes_few_statements_and_its_whole_record(market):
    "Checked first, written once: the order in its decided state, its history and audit in one INSERT each."
    broker = PaperBroker()
    execution.order_risk(req("warm"), q(4.9, 5.1, 1, 1, NOW), NOW)  # kernels compiled outside the count
    seen: list[str] = []

    def count(conn, cursor, statement, *a):
        seen.append(statement.split()[0].upper())

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        with store.session_scope() as s:
            o = execution.fill_now(
                s, execution.submit_order(s, TOM, req("few", qty=3), broker=broker), broker
            )
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    writes = [w for w in seen if w in ("INSERT", "UPDATE", "DELETE")]
    # order, fill, history, audit; sent and filled, in one UPDATE (the row is this transaction's); the audit head
    assert sorted(writes) == ["INSERT"] * 4 + ["UPDATE"] * 2, seen
    assert len(seen) <= 17, seen  # with the reads of the checks and BEGIN (SQLite)
    assert (o.state, o.filled_quantity, o.avg_fill_price) == ("filled", 3.0, 5.1)
    with store.session_scope() as s:
        hist = [(e.from_state, e.to_state, e.actor) for e in execution.order_history(s, o.id)]
        assert hist == [
            (None, "new", "tom"),
            ("new", "approved", execution.AUTO_APPROVER),
            ("approved", "sent", "tom"),
            ("sent", "filled", "system:broker"),
        ]
        recs = audit.query(s, target=f"order:{o.id}")
        assert [r.action for r in reversed(recs)] == [
            "order.submit",
            "order.approved",
            "order.sent",
            "order.filled",
        ]
        assert recs[-1].after["state"] == "new" and recs[-1].after["client_order_id"] == "few"
        assert audit.verify(s).ok
        stored = execution.get_order(s, o.id)
        assert (stored.state, stored.approved_by, stored.reason) == ("filled", execution.AUTO_APPROVER, "")


def test_order_history_in_the_same_transaction_includes_its_own_moves(market):
    with store.session_scope() as s:
        o = execution.submit_order(s, TOM, req("own", qty=2))
        assert [e.to_state for e in execution.order_history(s, o.id)] == ["new", "approved"]
        execution.cancel_order(s, TOM, o.id, "changed my mind")
        assert [e.to_state for e in execution.order_history(s, o.id)] == ["new", "approved", "cancelled"]
    with store.session_scope() as s:
        assert [e.to_state for e in execution.order_history(s, o.id)] == ["new", "approved", "cancelled"]


# ---------------------------------------------------------------- positions and P&L


def test_positions_realized_unrealized_by_trade_and_by_day(market):
    d1 = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)
    d2 = d1 + timedelta(days=1)
    tape = Tape(q(4.9, 5.0, 100, 100, d1))
    broker = PaperBroker(quotes=tape)  # commission 0.65 + fee 0.05 per contract
    with store.session_scope() as s:
        execution.submit_order(s, TOM, req("b", qty=10), broker=broker)
        execution.process_fills(s, broker, d1)
    tape.push(q(6.0, 6.2, 100, 100, d2))
    with store.session_scope() as s:
        execution.submit_order(s, TOM, req("s", qty=4, side="sell"), broker=broker)
        execution.process_fills(s, broker, d2)
    with store.session_scope() as s:
        pos = execution.positions(s)
        assert pos[["quantity", "avg_cost", "multiplier"]].iloc[0].tolist() == [6.0, 5.0, 100.0]
        assert pos["realized"].iloc[0] == pytest.approx(400 - 7.0 - 2.8)
        marks = pd.DataFrame([dict(symbol="SPX", option_type="C", expiry=EXPIRY, strike=100.0, mark=5.5)])
        p = execution.pnl(s, marks)
        assert p["unrealized"].iloc[0] == pytest.approx(300.0)
        assert p["total"].iloc[0] == pytest.approx(690.2)
        trades = execution.trade_pnl(execution.fills_frame(s))
        assert trades["realized"].tolist() == pytest.approx([-7.0, 397.2])
        assert trades["position"].tolist() == [10.0, 6.0]
        day_marks = pd.DataFrame(
            [
                dict(day=d1.date(), symbol="SPX", option_type="C", expiry=EXPIRY, strike=100.0, mark=5.2),
                dict(day=d2.date(), symbol="SPX", option_type="C", expiry=EXPIRY, strike=100.0, mark=5.5),
            ]
        )
        daily = execution.daily_pnl(execution.fills_frame(s), day_marks)
    assert daily["total"].tolist() == pytest.approx([193.0, 497.2])
    assert daily["realized"].tolist() == pytest.approx([-7.0, 397.2])
    assert daily["unrealized"].tolist() == pytest.approx([200.0, 100.0])
    assert daily["total"].sum() == pytest.approx(690.2)


def test_trade_pnl_average_cost_through_a_flip():
    f = pd.DataFrame(
        dict(
            symbol="X", option_type="S", expiry=None, strike=np.nan, multiplier=1.0, commission=0.0, fees=0.0,
            qty=[100.0, 50.0, -200.0, 50.0], price=[10.0, 13.0, 12.0, 11.0],
        )
    )  # fmt: skip
    t = execution.trade_pnl(f)
    # avg 11 after two buys; selling 200 closes 150 at +1 and opens 50 short at 12; buying 50 closes at +1
    assert t["realized"].tolist() == [0.0, 0.0, 150.0, 50.0]
    assert t["position"].tolist() == [100.0, 150.0, -50.0, 0.0]
    assert t["avg_cost"].tolist() == [10.0, 11.0, 12.0, 0.0]


# ---------------------------------------------------------------- attribution


def test_attribution_sums_to_total_and_unexplained_is_small_for_small_moves():
    kw = dict(option_type=["C", "P", "S"], strike=[100.0, 95.0, 0.0], T0=[0.5, 0.25, 0.0],
              quantity=[10.0, -20.0, -300.0], multiplier=[100.0, 100.0, 1.0], r=0.03, q=0.01)  # fmt: skip
    small = execution.attribution(S0=100.0, S1=100.4, vol0=0.20, vol1=0.202, dt=1 / 365, **kw)
    parts = small[["delta", "gamma", "vega", "theta", "unexplained"]].sum(axis=1)
    np.testing.assert_allclose(parts, small["total"], rtol=0, atol=1e-9)
    opt = small.iloc[:2]
    assert (opt["unexplained"].abs() < 0.01 * opt["total"].abs()).all(), small
    assert small.loc[2, "total"] == pytest.approx(-300 * 0.4) and small.loc[
        2, "unexplained"
    ] == pytest.approx(0)
    # the remainder is of higher order: halving every move cuts it about four-fold
    half = execution.attribution(S0=100.0, S1=100.2, vol0=0.20, vol1=0.201, dt=0.5 / 365, **kw)
    ratio = (small["unexplained"] / half["unexplained"]).iloc[:2]
    assert ((ratio > 3.5) & (ratio < 4.5)).all(), ratio
    big = execution.attribution(S0=100.0, S1=110.0, vol0=0.20, vol1=0.25, dt=5 / 365, **kw)
    assert (big["unexplained"].iloc[:2].abs() > 20 * small["unexplained"].iloc[:2].abs()).all()
    np.testing.assert_allclose(
        big[["delta", "gamma", "vega", "theta", "unexplained"]].sum(axis=1), big["total"], atol=1e-9
    )
    with pytest.raises(ValueError, match="attribution option_type"):
        execution.attribution("X", 100.0, 0.5, 1, 100, 100, 101, 0.2, 0.2, 0.01)


# ---------------------------------------------------------------- pre-trade limits through submit_order


def test_limit_breach_rejects_the_order_naming_limit_current_and_post_trade(market):
    with store.session_scope() as s:
        limits.set_limit(s, RITA, "SPX", "delta", 100_000, "desk delta")
        ok = execution.submit_order(s, TOM, req("l1", qty=5))  # ~ 5 x 100 x 0.6 x 100 = 30,000 delta
        assert ok.state == "approved", ok.reason
        bad = execution.submit_order(s, TOM, req("l2", qty=50))
        assert bad.state == "rejected"
        assert bad.reason.startswith("pre-trade limit check failed: limit SPX:delta (max abs 100,000.00)")
        assert "current 0.00, post-trade" in bad.reason


def test_synthetic_chain_end_to_end_with_limits_and_the_paper_broker(db):
    "The backtest path: a stored synthetic chain, a limit, a historical `now`, fills at the stored ask."
    from aitrade import marketdata

    chain = marketdata.SyntheticMarket(seed=0).chain("SPX", "2015-03-02")
    good = marketdata.validate_chain(chain).good
    with store.session_scope() as s:
        marketdata.store_chain(s, good)
        limits.set_limit(s, RITA, "SPX", "delta", 2_000_000, "desk delta")
    now = pd.Timestamp(good["ts"].max()).to_pydatetime() + timedelta(minutes=5)
    calls = good[(good["option_type"] == "C") & (good["expiry"] == good["expiry"].max())]
    atm = calls.iloc[(calls["strike"] - calls["underlying_price"]).abs().argmin()]
    exp = pd.Timestamp(atm["expiry"]).date()
    broker = PaperBroker()
    with store.session_scope() as s:
        r = OrderRequest("e2e-1", "SPX", "buy", 3, "C", exp, float(atm["strike"]))
        o = execution.submit_order(s, TOM, r, broker=broker, now=now)
        assert o.state == "sent", o.reason
        fills = execution.process_fills(s, broker, now)
        assert [f.price for f in fills] == [pytest.approx(float(atm["ask"]))]
        assert fills[0].quantity == min(3, int(atm["ask_size"]))
        # ~ 3 contracts x 100 x 0.5 delta x 2,100 spot = 300k delta: 30 more contracts breach 2,000,000
        big = execution.submit_order(
            s, TOM, OrderRequest("e2e-2", "SPX", "buy", 30, "C", exp, float(atm["strike"])), now=now
        )
        assert big.state == "rejected" and "limit SPX:delta" in big.reason, big.reason
        assert "post-trade" in big.reason
        # an hour later the same data is stale
        late = execution.submit_order(
            s,
            TOM,
            OrderRequest("e2e-3", "SPX", "buy", 1, "C", exp, float(atm["strike"])),
            now=now + timedelta(hours=1),
        )
        assert late.state == "rejected" and late.reason.startswith("stale market data for SPX")


def test_risk_manager_approves_and_the_platform_routes_the_order(market):
    "Approving needs orders:approve only: the approved order is sent by the order router, not the approver."
    from aitrade.auth import ORDER_ROUTER

    assert not RITA.can("orders:submit")
    with store.session_scope() as s:
        big = execution.submit_order(s, TOM, req("route-big", qty=200))
        assert big.state == "pending_approval"
    with store.session_scope() as s:
        o = execution.approve_order(s, RITA, big.id, "hedge checked", broker=PaperBroker())
        assert o.state in ("sent", "partially_filled", "filled") and o.approved_by == "rita"
        moves = [(e.to_state, e.actor) for e in execution.order_history(s, big.id)]
        assert ("approved", "rita") in moves and ("sent", ORDER_ROUTER.name) in moves


@pytest.mark.parametrize("now", [NOW, datetime(2026, 7, 6, 15, 0, tzinfo=UTC)], ids=["winter", "summer"])
def test_order_vega_and_risk_report_vega_agree(market, now):
    "One clock: the order's pre-trade vega and the risk report's vega of the same position use the same T."
    from aitrade import clock, risk

    tape = Tape(q(4.9, 5.1, 10, 7, now))
    with store.session_scope() as s:
        o = execution.submit_order(s, TOM, req("vega-1", qty=3), quotes=tape, now=now)
        pf = execution.portfolio_from_orders([o], now)
        mkt = execution.market_from_quotes(s, pf, now, quotes=tape)
        g = risk.portfolio_greeks(pf, mkt, by="total")
        assert pf.expiry_t[0] == execution.order_risk(o, tape.quotes[-1], now)["T"]
        assert pf.expiry_t[0] == clock.time_to_expiry(now, EXPIRY)
        assert o.est_vega > 0 and float(g["vega"].iloc[0]) == pytest.approx(o.est_vega, rel=1e-12)
        # the risk report from a frame with the expiry date and the same instant agrees too
        frame = pd.DataFrame(
            dict(
                symbol=["SPX"],
                option_type=["C"],
                strike=[100.0],
                expiry=[pd.Timestamp(EXPIRY)],
                quantity=[3.0],
            )
        )
        g2 = risk.portfolio_greeks(risk.Portfolio.from_frame(frame, as_of=now), mkt, by="total")
        assert float(g2["vega"].iloc[0]) == pytest.approx(o.est_vega, rel=1e-12)


def test_rejection_carries_the_platform_exception_for_this_call_only(market):
    "A kill-switch rejection sets `Order.rejection` (the API answers 409 from it); the stored order is unchanged."
    with store.session_scope() as s:
        limits.engage_kill_switch(s, RITA, "drill")
    with store.session_scope() as s:
        o = execution.submit_order(s, TOM, req("ks-1"))
        assert o.state == "rejected" and isinstance(o.rejection, limits.KillSwitchEngaged)
        assert o.reason == str(o.rejection) == "kill switch engaged by rita: drill"
        again = execution.submit_order(s, TOM, req("ks-1"))  # the retry rejects nothing in this call
        assert again.id == o.id and again.rejection is None
    with store.session_scope() as s:
        assert execution.get_order(s, o.id).rejection is None
        ok = execution.submit_order(s, TOM, req("ks-2", qty=1))
    assert ok.state == "rejected" and ok.rejection is not None  # the switch is still engaged
    with store.session_scope() as s:
        limits.release_kill_switch(s, RITA, "drill over")
        fine = execution.submit_order(s, TOM, req("ks-3", qty=1))
        assert fine.state != "rejected" and fine.rejection is None


def test_unpublished_keeps_fills_off_the_bus(market):

    tape = Tape(q(4.9, 5.1, 10, 7, NOW))
    broker = PaperBroker(quotes=tape)
    with store.session_scope() as s, bus.unpublished(s):
        o = execution.submit_order(s, TOM, req("quiet", qty=2), quotes=tape, broker=broker, now=NOW)
        execution.process_fills(s, broker, NOW)
        assert execution.get_order(s, o.id).state == "filled"
    assert list(bus.subscribe("fills", last_id="0", block_ms=0)) == []
