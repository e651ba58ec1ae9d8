"""Retrieval metrics for top-k trademark search (numpy only, vectorised).

Every function takes

* ``ranked_ids`` -- one ranked list of cite gids per query: a list of lists, or a 2-D
  array of strings (shorter lists are allowed; missing ranks never count as hits);
* ``answers`` -- the correct cite gids of each query, in the same order: a list of
  collections (set/list/tuple) or of space-separated strings (the ``answers.csv`` form).

gids are compared as strings (``"1000289808"``); ints are converted with ``str``.

Definitions (the competition's):

* **Recall@k** -- mean over queries of 1 if any correct cite is in the top ``k``, else 0.
* **MRR** -- mean of ``1 / rank`` of the first correct cite in the whole list (0 if none).
* **mAP@k** -- mean over queries of ``sum_r P@r * rel_r / min(n_correct, k)`` for ranks
  ``r <= k``; a repeated id counts once (at its first position).

``retrieval_metrics`` returns plain dicts keyed by metric, then k (OML style)::

    {"n_queries": 1542, "recall": {1: .., 5: .., 10: .., 20: ..}, "mrr": ..,
     "map": {20: ..}, "per_category": {2: .., 3: .., 4: .., 5: ..}}

100,000 queries x 20 ids score in a fraction of a second: ids are packed into one
fixed-width string array and compared against the (padded) answers with broadcasting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "hit_matrix",
    "recall_at_k",
    "mrr",
    "map_at_k",
    "per_category_recall",
    "retrieval_metrics",
    "metrics_from_hits",
    "query_hits",
    "paired_bootstrap",
    "CATEGORY_NAMES",
]

#: The competition's categories of similarity (train.csv / answers.csv ``category``).
from .data import CATEGORIES as CATEGORY_NAMES  # noqa: E402 - one definition for the whole kit


def _as_list(x: Any) -> list[str]:
    if isinstance(x, str):
        return x.split()
    if x is None:
        return []
    if isinstance(x, float) and x != x:  # NaN from pandas
        return []
    if isinstance(x, list) and (not x or type(x[0]) is str):
        return x  # the common case: already a list of str (checked on the first id only)
    return [v if type(v) is str else str(v) for v in x]


def _pack(rows: Sequence[Sequence[str]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """rows -> (strings of shape (n, width), valid mask of shape (n, width))."""
    n = len(rows)
    lengths = np.fromiter((min(len(r), width) for r in rows), dtype=np.int64, count=n)
    if n == 0 or width == 0:
        return np.zeros((n, width), dtype="U1"), np.zeros((n, width), dtype=bool)
    flat = [v for r in rows for v in r[:width]]
    char_width = max(1, max(map(len, flat), default=1))
    packed = np.fromiter(flat, dtype=f"U{char_width}", count=len(flat))
    valid = np.arange(width)[None, :] < lengths[:, None]
    out = np.zeros((n, width), dtype=packed.dtype)
    out[valid] = packed  # row-major fill matches the flattening order
    return out, valid


def _prepare(ranked_ids: Any, answers: Any, k_max: int | None):
    if isinstance(ranked_ids, np.ndarray) and ranked_ids.ndim == 2:
        ranked = ranked_ids.astype(str) if ranked_ids.dtype.kind != "U" else ranked_ids
        if k_max is not None:
            ranked = ranked[:, :k_max]
        r_valid = np.ones(ranked.shape, dtype=bool)
    else:
        rows = [_as_list(r) for r in ranked_ids]
        width = max(map(len, rows), default=0)
        if k_max is not None:
            width = min(width, k_max)
        ranked, r_valid = _pack(rows, width)
    ans_rows = [_as_list(a) for a in answers]
    if len(ans_rows) != ranked.shape[0]:
        raise ValueError(
            f"ranked_ids has {ranked.shape[0]} queries but answers has {len(ans_rows)}"
        )
    a_width = max(map(len, ans_rows), default=0)
    ans, a_valid = _pack(ans_rows, a_width)
    return ranked, r_valid, ans, a_valid


def hit_matrix(ranked_ids: Any, answers: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (n_queries, k) matrix: is the id at this rank a correct cite (first occurrence)?

    Also returns the number of distinct correct cites per query. A correct id repeated
    later in the same list only counts at its first position.
    """
    ranked, r_valid, ans, a_valid = _prepare(ranked_ids, answers, k)
    if ranked.shape[1] == 0 or ans.shape[1] == 0:
        n_correct = a_valid.sum(axis=1)
        return np.zeros(ranked.shape, dtype=bool), n_correct
    match = (ranked[:, :, None] == ans[:, None, :]) & r_valid[:, :, None] & a_valid[:, None, :]
    # Count each correct cite once: keep only its first matching rank.
    match &= np.cumsum(match, axis=1) == 1
    hits = match.any(axis=2)
    # Distinct correct cites (answers could repeat an id).
    dup = (ans[:, :, None] == ans[:, None, :]) & a_valid[:, :, None] & a_valid[:, None, :]
    first = ~np.tril(dup, k=-1).any(axis=2) & a_valid
    return hits, first.sum(axis=1)


