"""Where a model fails: the missed queries as a table and as a picture to discuss (notebook 06).

    from tmr_lib.gallery import failure_table, plot_failures
    table = failure_table(ranked, answers, deep=ranked_200)     # one row per test query
    plot_failures(comp, ranked, answers, deep=ranked_200, n=6)  # query | correct cite | what came instead

``ranked``: test gid -> ranked cite gids (a submission as a dict); ``answers``: the host's answers
(:func:`tmr_lib.data.load_answers`: gid, cite_gids, category). ``deep`` (optional): the same
queries searched deeper (say the top 200), to tell a near miss (the correct cite at rank 23)
from a lost cause (not in the top 200).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["failure_table", "plot_failures"]


def _first_ranks(ranked: dict, answers: pd.DataFrame) -> np.ndarray:
    """1-based rank of the first correct cite of each answers row in ``ranked`` (0 = not found)."""
    from .metrics import hit_matrix

    lists = [list(ranked.get(g, [])) for g in answers["gid"]]
    hits, _ = hit_matrix(lists, answers["cite_gids"].tolist())
    if hits.shape[1] == 0:
        return np.zeros(len(lists), dtype=int)
    return np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)


def failure_table(ranked: dict, answers: pd.DataFrame, k: int = 20, deep: dict | None = None) -> pd.DataFrame:
    """One row per answered query: gid, category, rank (of the first correct cite; 0 = none), found.

    With ``deep`` (a deeper search of the same queries) the column ``deep_rank`` says where the
    correct cite was beyond the top ``k`` (0 = not even there). Missed queries come first,
    near misses (small deep_rank) before lost causes.
    """
    from .data import CATEGORIES

    ranks = _first_ranks({g: list(v)[:k] for g, v in ranked.items()}, answers)
    df = pd.DataFrame({"gid": answers["gid"].astype(str).to_numpy(),
                       "category": answers["category"].astype(int).to_numpy(),
                       "rank": ranks, "found": ranks > 0})
    df["category_name"] = df["category"].map(CATEGORIES)
    df["n_correct"] = [len(c) for c in answers["cite_gids"]]
    order = ["found"]
    if deep is not None:
        df["deep_rank"] = _first_ranks(deep, answers)
        df["_lost"] = df["deep_rank"] == 0
        order = ["found", "_lost", "deep_rank"]
    df = df.sort_values(order, kind="stable").drop(columns=["_lost"], errors="ignore")
    return df.reset_index(drop=True)


def plot_failures(competition, ranked: dict, answers: pd.DataFrame, gids=None, n: int = 6, show: int = 6,
                  k: int = 20, deep: dict | None = None, one_per_category: bool = True, thumb: int = 96,
                  out: str | Path | None = None):
    """Missed queries, one per row: the query (blue), its correct cite (green, dashed), then what the
    model proposed instead (its top ``show``, grey), so a group can discuss *why* it failed.

    ``gids`` picks the queries (default: ``n`` misses from :func:`failure_table`, one of each
    category first when ``one_per_category``). Returns the Figure (saved when ``out`` is given);
    a figure saying "no misses" when there are none.
    """
    from .data import CATEGORIES, Competition, load_competition
    from .preprocess import load_mark
    from .viz import _finish, _plt

    comp = competition if isinstance(competition, Competition) else load_competition(competition, check_images=False)
    plt = _plt()
    table = failure_table(ranked, answers, k=k, deep=deep)
    misses = table[~table["found"]]
    if gids is None:
        picked: list[str] = []
        if one_per_category:
            for cat in sorted(misses["category"].unique()):
                picked.append(misses[misses["category"] == cat]["gid"].iloc[0])
        picked += [g for g in misses["gid"] if g not in picked]
        gids = picked[:n]
    gids = [str(g) for g in gids]
    if not gids:
        fig, ax = plt.subplots(figsize=(6, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, f"no misses: every query has a correct cite in its top {k}", ha="center", va="center")
        return _finish(fig, out)
    info = table.set_index("gid")
    truth = {str(g): list(c) for g, c in zip(answers["gid"], answers["cite_gids"])}
    cite_path = dict(zip(comp.cite["gid"].astype(str), comp.cite["path"]))
    query_path = dict(zip(comp.test["gid"].astype(str), comp.test["path"]))
    query_path.update(zip(comp.train["gid"].astype(str), comp.train["path"]))
    cols = 2 + 1 + show  # query, correct cite, a gap, the proposals
    fig, axes = plt.subplots(len(gids), cols, figsize=(cols * 1.15, len(gids) * 1.75 + 0.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 0.25] + [1] * show})
    for r, gid in enumerate(gids):
        row = axes[r]
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[2].axis("off")
        cat = int(info.loc[gid, "category"]) if gid in info.index else None
        row[0].imshow(load_mark(query_path[gid], size=thumb))
        row[0].set_title(f"query 出願\n{CATEGORIES.get(cat, '').split(' ')[0]}", fontsize=7)
        _frame(row[0], "#1f77b4", 2.5)
        correct = [c for c in truth.get(gid, []) if c in cite_path]
        if correct:
            row[1].imshow(load_mark(cite_path[correct[0]], size=thumb))
        where = ""
        if deep is not None and gid in info.index:
            d = int(info.loc[gid, "deep_rank"])
            where = f"rank {d}" if d else f"not in top {max(len(v) for v in deep.values())}"
        more = f" (+{len(correct) - 1})" if len(correct) > 1 else ""
        row[1].set_title(f"correct 正解{more}\n{where}".rstrip(), fontsize=7, color="#2ca02c")
        _frame(row[1], "#2ca02c", 2.5, "--")
        for j, cid in enumerate(list(ranked.get(gid, []))[:show]):
            ax = row[3 + j]
            if cid in cite_path:
                ax.imshow(load_mark(cite_path[cid], size=thumb))
            ax.set_title(f"#{j + 1}", fontsize=7, color="#888888")
            _frame(ax, "#cccccc", 0.6)
        for j in range(len(list(ranked.get(gid, []))[:show]), show):
            row[3 + j].axis("off")
    fig.suptitle(f"missed queries: the correct cite (green) and the model's top {show} instead", fontsize=9)
    fig.tight_layout(pad=0.3, h_pad=1.2, w_pad=0.2, rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return _finish(fig, out)


def _frame(ax, colour: str, width: float, style: str = "-") -> None:
    for s in ax.spines.values():
        s.set_color(colour)
        s.set_linewidth(width)
        s.set_linestyle(style)
