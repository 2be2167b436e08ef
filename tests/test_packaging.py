"""Packaging: every dependency has a version range, environment.yml mirrors pyproject.toml, layout is complete."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_dependency_has_a_version_range():
    deps = PROJECT["dependencies"] + [d for ds in PROJECT["optional-dependencies"].values() for d in ds]
    for d in deps:
        assert re.search(r"(>=|~=|==)[\d.]+", d) and ("<" in d or "==" in d or "~=" in d), (
            f"{d}: give a version range"
        )
    assert PROJECT["requires-python"] == ">=3.11"
    assert {"dev", "gpu", "bench"} <= set(PROJECT["optional-dependencies"])


def test_environment_yml_mirrors_pyproject():
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "envyml.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout


def test_top_level_layout():
    for p in [
        "nbs",
        "aitrade",
        "dashboards",
        "jobs",
        "hub",
        "tests",
        "bench",
        "settings.ini",
        "pyproject.toml",
        "environment.yml",
        "Makefile",
        "README.md",
        "LICENSE",
        ".ci/run",
    ]:
        assert (ROOT / p).exists(), p
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    for d in ["dashboards", "jobs", "hub", "bench"]:
        files = [f for f in (ROOT / d).iterdir() if not f.name.startswith(".")]
        assert files, f"{d}/ is empty: it needs a README saying what goes there"


def test_readme_role_table_matches_the_rights():
    "The README's role x scope table is what aitrade.auth and aitrade.hub actually grant."
    from aitrade.auth import RIGHTS, ROLES
    from aitrade.hub import SERVER_ROLES

    readme = (ROOT / "README.md").read_text()
    roles = list(ROLES)
    assert "| scope (`custom:aitrade:` + right) | " + " | ".join(roles) + " |" in readme
    for r in RIGHTS:
        assert f"| `{r}` | " + " | ".join("✓" if r in ROLES[x] else "" for x in roles) + " |" in readme, r
    assert (
        "| JupyterLab server (`servers!user`) | "
        + " | ".join("✓" if x in SERVER_ROLES else "" for x in roles)
        in readme
    )
