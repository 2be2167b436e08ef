"""schemathesis against the trading API's OpenAPI document, in process, as admin and as a read-only role
(manager): every operation, generated valid and invalid inputs, no 5xx and no answer outside the schema (status
codes, content types, headers, bodies). The Hub is replaced by a StaticResolver; the database is one migrated
SQLite file for the module, seeded with a fresh quote, an order, a queued job run and an archived run so that
the generated requests reach real data as well as the 404 paths."""

from __future__ import annotations

import nbformat
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aitrade import api, archive, config, store
from aitrade.auth import ROLES

P = "/services/aitrade-api"
TOKENS = {"tok-admin": api.hub_model("admin", ROLES["admin"], extra_scopes=["read:metrics"]),
          "tok-manager": api.hub_model("mona", ROLES["manager"])}  # fmt: skip
APP = api.create_app(api.StaticResolver(TOKENS), prefix=P)
schema = schemathesis.openapi.from_asgi(P + "/openapi.json", APP)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
N_EXAMPLES = 10  # per operation and role (both modes): ~31 operations x 2 roles; under a minute on 2 cores


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = tmp_path_factory.mktemp("schema")
    url = f"sqlite:///{root}/api.db"
    (root / "pipelines.yaml").write_text(
        "pipelines:\n  tiny:\n    notebooks:\n      only:\n        path: only.ipynb\n"
        "    parameters:\n      n:\n        type: int\n        default: 1\n"
    )
    return root, url


@pytest.fixture
def api_db(seeded, monkeypatch):
    root, url = seeded
    monkeypatch.setenv("AITRADE_DATABASE__URL", url)
    monkeypatch.setenv("AITRADE_ARCHIVE__URL", str(root / "archive"))
    monkeypatch.setenv("AITRADE_JOBS__PIPELINES", str(root / "pipelines.yaml"))
    config.reload_settings()
    if not (root / "seeded").exists():
        store.upgrade(url=url)
        from fastapi.testclient import TestClient
        from seed import fresh_quote

        exp = fresh_quote(days=90)
        c = TestClient(APP)
        h = {"Authorization": "token tok-admin"}
        assert c.post(P + "/v1/orders", headers=h, json={"client_order_id": "seed-1", "symbol": "SPX", "side": "buy",
                      "quantity": 1, "option_type": "C", "expiry": exp.isoformat(), "strike": 100.0}).status_code == 201  # fmt: skip
        assert c.post(P + "/v1/jobs/runs", headers=h, json={"pipeline": "tiny"}).status_code == 201
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# seed")])
        archive.archive_run(
            nbformat.writes(nb).encode(), pipeline="tiny", user="admin", git={"commit": None, "dirty": False}
        )
        (root / "seeded").touch()
    return url


@schema.parametrize()
@settings(
    max_examples=N_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
@pytest.mark.parametrize("token", ["tok-admin", "tok-manager"])
def test_api_conforms_to_its_schema(case, token, api_db):
    case.call_and_validate(headers={"Authorization": f"token {token}"}, checks=CHECKS)


def test_schema_covers_every_endpoint_and_error():
    doc = APP.openapi()
    ops = [(m, p, op) for p, o in doc["paths"].items() for m, op in o.items()]
    assert len(ops) >= 30
    for m, p, op in ops:
        if p.endswith(("/health", "/livez", "/readyz")):
            continue
        assert {"401", "403"} <= set(op["responses"]), (m, p)
        assert op["responses"]["403"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    assert schema.config.generation.modes == [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
