"""A notebook's first cell: the recipe, its competition and the folders, found from anywhere.

    from tmr_lib.session import start
    kit = start("04")      # recipe from $TMR_PRESET (ci / cpu / gpu, default cpu); data built on first use

``kit.recipe``, ``kit.cfg`` (the recipe's :class:`tmr_lib.config.Config`), ``kit.data_dir`` and
``kit.host_dir`` (its competition, :func:`tmr_lib.paths.competition_dirs`), ``kit.comp``,
``kit.store`` and ``kit.answers`` (loaded on first use), ``kit.out`` (``runs/<recipe>/<name>``,
where the notebook writes). ``start(seed=1)`` uses the competition of another seed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Session", "start"]


@dataclass
class Session:
    recipe: str
    seed: int
    cfg: Any
    data_dir: Path
    host_dir: Path
    out: Path
    _loaded: dict = field(default_factory=dict, repr=False)

    @property
    def comp(self):
        """The competition (train, test, cite frames), images checked once."""
        if "comp" not in self._loaded:
            from .data import load_competition

            self._loaded["comp"] = load_competition(self.data_dir)
        return self._loaded["comp"]

    @property
    def store(self):
        """Every image of the competition decoded at the recipe's size (cached on disk)."""
        if "store" not in self._loaded:
            from .images import image_store

            self._loaded["store"] = image_store(self.cfg, self.comp, progress=False)
        return self._loaded["store"]

    @property
    def answers(self):
        """The host's answers (a teaching kit scores every step on the test queries)."""
        if "answers" not in self._loaded:
            from .data import load_answers

            self._loaded["answers"] = load_answers(self.host_dir)
        return self._loaded["answers"]

    def config(self, **changes: Any):
        """The recipe with some fields changed (``None`` values are left at the recipe's)."""
        return self.cfg.replace(**{k: v for k, v in changes.items() if v is not None})

    def __str__(self) -> str:
        from .paths import kit_root

        return (f"recipe {self.recipe!r} (dataset size {self.cfg.dataset}, seed {self.seed}); kit {kit_root()}\n"
                f"data {self.data_dir}\nwrites to {self.out}")


def start(name: str = "", recipe: str | None = None, seed: int = 0, progress: bool = True,
          quiet: bool = False) -> Session:
    """The notebook's recipe, competition (built on first use, then reused) and output folder."""
    from .config import get_config
    from .paths import competition_dirs, runs_root

    recipe = recipe or os.environ.get("TMR_PRESET") or "cpu"
    cfg = get_config(recipe, seed=seed)
    data_dir, host_dir = competition_dirs(recipe, seed=seed, progress=progress)
    out = runs_root(recipe) / name if name else runs_root(recipe)
    out.mkdir(parents=True, exist_ok=True)
    s = Session(recipe, seed, cfg, data_dir, host_dir, out)
    if not quiet:
        print(s)
    return s
