"""tmr_lib.gallery: the table of missed queries and the failure gallery."""
from __future__ import annotations

import numpy as np
import pandas as pd

from tmr_lib.gallery import failure_table, plot_failures


def _answers():
    return pd.DataFrame({"gid": ["q1", "q2", "q3", "q4"],
                         "cite_gids": [["a"], ["b", "bb"], ["c"], ["d"]],
                         "category": [2, 3, 4, 5]})


def test_failure_table_ranks_and_order():
    ranked = {"q1": ["x", "a"] + [f"f{i}" for i in range(18)],  # found at rank 2
              "q2": [f"f{i}" for i in range(20)],  # missed, near miss (deep rank 23)
              "q3": [f"f{i}" for i in range(20)],  # missed, not in the deep list
              "q4": ["d"] + [f"f{i}" for i in range(19)]}  # found at rank 1
    deep = {g: v + ([f"g{i}" for i in range(2)] + ["bb"] if g == "q2" else []) for g, v in ranked.items()}
    t = failure_table(ranked, _answers(), deep=deep)
    assert list(t["gid"]) == ["q2", "q3", "q4", "q1"]  # misses first (near miss before lost cause), then by rank
    assert list(t["found"]) == [False, False, True, True]
    got = t.set_index("gid")
    assert got.loc["q1", "rank"] == 2 and got.loc["q4", "rank"] == 1 and got.loc["q2", "rank"] == 0
    assert got.loc["q2", "deep_rank"] == 23 and got.loc["q3", "deep_rank"] == 0
    assert got.loc["q2", "n_correct"] == 2 and got.loc["q3", "category_name"].startswith("色彩相違")


def test_failure_table_counts_only_the_top_k():
    ranked = {"q1": [f"f{i}" for i in range(20)] + ["a"], "q2": ["b"], "q3": [], "q4": []}
    t = failure_table(ranked, _answers(), k=20)
    assert int(t["found"].sum()) == 1  # q1's cite at rank 21 does not count


def test_plot_failures_draws_one_row_per_miss(ci_dataset):
    from tmr_lib.data import load_answers, load_competition

    data, host = ci_dataset
    comp = load_competition(data, check_images=False)
    answers = load_answers(host)
    rng = np.random.default_rng(0)
    cites = comp.cite["gid"].to_numpy()
    ranked = {g: list(rng.choice(cites, 20, replace=False)) for g in answers["gid"]}
    fig = plot_failures(comp, ranked, answers, n=4, show=5)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 4 * (2 + 5)  # query, correct cite, 5 proposals per row
    titles = [ax.get_title() for ax in fig.axes]
    assert sum(t.startswith("correct") for t in titles) == 4
    cats = {t.split("\n")[1] for t in titles if t.startswith("query")}
    assert len(cats) == min(4, answers["category"].nunique())  # one of each category first
    oracle = {g: list(c) + [x for x in cites[:20] if x not in c][: 20 - len(c)]
              for g, c in zip(answers["gid"], answers["cite_gids"])}
    fig = plot_failures(comp, oracle, answers)
    assert "no misses" in fig.axes[0].texts[0].get_text()
