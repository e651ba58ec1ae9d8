"""Time the leaderboard scorer: validation + Recall@20/MRR/per-category on both splits.

    python benchmarks/bench_scoring.py            # 1,542 and 100,000 queries, 800k cites, best of 3
    python benchmarks/bench_scoring.py --quick    # one run each, 200k cites

1,542 is the real competition's number of test queries; 800k its database size.
Prints one line per size: validation time, metric time, total (wall seconds, best run), and
the process CPU time (close to the wall time on an idle machine; lower on a busy one).
"""

from __future__ import annotations

import time

import numpy as np

from _common import Report, parser  # noqa: E402  (puts the repository on sys.path)

from leaderboard.scorer import Scorer  # noqa: E402
from tmr_lib.metrics import retrieval_metrics  # noqa: E402


def make_case(n_queries: int, n_cites: int, seed: int = 0):
    """Synthetic ids (10-digit strings, like the real ones) and a valid submission's bytes."""
    rng = np.random.default_rng(seed)
    cites = (1_000_000_000 + np.arange(n_cites) * 1097 + rng.integers(0, 1000, n_cites)).astype(str)
    test = [str(5_000_000_000 + i) for i in range(n_queries)]
    first = rng.integers(0, n_cites, n_queries)
    second = rng.integers(0, n_cites, n_queries)
    answers = [[cites[a]] + ([cites[b]] if i % 4 == 0 and b != a else []) for i, (a, b) in
               enumerate(zip(first, second))]
    categories = rng.choice([2, 3, 4, 5], n_queries, p=[0.30, 0.49, 0.16, 0.05])
    public = rng.random(n_queries) < 0.3
    # 20 distinct ids per row: a random start and a fixed stride; ~60% of rows hit at a random rank
    idx = (rng.integers(0, n_cites, n_queries)[:, None] + np.arange(20) * 7919) % n_cites
    ranked = cites[idx]
    hit = rng.random(n_queries) < 0.6
    rank = rng.integers(0, 20, n_queries)
    for i in np.flatnonzero(hit):
        if answers[i][0] not in ranked[i]:
            ranked[i, rank[i]] = answers[i][0]
    body = "".join(f"{g},{' '.join(row)}\n" for g, row in zip(test, ranked.tolist()))
    data = ("gid,cite_gid\n" + body).encode()
    return test, cites.tolist(), answers, categories, public, data


def bench(n_queries: int, n_cites: int, repeats: int) -> dict:
    t0 = time.perf_counter()
    test, cites, answers, categories, public, data = make_case(n_queries, n_cites)
    t_setup = time.perf_counter() - t0
    scorer = Scorer(test, set(cites), answers, categories, public)
    best_val = best_total = best_metrics = best_cpu = float("inf")
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        report = scorer.validate(data)
        t1 = time.perf_counter()
        scored = scorer.score_report(report)
        t2 = time.perf_counter()
        best_cpu = min(best_cpu, time.process_time() - c0)
        assert scored.ok, report.format()
        best_val, best_total = min(best_val, t1 - t0), min(best_total, t2 - t0)
        ranked = report.ranked_for(test)
        t3 = time.perf_counter()
        retrieval_metrics(ranked, answers, categories)
        best_metrics = min(best_metrics, time.perf_counter() - t3)
    print(f"{n_queries:>7,} queries x 20 ids, {n_cites:,} cites ({len(data) / 2**20:.1f} MB): "
          f"validate {best_val:.3f}s + score {best_total - best_val:.3f}s = total {best_total:.3f}s "
          f"[CPU time {best_cpu:.3f}s] "
          f"(metrics alone on all queries {best_metrics:.3f}s; public R@20 {scored.public['recall20']:.4f}; "
          f"data generation {t_setup:.1f}s)", flush=True)
    return {"n": n_queries, "mb": len(data) / 2**20, "validate": best_val, "score": best_total - best_val,
            "total": best_total, "cpu": best_cpu, "metrics": best_metrics}


def main() -> None:
    ap = parser(__doc__)
    args = ap.parse_args()
    repeats = 1 if args.quick else 3
    n_cites = 200_000 if args.quick else 800_000
    rep = Report("Leaderboard scoring (target 5)", args.quick, args.results)
    res = [bench(n, n_cites, repeats) for n in (1_542, 100_000)]
    for r in res:
        rep.row(f"score a submission of {r['n']:,} queries x 20 ids ({r['mb']:.1f} MB): validate + score", r["total"],
                unit="s", ours_s=f"{r['total']:.3f} s ({r['validate']:.3f} + {r['score']:.3f}; CPU {r['cpu']:.3f} s)")
        rep.row(f"  {r['n']:,} queries: Recall@20/MRR/per-category alone", r["metrics"], unit="s")
    small, big = res
    per_q = [r["total"] / r["n"] * 1e6 for r in res]
    rep.row("time per query, 100,000 vs 1,542 (linear scaling = 1x)", per_q[1], per_q[0], "us",
            ratio=per_q[1] / per_q[0])
    rep.note(f"{n_cites:,} cite ids in the database; best of {repeats}; synthetic 10-digit ids, ~60% of rows hit, "
             "1/4 of queries with two correct cites. No baseline: the figures are absolute.")
    rep.finish()


if __name__ == "__main__":
    main()
