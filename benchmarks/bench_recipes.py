"""The 2nd place's method against the kit's, measured side by side in one run (issue 13).

Two parts:

* ``--part postprocess`` (seconds): a constructed competition in embedding space whose train
  label groups have 1-8 cites. Each test query is a near twin of one train query and its answer
  is one cite of that query's group, so label transfer decides the score. Compares the kit's
  post-processing (keep the top 15 always) with the 2nd place's (keep 16 - n, then the whole
  group, one re-search per group cite): Recall@20 and how many group cites each keeps, per n.
* ``--part train`` (about 25 minutes on 2 cores): the ``cpu`` preset as it is (the kit's
  recipe) and the same preset with ``method="2nd-place"`` (their views, schedule, XBM from the
  first step, lr 1e-4, trim fallback, un-normalised ensemble, Euclidean search, post-processing
  16 - n), same starting weights and time budget, scored on the test answers with a 95 % paired
  bootstrap interval of the difference.

    python benchmarks/bench_recipes.py --part postprocess
    python benchmarks/bench_recipes.py --part train [--data data/tmr-cpu] [--pretrained tmr-marks]

Figures go to benchmarks/RESULTS.md and benchmarks/results/second_place.json (commit, seeds, wall time).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from _common import ROOT, Report, commit, parser, write_results

RESULTS_JSON = ROOT / "benchmarks" / "results" / "second_place.json"


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def constructed_competition(n_cites: int, groups: int = 150, gallery: int = 5000, dim: int = 64,
                            noise: float = 0.9, seed: int = 0):
    """(Retrieval with its train memory, answers, the group cites of each test query) for groups of ``n_cites``."""
    import pandas as pd

    from tmr_lib.postprocess import TrainMemory
    from tmr_lib.retrieval import Retrieval

    rng = np.random.default_rng(seed + n_cites)
    cites = _unit(rng.normal(size=(gallery, dim)))
    cite_ids = np.array([f"c{j}" for j in range(gallery)])
    members = rng.permutation(gallery)[: groups * n_cites].reshape(groups, n_cites)
    apply = _unit(cites[members].mean(axis=1) + noise * rng.normal(size=(groups, dim)) / np.sqrt(dim))
    test = _unit(apply + noise * rng.normal(size=(groups, dim)) / np.sqrt(dim))  # a near twin of the train query
    answer = members[np.arange(groups), rng.integers(0, n_cites, groups)]
    memory = TrainMemory(np.repeat(apply, n_cites, axis=0), cites[members.reshape(-1)], cite_ids[members.reshape(-1)],
                         np.repeat(np.arange(groups), n_cites))
    qids = [f"q{i}" for i in range(groups)]
    r = Retrieval.from_embeddings(qids, test, cite_ids, cites, memory=memory, name="plain search")
    answers = pd.DataFrame({"gid": qids, "cite_gids": [[cite_ids[a]] for a in answer], "category": 2})
    return r, answers, [set(cite_ids[m]) for m in members]


def part_postprocess(report: Report, quick: bool) -> dict:
    out = {}
    for n in range(1, 9):
        r, answers, group = constructed_competition(n, groups=60 if quick else 150)
        kit = r.postprocess(keep=15, recipe="kit", name="kit: keep 15")
        exact = r.postprocess(recipe="2nd-place", name="2nd place: keep 16 - n")
        kept = {name: float(np.mean([len(set(row) & g) for row, g in zip(x.ranked, group)]))
                for name, x in (("kit", kit), ("2nd-place", exact))}
        rec = {name: float(x.hits(answers).mean()) for name, x in (("plain", r), ("kit", kit), ("2nd-place", exact))}
        cmp = kit.compare(exact, answers, n_resamples=1000, seed=0)
        out[n] = {"recall@20": rec, "group_cites_kept": kept, "diff": cmp["diff"], "low": cmp["low"],
                  "high": cmp["high"]}
        report.row(f"groups of {n}: Recall@20 2nd place (16-n) vs kit (15)", rec["2nd-place"], rec["kit"],
                   ratio=f"{cmp['diff']:+.3f} [{cmp['low']:+.3f}, {cmp['high']:+.3f}]",
                   target=f"plain {rec['plain']:.2f}; group cites kept {kept['2nd-place']:.1f} vs {kept['kit']:.1f} of {n}")
    report.note("Constructed competition: 5,000 random 64-d cites; per group size n, 150 train queries each citing n "
                "cites; each test query a near twin of one train query, its answer one cite of that group. "
                "Ratio column: the 2nd place's Recall@20 minus the kit's, 95 % paired bootstrap over queries.")
    return out


def _train_and_score(cfg, data: str, out: str, host: str, log) -> tuple:
    from tmr_lib import pipeline
    from tmr_lib.data import load_answers

    t0 = time.time()
    summary = pipeline.train(cfg, data, out, resume=False, progress=False, log=log)
    pred = pipeline.predict(cfg, data, out, f"{out}/submission.csv", progress=False, log=log)
    answers = load_answers(host)
    return pred, answers, summary, time.time() - t0


def part_train(report: Report, data: str, pretrained: str | None, quick: bool) -> dict:
    from tmr_lib.config import get_config

    preset = "ci" if quick else "cpu"
    base = get_config(preset) if pretrained is None else get_config(preset, pretrained=pretrained)
    host = str(Path(data).with_name(Path(data).name + "-host"))
    runs, out = {}, {}
    for name, cfg in (("kit", base), ("2nd-place", base.replace(method="2nd-place"))):
        pred, answers, summary, secs = _train_and_score(cfg, data, f"runs/bench_recipes/{name}", host,
                                                        log=lambda m: print(m, flush=True))
        runs[name] = (pred, answers)
        m = pred.retrieval.metrics(answers)
        out[name] = {"recall@20": m["recall"][20], "plain recall@20": pred.plain.metrics(answers)["recall"][20],
                     "val_recall@20": [r.best_recall for r in summary.results],
                     "best_epoch": [r.best_epoch for r in summary.results], "seconds": round(secs, 1),
                     "per_category": m.get("per_category")}
    kit, exact = runs["kit"][0], runs["2nd-place"][0]
    answers = runs["kit"][1]
    cmp = kit.retrieval.compare(exact.retrieval, answers, n_resamples=1000, seed=0)
    plain = kit.plain.compare(exact.plain, answers, n_resamples=1000, seed=0)
    out["diff"], out["plain_diff"] = cmp, plain
    noise = "beyond noise" if cmp["beyond_noise"] else "within noise"
    report.row("test Recall@20, 2nd-place method vs kit recipe (same start, same budget)",
               out["2nd-place"]["recall@20"], out["kit"]["recall@20"],
               ratio=f"{cmp['diff']:+.3f} [{cmp['low']:+.3f}, {cmp['high']:+.3f}]", target=noise)
    report.row("the same before post-processing", out["2nd-place"]["plain recall@20"], out["kit"]["plain recall@20"],
               ratio=f"{plain['diff']:+.3f} [{plain['low']:+.3f}, {plain['high']:+.3f}]",
               target="beyond noise" if plain["beyond_noise"] else "within noise")
    report.row("held-out fold Recall@20 of the kept epoch", str(out["2nd-place"]["val_recall@20"]),
               str(out["kit"]["val_recall@20"]), ratio=f"epochs {out['2nd-place']['best_epoch']} vs "
               f"{out['kit']['best_epoch']}")
    report.note(f"{preset} preset on {data}, starting weights {base.pretrained}, budget {base.max_train_minutes} min "
                f"each; baseline column = the kit's recipe, ratio column = difference with its 95 % paired bootstrap "
                "interval over the test queries.")
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--part", choices=("postprocess", "train", "all"), default="postprocess")
    ap.add_argument("--data", default=None, help="competition for --part train (default data/tmr-cpu; quick: tmr-ci)")
    ap.add_argument("--pretrained", default=None, help="starting weights for both recipes (default: the preset's)")
    ap.add_argument("--json", default=None, help=f"results file ('-' to skip; default {RESULTS_JSON.name} in "
                    "benchmarks/results, not written by --quick)")
    args = ap.parse_args()
    report = Report("2nd-place method vs the kit's", args.quick, args.results)
    t0 = time.time()
    figures: dict = {}
    if args.part in ("postprocess", "all"):
        figures["postprocess"] = part_postprocess(report, args.quick)
    if args.part in ("train", "all"):
        from _common import competition_dir

        data = args.data or ("data/tmr-cpu" if not args.quick else None)
        data = competition_dir(data, args.quick)
        figures["train"] = part_train(report, data, args.pretrained, args.quick)
    report.finish()
    write_results({k: {"figures": v, "commit": commit(), "seeds": [0], "quick": args.quick,
                       "wall_s": round(time.time() - t0, 1)} for k, v in figures.items()},
                  RESULTS_JSON, args.json, args.quick)


if __name__ == "__main__":
    main()
