"""The market clock (aitrade.marketclock): the replay mapping (rules, holidays, early closes, DST), ticks only in
session hours, their content (re-dated, the mapping on every tick, the bad-quote share), real-time pacing, the
feed on the embedded bus and on Redis, the `market-clock` service under `aitrade up`, and the daily pipeline on a
date after the synthetic history (the replayed day re-dated, the mapping recorded)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hubutil import run_cli
from typer.testing import CliRunner

from aitrade import bus, config, jobs, marketclock, marketdata, rates, store
from aitrade.archive import Archive
from aitrade.cli import jobs as jobs_cli
from aitrade.clock import calendar, is_session, time_to_expiry
from aitrade.config import ReplaySettings
from aitrade.errors import FieldError
from aitrade.marketclock import ReplayClock, ReplayFeed, ReplayMapping, ReplayMarket

ROOT = Path(__file__).parents[1]
FRIDAY = pd.Timestamp(
    "2026-12-04"
)  # a session after the synthetic history (and after the old 2022 calendar end)
OF = pd.Timestamp("2012-06-29")  # a Friday of the history
FAST = dict(day=str(OF.date()), speed=100_000, symbols="SPX", interval_s=600, n_options=2)


def utc(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


# --- the mapping ---------------------------------------------------------------------------------------------


def test_cycle_walks_the_window_session_for_session_and_wraps():
    clk = ReplayClock(window=("2012-06-25", "2012-06-29"))  # five sessions
    week = pd.bdate_range("2026-11-30", "2026-12-04")  # Monday to Friday, all sessions
    got = [clk.mapping(d).of for d in week]
    assert sorted(got) == list(pd.bdate_range("2012-06-25", "2012-06-29"))
    idx = marketclock.session_index(got)
    assert all((b - a) % 5 == 1 for a, b in zip(idx, idx[1:], strict=False))  # consecutive, cyclically
    assert clk.mapping("2026-12-07").of == clk.mapping("2026-11-30").of  # five sessions on: the same day
    assert all(clk.mapping(d).rule == "cycle" for d in week)


def test_default_window_days_have_history_for_every_default_underlying():
    clk = ReplayClock.from_settings(ReplaySettings())
    for d in pd.bdate_range("2026-11-02", "2026-12-31"):
        if is_session(d):
            of = clk.mapping(d).of
            assert all(of in marketdata.history(s).index for s in ("SPX", "IXIC", "AAPL", "MSFT", "IBM")), of


def test_weekday_rule_replays_the_same_weekday():
    clk = ReplayClock(rule="weekday")
    for d in pd.bdate_range("2026-11-30", "2026-12-04"):
        m = clk.mapping(d)
        assert m.of.weekday() == d.weekday() and m.rule == "weekday"
        assert ReplayClock().window[0] <= np.datetime64(m.of.date()) <= ReplayClock().window[-1]


def test_a_fixed_day_is_replayed_in_every_session():
    clk = ReplayClock(day=OF, speed=2.5)
    assert clk.mapping("2026-12-01").to_dict() == {
        "of": "2012-06-29",
        "live": "2026-12-01",
        "speed": 2.5,
        "source": "synthetic",
        "rule": "day",
    }
    assert ReplayClock.from_settings(ReplaySettings(day="2012-06-29")).mapping(FRIDAY).of == OF


@pytest.mark.parametrize("day", ["2026-12-25", "2026-11-26", "2026-12-05", "2026-12-06"])
def test_holidays_and_weekends_have_no_session(day):
    with pytest.raises(FieldError, match=f"as_of: {day} is not an XNYS trading day"):
        ReplayClock().mapping(day)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        (dict(rule="random"), "rule"),
        (dict(speed=0), "speed"),
        (dict(speed=float("nan")), "speed"),
        (dict(day="2012-07-04"), "day"),
        (dict(window=("2012-07-07", "2012-07-08")), "window_start"),
        (dict(window=("not a date", "2012-07-08")), "window_start"),
    ],
)
def test_bad_clock_settings_name_the_field(kw, field):
    with pytest.raises(FieldError) as e:
        ReplayClock(**kw)
    assert e.value.field == field


def test_early_close_plays_the_whole_historical_session_by_13_00():
    m = ReplayMapping(pd.Timestamp("2026-11-27"), OF)  # the day after Thanksgiving closes at 13:00 New York
    assert m.live_time(utc("2012-06-29 13:30")) == utc("2026-11-27 14:30")
    assert m.live_time(utc("2012-06-29 20:00")) == utc("2026-11-27 18:00")
    ticks = ReplayFeed(ReplayClock(day=OF), ["SPX"], "2026-11-27", n_options=1).schedule()
    ts = [pd.Timestamp(t["ts"]) for t in ticks]
    assert min(ts) > utc("2026-11-27 14:30") and max(ts) == utc("2026-11-27 18:00")


@pytest.mark.parametrize(
    ("live", "open_utc", "close_utc"),
    [
        ("2026-07-10", "13:30", "20:00"),  # EDT
        ("2026-12-04", "14:30", "21:00"),  # EST
        ("2026-03-06", "14:30", "21:00"),  # the Friday before the change to EDT
        ("2026-03-09", "13:30", "20:00"),  # the Monday after it
    ],
)
def test_session_hours_in_utc_follow_new_yorks_dst(live, open_utc, close_utc):
    ticks = ReplayFeed(ReplayClock(day="2012-01-20"), ["SPX"], live, n_options=0).schedule()  # a winter day
    ts = [pd.Timestamp(t["ts"]) for t in ticks]
    assert ts[0] == utc(f"{live} {open_utc}") + pd.Timedelta(minutes=1)
    assert ts[-1] == utc(f"{live} {close_utc}")


def test_expiries_keep_their_calendar_days_and_land_on_sessions():
    m = ReplayClock().mapping(FRIDAY)
    hist = marketdata.SyntheticMarket(seed=7).chain("SPX", m.of)
    live = ReplayMarket(ReplayClock(), marketdata.SyntheticMarket(seed=7)).chain("SPX", FRIDAY)
    old = np.sort(hist["expiry"].unique())
    new = np.sort(live["expiry"].unique())
    assert is_session(new).all() and (new > np.datetime64(FRIDAY)).all()
    shifted = pd.to_datetime(old) + (FRIDAY - m.of)
    rolled = pd.to_datetime(m.live_expiry(old))
    kept = is_session(shifted)
    assert (rolled[kept] == shifted[kept]).all()  # time to expiry unchanged
    assert ((shifted[~kept] - rolled[~kept]).days <= 4).all()  # a weekend or holiday: the session before
    # the re-dated chain prices exactly as the historical one: the same quotes, and the same T where kept
    Th = time_to_expiry(m.of, old[kept])
    Tl = time_to_expiry(FRIDAY, rolled[kept])
    np.testing.assert_allclose(Th, Tl, atol=2 / 24 / 365)  # up to a DST hour on the exchange's wall clock


def test_replayed_market_redates_chain_closes_and_curve():
    rm = ReplayMarket(ReplayClock(day=OF), marketdata.SyntheticMarket(seed=7))
    ch = rm.chain("SPX", FRIDAY)
    assert (ch["quote_date"] == FRIDAY).all() and (ch["ts"] == calendar().session_close(FRIDAY)).all()
    assert marketdata.validate_chain(ch).good.shape[0] > 0.95 * len(ch)  # the bad rows stay bad, no more
    p = rm.prices("SPX", end=FRIDAY)
    h = marketdata.SyntheticMarket(seed=7).prices("SPX", end=OF)
    assert p["date"].iloc[-1] == FRIDAY and p["close"].iloc[-1] == h["close"].iloc[-1]
    assert is_session(p["date"].tail(300)).all() and p["date"].is_monotonic_increasing
    c = rm.curve(FRIDAY)
    assert c.as_of == FRIDAY and "replay of 2012-06-29" in c.source
    np.testing.assert_allclose(c.rates, marketdata.SyntheticMarket(seed=7).curve(OF).rates)
    assert type(marketclock.market_for("2018-06-29")) is marketdata.SyntheticMarket
    assert type(marketclock.market_for(FRIDAY)) is ReplayMarket


# --- ticks --------------------------------------------------------------------------------------------------


class FakeClock:
    "A wall clock that moves only when the feed sleeps."

    def __init__(self, t: pd.Timestamp):
        self.t, self.waits = t.timestamp(), []

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.waits.append(s)
        self.t += s


def feed_at(now: str, **kw) -> tuple[ReplayFeed, FakeClock]:
    fc = FakeClock(utc(now))
    kw = {"n_options": 1, **kw}
    return ReplayFeed(ReplayClock(day=OF), ["SPX"], FRIDAY, now=fc.now, sleep=fc.sleep, **kw), fc


def test_before_the_open_ticks_wait_for_the_session():
    f, fc = feed_at("2026-12-04 12:00")
    got = []
    for t in f.ticks():
        got.append(t)
        assert abs(fc.t - pd.Timestamp(t["ts"]).timestamp()) < 1e-6  # released at its own time
    assert fc.waits[0] == pytest.approx((utc("2026-12-04 14:31") - utc("2026-12-04 12:00")).total_seconds())
    ts = [pd.Timestamp(t["ts"]) for t in got]
    assert min(ts) > utc("2026-12-04 14:30") and max(ts) == utc("2026-12-04 21:00")
    assert len(got) == len(f.schedule())


def test_after_the_close_nothing_is_sent_and_mid_session_starts_now():
    f, fc = feed_at("2026-12-04 21:30")
    assert list(f.ticks()) == [] and fc.waits == []
    f, fc = feed_at("2026-12-04 18:00:30")
    ts = [pd.Timestamp(t["ts"]) for t in f.ticks()]
    assert min(ts) == utc("2026-12-04 18:01") and max(ts) == utc("2026-12-04 21:00")


def test_tick_content_is_redated_carries_the_mapping_and_flags_bad_quotes():
    f = ReplayFeed(
        ReplayClock(day=OF), ["SPX", "AAPL"], FRIDAY, marketdata.SyntheticMarket(seed=7), bad_share=0.1
    )
    ticks = f.schedule()
    rep = {"of": "2012-06-29", "live": "2026-12-04", "speed": 1.0, "source": "synthetic", "rule": "day"}
    assert all(t["replay"] == rep and t["quote_date"] == "2026-12-04" for t in ticks)
    assert {t["type"] for t in ticks} == {"underlying", "quote"} and {t["symbol"] for t in ticks} == {
        "SPX",
        "AAPL",
    }
    ts = [pd.Timestamp(t["ts"]) for t in ticks]
    assert ts == sorted(ts) and utc("2026-12-04 14:30") < ts[0] and ts[-1] == utc("2026-12-04 21:00")
    # the underlying path is the historical day's, ending on its close
    hist = [
        t for t in marketdata.SyntheticMarket(seed=7).feed(["SPX"], OF).ticks() if t["type"] == "underlying"
    ]
    spx = [t for t in ticks if t["type"] == "underlying" and t["symbol"] == "SPX"]
    assert [t["price"] for t in spx] == [t["price"] for t in hist]
    assert spx[-1]["price"] == marketdata.history("SPX").loc[OF, "close"]
    q = [t for t in ticks if t["type"] == "quote"]
    assert set(marketdata.CHAIN_COLUMNS) - {"underlying", "quote_date", "ts"} <= set(q[0])  # a quote's fields
    assert all(is_session(t["expiry"]) and t["expiry"] > "2026-12-04" for t in q)
    bad = [t for t in q if t["bad"]]
    assert 0.07 < len(bad) / len(q) < 0.13
    assert {t["bad"] for t in bad} == {"crossed", "locked", "zero_bid", "zero_ask", "negative_bid"}
    for t in bad:
        b, a = t["bid"], t["ask"]
        assert {
            "crossed": b > a,
            "locked": b == a,
            "zero_bid": b == 0,
            "zero_ask": a == 0,
            "negative_bid": b < 0,
        }[t["bad"]]
    assert all(0 < t["bid"] < t["ask"] for t in q if not t["bad"])
    assert f.schedule() == ticks  # deterministic


def test_pacing_at_speed_600_follows_the_wall_clock():
    clk = ReplayClock(day=OF, speed=600)  # a minute of session time every 0.1 s
    f = ReplayFeed(clk, ["SPX"], FRIDAY, n_options=0, start=utc("2026-12-04 15:00"))
    f.schedule()  # warm the caches: pacing is measured on the ticks, not on building them
    seen = []
    for t in f.ticks():
        seen.append((time.monotonic(), pd.Timestamp(t["ts"])))
        if seen[-1][0] - seen[0][0] > 3.0:
            break
    (w0, t0), (w1, t1) = seen[0], seen[-1]
    assert t0 == utc("2026-12-04 15:00") and 28 <= len(seen) <= 33
    for w, t in seen:
        assert abs((w - w0) - (t - t0).total_seconds() / 600) < 0.25
    assert (t1 - t0).total_seconds() / 60 == pytest.approx((w1 - w0) * 10, abs=2.5)


@pytest.fixture(params=["embedded", "redis"])
def platform_bus(request, monkeypatch):
    if request.param == "redis":
        monkeypatch.setenv("AITRADE_REDIS__URL", request.getfixturevalue("redis_url"))
    config.reload_settings()
    b = bus.get_bus()
    b.delete(marketdata.TICKS_STREAM)
    yield b
    b.delete(marketdata.TICKS_STREAM)


def test_serve_publishes_the_session_on_the_bus(platform_bus):
    cfg = ReplaySettings(**FAST)
    want = marketclock.open_feed(cfg, FRIDAY).schedule()
    lines = []
    n = marketclock.serve(cfg, date=FRIDAY, max_sessions=1, echo=lines.append)
    got = list(marketdata.subscribe_ticks(last_id="0", block_ms=300, bus=platform_bus))
    assert n == len(want) == len(got) and got == json.loads(json.dumps(want))
    assert lines == [
        "market-clock: session 2026-12-04 (14:30-21:00 UTC) replays 2012-06-29 at speed 100000 -> ticks"
    ]


def test_a_live_source_needs_an_adapter_and_uses_it(platform_bus, tmp_path, monkeypatch):
    with pytest.raises(FieldError, match=r"replay.live_adapter: \[replay\] source = live, but no live feed"):
        marketclock.open_feed(ReplaySettings(source="live"))
    with pytest.raises(FieldError, match="replay.live_adapter: cannot load 'nowhere:feed'"):
        marketclock.open_feed(ReplaySettings(source="live", live_adapter="nowhere:feed"))
    (tmp_path / "venue_adapter.py").write_text(
        "class F:\n"
        "    def ticks(self):\n"
        "        yield {'type': 'underlying', 'symbol': 'SPX', 'price': 1.0, 'replay': {'source': 'live'}}\n"
        "def feed(settings):\n"
        "    return F()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    n = marketclock.serve(
        ReplaySettings(source="live", live_adapter="venue_adapter:feed"), echo=lambda _: None
    )
    got = list(marketdata.subscribe_ticks(last_id="0", block_ms=300, bus=platform_bus))
    assert n == 1 and got[0]["replay"] == {"source": "live"}


# --- the service under `aitrade up` -----------------------------------------------------------------------


def _project(tmp_path: Path, replay: str) -> None:
    (tmp_path / "settings.ini").write_text(
        "[dask]\n# free ports\nscheduler_port = 0\ndashboard_port = 0\n[replay]\n# the test's replay\n"
        + replay
    )


def test_up_starts_the_market_clock_and_ticks_arrive(tmp_path):
    _project(tmp_path, "".join(f"{k} = {v}\n" for k, v in FAST.items()))
    r = run_cli("up", "--no-hub", "--no-scheduler", "--exit-after", "30", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "market-clock    replay at speed 100000 -> bus" in r.stdout
    log = (tmp_path / "var" / "log" / "market-clock.log").read_text()
    assert "market-clock: session 2026-12-04 replays 2012-06-29" in log or "replays 2012-06-29" in log, log
    ticks = [m for _, m in bus.SqliteBus(tmp_path / "var" / "bus.db").subscribe("ticks", "0", block_ms=100)]
    assert ticks and all(t["replay"]["of"] == "2012-06-29" for t in ticks)


def test_up_skips_a_live_clock_without_adapter_and_says_why(tmp_path):
    _project(tmp_path, "source = live\n")
    r = run_cli("up", "--no-hub", "--no-scheduler", "--exit-after", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        "market-clock    skipped: [replay] source = live, but no live feed adapter is configured" in r.stdout
    )


# --- today's run ---------------------------------------------------------------------------------------------


@pytest.fixture
def platform(sqlite_db, tmp_path, monkeypatch):
    "The embedded default of this test: its SQLite database and archive, and a cluster whose workers see them."
    monkeypatch.setenv("AITRADE_ARCHIVE__URL", str(tmp_path / "archive"))
    config.reload_settings()
    client = jobs.dask_client(n_workers=1, threads_per_worker=1)  # workers inherit this test's environment
    client.wait_for_workers(1, timeout=60)
    monkeypatch.setenv("AITRADE_DASK_ADDRESS", client.scheduler.address)
    config.reload_settings()
    yield tmp_path
    jobs.close_client(client)


def _today_if_session() -> list[str]:
    today = marketclock.today()
    extra = [str(today.date())] if is_session(today) and today != FRIDAY else []
    return [str(FRIDAY.date()), *extra]


@pytest.mark.parametrize("as_of", _today_if_session())
def test_daily_run_after_the_history_replays_and_records_the_mapping(platform, as_of):
    args = [
        "run",
        "daily",
        "--file",
        str(ROOT / "jobs" / "pipelines.yaml"),
        "-p",
        f"as_of={as_of}",
        "-p",
        "underlyings=SPX",
    ]
    r = CliRunner().invoke(jobs_cli.app, args)
    assert r.exit_code == 0, r.output[-3000:]
    run = jobs.list_runs("daily")[0]
    assert f"run {run['id']}: succeeded" in r.output
    of = ReplayClock.from_settings().mapping(as_of).of.date()
    mapping = {"of": str(of), "live": as_of, "speed": 1.0, "source": "synthetic", "rule": "cycle"}
    assert f"[ingest#1] replay: {json.dumps(mapping)}" in r.output
    with store.session_scope() as s:
        ch = marketdata.chain(s, "SPX", as_of)
        assert len(ch) > 100 and (ch["quote_date"] == pd.Timestamp(as_of)).all()
        assert f"replay of {of}" in rates.curve(s, as_of).source
    assert (platform / "var" / "reports" / f"daily-{as_of}.html").is_file()
    ingest = Archive(platform / "archive").show(
        f"{run['id']}.ingest.1"
    )  # the archive entry of the run's ingest
    assert ingest.status == "succeeded" and "replay_mapping" in ingest.manifest["inputs"]
    assert Archive(platform / "archive").show(f"{run['id']}.report.1").status == "succeeded"


def test_a_day_without_a_session_still_fails_naming_as_of(platform, tmp_path):
    f = tmp_path / "pipelines.yaml"
    f.write_text(
        f"pipelines:\n  daily:\n    notebooks:\n      ingest: {{path: {ROOT / 'jobs' / 'ingest.ipynb'}}}\n"
        "    parameters:\n      as_of: {type: date, default: $scheduled_date}\n"
    )
    r = CliRunner().invoke(jobs_cli.app, ["run", "daily", "--file", str(f), "-p", "as_of=2026-12-05"])
    assert r.exit_code != 0
    assert "as_of: 2026-12-05 is not an XNYS trading day" in r.output
