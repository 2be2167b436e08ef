"""The model registry (aitrade.registry) on SQLite and PostgreSQL: a registered version is the candidate; the
trainer, the registrant and the requester cannot approve its promotion, a second quant can, and both steps are
in the audit chain, which still verifies; a person without models:promote is refused with the scope named;
versions, alias history and decided requests are immutable (ORM and database triggers); rollback walks back
through approved versions only; a tampered artifact or record is caught on load; racing approvers; the REST
round trip through the API app; the MLflow export; the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import threading

import pytest
import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from aitrade import api, audit, registry, store
from aitrade.auth import RIGHTS, ROLES, PermissionDenied, Principal
from aitrade.errors import FieldError, NotFound, problem
from aitrade.registry_mlflow import export_mlflow

ANN, BOB, CARL = (Principal.with_roles(n, ["quant"]) for n in ("ann", "bob", "carl"))
TOM = Principal.with_roles("tom", ["trader"])  # reads, no models:promote
TRAINER = Principal("system:trainer", frozenset({"models:promote"}))  # a pipeline's identity
ART1, ART2, ART3 = (pickle.dumps({"weights": [float(i)] * 3}) for i in (1, 2, 3))
LINEAGE = dict(
    feature_set_hash="f" * 64,
    data_start="2012-01-03",
    data_end="2019-12-31",
    data_sha256="d" * 64,
    params={"hidden": 32, "lr": 1e-3},
    metrics={"oos_r2": 0.0123, "hit_rate": 0.52},
    run_id="train-20240105-0001",
    format="pickle",
)


def reg(s, who=ANN, art=ART1, name="gnn-vol", **lineage):
    return registry.register(s, who, name, art, {**LINEAGE, **lineage})


def promote(name, version, requester=ANN, approver=BOB):
    with store.session_scope() as s:
        r = registry.request_promotion(s, requester, name, version, f"promote v{version}")
    with store.session_scope() as s:
        return registry.approve_promotion(s, approver, r.id, f"reviewed v{version}")


def model_records(s, name="gnn-vol"):
    "(actor, action, target) of the registry's audit records, oldest first."
    return [
        (r.actor, r.action, r.target) for r in reversed(audit.query(s, target=f"model:{name}:", limit=1000))
    ]


# ------------------------------------------------------------------------------------------------------------
# Register, four eyes, audit
# ------------------------------------------------------------------------------------------------------------
def test_register_is_candidate_with_its_lineage(db):
    with store.session_scope() as s:
        v = reg(s)
    assert (v.model, v.version, v.trained_by, v.registered_by) == ("gnn-vol", 1, "ann", "ann")
    assert v.artifact_sha256 == hashlib.sha256(ART1).hexdigest() and v.artifact_size == len(ART1)
    with store.session_scope() as s:
        assert registry.aliases(s, "gnn-vol") == {"candidate": 1}
        got = registry.load(s, "gnn-vol", alias="candidate")
        lin = registry.get_version(s, "gnn-vol", 1).lineage
        assert registry.list_models(s)[0]["aliases"] == {"candidate": 1}
    assert got.artifact == ART1 and got.version == 1 and got.alias == "candidate" and got.format == "pickle"
    # the test project root is not a git checkout: no commit
    assert lin == {**LINEAGE, "trained_by": "ann", "code_version": registry.aitrade.__version__,
                   "git_commit": None}  # fmt: skip
    # the artifact sits at its SHA-256 address under <archive>/models, read-only
    path = v.location
    assert path.endswith(f"/models/objects/{v.artifact_sha256[:2]}/{v.artifact_sha256}")
    with open(path, "rb") as f:
        assert f.read() == ART1


def test_trainer_cannot_promote_a_second_quant_can_and_both_are_audited(db):
    with store.session_scope() as s:
        reg(s, who=ANN, trained_by="carl")  # carl trained it, ann registers it
    with store.session_scope() as s:
        req = registry.request_promotion(s, ANN, "gnn-vol", 1, "beats HAR and the no-graph control")
    for who, why in (
        (ANN, "ann registered model gnn-vol version 1"),
        (CARL, "carl trained model gnn-vol version 1"),
    ):
        with store.session_scope() as s, pytest.raises(registry.PromotionFourEyes, match=why) as e:
            registry.approve_promotion(s, who, req.id, "looks fine")
        assert "four eyes: a different user must" in str(e.value)
        assert (problem(e.value).status, problem(e.value).code) == (409, "four_eyes")
    with store.session_scope() as s, pytest.raises(registry.PromotionFourEyes, match="not a person"):
        registry.approve_promotion(s, TRAINER, req.id, "automatic")
    with store.session_scope() as s:
        assert registry.get_promotion(s, req.id).state == "pending"  # nothing moved by the refusals
        assert "production" not in registry.aliases(s, "gnn-vol")
    with store.session_scope() as s:
        done = registry.approve_promotion(s, BOB, req.id, "reviewed the holdout report")
    assert (done.state, done.decided_by, done.previous_version) == ("approved", "bob", None)
    with store.session_scope() as s:
        assert registry.aliases(s, "gnn-vol") == {"candidate": 1, "production": 1}
        assert registry.load(s, "gnn-vol").artifact == ART1
        assert model_records(s) == [
            ("ann", "model.register", "model:gnn-vol:v1"),
            ("ann", "model.promotion.request", "model:gnn-vol:v1"),
            ("bob", "model.promotion.approve", "model:gnn-vol:v1"),
        ]
        rec = audit.query(s, action="model.promotion.approve")[0]
        assert rec.after["requested_by"] == "ann" and rec.after["trained_by"] == "carl"
        assert rec.before == {"alias": "production", "version": None}
        chain = audit.verify(s)
        assert chain.ok, str(chain)
        events = registry.alias_history(s, "gnn-vol")
        assert [(e.alias, e.version, e.kind, e.actor, e.request_id) for e in events] == [
            ("candidate", 1, "set", "ann", None),
            ("production", 1, "promotion", "bob", req.id),
        ]


def test_a_second_requester_does_not_free_the_trainer(db):
    with store.session_scope() as s:
        reg(s, who=ANN)
    with store.session_scope() as s:
        req = registry.request_promotion(s, BOB, "gnn-vol", 1, "bob asks for ann's model")
    with (
        store.session_scope() as s,
        pytest.raises(registry.PromotionFourEyes, match="ann trained and registered"),
    ):
        registry.approve_promotion(s, ANN, req.id, "mine")
    with (
        store.session_scope() as s,
        pytest.raises(registry.PromotionFourEyes, match="bob requested promotion"),
    ):
        registry.approve_promotion(s, BOB, req.id, "my request")
    with store.session_scope() as s:
        assert registry.approve_promotion(s, CARL, req.id, "third pair of eyes").state == "approved"


def test_without_models_promote_the_scope_is_named(db):
    with store.session_scope() as s:
        reg(s)
        req = registry.request_promotion(s, ANN, "gnn-vol", 1, "go")
    calls = {
        "register": lambda s: reg(s, who=TOM),
        "request": lambda s: registry.request_promotion(s, TOM, "gnn-vol", 1, "go"),
        "approve": lambda s: registry.approve_promotion(s, TOM, req.id, "ok"),
        "reject": lambda s: registry.reject_promotion(s, TOM, req.id, "no"),
        "rollback": lambda s: registry.rollback(s, TOM, "gnn-vol", "back"),
        "alias": lambda s: registry.set_alias(s, TOM, "gnn-vol", "shadow", 1),
    }
    for what, call in calls.items():
        with store.session_scope() as s, pytest.raises(PermissionDenied) as e:
            call(s)
        p = problem(e.value)
        assert (p.status, p.code, p.extra["required_scope"]) == (
            403,
            "missing_right",
            "custom:aitrade:models:promote",
        ), what
        assert "tom lacks the right 'models:promote'" in p.detail
    with store.session_scope() as s:
        assert [r.action for r in audit.query(s, actor="tom")] == []  # a refusal changes nothing
        assert registry.get_promotion(s, req.id).state == "pending"


def test_reject_withdraw_and_decided_once(db):
    with store.session_scope() as s:
        reg(s)
        r1 = registry.request_promotion(s, ANN, "gnn-vol", 1, "first try")
    with (
        store.session_scope() as s,
        pytest.raises(registry.PromotionFourEyes, match="ann requested promotion"),
    ):
        registry.reject_promotion(s, ANN, r1.id, "never mind")  # the requester withdraws instead
    with store.session_scope() as s, pytest.raises(PermissionDenied, match="withdraw promotion"):
        registry.withdraw_promotion(s, BOB, r1.id, "not mine")
    with store.session_scope() as s, pytest.raises(registry.Conflict, match="is already pending"):
        registry.request_promotion(s, BOB, "gnn-vol", 1, "again")
    with store.session_scope() as s:
        assert registry.reject_promotion(s, BOB, r1.id, "holdout not run").state == "rejected"
    for fn in (registry.approve_promotion, registry.reject_promotion):
        with store.session_scope() as s, pytest.raises(registry.PromotionNotPending, match="is rejected"):
            fn(s, CARL, r1.id, "late")
    with store.session_scope() as s:
        r2 = registry.request_promotion(s, ANN, "gnn-vol", 1, "with the holdout")
    with store.session_scope() as s:
        assert registry.withdraw_promotion(s, ANN, r2.id, "found a bug").state == "withdrawn"
        assert "production" not in registry.aliases(s, "gnn-vol")
        assert [r.state for r in registry.promotions(s, "gnn-vol")] == ["withdrawn", "rejected"]
        assert [a for _, a, _ in model_records(s)][-3:] == [
            "model.promotion.reject", "model.promotion.request", "model.promotion.withdraw"]  # fmt: skip
        assert audit.verify(s).ok


def test_racing_approvers_exactly_one_wins(db):
    with store.session_scope() as s:
        reg(s)
        req = registry.request_promotion(s, ANN, "gnn-vol", 1, "go")
    results, barrier = {}, threading.Barrier(2)

    def approve(p):
        barrier.wait()
        try:
            with store.session_scope() as s:
                registry.approve_promotion(s, p, req.id, "race")
            results[p.name] = "approved"
        except registry.PromotionNotPending:
            results[p.name] = "refused"

    ts = [threading.Thread(target=approve, args=(p,)) for p in (BOB, CARL)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert sorted(results.values()) == ["approved", "refused"], results
    with store.session_scope() as s:
        assert [e.kind for e in registry.alias_history(s, "gnn-vol", "production")] == ["promotion"]
        assert len(audit.query(s, action="model.promotion.approve")) == 1


# ------------------------------------------------------------------------------------------------------------
# Immutability
# ------------------------------------------------------------------------------------------------------------
def test_versions_alias_events_and_decisions_are_immutable(db):
    with store.session_scope() as s:
        reg(s)
    promote_after = promote("gnn-vol", 1)
    # ORM: an object change, an object delete, an UPDATE/DELETE statement
    for change in (
        lambda s: setattr(registry.get_version(s, "gnn-vol", 1), "trained_by", "mallory"),
        lambda s: s.delete(registry.get_version(s, "gnn-vol", 1)),
        lambda s: s.execute(sa.update(registry.ModelVersion).values(trained_by="mallory")),
        lambda s: s.execute(sa.delete(registry.AliasEvent)),
    ):
        with pytest.raises(registry.ImmutableVersion, match="rows are immutable"):
            with store.session_scope() as s:
                change(s)
                s.flush()
    # the database: raw SQL, as another client would send it
    refused = [
        "UPDATE model_versions SET trained_by = 'mallory'",
        "DELETE FROM model_versions",
        "UPDATE model_alias_events SET version = 99",
        "DELETE FROM model_alias_events",
        f"UPDATE model_promotions SET state = 'rejected' WHERE id = {promote_after.id}",
        f"DELETE FROM model_promotions WHERE id = {promote_after.id}",
    ]
    for sql in refused:
        with pytest.raises(sa.exc.DBAPIError, match="immutable|cannot change"):
            with store.get_engine().begin() as c:
                c.exec_driver_sql(sql)
    with store.session_scope() as s:
        v = registry.get_version(s, "gnn-vol", 1)
        assert v.trained_by == "ann" and v.compute_hash() == v.record_sha256
        assert registry.get_promotion(s, promote_after.id).state == "approved"
        assert len(registry.alias_history(s, "gnn-vol")) == 2
    # a pending request may still be decided (the trigger guards decided ones only)
    with store.session_scope() as s:
        reg(s, art=ART2)
        r = registry.request_promotion(s, ANN, "gnn-vol", 2, "v2")
    with store.get_engine().begin() as c:
        c.exec_driver_sql(f"UPDATE model_promotions SET reason = 'v2, edited' WHERE id = {r.id}")


def test_bad_input_is_named_and_leaves_nothing(db, tmp_path):
    bad = [
        (dict(name="a b"), "name"),
        (dict(art=b""), "artifact"),
        (dict(art="text"), "artifact"),
        (dict(feature_set_hash="xyz"), "feature_set_hash"),
        (dict(data_start="2020-01-01"), "data_end"),
        (dict(data_sha256=None), "data_sha256"),
        (dict(metrics={"r2": float("inf")}), "metrics"),
        (dict(params={"f": object()}), "params"),
        (dict(format="Pickle!"), "format"),
        (dict(colour="red"), "colour"),
        (dict(params={"grid": list(range(300_000))}), "lineage"),
    ]
    for kw, field in bad:
        with store.session_scope() as s, pytest.raises(FieldError) as e:
            reg(s, **kw)
        assert e.value.field == field, (kw, str(e.value))
    with store.session_scope() as s, pytest.raises(FieldError, match="approved promotion"):
        registry.register(s, ANN, "gnn-vol", ART1, LINEAGE, alias="production")
    with store.session_scope() as s:
        assert registry.list_models(s) == [] and audit.query(s) == []
    # a retried registration returns the first version; new bytes or a new lineage are a new version
    with store.session_scope() as s:
        assert [reg(s).version, reg(s).version, reg(s, art=ART2).version, reg(s, run_id="r2").version] == [
            1,
            1,
            2,
            3,
        ]
        assert [a for _, a, _ in model_records(s)] == ["model.register"] * 3
        with pytest.raises(NotFound, match="no version 9"):
            registry.get_version(s, "gnn-vol", 9)
        with pytest.raises(NotFound, match="no such model"):
            registry.versions(s, "nope")
        with pytest.raises(NotFound, match="no version is production"):
            registry.load(s, "gnn-vol")


# ------------------------------------------------------------------------------------------------------------
# Rollback
# ------------------------------------------------------------------------------------------------------------
def test_rollback_walks_back_through_approved_versions(db):
    for art in (ART1, ART2, ART3):
        with store.session_scope() as s:
            v = reg(s, art=art)
        promote("gnn-vol", v.version)
    with store.session_scope() as s:
        assert registry.load(s, "gnn-vol").version == 3
        with pytest.raises(FieldError, match="set only by an approved promotion"):
            registry.set_alias(s, ANN, "gnn-vol", "production", 1)
        with pytest.raises(FieldError, match="reason: must say why"):
            registry.rollback(s, ANN, "gnn-vol", " ")
    # one person (here the trainer herself) may roll back: only to versions two people approved
    for expect in (2, 1):
        with store.session_scope() as s:
            ev = registry.rollback(s, ANN, "gnn-vol", "v3 misbehaves in production")
            assert (ev.version, ev.kind, ev.actor) == (expect, "rollback", "ann")
        with store.session_scope() as s:
            assert registry.load(s, "gnn-vol").artifact == (ART2 if expect == 2 else ART1)
    with store.session_scope() as s, pytest.raises(registry.NoPreviousVersion, match="no earlier approved"):
        registry.rollback(s, ANN, "gnn-vol", "once more")
    # forward again is a promotion, with four eyes
    promote("gnn-vol", 3)
    with store.session_scope() as s:
        assert registry.rollback(s, BOB, "gnn-vol", "again").version == 1
        hist = [
            (e.kind, e.version, e.previous_version)
            for e in registry.alias_history(s, "gnn-vol", "production")
        ]
        assert hist == [("promotion", 1, None), ("promotion", 2, 1), ("promotion", 3, 2),
                        ("rollback", 2, 3), ("rollback", 1, 2), ("promotion", 3, 1), ("rollback", 1, 3)]  # fmt: skip
        rb = audit.query(s, action="model.rollback")
        assert [(r.actor, r.target, r.before["version"]) for r in reversed(rb)] == [
            ("ann", "model:gnn-vol:v2", 3), ("ann", "model:gnn-vol:v1", 2), ("bob", "model:gnn-vol:v1", 3)]  # fmt: skip
        assert audit.verify(s).ok


# ------------------------------------------------------------------------------------------------------------
# Tampering
# ------------------------------------------------------------------------------------------------------------
def test_tampered_artifact_or_record_is_caught_on_load(db, db_url):
    with store.session_scope() as s:
        v1, v2 = reg(s), reg(s, art=ART2)
    os.chmod(v1.location, 0o644)
    with open(v1.location, "r+b") as f:
        data = bytearray(f.read())
        data[10] ^= 0xFF  # one byte changed, same length
        f.seek(0)
        f.write(data)
    with (
        store.session_scope() as s,
        pytest.raises(registry.ArtifactTampered, match="does not match its SHA-256"),
    ):
        registry.load(s, "gnn-vol", version=1)
    os.chmod(v2.location, 0o644)
    os.remove(v2.location)
    with store.session_scope() as s, pytest.raises(registry.ArtifactTampered, match="artifact missing"):
        registry.load(s, "gnn-vol", version=2)
    # registering the same bytes again refuses to point a new version at the damaged copy
    with store.session_scope() as s, pytest.raises(registry.ArtifactTampered, match="damaged"):
        reg(s, run_id="again")
    # an edit of the row behind the platform's back (the trigger disabled by someone who could)
    with store.session_scope() as s:
        v3 = reg(s, art=ART3)
    pg = db_url.startswith("postgresql")
    with store.get_engine().begin() as c:
        if pg:
            c.exec_driver_sql("ALTER TABLE model_versions DISABLE TRIGGER model_versions_immutable")
        else:
            c.exec_driver_sql("DROP TRIGGER model_versions_no_update")
        new = json.dumps({**LINEAGE, "metrics": {"oos_r2": 0.5}})
        c.execute(sa.text("UPDATE model_versions SET lineage_json = :j WHERE version = 3"), {"j": new})
    with store.session_scope() as s, pytest.raises(registry.ArtifactTampered, match="record does not match"):
        registry.load(s, "gnn-vol", version=v3.version)


# ------------------------------------------------------------------------------------------------------------
# REST through the API app
# ------------------------------------------------------------------------------------------------------------
P = "/services/aitrade-api"
TOKENS = {f"tok-{r}": api.hub_model(f"u-{r}", ROLES[r]) for r in ROLES}
TOKENS.update({f"tok-{n}": api.hub_model(n, ROLES["quant"]) for n in ("ann", "bob")})
TOKENS["tok-svc"] = api.hub_model("trainer", ["models:promote"], kind="service")


def H(tok):
    return {"Authorization": f"token {tok}"}


@pytest.fixture
def client(db):
    app = api.create_app(api.StaticResolver(TOKENS), prefix=P)
    with TestClient(app) as c:
        yield c
    app.state.fanout.close()


def _body(art=ART1, **lineage):
    return {"artifact": base64.b64encode(art).decode(), "lineage": {**LINEAGE, **lineage}}


def test_rest_round_trip(client):
    c = client
    r = c.post(P + "/v1/models/gnn-vol/versions", headers=H("tok-ann"), json=_body())
    assert r.status_code == 201, r.text
    v = r.json()
    assert (v["version"], v["aliases"], v["trained_by"], v["lineage"]["metrics"]) == (
        1, ["candidate"], "ann", LINEAGE["metrics"])  # fmt: skip
    assert "location" not in v and v["artifact_sha256"] == hashlib.sha256(ART1).hexdigest()
    # read by anyone with reports:read (an auditor, a manager); register needs models:promote
    assert c.get(P + "/v1/models", headers=H("tok-auditor")).json()[0]["aliases"] == {"candidate": 1}
    r = c.post(P + "/v1/models/gnn-vol/versions", headers=H("tok-manager"), json=_body())
    assert (r.status_code, r.json()["error"], r.json()["required_scope"]) == (
        403, "missing_scope", "custom:aitrade:models:promote")  # fmt: skip
    # bad input names the field
    r = c.post(P + "/v1/models/gnn-vol/versions", headers=H("tok-ann"), json=_body(data_start="2030-01-01"))
    assert (r.status_code, r.json()["fields"][0]["field"]) == (422, "data_end")
    r = c.post(P + "/v1/models/gnn-vol/versions", headers=H("tok-ann"), json={**_body(), "artifact": "abc"})
    assert (r.status_code, r.json()["fields"][0]["field"]) == (422, "artifact")
    # request, refused self-approval, refused service, approval by a second quant
    r = c.post(P + "/v1/models/gnn-vol/promotions", headers=H("tok-ann"), json={"version": 1, "reason": "go"})
    assert r.status_code == 201 and r.json()["state"] == "pending"
    rid = r.json()["id"]
    assert [
        x["id"] for x in c.get(P + "/v1/models/promotions?state=pending", headers=H("tok-risk")).json()
    ] == [rid]
    for tok, detail in (("tok-ann", "ann trained and registered"), ("tok-svc", "not a person")):
        r = c.post(P + f"/v1/models/promotions/{rid}/approve", headers=H(tok), json={"reason": "ok"})
        assert (r.status_code, r.json()["error"]) == (409, "four_eyes") and detail in r.json()["detail"], (
            r.text
        )
    r = c.post(P + f"/v1/models/promotions/{rid}/approve", headers=H("tok-trader"), json={"reason": "ok"})
    assert (r.status_code, r.json()["required_scope"]) == (403, "custom:aitrade:models:promote")
    r = c.post(P + f"/v1/models/promotions/{rid}/approve", headers=H("tok-bob"), json={"reason": "reviewed"})
    assert (r.status_code, r.json()["state"], r.json()["decided_by"]) == (200, "approved", "bob")
    r = c.post(P + f"/v1/models/promotions/{rid}/reject", headers=H("tok-bob"), json={"reason": "late"})
    assert (r.status_code, r.json()["error"]) == (409, "illegal_transition")
    assert (
        c.post(
            P + "/v1/models/promotions/999/approve", headers=H("tok-bob"), json={"reason": "x"}
        ).status_code
        == 404
    )
    # a second version, promoted, then rolled back
    r = c.post(P + "/v1/models/gnn-vol/versions", headers=H("tok-ann"), json=_body(ART2))
    assert r.json()["version"] == 2
    r = c.put(P + "/v1/models/gnn-vol/aliases/shadow", headers=H("tok-ann"), json={"version": 2})
    assert (r.status_code, r.json()["alias"], r.json()["version"], r.json()["kind"]) == (
        200,
        "shadow",
        2,
        "set",
    )
    r = c.put(P + "/v1/models/gnn-vol/aliases/production", headers=H("tok-ann"), json={"version": 2})
    assert (r.status_code, r.json()["fields"][0]["field"]) == (422, "alias")
    rid2 = c.post(
        P + "/v1/models/gnn-vol/promotions", headers=H("tok-bob"), json={"version": 2, "reason": "v2"}
    ).json()["id"]
    assert (
        c.post(
            P + f"/v1/models/promotions/{rid2}/approve", headers=H("tok-quant"), json={"reason": "ok"}
        ).status_code
        == 200
    )
    vs = c.get(P + "/v1/models/gnn-vol/versions", headers=H("tok-manager")).json()
    assert [(x["version"], x["aliases"]) for x in vs] == [(1, []), (2, ["candidate", "production", "shadow"])]
    r = c.post(P + "/v1/models/gnn-vol/rollback", headers=H("tok-ann"), json={"reason": "v2 drifts"})
    assert (r.status_code, r.json()["version"], r.json()["previous_version"], r.json()["kind"]) == (
        200,
        1,
        2,
        "rollback",
    )
    r = c.post(P + "/v1/models/gnn-vol/rollback", headers=H("tok-ann"), json={"reason": "again"})
    assert (r.status_code, r.json()["error"]) == (409, "no_previous_version")
    assert c.get(P + "/v1/models/nope/versions", headers=H("tok-manager")).status_code == 404
    # every change in the audit log (the API's audit endpoint), the chain intact
    recs = c.get(
        P + "/v1/audit", headers=H("tok-auditor"), params={"target": "model:gnn-vol:", "limit": 50}
    ).json()
    assert [(x["actor"], x["action"]) for x in reversed(recs)] == [
        ("ann", "model.register"), ("ann", "model.promotion.request"), ("bob", "model.promotion.approve"),
        ("ann", "model.register"), ("ann", "model.alias"), ("bob", "model.promotion.request"),
        ("u-quant", "model.promotion.approve"), ("ann", "model.rollback")]  # fmt: skip
    assert c.get(P + "/v1/audit/verify", headers=H("tok-auditor")).json()["ok"] is True


def test_every_registry_endpoint_is_guarded(client):
    rights = {(m, p.removeprefix(P)): r for m, p, r in api.api_rights(client.app) if "/v1/models" in p}
    assert len(rights) == 10 and set(rights.values()) == {"reports:read", "models:promote"}
    assert {k for k, r in rights.items() if r == "reports:read"} == {
        ("GET", "/v1/models"), ("GET", "/v1/models/{name}/versions"), ("GET", "/v1/models/promotions")}  # fmt: skip
    assert "models:promote" in RIGHTS and "models:promote" in ROLES["quant"]


# ------------------------------------------------------------------------------------------------------------
# MLflow export, CLI
# ------------------------------------------------------------------------------------------------------------
def test_mlflow_export(db, tmp_path):
    with store.session_scope() as s:
        reg(s)
        reg(s, art=b"\x00state-dict", name="gnn-torch", format="torch")
    with store.session_scope() as s:
        d = export_mlflow(s, "gnn-vol", 1, tmp_path / "pkl")
        t = export_mlflow(s, "gnn-torch", 1, tmp_path / "torch")
    mm = yaml.safe_load((d / "MLmodel").read_text())
    assert mm["flavors"]["python_function"]["loader_module"] == "aitrade.registry_mlflow"
    assert (d / mm["flavors"]["python_function"]["data"]).read_bytes() == ART1
    assert mm["flavors"]["aitrade"]["sha256"] == hashlib.sha256(ART1).hexdigest()
    assert mm["run_id"] == LINEAGE["run_id"] and mm["metadata"]["lineage"]["metrics"] == LINEAGE["metrics"]
    assert {"MLmodel", "requirements.txt", "python_env.yaml", "conda.yaml", "model.pkl"} == {
        p.name for p in d.iterdir()
    }
    from aitrade.registry_mlflow import _load_pyfunc  # what mlflow.pyfunc calls

    assert _load_pyfunc(str(d / "model.pkl")) == pickle.loads(ART1)
    mt = yaml.safe_load((t / "MLmodel").read_text())
    assert list(mt["flavors"]) == ["aitrade"] and (t / "model.bin").read_bytes() == b"\x00state-dict"


def test_cli(db, tmp_path, monkeypatch):
    from aitrade.cli import app

    art, lin = tmp_path / "model.pkl", tmp_path / "lineage.json"
    art.write_bytes(ART1)
    lin.write_text(json.dumps(LINEAGE))
    run = CliRunner().invoke
    ann, bob = ["--user", "ann", "--role", "quant"], ["--user", "bob", "--role", "quant"]
    r = run(app, ["models", "register", "gnn-vol", str(art), str(lin), *ann])
    assert r.exit_code == 0 and "gnn-vol version 1 registered" in r.output, r.output
    r = run(app, ["models", "request", "gnn-vol", "1", "--reason", "go", *ann])
    assert r.exit_code == 0, r.output
    rid = int(r.output.split("promotion request ")[1].split()[0])
    r = run(app, ["models", "approve", str(rid), "--reason", "mine", *ann])
    assert r.exit_code == 1 and "four eyes" in r.output
    r = run(app, ["models", "approve", str(rid), "--reason", "mine", "--user", "tom", "--role", "trader"])
    assert r.exit_code == 1 and "models:promote" in r.output
    r = run(app, ["models", "approve", str(rid), "--reason", "reviewed", *bob])
    assert r.exit_code == 0 and "approved" in r.output, r.output
    r = run(app, ["models", "versions", "gnn-vol", "--json", "--user", "tom", "--role", "trader"])
    assert r.exit_code == 0 and json.loads(r.output.splitlines()[0])["aliases"] == ["candidate", "production"]
    r = run(app, ["models", "verify", "gnn-vol", "--user", "tom", "--role", "trader"])
    assert r.exit_code == 0 and f"sha256 {hashlib.sha256(ART1).hexdigest()} ok" in r.output, r.output
    r = run(app, ["models", "export", "gnn-vol", "1", str(tmp_path / "mlflow"), *bob])
    assert r.exit_code == 0 and (tmp_path / "mlflow" / "MLmodel").is_file()
    r = run(app, ["models", "rollback", "gnn-vol", "--reason", "x", *bob])
    assert r.exit_code == 1 and "no earlier approved version" in r.output
    r = run(app, ["models", "register", "gnn-vol", str(art), str(tmp_path / "nope.json"), *ann])
    assert r.exit_code == 2 and "lineage" in r.output
