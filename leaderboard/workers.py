"""Upload validation in worker processes, so a flood of huge invalid files cannot stall the web server.

The validator is pure Python and holds the GIL while it reads a file's lines: run inside the
server, three 8 MB files of tiny rows at once made the board page wait for seconds. The web app
(``serve --workers N``, default 1) hands each upload's bytes to a small pool of worker processes
and waits; its own threads stay free to serve pages. The workers:

* are *spawned* (not forked from a threaded server) and hold the test and cite gids only, never
  the answers: validation never needs them;
* run at a lower priority (``nice`` +5), so on a busy machine the pages come first;
* return the report without the file's bytes (the server has them; only a valid file's are
  kept, for the archive);
* cap the work: N validations at a time, the rest wait in line.

A worker that dies (out of memory, killed) is replaced on the next upload; that upload is
validated in the server process instead, so it still gets its verdict. If the workers cannot run
at all (three breaks in a row, or at start: e.g. a script that creates the app at import time
without ``if __name__ == "__main__":``, which a spawned process re-runs), the pool says so once
on stderr and validation stays in the server process.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from tmr_lib.submission import ValidationReport

from .scorer import Scorer, _read_bounded, validate_upload

#: Worker processes the web server validates uploads in (``serve --workers``); 0 = in the server.
DEFAULT_WORKERS = 1
NICE = 5

_STATE: dict[str, Any] = {}


def _init(test_gids: list[str], cite_gids: frozenset[str], n_ids: int, max_bytes: int, nice: int) -> None:
    """Worker start: lower the priority, keep what validation needs (no answers)."""
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    _STATE.update(test=test_gids, cites=cite_gids, n_ids=n_ids, max_bytes=max_bytes)


def _validate(data: bytes, name: str | None) -> ValidationReport:
    """In a worker: the report of one upload, without its bytes (the server has them)."""
    report = validate_upload(data, _STATE["test"], _STATE["cites"], _STATE["n_ids"], _STATE["max_bytes"], name)
    report.data = b""
    if not report.ok:
        report.gids, report.ranked = [], []
    return report


def _ping() -> int:
    return os.getpid()


class ValidationPool:
    """A small pool of validation processes for one competition's scorer (created on first use)."""

    def __init__(self, workers: int = DEFAULT_WORKERS, nice: int = NICE):
        if workers < 1:
            raise ValueError("a validation pool needs at least one worker (0 workers: validate in-process)")
        self.workers, self.nice = int(workers), int(nice)
        self._pool: ProcessPoolExecutor | None = None
        self._key: Any = None
        self._lock = threading.Lock()
        self._breaks = 0
        self.disabled = False

    def _broke(self, at_start: bool = False) -> None:
        """A worker died: drop the pool (a new one on the next upload), or give up on workers."""
        with self._lock:
            self._pool, self._key = None, None
            self._breaks += 1
            if (at_start or self._breaks >= 3) and not self.disabled:
                self.disabled = True
                print("warning: the upload validation workers cannot run (see leaderboard.workers); uploads are "
                      "validated in the server process", file=sys.stderr)

    def _get(self, scorer: Scorer) -> ProcessPoolExecutor:
        ids = scorer.test_gids  # one pool per competition: the key only notices a different scorer
        key = (len(ids), ids[0] if ids else "", ids[-1] if ids else "", len(scorer.cite_set), scorer.n_ids,
               scorer.max_bytes)
        with self._lock:
            if self._pool is None or self._key != key:
                if self._pool is not None:
                    self._pool.shutdown(wait=False, cancel_futures=False)
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=get_context("spawn"), initializer=_init,
                    initargs=(list(scorer.test_gids), frozenset(scorer.cite_set), scorer.n_ids, scorer.max_bytes,
                              self.nice))
                self._key = key
            return self._pool

    def start(self, scorer: Scorer) -> list[int]:
        """Start the workers now (else on the first upload); returns their process ids ([] if they cannot run)."""
        try:
            pool = self._get(scorer)
            return sorted({f.result() for f in [pool.submit(_ping) for _ in range(self.workers)]})
        except BrokenProcessPool:
            self._broke(at_start=True)
            return []

    def validate(self, scorer: Scorer, source: Any, name: str | None = None) -> ValidationReport:
        """What ``scorer.validate(source, name)`` returns, computed in a worker process."""
        data, name = _read_bounded(source, scorer.max_bytes, name)
        if not isinstance(data, bytes) or self.disabled:
            return scorer.validate(data, name)  # a path the validator reports unread, a DataFrame
        try:
            report = self._get(scorer).submit(_validate, data, name).result()
        except BrokenProcessPool:
            self._broke()
            return scorer.validate(data, name)
        self._breaks = 0
        if report.ok:
            report.data = data
        return report

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._key = None, None
