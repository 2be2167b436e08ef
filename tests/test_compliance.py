"""Compliance reports on SQLite and PostgreSQL: the JSON validates against its schema, the CSV rows are the JSON
rows, the PDF's text holds every order; seeded data with one self-approval attempt and one privileged change
shows exactly those; a report made twice with a fixed clock is byte-identical; its generation is audited and its
files archived write-once; the access review reads the Hub's database; the command line writes the files and the
manifest, and refuses people without `audit:read`."""

import datetime as dt
import hashlib
import io
import json
from datetime import UTC, timedelta

import jsonschema
import pytest
from pypdf import PdfReader
from test_limits import ANN, RITA, TOM, seed_quote
from typer.testing import CliRunner

from aitrade import audit, compliance, documents, execution, limits, store
from aitrade.archive import Archive
from aitrade.cli import app as cli_app
from aitrade.execution import OrderRequest, PaperBroker

CLOCK = dt.datetime(2026, 1, 6, 7, 0, tzinfo=UTC)
EXPIRY = dt.date(2030, 6, 21)


def req(cid, qty, **kw):
    return OrderRequest(cid, "SPX", "buy", qty, "C", EXPIRY, 100.0, **kw)


@pytest.fixture
def desk(db):
    """A day of the desk: a small order auto-approved, routed and filled; a large one whose submitter tries to
    approve it himself (refused) and a second trader approves; one cancelled; one limit change (the only
    privileged change); then one order the tightened limit blocks."""
    seed_quote()
    broker = PaperBroker()
    with store.session_scope() as s:
        filled = execution.submit_order(s, TOM, req("ord-small-1", 1), broker=broker)
        execution.process_fills(s, broker)
        big = execution.submit_order(s, TOM, req("ord-big-2", 200))
        gone = execution.submit_order(s, TOM, req("ord-gone-3", 300))
        ids = [filled.id, big.id, gone.id]
    with pytest.raises(execution.FourEyesViolation), store.session_scope() as s:
        execution.approve_order(s, TOM, big.id, "my own")  # refused, and the attempt audited on its own
    with store.session_scope() as s:
        execution.approve_order(s, ANN, big.id, "checked the hedge")
        execution.cancel_order(s, TOM, gone.id, "no longer needed")
    with store.session_scope() as s:
        limits.set_limit(s, RITA, "SPX", "vega", 0.001, "tightened after review")
    with store.session_scope() as s:
        blocked = execution.submit_order(s, TOM, req("ord-blocked-4", 5))
        assert blocked.state == "rejected", blocked.reason
        ids.append(blocked.id)
    now = store.utcnow()
    return {"ids": ids, "from": now - timedelta(hours=1), "to": now + timedelta(hours=1)}


def build(kind, desk, **kw):
    with store.session_scope() as s:
        return compliance.build(s, kind, desk["from"], desk["to"], now=CLOCK, **kw)


