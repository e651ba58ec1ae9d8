"""Ranking: the rows of the public board, the private (final) board and a team's history.

Ranking rule: Recall@20 desc, then MRR desc, then the earliest submission (then the id);
scores are rounded to 4 decimals *before* ranking, so what is shown is what is ranked.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from .scorer import rounded

_SCORED = (
    "SELECT s.id, s.team_id, t.name AS team, s.submitted_at, s.filename, s.note, s.sha256, s.via,"
    " sc.public_recall, sc.public_mrr, sc.private_recall, sc.private_mrr, sc.detail, sc.run"
    " FROM submissions s JOIN teams t ON t.id = s.team_id"
    " JOIN scores sc ON sc.submission_id = s.id"
    " AND sc.run = (SELECT MAX(run) FROM scores WHERE submission_id = s.id)"
)


def scored_submissions(con: sqlite3.Connection, team_id: int | None = None) -> list[dict[str, Any]]:
    """Every submission (or one team's) with its latest scoring run, rounded; oldest first."""
    q, args = _SCORED, ()
    if team_id is not None:
        q += " WHERE s.team_id = ?"
        args = (team_id,)
    rows = [dict(r) for r in con.execute(q + " ORDER BY s.id", args)]
    selected = {(r[0], r[1]) for r in con.execute("SELECT team_id, submission_id FROM selections")}
    for r in rows:
        r["selected"] = (r["team_id"], r["id"]) in selected
        for k in ("public_recall", "public_mrr", "private_recall", "private_mrr"):
            r[k] = rounded(r[k])
    return rows


def public_key(r: dict[str, Any]) -> tuple:
    return (-(r["public_recall"] or 0.0), -(r["public_mrr"] or 0.0), r["submitted_at"], r["id"])


def private_key(r: dict[str, Any]) -> tuple:
    return (-(r["private_recall"] or 0.0), -(r["private_mrr"] or 0.0), r["submitted_at"], r["id"])


def best_public(subs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each team's best public submission, in public ranking order (the public board's rows)."""
    best: dict[int, dict[str, Any]] = {}
    for r in sorted(subs, key=public_key):
        best.setdefault(r["team_id"], r)
    return sorted(best.values(), key=public_key)


def public_rows(subs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best public submission per team, ranked (Recall@20, MRR, earliest). No private scores."""
    stats: dict[int, dict[str, Any]] = {}
    for r in subs:
        st = stats.setdefault(r["team_id"], {"entries": 0, "last": ""})
        st["entries"] += 1
        st["last"] = max(st["last"], r["submitted_at"])
    board = []
    for rank, r in enumerate(best_public(subs), start=1):
        board.append({
            "rank": rank, "team": r["team"], "recall20": r["public_recall"], "mrr": r["public_mrr"],
            "entries": stats[r["team_id"]]["entries"], "last_submission": stats[r["team_id"]]["last"],
            "best_submitted_at": r["submitted_at"],
        })
    return board


def final_choices(subs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool, int]]:
    """(counted submission, auto-selected?, entries) per team, in private ranking order.

    A team's counted submission is the best private score among its selections, or its best
    public submission when it selected none.
    """
    by_team: dict[int, list[dict[str, Any]]] = {}
    for r in subs:
        by_team.setdefault(r["team_id"], []).append(r)
    finals = []
    for team_subs in by_team.values():
        chosen = [r for r in team_subs if r["selected"]]
        auto = not chosen
        if auto:
            chosen = [min(team_subs, key=public_key)]
        best = min(chosen, key=private_key)
        finals.append((best, auto, len(team_subs)))
    finals.sort(key=lambda x: private_key(x[0]))
    return finals


def private_rows(subs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The final ranking on the private split, with each team's public rank and its move."""
    public_rank = {row["team"]: row["rank"] for row in public_rows(subs)}
    board = []
    for rank, (r, auto, n) in enumerate(final_choices(subs), start=1):
        pr = public_rank.get(r["team"])
        detail = json.loads(r["detail"]) if isinstance(r.get("detail"), str) else (r.get("detail") or {})
        board.append({
            "rank": rank, "team": r["team"], "recall20": r["private_recall"], "mrr": r["private_mrr"],
            "public_recall20": r["public_recall"], "public_rank": pr,
            "move": (pr - rank) if pr else None, "submission_id": r["id"],
            "submitted_at": r["submitted_at"], "auto_selected": auto, "entries": n,
            "private_per_category": round_detail(detail.get("private")).get("per_category", {}),
            "public_per_category": round_detail(detail.get("public")).get("per_category", {}),
        })
    return board


def race_rows(subs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the race plots may see: who submitted when, and the *public* scores only."""
    return [{"team_id": r["team_id"], "team": r["team"], "submitted_at": r["submitted_at"], "id": r["id"],
             "public_recall": r["public_recall"], "public_mrr": r["public_mrr"]} for r in subs]


def round_detail(d: dict[str, Any] | None) -> dict[str, Any]:
    if not d:
        return {}
    out = {k: v for k, v in d.items()}
    for key in ("recall20", "mrr", "map20"):
        if key in out:
            out[key] = rounded(out[key])
    out["recall"] = {k: rounded(v) for k, v in (d.get("recall") or {}).items()}
    out["per_category"] = {k: rounded(v) for k, v in (d.get("per_category") or {}).items()}
    return out


def history_rows(subs: list[dict[str, Any]], reveal: bool) -> list[dict[str, Any]]:
    """A team's rows as shown to it: private scores only when ``reveal``."""
    out = []
    for r in subs:
        detail = json.loads(r.pop("detail"))
        row = {k: r[k] for k in ("id", "team", "submitted_at", "filename", "note", "selected",
                                 "public_recall", "public_mrr")}
        row["sha256"] = r["sha256"]
        row["public_per_category"] = round_detail(detail.get("public") or {}).get("per_category", {})
        if reveal:
            row["private_recall"] = r["private_recall"]
            row["private_mrr"] = r["private_mrr"]
            row["private_per_category"] = round_detail(detail.get("private") or {}).get("per_category", {})
        out.append(row)
    return out
