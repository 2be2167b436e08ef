"""Write environment.yml from pyproject.toml so conda users get the same dependencies and ranges.

    python tools/envyml.py          # rewrite environment.yml
    python tools/envyml.py --check  # exit 1 if environment.yml is out of date (run by the tests)

Runtime and dev dependencies go to conda (conda-forge names where they differ); the package itself is
installed by pip in editable mode. GPU users add `cupy` from conda-forge (the `gpu` extra on PyPI).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge name, where they differ
CONDA_NAMES = {
    "psycopg[binary]": "psycopg",
    "QuantLib": "quantlib",
    "cupy-cuda12x": "cupy",
    "dask[distributed]": "dask",
    "dask-gateway-server[local]": "dask-gateway-server-local",
    "torch": "pytorch",
    "torch_geometric": "pytorch_geometric",
}
PIP_ONLY = {
    "nbdev",
    "jupyterhub-nativeauthenticator",
    "swagger-ui-bundle-v2",
    "py-vollib-vectorized",
    "vollib",
}


def render() -> str:
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    py = proj["requires-python"].lstrip(">=")
    deps = list(proj["dependencies"]) + list(proj["optional-dependencies"].get("dev", []))
    conda, pip = [], []
    for d in deps:
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*(.*)$", d)
        name, spec = m.group(1), m.group(2).replace(" ", "")
        (pip if name in PIP_ONLY else conda).append(f"{CONDA_NAMES.get(name, name)}{spec}")
    lines = [
        "# Generated from pyproject.toml by tools/envyml.py: do not edit by hand.",
        "name: aitrade",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python>={py}",
        "  - pip",
    ]
    lines += [f"  - {d}" for d in conda]
    lines += ["  - pip:"] + [f"      - {d}" for d in pip] + ["      - -e ."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = ROOT / "environment.yml"
    if "--check" in sys.argv:
        ok = target.exists() and target.read_text() == render()
        print(
            "environment.yml is up to date"
            if ok
            else "environment.yml is out of date: run python tools/envyml.py"
        )
        sys.exit(0 if ok else 1)
    target.write_text(render())
