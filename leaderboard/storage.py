"""Storage: the SQLite database (schema, append-only triggers, transactions), the archive of
accepted files and the human-readable ``log.jsonl``.

Layout of a competition directory::

    leaderboard.sqlite3   settings, queries + answers + split, cites, teams, submissions,
                          scores, selections and the append-only event log
    archive/<sha256>.csv  every accepted file, read-only, named by its hash
    log.jsonl             a human-readable copy of the event log (one JSON object a line)
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import DatabaseBusy, StorageError

try:  # POSIX: serialise appends to log.jsonl between processes
    import fcntl
except ImportError:  # pragma: no cover - Windows: appends are still O_APPEND, one write each
    fcntl = None

DB_NAME = "leaderboard.sqlite3"
LOG_NAME = "log.jsonl"
ARCHIVE = "archive"
DEFAULT_ROOT = "competitions"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE queries (
    pos INTEGER PRIMARY KEY, gid TEXT NOT NULL UNIQUE,
    split TEXT NOT NULL CHECK (split IN ('public', 'private')),
    category INTEGER NOT NULL, answer TEXT NOT NULL);
CREATE TABLE cites (gid TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE teams (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, name_key TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, team_id INTEGER NOT NULL REFERENCES teams(id),
    submitted_at TEXT NOT NULL, quota_day TEXT NOT NULL, filename TEXT NOT NULL,
    note TEXT NOT NULL, sha256 TEXT NOT NULL, n_bytes INTEGER NOT NULL, n_rows INTEGER NOT NULL,
    archive TEXT NOT NULL, via TEXT NOT NULL);
CREATE INDEX submissions_team_day ON submissions(team_id, quota_day);
CREATE TABLE scores (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    submission_id INTEGER NOT NULL REFERENCES submissions(id), run INTEGER NOT NULL,
    scored_at TEXT NOT NULL, public_recall REAL, public_mrr REAL,
    private_recall REAL, private_mrr REAL, detail TEXT NOT NULL,
    UNIQUE (submission_id, run));
CREATE TABLE selections (
    team_id INTEGER NOT NULL REFERENCES teams(id),
    submission_id INTEGER NOT NULL REFERENCES submissions(id),
    PRIMARY KEY (team_id, submission_id));
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, team TEXT, submission_id INTEGER, detail TEXT NOT NULL);
"""
#: Added after the first release: created by :func:`ensure_writeups` in older databases too.
WRITEUPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS writeups (
    id INTEGER PRIMARY KEY AUTOINCREMENT, team_id INTEGER NOT NULL REFERENCES teams(id),
    submission_id INTEGER REFERENCES submissions(id), written_at TEXT NOT NULL,
    body TEXT NOT NULL, sha256 TEXT NOT NULL, via TEXT NOT NULL);
"""
#: Added later too: a compressed copy of every accepted file, so ``verify --repair`` can restore a
#: deleted or altered ``archive/<sha256>.csv`` (created by :func:`ensure_copies` in older databases).
COPIES_SCHEMA = """
CREATE TABLE IF NOT EXISTS archive_copies (
    sha256 TEXT PRIMARY KEY, n_bytes INTEGER NOT NULL, zlib BLOB NOT NULL) WITHOUT ROWID;
