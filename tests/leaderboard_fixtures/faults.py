"""Injected faults for the leaderboard's durability tests and the scripted fault run.

    python tests/leaderboard_fixtures/faults.py        # prints the fault-run table (about 10 s)

How each fault is made, without root, mounts or a small file system:

* a kill at each point of a submit: ``crash_submit.py`` in a child process (``os._exit``, like
  ``kill -9``: no cleanup runs);
* a held write lock: a second connection in ``BEGIN IMMEDIATE`` (a host's ``sqlite3`` shell);
* a full disk, simulated at the three places a submit writes: the archive file (its ``write``
  writes half the bytes, then fails with ENOSPC), the database (``PRAGMA max_page_count`` pinned
  to the current size: SQLite itself answers SQLITE_FULL, "database or disk is full") and
  log.jsonl after the COMMIT (``os.write`` writes half a line, then ENOSPC);
* a read-only folder: ``chmod`` without write bits; when the tests run as root (which ignores
  permission bits), :func:`permissions_enforced` makes the leaderboard's own file calls (os.open,
  rename, unlink, mkdir, SQLite's open mode) honour the owner's bits as the kernel would for a
  normal user;
* a deleted archive file, a truncated log.jsonl: done to the files directly.

The oracle that says what damage each fault left (:func:`damage`) reads the files and the
database itself; it shares no code with ``verify``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lbfix import make_dataset, ranked_lists, write_csv  # noqa: E402

from leaderboard import Competition, core, storage  # noqa: E402
from leaderboard.errors import DatabaseBusy, StorageError  # noqa: E402

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


# ---------------------------------------------------------------------------------------------
# permissions as a normal user would meet them (only needed when running as root)
# ---------------------------------------------------------------------------------------------
def _owner_can_write(path: str | os.PathLike) -> bool:
    try:
        return bool(os.stat(path).st_mode & 0o200)
    except OSError:
        return True


def _check_dir(path: Any) -> None:
    parent = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not _owner_can_write(parent):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))


@contextmanager
def permissions_enforced(root: Path) -> Iterator[None]:
    """Under ``root``, make root's file calls fail where a normal owner's would (no-op for others)."""
    if os.geteuid() != 0:
        yield
        return
    root_s = os.path.abspath(root)
    inside = lambda p: os.path.abspath(os.fspath(p)).startswith(root_s)  # noqa: E731
    real = {n: getattr(os, n) for n in ("open", "replace", "rename", "unlink", "remove", "mkdir")}
    real_connect = storage.connect  # core imported it by name as _connect: both are patched

    def op_open(path, flags, mode=0o777, *a, **k):
        if inside(path) and flags & _WRITE_FLAGS:
            if os.path.exists(path) and not _owner_can_write(path):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            if not os.path.exists(path):
                _check_dir(path)
        return real["open"](path, flags, mode, *a, **k)

    def two(name):
        def f(src, dst, *a, **k):
            for p in (src, dst):
                if inside(p):
                    _check_dir(p)
            return real[name](src, dst, *a, **k)
        return f

    def one(name):
        def f(path, *a, **k):
            if inside(path):
                _check_dir(path)
            return real[name](path, *a, **k)
        return f

    def connect(path, wait_s=None):
        p = Path(path)
        if inside(p) and not (_owner_can_write(p) and _owner_can_write(p.parent)):
            uri = f"file:{p}?mode=ro"
            con = sqlite3.connect(uri, uri=True, timeout=wait_s or 0.5, isolation_level=None, check_same_thread=False)
            con.row_factory = sqlite3.Row
            return con
        return real_connect(path, wait_s)

    patches = {"open": op_open, "replace": two("replace"), "rename": two("rename"), "unlink": one("unlink"),
               "remove": one("remove"), "mkdir": one("mkdir")}
    for n, f in patches.items():
        setattr(os, n, f)
    storage.connect = core._connect = connect
    try:
        yield
    finally:
        for n, f in real.items():
            setattr(os, n, f)
        storage.connect = core._connect = real_connect


# ---------------------------------------------------------------------------------------------
# a full disk at one point of a submit
# ---------------------------------------------------------------------------------------------
def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class _HalfThenFull:
    """A binary file whose write stores half the bytes, then fails as a full disk does."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        self.fh.write(data[: len(data) // 2])
        self.fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


@contextmanager
def disk_full(comp_dir: Path, point: str) -> Iterator[None]:
    """ENOSPC at ``point``: ``archive`` (the file), ``database`` (SQLITE_FULL) or ``log`` (after COMMIT)."""
    comp_dir = os.path.abspath(comp_dir)
    real_fdopen, real_write, real_connect = os.fdopen, os.write, storage.connect

    def fdopen(fd, *a, **k):
        fh = real_fdopen(fd, *a, **k)
        return _HalfThenFull(fh) if _fd_path(fd).startswith(os.path.join(comp_dir, storage.ARCHIVE)) else fh

    def write(fd, data):
        if _fd_path(fd) == os.path.join(comp_dir, storage.LOG_NAME):
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    def connect(path, wait_s=None):
        con = real_connect(path, wait_s)
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        con.execute(f"PRAGMA max_page_count = {pages}")
        return con

    if point == "archive":
        os.fdopen = fdopen
    elif point == "log":
        os.write = write
    elif point == "database":
        storage.connect = core._connect = connect
    else:
        raise ValueError(point)
    try:
        yield
    finally:
        os.fdopen, os.write, storage.connect, core._connect = real_fdopen, real_write, real_connect, real_connect


