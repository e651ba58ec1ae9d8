"""Learning that pays (issue 14): the teaching start, fine-tuning, the 2nd place's steps and a contest.

    python benchmarks/bench_learning.py                  # all parts on data/tmr-cpu (about an hour on 2 cores)
    python benchmarks/bench_learning.py --part demo      # `make demo`'s table: both starts, fine-tuned
    python benchmarks/bench_learning.py --part ladder    # the ablation ladder (both scopes) + the simulated contest
    python benchmarks/bench_learning.py --quick          # the ci recipe on data/tmr-ci (seconds; the tests run it)

Every figure stands beside its baselines from the same run (raw pixels; the starting weights
untrained; the step below). A gain counts only with its 95 % paired-bootstrap interval over the
test queries (``Retrieval.compare``). The targets are issue 14's; the table says which are met.
Figures go to benchmarks/RESULTS.md and benchmarks/results/learning.json (commit, seeds, wall time).
"""
from __future__ import annotations

import time
from pathlib import Path

from _common import ROOT, Report, commit, parser, write_results

RESULTS_JSON = ROOT / "benchmarks" / "results" / "learning.json"
#: the steps issue 14 counts ("at least 3 with a 95 % interval above 0")
COUNTED_STEPS = ("strong", "memory", "folds", "second", "labels", "post")


def _recall(m: dict) -> float:
    return float(m["recall"][20])


def part_demo(report: Report, cfg, data: str | None, out: Path) -> dict:
    """`make demo` on the recipe: the table's rows, the targets on them, the wall time."""
    from tmr_lib.demo import demo

    res = demo(cfg, data=data, out=out / "demo", progress=False, figure=False, log=lambda m: print(m, flush=True))
    rows = res["rows"]
    names = list(rows)
    pixels = next(n for n in names if n.startswith("raw pixels"))
    start = next(n for n in names if n.startswith("untrained:"))  # the recipe's own start comes first
    tuned = next(n for n in names if n.startswith("ours") and "post-processing" not in n)
    final = names[-1]
    px, st, ft, fin = (rows[n] for n in (pixels, start, tuned, final))
    for n in names:
        report.row(n, f"{_recall(rows[n]):.3f}", f"{_recall(px):.3f}", base_s=f"{_recall(px):.3f} (pixels)")
    train_min = res["timings"].get("train", 0) / 60
    report.row("fine-tuned from the start (with post-processing)", _recall(fin), None, target=">= 0.70",
               ok=_recall(fin) >= 0.70)
    report.row("gain over the same start untrained", _recall(fin) - _recall(st), None, target=">= +0.15",
               ok=_recall(fin) - _recall(st) >= 0.15)
    cats_ok = all(fin["per_category"][c] >= px["per_category"][c] for c in px["per_category"])
    report.row("every category at or above raw pixels", "yes" if cats_ok else "no",
               ours_s=", ".join(f"{c}: {fin['per_category'][c]:.3f}/{px['per_category'][c]:.3f}"
                                for c in px["per_category"]), target="all", ok=cats_ok)
    report.row("training minutes", train_min, None, target="<= 10", ok=train_min <= 10)
    report.row("make demo wall minutes", res["wall_s"] / 60, None, target="<= 15", ok=res["wall_s"] / 60 <= 15)
    return {"rows": {n: {"recall@20": _recall(m), "mrr": m.get("mrr"), "per_category": m.get("per_category")}
                     for n, m in rows.items()},
            "start": start, "fine_tuned": final, "train_minutes": round(train_min, 2),
            "wall_s": res["wall_s"], "timings": res["timings"], "train_images_per_s": res["train_images_per_s"],
            "weights": res["weights"]}


