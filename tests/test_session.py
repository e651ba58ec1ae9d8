"""A notebook's first cell (tmr_lib.session.start) and the one recipe -> dataset-size mapping."""
from __future__ import annotations

from pathlib import Path

import pytest

from tmr_lib import paths
from tmr_lib.config import PRESETS, get_config


def test_each_recipe_names_its_dataset_size_in_one_place():
    assert {name: cfg.dataset for name, cfg in PRESETS.items()} == {"ci": "ci", "cpu": "cpu", "gpu": "cpu"}
    assert paths.dataset_size("gpu") == "cpu"
    assert paths.default_data_dir("gpu", root="/x") == Path("/x/tmr-cpu").resolve()
    assert paths.default_data_dir("full", root="/x") == Path("/x/tmr-full").resolve()  # a size, not a recipe
    assert paths.default_data_dir("ci", seed=2, root="/x").name == "tmr-ci-seed2"
    with pytest.raises(ValueError, match="dataset size"):
        paths.default_data_dir("huge")


def test_start_finds_the_recipes_competition_and_makes_its_folder(ci_dataset, monkeypatch, tmp_path, capsys):
    from tmr_lib.session import start

    data, host = ci_dataset
    monkeypatch.setenv("TMR_DATA_ROOT", str(Path(data).parent))
    monkeypatch.setenv("TMR_PRESET", "ci")
    monkeypatch.chdir(tmp_path)  # a notebook opened from a copy outside the kit
    kit = start("04_test")
    assert kit.recipe == "ci" and kit.cfg == get_config("ci")
    assert (kit.data_dir, kit.host_dir) == (Path(data).resolve(), Path(host).resolve())
    assert kit.out == paths.kit_root() / "runs" / "ci" / "04_test" and kit.out.is_dir()
    assert len(kit.answers) == len(kit.comp.test) and kit.store.size == kit.cfg.image_size
    assert kit.config(epochs=3, lr=None).epochs == 3 and kit.config(lr=None).lr == kit.cfg.lr
    assert "recipe 'ci'" in capsys.readouterr().out


def test_kit_root_ignores_another_projects_pyproject(tmp_path, monkeypatch):
    other = tmp_path / "their-project"
    (other / "notebooks").mkdir(parents=True)
    (other / "pyproject.toml").write_text("[project]\nname = 'theirs'\n")
    kit = Path(paths.__file__).resolve().parent.parent
    assert paths.kit_root(other / "notebooks") == kit  # never their folder: no second dataset there


def test_kit_root_without_a_source_checkout_uses_tmr_home(tmp_path, monkeypatch):
    fake = tmp_path / "site-packages" / "tmr_lib" / "paths.py"
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(paths, "__file__", str(fake))
    monkeypatch.setenv("TMR_HOME", str(tmp_path / "home-kit"))
    assert paths.kit_root(tmp_path) == (tmp_path / "home-kit").resolve()
