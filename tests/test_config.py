"""Settings: file, environment, secrets file, validation at start-up, `aitrade config show`."""

import json

import pytest
from hubutil import run_cli

from aitrade import config


def test_defaults_are_the_embedded_platform(isolated_settings):
    s = config.get_settings()
    assert s.database.url == "sqlite:///var/aitrade.db"
    assert s.database_url == f"sqlite:///{isolated_settings.parent}/var/aitrade.db"
    assert s.redis.url == "" and s.dask.address == "" and s.compute.backend == "auto"
    assert s.source("risk", "var_confidence") == "default"


def test_repo_settings_ini_documents_every_key(monkeypatch):
    "settings.ini holds every section and key, each preceded by a comment."
    from pathlib import Path

    monkeypatch.delenv("AITRADE_ACCOUNTS__SERVICE_ACCOUNT")  # the suite's single-account mode (conftest.py)

    lines = (Path(__file__).parents[1] / "settings.ini").read_text().splitlines()
    seen = {}
    section = None
    for i, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            key = line.split("=")[0].strip()
            j = i - 1
            while j >= 0 and lines[j].startswith("#") is False and "=" in lines[j]:
                j -= 1
            assert lines[j].startswith("#"), f"[{section}] {key} has no comment"
            seen.setdefault(section, set()).add(key)
    for name, model in config.SECTIONS.items():
        expected = {k for k, f in model.model_fields.items() if f.annotation is not config.SecretStr}
        assert seen.get(name) == expected, name
    s = config.load_settings(Path(__file__).parents[1] / "settings.ini")
    for name, model in config.SECTIONS.items():
        assert getattr(s, name) == model(), f"settings.ini [{name}] should show the defaults"


@pytest.mark.parametrize(
    "section,key,value,reason",
    [
        ("risk", "var_confidence", "1.5", "less than 1"),
        ("dask", "n_workers", "two", "valid integer"),
        ("hub", "port", "70000", "less than or equal to 65535"),
        ("database", "url", "mysql://x", "sqlite:/// or postgresql"),
        ("api", "rate_limit", "lots", "not a rate in the limits notation"),
        ("api", "max_body_bytes", "10", "greater than or equal to 1024"),
        ("logging", "level", "LOUD", "DEBUG"),
        ("compute", "backend", "tpu", "auto"),
    ],
)
def test_bad_value_stops_startup_naming_section_and_key(isolated_settings, section, key, value, reason):
    isolated_settings.write_text(f"[{section}]\n{key} = {value}\n")
    with pytest.raises(config.ConfigError) as e:
        config.load_settings()
    assert (e.value.section, e.value.key) == (section, key)
    assert reason in e.value.reason
    r = run_cli("config", "show", env={"AITRADE_SETTINGS": str(isolated_settings)})
    assert r.returncode == 2
    assert f"invalid setting [{section}] {key}" in r.stderr and reason in r.stderr
    assert str(isolated_settings) in r.stderr


def test_unknown_section_and_key_are_refused(isolated_settings):
    isolated_settings.write_text("[risk]\nmax_los = 1\n")
    with pytest.raises(config.ConfigError, match=r"\[risk\] max_los .*unknown key"):
        config.load_settings()
    isolated_settings.write_text("[riks]\nx = 1\n")
    with pytest.raises(config.ConfigError, match=r"\[riks\].*unknown section"):
        config.load_settings()


def test_environment_overrides_file_and_is_named_as_source(isolated_settings, monkeypatch):
    isolated_settings.write_text("[risk]\nmax_data_age_seconds = 60\n[dask]\nn_workers = 4\n")
    monkeypatch.setenv("AITRADE_RISK__MAX_DATA_AGE_SECONDS", "30")
    monkeypatch.setenv("AITRADE_DASK_ADDRESS", "tcp://10.0.0.5:8786")
    s = config.reload_settings()
    assert s.risk.max_data_age_seconds == 30 and s.dask.n_workers == 4
    assert s.dask.address == "tcp://10.0.0.5:8786"
    assert s.source("risk", "max_data_age_seconds") == "environment AITRADE_RISK__MAX_DATA_AGE_SECONDS"
    assert s.source("dask", "n_workers") == f"file {isolated_settings}"
    assert s.source("dask", "address") == "environment AITRADE_DASK_ADDRESS"
    monkeypatch.setenv("AITRADE_RISK__VAR_CONFIDENCE", "2")
    with pytest.raises(config.ConfigError) as e:
        config.reload_settings()
    assert e.value.source == "environment AITRADE_RISK__VAR_CONFIDENCE"


def test_secrets_file_must_be_0600_and_hold_only_secrets(tmp_path, monkeypatch):
    sec = tmp_path / "secrets.ini"
    sec.write_text("[hub]\noidc_client_secret = topsecret\n")
    sec.chmod(0o644)
    monkeypatch.setenv("AITRADE_SECRETS_FILE", str(sec))
    with pytest.raises(config.ConfigError, match="too open"):
        config.reload_settings()
    sec.chmod(0o600)
    s = config.reload_settings()
    assert s.hub.oidc_client_secret.get_secret_value() == "topsecret"
    rows = {(r["section"], r["key"]): r for r in config.effective_settings(s)}
    assert rows[("hub", "oidc_client_secret")]["value"] == "********"
    assert rows[("hub", "oidc_client_secret")]["source"] == f"secrets file {sec}"
    sec.write_text("[hub]\nport = 9000\n")
    with pytest.raises(config.ConfigError, match="only secret keys"):
        config.reload_settings()


def test_config_show_masks_secrets_and_names_sources(isolated_settings):
    isolated_settings.write_text("[risk]\nvar_horizon_days = 10\n")
    env = {
        "AITRADE_SETTINGS": str(isolated_settings),
        "AITRADE_DATABASE__URL": "postgresql+psycopg://ops:pa55word@db.internal:5432/aitrade",
        "AITRADE_HUB__OIDC_CLIENT_SECRET": "abc",
    }
    r = run_cli("config", "show", "--json", env=env)
    assert r.returncode == 0, r.stderr
    rows = {(x["section"], x["key"]): x for x in json.loads(r.stdout)}
    assert "pa55word" not in r.stdout and "abc" not in {x["value"] for x in rows.values()}
    assert rows[("database", "url")]["value"] == "postgresql+psycopg://ops:***@db.internal:5432/aitrade"
    assert rows[("database", "url")]["source"] == "environment AITRADE_DATABASE__URL"
    assert rows[("risk", "var_horizon_days")]["value"] == "10"
    assert rows[("risk", "var_horizon_days")]["source"] == f"file {isolated_settings}"
    assert rows[("dask", "n_workers")]["source"] == "default"
    r = run_cli("config", "show", env=env)
    assert r.returncode == 0 and "risk.var_horizon_days" in r.stdout and "pa55word" not in r.stdout
