"""tmr_lib.paths: the notebooks find the kit, its data and its runs from any working directory."""
from pathlib import Path

import pytest

from tmr_lib import paths


def test_kit_root_from_the_notebooks_folder_and_from_elsewhere(tmp_path):
    kit = Path(paths.__file__).resolve().parent.parent
    assert paths.kit_root(kit / "notebooks") == kit
    assert paths.kit_root(kit) == kit
    assert paths.kit_root(tmp_path) == kit  # outside the kit: the installed package's kit


def test_data_and_runs_roots(monkeypatch, tmp_path):
    monkeypatch.chdir(paths.kit_root())
    monkeypatch.delenv("TMR_DATA_ROOT", raising=False)
    assert paths.data_root() == paths.kit_root() / "data"
    monkeypatch.setenv("TMR_DATA_ROOT", str(tmp_path))
    assert paths.data_root() == tmp_path.resolve()
    assert paths.data_root(tmp_path / "x") == (tmp_path / "x").resolve()
    assert paths.runs_root("ci") == paths.kit_root() / "runs" / "ci"


def test_dataset_preset():
    assert [paths.dataset_preset(p) for p in ("ci", "cpu", "gpu")] == ["ci", "cpu", "cpu"]
    with pytest.raises(ValueError, match="preset"):
        paths.dataset_preset("huge")


def test_competition_dirs_reuses_a_built_dataset(ci_dataset, tmp_path):
    data, host = ci_dataset  # built by conftest under <tmp>/tmr-ci
    got = paths.competition_dirs("ci", root=Path(data).parent, progress=False)
    assert got == (Path(data).resolve(), Path(host).resolve())
    assert paths.cache_dir(data) == Path(data).resolve().parent / ".tmr_cache" / Path(data).name
