"""Competition state: the façade over storage, rules, scoring and ranking.

A competition lives in one directory (default ``competitions/<name>``)::

    leaderboard.sqlite3   settings, queries + answers + split, cites, teams, submissions,
                          scores, selections and the append-only event log
    archive/<sha256>.csv  every accepted file, read-only, named by its hash
    log.jsonl             a human-readable copy of the event log (one JSON object a line)

It is self-contained: ``init`` copies the test gids, the cite gids and the answers out of
the dataset's folders, so the dataset may move or vanish afterwards. The answers never
leave this directory: no board, page, message, log line or export contains them.

Rules (as the boards state them; see :mod:`leaderboard.rules`):

* ranking: Recall@20 desc, then MRR desc, then the earliest submission; scores are rounded
  to 4 decimals *before* ranking, so what you see is what is ranked;
* a seeded, category-stratified public/private split of the test queries (default 30% public);
* a daily limit per team, counted per UTC day starting at ``reset_utc`` (default 00:00);
  rejected files (invalid, over the limit, after the deadline) cost nothing;
* up to ``n_final`` final selections per team (default 2); no selection -> the best public;
* the private board is revealed only by ``close``;
* write-ups (:mod:`.writeups`): from the host-set time, else from ``close``, each team may
  attach a short Markdown write-up to its final submission (8 kB, rendered safely);
* optional: the public board shows each score's 95 % bootstrap interval (:mod:`.intervals`).

Concurrency: the quota check, the archive write and the inserts happen in one
``BEGIN IMMEDIATE`` transaction, so parallel submissions can never exceed the limit.
Submissions, scores, queries and events are append-only (SQLite triggers refuse UPDATE and
DELETE); ``rescore`` adds a new scoring run and never overwrites an earlier one.

The pieces: :mod:`.storage` (database, archive, log), :mod:`.rules` (limits, deadlines,
split, names, tokens), :mod:`.dataset` (reading a host folder), :mod:`.scorer` (validation
and metrics), :mod:`.board` (ranking). Every name this module exported before the split is
still importable from here.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from tmr_lib.submission import ValidationReport, size_limit

from . import board as _board
from . import integrity as _integrity
from . import rules as _rules
from . import storage as _storage
from . import writeups as _writeups
from .board import round_detail as _round_detail
from .dataset import load_dataset as _load_dataset
from .dataset import read_csv as _read_csv
from .errors import (
    AuthError,
    DatabaseBusy,
    InvalidSubmission,
    InvalidWriteup,
    LeaderboardError,
    QuotaExceeded,
    StorageError,
    SubmissionsClosed,
    TooManyRejections,
    WriteupsNotOpen,
)
from .rules import (
    CATEGORIES,
    MAX_NAME,
    MAX_NOTE,
    UTC,
    clean_name,
    clean_note,
    iso,
    new_token,
    parse_reset,
    parse_time,
    short_time,
    split_public,
    utcnow,
)
from .rules import hash_token as _hash_token
from .scorer import DECIMALS, Scored, Scorer, rounded
from .storage import ARCHIVE, DB_NAME, DEFAULT_ROOT, LOG_NAME, SCHEMA_VERSION
from .storage import SCHEMA as _SCHEMA
from .storage import append_only_triggers as _append_only_triggers
from .storage import connect as _connect
from .storage import sha256_file as _sha256_file

__all__ = [
    "ARCHIVE", "CATEGORIES", "DB_NAME", "DEFAULT_ROOT", "LOG_NAME", "MAX_NAME", "MAX_NOTE", "SCHEMA_VERSION",
    "UTC", "AuthError", "Competition", "DatabaseBusy", "InvalidSubmission", "InvalidWriteup",
    "LeaderboardError", "QuotaExceeded", "StorageError", "SubmissionsClosed", "SubmitResult", "TooManyRejections",
    "WriteupsNotOpen", "clean_name", "clean_note", "find_competition", "iso", "new_token", "parse_reset",
    "parse_time", "short_time", "split_public", "utcnow",
]
# pre-split private names, kept importable from here
_REEXPORTED = (_read_csv, _SCHEMA, _append_only_triggers)


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


def _creation_meta(name: str, created: datetime, host_token: str, ds: dict[str, Any], host_dir: Path,
                   public_fraction: float, seed: int, daily_limit: int, reset_minutes: int,
                   n_final: int, deadline_iso: str, reject_limit: int, reject_window: int,
                   writeups_open_iso: str = "", public_intervals: bool = False) -> dict[str, str]:
    return {
        "writeups_open": writeups_open_iso,
        "public_intervals": "1" if public_intervals else "0",
        "reject_limit": str(int(reject_limit)),
        "reject_window_minutes": str(int(reject_window)),
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


# ----------------------------------------------------------------------------------------
# the competition
# ----------------------------------------------------------------------------------------
class Competition:
    """One competition directory. Open with ``Competition(path)``; create with ``Competition.create``."""

    def __init__(self, path: str | os.PathLike, now: Callable[[], datetime] = utcnow, wait: float | None = None):
        self.path = Path(path)
        self.db_path = self.path / DB_NAME
        if not self.db_path.is_file():
            raise LeaderboardError(
                f"no competition at {self.path} (no {DB_NAME}); create one with "
                "`python -m leaderboard init HOST_FOLDER`"
            )
        self._now = now
        self.wait = _storage.default_wait() if wait is None else float(wait)
        try:
            self.con = _connect(self.db_path, self.wait)
        except (sqlite3.Error, OSError) as exc:
            err = _storage.storage_error(exc)
            if err is None:
                raise
            raise err from exc
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
        reject_limit: int = _rules.REJECT_LIMIT,
        reject_window: int = _rules.REJECT_WINDOW_MINUTES,
        writeups_open: str | None = None,
        public_intervals: bool = False,
    ) -> tuple["Competition", dict[str, str]]:
        """Create a competition from a dataset's host folder; returns it and the new tokens.

        The tokens dict maps ``"host"`` and each team name to its token (shown only once:
        only their hashes are stored). ``reject_limit`` rejected files per team within
        ``reject_window`` minutes (0 = no limit) make later files wait. ``writeups_open``: when
        teams may attach write-ups (ISO time; default: at close). ``public_intervals``: show 95 %
        bootstrap intervals on the public board. Everything is built in a temporary folder next to
        the target and renamed into place at the end, so a failure leaves nothing behind.
        """
        host_dir = Path(host_dir)
        ds = _load_dataset(host_dir, Path(data_dir) if data_dir else None)
        name = clean_name(name or ds["host_json"].get("name") or host_dir.name.removesuffix("-host"),
                          "competition name")
        target = Path(path) if path else Path(DEFAULT_ROOT) / re.sub(r"[^\w.-]+", "_", name)
        if target.exists():
            raise LeaderboardError(f"{target} already exists; choose another --dir (or delete it)")
        _rules.check_settings(public_fraction, daily_limit, n_final)
        reset_minutes = parse_reset(reset_utc)
        deadline_iso = iso(parse_time(deadline)) if deadline else ""
        if seed is None:
            seed = secrets.randbelow(2**31)
        team_names = [clean_name(t) for t in (teams or [])]
        if reject_limit < 0 or reject_window < 1:
            raise LeaderboardError("the rejection limit must be 0 (none) or more, its window at least 1 minute")
        settings = dict(public_fraction=public_fraction, seed=seed, daily_limit=daily_limit,
                        reset_minutes=reset_minutes, n_final=n_final, deadline_iso=deadline_iso,
                        reject_limit=reject_limit, reject_window=reject_window,
                        writeups_open_iso=iso(parse_time(writeups_open)) if writeups_open else "",
                        public_intervals=bool(public_intervals))

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            tokens = cls._build(tmp, name, ds, host_dir, team_names, reset_utc, now, settings)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(target, now=now), tokens

    @classmethod
    def _build(cls, tmp: Path, name: str, ds: dict[str, Any], host_dir: Path, team_names: list[str],
               reset_utc: str, now: Callable[[], datetime], settings: dict[str, Any]) -> dict[str, str]:
        """Fill the (private) folder ``tmp``: database, archive folder, init event, teams."""
        os.chmod(tmp, 0o700)
        (tmp / ARCHIVE).mkdir()
        test = ds["test"]
        cats = [ds["answers"][g][1] for g in test]
        public = split_public(test, cats, settings["public_fraction"], settings["seed"])
        host_token = new_token()
        meta = _creation_meta(name, now(), host_token, ds, host_dir, **settings)
        queries = ((i, g, "public" if public[i] else "private", ds["answers"][g][1], ds["answers"][g][0])
                   for i, g in enumerate(test))
        _storage.create_database(tmp / DB_NAME, meta, queries, ds["cites"])
        comp = cls(tmp, now=now)
        comp._event("host", "init", detail={
            "name": name, "n_test": len(test), "n_public": int(public.sum()),
            "n_cite": len(ds["cites"]), "daily_limit": settings["daily_limit"], "reset_utc": reset_utc,
            "n_final": settings["n_final"], "deadline": settings["deadline_iso"],
            "public_fraction": settings["public_fraction"], "source_sha256": ds["sha256"],
            "writeups_open": settings["writeups_open_iso"], "public_intervals": settings["public_intervals"],
        })
        tokens = {"host": host_token}
        for t in team_names:
            tokens[t] = comp.add_team(t)
        comp.close_db()
        return tokens

    # -- basics ----------------------------------------------------------------------------
    def close_db(self) -> None:
        self.con.close()

    def __enter__(self) -> "Competition":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close_db()

    def now(self) -> datetime:
        """The clock, but never earlier than the last recorded event.

        Time never runs backwards for the rules: a clock set back (by hand, NTP, a VM restore)
        cannot reopen a quota day already used or a deadline once anything happened after it.
        """
        t = self._now()
        row = self.con.execute("SELECT at FROM events ORDER BY id DESC LIMIT 1").fetchone()
        if row is not None:
            last = parse_time(row[0])
            if last > t:
                return last
        return t

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One serialised write transaction (BEGIN IMMEDIATE takes the write lock up front)."""
        with _storage.write_transaction(self.con, self.wait) as con:
            yield con

    def meta(self) -> dict[str, str]:
        return _storage.read_meta(self.con)

    def _set_meta(self, con: sqlite3.Connection, key: str, value: str) -> None:
        _storage.set_meta(con, key, value)

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
            "reject_limit": int(m.get("reject_limit", _rules.REJECT_LIMIT)),
            "reject_window_minutes": int(m.get("reject_window_minutes", _rules.REJECT_WINDOW_MINUTES)),
            "writeups_open": _writeups.opens_at(m),
            "writeups_are_open": _writeups.are_open(m, now),
            "writeups_note": _writeups.opens_text(m, now),
            "max_writeup_bytes": _writeups.MAX_WRITEUP_BYTES,
            "public_intervals": m.get("public_intervals") == "1",
        }

    # -- the day used for the daily limit -------------------------------------------------
    def _reset_minutes(self) -> int:
        return int(self.meta()["reset_minutes"])

    def quota_day(self, when: datetime) -> str:
        return _rules.quota_day(when, self._reset_minutes())

    def _next_reset(self, when: datetime) -> datetime:
        return _rules.next_reset(when, self._reset_minutes())

    # -- log ------------------------------------------------------------------------------
    def _event(self, actor: str, action: str, team: str | None = None,
               submission_id: int | None = None, detail: dict[str, Any] | None = None,
               con: sqlite3.Connection | None = None) -> dict[str, Any]:
        ev = {"at": iso(self.now()), "actor": actor, "action": action, "team": team,
              "submission_id": submission_id, "detail": detail or {}}
        _storage.insert_event(con or self.con, ev)
        if con is None:
            self._append_log(ev)
        return ev

    def _append_log(self, ev: dict[str, Any] | None = None) -> None:
        """Bring log.jsonl up to date with the events table (``ev`` is already in the table).

        Runs after the COMMIT: the table is the record, so a log that cannot be written (a full
        disk) is a warning, not a failure of what was just recorded; the next write or
        ``verify --repair`` writes the missing lines, and ``verify`` lists them meanwhile.
        """
        try:
            _storage.sync_log(self.con, self.path)
        except (OSError, sqlite3.Error) as exc:
            print(f"warning: {LOG_NAME} could not be brought up to date ({exc}); the database holds the "
                  "record: the next write or `verify --repair` writes the missing lines", file=sys.stderr)

    def events(self, limit: int | None = None) -> list[dict[str, Any]]:
        return _storage.read_events(self.con, limit)

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
        row = self.con.execute("SELECT id, name FROM teams WHERE name_key = ?", (_rules.name_key(name),)).fetchone()
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
        _rules.check_open(self.meta(), now)

    def _quota_message(self, limit: int, now: datetime) -> str:
        return _rules.quota_message(limit, now, self._reset_minutes())

    def submit(self, source: Any, team: str | None = None, *, token: str | None = None,
               note: str = "", filename: str | None = None, via: str = "api",
               validator: Callable[[Any, str], ValidationReport] | None = None) -> SubmitResult:
        """Validate, score and record a submission for ``team`` (by name) or ``token``.

        Raises :class:`InvalidSubmission` (every problem listed), :class:`QuotaExceeded`,
        :class:`SubmissionsClosed`, :class:`TooManyRejections`, :class:`DatabaseBusy`,
        :class:`StorageError` or :class:`AuthError`; none of them uses quota. ``validator``
        (source, filename) -> report replaces the in-process validation (the web app's worker
        processes, :mod:`leaderboard.workers`); scoring and recording stay here.
        """
        t = self.team_for_token(token) if token is not None else self.team(team or "")
        if filename is None:
            filename = Path(source).name if isinstance(source, (str, os.PathLike)) else "upload.csv"
        filename = clean_note(filename)[:120] or "upload.csv"
        note = clean_note(note)
        limit = int(self.meta()["daily_limit"])
        now = self.now()
        self._refuse_if_closed(t["name"], filename, now)
        self.check_rejections(t["name"], now)  # before the file is read: a flood of bad files stays cheap
        if self.used_today(t["id"], now) >= limit:  # early, non-binding check: spare the scoring
            self._log_rejection(t["name"], "daily_limit", filename)
            raise QuotaExceeded(self._quota_message(limit, now))

        if validator is not None:
            scored: Scored = self.scorer().score_report(validator(source, filename))
        else:
            scored = self.scorer().score(source, name=filename)
        report = scored.report
        if not report.ok:
            self._log_rejection(t["name"], "invalid", filename, report)
            raise InvalidSubmission(report)

        try:
            sid, ev, used, dup, now = self._record(t, report, scored, filename, note, via, limit)
        except QuotaExceeded:
            self._log_rejection(t["name"], "daily_limit", filename)
            raise
        except SubmissionsClosed:  # closed (or past the deadline) while this file was being scored
            self._log_rejection(t["name"], "closed", filename)
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

    def _refuse_if_closed(self, team: str, filename: str, now: datetime) -> None:
        """SubmissionsClosed (logged: the record then shows the deadline was reached) when closed or late."""
        try:
            self._check_open(now)
        except SubmissionsClosed:
            self._log_rejection(team, "closed", filename)
            raise

    def _record(self, t: dict[str, Any], report: ValidationReport, scored: Scored, filename: str,
                note: str, via: str, limit: int) -> tuple:
        """The atomic part: quota check, archive, submission + score + event rows, one transaction.

        A failure after the archive file was written (a full disk at COMMIT, a kill is another
        story: see :mod:`.integrity`) removes that file again before the ROLLBACK, unless it was
        there before: nothing is left half-written.
        """
        archive_rel = f"{ARCHIVE}/{report.sha256}.csv"
        dest = self.path / archive_rel
        detail = {"public": scored.public, "private": scored.private}
        undo: list[Callable[[], None]] = []
        with _storage.write_transaction(self.con, self.wait, undo) as con:
            now = self.now()
            self._check_open(now)
            day = self.quota_day(now)
            used = con.execute("SELECT COUNT(*) FROM submissions WHERE team_id = ? AND quota_day = ?",
                               (t["id"], day)).fetchone()[0]
            if used >= limit:
                raise QuotaExceeded(self._quota_message(limit, now))
            if self._write_archive(report.data, dest):
                undo.append(dest.unlink)
            _storage.ensure_copies(con)
            _storage.insert_copy(con, report.sha256, report.data)
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

    def log_too_large(self, token: str | None, n_bytes: int | None, filename: str = "upload.csv") -> None:
        """Record an upload refused unread for its size (the web app's 413) as a rejection."""
        try:
            team = self.team_for_token(token)["name"] if token else None
        except AuthError:
            team = None
        self._log_rejection(team, "too_large", filename, bytes=n_bytes)

    def check_rejections(self, team: str, now: datetime | None = None) -> None:
        """TooManyRejections when ``team`` hit the host's limit on rejected files (invalid, too large)."""
        m = self.meta()
        limit = int(m.get("reject_limit", _rules.REJECT_LIMIT))
        window = int(m.get("reject_window_minutes", _rules.REJECT_WINDOW_MINUTES))
        if limit <= 0:
            return
        now = now or self.now()
        since = iso(now - timedelta(minutes=window))
        times = [parse_time(r[0]) for r in self.con.execute(
            "SELECT at FROM events WHERE action = 'rejected' AND team = ? AND at > ?"
            " AND json_extract(detail, '$.reason') IN ('invalid', 'too_large') ORDER BY at", (team, since))]
        _rules.check_rejections(times, limit, window, now)

    def _log_rejection(self, team: str | None, reason: str, filename: str, report: ValidationReport | None = None,
                       **extra: Any) -> None:
        detail: dict[str, Any] = {"reason": reason, "filename": filename, **extra}
        if report is not None:
            detail.update(sha256=report.sha256, bytes=report.n_bytes,
                          problems={k: c for k, c, _ in report.grouped("error")})
        try:
            with self._write() as con:
                ev = self._event("team", "rejected", team=team, con=con, detail=detail)
        except (DatabaseBusy, StorageError):
            return  # the refusal itself matters more than its log line; nothing was recorded
        self._append_log(ev)

    @staticmethod
    def _write_archive(data: bytes, dest: Path) -> bool:
        return _storage.write_archive(data, dest)

    def _insert_score(self, con: sqlite3.Connection, sid: int, run: int, scored: Scored,
                      detail: dict[str, Any]) -> None:
        _storage.insert_score(con, sid, run, iso(self.now()), scored.public, scored.private, detail)

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
                changed += self._add_run(con, sid, scored)
            ev = self._event("host", "rescore", con=con, detail={"n": len(results), "changed": changed})
        self._append_log(ev)
        return {"rescored": len(results), "changed": changed}

    def _add_run(self, con: sqlite3.Connection, sid: int, scored: Scored) -> bool:
        """A new scoring run for submission ``sid``; True when a score differs from the last run."""
        run = con.execute("SELECT COALESCE(MAX(run), 0) + 1 FROM scores WHERE submission_id = ?",
                          (sid,)).fetchone()[0]
        prev = con.execute("SELECT public_recall, public_mrr, private_recall, private_mrr FROM scores "
                           "WHERE submission_id = ? ORDER BY run DESC LIMIT 1", (sid,)).fetchone()
        self._insert_score(con, sid, run, scored, {"public": scored.public, "private": scored.private})
        new = (scored.public or {}).get("recall20"), (scored.public or {}).get("mrr"), \
            (scored.private or {}).get("recall20"), (scored.private or {}).get("mrr")
        return prev is None or any(
            (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-12)
            for a, b in zip(tuple(prev), new)
        )

    def verify(self, sample: int = _integrity.DEFAULT_SAMPLE) -> list[str]:
        """Every problem found (see :mod:`leaderboard.integrity`); empty when all is well.

        Archive <-> database both ways, leftover temporary files, log.jsonl <-> the events
        table, and the stored scores of ``sample`` archived files (0 = all) <-> a rescoring.
        """
        return [f.message for f in _integrity.verify(self, sample)]

    def verify_findings(self, sample: int = _integrity.DEFAULT_SAMPLE) -> list[_integrity.Finding]:
        return _integrity.verify(self, sample)

    def repair(self) -> list[str]:
        """Move orphans aside, remove temporary files, rewrite the log; returns what was done."""
        return _integrity.repair(self)

    # -- submissions and boards -----------------------------------------------------------
    def _scored_submissions(self, team_id: int | None = None) -> list[dict[str, Any]]:
        return _board.scored_submissions(self.con, team_id)

    _public_key = staticmethod(_board.public_key)
    _private_key = staticmethod(_board.private_key)

    def public_board(self, intervals: bool | None = None) -> list[dict[str, Any]]:
        """Best public submission per team, ranked (Recall@20, MRR, earliest). No private scores.

        ``intervals`` (default: the host's setting) adds each score's 95 % bootstrap interval
        over the public queries and whether the gap to the team above is within noise.
        """
        subs = self._scored_submissions()
        rows = _board.public_rows(subs)
        if intervals is None:
            intervals = self.meta().get("public_intervals") == "1"
        if intervals and rows:
            from . import intervals as _intervals

            _intervals.attach(self, rows, _board.best_public(subs))
        return rows

    def race(self) -> list[dict[str, Any]]:
        """Every scored submission with its time and *public* scores only: what the race plots draw."""
        return _board.race_rows(self._scored_submissions())

    def private_board(self, host: bool = False) -> list[dict[str, Any]]:
        """Final ranking on the private split: the best private score among each team's final
        selections (or its best public submission when it selected none).

        Before ``close`` only the host may see it (``host=True``).
        """
        if not self.is_closed() and not host:
            raise AuthError("the private board is hidden until the host closes the competition")
        rows = _board.private_rows(self._scored_submissions())
        notes = {self._team_name(tid): w for tid, w in _storage.latest_writeups(self.con).items()}
        for r in rows:
            w = notes.get(r["team"])
            r["writeup"] = w["body"] if w else ""
            r["writeup_title"] = _writeups.title(w["body"]) if w else ""
            r["writeup_at"] = w["written_at"] if w else ""
        return rows

    def _team_name(self, team_id: int) -> str:
        row = self.con.execute("SELECT name FROM teams WHERE id = ?", (team_id,)).fetchone()
        return row["name"] if row else ""

    # -- write-ups --------------------------------------------------------------------------
    def writeup(self, team_id: int) -> dict[str, Any] | None:
        """A team's latest write-up (body, written_at, submission_id), or None."""
        return _storage.latest_writeups(self.con).get(team_id)

    def set_writeup(self, text: Any, team: str | None = None, *, token: str | None = None,
                    via: str = "api") -> dict[str, Any]:
        """Attach (or replace) a team's write-up to its final submission; every version is kept.

        Raises :class:`WriteupsNotOpen` (saying when they open) before the host's time or
        close, :class:`InvalidWriteup` when empty or over the cap, AuthError for a bad token,
        LeaderboardError when the team has no submission yet.
        """
        t = self.team_for_token(token) if token is not None else self.team(team or "")
        _writeups.check_open(self.meta(), self.now())  # first: "not yet" beats "too long"
        body = _writeups.clean_writeup(text)
        sha = _writeups.writeup_sha256(body)
        with self._write() as con:
            now = self.now()
            _writeups.check_open(self.meta(), now)
            finals = _board.final_choices(self._scored_submissions(t["id"]))
            if not finals:
                raise LeaderboardError(f"team {t['name']!r} has no submission to attach a write-up to: submit first")
            sid = finals[0][0]["id"]
            _storage.ensure_writeups(con)
            _storage.insert_writeup(con, t["id"], sid, iso(now), body, sha, via)
            ev = self._event("team", "writeup", team=t["name"], submission_id=sid, con=con, detail={
                "bytes": len(body.encode("utf-8")), "sha256": sha, "via": via})
        self._append_log(ev)
        return {"team": t["name"], "submission_id": sid, "bytes": len(body.encode("utf-8")),
                "title": _writeups.title(body), "written_at": iso(now)}

    def set_writeups_open(self, when: str | None) -> str:
        """Host: open write-ups at ``when`` (ISO time), or ``None`` for the default (at close)."""
        value = iso(parse_time(when)) if when else ""
        with self._write() as con:
            self._set_meta(con, "writeups_open", value)
            ev = self._event("host", "set_writeups_open", con=con, detail={"writeups_open": value})
        self._append_log(ev)
        return value

    def set_public_intervals(self, on: bool) -> bool:
        """Host: show (or hide) the 95 % bootstrap interval of each public score."""
        with self._write() as con:
            self._set_meta(con, "public_intervals", "1" if on else "0")
            ev = self._event("host", "set_public_intervals", con=con, detail={"on": bool(on)})
        self._append_log(ev)
        return bool(on)

    def history(self, team: str | None = None, *, team_id: int | None = None,
                show_private: bool | None = None) -> list[dict[str, Any]]:
        """A team's submissions, oldest first; private scores only after close (or for the host)."""
        if team_id is None:
            team_id = self.team(team or "")["id"]
        reveal = self.is_closed() if show_private is None else show_private
        return _board.history_rows(self._scored_submissions(team_id), reveal)

    def is_closed(self) -> bool:
        return bool(self.meta().get("closed_at"))

    def select(self, team: str | None, submission_ids: list[int], *, team_id: int | None = None,
               actor: str = "team") -> list[int]:
        """Set a team's final selections (replacing earlier ones); ``[]`` goes back to the default."""
        t = {"id": team_id, "name": None} if team_id is not None else self.team(team or "")
        ids = sorted({int(i) for i in submission_ids})
        _rules.check_selection(ids, int(self.meta()["n_final"]))
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
        return _rules.selection_note(ids, int(self.meta()["n_final"]))

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


# ----------------------------------------------------------------------------------------
# finding a competition
# ----------------------------------------------------------------------------------------
def find_competition(path: str | os.PathLike | None = None, now: Callable[[], datetime] = utcnow,
                     wait: float | None = None) -> Competition:
    """Open ``path``; else $TMR_LEADERBOARD; else the only competition under ./competitions."""
    if path is None:
        path = os.environ.get("TMR_LEADERBOARD") or None
    if path is not None:
        p = Path(path)
        if not (p / DB_NAME).is_file() and (Path(DEFAULT_ROOT) / p / DB_NAME).is_file():
            p = Path(DEFAULT_ROOT) / p  # a bare name: competitions/<name>
        return Competition(p, now=now, wait=wait)
    root = Path(DEFAULT_ROOT)
    found = sorted(p.parent for p in root.glob(f"*/{DB_NAME}")) if root.is_dir() else []
    if len(found) == 1:
        return Competition(found[0], now=now, wait=wait)
    if not found:
        raise LeaderboardError(
            f"no competition found under ./{DEFAULT_ROOT}; create one with "
            "`python -m leaderboard init HOST_FOLDER` or pass --dir")
    raise LeaderboardError("several competitions found; pass --dir with one of: "
                           + ", ".join(str(p) for p in found))
