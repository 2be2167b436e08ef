"""Store: migrations up/down/current on SQLite and PostgreSQL; SQLite tuning; UTC timestamps."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from aitrade import store


def tables(url):
    return set(sa.inspect(store.get_engine(url)).get_table_names())


def test_migrations_up_down_current(db_url):
    assert store.current(db_url) is None
    store.upgrade(url=db_url)
    assert store.current(db_url) == store.head()
    assert {"audit_log", "audit_head", "alembic_version"} <= tables(db_url)
    store.downgrade("base", url=db_url)
    store.dispose_engines()
    assert store.current(db_url) is None
    assert not ({"audit_log", "audit_head"} & tables(db_url))
    store.upgrade(url=db_url)
    assert store.current(db_url) == store.head()


def test_sqlite_is_wal_with_foreign_keys(tmp_path):
    url = f"sqlite:///{tmp_path}/x.db"
    with store.get_engine(url).connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000


def test_default_database_is_a_sqlite_file_under_var(isolated_settings):
    store.upgrade()
    assert (isolated_settings.parent / "var" / "aitrade.db").is_file()
    assert store.current() == store.head()


def test_one_engine_and_factory_per_url(db_url):
    assert store.get_engine(db_url) is store.get_engine(db_url)
    assert store.session_factory(db_url) is store.session_factory(db_url)


def test_session_scope_rolls_back_on_error(db):
    with pytest.raises(RuntimeError), store.session_scope() as s:
        s.execute(sa.text("CREATE TABLE t_rollback (x integer)"))
        s.execute(sa.text("INSERT INTO t_rollback VALUES (1)"))
        raise RuntimeError("boom")
    insp = sa.inspect(store.get_engine())
    if store.get_engine().dialect.name == "postgresql":  # transactional DDL: the table is gone too
        assert "t_rollback" not in insp.get_table_names()


def test_utc_datetime_roundtrip(db):
    meta = sa.MetaData()
    t = sa.Table(
        "t_times", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("at", store.UTCDateTime())
    )
    meta.create_all(store.get_engine())
    local = datetime(2026, 3, 9, 9, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-4)))
    with store.session_scope() as s:
        s.execute(t.insert().values(id=1, at=local))
    with store.session_scope() as s:
        got = s.execute(sa.select(t.c.at)).scalar_one()
    assert got == local and got.tzinfo == UTC and got.hour == 13
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), store.session_scope() as s:
        s.execute(t.insert().values(id=2, at=datetime(2026, 3, 9)))
