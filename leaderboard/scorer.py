"""The scorer: one validation + one metric code path for the notebook, the CLI and the web page.

Validation is :func:`tmr_lib.submission.validate_submission` (it never sees the answers);
scoring is :func:`tmr_lib.metrics.retrieval_metrics`, once on the public split and once on
the private split. Nothing here returns per-query results to a participant, so a score cannot
be turned into an answer key beyond what the (rounded) aggregate itself reveals; the one
per-query vector (:meth:`Scorer.public_query_hits`, public queries only) feeds the bootstrap
interval of :mod:`leaderboard.intervals` and never leaves the process.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np

from tmr_lib.metrics import hit_matrix, metrics_from_hits, query_hits
from tmr_lib.submission import (
    N_IDS,
    ValidationReport,
    check_encoding,
    size_limit,
    split_lines,
    validate_submission,
)

#: Scores are shown, ranked and compared at this many decimals (a blunt tool against probing).
DECIMALS = 4
KS = (1, 5, 10, 20)
PRIMARY_K = 20


def rounded(x: float | None) -> float | None:
    return None if x is None else round(float(x), DECIMALS)


def fmt(x: float | None) -> str:
    """A score as shown everywhere: fixed 4 decimals, an em dash when absent."""
    return "—" if x is None else f"{float(x):.{DECIMALS}f}"


def line_cap(n_test: int) -> int:
    """Lines past which a file is refused after counting them: twice a valid file's, plus 1,000.

    A valid file has exactly ``1 + n_test`` non-blank lines (the header and one per test gid);
    any more means a repeated or unknown gid, so such a file can never be valid. Up to this
    cap it still gets the full line-by-line report (a file pasted twice is a common mistake);
    past it (2.8M tiny rows in 8 MB) reading every line would only cost seconds of CPU.
    """
    return 2 * (int(n_test) + 1) + 1000


def too_many_lines(data: bytes, n_test: int, name: str | None = None) -> ValidationReport | None:
    """A rejection report for a file with more non-blank lines than :func:`line_cap`, else None.

    The first test is three ``bytes.count`` calls (C speed); only a file past the cap is decoded
    and its non-blank lines counted exactly as the validator counts them (any line ending; a
    line of spaces is blank), so a file the validator would accept is never refused here.
    """
    cap = line_cap(n_test)
    if data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n") < cap:
        return None
    issues, text = check_encoding(data)
    if text is None:
        return None  # the validator reports the encoding problem at once, without reading lines
    n_lines = sum(map(bool, map(str.strip, split_lines(text))))
    if n_lines <= cap:
        return None
    report = ValidationReport(source=name or "upload")
    report.n_bytes, report.n_rows = len(data), max(0, n_lines - 1)
    report.sha256 = hashlib.sha256(data).hexdigest()
    report.add(None, "too_many_lines",
               f"file has {n_lines:,} lines; a valid file has {n_test + 1:,} (the header and one line per test "
               f"gid): it was refused after counting its lines, without checking each one (more than "
               f"{cap:,} lines cannot be valid: a file for another competition, or rows repeated?)")
    return report


def validate_upload(source: Any, test_gids: Sequence[str], cite_set: Any, n_ids: int, max_bytes: int,
                    name: str | None = None) -> ValidationReport:
    """:func:`tmr_lib.submission.validate_submission` behind the early line cap (:func:`too_many_lines`).

    Paths and file objects are read here first (within the size cap, as the validator would), so
    the command line, the notebook and the web app give the same verdict on the same file.
    """
    source, name = _read_bounded(source, max_bytes, name)
    if isinstance(source, bytes) and len(source) <= max_bytes:
        early = too_many_lines(source, len(test_gids), name)
        if early is not None:
            return early
    return validate_submission(source, test_gids, cite_set, n_ids=n_ids, max_bytes=max_bytes, name=name)


def _read_bounded(source: Any, max_bytes: int, name: str | None) -> tuple[Any, str | None]:
    """(bytes, name) for raw bytes, a readable file within the cap or a file object; else unchanged.

    Whatever the validator reports unread (a missing file, a folder, a file over the cap) is left
    to it, so its messages stay the same.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if not path.is_file() or path.stat().st_size > max_bytes:
                return source, name
            return path.read_bytes(), name or path.name
        except OSError:
            return source, name
    if hasattr(source, "read"):
        data = source.read(max_bytes + 1)
        if isinstance(data, str):
            data = data.encode("utf-8")
        return data, name or str(getattr(source, "name", "") or "upload")
    return source, name


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
        return validate_upload(source, self.test_gids, self.cite_set, self.n_ids, self.max_bytes, name)

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
