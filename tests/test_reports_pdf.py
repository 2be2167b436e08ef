"""The daily report on SQLite and PostgreSQL, through the documents path: a book bought yesterday and marked
today shows its P&L and attribution, risk against limits, the day's orders and four-eyes approvals as tables; the
PDF's first page is a title and a summary table (no dump of Python values); JSON, CSV and PDF hold the same rows;
a fixed clock gives the same bytes."""

import datetime as dt
import io
import json
from datetime import UTC, timedelta

import pytest
from pypdf import PdfReader
from test_limits import ANN, RITA, TOM, seed_quote

from aitrade import audit, documents, execution, limits, reports, store
from aitrade.archive import Archive
from aitrade.execution import OrderRequest, PaperBroker

EXPIRY = dt.date(2030, 6, 21)


@pytest.fixture
def day(db):
    now = store.utcnow()
    today = now.date()
    y = dt.datetime.combine(today - timedelta(days=1), dt.time(15), tzinfo=UTC)
    seed_quote(ts=y, bid=4.9, ask=5.1, spot=100.0)
    seed_quote(
        ts=now, bid=5.9, ask=6.1, spot=102.0
    )  # today's quote: fresh, so new orders are not failed closed
    broker = PaperBroker()
    with store.session_scope() as s:
        o = execution.submit_order(
            s, TOM, OrderRequest("held-1", "SPX", "buy", 5, "C", EXPIRY, 100.0), now=y, broker=broker
        )
        assert o.state == "sent", o.reason
        execution.process_fills(s, broker, y)
        big = execution.submit_order(s, TOM, OrderRequest("big-2", "SPX", "buy", 200, "C", EXPIRY, 100.0))
        assert big.state == "pending_approval", big.reason
    with store.session_scope() as s:
        execution.approve_order(s, ANN, big.id, "checked the hedge")
        limits.set_limit(s, RITA, "SPX", "vega", 1e9, "desk mandate")
    return today


def test_daily_report_tables_figures_and_bytes(day, tmp_path):
    clock = dt.datetime.combine(day, dt.time(23, 0), tzinfo=UTC)
    with store.session_scope() as s:
        rep = reports.collect_daily(s, day, ["SPX"], now=clock)
    assert rep.compliance["audit chain intact"] is True and rep.compliance["orders today"] >= 1
    assert list(rep.attribution["symbol"]) == ["SPX"]
    att = rep.attribution.iloc[0]
    assert att["total"] == pytest.approx(att[["delta", "gamma", "vega", "theta", "unexplained"]].sum())
    assert att["delta"] > 0  # long calls, spot up 2%
    assert list(rep.limits[["scope", "metric"]].itertuples(index=False, name=None)) == [("SPX", "vega")]
    assert rep.limits["usage"].iloc[0] > 0 and not rep.limits["breached"].iloc[0]
    assert list(rep.approvals[["actor", "action"]].itertuples(index=False, name=None)) == [
        ("ann", "order.approved")
    ]
    doc = reports.to_document(rep, figs={})
    files = documents.render(doc)
    js = json.loads(files[f"{doc.stem}.json"])
    documents.validate(js)
    for sec in js["sections"]:
        if sec["columns"]:
            header, rows = documents.csv_rows(files[f"{doc.stem}-{sec['name']}.csv"])
            assert header == sec["columns"] and rows == [
                [documents.csv_text(v) for v in r] for r in sec["rows"]
            ]
    orders = doc.section("orders")
    assert "big-2" in [r[1] for r in orders.rows]
    pages = [p.extract_text() for p in PdfReader(io.BytesIO(files[f"{doc.stem}.pdf"])).pages]
    assert pages[0].startswith(f"aitrade daily report {day}") and "audit chain intact" in pages[0]
    text = "".join(pages)
    for needle in (
        "P&L attribution over the day",
        "Risk against limits",
        "Four-eyes approvals",
        "big-2",
        "ann",
    ):
        assert needle in text, needle
    assert "[]" not in text and "{'" not in text  # tables, not Python values
    with store.session_scope() as s:
        h1, p1 = reports.write_daily_report(s, day, ["SPX"], tmp_path / "a", now=clock)
    with store.session_scope() as s:
        h2, p2 = reports.write_daily_report(s, day, ["SPX"], tmp_path / "b", now=clock)
    assert p1.read_bytes() == p2.read_bytes() and p1.read_bytes()[:5] == b"%PDF-"
    assert sorted(x.name for x in (tmp_path / "a").iterdir()) == sorted(
        x.name for x in (tmp_path / "b").iterdir()
    )
    assert "big-2" in h1.read_text()
    arc = Archive(tmp_path / "archive")
    with store.session_scope() as s:  # the job's way: archived write-once with a manifest, audited
        reports.write_daily_report(
            s, day, ["SPX"], tmp_path / "c", now=clock, publish_as="system:scheduler", archive=arc
        )
    man = json.loads((tmp_path / "c" / f"daily-{day}.manifest.json").read_text())
    pdf = next(f for f in man["files"] if f["name"] == f"daily-{day}.pdf")
    assert arc.get_object(pdf["sha256"]) == p1.read_bytes()
    with store.session_scope() as s:
        rec = audit.query(s, action="report.generate")[0]
        assert (rec.actor, rec.target) == ("system:scheduler", f"report:daily:{day}:{day}")
        assert rec.after["files"][f"daily-{day}.pdf"] == pdf["sha256"]
