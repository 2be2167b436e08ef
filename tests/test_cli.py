"""The `aitrade` CLI: --help on every command, version, db and audit commands end to end."""

import os

import pytest
import typer
from hubutil import run_cli
from typer.testing import CliRunner

import aitrade
from aitrade.cli import app


def _all_commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _all_commands(cmd, (*prefix, name))


COMMANDS = list(_all_commands(typer.main.get_command(app)))


def test_expected_commands_exist():
    assert {
        ("version",),
        ("up",),
        ("config", "show"),
        ("db", "upgrade"),
        ("db", "downgrade"),
        ("db", "current"),
        ("audit", "verify"),
        ("audit", "list"),
    } <= set(COMMANDS)


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_has_help(cmd):
    r = CliRunner().invoke(app, [*cmd, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output and len(r.output.splitlines()) > 3


def test_version_and_db_lifecycle_from_a_project_folder(tmp_path):
    (tmp_path / "settings.ini").write_text("[logging]\n# quieter\nlevel = WARNING\n")
    assert run_cli("version", cwd=tmp_path).stdout.strip() == aitrade.__version__
    r = run_cli("db", "current", cwd=tmp_path)
    assert r.returncode == 0 and "current: base (empty)" in r.stdout
    r = run_cli("db", "upgrade", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "var" / "aitrade.db").is_file()
    head = r.stdout.split()[-1]
    assert run_cli("db", "current", cwd=tmp_path).stdout.strip() == f"current: {head}  head: {head}"
    r = run_cli("db", "downgrade", "base", cwd=tmp_path)
    assert r.returncode == 0 and "base (empty)" in r.stdout


def test_up_migrates_starts_dask_and_stops(tmp_path):
    (tmp_path / "settings.ini").write_text("[dask]\n# free ports\nscheduler_port = 0\ndashboard_port = 0\n")
    r = run_cli("up", "--no-hub", "--no-scheduler", "--exit-after", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "audit chain intact" in r.stdout and str(tmp_path / "var" / "aitrade.db") in r.stdout
    # the production cluster speaks TLS (aitrade.cluster); single-account mode, as the suite runs
    assert "dask-scheduler  tls://127.0.0.1:" in r.stdout and "dask-workers" in r.stdout
    assert "single-account mode" in r.stdout and (tmp_path / "var" / "secrets" / "dask" / "key.pem").is_file()
    assert "aitrade platform started" in r.stdout and r.stdout.rstrip().endswith("aitrade platform stopped")


def test_audit_list_shows_records(tmp_path):
    from aitrade import audit, config, store

    os.environ["AITRADE_SETTINGS"] = str(tmp_path / "settings.ini")
    (tmp_path / "settings.ini").write_text("")
    try:
        config.reload_settings()
        store.upgrade()
        with store.session_scope() as s:
            audit.append(s, "ops", "job.run", "pipeline:daily", after={"as_of": "2018-06-29"})
        store.dispose_engines()
    finally:
        del os.environ["AITRADE_SETTINGS"]
    r = run_cli("audit", "list", cwd=tmp_path)
    assert r.returncode == 0 and "job.run" in r.stdout and "pipeline:daily" in r.stdout


def test_research_role_reads_market_data_and_nothing_else(pg_url, monkeypatch):
    "PostgreSQL: `aitrade db research-role` makes a role that reads the market data, writes nothing, sees no orders."
    import uuid

    import sqlalchemy as sa
    from seed import fresh_quote

    from aitrade import config, store

    monkeypatch.setenv("AITRADE_DATABASE__URL", pg_url)
    config.reload_settings()
    store.upgrade(url=pg_url)
    fresh_quote()
    role = f"research_{uuid.uuid4().hex[:8]}"
    r = CliRunner().invoke(app, ["db", "research-role", "--role", role])
    assert r.exit_code == 0, r.output
    assert "SELECT on" in r.output and "option_quotes" in r.output
    eng = sa.create_engine(sa.make_url(pg_url).set(username=role), poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as c:
            assert c.exec_driver_sql("SELECT count(*) FROM option_quotes").scalar() == 1
        for sql, why in [
            ("SELECT count(*) FROM orders", "permission denied"),
            ("SELECT count(*) FROM audit_log", "permission denied"),
            ("SELECT count(*) FROM risk_limits", "permission denied"),
            ("DELETE FROM option_quotes", "read-only transaction"),
        ]:
            with eng.connect() as c, pytest.raises(sa.exc.DBAPIError, match=why):
                c.exec_driver_sql(sql)
    finally:
        eng.dispose()
        store.dispose_engines()
        admin = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
        with admin.begin() as c:
            c.exec_driver_sql(f'DROP OWNED BY "{role}"')
            c.exec_driver_sql(f'DROP ROLE "{role}"')
        admin.dispose()


def test_research_role_on_sqlite_says_to_use_the_api(sqlite_db):
    r = CliRunner().invoke(app, ["db", "research-role"])
    assert r.exit_code == 2 and "research reads go through the API" in r.output, r.output
