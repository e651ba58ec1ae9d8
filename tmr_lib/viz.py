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


# ----------------------------------------------------------------------------------------
# Small pictures for the notebooks
# ----------------------------------------------------------------------------------------
def as_image_array(mark, size: int | None = 128) -> np.ndarray:
    """Anything a notebook holds as a mark -> an array ``imshow`` draws (H, W, 3) or (H, W).

    Accepts a file path (read as every stage reads it: trimmed, padded to a white square,
    resized to ``size``), a PIL image, a numpy array (H, W), (H, W, 3) or (3, H, W), or a torch
    tensor (3, H, W) / (1, H, W) / (H, W), uint8 (0-255) or float (0-1).
    """
    from PIL import Image

    if isinstance(mark, (str, Path)):
        from .preprocess import load_mark

        return np.asarray(load_mark(mark, size=size))
    if isinstance(mark, Image.Image):
        from .preprocess import to_rgb

        return np.asarray(mark if mark.mode in ("L", "RGB") else to_rgb(mark))  # transparent -> white paper
    if hasattr(mark, "detach"):  # a torch tensor
        mark = mark.detach().cpu().numpy()
    arr = np.asarray(mark)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"cannot draw an array of shape {arr.shape} as an image")
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0.0, 1.0) if np.issubdtype(arr.dtype, np.floating) else np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def show_marks(marks, titles=None, size: int = 128, ncols: int | None = None, cell: float = 1.6,
               suptitle: str | None = None, out: str | Path | None = None, frame_colours=None):
    """A row (or grid, with ``ncols``) of marks with small titles; returns the Figure.

    ``marks``: paths, PIL images, arrays or tensors (see :func:`as_image_array`); ``titles``:
    one string per mark (Japanese is fine); ``frame_colours``: an optional colour per mark for
    its frame (e.g. green for a correct cite). Saved as PNG when ``out`` is given.
    """
    marks = list(marks)
    if not marks:
        raise ValueError("show_marks needs at least one mark")
    titles = list(titles) if titles is not None else [None] * len(marks)
    if len(titles) != len(marks):
        raise ValueError(f"{len(titles)} titles for {len(marks)} marks")
    plt = _plt()
    ncols = min(len(marks), ncols or len(marks))
    nrows = -(-len(marks) // ncols)
    has_titles = any(t for t in titles)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, (cell + (0.35 if has_titles else 0)) * nrows
                                                    + (0.4 if suptitle else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(marks):
            ax.axis("off")
            continue
        arr = as_image_array(marks[i], size)
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255 if arr.dtype == np.uint8 else 1)
        if titles[i]:
            ax.set_title(str(titles[i]), fontsize=8)
        colour = frame_colours[i] if frame_colours is not None else None
        for s in ax.spines.values():
            s.set_color(colour or "#bbbbbb")
            s.set_linewidth(2.5 if colour else 0.8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return _finish(fig, out)


def plot_embedding_2d(embeddings, labels, ax=None, title: str | None = None, names=None, thumbnails=None,
                      centres=None, cmap: str = "tab10", marker: str = "o", alpha: float = 0.6,
                      out: str | Path | None = None):
    """Points of a 2-D embedding coloured by label, on the unit circle they live on.

    ``embeddings`` (N, 2) (unit vectors for the kit's losses; others are drawn where they are),
    ``labels`` (N,) ints. ``names``: label -> legend text. ``thumbnails``: label -> a mark (path,
    image or array) drawn just outside the circle in the direction of that label's mean.
    ``centres`` (C, 2): class weight vectors (ArcFace) drawn as arrows in the label's colour.
    Draws into ``ax`` when given (several panels side by side), else into a new figure; returns
    the Figure.
    """
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    emb = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings, dtype=float)
    lab = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if emb.ndim != 2 or emb.shape[1] != 2:
        raise ValueError(f"plot_embedding_2d draws (N, 2) embeddings, got shape {emb.shape}")
    if len(lab) != len(emb):
        raise ValueError(f"{len(lab)} labels for {len(emb)} points")
    plt = _plt()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(4.2, 4.2))
    fig = ax.figure
    colours = plt.get_cmap(cmap)
    uniq = list(dict.fromkeys(lab.tolist()))
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color="#cccccc", lw=1, zorder=0)
    for j, c in enumerate(sorted(uniq)):
        pts = emb[lab == c]
        colour = colours(j % colours.N)
        label = names.get(c, str(c)) if isinstance(names, dict) else (names[c] if names is not None else str(c))
        ax.scatter(pts[:, 0], pts[:, 1], s=14, color=colour, alpha=alpha, marker=marker, label=label,
                   edgecolors="none")
        if centres is not None and c < len(centres):
            w = np.asarray(centres[c], dtype=float)
            w = w / (np.linalg.norm(w) or 1.0)
            ax.annotate("", xy=(w[0] * 0.95, w[1] * 0.95), xytext=(0, 0),
                        arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.5))
        if thumbnails is not None and c in (thumbnails if isinstance(thumbnails, dict) else range(len(thumbnails))):
            mean = pts.mean(axis=0)
            direction = mean / (np.linalg.norm(mean) or 1.0)
            arr = as_image_array(thumbnails[c], 48)
            box = OffsetImage(arr, zoom=0.42, cmap="gray" if arr.ndim == 2 else None)
            ax.add_artist(AnnotationBbox(box, direction * 1.32, frameon=True, pad=0.1,
                                         bboxprops=dict(edgecolor=colour, lw=1.5)))
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.6, 1.6)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if own:
        fig.tight_layout()
        return _finish(fig, out)
    return fig
