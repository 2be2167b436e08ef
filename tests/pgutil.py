"""A PostgreSQL server of a test's own: `initdb` into a private folder under /var/tmp, run as the `postgres` system
account on a free loopback port, with peer authentication on its Unix socket and SCRAM passwords over TCP."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from hubutil import free_port, unavailable

from aitrade import accounts


def _quote(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


class PrivatePostgres:
    "One private PostgreSQL server; `root` (owned by `postgres`) holds its data, socket, log and anything else."

    def __init__(self, what: str = "the test"):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if os.geteuid() != 0 or not bins or accounts.Account.of("postgres") is None:
            unavailable(what, "it needs root and Debian's postgresql server binaries")
        self.bin = bins[-1].parent
        self.account = accounts.Account.of("postgres")
        self.root = Path(tempfile.mkdtemp(prefix="aitrade-pg-", dir="/var/tmp"))
        os.chown(self.root, self.account.uid, self.account.gid)
        self.data, self.log = self.root / "data", self.root / "log"
        self.port, self.password = free_port(), uuid.uuid4().hex

    def run(self, *cmd, check: bool = True) -> subprocess.CompletedProcess:
        "A command as the postgres account, in the server's folder."
        a = self.account
        r = subprocess.run(
            list(map(str, cmd)),
            user=a.uid,
            group=a.gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            cwd=self.root,
        )
        assert not check or r.returncode == 0, f"{cmd[0]}: {r.stderr or r.stdout}"
        return r

    def init(self, **settings: str) -> None:
        "initdb, with `settings` appended to postgresql.conf."
        pw = self.root / "pw"
        pw.write_text(self.password)
        os.chown(pw, self.account.uid, self.account.gid)
        self.run(self.bin / "initdb", "-D", self.data, "-U", "postgres", "--auth-local=peer",
                 "--auth-host=scram-sha-256", f"--pwfile={pw}")  # fmt: skip
        with open(self.data / "postgresql.conf", "a") as f:
            for k, v in settings.items():
                f.write(f"{k} = {_quote(v)}\n")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self.run(self.bin / "pg_ctl", "-D", self.data, "-o", opts, "-w", "-t", "120", "-l", self.log, "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.run(self.bin / "pg_ctl", "-D", self.data, "-m", "fast", "stop", check=False)

    def kill(self) -> None:
        "SIGKILL the postmaster (a crash: no shutdown checkpoint) and wait until it is gone."
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # its backends notice the postmaster is gone and exit

    def connect(self, db: str = "postgres", user: str = "postgres", password: str | None = None):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=user, password=password or self.password,
                               dbname=db, autocommit=True, connect_timeout=5)  # fmt: skip

    def platform_database(self) -> str:
        "Create the role `aitrade_platform` and its database `aitrade`; the SQLAlchemy URL."
        with self.connect() as c:
            c.execute(f"CREATE ROLE aitrade_platform LOGIN PASSWORD '{self.password}'")
            c.execute("CREATE DATABASE aitrade OWNER aitrade_platform")
        return f"postgresql+psycopg://aitrade_platform:{self.password}@127.0.0.1:{self.port}/aitrade"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
