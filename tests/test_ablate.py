"""tmr_lib.ablate: the 2nd place's ladder trained once per rung, gains measured with paired intervals.

A tiny recipe (random MobileNetV3-small-050 at 32 px, one step of training per model) keeps the
ladder to seconds; the runs folder is shared with tests/test_contest.py, which reuses the models.
"""
import argparse

import numpy as np
import pandas as pd
import pytest

from tmr_lib.ablate import (RUNGS, ablation_ladder, ablation_table, add_ablate_parser, format_ablation,
                            plot_ablation, rung_configs, search_database, validation_view)
from tmr_lib.config import get_config
from tmr_lib.data import load_answers
from tmr_lib.metrics import paired_bootstrap
from tmr_lib.retrieval import Retrieval

#: seconds, not minutes: what the mechanics need (the scores of such models mean nothing)
TINY = dict(backbones=("mobilenetv3_small_050",), pretrained="random", image_size=32, embed_dim=32, epochs=1,
            batch_pairs=8, extra_cite_pairs=0, val_distractors=20, num_workers=0, embed_batch_size=128,
            max_train_minutes=0.005)
LADDER = [k for k in RUNGS if k != "tta"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (see conftest.one_torch_thread)."""
    yield


@pytest.fixture(scope="module")
def tiny(ci_dataset, ci_competition, tmp_path_factory):
    from tmr_lib.images import image_store

    cfg = get_config("ci", **TINY)
    store = image_store(cfg, ci_competition, progress=False)
    answers = load_answers(ci_dataset[1])
    lines: list[str] = []
    runs = tmp_path_factory.getbasetemp() / "tiny-ladder"
    ladder = ablation_ladder(cfg, ci_competition, store, runs, answers=answers, log=lines.append)
    return cfg, ladder, answers, lines, store, runs


def test_the_ladder_has_every_rung_with_20_unique_ids_per_query(tiny, ci_competition):
    _cfg, ladder, answers, lines, _store, _runs = tiny
    assert [r.key for r in ladder.rungs] == LADDER
    for name, r in ladder.steps().items():
        assert list(r.query_ids) == list(ci_competition.test["gid"]), name
        assert all(len(ids) == 20 == len(set(ids)) for ids in r.ranked), name
    val = ladder.steps("validation")
    assert len(val) == len(LADDER) - 1 and "+ fold averaging (2 folds)" not in val  # fold 1 trained on fold 0
    for name, r in val.items():
        assert sorted(r.query_ids) == sorted(ladder.validation_answers["gid"]), name
        assert all(len(ids) == 20 == len(set(ids)) for ids in r.ranked), name
    assert sum("[ablate] rung" in s for s in lines) == len(LADDER)
    assert sum("[ablate] model" in s for s in lines) == 5  # weak, strong, memory x 2 folds, second


def test_gains_are_differences_of_rows_with_paired_bootstrap_intervals(tiny):
    _cfg, ladder, answers, _lines, _store, _runs = tiny
    steps = ladder.steps()
    table = ablation_table(steps, answers, n_resamples=1000, seed=3)
    assert list(table.index) == list(steps)
    assert np.isnan(table["gain"].iloc[0]) and table["noise"].iloc[0] == ""
    np.testing.assert_allclose(table["gain"].iloc[1:], np.diff(table["Recall@20"]), atol=1e-12)
    runs = list(steps.values())
    for i in range(1, len(runs)):
        b = paired_bootstrap(runs[i - 1].hits(answers), runs[i].hits(answers), n_resamples=1000, seed=3)
        row = table.iloc[i]
        assert (row["95% low"], row["95% high"]) == (b["low"], b["high"])
        assert row["noise"] == ("beyond noise" if b["beyond_noise"] else "within noise")
    pd.testing.assert_frame_equal(table, ablation_table(ladder, answers, seed=3))  # seeded: the same again
    m = runs[-1].metrics(answers)
    assert table["MRR"].iloc[-1] == m["mrr"] and table["酷似"].iloc[-1] == m["per_category"][2]


def test_a_constructed_gain_is_beyond_noise_and_a_zero_one_within():
    ids = [f"c{i}" for i in range(40)]
    answers = pd.DataFrame({"gid": [f"q{i}" for i in range(200)], "cite_gids": [["c0"]] * 200, "category": 2})
    miss = Retrieval.from_ranked({g: ids[1:21] for g in answers["gid"]}, name="miss")
    half = Retrieval.from_ranked({g: ids[:20] if i % 2 else ids[1:21] for i, g in enumerate(answers["gid"])})
    table = ablation_table({"miss": miss, "half": half, "same": half}, answers)
    assert list(table["noise"]) == ["", "beyond noise", "within noise"]
    assert table["gain"].iloc[1] == pytest.approx(0.5)


def test_a_second_call_reuses_every_run_and_gives_the_same_lists(tiny, ci_competition):
    cfg, ladder, answers, _lines, store, runs = tiny
    lines: list[str] = []
    again = ablation_ladder(cfg, ci_competition, store, runs, answers=answers, log=lines.append)
    models = [s for s in lines if "[ablate] model" in s]
    assert len(models) == 5 and all(" reused " in s for s in models)
    for a, b in zip(ladder.rungs, again.rungs):
        assert a.test.ranked == b.test.ranked, a.name


def test_rung_configs_change_one_switch_at_a_time():
    cfg = get_config("cpu")  # augment="marks": the ladder uses the method's 2nd-place-style views
    c = rung_configs(cfg)
    assert {k: (v.crops_per_pair, bool(v.xbm_memory)) for k, v in c.items() if k != "start"} == {
        "weak": (2, False), "strong": (4, False), "memory": (4, True), "second": (4, True)}
    assert {v.augment for v in c.values()} == {"kit"}
    assert rung_configs(cfg.replace(method="2nd-place"))["weak"].augment == "2nd-place"
    assert (c["second"].loss, c["second"].seed) == ("multisimilarity", cfg.seed + 1)
    assert c["memory"].xbm_start_epoch < max(cfg.epochs, 1)
    with pytest.raises(ValueError, match="two backbones"):
        rung_configs(cfg, second="backbone")


def test_smaller_database_and_validation_view(tiny, ci_competition):
    cfg, _ladder, answers, _lines, store, _runs = tiny
    small = search_database(ci_competition, answers, cites=300)
    have = set(small.cite["gid"])
    assert {c for cs in answers["cite_gids"] for c in cs} <= have and set(ci_competition.train["cite_gid"]) <= have
    view, val_answers = validation_view(cfg, ci_competition, store, fold=0)
    assert not set(view.test["gid"]) & set(view.train["gid"])  # no held-out query in the memory
    assert list(view.test["gid"]) == list(val_answers["gid"])
    assert {c for cs in val_answers["cite_gids"] for c in cs} <= set(view.cite["gid"])


def test_plot_format_and_the_command(tiny, ci_dataset, tmp_path, capsys):
    _cfg, ladder, answers, _lines, _store, runs = tiny
    table = ablation_table(ladder, answers)
    assert plot_ablation(table, tmp_path / "a.png") is not None and (tmp_path / "a.png").stat().st_size > 1000
    text = format_ablation(table, "TEST")
    assert all(name in text for name in table.index) and "95 % paired bootstrap over 60 queries" in text

    parser = argparse.ArgumentParser()
    add_ablate_parser(parser.add_subparsers(dest="command"))
    argv = ["ablate", "--preset", "ci", "--data", str(ci_dataset[0]), "--host", str(ci_dataset[1]), "--runs",
            str(runs), "--out", str(tmp_path / "out"), "--quiet", "--pretrained", "random"]
    argv += [f"--set={k}={v if not isinstance(v, tuple) else v[0]}" for k, v in TINY.items() if k != "pretrained"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "VALIDATION scope" in out and "TEST scope" in out and out.count(" reused ") >= 5
    for scope in ("test", "validation"):
        for ext in ("csv", "json", "png"):
            assert (tmp_path / "out" / f"ablation_{scope}.{ext}").is_file()
