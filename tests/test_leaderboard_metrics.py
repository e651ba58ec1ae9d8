"""tmr_lib.metrics and the leaderboard scorer against a hand-computed example."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from leaderboard.scorer import Scorer, fmt
from tmr_lib.metrics import map_at_k, mrr, per_category_recall, recall_at_k, retrieval_metrics

FILL = [f"x{i}" for i in range(40)]


def ranked_with(hits: dict[int, str]) -> list[str]:
    """20 ids: ``hits`` maps a 1-based rank to a correct id, the rest are fillers."""
    ids = FILL[:20]
    for r, gid in hits.items():
        ids[r - 1] = gid
    return ids


# five queries, hand-computed:
#   q1 answer a at rank 1 -> RR 1;  q2 answers b, c: c at 3, b at 7 -> RR 1/3;
#   q3 answer d absent -> 0;        q4 answer e at rank 20 -> 1/20;  q5 answer f at 2 -> 1/2
RANKED = [ranked_with({1: "a"}), ranked_with({3: "c", 7: "b"}), ranked_with({}), ranked_with({20: "e"}),
          ranked_with({2: "f"})]
ANSWERS = [{"a"}, "b c", ["d"], ("e",), {"f"}]
CATS = [2, 3, 2, 4, 5]


def test_hand_computed_example():
    m = retrieval_metrics(RANKED, ANSWERS, CATS)
    assert m["n_queries"] == 5
    assert m["recall"] == {1: 0.2, 5: 0.6, 10: 0.6, 20: 0.8}
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 0 + 1 / 20 + 1 / 2) / 5)  # 0.376667
    assert m["per_category"] == {2: 0.5, 3: 1.0, 4: 1.0, 5: 1.0}
    # AP@20: q1 1; q2 (1/3 + 2/7) / 2; q3 0; q4 1/20; q5 1/2
    assert m["map"][20] == pytest.approx((1 + (1 / 3 + 2 / 7) / 2 + 0 + 1 / 20 + 1 / 2) / 5)
    assert recall_at_k(RANKED, ANSWERS, 20) == 0.8
    assert recall_at_k(RANKED, ANSWERS, 2) == 0.4
    assert mrr(RANKED, ANSWERS) == pytest.approx(0.3766667, abs=1e-6)
    assert per_category_recall(RANKED, ANSWERS, CATS, k=1) == {2: 0.5, 3: 0.0, 4: 0.0, 5: 0.0}
    assert map_at_k(RANKED, ANSWERS, 1) == pytest.approx(0.2)


def test_numpy_input_short_lists_and_repeats():
    arr = np.array(RANKED)
    assert retrieval_metrics(arr, ANSWERS)["recall"][20] == 0.8
    # shorter lists: missing ranks never hit; a repeated correct id counts once in mAP
    assert recall_at_k([["a"], ["z", "b"]], [{"a"}, {"b"}], 1) == 0.5
    assert map_at_k([["a", "a", "b"]], [{"a", "b"}], 3) == pytest.approx((1 + 2 / 3) / 2)
    assert mrr([[], ["q", "r"]], [{"q"}, {"r"}]) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        recall_at_k([["a"]], [{"a"}, {"b"}])


def test_scorer_splits_public_and_private():
    test = ["q1", "q2", "q3", "q4", "q5"]
    cites = set(FILL) | set("abcdef")
    scorer = Scorer(test, cites, ANSWERS, CATS, [True, True, False, False, False])
    data = "gid,cite_gid\n" + "".join(f"{g},{' '.join(r)}\n" for g, r in zip(test, RANKED))
    scored = scorer.score(data.encode())
    assert scored.ok
    assert scored.public["recall20"] == 1.0
    assert scored.public["mrr"] == pytest.approx((1 + 1 / 3) / 2)
    assert scored.private["recall20"] == pytest.approx(2 / 3)
    assert scored.private["mrr"] == pytest.approx((0 + 1 / 20 + 1 / 2) / 3)
    assert fmt(scored.public["mrr"]) == "0.6667" and fmt(scored.private["mrr"]) == "0.1833"
    # row order in the file does not matter
    lines = data.strip().split("\n")
    shuffled = "\n".join([lines[0]] + lines[:0:-1]) + "\n"
    assert scorer.score(shuffled.encode()).private == scored.private


def test_metrics_and_submission_do_not_import_torch():
    code = ("import sys, tmr_lib, tmr_lib.metrics, tmr_lib.submission, leaderboard, leaderboard.cli; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'flask' not in sys.modules, 'flask imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_speed_100k_queries():
    import time

    rng = np.random.default_rng(0)
    cites = np.array([str(1_000_000_000 + i) for i in range(300_000)])
    ranked = cites[rng.integers(0, len(cites), (100_000, 20))].tolist()
    answers = [cites[rng.integers(0, len(cites), 1 + i % 3)].tolist() for i in range(100_000)]
    t0 = time.perf_counter()
    m = retrieval_metrics(ranked, answers, rng.integers(2, 6, 100_000))
    elapsed = time.perf_counter() - t0
    assert 0 <= m["recall"][20] < 0.01
    assert elapsed < 10, f"scoring 100k queries took {elapsed:.1f}s"
