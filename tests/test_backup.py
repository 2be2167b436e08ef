"""Backups (aitrade.ops.backup, .pgbackrest, .recovery; `aitrade backup | restore | drill`): encrypted for real,
refused with the wrong key, a flipped byte found; the measured data loss after destroying SQLite (≤ 300 s) and
after SIGKILL of PostgreSQL with pgBackRest and WAL archiving (≤ 60 s); drills of 100 MB databases (SQLite and PostgreSQL) with their RTO;
the `backup` service of `make run`."""

from __future__ import annotations

import getpass
import re
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hubutil import free_port, platform_env, run_cli

from aitrade import audit, config, store
from aitrade.ops import backup as ops
from aitrade.ops import pgbackrest, recovery

MARKER = "PLAINTEXT-MARKER-9c1e77"


def _env(tmp_path: Path, **more: str) -> dict:
    "The environment of the CLI: this test's project, run by the platform's own account."
    return {
        "AITRADE_SETTINGS": str(tmp_path / "settings.ini"),
        "AITRADE_DATABASE__URL": config.get_settings().database_url,
        "AITRADE_ARCHIVE__URL": str(tmp_path / "var" / "archive"),
        "AITRADE_ACCOUNTS__SERVICE_ACCOUNT": getpass.getuser(),
        **more,
    }


def _cli(tmp_path, *args, **env):
    return run_cli(*args, env=_env(tmp_path, **env), cwd=tmp_path)


def _flip(path: Path, offset: int) -> None:
    b = bytearray(path.read_bytes())
    b[offset] ^= 0x01
    path.write_bytes(bytes(b))


