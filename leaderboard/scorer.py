"""The scorer: one validation + one metric code path for the notebook, the CLI and the web page.

Validation is :func:`tmr_lib.submission.validate_submission` (it never sees the answers);
scoring is :func:`tmr_lib.metrics.retrieval_metrics`, once on the public split and once on
the private split. Nothing here returns per-query results to a participant, so a score cannot
be turned into an answer key beyond what the (rounded) aggregate itself reveals; the one
per-query vector (:meth:`Scorer.public_query_hits`, public queries only) feeds the bootstrap
interval of :mod:`leaderboard.intervals` and never leaves the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tmr_lib.metrics import hit_matrix, metrics_from_hits, query_hits
from tmr_lib.submission import N_IDS, ValidationReport, size_limit, validate_submission

#: Scores are shown, ranked and compared at this many decimals (a blunt tool against probing).
DECIMALS = 4
KS = (1, 5, 10, 20)
PRIMARY_K = 20


def rounded(x: float | None) -> float | None:
    return None if x is None else round(float(x), DECIMALS)


def fmt(x: float | None) -> str:
    """A score as shown everywhere: fixed 4 decimals, an em dash when absent."""
    return "—" if x is None else f"{float(x):.{DECIMALS}f}"


@dataclass
class Scored:
    """The result of scoring one file: the validation report and, when valid, both splits."""

    report: ValidationReport
    public: dict[str, Any] | None = None
    private: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.report.ok


def _split_summary(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "n": m["n_queries"],
        "recall20": m["recall"][PRIMARY_K],
        "mrr": m["mrr"],
        "recall": {str(k): v for k, v in m["recall"].items()},
        "map20": m["map"][PRIMARY_K],
        "per_category": {str(k): v for k, v in m.get("per_category", {}).items()},
    }


class Scorer:
    """Validates and scores submissions for one competition (answers held in memory only)."""

    def __init__(
        self,
        test_gids: Sequence[str],
        cite_gids: Sequence[str] | set[str],
        answers: Sequence[Any],
        categories: Sequence[int],
        public: Sequence[bool],
        n_ids: int = N_IDS,
    ):
        self.test_gids = [str(g) for g in test_gids]
        self.cite_set = cite_gids if isinstance(cite_gids, (set, frozenset)) else {str(c) for c in cite_gids}
        self.answers = list(answers)
        self.categories = np.asarray([int(c) for c in categories], dtype=np.int64)
        self.public = np.asarray(public, dtype=bool)
        self.n_ids = n_ids
        n = len(self.test_gids)
        if not (len(self.answers) == len(self.categories) == len(self.public) == n):
            raise ValueError("test_gids, answers, categories and public must have the same length")
        self.max_bytes = size_limit(n, n_ids)

    def validate(self, source: Any, name: str | None = None) -> ValidationReport:
        return validate_submission(
            source, self.test_gids, self.cite_set, n_ids=self.n_ids, max_bytes=self.max_bytes, name=name
        )

    def score_report(self, report: ValidationReport) -> Scored:
        if not report.ok:
            return Scored(report)
        hits, n_correct = hit_matrix(report.ranked_for(self.test_gids), self.answers)
        out = Scored(report)
        for split, mask in (("public", self.public), ("private", ~self.public)):
            if not mask.any():
                continue
            m = metrics_from_hits(hits[mask], n_correct[mask], self.categories[mask], ks=KS)
            setattr(out, split, _split_summary(m))
        return out

    def public_query_hits(self, source: Any, sha256: str | None = None) -> np.ndarray | None:
        """Per *public* query, 1.0 when a correct cite is in the top 20 (what public Recall@20
        averages); None for an invalid file. Cached by the file's sha256 (archived files never
        change), so a known ``sha256`` skips reading the file."""
        cache = self.__dict__.setdefault("_public_hits", {})
        if sha256 is not None and sha256 in cache:
            return cache[sha256]
        report = self.validate(source)
        if not report.ok:
            return None
        if report.sha256 not in cache:
            hits = query_hits(report.ranked_for(self.test_gids), self.answers, PRIMARY_K)
            cache[report.sha256] = hits[self.public]
        return cache[report.sha256]

    def score(self, source: Any, name: str | None = None) -> Scored:
        """Validate, then (only if valid) score on both splits."""
        return self.score_report(self.validate(source, name=name))