# ---------------------------------------------------------------------------------------------
# the oracle: what damage is there, read straight from the files and the database
# ---------------------------------------------------------------------------------------------
def damage(comp_dir: Path, lock_held: bool = False) -> set[str]:
    """The kinds of damage present (independent of ``verify``): files, log lines, folders, the lock."""
    import hashlib

    out: set[str] = {"lock_held"} if lock_held else set()
    con = sqlite3.connect(f"file:{comp_dir / storage.DB_NAME}?mode=ro", uri=True)
    try:
        subs = con.execute("SELECT sha256, archive FROM submissions").fetchall()
        events = {r[0] for r in con.execute("SELECT id FROM events")}
    finally:
        con.close()
    for sha, rel in subs:
        p = comp_dir / rel
        if not p.is_file():
            out.add("missing_file")
        elif hashlib.sha256(p.read_bytes()).hexdigest() != sha:
            out.add("altered_file")
    known = {rel for _, rel in subs}
    for p in (comp_dir / storage.ARCHIVE).iterdir():
        if p.name.startswith(".incoming."):
            out.add("temp_file")
        elif f"{storage.ARCHIVE}/{p.name}" not in known:
            out.add("orphan_file")
    logged = set()
    for line in (comp_dir / storage.LOG_NAME).read_bytes().splitlines():
        try:
            logged.add(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            if line.strip():
                out.add("log_bad")
    if events - logged:
        out.add("log_missing")
    for d in (comp_dir, comp_dir / storage.ARCHIVE):
        if not d.stat().st_mode & 0o200:
            out.add("not_writable")
    return out


def accepted(comp_dir: Path) -> dict[int, str]:
    """Submission id -> sha256 of every accepted (recorded) submission."""
    con = sqlite3.connect(f"file:{comp_dir / storage.DB_NAME}?mode=ro", uri=True)
    try:
        return {r[0]: r[1] for r in con.execute("SELECT id, sha256 FROM submissions")}
    finally:
        con.close()


def intact(comp_dir: Path, subs: dict[int, str]) -> set[int]:
    """The ids among ``subs`` still recorded with their archived file byte-identical."""
    import hashlib

    now = accepted(comp_dir)
    return {i for i, sha in subs.items() if now.get(i) == sha
            and (comp_dir / storage.ARCHIVE / f"{sha}.csv").is_file()
            and hashlib.sha256((comp_dir / storage.ARCHIVE / f"{sha}.csv").read_bytes()).hexdigest() == sha}


# ---------------------------------------------------------------------------------------------
# the scripted fault run
# ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    """A competition to hurt: two accepted submissions, two teams, a spare valid file."""

    path: Path
    files: list[Path]
    ds: dict
    tokens: dict[str, str] = field(default_factory=dict)


def make_case(root: Path) -> Case:
    ds = make_dataset(root / "data", n_test=40, n_cite=200)
    comp, tokens = Competition.create(ds["host"], path=root / "comp", teams=["alpha", "beta"], seed=1,
                                      daily_limit=20)
    files = []
    for k in range(6):
        hits = {g: (1 + (i + k) % 20 if (i + k) % 3 else None) for i, g in enumerate(ds["test"])}
        files.append(write_csv(root / f"s{k}.csv", ranked_lists(ds, hits, seed=k)))
    comp.submit(files[0], "alpha")
    comp.submit(files[1], "beta")
    comp.close_db()
    return Case(root / "comp", files, ds, tokens)


def _kill(point: str) -> Callable[[Case], str]:
    def inject(case: Case) -> str:
        p = subprocess.run([sys.executable, str(HERE / "crash_submit.py"), str(case.path), str(case.files[2]), "beta",
                            point], capture_output=True, text=True, timeout=120, env={**os.environ,
                                                                                     "PYTHONPATH": str(REPO)})
        return f"killed (exit {p.returncode})"
    return inject


def _submit(case: Case, f: Path, wait: float = 60.0) -> str:
    try:
        with Competition(case.path, wait=wait) as c:
            res = c.submit(f, "beta")
        return f"accepted #{res.submission_id}"
    except StorageError as exc:
        return f"refused: StorageError({exc.kind})"
    except DatabaseBusy:
        return "refused: DatabaseBusy"


def _full(point: str) -> Callable[[Case], str]:
    def inject(case: Case) -> str:
        with disk_full(case.path, point):
            return _submit(case, case.files[3])
    return inject


def _read_only_archive(case: Case) -> str:
    os.chmod(case.path / storage.ARCHIVE, 0o555)
    with permissions_enforced(case.path):
        return _submit(case, case.files[4])


def _delete_file(case: Case) -> str:
    with Competition(case.path) as c:
        rel = c.con.execute("SELECT archive FROM submissions ORDER BY id LIMIT 1").fetchone()[0]
    os.unlink(case.path / rel)
    return f"deleted {rel[:16]}…"


def _truncate_log(case: Case) -> str:
    log = case.path / storage.LOG_NAME
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 25])
    return "cut the last 25 bytes"


