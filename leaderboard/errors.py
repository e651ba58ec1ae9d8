"""The leaderboard's exceptions: every message is safe to show to a participant."""

from __future__ import annotations

from tmr_lib.submission import ValidationReport


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


class DatabaseBusy(LeaderboardError):
    """Another process held the database's write lock for longer than the configured wait.

    Nothing was recorded and no quota was used; trying again later is safe.
    """

    def __init__(self, wait_s: float):
        self.wait_s = wait_s
        self.retry_after = max(5, int(round(wait_s)) or 5)
        super().__init__(
            f"the leaderboard database is busy: another process held its write lock for more than "
            f"{wait_s:g} s. Nothing was recorded and no quota was used; try again in a minute "
            "(host: look for a stuck process or an open sqlite3 shell; `--wait SECONDS` or "
            "$TMR_LEADERBOARD_WAIT waits longer)")


class TooManyRejections(LeaderboardError):
    """The team's rejected files hit the host's limit for the window; ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: int):
        self.retry_after = max(1, int(retry_after))
        super().__init__(message)


class WriteupsNotOpen(LeaderboardError):
    """Write-ups are not accepted yet; ``opens_at`` is the ISO time they open ("" = at close)."""

    def __init__(self, message: str, opens_at: str = ""):
        self.opens_at = opens_at
        super().__init__(message)


class InvalidWriteup(LeaderboardError):
    """The write-up was refused for its content (empty, too long, not text); nothing was saved."""


class StorageError(LeaderboardError):
    """The leaderboard could not write its own files: a full disk, a read-only folder, an I/O error.

    Raised before anything is committed (the transaction is rolled back and a file written for it
    removed), so nothing was recorded and no quota was used; ``kind`` is ``full``, ``read_only`` or ``io``.
    The message names no path (participants see it): the host finds the folder with ``verify``.
    """

    WHY = {"full": "its disk is full (or a file size or disk quota limit was reached)",
           "read_only": "its folder or database is read-only", "io": "its disk reported an I/O error"}
    HINT = {"full": "free space on the competition's disk", "read_only": "make the competition folder writable",
            "io": "check the competition's disk"}

    def __init__(self, kind: str, detail: str = ""):
        self.kind = kind if kind in self.WHY else "io"
        self.retry_after = 60
        super().__init__(
            f"the leaderboard could not save anything: {self.WHY[self.kind]}"
            + (f" ({detail})" if detail else "")
            + ". Nothing was recorded and no quota was used; try again later "
            f"(host: {self.HINT[self.kind]}, then run `python -m leaderboard verify`)")