def _first_hit_rank(hits: np.ndarray) -> np.ndarray:
    """1-based rank of the first hit per query, 0 where there is none."""
    any_hit = hits.any(axis=1)
    return np.where(any_hit, hits.argmax(axis=1) + 1, 0)


def _recall_from_hits(hits: np.ndarray, k: int) -> float:
    if hits.shape[0] == 0:
        return float("nan")
    return float(hits[:, :k].any(axis=1).mean())


def _mrr_from_hits(hits: np.ndarray) -> float:
    if hits.shape[0] == 0:
        return float("nan")
    first = _first_hit_rank(hits)
    rr = np.zeros(len(first), dtype=np.float64)
    np.divide(1.0, first, out=rr, where=first > 0)
    return float(rr.mean())


def _map_from_hits(hits: np.ndarray, n_correct: np.ndarray, k: int) -> float:
    if hits.shape[0] == 0:
        return float("nan")
    h = hits[:, :k].astype(np.float64)
    if h.shape[1] == 0:
        return 0.0
    ranks = np.arange(1, h.shape[1] + 1, dtype=np.float64)
    precision = np.cumsum(h, axis=1) / ranks
    denom = np.minimum(n_correct, k).astype(np.float64)
    ap = np.zeros(len(h), dtype=np.float64)
    np.divide((precision * h).sum(axis=1), denom, out=ap, where=denom > 0)
    return float(ap.mean())


def recall_at_k(ranked_ids: Any, answers: Any, k: int = 20) -> float:
    """Share of queries with at least one correct cite in the top ``k``."""
    hits, _ = hit_matrix(ranked_ids, answers, k)
    return _recall_from_hits(hits, k)


def mrr(ranked_ids: Any, answers: Any, k: int | None = None) -> float:
    """Mean reciprocal rank of the first correct cite (0 for a query without one).

    ``k`` cuts the lists first (MRR@k); by default the whole list counts.
    """
    hits, _ = hit_matrix(ranked_ids, answers, k)
    return _mrr_from_hits(hits)


def map_at_k(ranked_ids: Any, answers: Any, k: int = 20) -> float:
    """Mean average precision at ``k`` (normalised by ``min(n_correct, k)``)."""
    hits, n_correct = hit_matrix(ranked_ids, answers, k)
    return _map_from_hits(hits, n_correct, k)


def per_category_recall(
    ranked_ids: Any, answers: Any, categories: Iterable[Any], k: int = 20
) -> dict[int, float]:
    """Recall@k per category, e.g. ``{2: 0.91, 3: 0.55, 4: 0.80, 5: 0.62}`` (sorted keys)."""
    hits, _ = hit_matrix(ranked_ids, answers, k)
    return _per_category(hits, categories, k)


