"""Set-up files agree with each other: pyproject is the single source of dependencies."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_environment_yml_installs_the_project_from_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    deps = env["dependencies"]
    python = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert python == ["python" + _pyproject()["project"]["requires-python"].replace(" ", "")]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip == ["-e .[dev]"]
    assert "dev" in _pyproject()["project"]["optional-dependencies"]
    # nothing else is listed in environment.yml: no second source of dependencies to drift
    assert [d for d in deps if isinstance(d, str) and not d.startswith(("python", "pip"))] == []


def test_pyproject_lists_the_kits_dependencies_as_ranges():
    deps = _pyproject()["project"]["dependencies"]
    names = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in deps}
    for needed in ("torch", "torchvision", "timm", "pytorch-metric-learning", "faiss-cpu", "jupyterlab",
                   "ipywidgets", "matplotlib", "pandas", "pillow", "fontawesomefree", "resvg-py",
                   "matplotlib-fontja", "tqdm"):
        assert needed in names, needed
    for d in deps:
        if d.startswith(("torch", "torchvision")):
            assert "==" not in d, f"pin ranges, not exact versions: {d}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make test" in readme and "make demo" in readme
