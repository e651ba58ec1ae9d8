"""Competition state: SQLite (WAL) storage, teams and tokens, submissions, boards, selections.

A competition lives in one directory (default ``competitions/<name>``)::

    leaderboard.sqlite3   settings, queries + answers + split, cites, teams, submissions,
                          scores, selections and the append-only event log
    archive/<sha256>.csv  every accepted file, read-only, named by its hash
    log.jsonl             a human-readable copy of the event log (one JSON object a line)

It is self-contained: ``init`` copies the test gids, the cite gids and the answers out of
the dataset's folders, so the dataset may move or vanish afterwards. The answers never
leave this directory: no board, page, message, log line or export contains them.

Rules (as the boards state them):

* ranking: Recall@20 desc, then MRR desc, then the earliest submission; scores are rounded
  to 4 decimals *before* ranking, so what you see is what is ranked;
* a seeded, category-stratified public/private split of the test queries (default 30% public);
* a daily limit per team, counted per UTC day starting at ``reset_utc`` (default 00:00);
  rejected files (invalid, over the limit, after the deadline) cost nothing;
* up to ``n_final`` final selections per team (default 2); no selection -> the best public;
* the private board is revealed only by ``close``.

Concurrency: the quota check, the archive write and the inserts happen in one
``BEGIN IMMEDIATE`` transaction, so parallel submissions can never exceed the limit.
Submissions, scores, queries and events are append-only (SQLite triggers refuse UPDATE and
DELETE); ``rescore`` adds a new scoring run and never overwrites an earlier one.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import tempfile
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tmr_lib.submission import ValidationReport, size_limit

from .scorer import DECIMALS, Scored, Scorer, rounded

DB_NAME = "leaderboard.sqlite3"
LOG_NAME = "log.jsonl"
ARCHIVE = "archive"
DEFAULT_ROOT = "competitions"
SCHEMA_VERSION = 1
CATEGORIES = (2, 3, 4, 5)
MAX_NAME = 64
MAX_NOTE = 200

UTC = timezone.utc


class LeaderboardError(Exception):
    """A refusal or a problem whose message is safe to show to a participant."""


class InvalidSubmission(LeaderboardError):
    """The file failed validation; ``.report`` lists every problem (no quota used)."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(report.format())


class QuotaExceeded(LeaderboardError):
    pass


class SubmissionsClosed(LeaderboardError):
    pass


class AuthError(LeaderboardError):
    pass