def _per_category(hits: np.ndarray, categories: Iterable[Any], k: int) -> dict[int, float]:
    cats = np.asarray([int(c) for c in categories], dtype=np.int64)
    if len(cats) != hits.shape[0]:
        raise ValueError(f"categories has {len(cats)} entries for {hits.shape[0]} queries")
    found = hits[:, :k].any(axis=1)
    return {int(c): float(found[cats == c].mean()) for c in np.unique(cats)}


def retrieval_metrics(
    ranked_ids: Any,
    answers: Any,
    categories: Iterable[Any] | None = None,
    ks: Sequence[int] = (1, 5, 10, 20),
    category_k: int | None = None,
) -> dict[str, Any]:
    """All metrics at once, as plain dicts (one hit matrix is shared by every metric).

    ``per_category`` holds Recall@``category_k`` (default: the largest of ``ks``).
    ``map`` is reported at the largest k.
    """
    hits, n_correct = hit_matrix(ranked_ids, answers, None)
    return metrics_from_hits(hits, n_correct, categories, ks, category_k)


def metrics_from_hits(
    hits: np.ndarray,
    n_correct: np.ndarray,
    categories: Iterable[Any] | None = None,
    ks: Sequence[int] = (1, 5, 10, 20),
    category_k: int | None = None,
) -> dict[str, Any]:
    """``retrieval_metrics`` from a :func:`hit_matrix` (e.g. one matrix, several query subsets)."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError("ks must hold positive integers")
    k_top = ks[-1]
    out: dict[str, Any] = {
        "n_queries": int(hits.shape[0]),
        "recall": {k: _recall_from_hits(hits, k) for k in ks},
        "mrr": _mrr_from_hits(hits),
        "map": {k_top: _map_from_hits(hits, n_correct, k_top)},
    }
    if categories is not None:
        out["per_category"] = _per_category(hits, categories, category_k or k_top)
    return out


def query_hits(ranked_ids: Any, answers: Any, k: int = 20) -> np.ndarray:
    """Per query, 1.0 if a correct cite is in the top ``k`` else 0.0: what Recall@k averages
    (and what :func:`paired_bootstrap` resamples)."""
    hits, _ = hit_matrix(ranked_ids, answers, k)
    return hits[:, :k].any(axis=1).astype(np.float64)


def paired_bootstrap(a: Any, b: Any | None = None, n_resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """The mean of ``b - a`` over queries with a percentile bootstrap interval.

    ``a`` and ``b`` are per-query scores of two submissions on the *same* queries (e.g.
    :func:`query_hits`): resampling the queries once for both keeps the pairing, so the
    interval is of the difference, far narrower than two separate intervals. With ``b=None``,
    the interval of ``a``'s own mean. ``beyond_noise`` is True when the interval excludes 0.

        >>> paired_bootstrap(query_hits(plain, answers), query_hits(post, answers))
        {'diff': 0.012, 'low': 0.004, 'high': 0.021, 'beyond_noise': True, ...}
    """
    x = np.asarray(a, dtype=np.float64)
    if b is not None and np.shape(b) != x.shape:
        raise ValueError(f"paired scores need the same queries: {x.shape} vs {np.shape(b)}")
    d = x if b is None else np.asarray(b, dtype=np.float64) - x
    if n_resamples < 1000:
        raise ValueError("use at least 1,000 resamples for a 95 % interval")
    n = len(d)
    if n == 0:
        raise ValueError("no queries to resample")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, 256):  # blocks keep the index matrix small for 100k queries
        stop = min(n_resamples, start + 256)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"diff": float(d.mean()), "low": float(low), "high": float(high),
            "beyond_noise": bool(low > 0 or high < 0), "n_queries": n, "n_resamples": int(n_resamples),
            "level": level, "seed": seed}
