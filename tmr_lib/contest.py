"""A simulated contest: the ablation ladder's rungs enter the real leaderboard as teams (`tmr contest simulate`).

    from tmr_lib.contest import simulate_contest
    result = simulate_contest(cfg, "data/tmr-ci", "data/tmr-ci-host", "runs/ci/contest", days=5, daily_limit=2)
    print(result.board_text()); result.spread, result.spearman

Why: a host wants to see, before the workshop, that the competition ranks skill. Each team is
one recipe of rising skill (raw pixels; the starting weights untrained; fine-tuned with two views
a pair; + four views; + CrossBatchMemory; + fold averaging and a second model; + post-processing)
and climbs the ladder to it: every simulated day it submits its next rungs, in order, until the
leaderboard refuses one for the daily limit (a refusal costs nothing; it tries again the next
day). Submissions go through :class:`leaderboard.core.Competition` itself (validation, the
seeded public/private split, daily quota, final selection = best public), with an injected
clock. Then the host closes and the private board, the shake-up and the race are drawn.

The models are the ablation's (:func:`tmr_lib.ablate.ablation_ladder`, same runs folder), so after
`tmr ablate` this only embeds or loads and submits.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Config
from .retrieval import Retrieval

__all__ = ["TEAMS", "SimClock", "ContestResult", "simulate_contest", "team_plan", "add_contest_parser"]

Log = Callable[[str], None]

#: (team name, the top rung of its recipe), in order of skill; a ladder without a rung skips its team
TEAMS: tuple[tuple[str, str], ...] = (
    ("raw-pixels", "pixels"),
    ("untrained-start", "start"),
    ("weak-views", "weak"),
    ("strong-views", "strong"),
    ("xbm-memory", "memory"),
    ("two-models", "second"),
    ("post-processing", "post"),
)
MARKER = ".simulated-contest"  #: a leaderboard folder holding this file was made by the simulation


class SimClock:
    """The leaderboard's clock during the simulation: moved by the simulation, never by the wall."""

    def __init__(self, start: datetime):
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **delta: float) -> datetime:
        self.t += timedelta(**delta)
        return self.t


@dataclass
class ContestResult:
    board: list[dict[str, Any]]  #: the private board (rank, team, rung, public, private, submission)
    submissions: pd.DataFrame  #: day, team, rung, submission_id, public Recall@20 (accepted only)
    refusals: pd.DataFrame  #: day, team, rung the daily limit refused
    retrievals: dict[str, Retrieval]  #: rung key -> what the teams submitted
    private_gids: list[str]  #: the private split's test queries (host's knowledge)
    spread: float  #: best - worst private Recall@20
    spearman: float  #: between skill order and private rank (1: the more skilled, the better ranked)
    daily_limit: int
    days: int
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    def board_text(self) -> str:
        """The private board as fixed-width text."""
        w = max(len(r["team"]) for r in self.board)
        lines = [f"{'#':>2s}  {'team':{w}s}  {'skill':>5s}  {'public R@20':>11s}  {'private R@20':>12s}  "
                 f"{'public rank':>11s}  submission", "-" * (w + 66)]
        for r in self.board:
            lines.append(f"{r['rank']:>2d}  {r['team']:{w}s}  {r['skill']:>5d}  {r['public']:11.4f}  "
                         f"{r['private']:12.4f}  {r['public_rank']:>11d}  #{r['submission_id']} ({r['rung']})")
        return "\n".join(lines)

    def best_public_by_day(self) -> pd.DataFrame:
        """Each team's best public Recall@20 at the end of each day (rises, then plateaus)."""
        s = self.submissions
        best = s.groupby(["team", "day"])["public"].max().unstack("day").reindex(columns=range(self.days))
        order = [r["team"] for r in sorted(self.board, key=lambda r: r["skill"])]
        return best.cummax(axis=1).ffill(axis=1).reindex(order)


def team_plan(rungs: list[str]) -> list[tuple[str, int, list[str]]]:
    """(team, skill, the rungs it submits in order) for each team whose top rung the ladder has.

    The climb uses the contest rungs only (fold averaging and label transfer are folded into the
    second-model and post-processing teams' climbs)."""
    climb = [key for _, key in TEAMS if key in rungs]
    plan = []
    for name, key in TEAMS:
        if key in climb:
            plan.append((name, len(plan), climb[: climb.index(key) + 1]))
    return plan


def _fresh_board_dir(path: Path) -> None:
    """The simulation always starts a new leaderboard; it replaces only one it made itself."""
    if path.exists():
        if not (path / MARKER).is_file():
            raise FileExistsError(f"{path} exists and is not a simulated contest: choose another --out")
        shutil.rmtree(path)


def _create_board(data: Path, host: Path, path: Path, teams: list[str], daily_limit: int, clock: SimClock,
                  public_fraction: float, seed: int):
    from leaderboard.core import Competition

    _fresh_board_dir(path)
    board, _tokens = Competition.create(host, data, path=path, name=f"{data.name} simulated contest",
                                        public_fraction=public_fraction, seed=seed, daily_limit=daily_limit,
                                        teams=teams, now=clock)
    (path / MARKER).write_text("made by tmr contest simulate; replaced by the next simulation\n")
    return board


