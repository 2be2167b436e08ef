"""Shared fixtures: isolated settings per test, and a database per test on SQLite and on PostgreSQL.

PostgreSQL comes from AITRADE_TEST_DATABASE_URL (`.ci/run` sets it to the local server). Each test gets its own
schema there (search_path) and drops it afterwards. With CI=true a database test fails, never skips, when the
server is unreachable; redis tests follow the same rule with AITRADE_TEST_REDIS_URL.
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa
from hubutil import CHROMIUM, CHROMIUM_ARGS, IN_CI, unavailable
from hypothesis import settings as hypothesis_settings

from aitrade import config, store

# CI replays a fixed set of examples (a red run must be reproducible); local runs keep exploring new ones.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None, print_blob=True)
hypothesis_settings.load_profile("ci" if IN_CI else "dev")


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    "Every test starts from the defaults with its own project root (tmp_path), unaffected by the developer's env."
    for k in list(os.environ):
        if k.startswith("AITRADE_") and not k.startswith("AITRADE_TEST_"):
            monkeypatch.delenv(k)
    ini = tmp_path / "settings.ini"
    ini.write_text("# test settings\n")
    monkeypatch.setenv("AITRADE_SETTINGS", str(ini))
    # single-account mode: a test's platform lives in its tmp_path, which no other account may enter;
    # tests/test_boundary.py runs the real split between the service account and people's accounts
    monkeypatch.setenv("AITRADE_ACCOUNTS__SERVICE_ACCOUNT", "")
    config.reload_settings()
    yield ini
    store.dispose_engines()
    config.get_settings.cache_clear()


@pytest.fixture
def sqlite_db(tmp_path, monkeypatch):
    "A migrated SQLite database configured as the platform database, for paths that do not depend on the dialect."
    url = f"sqlite:///{tmp_path}/aitrade.db"
    monkeypatch.setenv("AITRADE_DATABASE__URL", url)
    config.reload_settings()
    store.upgrade(url=url)
    return url


def _pg_schema_url(base: str, schema: str) -> str:
    u = sa.make_url(base)
    return u.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


def _server_url(var: str, what: str) -> str:
    "The URL of a test server from the environment variable `var`; `unavailable` when it is not set."
    url = os.environ.get(var)
    if not url:
        unavailable(what, f"{var} is not set")
    return url


@pytest.fixture
def pg_url():
    "A fresh PostgreSQL schema for this test; dropped afterwards."
    base = _server_url("AITRADE_TEST_DATABASE_URL", "PostgreSQL")
    eng = sa.create_engine(base, poolclass=sa.pool.NullPool)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with eng.begin() as c:
            c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as e:
        unavailable("PostgreSQL", f"{base} is unreachable: {e.orig}")
    try:
        yield _pg_schema_url(base, schema)
    finally:
        store.dispose_engines()
        with eng.begin() as c:
            c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    "The database URL of this test: a SQLite file, or a PostgreSQL schema."
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/aitrade.db"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def db(db_url, monkeypatch):
    "A migrated database, configured as the platform database of this test."
    monkeypatch.setenv("AITRADE_DATABASE__URL", db_url)
    config.reload_settings()
    store.upgrade(url=db_url)
    return db_url


def _redis_db(url: str, n: int) -> str:
    "`url` with its logical database number replaced by `n`."
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(url)
    return urlunsplit(u._replace(path=f"/{n}"))


@pytest.fixture
def redis_url():
    "The Redis server of the tests (AITRADE_TEST_REDIS_URL), flushed before and after."
    url = _server_url("AITRADE_TEST_REDIS_URL", "Redis")
    import redis

    # pytest-xdist: each worker its own logical database, so parallel tests never share a stream or a key
    if worker := os.environ.get("PYTEST_XDIST_WORKER"):
        url = _redis_db(url, 1 + int(worker[2:]))

    r = redis.Redis.from_url(url)
    try:
        r.ping()
    except redis.exceptions.ConnectionError as e:
        unavailable("Redis", f"{url} is unreachable: {e}")
    yield url
    r.close()


def pytest_collection_modifyitems(config, items):
    gpu = None
    for item in items:
        if "gpu" in item.keywords:
            if gpu is None:
                from aitrade.kernels import cupy_module

                gpu = cupy_module() is not None
            if not gpu:
                item.add_marker(pytest.mark.skip(reason="no CUDA GPU (cupy.cuda.is_available() is false)"))


@pytest.fixture(scope="module")
def playwright_api():
    "Playwright, with Debian's chromium checked present (CI installs both; elsewhere a clear skip)."
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable(
            "the browser test", "the Python package playwright is not installed (pip install playwright)"
        )
    if not CHROMIUM.exists():
        unavailable(
            "the browser test",
            f"{CHROMIUM} is missing (apt-get update && apt-get install -y chromium-headless-shell)",
        )
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_api):
    "One headless chromium for a test module's pages."
    b = playwright_api.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()