"""
APPEND_ONLY = ("queries", "cites", "submissions", "scores", "events", "writeups", "archive_copies")


def trigger_statements(tables: tuple[str, ...] = APPEND_ONLY) -> list[str]:
    """One ``CREATE TRIGGER`` per table and operation that refuses UPDATE and DELETE."""
    return [f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
            for table in tables for op in ("UPDATE", "DELETE")]


def append_only_triggers(tables: tuple[str, ...] = APPEND_ONLY) -> str:
    return "\n".join(trigger_statements(tables))


# ----------------------------------------------------------------------------------------
# the database
# ----------------------------------------------------------------------------------------
#: Seconds a write waits for another process's write lock before giving up (DatabaseBusy).
DEFAULT_WAIT = 60.0


def default_wait() -> float:
    """$TMR_LEADERBOARD_WAIT (seconds) when set and valid, else :data:`DEFAULT_WAIT`."""
    try:
        value = float(os.environ.get("TMR_LEADERBOARD_WAIT", ""))
    except ValueError:
        return DEFAULT_WAIT
    return value if value >= 0 else DEFAULT_WAIT


def is_busy_error(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc))


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


def storage_error(exc: BaseException) -> StorageError | None:
    """The :class:`StorageError` an exception means (disk full, read-only, I/O), or None for any other."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in _FULL_ERRNOS:
            return StorageError("full", os.strerror(exc.errno))
        if exc.errno in _READ_ONLY_ERRNOS:
            return StorageError("read_only", os.strerror(exc.errno))
        if exc.errno == errno.EIO:
            return StorageError("io", os.strerror(exc.errno))
        return None
    if isinstance(exc, sqlite3.DatabaseError) and not is_busy_error(exc):
        text = str(exc).lower()
        if "full" in text:
            return StorageError("full", "database or disk is full")
        if "readonly" in text or "read-only" in text:
            return StorageError("read_only", "attempt to write a read-only database")
        if "disk i/o" in text or "unable to open" in text:
            return StorageError("io", str(exc))
    return None


def connect(path: Path, wait_s: float | None = None) -> sqlite3.Connection:
    wait_s = default_wait() if wait_s is None else wait_s
    con = sqlite3.connect(str(path), timeout=wait_s, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    con.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
    con.execute("PRAGMA foreign_keys = ON")
    con.execute("PRAGMA synchronous = FULL")
    return con


@contextmanager
def write_transaction(con: sqlite3.Connection, wait_s: float = DEFAULT_WAIT,
                      undo: list[Callable[[], None]] | None = None) -> Iterator[sqlite3.Connection]:
    """One serialised write transaction (BEGIN IMMEDIATE takes the write lock up front).

    A lock held elsewhere for longer than the connection's busy timeout raises
    :class:`DatabaseBusy` before anything is written. When the body or the COMMIT fails, the
    ``undo`` callables (e.g. removing a file written for this transaction) run first, then the
    ROLLBACK; a full disk, a read-only folder or an I/O error becomes :class:`StorageError`.
    """
    try:
        con.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if is_busy_error(exc):
            raise DatabaseBusy(wait_s) from None
        err = storage_error(exc)
        if err is not None:
            raise err from exc
        raise
    try:
        yield con
        con.execute("COMMIT")
    except BaseException as exc:
        for step in reversed(undo or []):
            try:
                step()
            except OSError:
                pass  # verify reports (and --repair moves aside) whatever could not be undone
        if con.in_transaction:  # SQLite may have rolled back already (a full disk at COMMIT)
            try:
                con.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        err = storage_error(exc)
        if err is not None and err is not exc:
            raise err from exc
        raise


def create_database(path: Path, meta: dict[str, str], queries: Iterable[tuple], cites: Iterable[str]) -> None:
    """A new database file at ``path``: schema, triggers, settings, queries and cites."""
    con = connect(path)
    try:
        con.execute("PRAGMA journal_mode = WAL")
        con.executescript(SCHEMA + WRITEUPS_SCHEMA + COPIES_SCHEMA + append_only_triggers())
        con.execute("BEGIN")
        con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        con.executemany("INSERT INTO queries VALUES (?, ?, ?, ?, ?)", queries)
        con.executemany("INSERT INTO cites VALUES (?)", ((c,) for c in cites))
        con.execute("COMMIT")
    finally:
        con.close()


def read_meta(con: sqlite3.Connection) -> dict[str, str]:
    return {r["key"]: r["value"] for r in con.execute("SELECT key, value FROM meta")}


def set_meta(con: sqlite3.Connection, key: str, value: str) -> None:
    con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def insert_score(con: sqlite3.Connection, sid: int, run: int, scored_at: str, public: dict[str, Any] | None,
                 private: dict[str, Any] | None, detail: dict[str, Any]) -> None:
    pub, priv = public or {}, private or {}
    con.execute(
        "INSERT INTO scores (submission_id, run, scored_at, public_recall, public_mrr, private_recall,"
        " private_mrr, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (sid, run, scored_at, pub.get("recall20"), pub.get("mrr"), priv.get("recall20"),
         priv.get("mrr"), json.dumps(detail)),
    )


