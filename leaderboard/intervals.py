"""95 % bootstrap intervals on the public board (an optional host setting: ``intervals on``).

Each team's best public submission gets the percentile interval of its public Recall@20,
resampling the public queries (:func:`tmr_lib.metrics.paired_bootstrap`, seed
:data:`SEED`, :data:`N_RESAMPLES` resamples). The same seed and the same number of queries
draw the same resamples for every team, so the intervals are paired; each team is also
compared with the team ranked just above it (the paired interval of the difference):
``within_noise_of_above`` is True when that interval holds 0, i.e. the gap may be luck.

Per-query hits are not stored: they are computed from the archived file when first needed
and cached by its sha256 on the competition's scorer (shared by the web app's requests), as
are the intervals. Only public queries are used; nothing per query is shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from tmr_lib.metrics import paired_bootstrap

from .scorer import Scorer, rounded

if TYPE_CHECKING:  # pragma: no cover
    from .core import Competition

N_RESAMPLES = 1000
SEED = 0
LEVEL = 0.95


def _cached(scorer: Scorer, key: tuple, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    cache = scorer.__dict__.setdefault("_intervals", {})
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def _hits(comp: "Competition", scorer: Scorer, sub: dict[str, Any]) -> np.ndarray | None:
    """The public per-query hits of one submission (None when its archived file is unusable)."""
    row = comp.con.execute("SELECT archive FROM submissions WHERE id = ?", (sub["id"],)).fetchone()
    path = Path(comp.path) / row["archive"] if row else None
    cache = scorer.__dict__.get("_public_hits", {})
    if sub["sha256"] not in cache and (path is None or not path.is_file()):
        return None
    hits = scorer.public_query_hits(path, sha256=sub["sha256"])
    return hits if hits is not None and len(hits) else None


def _boot(a: np.ndarray, b: np.ndarray | None = None) -> dict[str, Any]:
    return paired_bootstrap(a, b, n_resamples=N_RESAMPLES, seed=SEED, level=LEVEL)


def attach(comp: "Competition", rows: list[dict[str, Any]], best: list[dict[str, Any]]) -> None:
    """Add ``ci_low``, ``ci_high`` and ``within_noise_of_above`` to each public board row.

    ``best``: each row's counted submission (same order as ``rows``).
    """
    scorer = comp.scorer()
    above: tuple[str, np.ndarray] | None = None
    for row, sub in zip(rows, best):
        row.update(ci_low=None, ci_high=None, within_noise_of_above=None)
        hits = _hits(comp, scorer, sub)
        if hits is None:
            continue
        sha = sub["sha256"]
        own = _cached(scorer, ("own", sha), lambda: _boot(hits))
        row["ci_low"], row["ci_high"] = rounded(own["low"]), rounded(own["high"])
        if above is not None and len(above[1]) == len(hits):
            prev = above[1]
            diff = _cached(scorer, ("diff", above[0], sha), lambda: _boot(prev, hits))
            row["within_noise_of_above"] = not diff["beyond_noise"]
        above = (sha, hits)