def test_backups_are_encrypted_a_wrong_key_is_refused_and_a_flipped_byte_fails_verify(sqlite_db, tmp_path):
    db = Path(sqlite_db.removeprefix("sqlite:///"))
    with store.session_scope() as s:
        audit.append(s, "rita", "limit.set", "limit:SPX:vega", after={"note": MARKER})
    from aitrade.bus import get_bus

    get_bus().publish("ticks", {"note": MARKER})
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE canary (note TEXT)")
    c.execute("INSERT INTO canary VALUES (?)", (MARKER * 100,))
    c.commit()
    c.close()
    assert MARKER.encode() in db.read_bytes() + Path(f"{db}-wal").read_bytes()  # plain in the database itself

    r = _cli(tmp_path, "backup", "run")
    assert r.returncode == 0 and "sqlite backup" in r.stdout, r.stderr
    first = ops.read_manifest(ops.BackupStore(), ops.BackupStore().ids()[0])
    ops.create_backup()
    # --to-time: the newest backup at or before it
    t = datetime.fromisoformat(first["finished_at"])
    assert ops.restore(to_time=t, into=tmp_path / "r1", audited=False).id == first["id"]
    assert ops.restore(into=tmp_path / "r2", audited=False).id == ops.BackupStore().ids()[-1] != first["id"]
    folder = tmp_path / "var" / "backups"
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert len(files) == 6, files  # 2 backups x (aitrade.db.enc, bus.db.enc, manifest.json)
    for p in files:
        assert MARKER.encode() not in p.read_bytes(), p
    key_file = tmp_path / "var" / "secrets" / "backup.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"

    # a wrong key: refused by name, the database untouched
    with store.session_scope() as s:
        audit.append(s, "rita", "limit.set", "limit:SPX:delta", after={"note": "after the backups"})
    # a running platform holds its databases open: a restore over them is refused
    holder = subprocess.Popen([sys.executable, "-c", f"import sqlite3, time; c = sqlite3.connect({str(db)!r}); "
                               "c.execute('select 1').fetchall(); print('ok', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(ops.BackupError, match=rf"the platform is running \(pid {holder.pid} "):
            ops.restore()
    finally:
        holder.kill()
        holder.wait()
    store.dispose_engines()
    get_bus()._local.conn.close()  # this test's own bus connection (a platform's process would be stopped)
    before = db.read_bytes()
    r = _cli(tmp_path, "restore", "--latest", "--yes", AITRADE_BACKUP__KEY=ops.new_key_text())
    assert r.returncode == 1, r.stdout
    assert "wrong key" in r.stderr and "[backup] key (environment AITRADE_BACKUP__KEY)" in r.stderr, r.stderr
    assert db.read_bytes() == before and not list(db.parent.glob(".aitrade.db.restore-*"))

    # one flipped byte anywhere fails verify, naming the backup and the file
    newest = sorted(folder.iterdir())[-1]
    assert [ops.verify_backup(b)["id"] for b in ops.BackupStore().ids()] == sorted(
        p.name for p in folder.iterdir()
    )
    for p in sorted(newest.iterdir()):
        for offset in (0, p.stat().st_size // 2, p.stat().st_size - 1):
            _flip(p, offset)
            with pytest.raises(ops.BackupError, match=newest.name):
                ops.verify_backup(newest.name)
            _flip(p, offset)
    _flip(newest / "bus.db.enc", 200)
    r = _cli(tmp_path, "backup", "verify")
    assert r.returncode == 1 and "bus.db.enc does not match its manifest" in r.stderr, r.stderr
    _flip(newest / "bus.db.enc", 200)
    # the right key restores; the record written after the backups is gone, the marker is back
    r = _cli(tmp_path, "restore", "--latest", "--yes")
    assert r.returncode == 0 and f"restored backup {newest.name}" in r.stdout, r.stderr
    with store.session_scope() as s:
        assert [x.target for x in audit.query(s, action="limit.set")] == ["limit:SPX:vega"]
        assert audit.query(s, action="backup.restore")[0].actor == f"system:{getpass.getuser()}"
        assert audit.verify(s).ok


def test_sqlite_canary_every_second_database_destroyed_restore_loses_at_most_300_s(sqlite_db, tmp_path):
    db = Path(sqlite_db.removeprefix("sqlite:///"))
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE canary (ts REAL NOT NULL)")
    c.close()
    written: list[float] = []
    stop = threading.Event()

    def canary():
        w = sqlite3.connect(db, timeout=30, isolation_level=None)
        w.execute("PRAGMA busy_timeout=30000")
        while not stop.is_set():
            t = time.time()
            w.execute("INSERT INTO canary VALUES (?)", (t,))
            written.append(t)
            stop.wait(1.0)
        w.close()

    th = threading.Thread(target=canary)
    th.start()
    service = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from aitrade.cli import main; main()",
            "backup",
            "run",
            "--every",
            "2",
            "--drill-every",
            "0",
        ],  # fmt: skip
        env=platform_env(**_env(tmp_path)),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(ops.BackupStore().ids()) < 4 and time.monotonic() < deadline:  # the service's first 4
            time.sleep(0.5)
    finally:  # the disaster: the backup service dies (SIGKILL) while the canary is still writing
        service.kill()
        out = service.communicate(timeout=30)[0]
        stop.set()
        th.join()
    assert len(ops.BackupStore().ids()) >= 4, out
    store.dispose_engines()
    for p in db.parent.glob("aitrade.db*"):  # the database is destroyed
        p.unlink()
    r = _cli(tmp_path, "restore", "--latest", "--yes")
    assert r.returncode == 0, r.stderr
    newest = sqlite3.connect(db).execute("SELECT max(ts) FROM canary").fetchone()[0]
    loss = written[-1] - newest
    print(f"\nSQLite: canary every 1 s, backups every 2 s, database destroyed: data loss {loss:.1f} s")
    assert 0 <= loss <= 300
    assert loss <= 2 + 1 + 2  # one backup interval, one canary interval, and the time a backup takes


@pytest.mark.slow
def test_drill_of_a_100_mb_database_prints_rto_and_rpo(sqlite_db, tmp_path):
    db = Path(sqlite_db.removeprefix("sqlite:///"))
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE ballast (b BLOB)")
    c.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) "
        "INSERT INTO ballast SELECT randomblob(1048576) FROM n"
    )
    c.commit()
    c.close()
    with store.session_scope() as s:
        audit.append(s, "rita", "limit.set", "limit:SPX:vega", after={"v": 1})
    from aitrade.bus import get_bus

    get_bus().publish("ticks", {"v": 1})
    assert db.stat().st_size + Path(f"{db}-wal").stat().st_size >= 100e6
    r = _cli(tmp_path, "backup", "run")
    assert r.returncode == 0, r.stderr
    r = _cli(tmp_path, "drill")
    print("\n" + r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"RTO ([\d.]+) s .* RPO ([\d.]+) s", r.stdout)
    assert m and "PASSED" in r.stdout and re.search(r"\((1\d\d|[2-9]\d\d)\.\d MB", r.stdout), r.stdout
    rto, rpo = float(m.group(1)), float(m.group(2))
    assert 0 < rto < 3600 and 0 <= rpo < 300
    with store.session_scope() as s:
        rec = audit.query(s, action="backup.drill")[0]
    assert rec.after["ok"] and rec.after["rto_s"] == pytest.approx(rto, abs=0.06)
    assert [c["name"] for c in rec.after["checks"]] == [
        "schema revision",
        "audit chain",
        "canary",
        "bus",
        "archive",
    ]
    text = recovery.metrics_text()  # what the API's /metrics shows (BackupCollector)
    assert f"aitrade_backup_drill_rto_seconds {rec.after['rto_s']}" in text, text


def test_the_backup_service_is_started_by_make_run_with_its_interval(monkeypatch):
    from aitrade.platform import plan_services

    monkeypatch.setenv("AITRADE_BACKUP__INTERVAL_S", "120")
    s = config.reload_settings()
    svc = {x.name: x for x in plan_services(s, with_hub=False)}["backup"]
    assert svc.cmd[-4:] == ["backup", "run", "--every", "120"] and svc.cmd[0].endswith("aitrade")
    assert "every 120 s" in svc.where
    monkeypatch.setenv("AITRADE_BACKUP__INTERVAL_S", "900")
    with pytest.raises(config.ConfigError, match=r"\[backup\] interval_s .*less than or equal to 300"):
        config.reload_settings()


@pytest.mark.slow
def test_postgresql_pgbackrest_wal_archiving_sigkill_restore_loses_at_most_60_s(tmp_path, monkeypatch):
    from pgutil import PrivatePostgres

    pgs = PrivatePostgres("the pgBackRest test")
    try:
        run = pgs.root / "pgbackrest"
        env = {
            "AITRADE_BACKUP__PG_CONF": str(run / "pgbackrest.conf"),
            "AITRADE_BACKUP__PG_REPO": str(run / "repo"),
            "AITRADE_BACKUP__PG_DATA": str(pgs.data),
            "AITRADE_BACKUP__PG_SOCKET": str(pgs.root),
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("AITRADE_DATABASE__URL", f"postgresql+psycopg://x@127.0.0.1:{pgs.port}/aitrade")
        config.reload_settings()
        pg = pgbackrest.PgBackRest.from_settings()
        assert pg.server_settings()["archive_timeout"] == "30s"
        pgs.init(**pg.server_settings())
        pgs.start()
        url = pgs.platform_database()
        monkeypatch.setenv("AITRADE_DATABASE__URL", url)
        config.reload_settings()
        env["AITRADE_DATABASE__URL"] = url
        store.upgrade(url=url)
        r = _cli(tmp_path, "backup", "pg-setup", **env)  # config, stanza-create, check
        assert (
            r.returncode == 0
            and "archive_timeout = '30s'" in r.stdout
            and "WAL archiving checked" in r.stdout
        ), r.stdout + r.stderr
        assert oct((run / "pgbackrest.conf").stat().st_mode & 0o777) == "0o600"
        assert "repo1-cipher-type=aes-256-cbc" in (run / "pgbackrest.conf").read_text()

        with pgs.connect("aitrade", "aitrade_platform") as c:
            c.execute("CREATE TABLE canary (ts timestamptz NOT NULL, note text)")
            # ballast, so that the drill below restores a database of more than 100 MB (1 kB rows stay
            # uncompressed in their pages: PostgreSQL compresses only rows over about 2 kB)
            c.execute(
                "CREATE TABLE ballast AS SELECT repeat(md5(i::text), 32) AS b FROM generate_series(1, 100000) i"
            )
        written: list[datetime] = []
        stop = threading.Event()

        def canary():
            with pgs.connect("aitrade", "aitrade_platform") as c:
                while not stop.is_set():
                    try:
                        t = c.execute(
                            "INSERT INTO canary VALUES (clock_timestamp(), %s) RETURNING ts", (MARKER,)
                        )
                        written.append(t.fetchone()[0])
                    except Exception:
                        return  # the server is gone
                    stop.wait(1.0)

        th = threading.Thread(target=canary)
        th.start()
        with store.session_scope() as s:  # the drill's canary: the audit head when the base backup is taken
            audit.append(s, "rita", "limit.set", "limit:SPX:vega", after={"v": 1})
        from aitrade.ops import recovery

        assert recovery.run_backup("system:test", pg=True)[0].startswith("pgbackrest full backup")
        time.sleep(36)  # longer than archive_timeout: the bound, not luck, must keep the loss small
        pgs.kill()
        time.sleep(1.5)
        stop.set()
        th.join()
        last = written[-1]
        for p in (run / "repo").rglob("*"):  # the repository is encrypted: the marker is nowhere in it
            if p.is_file():
                assert MARKER.encode() not in p.read_bytes(), p
        subprocess.run(["rm", "-rf", str(pgs.data)], check=True)  # the server's data is lost
        r = _cli(tmp_path, "restore", "--pg", "--yes", **env)
        assert r.returncode == 0 and "start PostgreSQL to recover" in r.stdout, r.stdout + r.stderr
        assert "not audited yet" in r.stdout  # in place, the database is down: the record waits for it
        t0 = time.monotonic()
        pgs.start()
        with pgs.connect("aitrade", "aitrade_platform") as c:
            while c.execute("SELECT pg_is_in_recovery()").fetchone()[0] and time.monotonic() - t0 < 120:
                time.sleep(0.5)
            newest = c.execute("SELECT max(ts) FROM canary").fetchone()[0]
        loss = (last - newest).total_seconds()
        print(
            f"\nPostgreSQL: canary every 1 s, archive_timeout 30 s, SIGKILL, data directory lost, pgBackRest restore "
            f"to latest: data loss {loss:.1f} s ({len(written)} canaries written)"
        )
        assert 0 <= loss <= 60

        r = _cli(tmp_path, "drill", "--pg", **env)
        print(r.stdout)
        assert r.returncode == 0 and "PASSED" in r.stdout and "RTO" in r.stdout, r.stdout + r.stderr
        assert re.search(r"\((1\d\d|[2-9]\d\d|\d{4,})\.\d MB", r.stdout), r.stdout  # >= 100 MB restored
        assert "audit record 1 present, same hash" in r.stdout, r.stdout
        store.dispose_engines()
        with store.session_scope() as s:
            recs = audit.query(s, action="backup.", limit=10)
            actions = [x.action for x in recs]
            assert actions[0] == "backup.drill" and "backup.create" in actions, actions
            restore = next(
                x for x in recs if x.action == "backup.restore"
            )  # the in-place restore, once it could
            assert (
                restore.after["into"] == str(pgs.data) and "at" in restore.after and restore.seq < recs[0].seq
            )

        # point in time: restore to the moment of a canary in the middle, into a scratch server
        target = written[len(written) // 2]
        pitr = pgs.root / "pitr"
        pg.restore(to_time=target, into=str(pitr), archive_mode_off=True)
        port = free_port()
        opts = f"-p {port} -k {pgs.root} -c listen_addresses=127.0.0.1 -c archive_mode=off"
        pgs.run(
            pgs.bin / "pg_ctl",
            "-D",
            pitr,
            "-o",
            opts,
            "-w",
            "-t",
            "120",
            "-l",
            pgs.root / "pitr.log",
            "start",
        )
        try:
            import psycopg

            with psycopg.connect(host="127.0.0.1", port=port, user="aitrade_platform", password=pgs.password,
                                 dbname="aitrade", autocommit=True) as c:  # fmt: skip
                t0 = time.monotonic()
                while c.execute("SELECT pg_is_in_recovery()").fetchone()[0] and time.monotonic() - t0 < 120:
                    time.sleep(0.5)
                got = c.execute("SELECT max(ts) FROM canary").fetchone()[0]
        finally:
            pgs.run(pgs.bin / "pg_ctl", "-D", pitr, "-m", "immediate", "stop", check=False)
        print(
            f"PostgreSQL point in time: target {target.isoformat()}, newest restored canary {got.isoformat()}"
        )
        assert target - timedelta(seconds=3) <= got <= target
    finally:
        store.dispose_engines()
        pgs.close()