# ----------------------------------------------------------------------------------------
# write-ups
# ----------------------------------------------------------------------------------------
def has_writeups(con: sqlite3.Connection) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'writeups'").fetchone() is not None


def ensure_writeups(con: sqlite3.Connection) -> None:
    """Create the write-ups table (and its append-only triggers) in a database made before it existed.

    Call inside a write transaction; each statement is idempotent.
    """
    if has_writeups(con):
        return
    for stmt in [WRITEUPS_SCHEMA.strip()] + trigger_statements(("writeups",)):
        con.execute(stmt)


def insert_writeup(con: sqlite3.Connection, team_id: int, submission_id: int | None, written_at: str,
                   body: str, sha256: str, via: str) -> int:
    cur = con.execute("INSERT INTO writeups (team_id, submission_id, written_at, body, sha256, via)"
                      " VALUES (?, ?, ?, ?, ?, ?)", (team_id, submission_id, written_at, body, sha256, via))
    return int(cur.lastrowid)


def latest_writeups(con: sqlite3.Connection) -> dict[int, dict[str, Any]]:
    """Each team's latest write-up by team id (empty when the table does not exist yet)."""
    if not has_writeups(con):
        return {}
    rows = con.execute("SELECT w.team_id, w.submission_id, w.written_at, w.body, w.sha256 FROM writeups w"
                       " WHERE w.id = (SELECT MAX(id) FROM writeups WHERE team_id = w.team_id)")
    return {r["team_id"]: dict(r) for r in rows}


# ----------------------------------------------------------------------------------------
# events and the log
# ----------------------------------------------------------------------------------------
def insert_event(con: sqlite3.Connection, ev: dict[str, Any]) -> None:
    con.execute(
        "INSERT INTO events (at, actor, action, team, submission_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (ev["at"], ev["actor"], ev["action"], ev["team"], ev["submission_id"],
         json.dumps(ev["detail"], ensure_ascii=False)),
    )


LOCK_NAME = ".log.lock"


def event_line(row: sqlite3.Row | dict[str, Any]) -> str:
    """The log.jsonl line of one events row (``id`` first, ``detail`` as an object)."""
    detail = row["detail"]
    ev = {"id": row["id"], "at": row["at"], "actor": row["actor"], "action": row["action"], "team": row["team"],
          "submission_id": row["submission_id"],
          "detail": json.loads(detail) if isinstance(detail, str) else detail}
    return json.dumps(ev, ensure_ascii=False) + "\n"


