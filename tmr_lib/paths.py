"""Where the kit, its datasets and its runs live, from a notebook or a script anywhere.

    from tmr_lib.paths import kit_root, data_root, runs_root, competition_dirs
    data_dir, host_dir = competition_dirs("cpu", seed=0)   # the cpu recipe's dataset, built on first use
    out = runs_root("cpu")                                  # <kit>/runs/cpu

The kit's folder is the first folder upwards from the working directory holding
``pyproject.toml`` *and* ``tmr_lib/`` (so a notebook in ``notebooks/`` finds it, and another
project's ``pyproject.toml`` is never mistaken for it); else the source checkout the package was
installed from; else ``$TMR_HOME`` or ``~/tmr-kit`` (a notebook copied out of the kit, a
pip-installed kit). ``TMR_DATA_ROOT`` moves the datasets elsewhere (a shared disk in a workshop).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["kit_root", "data_root", "runs_root", "dataset_size", "dataset_preset", "competition_dirs",
           "default_data_dir", "cache_dir"]


def _is_kit(p: Path) -> bool:
    return (p / "pyproject.toml").is_file() and (p / "tmr_lib").is_dir()


def kit_root(start: str | os.PathLike | None = None) -> Path:
    """The kit's folder (see the module docstring)."""
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if _is_kit(p):
            return p
    installed = Path(__file__).resolve().parent.parent
    if _is_kit(installed):
        return installed
    return Path(os.environ.get("TMR_HOME") or Path.home() / "tmr-kit").expanduser().resolve()


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``root`` if given, else ``$TMR_DATA_ROOT``, else ``<kit>/data``."""
    if root:
        return Path(root).expanduser().resolve()
    env = os.environ.get("TMR_DATA_ROOT")
    return Path(env).expanduser().resolve() if env else kit_root() / "data"


def runs_root(preset: str | None = None) -> Path:
    """``<kit>/runs`` (git-ignored), or ``<kit>/runs/<recipe>``: where runs write models and files."""
    runs = kit_root() / "runs"
    return runs / preset if preset else runs


def dataset_size(recipe: str) -> str:
    """The dataset size a recipe trains on by default (``Config.dataset``: ci -> ci, cpu and gpu -> cpu)."""
    from .config import PRESETS

    if recipe not in PRESETS:
        raise ValueError(f"unknown preset (recipe) {recipe!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[recipe].dataset


dataset_preset = dataset_size  # the name before recipes and sizes were told apart


def default_data_dir(recipe_or_size: str, seed: int = 0, root: str | os.PathLike | None = None) -> Path:
    """``<data root>/tmr-<size>`` (``-seed<N>`` for a seed other than 0) for a recipe or a size."""
    from .config import DATASET_SIZES, PRESETS

    size = dataset_size(recipe_or_size) if recipe_or_size in PRESETS else recipe_or_size
    if size not in DATASET_SIZES:
        raise ValueError(f"unknown dataset size {size!r}; choose one of {', '.join(DATASET_SIZES)}")
    return data_root(root) / (f"tmr-{size}" + (f"-seed{seed}" if seed else ""))


def competition_dirs(preset: str, seed: int = 0, root: str | os.PathLike | None = None,
                     progress: bool = True) -> tuple[Path, Path]:
    """(participant folder, host folder) of a recipe's competition, built on first use
    (:func:`default_data_dir`: the same folder notebook 00 and ``make demo`` use)."""
    from .builder import ensure_dataset

    return ensure_dataset(dataset_size(preset), out=default_data_dir(preset, seed, root), seed=seed,
                          progress=progress)


def cache_dir(data_dir: str | os.PathLike) -> Path:
    """The folder of decoded images and embeddings the pipeline caches for a participant folder
    (beside it, never inside it: the participant folder is handed out as it is)."""
    data = Path(data_dir).resolve()
    return data.parent / ".tmr_cache" / data.name