def test_all_formats_hold_the_same_rows(desk, tmp_path):
    arc = Archive(tmp_path / "archive")
    for kind in compliance.KINDS:
        doc = build(kind, desk, **({"archive": arc} if kind == "jobs" else {}))
        files = documents.render(doc)
        js = json.loads(files[f"{doc.stem}.json"])
        jsonschema.validate(js, documents.SCHEMA)  # the published schema, checked independently
        for sec in js["sections"]:
            header, rows = documents.csv_rows(files[f"{doc.stem}-{sec['name']}.csv"])
            assert header == sec["columns"], (kind, sec["name"])
            assert rows == [[documents.csv_text(v) for v in r] for r in sec["rows"]], (kind, sec["name"])
        text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(files[f"{doc.stem}.pdf"])).pages)
        assert doc.title in text, kind
    doc = build("orders", desk)
    js = json.loads(documents.to_json(doc))
    orders = js["sections"][0]
    assert [r[0] for r in orders["rows"]] == desk["ids"]
    pdf = documents.to_pdf(doc)
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    for cid in ["ord-small-1", "ord-big-2", "ord-gone-3", "ord-blocked-4"]:
        assert cid in text  # every order, by its client id in the memoranda
    col = orders["columns"].index
    by_cid = {r[col("client_order_id")]: r for r in orders["rows"]}
    small, big, gone, blocked = (
        by_cid[c] for c in ("ord-small-1", "ord-big-2", "ord-gone-3", "ord-blocked-4")
    )
    assert (small[col("entered_by")], small[col("approved_by")], small[col("state")]) == (
        "tom",
        execution.AUTO_APPROVER,
        "filled",
    )
    assert small[col("routed_at")] and small[col("first_fill_at")] and small[col("avg_fill_price")] > 0
    assert (big[col("approved_by")], big[col("approval_required")], big[col("state")]) == (
        "ann",
        True,
        "approved",
    )
    assert (gone[col("cancelled_by")], gone[col("state")]) == ("tom", "cancelled")
    assert blocked[col("rejected_by")] == execution.PRE_TRADE
    moves = js["sections"][1]["rows"]
    assert [m[3] for m in moves if m[0] == big[0]] == ["new", "pending_approval", "approved"]


def test_one_self_approval_attempt_and_one_privileged_change_show_exactly_those(desk):
    four = build("orders", desk).section("four_eyes")
    assert [(r[0], r[2].split(":")[0], r[3]) for r in four.rows] == [
        (str(desk["ids"][1]), "order.approve.denied", "tom")
    ]
    priv = build("privileged", desk).section("changes")
    assert [(r[2], r[3], r[4]) for r in priv.rows] == [("rita", "limit.set", "limit:SPX:vega")]
    before, after = json.loads(priv.rows[0][5] or "null"), json.loads(priv.rows[0][6])
    assert before is None and after["max_abs"] == 0.001 and after["reason"] == "tightened after review"
    risk = build("risk", desk)
    assert [r[:3] for r in risk.section("limits").rows] == [["SPX", "vega", 0.001]]
    assert [r[0] for r in risk.section("blocks").rows] == [desk["ids"][3]]
    assert risk.section("killswitch").rows == []


def test_the_risk_report_shows_the_limits_in_force_at_the_periods_end(desk):
    "A later change, a later removal and a later new limit do not rewrite what a past period's report says."
    end = store.utcnow()
    with store.session_scope() as s:
        limits.set_limit(s, RITA, "SPX", "vega", 0.5, "loosened after the period")
        limits.set_limit(s, RITA, "SPX", "delta", 10.0, "new after the period")
    past = {"from": desk["from"], "to": end}
    rows = build("risk", past).section("limits").rows
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("SPX", "vega", 0.001, "tightened after review", "rita")
    ]
    with store.session_scope() as s:
        limits.remove_limit(s, RITA, "SPX", "vega", "no vega limit from now on")
    assert build("risk", past).section("limits").rows == rows
    now = build("risk", {"from": desk["from"], "to": store.utcnow()}).section("limits").rows
    assert [(r[1], r[2]) for r in now] == [("delta", 10.0)]


def test_a_self_approval_that_got_through_is_shown(desk):
    "A control failure (an order approved by its submitter, e.g. written past the API) is a finding of its own."
    import sqlalchemy as sa

    with store.session_scope() as s:
        s.execute(
            sa.update(execution.Order).where(execution.Order.id == desk["ids"][0]).values(approved_by="tom")
        )
    rows = build("orders", desk).section("four_eyes").rows
    assert sorted(r[2].split(":")[0] for r in rows) == ["approved by its submitter", "order.approve.denied"]


