"""TMR Kit's local leaderboard: Kaggle-style rules for an in-house competition.

Host (command line)::

    python -m leaderboard init data/tmr-cpu-host --team alpha --team beta
    python -m leaderboard serve                 # http://127.0.0.1:8000/
    python -m leaderboard close

Notebook::

    import leaderboard
    leaderboard.check(df)                       # the leaderboard's validation, no quota used
    leaderboard.submit(df, team="alpha")        # or a path to a CSV
    leaderboard.board()                         # ipywidgets view with a refresh button
    leaderboard.writeup(file="notes.md", team="alpha")   # after close: the team's write-up

Torch-free; heavy pieces (Flask, ipywidgets, pandas) are imported only when used.
"""

from .core import (
    AuthError,
    Competition,
    InvalidSubmission,
    InvalidWriteup,
    LeaderboardError,
    QuotaExceeded,
    StorageError,
    SubmissionsClosed,
    SubmitResult,
    WriteupsNotOpen,
    find_competition,
)
from .notebook import board, check, show, submit, writeup

__all__ = [
    "AuthError",
    "Competition",
    "InvalidSubmission",
    "InvalidWriteup",
    "LeaderboardError",
    "QuotaExceeded",
    "StorageError",
    "SubmissionsClosed",
    "SubmitResult",
    "WriteupsNotOpen",
    "board",
    "check",
    "find_competition",
    "show",
    "submit",
    "writeup",
]
