"""The competition's rules as pure functions: time, daily quota, deadline, split, names, tokens.

Nothing here touches the database; :class:`leaderboard.core.Competition` reads its settings
and asks these functions for the verdict.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from .errors import LeaderboardError, QuotaExceeded, SubmissionsClosed, TooManyRejections

CATEGORIES = (2, 3, 4, 5)
MAX_NAME = 64
MAX_NOTE = 200

UTC = timezone.utc


# ----------------------------------------------------------------------------------------
# time
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


# ----------------------------------------------------------------------------------------
# the daily quota and the deadline
# ----------------------------------------------------------------------------------------
def quota_day(when: datetime, reset_minutes: int) -> str:
    """The quota day a moment counts towards (days start at ``reset_minutes`` after 00:00 UTC)."""
    return (when.astimezone(UTC) - timedelta(minutes=reset_minutes)).date().isoformat()


def next_reset(when: datetime, reset_minutes: int) -> datetime:
    delta = timedelta(minutes=reset_minutes)
    day = (when.astimezone(UTC) - delta).date()
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) + delta


def quota_message(limit: int, now: datetime, reset_minutes: int) -> str:
    nxt = next_reset(now, reset_minutes)
    left = nxt - now
    hours, rem = divmod(int(left.total_seconds()), 3600)
    return (f"daily limit reached: {limit} of {limit} submissions used today; the count resets at "
            f"{short_time(iso(nxt))} (in {hours}h {rem // 60:02d}m). This file was not scored and cost nothing.")


def check_quota(used: int, limit: int, now: datetime, reset_minutes: int) -> None:
    if used >= limit:
        raise QuotaExceeded(quota_message(limit, now, reset_minutes))


def check_open(meta: dict[str, str], now: datetime) -> None:
    """SubmissionsClosed when the competition is closed or its deadline has passed."""
    if meta.get("closed_at"):
        raise SubmissionsClosed(f"the competition closed at {short_time(meta['closed_at'])}; no more submissions")
    if meta.get("deadline") and now >= parse_time(meta["deadline"]):
        raise SubmissionsClosed(f"the deadline passed at {short_time(meta['deadline'])}; no more submissions")


#: Default limit on rejected files (invalid or too large) per team: this many per window.
REJECT_LIMIT = 20
REJECT_WINDOW_MINUTES = 60


def check_rejections(rejected_at: list[datetime], limit: int, window_minutes: int, now: datetime) -> None:
    """TooManyRejections when ``limit`` rejected files fall within the last ``window_minutes``.

    ``rejected_at``: the team's rejection times, oldest first. The message says when the next
    file will be looked at; a check in the notebook or with ``check`` stays free and unlimited.
    """
    if limit <= 0:
        return
    window = timedelta(minutes=window_minutes)
    recent = [t for t in rejected_at if t > now - window]
    if len(recent) < limit:
        return
    retry = recent[len(recent) - limit] + window
    wait = max(1, int((retry - now).total_seconds() + 0.999))
    raise TooManyRejections(
        f"too many rejected files: {len(recent)} in the last {window_minutes} min (the host's limit is {limit}); "
        f"your next file will be looked at from {short_time(iso(retry))} (in {wait // 60}m {wait % 60:02d}s). "
        "Check files first with leaderboard.check(df) or `python -m leaderboard check FILE` (free, unlimited). "
        "This file was not read and cost nothing.", wait)


def check_settings(public_fraction: float, daily_limit: int, n_final: int) -> None:
    if not 0.0 < public_fraction < 1.0:
        raise LeaderboardError("public fraction must be between 0 and 1 (e.g. 0.3)")
    if daily_limit < 1:
        raise LeaderboardError("daily limit must be at least 1")
    if n_final < 1:
        raise LeaderboardError("the number of final selections must be at least 1")


def check_selection(ids: list[int], n_final: int) -> None:
    if len(ids) > n_final:
        raise LeaderboardError(f"you may select at most {n_final} submissions (got {len(ids)})")


def selection_note(ids: list[int], n_final: int) -> str:
    if not ids:
        return f"No final selection: your best public submission will count (you may select up to {n_final})."
    return f"Selected for the final ranking: {', '.join('#' + str(i) for i in ids)} (up to {n_final})."


# ----------------------------------------------------------------------------------------
# the public/private split
# ----------------------------------------------------------------------------------------
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
# names and tokens
# ----------------------------------------------------------------------------------------
def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(18)


def name_key(name: Any) -> str:
    """The case-insensitive key a team is looked up by."""
    return unicodedata.normalize("NFC", str(name)).strip().casefold()


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
    if any(c in INVISIBLE_LETTERS for c in name):
        raise LeaderboardError(f"{what} contains an invisible character (a blank filler that would let one name "
                               "look like another)")
    return name


#: Letters and marks that render as nothing (Hangul fillers, Braille blank, the combining grapheme
#: joiner...): not control characters, but "alpha" + one of them looks exactly like "alpha".
INVISIBLE_LETTERS = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180e\u2800\u3164\uffa0")


def clean_note(note: str | None) -> str:
    if not note:
        return ""
    note = unicodedata.normalize("NFC", str(note)).replace("\r", " ").replace("\n", " ").strip()
    note = "".join(c for c in note if unicodedata.category(c) not in ("Cc", "Cf"))
    return note[:MAX_NOTE]
