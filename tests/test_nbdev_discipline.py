"""nbs/ is the source of aitrade/: a hand edit of the package, or a notebook with outputs, fails the check
and names the notebook to change."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path):
    for d in ("nbs", "aitrade", "tools"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def check(project):
    return subprocess.run(
        [sys.executable, str(project / "tools" / "nbcheck.py")], capture_output=True, text=True
    )


def test_clean_tree_passes(project):
    r = check(project)
    assert r.returncode == 0, r.stderr


def test_hand_edit_fails_naming_the_notebook(project):
    f = project / "aitrade" / "audit.py"
    f.write_text(f.read_text().replace("GENESIS_HASH = ", "GENESIS_HASH = 'x' or ", 1))
    r = check(project)
    assert r.returncode == 1
    assert "aitrade/audit.py: differs from its export; change nbs/02_audit.ipynb" in r.stderr


def test_hand_written_module_fails(project):
    (project / "aitrade" / "helpers.py").write_text("X = 1\n")
    r = check(project)
    assert r.returncode == 1 and "aitrade/helpers.py: no notebook generates it" in r.stderr


def test_notebook_with_outputs_fails(project):
    nb = project / "nbs" / "00_config.ipynb"
    d = json.loads(nb.read_text())
    cell = next(c for c in d["cells"] if c["cell_type"] == "code")
    cell["execution_count"] = 3
    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
    nb.write_text(json.dumps(d, indent=1))
    r = check(project)
    assert r.returncode == 1 and "nbs/00_config.ipynb" in r.stderr and "outputs" in r.stderr
