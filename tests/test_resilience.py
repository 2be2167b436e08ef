"""Resilience with libraries (issue 16, item 3): a dead webhook opens its breaker and is then not called at all;
with Redis the breaker's state is shared by the platform's processes; a router's bulkhead refuses with 503 and
its name while a slow call holds its slots, and the other routes go on."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
import redis
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from aitrade import config, errors, resilience
from aitrade.api import edges
from aitrade.api.app import platform_error
from aitrade.jobs.alerts import post_json

REDIS = os.environ.get("AITRADE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(autouse=True)
def fresh():
    resilience.forget_breakers()
    yield
    resilience.forget_breakers()


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_a_dead_webhook_opens_its_breaker_and_is_then_refused_at_once(monkeypatch):
    monkeypatch.setenv("AITRADE_REDIS__URL", "")
    config.reload_settings()
    url = f"http://127.0.0.1:{_dead_port()}/hooks/T0"
    with pytest.raises(OSError):
        post_json(url, {"text": "one"}, timeout=0.5)  # three attempts, each refused
    with pytest.raises(resilience.CircuitOpen):  # the fifth failure in a row trips it
        post_json(url, {"text": "two"}, timeout=0.5)
    t0 = time.perf_counter()
    with pytest.raises(resilience.CircuitOpen) as e:
        post_json(url, {"text": "three"}, timeout=0.5)
    assert time.perf_counter() - t0 < 0.05  # not tried: no connection, no backoff
    assert str(e.value).startswith("webhook:127.0.0.1: failing, calls refused for up to 30 s")
    assert e.value.status == 503
    b = resilience.breaker("webhook:127.0.0.1")
    assert b.current_state == "open" and b.fail_counter >= 5
    config.get_settings.cache_clear()


def test_with_redis_the_breaker_state_is_shared_by_processes(monkeypatch):
    r = redis.Redis.from_url(REDIS)
    try:
        r.ping()
    except redis.RedisError as e:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS} is unreachable: {e}")
        pytest.skip(f"Redis at {REDIS} is unreachable: {e}")
    name = f"test:shared:{os.getpid()}:{time.time_ns()}"
    monkeypatch.setenv("AITRADE_REDIS__URL", REDIS)
    config.reload_settings()
    try:
        a = resilience.breaker(name, fail_max=2, reset_timeout=60)

        def fail():
            raise ConnectionError("down")

        for _ in range(2):
            with pytest.raises((ConnectionError, resilience.CircuitOpen)):
                resilience.call(name, fail)
        assert a.current_state == "open"
        resilience.forget_breakers()  # another process: a new breaker of the same name
        b = resilience.breaker(name, fail_max=2, reset_timeout=60)
        assert b is not a and b.current_state == "open"  # read from Redis
        called = []
        with pytest.raises(resilience.CircuitOpen):
            resilience.call(name, lambda: called.append(1))
        assert called == []
    finally:
        for k in r.scan_iter(f"pybreaker:aitrade:{name}*"):
            r.delete(k)
        config.get_settings.cache_clear()


def test_a_full_bulkhead_answers_503_with_its_name_and_other_routes_go_on():
    release = threading.Event()
    heavy = APIRouter(dependencies=[edges.bulkhead("heavy", 1, wait_s=0.2)])
    light = APIRouter()

    @heavy.get("/heavy")
    def slow():
        release.wait(10)
        return {"ok": True}

    @light.get("/light")
    def fast():
        return {"ok": True}

    app = FastAPI()
    app.include_router(heavy)
    app.include_router(light)
    app.add_exception_handler(errors.AitradeError, platform_error)
    with TestClient(app) as c:
        first = threading.Thread(target=lambda: c.get("/heavy"))
        first.start()
        time.sleep(0.3)  # the one slot is taken
        r = c.get("/heavy")
        assert r.status_code == 503 and "api:heavy: all 1 slots busy" in r.json()["detail"], r.text
        t0 = time.perf_counter()
        assert c.get("/light").status_code == 200 and time.perf_counter() - t0 < 1
        release.set()
        first.join(10)
        assert c.get("/heavy").status_code == 200  # the slot is back
