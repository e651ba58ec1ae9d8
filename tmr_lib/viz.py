"""Pictures people would rather look at than read: example sheets, retrieval results.

Japanese labels render with IPAexGothic (matplotlib-fontja), so 酷似 shows as 酷似, not boxes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg",) and not _in_notebook():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib_fontja  # noqa: F401 - registers IPAexGothic as the default font

    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None and "IPKernelApp" in get_ipython().config
    except Exception:  # noqa: BLE001
        return False


def contact_sheet(competition, out: str | Path | None = None, per_category: int = 4, seed: int = 0):
    """Query -> cite examples of each category from train.csv, one row per category.

    `competition` is a Competition or a participant folder. Returns the matplotlib Figure and
    saves it as PNG when `out` is given.
    """
    from .data import CATEGORIES, Competition, load_competition
    from .preprocess import load_mark

    comp = competition if isinstance(competition, Competition) else load_competition(competition, check_images=False)
    plt = _plt()
    rng = np.random.default_rng(seed)
    cats = sorted(CATEGORIES)
    fig, axes = plt.subplots(len(cats), per_category * 2, figsize=(per_category * 2 * 1.6, len(cats) * 1.9))
    for r, cat in enumerate(cats):
        rows = comp.train[comp.train["category"] == cat]
        pick = rows.iloc[rng.permutation(len(rows))[:per_category]] if len(rows) else rows
        for j in range(per_category):
            for k, (col, tag) in enumerate((("path", "query 出願"), ("cite_path", "cite 引用"))):
                ax = axes[r, 2 * j + k]
                ax.set_xticks([])
                ax.set_yticks([])
                for s in ax.spines.values():
                    s.set_color("#bbbbbb")
                if j < len(pick):
                    ax.imshow(load_mark(pick.iloc[j][col], size=128))
                    ax.set_title(tag, fontsize=7, color="#555555")
                else:
                    ax.axis("off")
        axes[r, 0].set_ylabel(CATEGORIES[cat].replace(" ", "\n", 1), fontsize=10, rotation=0, ha="right", va="center",
                              labelpad=10)
    fig.suptitle(f"{comp.root.name}: train pairs by category (query left, its cite right)", fontsize=11)
    fig.tight_layout()
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    if not _in_notebook():
        plt.close(fig)
    return fig
