"""Reading a dataset's host and participant folders for ``init`` (csv module: no pandas needed).

Every problem is collected and reported at once. Problems about the answers name line
numbers and query gids only, never an answer's cite gids.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .errors import LeaderboardError
from .rules import CATEGORIES
from .storage import sha256_file


def read_csv(path: Path, columns: list[str]) -> tuple[list[dict[str, str]], list[str]]:
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


def _read_host_json(host_dir: Path, problems: list[str]) -> dict[str, Any]:
    hj = host_dir / "host.json"
    if hj.is_file():
        try:
            return json.loads(hj.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"{hj}: not valid JSON ({exc})")
    elif not host_dir.is_dir():
        raise LeaderboardError(f"host folder not found: {host_dir}")
    return {}


def _participant_dir(host_dir: Path, host_json: dict[str, Any], data_dir: Path | None) -> Path:
    if data_dir is None:
        rel = host_json.get("participant_dir")
        if not rel:
            raise LeaderboardError(
                f"{host_dir / 'host.json'} does not name the participant folder (participant_dir); pass --data"
            )
        data_dir = (host_dir / rel).resolve()
    if not data_dir.is_dir():
        raise LeaderboardError(f"participant folder not found: {data_dir}")
    return data_dir


def _check_test(test: list[str], problems: list[str]) -> dict[str, int]:
    """gid -> line in test.csv; empty and repeated gids added to ``problems``."""
    seen: dict[str, int] = {}
    for i, g in enumerate(test, start=2):
        if not g:
            problems.append(f"test.csv line {i}: empty gid")
        elif g in seen:
            problems.append(f"test.csv line {i}: gid {g} repeated (first on line {seen[g]})")
        else:
            seen[g] = i
    return seen


def _check_cites(cites: list[str], problems: list[str]) -> set[str]:
    cite_set = set(cites)
    if len(cite_set) != len(cites):
        problems.append(f"cite_v2.csv: {len(cites) - len(cite_set)} repeated gid(s)")
    if "" in cite_set:
        problems.append("cite_v2.csv: empty gid(s)")
    return cite_set


def _check_answer_row(i: int, r: dict[str, str], cite_set: set[str], problems: list[str]) -> int:
    """The problems of one answers.csv row (never naming a cite gid); returns its category."""
    g, ids = r["gid"], r["cite_gid"].split()
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
    return cat


def _check_answers(ans_rows: list[dict[str, str]], seen: dict[str, int], cite_set: set[str],
                   problems: list[str]) -> dict[str, tuple[str, int]]:
    """gid -> (answer ids joined by spaces, category); problems name lines and query gids only."""
    answers: dict[str, tuple[str, int]] = {}
    ans_line: dict[str, int] = {}
    for i, r in enumerate(ans_rows, start=2):
        g = r["gid"]
        if g not in seen:
            problems.append(f"answers.csv line {i}: gid {g!r} is not in test.csv")
            continue
        if g in answers:
            problems.append(f"answers.csv line {i}: gid {g} repeated (first on line {ans_line[g]})")
            continue
        cat = _check_answer_row(i, r, cite_set, problems)
        answers[g] = (" ".join(r["cite_gid"].split()), cat)
        ans_line[g] = i
    return answers


def _refuse(problems: list[str], limit: int | None = None) -> None:
    shown = problems if limit is None else problems[:limit]
    more = f"\n  ... and {len(problems) - limit} more" if limit is not None and len(problems) > limit else ""
    raise LeaderboardError("cannot create the competition:\n  " + "\n  ".join(shown) + more)


def load_dataset(host_dir: Path, data_dir: Path | None) -> dict[str, Any]:
    """Read and cross-check host.json, answers.csv, test.csv and cite_v2.csv; list every problem."""
    problems: list[str] = []
    host_json = _read_host_json(host_dir, problems)
    data_dir = _participant_dir(host_dir, host_json, data_dir)

    test_rows, p1 = read_csv(data_dir / "test.csv", ["gid"])
    cite_rows, p2 = read_csv(data_dir / "cite_v2.csv", ["gid"])
    ans_rows, p3 = read_csv(host_dir / "answers.csv", ["gid", "cite_gid", "category"])
    problems += p1 + p2 + p3
    if problems:
        _refuse(problems)

    test = [r["gid"] for r in test_rows]
    cites = [r["gid"] for r in cite_rows]
    seen = _check_test(test, problems)
    cite_set = _check_cites(cites, problems)
    if not test:
        problems.append("test.csv has no queries")
    answers = _check_answers(ans_rows, seen, cite_set, problems)
    missing = [g for g in test if g not in answers]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        problems.append(f"answers.csv: no answer for {len(missing)} test gid(s): {shown}")
    if problems:
        _refuse(problems, 50)
    return {
        "host_json": host_json,
        "data_dir": data_dir,
        "test": test,
        "cites": cites,
        "answers": answers,
        "sha256": {
            "test.csv": sha256_file(data_dir / "test.csv"),
            "cite_v2.csv": sha256_file(data_dir / "cite_v2.csv"),
            "answers.csv": sha256_file(host_dir / "answers.csv"),
        },
    }
