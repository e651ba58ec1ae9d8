"""tmr_lib.contest: the ablation's rungs as teams on the real leaderboard, over simulated days.

Same tiny recipe and runs folder as tests/test_ablate.py: after it, the models are reused and
the contest only loads embeddings and submits.
"""
import argparse
import json
import sqlite3

import pytest

from tmr_lib.config import get_config
from tmr_lib.contest import TEAMS, add_contest_parser, simulate_contest, team_plan
from tmr_lib.data import load_answers

TINY = dict(backbones=("mobilenetv3_small_050",), pretrained="random", image_size=32, embed_dim=32, epochs=1,
            batch_pairs=8, extra_cite_pairs=0, val_distractors=20, num_workers=0, embed_batch_size=128,
            max_train_minutes=0.005)
DAYS, LIMIT = 4, 2


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (see conftest.one_torch_thread)."""
    yield


@pytest.fixture(scope="module")
def contest(ci_dataset, tmp_path_factory):
    cfg = get_config("ci", **TINY)
    out = tmp_path_factory.mktemp("contest")
    lines: list[str] = []
    result = simulate_contest(cfg, ci_dataset[0], ci_dataset[1], out, runs=tmp_path_factory.getbasetemp() / "tiny-ladder",
                              days=DAYS, daily_limit=LIMIT, log=lines.append)
    return result, lines, out


def test_every_team_climbs_its_own_ladder():
    plan = team_plan(["pixels", "start", "weak", "strong", "memory", "folds", "second", "labels", "post"])
    assert [n for n, _, _ in plan] == [n for n, _ in TEAMS] and len(plan) >= 6
    assert plan[0][2] == ["pixels"] and plan[-1][2] == ["pixels", "start", "weak", "strong", "memory", "second", "post"]
    assert [len(r) for _, _, r in plan] == list(range(1, len(plan) + 1))


def test_the_real_leaderboard_holds_the_daily_limit(contest):
    result, lines, out = contest
    con = sqlite3.connect(out / "leaderboard" / "leaderboard.sqlite3")
    per_day = con.execute("SELECT team_id, quota_day, COUNT(*) FROM submissions GROUP BY 1, 2").fetchall()
    refused = con.execute("SELECT COUNT(*) FROM events WHERE action = 'rejected' "
                          "AND json_extract(detail, '$.reason') = 'daily_limit'").fetchone()[0]
    assert max(n for _, _, n in per_day) == LIMIT  # the eager teams hit the limit, never beyond it
    assert refused == len(result.refusals) > 0
    assert len({d for _, d, _ in per_day}) == DAYS  # 7 rungs at 2 a day: the top team sends its last on day 4
    assert sum(s.startswith("[contest] day") for s in lines) == DAYS
    # each team sent its whole climb, so its best public score rises and then stays
    assert result.submissions.groupby("team").size().to_dict() == {n: len(r) for n, _, r in team_plan(
        list(result.retrievals))}
    best = result.best_public_by_day()
    assert (best.diff(axis=1).iloc[:, 1:] >= 0).all().all()


def test_private_scores_are_the_retrievals_metrics_on_the_private_queries(contest, ci_dataset):
    result, _lines, _out = contest
    answers = load_answers(ci_dataset[1])
    private = answers[answers["gid"].isin(set(result.private_gids))]
    assert 0 < len(private) < len(answers)
    assert len(result.board) >= 6 and [r["rank"] for r in result.board] == list(range(1, len(result.board) + 1))
    for row in result.board:
        expected = result.retrievals[row["rung"]].metrics(private)["recall"][20]
        assert row["private"] == pytest.approx(expected, abs=5e-5), row
        sent = result.submissions.set_index("submission_id").loc[row["submission_id"]]
        assert (sent["team"], sent["rung"]) == (row["team"], row["rung"])
        assert row["public"] == result.submissions[result.submissions["team"] == row["team"]]["public"].max()
    private_scores = [r["private"] for r in result.board]
    assert result.spread == pytest.approx(max(private_scores) - min(private_scores))
    assert -1.0 <= result.spearman <= 1.0 or result.spearman != result.spearman


def test_the_command_prints_the_board_and_writes_both_plots(ci_dataset, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("contest-cli")
    parser = argparse.ArgumentParser()
    add_contest_parser(parser.add_subparsers(dest="command"))
    argv = ["contest", "simulate", "--preset", "ci", "--data", str(ci_dataset[0]), "--host", str(ci_dataset[1]),
            "--runs", str(tmp_path_factory.getbasetemp() / "tiny-ladder"), "--out", str(out), "--quiet",
            "--days", str(DAYS), "--daily-limit", str(LIMIT), "--pretrained", "random"]
    argv += [f"--set={k}={v if not isinstance(v, tuple) else v[0]}" for k, v in TINY.items() if k != "pretrained"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    board = printed.split("final ranking")[1]
    assert sum(f" {name} " in board for name, _ in TEAMS) == len(TEAMS)
    assert "spread (best - worst private Recall@20)" in printed and "Spearman" in printed
    for png in ("shakeup.png", "best_public.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "contest.json").read_text())
    assert len(doc["board"]) >= 6
    # a second simulation replaces the board it made (a fresh competition each time); with --select recipe
    # each team selects its own recipe (last submission) beside its best public one, the better private counts
    again = parser.parse_args(argv + ["--select", "recipe"])
    assert again.func(again) == 0
    doc = json.loads((out / "contest.json").read_text())
    for row in doc["board"]:
        mine = [s for s in doc["submissions"] if s["team"] == row["team"]]
        best = max(mine, key=lambda s: (s["public"], -s["submission_id"]))
        assert row["submission_id"] in {mine[-1]["submission_id"], best["submission_id"]}
    assert len({r["submission_id"] for r in doc["board"]}) == len(doc["board"])
