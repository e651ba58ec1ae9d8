"""``verify`` and ``verify --repair``: archive, database, log and scores checked against each other.

What is checked:

* database -> archive: every submission's file exists and matches its sha256;
* archive -> database: every ``archive/<sha256>.csv`` belongs to a submission (an *orphan* is
  left by a crash between the file's rename and the COMMIT: that submission was never recorded);
* leftover ``archive/.incoming.*`` temporary files (a crash while writing a file);
* every accepted file has its compressed copy in the database (``archive_copies``);
* the competition folder, ``archive/`` and the database can be written (a read-only folder
  makes every submission fail), and no other process holds the database's write lock;
* ``log.jsonl`` <-> the events table: every event exactly once and identical, no other line;
* scores <-> a fresh rescoring of a sample of the archived files.

``repair`` moves orphans into ``recovered/<time>/`` (a participant's file is never deleted),
removes temporary files, restores a deleted or altered archive file from its copy in the
database (an altered one is moved aside first), adds the copies an older database lacks, gives
the owner write permission back on the folders and the database, rewrites the log from the
events table (the old log is kept beside the orphans), records a ``repair`` event, then
verifies again. A score that differs from a fresh rescoring is not "repaired" silently: it is
reported, and ``rescore`` adds a new run. A write lock held by another process cannot be
repaired from here: it is reported until its holder lets go.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import storage
from .errors import DatabaseBusy, StorageError
from .rules import iso

if TYPE_CHECKING:  # pragma: no cover
    from .core import Competition

RECOVERED = "recovered"
#: How many archived files ``verify`` rescores by default (0 = all).
DEFAULT_SAMPLE = 20


@dataclass(frozen=True)
class Finding:
    kind: str  #: missing_file, altered_file, orphan_file, temp_file, copy_missing, not_writable, lock_held,
    #: log_missing, log_extra, log_bad, log_differs, score_differs
    message: str
    path: str = ""

    def __str__(self) -> str:
        return self.message


def _restorable(con: sqlite3.Connection, sha: str) -> str:
    return (" (its copy in the database is intact: `verify --repair` restores it)" if storage.read_copy(con, sha)
            else " (no copy in the database: restore it from a backup)")


def check_archive(con: sqlite3.Connection, directory: Path, wait_s: float = storage.DEFAULT_WAIT) -> list[Finding]:
    """Database -> archive (missing, altered), then archive -> database (orphans, temp files).

    The listing and the query run inside a write transaction, so a submission being recorded
    right now (file renamed, COMMIT pending) is never mistaken for an orphan. When another
    process holds the write lock (or the database cannot be written) that is a finding too, and
    the files are still listed, each with a caveat: one may belong to a submission in progress.
    """
    out = []
    for s in con.execute("SELECT id, sha256, archive FROM submissions ORDER BY id"):
        path = directory / s["archive"]
        if not path.is_file():
            out.append(Finding("missing_file", f"submission #{s['id']}: {s['archive']} is missing"
                               + _restorable(con, s["sha256"]), s["archive"]))
        elif storage.sha256_file(path) != s["sha256"]:
            out.append(Finding("altered_file", f"submission #{s['id']}: {s['archive']} does not match its sha256"
                               + _restorable(con, s["sha256"]), s["archive"]))
    held, known, names = "", None, []
    try:
        with storage.write_transaction(con, wait_s) as c:
            known = {r[0] for r in c.execute("SELECT archive FROM submissions")}
            names = _archive_names(directory)
    except DatabaseBusy:
        out.append(Finding("lock_held", f"another process has held the database's write lock for more than "
                                        f"{wait_s:g} s (a stuck process or an open sqlite3 shell): every "
                                        "submission is refused until it lets go"))
        held = " (the write lock is held elsewhere: it may still belong to a submission in progress)"
    except StorageError as exc:
        out.append(Finding("not_writable", f"{storage.DB_NAME} cannot be written ({exc.WHY[exc.kind]}): every "
                                           "submission fails until it can", storage.DB_NAME))
    if known is None:  # listed without the lock
        known = {r[0] for r in con.execute("SELECT archive FROM submissions")}
        names = _archive_names(directory)
    for name in names:
        rel = f"{storage.ARCHIVE}/{name}"
        if name.startswith(".incoming."):
            out.append(Finding("temp_file", f"{rel}: leftover temporary file from an interrupted submission{held}",
                               rel))
        elif rel not in known:
            out.append(Finding("orphan_file", f"{rel}: not recorded in the database (orphan: a submission "
                                              f"interrupted before it was recorded){held}", rel))
    return out


def _archive_names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory / storage.ARCHIVE)) if (directory / storage.ARCHIVE).is_dir() else []


def check_copies(con: sqlite3.Connection) -> list[Finding]:
    """Every accepted file has its compressed copy in the database (what restores a lost file)."""
    have = storage.copied_shas(con)
    return [Finding("copy_missing", f"submission #{r['id']}: no copy of {r['archive']} in the database (made before "
                                    "copies were kept): `verify --repair` adds one from the archived file",
                    r["archive"])
            for r in con.execute("SELECT id, sha256, archive FROM submissions ORDER BY id") if r["sha256"] not in have]


def check_writable(directory: Path) -> list[Finding]:
    """The competition folder and ``archive/`` accept a new file (a probe, created and removed at once)."""
    out = []
    for folder, rel in ((directory, "the competition folder"), (directory / storage.ARCHIVE, f"{storage.ARCHIVE}/")):
        if not folder.is_dir():
            out.append(Finding("not_writable", f"{rel} is missing: every submission fails", str(folder)))
            continue
        try:
            fd, probe = tempfile.mkstemp(prefix=".verify-probe.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            out.append(Finding("not_writable", f"{rel} cannot be written ({exc.strerror}): every submission fails "
                                               "until it can (`verify --repair` gives its owner write permission "
                                               "back; a read-only file system must be remounted)", str(folder)))
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
    """Every problem found: folders, archive, copies, then the log, then the scores."""
    return (check_writable(comp.path) + check_archive(comp.con, comp.path, comp.wait) + check_copies(comp.con)
            + check_log(comp.con, comp.path) + check_scores(comp, sample))


def _make_writable(comp: "Competition") -> list[str]:
    """Give the owner write permission back on the folders and the database (reopened if it changed)."""
    done = []
    targets = [(comp.path, "the competition folder", 0o700),
               (comp.path / storage.ARCHIVE, f"{storage.ARCHIVE}/", 0o700), (comp.db_path, storage.DB_NAME, 0o600)]
    for path, rel, bits in targets:
        try:
            st = path.stat()
        except OSError:
            continue
        mode = st.st_mode & 0o777
        if (mode & bits) == bits or st.st_uid != os.geteuid():
            continue
        try:
            os.chmod(path, mode | bits)
        except OSError as exc:
            done.append(f"could not make {rel} writable ({exc.strerror})")
            continue
        done.append(f"gave the owner write permission on {rel} back (mode {mode:o} -> {mode | bits:o})")
    if any(d.startswith("gave") for d in done):  # a connection opened read-only stays so: open a new one
        comp.con.close()
        comp.con = storage.connect(comp.db_path, comp.wait)
    return done


def _restore(con: sqlite3.Connection, directory: Path, aside: Path, stamp: str) -> list[str]:
    """Restore missing or altered archive files from their copies (an altered one moved aside first)."""
    done = []
    for s in con.execute("SELECT id, sha256, archive FROM submissions ORDER BY id").fetchall():
        path = directory / s["archive"]
        if path.is_file() and storage.sha256_file(path) == s["sha256"]:
            continue
        data = storage.read_copy(con, s["sha256"])
        if data is None:
            continue  # still reported by verify: only a backup can bring it back
        if path.exists():
            aside.mkdir(parents=True, exist_ok=True)
            os.replace(path, aside / f"altered-{path.name}")
            done.append(f"moved the altered {s['archive']} to {RECOVERED}/{stamp}/altered-{path.name}")
        storage.write_archive(data, path)
        done.append(f"restored {s['archive']} (submission #{s['id']}) from its copy in the database")
    return done


def _add_copies(con: sqlite3.Connection, directory: Path) -> list[str]:
    """Copies for the intact archived files of an older database."""
    storage.ensure_copies(con)
    have, n = storage.copied_shas(con), 0
    for s in con.execute("SELECT sha256, archive FROM submissions ORDER BY id").fetchall():
        path = directory / s["archive"]
        if s["sha256"] in have or not path.is_file():
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == s["sha256"]:
            storage.insert_copy(con, s["sha256"], data)
            have.add(s["sha256"])
            n += 1
    return [f"added the database copies of {n} archived file(s)"] if n else []


def repair(comp: "Competition") -> list[str]:
    """Fix what a crash leaves (see the module docstring); returns what was done, one line each."""
    done: list[str] = _make_writable(comp)
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
        done += _restore(con, comp.path, aside, stamp)
        done += _add_copies(con, comp.path)
    if check_log(comp.con, comp.path):
        n = storage.rewrite_log(comp.con, comp.path, keep_as=aside / storage.LOG_NAME)
        done.append(f"rewrote {storage.LOG_NAME} from the events table ({n} events; "
                    f"the old one is {RECOVERED}/{stamp}/{storage.LOG_NAME})")
    if done:
        comp._event("host", "repair", detail={"actions": done})
    return done