def part_ladder(report: Report, cfg, data: str | None, out: Path, days: int, daily_limit: int) -> dict:
    """The ablation ladder (validation scope to choose, test scope to report) and the simulated contest
    built on the same models, on the whole database."""
    from tmr_lib.ablate import ablation_ladder, ablation_table, format_ablation, plot_ablation
    from tmr_lib.contest import simulate_contest
    from tmr_lib.data import load_answers, load_competition
    from tmr_lib.demo import resolve_data
    from tmr_lib.images import image_store

    t0 = time.time()
    data, host = resolve_data(cfg, data, None, progress=False)
    comp, answers = load_competition(data), load_answers(host)
    store = image_store(cfg, comp, progress=False)
    ladder = ablation_ladder(cfg, comp, store, out / "ablate", answers=answers, log=lambda s: print(s, flush=True))
    figures: dict = {"ladder_minutes": round(ladder.seconds / 60, 1)}
    for scope in ("validation", "test"):
        ans = ladder.validation_answers if scope == "validation" else answers
        table = ablation_table(ladder.steps(scope), ans, n_resamples=1000, seed=0)
        print("\n" + format_ablation(table, f"{scope} scope"), flush=True)
        plot_ablation(table, out / f"ablation_{scope}.png", title=f"{scope} scope")
        figures[scope] = [{"step": name, **{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}}
                          for name, r in table.iterrows()]
    keys = [r.key for r in ladder.rungs]
    test_rows = dict(zip(keys, figures["test"]))
    beyond = [k for k in COUNTED_STEPS if k in test_rows and (test_rows[k].get("95% low") or 0) > 0]
    for k in keys:
        row = test_rows[k]
        gain = row.get("gain")
        report.row(f"ladder (test): {row['step']}", row["Recall@20"], None,
                   ratio=(f"{gain:+.3f} [{row['95% low']:+.3f}, {row['95% high']:+.3f}]" if gain is not None else None),
                   target=row.get("noise") or None)
    report.row("2nd-place steps with a 95 % interval above 0 (test)", len(beyond), None, target=">= 3",
               ok=len(beyond) >= 3, ours_s=f"{len(beyond)}: {', '.join(beyond) or '-'}")
    t1 = time.time()
    contest = simulate_contest(cfg, data, host, out / "contest", days=days, daily_limit=daily_limit, ladder=ladder,
                               log=lambda s: print(s, flush=True))
    print(contest.board_text(), flush=True)
    whole = (t1 - t0 + contest.seconds) / 60
    report.row("contest: spread of private Recall@20 (best - worst)", contest.spread, None, target=">= 0.30",
               ok=contest.spread >= 0.30)
    report.row("contest: Spearman(skill order, private rank)", contest.spearman, None, target=">= 0.8",
               ok=contest.spearman >= 0.8)
    report.row("contest: whole command, minutes (ladder + contest)", whole, None, target="<= 30", ok=whole <= 30)
    figures.update(beyond_noise=beyond, contest={"board": contest.board, "spread": contest.spread,
                                                 "spearman": contest.spearman, "minutes": round(whole, 1),
                                                 "days": days, "daily_limit": daily_limit,
                                                 "plots": {k: str(v) for k, v in contest.files.items()}})
    return figures


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--part", choices=("demo", "ladder", "all"), default="all")
    ap.add_argument("--data", default=None, help="competition (default: the recipe's, built if missing)")
    ap.add_argument("--pretrained", default=None, help="starting weights (default: the recipe's, tmr-teach)")
    ap.add_argument("--minutes", type=float, default=None, help="training budget per ladder model (default: the recipe's)")
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--daily-limit", type=int, default=2)
    ap.add_argument("--out", default="runs/bench_learning", help="runs folder (models, boards, plots)")
    ap.add_argument("--json", default=None, help="results file ('-' to skip; default benchmarks/results/learning.json, "
                    "not written by --quick)")
    args = ap.parse_args()
    from tmr_lib.config import get_config

    cfg = get_config("ci" if args.quick else "cpu")
    if args.pretrained:
        cfg = cfg.replace(pretrained=args.pretrained)
    out = Path(args.out) / cfg.name
    report = Report(f"Learning that pays: {cfg.name} recipe from {cfg.pretrained}", args.quick, args.results)
    t0, figures = time.time(), {}
    if args.part in ("demo", "all"):
        figures["demo"] = part_demo(report, cfg, args.data, out)
    if args.part in ("ladder", "all"):
        lcfg = cfg.replace(max_train_minutes=args.minutes) if args.minutes else cfg
        figures["ladder"] = part_ladder(report, lcfg, args.data, out, args.days, args.daily_limit)
    report.note(f"recipe {cfg.name} from {cfg.pretrained}; seeds: config {cfg.seed}, bootstrap 0 (1,000 resamples), "
                "contest split 0")
    report.finish()
    write_results({k: {"figures": v, "commit": commit(), "recipe": cfg.name, "pretrained": cfg.pretrained,
                       "seeds": {"config": cfg.seed, "bootstrap": 0, "contest_split": 0},
                       "wall_s": round(time.time() - t0, 1)} for k, v in figures.items()},
                  RESULTS_JSON, args.json, args.quick)


if __name__ == "__main__":
    main()
