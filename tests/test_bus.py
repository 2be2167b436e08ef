"""The bus on both backends: the embedded SQLite-WAL stream file and Redis Streams (the real server at
AITRADE_TEST_REDIS_URL), each with a subscriber and a publisher in two separate processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from aitrade import bus, config

SUBSCRIBER = """
import json, sys
from aitrade import bus
sub = bus.subscribe(sys.argv[1], "$", block_ms=30000)
print("ready", flush=True)
got = []
for i, m in sub:
    got.append([i, m])
    if len(got) == int(sys.argv[2]):
        break
print(json.dumps(got), flush=True)
"""

PUBLISHER = """
import json, sys
from aitrade import bus
ids = [bus.publish(sys.argv[1], {"k": k, "pid": __import__("os").getpid()}) for k in range(int(sys.argv[2]))]
print(json.dumps(ids), flush=True)
"""


@pytest.fixture(params=["embedded", "redis"])
def backend(request, monkeypatch):
    "The platform bus of this test: the embedded stream file, or Redis Streams on the test server."
    if request.param == "redis":
        monkeypatch.setenv("AITRADE_REDIS__URL", request.getfixturevalue("redis_url"))
    config.reload_settings()
    b = bus.get_bus()
    streams: list[str] = []

    def new_stream() -> str:
        streams.append(f"test-{uuid.uuid4().hex[:12]}")
        return streams[-1]

    yield request.param, b, new_stream
    for s in streams:
        b.delete(s)


def test_backend_follows_the_settings(backend, isolated_settings):
    kind, b, _ = backend
    if kind == "redis":
        assert isinstance(b, bus.RedisBus)
    else:
        assert isinstance(b, bus.SqliteBus)
        assert b.path == isolated_settings.parent / "var" / "bus.db"


def test_publish_subscribe_roundtrip(backend):
    kind, b, new_stream = backend
    s = new_stream()
    first = bus.publish(
        s, {"px": 101.25, "n": 1, "ts": datetime(2015, 6, 1, 20, tzinfo=UTC), "v": np.float64(0.5)}
    )
    new_only = bus.subscribe(s, "$", block_ms=200)
    second = bus.publish(s, {"px": 101.5, "n": 2, "tags": ["a", "b"], "nested": {"x": None}})
    everything = list(bus.subscribe(s, "0", block_ms=0))
    assert [m["n"] for _, m in everything] == [1, 2]
    assert everything[0] == (first, {"px": 101.25, "n": 1, "ts": "2015-06-01T20:00:00+00:00", "v": 0.5})
    assert list(new_only) == [(second, {"px": 101.5, "n": 2, "tags": ["a", "b"], "nested": {"x": None}})]
    assert new_only.last_id == second
    assert list(bus.subscribe(s, second, block_ms=0)) == []  # resume after the last id: nothing new
    assert [m["n"] for _, m in bus.subscribe(s, first, block_ms=0)] == [2]
    assert b.length(s) == 2
    if kind == "redis":  # really in Redis, under the platform's key prefix
        assert b.r.xlen(f"aitrade:{s}") == 2


def test_subscription_ends_after_block_ms_without_messages(backend):
    _, _, new_stream = backend
    s = new_stream()
    t0 = time.monotonic()
    assert list(bus.subscribe(s, "$", block_ms=300)) == []
    assert 0.25 <= time.monotonic() - t0 < 5


def test_bad_input_names_the_field(backend):
    with pytest.raises(ValueError, match="stream:"):
        bus.publish("has space", {"a": 1})
    with pytest.raises(ValueError, match="message: must be a dict"):
        bus.publish("ok", "not a dict")
    with pytest.raises(ValueError, match="message: not JSON serialisable"):
        bus.publish("ok", {"a": {1, 2}})
    with pytest.raises(ValueError, match="last_id:"):
        bus.subscribe("ok", "newest")
    with pytest.raises(ValueError, match="count:"):
        bus.subscribe("ok", "0", count=0)


def test_publish_many_is_in_order_and_all_or_none(backend):
    "Several messages at once (what a transaction committed) land in order on their streams; one bad, none lands."
    _, b, new_stream = backend
    s1, s2 = new_stream(), new_stream()
    ids = b.publish_many([(s1, {"k": 1}), (s2, {"k": 2}), (s1, {"k": 3})])
    key = [tuple(int(x) for x in i.split("-")) for i in ids]  # ids order the entries of one stream
    assert len(ids) == 3 and key[0] < key[2]
    assert [(i, m["k"]) for i, m in b.subscribe(s1, "0", block_ms=0)] == [(ids[0], 1), (ids[2], 3)]
    assert [(i, m["k"]) for i, m in b.subscribe(s2, "0", block_ms=0)] == [(ids[1], 2)]
    with pytest.raises(ValueError, match="message: must be a dict"):
        b.publish_many([(s1, {"k": 4}), (s2, [5])])
    assert (b.length(s1), b.length(s2), b.publish_many([])) == (2, 1, [])


def test_two_processes_one_publishes_the_other_receives(backend, tmp_path):
    kind, _, new_stream = backend
    s, n = new_stream(), 25
    env = dict(os.environ)
    sub = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER, s, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert sub.stdout.readline().strip() == "ready", sub.stderr.read()
        pub = subprocess.run(
            [sys.executable, "-c", PUBLISHER, s, str(n)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert pub.returncode == 0, pub.stderr
        ids = json.loads(pub.stdout)
        out, err = sub.communicate(timeout=120)
        assert sub.returncode == 0, err
    finally:
        if sub.poll() is None:
            sub.kill()
    got = json.loads(out)
    assert [i for i, _ in got] == ids
    assert [m["k"] for _, m in got] == list(range(n))
    assert len({m["pid"] for _, m in got}) == 1 and got[0][1]["pid"] not in (os.getpid(), sub.pid)


def test_embedded_stream_is_trimmed_and_ids_never_go_back(tmp_path):
    b = bus.SqliteBus(tmp_path / "b.db", maxlen=10, trim_every=5)
    ids = [b.publish("t", {"k": k}) for k in range(23)]
    assert b.length("t") <= 10 + 5
    kept = [m["k"] for _, m in b.subscribe("t", "0", block_ms=0)]
    assert kept == list(range(23 - len(kept), 23)) and len(kept) >= 10
    assert [int(i.split("-")[1]) for i in ids] == sorted(int(i.split("-")[1]) for i in ids)


WAITER = """
import json, sys, time
from aitrade import bus
b = bus.SqliteBus(sys.argv[1])
b.poll_s = float(sys.argv[2])  # the backstop poll: so long here that only a ring can deliver in time
sub = b.subscribe("bell", "$", block_ms=60000)
print("ready", flush=True)
i, m = next(sub)
print(json.dumps({"lag_s": time.time() - m["t"], "k": m["k"]}), flush=True)
"""


def test_a_publish_wakes_a_reader_in_another_process_without_polling(tmp_path):
    "The embedded bus rings its readers (Doorbell): with a 60 s backstop poll the message still arrives at once."
    path = tmp_path / "bus.db"
    sub = subprocess.Popen([sys.executable, "-c", WAITER, str(path), "60"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert sub.stdout.readline().strip() == "ready", sub.stderr.read()
        time.sleep(0.5)  # the reader is inside its wait now
        bus.SqliteBus(path).publish("bell", {"k": 7, "t": time.time()})
        out, err = sub.communicate(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
    got = json.loads(out)
    assert got["k"] == 7 and got["lag_s"] < 10, got  # a poll would have taken up to 60 s
    bus.SqliteBus(path).publish("bell", {"k": 8, "t": time.time()})  # the reader has exited: its socket goes
    assert os.listdir(bus.Doorbell(path).dir) == []