# ----------------------------------------------------------------------------------------
# time helpers
# ----------------------------------------------------------------------------------------
def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """ISO 8601 -> aware UTC datetime; a time without zone is read as UTC."""
    t = text.strip().replace(" ", "T")
    if t.endswith("Z") or t.endswith("z"):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise LeaderboardError(f"not a date/time: {text!r} (use e.g. 2025-03-01T09:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def short_time(text: str | None) -> str:
    """'2025-03-01 09:00 UTC' from a stored ISO time."""
    if not text:
        return "—"
    return parse_time(text).strftime("%Y-%m-%d %H:%M UTC")


def parse_reset(text: str) -> int:
    """'HH:MM' (UTC) -> minutes after midnight."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise LeaderboardError(f"reset time must be HH:MM in UTC, got {text!r}")
    return int(m[1]) * 60 + int(m[2])


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(18)


def clean_name(name: str, what: str = "team name", limit: int = MAX_NAME) -> str:
    """NFC-normalised, stripped; refuses empty, too long, or control characters."""
    if not isinstance(name, str):
        raise LeaderboardError(f"{what} must be text")
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise LeaderboardError(f"{what} is empty")
    if len(name) > limit:
        raise LeaderboardError(f"{what} is longer than {limit} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise LeaderboardError(f"{what} contains control characters")
    return name


def clean_note(note: str | None) -> str:
    if not note:
        return ""
    note = unicodedata.normalize("NFC", str(note)).replace("\r", " ").replace("\n", " ").strip()
    note = "".join(c for c in note if unicodedata.category(c) not in ("Cc", "Cf"))
    return note[:MAX_NOTE]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------
# schema
# ----------------------------------------------------------------------------------------
_SCHEMA = """
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
_APPEND_ONLY = ("queries", "cites", "submissions", "scores", "events")


def _append_only_triggers() -> str:
    out = []
    for table in _APPEND_ONLY:
        for op in ("UPDATE", "DELETE"):
            out.append(
                f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
            )
    return "\n".join(out)


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA busy_timeout = 60000")
    con.execute("PRAGMA foreign_keys = ON")
    con.execute("PRAGMA synchronous = FULL")
    return con


# ----------------------------------------------------------------------------------------
# reading the dataset's folders (csv module: no pandas needed)
# ----------------------------------------------------------------------------------------
def _read_csv(path: Path, columns: list[str]) -> tuple[list[dict[str, str]], list[str]]:
    """Rows of a CSV as dicts of stripped strings, plus the problems found."""
    if not path.is_file():
        return [], [f"{path}: file not found"]
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                return [], [f"{path}: missing column(s) {', '.join(missing)} (header: {','.join(header)})"]
            return [{c: (row.get(c) or "").strip() for c in columns} for row in reader], []
    except (UnicodeDecodeError, csv.Error) as exc:
        return [], [f"{path}: not a readable UTF-8 CSV ({exc.__class__.__name__})"]


def _load_dataset(host_dir: Path, data_dir: Path | None) -> dict[str, Any]:
    """Read and cross-check host.json, answers.csv, test.csv and cite_v2.csv; list every problem."""
    problems: list[str] = []
    host_json: dict[str, Any] = {}
    hj = host_dir / "host.json"
    if hj.is_file():
        try:
            host_json = json.loads(hj.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"{hj}: not valid JSON ({exc})")
    elif not host_dir.is_dir():
        raise LeaderboardError(f"host folder not found: {host_dir}")
    if data_dir is None:
        rel = host_json.get("participant_dir")
        if not rel:
            raise LeaderboardError(
                f"{hj} does not name the participant folder (participant_dir); pass --data"
            )
        data_dir = (host_dir / rel).resolve()
    if not data_dir.is_dir():
        raise LeaderboardError(f"participant folder not found: {data_dir}")

    test_rows, p1 = _read_csv(data_dir / "test.csv", ["gid"])
    cite_rows, p2 = _read_csv(data_dir / "cite_v2.csv", ["gid"])
    ans_rows, p3 = _read_csv(host_dir / "answers.csv", ["gid", "cite_gid", "category"])
    problems += p1 + p2 + p3
    if problems:
        raise LeaderboardError("cannot create the competition:\n  " + "\n  ".join(problems))

    test = [r["gid"] for r in test_rows]
    cites = [r["gid"] for r in cite_rows]
    seen: dict[str, int] = {}
    for i, g in enumerate(test, start=2):
        if not g:
            problems.append(f"test.csv line {i}: empty gid")
        elif g in seen:
            problems.append(f"test.csv line {i}: gid {g} repeated (first on line {seen[g]})")
        else:
            seen[g] = i
    cite_set = set(cites)
    if len(cite_set) != len(cites):
        problems.append(f"cite_v2.csv: {len(cites) - len(cite_set)} repeated gid(s)")
    if "" in cite_set:
        problems.append("cite_v2.csv: empty gid(s)")
    if not test:
        problems.append("test.csv has no queries")

    answers: dict[str, tuple[str, int]] = {}
    ans_line: dict[str, int] = {}
    # Problems about answers name line numbers and query gids only, never answer cite gids.
    for i, r in enumerate(ans_rows, start=2):
        g = r["gid"]
        ids = r["cite_gid"].split()
        if g not in seen:
            problems.append(f"answers.csv line {i}: gid {g!r} is not in test.csv")
            continue
        if g in answers:
            problems.append(f"answers.csv line {i}: gid {g} repeated (first on line {ans_line[g]})")
            continue
        if not ids:
            problems.append(f"answers.csv line {i}: no correct cite for gid {g}")
        elif r["cite_gid"] != " ".join(ids):
            problems.append(f"answers.csv line {i}: cite_gid must be ids separated by single spaces")
        unknown = sum(1 for c in ids if c not in cite_set)
        if unknown:
            problems.append(f"answers.csv line {i}: {unknown} correct cite id(s) are not in cite_v2.csv")
        try:
            cat = int(r["category"])
        except ValueError:
            cat = -1
        if cat not in CATEGORIES:
            problems.append(f"answers.csv line {i}: category must be one of 2, 3, 4, 5")
        answers[g] = (" ".join(ids), cat)
        ans_line[g] = i
    missing = [g for g in test if g not in answers]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        problems.append(f"answers.csv: no answer for {len(missing)} test gid(s): {shown}")
    if problems:
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise LeaderboardError("cannot create the competition:\n  " + "\n  ".join(problems[:50]) + more)
    return {
        "host_json": host_json,
        "data_dir": data_dir,
        "test": test,
        "cites": cites,
        "answers": answers,
        "sha256": {
            "test.csv": _sha256_file(data_dir / "test.csv"),
            "cite_v2.csv": _sha256_file(data_dir / "cite_v2.csv"),
            "answers.csv": _sha256_file(host_dir / "answers.csv"),
        },
    }


def split_public(test: list[str], categories: list[int], fraction: float, seed: int) -> np.ndarray:
    """Seeded public mask, stratified by category (each category ~``fraction`` public)."""
    rng = np.random.default_rng(seed)
    cats = np.asarray(categories)
    public = np.zeros(len(test), dtype=bool)
    order = np.argsort(np.asarray(test, dtype=object), kind="stable")  # independent of file order
    for c in np.unique(cats):
        idx = order[cats[order] == c]
        idx = idx[rng.permutation(len(idx))]
        public[idx[: int(round(fraction * len(idx)))]] = True
    return public


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------
@dataclass
class SubmitResult:
    accepted: bool
    submission_id: int | None
    team: str
    public_recall: float | None = None
    public_mrr: float | None = None
    public_detail: dict[str, Any] | None = None
    report: ValidationReport | None = None
    used_today: int = 0
    limit: int = 0
    reset_at: str = ""
    duplicate_of: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def remaining_today(self) -> int:
        return max(0, self.limit - self.used_today)

    def summary(self) -> str:
        lines = [
            f"Accepted: submission #{self.submission_id} by {self.team}",
            f"  public Recall@20 {self.public_recall:.{DECIMALS}f}   MRR {self.public_mrr:.{DECIMALS}f}",
            f"  {self.remaining_today} of {self.limit} submissions left today (resets {short_time(self.reset_at)})",
        ]
        if self.duplicate_of:
            lines.append(f"  note: identical to your submission #{self.duplicate_of}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# the competition
# ----------------------------------------------------------------------------------------
class Competition:
    """One competition directory. Open with ``Competition(path)``; create with ``Competition.create``."""

    def __init__(self, path: str | os.PathLike, now: Callable[[], datetime] = utcnow):
        self.path = Path(path)
        self.db_path = self.path / DB_NAME
        if not self.db_path.is_file():
            raise LeaderboardError(
                f"no competition at {self.path} (no {DB_NAME}); create one with "
                "`python -m leaderboard init HOST_FOLDER`"
            )
        self._now = now
        self.con = _connect(self.db_path)
        self._scorer: Scorer | None = None
        self._scorer_key: Any = None

    # -- creation --------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        host_dir: str | os.PathLike,
        data_dir: str | os.PathLike | None = None,
        path: str | os.PathLike | None = None,
        *,
        name: str | None = None,
        public_fraction: float = 0.3,
        seed: int | None = None,
        daily_limit: int = 5,
        reset_utc: str = "00:00",
        n_final: int = 2,
        deadline: str | None = None,
        teams: list[str] | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> tuple["Competition", dict[str, str]]:
        """Create a competition from a dataset's host folder; returns it and the new tokens.

        The tokens dict maps ``"host"`` and each team name to its token (shown only once:
        only their hashes are stored). Everything is built in a temporary folder next to
        the target and renamed into place at the end, so a failure leaves nothing behind.
        """
        host_dir = Path(host_dir)
        ds = _load_dataset(host_dir, Path(data_dir) if data_dir else None)
        name = clean_name(name or ds["host_json"].get("name") or host_dir.name.removesuffix("-host"),
                          "competition name")
        target = Path(path) if path else Path(DEFAULT_ROOT) / re.sub(r"[^\w.-]+", "_", name)
        if target.exists():
            raise LeaderboardError(f"{target} already exists; choose another --dir (or delete it)")
        if not 0.0 < public_fraction < 1.0:
            raise LeaderboardError("public fraction must be between 0 and 1 (e.g. 0.3)")
        if daily_limit < 1:
            raise LeaderboardError("daily limit must be at least 1")
        if n_final < 1:
            raise LeaderboardError("the number of final selections must be at least 1")
        reset_minutes = parse_reset(reset_utc)
        deadline_iso = iso(parse_time(deadline)) if deadline else ""
        if seed is None:
            seed = secrets.randbelow(2**31)
        team_names = [clean_name(t) for t in (teams or [])]

        test = ds["test"]
        cats = [ds["answers"][g][1] for g in test]
        public = split_public(test, cats, public_fraction, seed)

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            os.chmod(tmp, 0o700)
            (tmp / ARCHIVE).mkdir()
            con = _connect(tmp / DB_NAME)
            con.execute("PRAGMA journal_mode = WAL")
            con.executescript(_SCHEMA + _append_only_triggers())
            created = now()
            host_token = new_token()
            meta = {
                "schema_version": str(SCHEMA_VERSION),
                "name": name,
                "created_at": iso(created),
                "public_fraction": repr(float(public_fraction)),
                "seed": str(int(seed)),
                "daily_limit": str(int(daily_limit)),
                "reset_minutes": str(reset_minutes),
                "n_final": str(int(n_final)),
                "deadline": deadline_iso,
                "closed_at": "",
                "host_token_hash": _hash_token(host_token),
                "preset": str(ds["host_json"].get("preset", "")),
                "source_host_dir": str(host_dir.resolve()),
                "source_data_dir": str(Path(ds["data_dir"]).resolve()),
                "source_sha256": json.dumps(ds["sha256"]),
            }
            con.execute("BEGIN")
            con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            con.executemany(
                "INSERT INTO queries VALUES (?, ?, ?, ?, ?)",
                (
                    (i, g, "public" if public[i] else "private", ds["answers"][g][1], ds["answers"][g][0])
                    for i, g in enumerate(test)
                ),
            )
            con.executemany("INSERT INTO cites VALUES (?)", ((c,) for c in ds["cites"]))
            con.execute("COMMIT")
            con.close()
            comp = cls(tmp, now=now)
            comp._event("host", "init", detail={
                "name": name, "n_test": len(test), "n_public": int(public.sum()),
                "n_cite": len(ds["cites"]), "daily_limit": daily_limit, "reset_utc": reset_utc,
                "n_final": n_final, "deadline": deadline_iso, "public_fraction": public_fraction,
                "source_sha256": ds["sha256"],
            })
            tokens = {"host": host_token}
            for t in team_names:
                tokens[t] = comp.add_team(t)
            comp.close_db()
            os.rename(tmp, target)
        except BaseException:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(target, now=now), tokens

    # -- basics ----------------------------------------------------------------------------
    def close_db(self) -> None:
        self.con.close()

    def __enter__(self) -> "Competition":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close_db()

    def now(self) -> datetime:
        return self._now()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One serialised write transaction (BEGIN IMMEDIATE takes the write lock up front)."""
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")

    def meta(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self.con.execute("SELECT key, value FROM meta")}

    def _set_meta(self, con: sqlite3.Connection, key: str, value: str) -> None:
        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def name(self) -> str:
        return self.meta()["name"]

    def settings(self) -> dict[str, Any]:
        """Public facts about the competition (never the seed, the answers or token hashes)."""
        m = self.meta()
        n_test, n_public = self.con.execute(
            "SELECT COUNT(*), SUM(split = 'public') FROM queries").fetchone()
        n_cite = self.con.execute("SELECT COUNT(*) FROM cites").fetchone()[0]
        reset = int(m["reset_minutes"])
        now = self.now()
        deadline = m.get("deadline") or ""
        n_teams = self.con.execute("SELECT COUNT(*) FROM teams").fetchone()[0]
        return {
            "name": m["name"],
            "created_at": m["created_at"],
            "n_test": n_test,
            "n_public": n_public,
            "n_private": n_test - n_public,
            "n_cite": n_cite,
            "public_fraction": float(m["public_fraction"]),
            "daily_limit": int(m["daily_limit"]),
            "reset_utc": f"{reset // 60:02d}:{reset % 60:02d}",
            "next_reset": iso(self._next_reset(now)),
            "n_final": int(m["n_final"]),
            "deadline": deadline,
            "deadline_passed": bool(deadline) and now >= parse_time(deadline),
            "closed_at": m.get("closed_at") or "",
            "closed": bool(m.get("closed_at")),
            "n_teams": n_teams,
            "max_bytes": size_limit(n_test),
        }

    # -- the day used for the daily limit -------------------------------------------------
    def _reset_delta(self) -> timedelta:
        return timedelta(minutes=int(self.meta()["reset_minutes"]))

    def quota_day(self, when: datetime) -> str:
        return (when.astimezone(UTC) - self._reset_delta()).date().isoformat()

    def _next_reset(self, when: datetime) -> datetime:
        delta = self._reset_delta()
        day = (when.astimezone(UTC) - delta).date()
        return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) + delta

    # -- log ------------------------------------------------------------------------------
    def _event(self, actor: str, action: str, team: str | None = None,
               submission_id: int | None = None, detail: dict[str, Any] | None = None,
               con: sqlite3.Connection | None = None) -> dict[str, Any]:
        ev = {"at": iso(self.now()), "actor": actor, "action": action, "team": team,
              "submission_id": submission_id, "detail": detail or {}}
        (con or self.con).execute(
            "INSERT INTO events (at, actor, action, team, submission_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (ev["at"], actor, action, team, submission_id, json.dumps(ev["detail"], ensure_ascii=False)),
        )
        if con is None:
            self._append_log(ev)
        return ev

    def _append_log(self, ev: dict[str, Any]) -> None:
        line = json.dumps(ev, ensure_ascii=False) + "\n"
        fd = os.open(self.path / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def events(self, limit: int | None = None) -> list[dict[str, Any]]:
        q = "SELECT * FROM events ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        rows = [dict(r) for r in self.con.execute(q)]
        for r in rows:
            r["detail"] = json.loads(r["detail"])
        return rows[::-1]

    # -- teams ----------------------------------------------------------------------------
    def add_team(self, name: str, reset_token: bool = False) -> str:
        """Register a team (or re-issue its token); returns the token (stored only hashed)."""
        name = clean_name(name)
        token = new_token()
        with self._write() as con:
            row = con.execute("SELECT id, name FROM teams WHERE name_key = ?", (name.casefold(),)).fetchone()
            if row and not reset_token:
                raise LeaderboardError(f"team {row['name']!r} already exists (use --reset-token for a new token)")
            if not row and reset_token:
                raise LeaderboardError(f"no team named {name!r}")
            if row:
                con.execute("UPDATE teams SET token_hash = ? WHERE id = ?", (_hash_token(token), row["id"]))
                action = "reset_token"
                name = row["name"]
            else:
                con.execute("INSERT INTO teams (name, name_key, token_hash, created_at) VALUES (?, ?, ?, ?)",
                            (name, name.casefold(), _hash_token(token), iso(self.now())))
                action = "add_team"
            ev = self._event("host", action, team=name, con=con)
        self._append_log(ev)
        return token

    def reset_host_token(self) -> str:
        token = new_token()
        with self._write() as con:
            self._set_meta(con, "host_token_hash", _hash_token(token))
            ev = self._event("host", "reset_host_token", con=con)
        self._append_log(ev)
        return token

    def teams(self) -> list[dict[str, Any]]:
        rows = self.con.execute(
            "SELECT t.id, t.name, t.created_at, COUNT(s.id) AS entries, MAX(s.submitted_at) AS last "
            "FROM teams t LEFT JOIN submissions s ON s.team_id = t.id GROUP BY t.id ORDER BY t.id")
        return [dict(r) for r in rows]

    def team(self, name: str) -> dict[str, Any]:
        key = unicodedata.normalize("NFC", str(name)).strip().casefold()
        row = self.con.execute("SELECT id, name FROM teams WHERE name_key = ?", (key,)).fetchone()
        if not row:
            known = ", ".join(repr(t["name"]) for t in self.teams()) or "none yet"
            raise LeaderboardError(f"no team named {name!r} (teams: {known}); the host adds teams with add-team")
        return dict(row)

    def team_for_token(self, token: str | None) -> dict[str, Any]:
        """The team whose token this is; AuthError otherwise (constant-time comparison)."""
        if token:
            h = _hash_token(token.strip())
            for row in self.con.execute("SELECT id, name, token_hash FROM teams"):
                if hmac.compare_digest(row["token_hash"], h):
                    return {"id": row["id"], "name": row["name"]}
        raise AuthError("unknown team token: check the token the host gave you")

    def is_host_token(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.meta()["host_token_hash"], _hash_token(token.strip()))

    # -- scoring --------------------------------------------------------------------------
    def scorer(self) -> Scorer:
        """The competition's scorer (answers loaded once and kept in memory)."""
        key = self.con.execute("SELECT COUNT(*) FROM queries").fetchone()[0]
        if self._scorer is None or self._scorer_key != key:
            rows = self.con.execute("SELECT gid, split, category, answer FROM queries ORDER BY pos").fetchall()
            cites = {r[0] for r in self.con.execute("SELECT gid FROM cites")}
            self._scorer = Scorer(
                [r["gid"] for r in rows], cites, [r["answer"] for r in rows],
                [r["category"] for r in rows], [r["split"] == "public" for r in rows],
            )
            self._scorer_key = key
        return self._scorer

    def validate(self, source: Any, filename: str | None = None) -> ValidationReport:
        """Validation only (no answers involved): the local check a notebook runs."""
        return self.scorer().validate(source, name=filename)

    def used_today(self, team_id: int, when: datetime | None = None) -> int:
        day = self.quota_day(when or self.now())
        return self.con.execute(
            "SELECT COUNT(*) FROM submissions WHERE team_id = ? AND quota_day = ?", (team_id, day)
        ).fetchone()[0]

    def _check_open(self, now: datetime) -> None:
        m = self.meta()
        if m.get("closed_at"):
            raise SubmissionsClosed(f"the competition closed at {short_time(m['closed_at'])}; no more submissions")
        if m.get("deadline") and now >= parse_time(m["deadline"]):
            raise SubmissionsClosed(f"the deadline passed at {short_time(m['deadline'])}; no more submissions")

    def _quota_message(self, limit: int, now: datetime) -> str:
        nxt = self._next_reset(now)
        left = nxt - now
        hours, rem = divmod(int(left.total_seconds()), 3600)
        return (f"daily limit reached: {limit} of {limit} submissions used today; the count resets at "
                f"{short_time(iso(nxt))} (in {hours}h {rem // 60:02d}m). This file was not scored and cost nothing.")

    def submit(self, source: Any, team: str | None = None, *, token: str | None = None,
               note: str = "", filename: str | None = None, via: str = "api") -> SubmitResult:
        """Validate, score and record a submission for ``team`` (by name) or ``token``.

        Raises :class:`InvalidSubmission` (every problem listed), :class:`QuotaExceeded`,
        :class:`SubmissionsClosed` or :class:`AuthError`; none of them uses quota.
        """
        t = self.team_for_token(token) if token is not None else self.team(team or "")
        if filename is None:
            filename = Path(source).name if isinstance(source, (str, os.PathLike)) else "upload.csv"
        filename = clean_note(filename)[:120] or "upload.csv"
        note = clean_note(note)
        limit = int(self.meta()["daily_limit"])
        now = self.now()
        self._check_open(now)
        if self.used_today(t["id"], now) >= limit:  # early, non-binding check: spare the scoring
            self._log_rejection(t["name"], "daily_limit", filename)
            raise QuotaExceeded(self._quota_message(limit, now))

        scored: Scored = self.scorer().score(source, name=filename)
        report = scored.report
        if not report.ok:
            self._log_rejection(t["name"], "invalid", filename, report)
            raise InvalidSubmission(report)

        try:
            sid, ev, used, dup, now = self._record(t, report, scored, filename, note, via, limit)
        except QuotaExceeded:
            self._log_rejection(t["name"], "daily_limit", filename)
            raise
        self._append_log(ev)
        return SubmitResult(
            accepted=True, submission_id=sid, team=t["name"],
            public_recall=rounded(scored.public["recall20"]) if scored.public else None,
            public_mrr=rounded(scored.public["mrr"]) if scored.public else None,
            public_detail=_round_detail(scored.public),
            report=report, used_today=used + 1, limit=limit, reset_at=iso(self._next_reset(now)),
            duplicate_of=dup, warnings=[p.message for p in report.warnings],
        )

    def _record(self, t: dict[str, Any], report: ValidationReport, scored: Scored, filename: str,
                note: str, via: str, limit: int) -> tuple:
        """The atomic part: quota check, archive, submission + score + event rows, one transaction."""
        archive_rel = f"{ARCHIVE}/{report.sha256}.csv"
        detail = {"public": scored.public, "private": scored.private}
        with self._write() as con:
            now = self.now()
            self._check_open(now)
            day = self.quota_day(now)
            used = con.execute("SELECT COUNT(*) FROM submissions WHERE team_id = ? AND quota_day = ?",
                               (t["id"], day)).fetchone()[0]
            if used >= limit:
                raise QuotaExceeded(self._quota_message(limit, now))
            self._write_archive(report.data, self.path / archive_rel)
            dup = con.execute("SELECT MIN(id) FROM submissions WHERE team_id = ? AND sha256 = ?",
                              (t["id"], report.sha256)).fetchone()[0]
            cur = con.execute(
                "INSERT INTO submissions (team_id, submitted_at, quota_day, filename, note, sha256, n_bytes,"
                " n_rows, archive, via) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (t["id"], iso(now), day, filename, note, report.sha256, report.n_bytes, report.n_rows,
                 archive_rel, via),
            )
            sid = cur.lastrowid
            self._insert_score(con, sid, 1, scored, detail)
            ev = self._event("team", "submit", team=t["name"], submission_id=sid, con=con, detail={
                "sha256": report.sha256, "bytes": report.n_bytes, "filename": filename, "via": via,
                "public_recall20": rounded(scored.public["recall20"]) if scored.public else None,
                "public_mrr": rounded(scored.public["mrr"]) if scored.public else None,
            })
        return sid, ev, used, dup, now

    def _log_rejection(self, team: str, reason: str, filename: str, report: ValidationReport | None = None) -> None:
        detail: dict[str, Any] = {"reason": reason, "filename": filename}
        if report is not None:
            detail.update(sha256=report.sha256, bytes=report.n_bytes,
                          problems={k: c for k, c, _ in report.grouped("error")})
        with self._write() as con:
            ev = self._event("team", "rejected", team=team, con=con, detail=detail)
        self._append_log(ev)

    @staticmethod
    def _write_archive(data: bytes, dest: Path) -> None:
        if dest.exists() and _sha256_file(dest) == dest.stem:
            return
        fd, tmp = tempfile.mkstemp(prefix=".incoming.", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _insert_score(self, con: sqlite3.Connection, sid: int, run: int, scored: Scored,
                      detail: dict[str, Any]) -> None:
        pub, priv = scored.public or {}, scored.private or {}
        con.execute(
            "INSERT INTO scores (submission_id, run, scored_at, public_recall, public_mrr, private_recall,"
            " private_mrr, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (sid, run, iso(self.now()), pub.get("recall20"), pub.get("mrr"), priv.get("recall20"),
             priv.get("mrr"), json.dumps(detail)),
        )

    def rescore(self) -> dict[str, Any]:
        """Score every archived file again as a new run (earlier runs stay); checks the hashes."""
        scorer = self.scorer()
        subs = self.con.execute("SELECT id, sha256, archive FROM submissions ORDER BY id").fetchall()
        problems, results = [], []
        for s in subs:
            path = self.path / s["archive"]
            if not path.is_file() or _sha256_file(path) != s["sha256"]:
                problems.append(f"submission #{s['id']}: archived file missing or altered ({s['archive']})")
                continue
            results.append((s["id"], scorer.score(path)))
        if problems:
            raise LeaderboardError("rescore stopped, nothing changed:\n  " + "\n  ".join(problems))
        changed = 0
        with self._write() as con:
            for sid, scored in results:
                run = con.execute("SELECT COALESCE(MAX(run), 0) + 1 FROM scores WHERE submission_id = ?",
                                  (sid,)).fetchone()[0]
                prev = con.execute("SELECT public_recall, public_mrr, private_recall, private_mrr FROM scores "
                                   "WHERE submission_id = ? ORDER BY run DESC LIMIT 1", (sid,)).fetchone()
                self._insert_score(con, sid, run, scored, {"public": scored.public, "private": scored.private})
                new = (scored.public or {}).get("recall20"), (scored.public or {}).get("mrr"), \
                    (scored.private or {}).get("recall20"), (scored.private or {}).get("mrr")
                if prev is None or any(
                    (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-12)
                    for a, b in zip(tuple(prev), new)
                ):
                    changed += 1
            ev = self._event("host", "rescore", con=con, detail={"n": len(results), "changed": changed})
        self._append_log(ev)
        return {"rescored": len(results), "changed": changed}

    def verify(self) -> list[str]:
        """Problems with the archive (missing or altered files); empty when all is well."""
        out = []
        for s in self.con.execute("SELECT id, sha256, archive FROM submissions ORDER BY id"):
            path = self.path / s["archive"]
            if not path.is_file():
                out.append(f"submission #{s['id']}: {s['archive']} is missing")
            elif _sha256_file(path) != s["sha256"]:
                out.append(f"submission #{s['id']}: {s['archive']} does not match its sha256")
        return out

    # -- submissions and boards -----------------------------------------------------------
    def _scored_submissions(self, team_id: int | None = None) -> list[dict[str, Any]]:
        q = (
            "SELECT s.id, s.team_id, t.name AS team, s.submitted_at, s.filename, s.note, s.sha256, s.via,"
            " sc.public_recall, sc.public_mrr, sc.private_recall, sc.private_mrr, sc.detail, sc.run"
            " FROM submissions s JOIN teams t ON t.id = s.team_id"
            " JOIN scores sc ON sc.submission_id = s.id"
            " AND sc.run = (SELECT MAX(run) FROM scores WHERE submission_id = s.id)"
        )
        args: tuple = ()
        if team_id is not None:
            q += " WHERE s.team_id = ?"
            args = (team_id,)
        rows = [dict(r) for r in self.con.execute(q + " ORDER BY s.id", args)]
        selected = {(r[0], r[1]) for r in self.con.execute("SELECT team_id, submission_id FROM selections")}
        for r in rows:
            r["selected"] = (r["team_id"], r["id"]) in selected
            for k in ("public_recall", "public_mrr", "private_recall", "private_mrr"):
                r[k] = rounded(r[k])
        return rows

    @staticmethod
    def _public_key(r: dict[str, Any]) -> tuple:
        return (-(r["public_recall"] or 0.0), -(r["public_mrr"] or 0.0), r["submitted_at"], r["id"])

    @staticmethod
    def _private_key(r: dict[str, Any]) -> tuple:
        return (-(r["private_recall"] or 0.0), -(r["private_mrr"] or 0.0), r["submitted_at"], r["id"])

    def public_board(self) -> list[dict[str, Any]]:
        """Best public submission per team, ranked (Recall@20, MRR, earliest). No private scores."""
        subs = self._scored_submissions()
        best: dict[int, dict[str, Any]] = {}
        stats: dict[int, dict[str, Any]] = {}
        for r in sorted(subs, key=self._public_key):
            best.setdefault(r["team_id"], r)
            st = stats.setdefault(r["team_id"], {"entries": 0, "last": ""})
            st["entries"] += 1
            st["last"] = max(st["last"], r["submitted_at"])
        board = []
        for rank, r in enumerate(sorted(best.values(), key=self._public_key), start=1):
            board.append({
                "rank": rank, "team": r["team"], "recall20": r["public_recall"], "mrr": r["public_mrr"],
                "entries": stats[r["team_id"]]["entries"], "last_submission": stats[r["team_id"]]["last"],
                "best_submitted_at": r["submitted_at"],
            })
        return board

    def private_board(self, host: bool = False) -> list[dict[str, Any]]:
        """Final ranking on the private split: the best private score among each team's final
        selections (or its best public submission when it selected none).

        Before ``close`` only the host may see it (``host=True``).
        """
        if not self.is_closed() and not host:
            raise AuthError("the private board is hidden until the host closes the competition")
        subs = self._scored_submissions()
        public_rank = {row["team"]: row["rank"] for row in self.public_board()}
        by_team: dict[int, list[dict[str, Any]]] = {}
        for r in subs:
            by_team.setdefault(r["team_id"], []).append(r)
        finals = []
        for team_subs in by_team.values():
            chosen = [r for r in team_subs if r["selected"]]
            auto = not chosen
            if auto:
                chosen = [min(team_subs, key=self._public_key)]
            best = min(chosen, key=self._private_key)
            finals.append((best, auto, len(team_subs)))
        finals.sort(key=lambda x: self._private_key(x[0]))
        board = []
        for rank, (r, auto, n) in enumerate(finals, start=1):
            pr = public_rank.get(r["team"])
            board.append({
                "rank": rank, "team": r["team"], "recall20": r["private_recall"], "mrr": r["private_mrr"],
                "public_recall20": r["public_recall"], "public_rank": pr,
                "move": (pr - rank) if pr else None, "submission_id": r["id"],
                "submitted_at": r["submitted_at"], "auto_selected": auto, "entries": n,
            })
        return board

    def history(self, team: str | None = None, *, team_id: int | None = None,
                show_private: bool | None = None) -> list[dict[str, Any]]:
        """A team's submissions, oldest first; private scores only after close (or for the host)."""
        if team_id is None:
            team_id = self.team(team or "")["id"]
        reveal = self.is_closed() if show_private is None else show_private
        out = []
        for r in self._scored_submissions(team_id):
            detail = json.loads(r.pop("detail"))
            row = {k: r[k] for k in ("id", "team", "submitted_at", "filename", "note", "selected",
                                     "public_recall", "public_mrr")}
            row["sha256"] = r["sha256"]
            row["public_per_category"] = _round_detail(detail.get("public") or {}).get("per_category", {})
            if reveal:
                row["private_recall"] = r["private_recall"]
                row["private_mrr"] = r["private_mrr"]
                row["private_per_category"] = _round_detail(detail.get("private") or {}).get("per_category", {})
            out.append(row)
        return out

    def is_closed(self) -> bool:
        return bool(self.meta().get("closed_at"))

    def select(self, team: str | None, submission_ids: list[int], *, team_id: int | None = None,
               actor: str = "team") -> list[int]:
        """Set a team's final selections (replacing earlier ones); ``[]`` goes back to the default."""
        t = {"id": team_id, "name": None} if team_id is not None else self.team(team or "")
        ids = sorted({int(i) for i in submission_ids})
        n_final = int(self.meta()["n_final"])
        if len(ids) > n_final:
            raise LeaderboardError(f"you may select at most {n_final} submissions (got {len(ids)})")
        with self._write() as con:
            if self.is_closed():
                raise SubmissionsClosed("the competition is closed: selections are final")
            name = con.execute("SELECT name FROM teams WHERE id = ?", (t["id"],)).fetchone()["name"]
            own = {r[0] for r in con.execute("SELECT id FROM submissions WHERE team_id = ?", (t["id"],))}
            foreign = [i for i in ids if i not in own]
            if foreign:
                raise LeaderboardError(
                    f"not submissions of team {name!r}: {', '.join('#' + str(i) for i in foreign)}")
            con.execute("DELETE FROM selections WHERE team_id = ?", (t["id"],))
            con.executemany("INSERT INTO selections VALUES (?, ?)", ((t["id"], i) for i in ids))
            ev = self._event(actor, "select", team=name, con=con, detail={"submission_ids": ids})
        self._append_log(ev)
        return ids

    def selection_note(self, team_id: int) -> str:
        ids = [r[0] for r in self.con.execute(
            "SELECT submission_id FROM selections WHERE team_id = ? ORDER BY submission_id", (team_id,))]
        n_final = int(self.meta()["n_final"])
        if not ids:
            return f"No final selection: your best public submission will count (you may select up to {n_final})."
        return f"Selected for the final ranking: {', '.join('#' + str(i) for i in ids)} (up to {n_final})."

    def close(self) -> list[dict[str, Any]]:
        """Freeze the competition and reveal the private board (cannot be undone)."""
        with self._write() as con:
            if self.is_closed():
                raise LeaderboardError(f"already closed at {short_time(self.meta()['closed_at'])}")
            self._set_meta(con, "closed_at", iso(self.now()))
            ev = self._event("host", "close", con=con)
        self._append_log(ev)
        board = self.private_board()
        with self._write() as con:
            ev = self._event("host", "final_ranking", con=con, detail={"ranking": [
                {"rank": r["rank"], "team": r["team"], "submission_id": r["submission_id"],
                 "recall20": r["recall20"], "mrr": r["mrr"]} for r in board]})
        self._append_log(ev)
        return board

    def set_deadline(self, deadline: str | None) -> str:
        value = iso(parse_time(deadline)) if deadline else ""
        with self._write() as con:
            self._set_meta(con, "deadline", value)
            ev = self._event("host", "set_deadline", con=con, detail={"deadline": value})
        self._append_log(ev)
        return value


def _round_detail(d: dict[str, Any] | None) -> dict[str, Any]:
    if not d:
        return {}
    out = {k: v for k, v in d.items()}
    for key in ("recall20", "mrr", "map20"):
        if key in out:
            out[key] = rounded(out[key])
    out["recall"] = {k: rounded(v) for k, v in (d.get("recall") or {}).items()}
    out["per_category"] = {k: rounded(v) for k, v in (d.get("per_category") or {}).items()}
    return out


# ----------------------------------------------------------------------------------------
# finding a competition
# ----------------------------------------------------------------------------------------
def find_competition(path: str | os.PathLike | None = None, now: Callable[[], datetime] = utcnow) -> Competition:
    """Open ``path``; else $TMR_LEADERBOARD; else the only competition under ./competitions."""
    if path is None:
        path = os.environ.get("TMR_LEADERBOARD") or None
    if path is not None:
        p = Path(path)
        if not (p / DB_NAME).is_file() and (Path(DEFAULT_ROOT) / p / DB_NAME).is_file():
            p = Path(DEFAULT_ROOT) / p  # a bare name: competitions/<name>
        return Competition(p, now=now)
    root = Path(DEFAULT_ROOT)
    found = sorted(p.parent for p in root.glob(f"*/{DB_NAME}")) if root.is_dir() else []
    if len(found) == 1:
        return Competition(found[0], now=now)
    if not found:
        raise LeaderboardError(
            f"no competition found under ./{DEFAULT_ROOT}; create one with "
            "`python -m leaderboard init HOST_FOLDER` or pass --dir")
    raise LeaderboardError("several competitions found; pass --dir with one of: "
                           + ", ".join(str(p) for p in found))