@contextmanager
def log_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on the log (a separate lock file, so it survives a rewrite of the log)."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def last_logged_id(path: Path) -> int:
    """The highest event id in log.jsonl (0 when empty or absent); reads the tail when it can."""
    if not path.is_file():
        return 0
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 65536))
        tail = fh.read().split(b"\n")
    for line in reversed(tail if size <= 65536 else tail[1:]):
        try:
            return int(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            continue
    best = 0  # no readable line in the tail: scan the whole file
    with open(path, "rb") as fh:
        for line in fh:
            try:
                best = max(best, int(json.loads(line)["id"]))
            except (ValueError, KeyError, TypeError):
                continue
    return best


def sync_log(con: sqlite3.Connection, directory: Path) -> int:
    """Append to log.jsonl every committed event it does not hold yet; returns how many.

    log.jsonl is a copy of the events table, so an event committed just before a crash is
    written by the next sync (every write syncs) or by ``verify --repair``: no line is lost
    for good, and ``verify`` reports any line missing in the meantime.
    """
    path = directory / LOG_NAME
    with log_lock(directory):
        last = last_logged_id(path)
        rows = con.execute("SELECT * FROM events WHERE id > ? ORDER BY id", (last,)).fetchall()
        if not rows:
            return 0
        data = "".join(event_line(r) for r in rows).encode("utf-8")
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.lseek(fd, size - 1, os.SEEK_SET) >= 0 and os.read(fd, 1) != b"\n":
                data = b"\n" + data  # a line cut by a crash stays visible to verify, alone on its line
            os.write(fd, data)
        finally:
            os.close(fd)
    return len(rows)


def rewrite_log(con: sqlite3.Connection, directory: Path, keep_as: Path | None = None) -> int:
    """Write log.jsonl afresh from the events table (atomically); the old file moves to ``keep_as``."""
    path = directory / LOG_NAME
    with log_lock(directory):
        rows = con.execute("SELECT * FROM events ORDER BY id").fetchall()
        fd, tmp = tempfile.mkstemp(prefix=".log.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.writelines(event_line(r) for r in rows)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            if keep_as is not None and path.exists():
                keep_as.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, keep_as)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return len(rows)


def read_events(con: sqlite3.Connection, limit: int | None = None) -> list[dict[str, Any]]:
    q = "SELECT * FROM events ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit else "")
    rows = [dict(r) for r in con.execute(q)]
    for r in rows:
        r["detail"] = json.loads(r["detail"])
    return rows[::-1]


# ----------------------------------------------------------------------------------------
# the archive
# ----------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_archive(data: bytes, dest: Path) -> bool:
    """``data`` to ``dest`` (read-only) via a temporary file, fsync and a rename.

    Returns False when ``dest`` already held these bytes (nothing written). On any failure the
    temporary file is removed (if it can be) and the error raised.
    """
    if dest.exists() and sha256_file(dest) == dest.stem:
        return False
    fd, tmp = tempfile.mkstemp(prefix=".incoming.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # left for verify (a temporary file) and --repair
        raise
    return True


# ----------------------------------------------------------------------------------------
# the copies of accepted files in the database
# ----------------------------------------------------------------------------------------
def has_copies(con: sqlite3.Connection) -> bool:
    return con.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'archive_copies'").fetchone() is not None


def ensure_copies(con: sqlite3.Connection) -> None:
    """Create the copies table (and its append-only triggers) in an older database; inside a write transaction."""
    if has_copies(con):
        return
    for stmt in [COPIES_SCHEMA.strip()] + trigger_statements(("archive_copies",)):
        con.execute(stmt)


def insert_copy(con: sqlite3.Connection, sha256: str, data: bytes) -> None:
    """Keep a compressed copy of an accepted file (once per sha256)."""
    con.execute("INSERT OR IGNORE INTO archive_copies VALUES (?, ?, ?)", (sha256, len(data), zlib.compress(data, 6)))


def read_copy(con: sqlite3.Connection, sha256: str) -> bytes | None:
    """The stored copy of a file, checked against its sha256; None when there is none (or it is damaged)."""
    if not has_copies(con):
        return None
    row = con.execute("SELECT zlib FROM archive_copies WHERE sha256 = ?", (sha256,)).fetchone()
    if row is None:
        return None
    try:
        data = zlib.decompress(row[0])
    except zlib.error:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def copied_shas(con: sqlite3.Connection) -> set[str]:
    if not has_copies(con):
        return set()
    return {r[0] for r in con.execute("SELECT sha256 FROM archive_copies")}


# ----------------------------------------------------------------------------------------
# permissions
# ----------------------------------------------------------------------------------------
def exposed_to_others(folder: Path, secret_files: Iterable[str] = ()) -> str:
    """Why other users of this machine can read ``folder``'s secrets ("" when they cannot; POSIX only).

    They can when the folder lets group/others in (x bit) and it, or one of ``secret_files``,
    is readable by them.
    """
    if os.name != "posix" or not Path(folder).is_dir():
        return ""
    mode = Path(folder).stat().st_mode & 0o777
    if not mode & 0o011:
        return ""
    readable = [n for n in secret_files if (Path(folder) / n).is_file()
                and (Path(folder) / n).stat().st_mode & 0o044]
    if readable or mode & 0o044:
        what = ", ".join(readable) or "its file list"
        return (f"{folder} is readable by other users of this machine (folder mode {mode:o}; {what}); "
                f"it holds the answers: run `chmod -R go-rwx {folder}`")
    return ""