FAULTS: list[tuple[str, Callable[[Case], str]]] = [
    ("kill -9 before the archive rename", _kill("before_rename")),
    ("kill -9 after the rename, before COMMIT", _kill("after_rename")),
    ("kill -9 after COMMIT, before the log line", _kill("after_commit")),
    ("write lock held by another process", None),  # special: the lock must be held while verify runs
    ("disk full writing the archive file", _full("archive")),
    ("disk full in the database (SQLITE_FULL)", _full("database")),
    ("disk full appending to log.jsonl", _full("log")),
    ("deleted archive file", _delete_file),
    ("truncated log.jsonl", _truncate_log),
    ("read-only archive folder", _read_only_archive),  # last: a normal user cannot delete files in it
]


@dataclass
class Row:
    fault: str
    outcome: str
    expected: set[str]
    listed: set[str]
    left: list[str]
    lost: int

    @property
    def missed(self) -> set[str]:
        return self.expected - self.listed


def _verify_kinds(case: Case, wait: float = 0.3) -> set[str]:
    with permissions_enforced(case.path):
        with Competition(case.path, wait=wait) as c:
            return {f.kind for f in c.verify_findings(sample=0)}


def _repair(case: Case) -> list[str]:
    with permissions_enforced(case.path):
        with Competition(case.path) as c:
            c.repair()
            return [f.message for f in c.verify_findings(sample=0)]


def run_one(case: Case, name: str, inject: Callable[[Case], str] | None) -> Row:
    before = accepted(case.path)
    holder = None
    if inject is None:  # the held lock: a submit is refused while it is held, verify runs while it is held
        holder = sqlite3.connect(str(case.path / storage.DB_NAME), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        outcome = _submit(case, case.files[5], wait=0.3)
    else:
        outcome = inject(case)
    expected = damage(case.path, lock_held=holder is not None)
    listed = _verify_kinds(case)
    if holder is not None:
        holder.execute("ROLLBACK")
        holder.close()
    during = accepted(case.path)  # a submission recorded during the fault counts as accepted too
    left = _repair(case)
    lost = len(set(before) | set(during)) - len(intact(case.path, {**before, **during}))
    return Row(name, outcome, expected, listed, left, lost)


def run_all(root: Path) -> list[Row]:
    """Each fault on a fresh copy of one competition, then all of them, one after the other, on one more."""
    template = make_case(root / "template")
    rows = []
    for k, (name, inject) in enumerate(FAULTS):
        dest = root / f"case{k}"
        shutil.copytree(template.path.parent, dest, symlinks=True)
        case = Case(dest / "comp", [dest / f.name for f in template.files], template.ds)
        rows.append(run_one(case, name, inject))
    dest = root / "all"
    shutil.copytree(template.path.parent, dest, symlinks=True)
    case = Case(dest / "comp", [dest / f.name for f in template.files], template.ds)
    rows.append(_run_cumulative(case))
    return rows


def _run_cumulative(case: Case) -> Row:
    """Every fault but the lock into one competition (the lock last, held while verify runs)."""
    before = accepted(case.path)
    outcomes = [inject(case).split(" ")[0] for name, inject in FAULTS if inject is not None]
    holder = sqlite3.connect(str(case.path / storage.DB_NAME), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    expected = damage(case.path, lock_held=True)
    listed = _verify_kinds(case)
    holder.execute("ROLLBACK")
    holder.close()
    during = accepted(case.path)
    left = _repair(case)
    lost = len(set(before) | set(during)) - len(intact(case.path, {**before, **during}))
    return Row("all of the above, in one competition", f"{len(outcomes)} faults + the lock", expected, listed, left,
               lost)


def table(rows: list[Row]) -> str:
    head = "| injected problem | the submit | damage left (oracle) | listed by verify | missed | " \
           "problems after verify --repair | accepted submissions lost |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        lines.append(f"| {r.fault} | {r.outcome} | {', '.join(sorted(r.expected)) or 'none'} | "
                     f"{', '.join(sorted(r.listed)) or 'none'} | {len(r.missed)} | {len(r.left)} | {r.lost} |")
    return "\n".join(lines)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="tmr-faults-") as tmp:
        result = run_all(Path(tmp))
    print(table(result))
    bad = [r for r in result if r.missed or r.left or r.lost]
    print(f"\n{len(result)} rows: {sum(len(r.missed) for r in result)} missed, "
          f"{sum(len(r.left) for r in result)} left after repair, {sum(r.lost for r in result)} accepted lost")
    sys.exit(1 if bad else 0)