def test_byte_identical_for_a_fixed_clock_audited_and_archived(desk, tmp_path):
    arc = Archive(tmp_path / "archive")
    pubs = []
    for n in range(2):
        with store.session_scope() as s:
            doc = compliance.build(s, "orders", desk["from"], desk["to"], now=CLOCK)
            head = s.get(audit.AuditHead, 1)
            head = (head.seq, head.hash)
            pubs.append((head, documents.publish(s, doc, "ada", archive=arc, out_dir=tmp_path / f"out{n}")))
    (h1, p1), (h2, p2) = pubs
    assert p1.files == p2.files and len(p1.files) == 6  # json, pdf and 4 CSVs, byte for byte
    for name, data in p1.files.items():
        assert (tmp_path / "out1" / name).read_bytes() == data
        assert arc.get_object(hashlib.sha256(data).hexdigest()) == data  # archived, content-addressed
    assert p1.manifest["audit_head"] == {"seq": h1[0], "hash": h1[1]}
    assert p2.manifest["audit_head"]["seq"] == p1.audit_seq == h2[0]  # the 2nd saw the 1st's record
    man = json.loads(arc.get_object(p1.manifest_sha256))
    assert man == p1.manifest and man["query"]["kind"] == "orders"
    assert {f["name"]: f["sha256"] for f in man["files"]} == {
        n: hashlib.sha256(b).hexdigest() for n, b in p1.files.items()
    }
    with store.session_scope() as s:
        recs = audit.query(s, action="report.generate")[::-1]
        assert [(r.seq, r.actor, r.after["manifest_sha256"]) for r in recs] == [
            (p1.audit_seq, "ada", p1.manifest_sha256),
            (p2.audit_seq, "ada", p2.manifest_sha256),
        ]
        assert recs[0].target == f"report:orders:{doc.period_from}:{doc.period_to}"
        assert audit.verify(s).ok
    with pytest.raises(Exception, match="write-once"):
        arc.put_object(p1.files[f"{doc.stem}.pdf"])  # stored once, never rewritten


def _hub_db(tmp_path, now):
    from jupyterhub import orm

    url = f"sqlite:///{tmp_path}/jupyterhub.sqlite"
    db = orm.new_session_factory(url)()
    groups = {g: orm.Group(name=g) for g in ("auditor", "trader", "jupyter-users")}
    for name, gs, last, admin in [
        ("ada", ["auditor"], now - timedelta(days=3), False),
        ("tom", ["trader", "jupyter-users"], now - timedelta(days=1), False),
        ("old", ["trader"], now - timedelta(days=200), False),
        ("root", [], now - timedelta(days=1), True),
        ("ray", [], now - timedelta(days=1), False),
    ]:
        u = orm.User(name=name, admin=admin, last_activity=last.replace(tzinfo=None))
        u.groups = [groups[g] for g in gs]
        if name == "ray":  # granted the risk role directly, not through the risk group
            u.roles = [orm.Role(name="aitrade-risk"), orm.Role(name="user")]
        db.add(u)
    db.commit()
    db.close()
    return url


def test_access_review_from_the_hub_database(db, tmp_path):
    now = store.utcnow()
    hub = _hub_db(tmp_path, now)
    with store.session_scope() as s:
        audit.append(
            s,
            "root",
            "hub.group.add_users",
            "group:auditor",
            after={"status": 200, "body": {"users": ["ada"]}},
        )
        audit.append(s, "old", "hub.login", "user:old")  # a login now: not dormant after all
        audit.append(s, "tom", "hub.login", "user:tom")
    with store.session_scope() as s:
        doc = compliance.build(s, "access", now - timedelta(days=1), now + timedelta(days=1), hub_db=hub)
    holders = [(r[0], r[1], r[5]) for r in doc.section("holders").rows]
    assert holders == [("ada", "auditor", False), ("old", "trader", False), ("ray", "risk", False),
                       ("root", "admin", False), ("tom", "trader", False)]  # fmt: skip
    assert "audit:read" in doc.section("holders").rows[0][2].split()
    assert [(r[3], r[4]) for r in doc.section("changes").rows] == [("hub.group.add_users", "group:auditor")]
    with store.session_scope() as s:  # the same accounts judged 100 days later: ada, root and tom went quiet
        later = compliance.build(s, "access", now + timedelta(days=99), now + timedelta(days=100), hub_db=hub)
    assert [r[0] for r in later.section("dormant").rows] == ["ada", "old", "ray", "root", "tom"]
    with store.session_scope() as s:
        later = compliance.build(s, "access", now, now + timedelta(days=30), hub_db=hub)
    assert [r[0] for r in later.section("dormant").rows] == []
    with store.session_scope() as s:
        doc = compliance.build(s, "access", now, now + timedelta(days=1), hub_db=hub, dormant_days=2)
    assert [r[0] for r in doc.section("dormant").rows] == ["ada"]


