"""``verify`` and ``verify --repair``: archive, database, log and scores checked against each other.

What is checked:

* database -> archive: every submission's file exists and matches its sha256;
* archive -> database: every ``archive/<sha256>.csv`` belongs to a submission (an *orphan* is
  left by a crash between the file's rename and the COMMIT: that submission was never recorded);
* leftover ``archive/.incoming.*`` temporary files (a crash while writing a file);
* ``log.jsonl`` <-> the events table: every event exactly once and identical, no other line;
* scores <-> a fresh rescoring of a sample of the archived files.

``repair`` moves orphans into ``recovered/<time>/`` (a participant's file is never deleted),
removes temporary files, rewrites the log from the events table (the old log is kept beside
the orphans), records a ``repair`` event, then verifies again. A score that differs from a
fresh rescoring is not "repaired" silently: it is reported, and ``rescore`` adds a new run.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import storage
from .rules import iso

if TYPE_CHECKING:  # pragma: no cover
    from .core import Competition

RECOVERED = "recovered"
#: How many archived files ``verify`` rescores by default (0 = all).
DEFAULT_SAMPLE = 20


@dataclass(frozen=True)
class Finding:
    kind: str  #: missing_file, altered_file, orphan_file, temp_file, log_missing, log_extra, log_bad, log_differs, score_differs
    message: str
    path: str = ""

    def __str__(self) -> str:
        return self.message


def check_archive(con: sqlite3.Connection, directory: Path) -> list[Finding]:
    """Database -> archive (missing, altered), then archive -> database (orphans, temp files).

    The listing and the query run inside a write transaction, so a submission being recorded
    right now (file renamed, COMMIT pending) is never mistaken for an orphan.
    """
    out = []
    for s in con.execute("SELECT id, sha256, archive FROM submissions ORDER BY id"):
        path = directory / s["archive"]
        if not path.is_file():
            out.append(Finding("missing_file", f"submission #{s['id']}: {s['archive']} is missing", s["archive"]))
        elif storage.sha256_file(path) != s["sha256"]:
            out.append(Finding("altered_file", f"submission #{s['id']}: {s['archive']} does not match its sha256",
                               s["archive"]))
    with storage.write_transaction(con) as c:
        known = {r[0] for r in c.execute("SELECT archive FROM submissions")}
        names = sorted(os.listdir(directory / storage.ARCHIVE)) if (directory / storage.ARCHIVE).is_dir() else []
    for name in names:
        rel = f"{storage.ARCHIVE}/{name}"
        if name.startswith(".incoming."):
            out.append(Finding("temp_file", f"{rel}: leftover temporary file from an interrupted submission", rel))
        elif rel not in known:
            out.append(Finding("orphan_file", f"{rel}: not recorded in the database (orphan: a submission "
                                              "interrupted before it was recorded)", rel))
    return out


def _read_log(path: Path) -> tuple[dict[int, list[tuple[int, dict[str, Any]]]], list[Finding]]:
    """Log lines by event id (line number, parsed line), and the lines that cannot be read."""
    by_id: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    bad: list[Finding] = []
    if not path.is_file():
        return by_id, bad
    with open(path, "rb") as fh:
        for ln, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                ev = json.loads(raw)
                by_id.setdefault(int(ev["id"]), []).append((ln, ev))
            except (ValueError, KeyError, TypeError):
                bad.append(Finding("log_bad", f"{storage.LOG_NAME} line {ln}: not a complete event line "
                                              "(cut by a crash, or edited)"))
    return by_id, bad


def check_log(con: sqlite3.Connection, directory: Path) -> list[Finding]:
    """log.jsonl <-> the events table: every event once and identical, no line for no event."""
    by_id, out = _read_log(directory / storage.LOG_NAME)
    seen = set()
    for row in con.execute("SELECT * FROM events ORDER BY id"):
        seen.add(row["id"])
        lines = by_id.get(row["id"], [])
        what = f"event #{row['id']} ({row['action']}{', ' + row['team'] if row['team'] else ''}, {row['at']})"
        if not lines:
            out.append(Finding("log_missing", f"{storage.LOG_NAME}: {what} is missing"))
            continue
        expected = json.loads(storage.event_line(row))
        for ln, ev in lines:
            if ev != expected:
                out.append(Finding("log_differs", f"{storage.LOG_NAME} line {ln}: differs from {what}"))
        if len(lines) > 1:
            out.append(Finding("log_extra", f"{storage.LOG_NAME}: {what} appears {len(lines)} times "
                                            f"(lines {', '.join(str(ln) for ln, _ in lines)})"))
    for eid in sorted(set(by_id) - seen):
        for ln, _ in by_id[eid]:
            out.append(Finding("log_extra", f"{storage.LOG_NAME} line {ln}: event #{eid} is not in the database"))
    return out


def check_scores(comp: "Competition", sample: int = DEFAULT_SAMPLE, seed: int = 0) -> list[Finding]:
    """Rescore ``sample`` archived files (0 = all; always the newest one) and compare with the stored run."""
    rows = comp.con.execute(
        "SELECT s.id, s.sha256, s.archive, sc.public_recall, sc.public_mrr, sc.private_recall, sc.private_mrr "
        "FROM submissions s JOIN scores sc ON sc.submission_id = s.id "
        "AND sc.run = (SELECT MAX(run) FROM scores WHERE submission_id = s.id) ORDER BY s.id").fetchall()
    if sample and len(rows) > sample:
        rows = sorted(random.Random(seed).sample(rows[:-1], sample - 1) + [rows[-1]], key=lambda r: r["id"])
    scorer = comp.scorer()
    out = []
    for r in rows:
        path = comp.path / r["archive"]
        if not path.is_file() or storage.sha256_file(path) != r["sha256"]:
            continue  # reported by check_archive
        fresh = scorer.score(path)
        new = ((fresh.public or {}).get("recall20"), (fresh.public or {}).get("mrr"),
               (fresh.private or {}).get("recall20"), (fresh.private or {}).get("mrr"))
        old = (r["public_recall"], r["public_mrr"], r["private_recall"], r["private_mrr"])
        if any((a is None) != (b is None) or (a is not None and abs(a - b) > 1e-9) for a, b in zip(old, new)):
            out.append(Finding("score_differs", f"submission #{r['id']}: stored scores differ from a fresh "
                                                "rescoring of its archived file (run `rescore`)"))
    return out


def verify(comp: "Competition", sample: int = DEFAULT_SAMPLE) -> list[Finding]:
    """Every problem found, archive first, then the log, then the scores."""
    return (check_archive(comp.con, comp.path) + check_log(comp.con, comp.path)
            + check_scores(comp, sample))


def repair(comp: "Competition") -> list[str]:
    """Fix what a crash leaves (see the module docstring); returns what was done, one line each."""
    done: list[str] = []
    stamp = iso(comp.now()).replace(":", "").replace("-", "").replace(".", "_")
    aside = comp.path / RECOVERED / stamp
    with comp._write() as con:  # no submission can be half-recorded while we move files
        known = {r[0] for r in con.execute("SELECT archive FROM submissions")}
        archive = comp.path / storage.ARCHIVE
        for name in sorted(os.listdir(archive)) if archive.is_dir() else []:
            rel = f"{storage.ARCHIVE}/{name}"
            if name.startswith(".incoming."):
                os.unlink(archive / name)
                done.append(f"removed leftover temporary file {rel}")
            elif rel not in known:
                aside.mkdir(parents=True, exist_ok=True)
                os.replace(archive / name, aside / name)
                done.append(f"moved orphan {rel} to {RECOVERED}/{stamp}/{name}")
    if check_log(comp.con, comp.path):
        n = storage.rewrite_log(comp.con, comp.path, keep_as=aside / storage.LOG_NAME)
        done.append(f"rewrote {storage.LOG_NAME} from the events table ({n} events; "
                    f"the old one is {RECOVERED}/{stamp}/{storage.LOG_NAME})")
    if done:
        comp._event("host", "repair", detail={"actions": done})
    return done
