"""GDPR (issue 14, item 3) on SQLite and PostgreSQL: the access export lists everything planted about a person; erasure
by crypto-shredding leaves their data unreadable, the audit chain and its anchors verifying, and no trace of the
planted values in the database files; records kept under a legal obligation are reported, not erased."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import uuid
from pathlib import Path

import sqlalchemy as sa
from hubutil import run_cli_here as _cli

from aitrade import audit, config, privacy, store
from aitrade.archive import anchors


def _plant(login: str, marker: str) -> dict[str, str]:
    "Personal data about `login`, an order they entered, and audit records they wrote; the values planted."
    values = {
        "profile.name": f"Thea Quist {marker}",
        "contact.email": f"thea.{marker}@example.org",
        "contact.phone": f"+44 20 7946 {marker[:4]}",
    }
    with store.session_scope() as s:
        for cat, v in values.items():
            privacy.record(
                s, "system:hub", login, cat, v, "who the person is on screens and reports", "oidc:test"
            )
        s.execute(
            sa.text(
                "INSERT INTO orders (id, client_order_id, request_hash, submitted_by, symbol, option_type, multiplier, "
                "side, quantity, order_type, state, reason, needs_approval, approval_reason, venue, filled_quantity, "
                "created_at, updated_at) VALUES (1, 'c1', 'h', :u, 'SPX', 'C', 100, 'buy', 1, 'limit', 'new', '', "
                "false, '', 'paper', 0, :t, :t)"
            ),
            {
                "u": login,
                "t": store.utcnow()
                if not config.get_settings().database_url.startswith("sqlite")
                else store.utcnow().replace(tzinfo=None),
            },
        )
        audit.append(s, login, "order.submit", "order:1", after={"qty": 1})
        audit.append(s, login, "limit.set", "limit:SPX:vega", before={"v": 1}, after={"v": 2})
    return values


def _db_files(url: str) -> list[Path]:
    "The files that hold the database: the SQLite file and its WAL, or PostgreSQL's data directory."
    if url.startswith("sqlite"):
        p = Path(sa.make_url(url).database)
        return [x for x in (p, Path(f"{p}-wal")) if x.exists()]
    with store.get_engine(url).connect() as c:
        return [Path(c.exec_driver_sql("SHOW data_directory").scalar())]


def _grep(paths: list[Path], needle: str) -> list[str]:
    "Files under `paths` whose bytes contain `needle` (grep -r, as root)."
    found = []
    for p in paths:
        r = subprocess.run(["grep", "-rlaF", needle, str(p)], capture_output=True, text=True)
        found += r.stdout.split()
    return found


def test_export_then_erase(db, db_url):
    marker = uuid.uuid4().hex[:12]
    login = f"tq{marker[:6]}"
    values = _plant(login, marker)
    anchors.write_anchor()
    for v in values.values():  # stored and audited only as ciphertext, from the first write
        assert _grep(_db_files(db_url), v) == [], v
    r = _cli("privacy", "export", login)
    assert r.returncode == 0, r.stderr
    exp = json.loads(r.stdout)
    assert {p["category"]: p["value"] for p in exp["personal_data"]} == values
    assert all(p["purpose"] and p["retention"] for p in exp["personal_data"])
    kept = {k["category"]: k for k in exp["kept_under_legal_obligation"]}
    assert {c: k["count"] for c, k in kept.items()} == {"audit records": 2, "orders entered": 1}
    assert (
        kept["orders entered"]["retention"] == "FINRA (6 years)"
        and kept["audit records"]["erasable"] is False
    )
    assert [x["action"] for x in kept["audit records"]["records"]] == ["order.submit", "limit.set"]
    r = _cli("privacy", "export", login, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert {x["value_or_record"] for x in rows if x["kind"] == "personal data"} == set(values.values())
    assert sum(x["kind"] == "kept record" for x in rows) == 3
    with store.session_scope() as s:
        tokens = (
            s.execute(sa.select(privacy.PersonalData.value).order_by(privacy.PersonalData.id)).scalars().all()
        )

    r = _cli("privacy", "erase", login, "--reason", "data-subject request 2026-31")
    assert r.returncode == 0, r.stderr
    assert "erased 1 contact.email, 1 contact.phone, 1 profile.name" in r.stdout
    assert "kept under a legal obligation: 2 audit records, 1 orders entered" in r.stdout
    with store.session_scope() as s:
        for tok, cat in zip(tokens, ["profile.name", "contact.email", "contact.phone"], strict=True):
            assert privacy.reveal(s, tok, cat) is None  # unreadable: the key is gone
        assert s.execute(sa.select(sa.func.count()).select_from(privacy.SubjectKey)).scalar() == 0
        res = audit.verify(s)
        assert res.ok, res  # the records that carried the ciphertexts are untouched
        rec = audit.query(s, action="privacy.erase")[0]
        assert rec.after["kept_under_legal_obligation"] == {"audit records": 2, "orders entered": 1}
        assert login not in (rec.before_json or "") + (rec.after_json or "")
    assert anchors.verify_log().ok
    r = _cli("audit", "verify")
    assert r.returncode == 0 and "audit chain intact" in r.stdout
    for v in values.values():
        assert _grep(_db_files(db_url), v) == [], v
    r = _cli("privacy", "export", login)
    assert json.loads(r.stdout)["personal_data"] == []  # nothing readable is held any more
    r = _cli("privacy", "erase", login, "--reason", "again")
    assert r.returncode != 0 and f"login {login}: no personal data is held" in r.stderr


def test_bad_input_is_named(db):
    with store.session_scope() as s:
        for kw, field in (
            (dict(category=" "), "category"),
            (dict(value=""), "value"),
            (dict(purpose=""), "purpose"),
        ):
            args = dict(category="profile.name", value="x", purpose="p", source="s") | kw
            try:
                privacy.record(s, "ops", "tq", **args)
            except privacy.FieldError as e:
                assert str(e).startswith(field), e
            else:
                raise AssertionError(f"{field}: accepted")
        try:
            privacy.reveal(s, "pd1:nobody:@@@", "profile.name")
        except privacy.FieldError as e:
            assert "token" in str(e)
        else:
            raise AssertionError("a bad token was accepted")


def test_new_backups_hold_nothing_of_an_erased_person(sqlite_db, tmp_path):
    "After an erasure a new backup, decrypted and restored, holds neither the planted values nor the person's key."
    marker = uuid.uuid4().hex[:12]
    login = f"tq{marker[:6]}"
    values = _plant(login, marker)
    r = _cli("privacy", "erase", login, "--reason", "data-subject request")
    assert r.returncode == 0, r.stderr
    r = _cli("backup", "run")
    assert r.returncode == 0, r.stderr
    backups = config.get_settings().path("var/backups")
    assert any(backups.rglob("*")), "no backup written"
    r = _cli("restore", "--latest", "--into", str(tmp_path / "restored"))
    assert r.returncode == 0, r.stdout + r.stderr
    restored = sorted((tmp_path / "restored").rglob("*.db"))
    assert restored, list((tmp_path / "restored").rglob("*"))
    for v in (*values.values(), login):
        assert _grep([backups], v) == [], v  # encrypted at rest ...
    for v in values.values():
        assert _grep([tmp_path / "restored"], v) == [], v  # ... and nothing of the person once decrypted
    eng = sa.create_engine(f"sqlite:///{[p for p in restored if p.name == 'aitrade.db'][0]}")
    with eng.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM privacy_keys").scalar() == 0
        assert c.exec_driver_sql("SELECT count(*) FROM privacy_subjects WHERE login IS NULL").scalar() == 1
    eng.dispose()


def test_a_restored_older_backup_does_not_bring_an_erased_person_back(sqlite_db, tmp_path):
    "Backed up, then erased; the older backup restored in place: the restore erases the person again, audited."
    from aitrade.archive import Archive
    from aitrade.ops import erasures

    marker = uuid.uuid4().hex[:12]
    login = f"tr{marker[:6]}"
    values = _plant(login, marker)
    assert _cli("backup", "run").returncode == 0  # this backup holds the person's key
    r = _cli("privacy", "erase", login, "--reason", "data-subject request")
    assert r.returncode == 0, r.stderr
    with store.session_scope() as s:
        sid = s.scalar(sa.select(privacy.Subject.id).where(privacy.Subject.erased_at.is_not(None)))
    assert erasures.erased_subjects(Archive()) == [sid]  # the ledger, outside the database
    store.dispose_engines()  # the platform is stopped for a restore in place
    r = _cli("restore", "--latest", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    with store.session_scope() as s:
        assert privacy.export(s, "dpo", login)["personal_data"] == []
        assert s.scalar(sa.select(sa.func.count()).select_from(privacy.SubjectKey)) == 0
        again = audit.query(s, action="privacy.erase", limit=1)[0]
        assert (again.actor, again.target) == (erasures.REAPPLIER, f"subject:{sid}")
        assert audit.verify(s).ok
    for v in values.values():
        assert _grep(_db_files(sqlite_db), v) == [], v