def _run_days(board, plan, csvs: dict[str, Path], days: int, clock: SimClock, start: datetime,
              log: Log) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every day, every team submits its next rungs until the board refuses one for the daily limit."""
    from leaderboard.core import QuotaExceeded

    sent, refused = [], []
    todo = {name: list(rungs) for name, _, rungs in plan}
    for day in range(days):
        clock.t = max(clock.t, start + timedelta(days=day))
        for name, _, _ in plan:
            while todo[name]:
                key = todo[name][0]
                clock.advance(minutes=7)
                try:
                    res = board.submit(csvs[key], name, note=f"rung {key}", filename=f"{key}.csv", via="simulation")
                except QuotaExceeded:
                    refused.append({"day": day, "team": name, "rung": key})
                    break
                todo[name].pop(0)
                sent.append({"day": day, "team": name, "rung": key, "submission_id": res.submission_id,
                             "public": res.public_recall, "at": clock.t.isoformat()})
        best = {s["team"]: max(x["public"] for x in sent if x["team"] == s["team"]) for s in sent}
        log(f"[contest] day {day + 1}/{days}: {sum(s['day'] == day for s in sent)} accepted, "
            f"{sum(r['day'] == day for r in refused)} refused by the daily limit; best public "
            + ", ".join(f"{n} {v:.3f}" for n, v in best.items()))
    return sent, refused


def _select_recipe(board, sent: list[dict[str, Any]], teams: list[str]) -> None:
    """Each team's final selections: its own recipe (its last submission) and its best public one;
    the board counts the better private score of the two (the leaderboard's rule)."""
    for team in teams:
        mine = [s for s in sent if s["team"] == team]
        if mine:
            best = max(mine, key=lambda s: (s["public"], -s["submission_id"]))
            board.select(team, sorted({mine[-1]["submission_id"], best["submission_id"]}))


def _spearman(skill: list[int], rank: list[int]) -> float:
    """Spearman between skill and the negated private rank (1.0: ranked exactly by skill)."""
    if len(skill) < 2:
        return float("nan")
    return float(pd.Series(skill).corr(-pd.Series(rank, dtype=float), method="spearman"))


def _draw(board, out: Path) -> dict[str, Path]:
    """The leaderboard's own race plots: best public over time, submissions per day, the shake-up."""
    from leaderboard import plots

    race, private = board.race(), board.private_board()
    files = {"best_public": out / "best_public.png", "shakeup": out / "shakeup.png",
             "submissions_per_day": out / "submissions_per_day.png"}
    files["best_public"].write_bytes(plots.best_public_over_time(race))
    files["shakeup"].write_bytes(plots.shakeup(private))
    files["submissions_per_day"].write_bytes(plots.submissions_per_day(race))
    return files


def simulate_contest(cfg: Config, data: str | os.PathLike, host: str | os.PathLike, out: str | os.PathLike,
                     runs: str | os.PathLike | None = None, days: int = 5, daily_limit: int = 2,
                     public_fraction: float = 0.3, seed: int = 0, select: str = "best-public", ladder=None,
                     store=None,
                     ladder_options: dict[str, Any] | None = None, progress: bool = False,
                     log: Log = print) -> ContestResult:
    """Train (or reuse) the ladder, run the contest through the real leaderboard, close it, draw it.

    ``runs``: the ablation's runs folder (default ``runs/<recipe>/ablate``); ``ladder``: one already
    built on the full database (skips the training step); ``ladder_options``: passed to
    :func:`tmr_lib.ablate.ablation_ladder` (folds, second, ...). ``select``: "best-public" (no
    selection: the board counts each team's best public submission) or "recipe" (each team selects
    its own recipe, its last submission, and its best public one)."""
    if select not in ("best-public", "recipe"):
        raise ValueError(f"select is 'best-public' or 'recipe', not {select!r}")
    from .ablate import ablation_ladder
    from .data import load_competition
    from .paths import runs_root

    t0, data, host, out = time.time(), Path(data), Path(host), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    comp = load_competition(data)
    if ladder is None:
        ladder = ablation_ladder(cfg, comp, store, runs or runs_root(cfg.name) / "ablate", validation=False,
                                 progress=progress, log=log, **(ladder_options or {}))
    if ladder.n_cites != len(comp.cite):
        raise ValueError(f"the contest needs a ladder searched in the whole database ({len(comp.cite)} cites), "
                         f"not in {ladder.n_cites}")
    retrievals = {r.key: r.test for r in ladder.rungs}
    plan = team_plan(list(retrievals))
    if len(plan) < 6:
        raise ValueError(f"only {len(plan)} teams: the ladder lacks rungs (a second model or folds, post-processing)")
    csvs = {key: retrievals[key].to_submission(out / "submissions" / f"{key}.csv")
            for key in dict.fromkeys(k for _, _, rungs in plan for k in rungs)}
    start = datetime(2025, 3, 3, 9, 0, tzinfo=_utc())
    clock = SimClock(start - timedelta(hours=1))
    board = _create_board(data, host, out / "leaderboard", [n for n, _, _ in plan], daily_limit, clock,
                          public_fraction, seed)
    try:
        sent, refused = _run_days(board, plan, csvs, days, clock, start, log)
        if select == "recipe":
            _select_recipe(board, sent, [n for n, _, _ in plan])
        clock.t = max(clock.t, start + timedelta(days=days - 1, hours=9))
        final = board.close()
        files = _draw(board, out)
        scorer = board.scorer()
        private_gids = [g for g, pub in zip(scorer.test_gids, scorer.public) if not pub]
    finally:
        board.close_db()
    return _result(final, plan, sent, refused, retrievals, private_gids, daily_limit, days, out, files, t0)


def _utc():
    from leaderboard.rules import UTC

    return UTC


def _result(final, plan, sent, refused, retrievals, private_gids, daily_limit, days, out, files, t0) -> ContestResult:
    skill = {name: s for name, s, _ in plan}
    rung_of = {s["submission_id"]: s["rung"] for s in sent}
    board = [{"rank": r["rank"], "team": r["team"], "skill": skill[r["team"]], "rung": rung_of[r["submission_id"]],
              "public": r["public_recall20"], "private": r["recall20"], "public_rank": r["public_rank"],
              "submission_id": r["submission_id"]} for r in final]
    private = [r["private"] for r in board]
    result = ContestResult(board, pd.DataFrame(sent), pd.DataFrame(refused, columns=["day", "team", "rung"]),
                           retrievals, private_gids, float(max(private) - min(private)),
                           _spearman([r["skill"] for r in board], [r["rank"] for r in board]),
                           daily_limit, days, out, files, time.time() - t0)
    doc = {"board": board, "spread": result.spread, "spearman": result.spearman, "daily_limit": daily_limit,
           "days": days, "submissions": sent, "refusals": refused, "seconds": round(result.seconds, 1),
           "files": {k: str(v) for k, v in files.items()}}
    (out / "contest.json").write_text(json.dumps(doc, indent=2, default=float))
    return result


# ----------------------------------------------------------------------------------------
# `tmr contest simulate`
# ----------------------------------------------------------------------------------------
def add_contest_parser(subparsers: Any) -> None:
    """Add ``tmr contest simulate`` to the ``tmr`` parser (torch is imported only when it runs)."""
    from .ablate import add_common_ladder_args

    p = subparsers.add_parser("contest", help="simulated contests: the ablation's recipes as teams on a real board")
    sub = p.add_subparsers(dest="contest_command", required=True)
    s = sub.add_parser(
        "simulate", help="teams of rising skill submit through the real leaderboard over simulated days",
        description="One team per rung of the ablation ladder (raw pixels ... post-processing). Each simulated "
                    "day every team submits its next rungs until the daily limit refuses one; then the host "
                    "closes, the private board is printed and the shake-up and the race are drawn. Shares its "
                    "models with `tmr ablate` (same --runs folder).")
    add_common_ladder_args(s)
    s.add_argument("--days", type=int, default=5, help="simulated days (default 5)")
    s.add_argument("--daily-limit", type=int, default=2, help="submissions per team per day (default 2)")
    s.add_argument("--public-fraction", type=float, default=0.3, help="share of test queries on the public board")
    s.add_argument("--seed", type=int, default=0, help="the public/private split's seed (default 0)")
    s.add_argument("--select", default="best-public", choices=("best-public", "recipe"),
                   help="final selection: none, so the best public counts (default), or each team's own recipe "
                        "(its last submission) beside its best public one")
    s.add_argument("--out", default=None, help="board, submissions, plots (default runs/<preset>/contest)")
    s.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .ablate import ladder_setup
    from .paths import runs_root

    cfg, _comp, data, host, runs = ladder_setup(args)
    out = Path(args.out) if args.out else runs_root(cfg.name) / "contest"
    print(f"[contest] {data} ({host}); recipe {cfg.name!r} from {cfg.pretrained}; models in {runs}", flush=True)
    r = simulate_contest(cfg, data, host, out, runs=runs, days=args.days, daily_limit=args.daily_limit,
                         public_fraction=args.public_fraction, seed=args.seed, select=args.select,
                         progress=not args.quiet,
                         ladder_options={"folds": args.folds, "second": args.second, "second_loss": args.second_loss},
                         log=lambda s: print(s, flush=True))
    chosen = "best public" if args.select == "best-public" else "own recipe + best public, the better private counts"
    print(f"\nfinal ranking (private split, {len(r.private_gids)} queries; final selection: {chosen})")
    print(r.board_text())
    print("\nbest public Recall@20 at the end of each day")
    print(r.best_public_by_day().rename(columns=lambda d: f"day {d + 1}").to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\nspread (best - worst private Recall@20): {r.spread:.3f}")
    print(f"Spearman between skill order and private rank: {r.spearman:.3f}")
    print(f"refused by the daily limit of {r.daily_limit}: {len(r.refusals)}; plots: "
          + ", ".join(str(p) for p in r.files.values()))
    print(f"[contest] {r.seconds / 60:.1f} min; board in {out / 'leaderboard'}")
    return 0
