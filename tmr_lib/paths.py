"""Where the kit, its datasets and its runs live, from a notebook or a script anywhere in the kit.

    from tmr_lib.paths import kit_root, data_root, runs_root, competition_dirs
    data_dir, host_dir = competition_dirs("cpu", seed=0)   # built on first use, then reused
    out = runs_root("cpu")                                  # <kit>/runs/cpu

The notebooks run with their own folder as the working directory; these helpers find the kit
from there (the first folder upwards holding ``pyproject.toml`` and ``tmr_lib/``), so every
notebook reads and writes the same ``data/`` and ``runs/`` as the command line.
``TMR_DATA_ROOT`` moves the datasets elsewhere (a shared disk in a workshop).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["kit_root", "data_root", "runs_root", "dataset_preset", "competition_dirs", "cache_dir"]

#: pipeline preset -> the dataset it uses (the gpu preset trains on the cpu dataset)
DATASET_PRESET = {"ci": "ci", "cpu": "cpu", "gpu": "cpu", "full": "full"}


def kit_root(start: str | os.PathLike | None = None) -> Path:
    """The kit's folder: the first of ``start`` (default: the working directory) and its parents that
    holds ``pyproject.toml`` and ``tmr_lib/``; else the folder above the installed package."""
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").is_file() and (p / "tmr_lib").is_dir():
            return p
    return Path(__file__).resolve().parent.parent


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``root`` if given, else ``$TMR_DATA_ROOT``, else ``<kit>/data``."""
    if root:
        return Path(root).expanduser().resolve()
    env = os.environ.get("TMR_DATA_ROOT")
    return Path(env).expanduser().resolve() if env else kit_root() / "data"


def runs_root(preset: str | None = None) -> Path:
    """``<kit>/runs`` (git-ignored), or ``<kit>/runs/<preset>``: where runs write models and files."""
    runs = kit_root() / "runs"
    return runs / preset if preset else runs


def dataset_preset(preset: str) -> str:
    """The dataset a pipeline preset uses: ``ci`` -> ``ci``, ``cpu`` and ``gpu`` -> ``cpu``."""
    if preset not in DATASET_PRESET:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(DATASET_PRESET)}")
    return DATASET_PRESET[preset]


def competition_dirs(preset: str, seed: int = 0, root: str | os.PathLike | None = None,
                     progress: bool = True) -> tuple[Path, Path]:
    """(participant folder, host folder) of the preset's competition, built on first use.

    The folder is ``<data root>/tmr-<dataset preset>`` (``-seed<N>`` appended for a seed other
    than 0), the same as notebook 00 and ``make demo`` use.
    """
    from .builder import ensure_dataset

    name = f"tmr-{dataset_preset(preset)}" + (f"-seed{seed}" if seed else "")
    return ensure_dataset(dataset_preset(preset), out=data_root(root) / name, seed=seed, progress=progress)


def cache_dir(data_dir: str | os.PathLike) -> Path:
    """The folder of decoded images and embeddings the pipeline caches for a participant folder
    (beside it, never inside it: the participant folder is handed out as it is)."""
    from .pipeline import cache_dir as _pipeline_cache_dir

    return _pipeline_cache_dir(data_dir)
