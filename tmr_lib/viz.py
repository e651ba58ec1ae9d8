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


def _finish(fig, out: str | Path | None):
    """Save the figure when asked; outside a notebook close it (scripts must not pile figures up)."""
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    if not _in_notebook():
        _plt().close(fig)
    return fig


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
    return _finish(fig, out)


def plot_retrieval(competition, ranked: dict, answers=None, out: str | Path | None = None, n_queries: int = 5,
                   k: int = 20, gids=None, seed: int = 0, thumb: int = 96):
    """Queries (left, blue frame) with their top-``k`` cites; correct hits framed green.

    ``ranked``: test gid -> ranked cite gids (a submission as a dict). ``answers``: the host's
    answers (DataFrame gid, cite_gids, category) to frame the hits and name the category;
    without them nothing is framed. ``gids`` picks the queries (default: ``n_queries`` at
    random, one per category first). Returns the Figure; saved as PNG when ``out`` is given.
    """
    from .data import CATEGORIES, Competition, load_competition
    from .preprocess import load_mark

    comp = competition if isinstance(competition, Competition) else load_competition(competition, check_images=False)
    plt = _plt()
    cite_path = dict(zip(comp.cite["gid"], comp.cite["path"]))
    test_path = dict(zip(comp.test["gid"], comp.test["path"]))
    truth: dict[str, set[str]] = {}
    category: dict[str, int] = {}
    if answers is not None:
        truth = {g: set(c) for g, c in zip(answers["gid"], answers["cite_gids"])}
        category = dict(zip(answers["gid"], answers["category"]))
    if gids is None:
        rng = np.random.default_rng(seed)
        pool = [g for g in comp.test["gid"] if g in ranked]
        pool = [pool[i] for i in rng.permutation(len(pool))]
        gids = []
        for cat in sorted(set(category.values())):  # one query of each category first
            first = next((g for g in pool if category.get(g) == cat and g not in gids), None)
            if first is not None:
                gids.append(first)
        gids += [g for g in pool if g not in gids]
        gids = gids[:n_queries]
    gids = list(gids)
    cols = k + 1
    fig, axes = plt.subplots(len(gids), cols, figsize=(cols * 0.85, len(gids) * 1.05 + 0.5), squeeze=False)
    for r, gid in enumerate(gids):
        hits = truth.get(gid, set())
        ids = list(ranked[gid])[:k]
        found = [i for i, c in enumerate(ids) if c in hits]
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.imshow(load_mark(test_path[gid], size=thumb))
                colour, width = "#1f77b4", 2.5
                label = CATEGORIES.get(category.get(gid), "").split(" ")[0]
                rank = f" · hit @{found[0] + 1}" if found else (" · miss" if hits else "")
                ax.set_title(f"{label}{rank}", fontsize=6.5, color="#2ca02c" if found else "#d62728" if hits else "black")
            elif c - 1 < len(ids):
                cid = ids[c - 1]
                if cid in cite_path:
                    ax.imshow(load_mark(cite_path[cid], size=thumb))
                hit = cid in hits
                colour, width = ("#2ca02c", 3.0) if hit else ("#cccccc", 0.6)
                ax.set_title(str(c), fontsize=6, color="#2ca02c" if hit else "#888888")
            else:
                ax.axis("off")
                continue
            for s in ax.spines.values():
                s.set_color(colour)
                s.set_linewidth(width)
    fig.suptitle(f"{comp.root.name}: test queries and their top-{k} (correct cites framed green)", fontsize=9)
    fig.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.2, rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return _finish(fig, out)