def test_backup_retention_and_job_evidence_read_their_audit_records(db, tmp_path):
    t0 = store.utcnow()
    with store.session_scope() as s:
        audit.append(s, "system:backup", "backup.create", "backup:sqlite:1", after={"bytes": 10})
        audit.append(
            s, "system:backup", "backup.drill", "backup:sqlite:1", after={"rto_s": 3.2, "rpo_s": 41.0}
        )
        audit.append(s, "system:retention", "retention.delete", "orders:1-10", after={"rows": 10})
        audit.append(s, "dpo", "privacy.erase", "person:7", after={"key_destroyed": True})
        audit.append(s, "system:scheduler", "job.run.create", "run:x")
    span = (t0 - timedelta(minutes=1), t0 + timedelta(minutes=1))
    with store.session_scope() as s:
        b = compliance.build(s, "backups", *span)
        r = compliance.build(s, "retention", *span)
        j = compliance.build(s, "jobs", *span, archive=Archive(tmp_path / "arc"))
    assert [x[3] for x in b.section("backups").rows] == ["backup.create", "backup.drill"]
    assert dict(b.summary) == {"creates": 1, "restores": 0, "drills": 1}
    assert [x[3] for x in r.section("actions").rows] == ["retention.delete", "privacy.erase"]
    assert [x[3] for x in j.section("events").rows] == ["job.run.create"]
    assert dict(j.summary)["archive intact"] is True


def test_bad_input_names_the_field(db):
    with store.session_scope() as s:
        for args, field in [(("payroll", "2026-01-01", "2026-01-02"), "kind"),
                            (("orders", "soon", "2026-01-02"), "from"),
                            (("orders", "2026-01-03", "2026-01-02"), "to")]:  # fmt: skip
            with pytest.raises(ValueError, match=field):
                compliance.build(s, *args)
        doc = compliance.build(s, "orders", "2026-01-01", "2026-01-02", now=CLOCK)
    with pytest.raises(ValueError, match="format"):
        documents.render(doc, ["xlsx"])


def test_cli_writes_files_and_manifest_and_refuses_without_audit_read(desk, tmp_path, monkeypatch):
    out, arc = tmp_path / "out", tmp_path / "arc"
    args = ["reports", "compliance", "orders", "--from", desk["from"].isoformat(), "--to", desk["to"].isoformat(),
            "--out", str(out), "--archive", str(arc)]  # fmt: skip
    r = CliRunner().invoke(
        cli_app, [*args, "-f", "json", "-f", "csv", "-f", "pdf", "-u", "ada", "-r", "auditor"]
    )
    assert r.exit_code == 0, r.output
    mf = next(out.glob("*.manifest.json"))
    man = json.loads(mf.read_bytes())
    assert len(man["files"]) == 6
    for f in man["files"]:
        assert hashlib.sha256((out / f["name"]).read_bytes()).hexdigest() == f["sha256"]
    assert Archive(arc).get_object(hashlib.sha256(mf.read_bytes()).hexdigest()) == mf.read_bytes()
    assert f"manifest sha256 {hashlib.sha256(mf.read_bytes()).hexdigest()}" in r.output
    r = CliRunner().invoke(cli_app, [*args, "-u", "tom", "-r", "trader"])
    assert r.exit_code == 1 and "audit:read" in r.output, r.output
    with store.session_scope() as s:
        assert [x.actor for x in audit.query(s, action="report.generate")] == ["ada"]
