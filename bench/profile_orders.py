"""Where one order's time goes inside the process: SQL statements per order (counted with SQLAlchemy's
`before_cursor_execute`) and milliseconds per order through the API in process (TestClient) and through the
platform functions alone (`submit_order` + `fill_now`), one client, on a fresh PostgreSQL schema or SQLite; and
per order when N orders share one transaction and its reads (what `store.GroupCommit` does in the API).

    .venv/bin/python bench/profile_orders.py [sqlite] [prof [FUNCTION ...]]

`prof` adds a cProfile of 100 orders through the platform functions, sorted by cumulative time, then by own
time; names after `prof` (e.g. `prof marketdata_quote`) add what those functions call. These are
figures for comparing versions of the order path with each other (issue 15, item 3), not targets:
`bench/bench_api.py` measures orders through the Hub against their targets.
"""

from __future__ import annotations

import collections
import cProfile
import datetime as dt
import os
import pstats
import sys
import tempfile
import time
import uuid

import sqlalchemy as sa


def main(argv: list[str]) -> None:
    root = tempfile.mkdtemp(prefix="profile-orders-")
    os.chdir(root)
    with open("settings.ini", "w") as f:
        f.write("[api]\nrate_limit =\n")
    os.environ["AITRADE_SETTINGS"] = root + "/settings.ini"
    os.environ["AITRADE_ACCOUNTS__SERVICE_ACCOUNT"] = ""
    base = os.environ.get("AITRADE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    schema = "prof_" + uuid.uuid4().hex[:8]
    eng = sa.create_engine(base, poolclass=sa.pool.NullPool)
    if "sqlite" in argv:
        url = f"sqlite:///{root}/aitrade.db"
    else:
        with eng.begin() as c:
            c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)  # fmt: skip
    os.environ["AITRADE_DATABASE__URL"] = url
    from fastapi.testclient import TestClient

    from aitrade import api, config, execution, store
    from aitrade.api.orders import bus_up
    from aitrade.auth import ROLES, Principal
    from aitrade.marketdata import OptionQuote, ensure_underlyings

    config.reload_settings()
    store.upgrade(url=url)
    try:
        now = store.utcnow()
        exp = (now + dt.timedelta(days=120)).date()
        with store.session_scope() as s:
            ensure_underlyings(s, ["SPX"])
            for k in range(40):
                s.add(OptionQuote(underlying="SPX", quote_date=now.date(), ts=now, expiry=exp, strike=80.0 + k, option_type="C",
                                  bid=4.9, ask=5.1, bid_size=10, ask_size=7, underlying_price=100.0))  # fmt: skip
        app = api.create_app(api.StaticResolver({"t": api.hub_model("tara", ROLES["trader"])}), prefix="/p")
        client, hdr = TestClient(app), {"Authorization": "token t"}
        body = {"symbol": "SPX", "side": "buy", "quantity": 1, "option_type": "C", "expiry": exp.isoformat(), "strike": 100.0}  # fmt: skip

        def via_api():
            r = client.post("/p/v1/orders", headers=hdr, json={"client_order_id": uuid.uuid4().hex, **body})
            assert r.status_code == 201, r.text

        tara = Principal.with_roles("tara", ["trader"])

        def direct():
            bus_up()
            req = execution.OrderRequest(client_order_id=uuid.uuid4().hex, **{**body, "expiry": exp})
            broker = execution.PaperBroker()
            with store.session_scope() as s:
                execution.fill_now(s, execution.submit_order(s, tara, req, broker=broker), broker)

        for _ in range(20):  # warm: kernels, pools, caches
            via_api()
            direct()
        stmts: collections.Counter = collections.Counter()

        def count(conn, cursor, statement, *a):
            stmts[" ".join(statement.split())[:100]] += 1

        sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
        direct()
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
        print(
            f"database: {sa.make_url(url).get_backend_name()}; SQL statements per order: {sum(stmts.values())}"
        )
        for k, v in stmts.most_common():
            print(f"  {v} x {k}")
        for name, fn in (("through the API (TestClient)", via_api), ("platform functions alone", direct)):
            t = time.perf_counter()
            for _ in range(200):
                fn()
            print(f"per order, {name}: {(time.perf_counter() - t) / 200 * 1e3:.2f} ms")

        def group(n: int) -> None:
            "n orders in one transaction, their reads shared, as `store.GroupCommit` runs them."
            bus_up()
            broker = execution.PaperBroker()
            with store.session_scope() as s, store.shared_reads(s):
                for _ in range(n):
                    req = execution.OrderRequest(client_order_id=uuid.uuid4().hex, **{**body, "expiry": exp})
                    execution.fill_now(s, execution.submit_order(s, tara, req, broker=broker), broker)

        for n in (1, 2, 4, 16):
            t = time.perf_counter()
            for _ in range(192 // n):
                group(n)
            print(
                f"per order, platform functions, groups of {n}: {(time.perf_counter() - t) / (192 // n * n) * 1e3:.2f} ms"
            )
        if "prof" in argv:
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(100):
                direct()
            pr.disable()
            pstats.Stats(pr).sort_stats("cumulative").print_stats(
                "aitrade|psycopg.connection|sqlalchemy.orm.session", 50
            )
            pstats.Stats(pr).sort_stats("tottime").print_stats(30)  # where the CPU itself goes
            # and what the functions named after `prof` call, e.g. `marketdata_quote`
            for fn in argv[argv.index("prof") + 1 :]:
                pstats.Stats(pr).sort_stats("cumulative").print_callees(fn)
    finally:
        store.dispose_engines()
        if "sqlite" not in argv:
            with eng.begin() as c:
                c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main(sys.argv[1:])
