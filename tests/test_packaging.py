"""pyproject.toml lists its packages by hand (the repository root is the `edgekv` package): a
package missing from the list is left out of a non-editable install, as on a Jetson."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {"edgekv"} | {
        ".".join(("edgekv", *init.parent.relative_to(ROOT).parts))
        for init in ROOT.glob("*/**/__init__.py")
        if not {"tests", "build", ".venv", "venv"} & set(init.relative_to(ROOT).parts)
        and not any(part.startswith(".") or part.endswith(".egg-info")
                    for part in init.relative_to(ROOT).parts)
    } | {f"edgekv.assets.{data.name}" for data in (ROOT / "assets").iterdir() if data.is_dir()}
    assert found == listed
