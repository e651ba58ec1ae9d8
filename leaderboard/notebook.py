"""Notebook helpers: ``check``, ``submit``, ``writeup``, ``show`` and an ipywidgets ``board``.

They work on a local competition directory (the host's machine, a workshop laptop) or, with
``url=`` and ``token=``, against a leaderboard served by ``python -m leaderboard serve``.
"""

from __future__ import annotations

import html
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any
from urllib import error, request

from tmr_lib.submission import ValidationReport, check_submission, submission_bytes

from .core import Competition, InvalidSubmission, LeaderboardError, SubmitResult, find_competition
from .scorer import fmt


def _open(competition: str | os.PathLike | Competition | None) -> Competition:
    return competition if isinstance(competition, Competition) else find_competition(competition)


def _payload(df_or_path: Any) -> tuple[Any, str]:
    if isinstance(df_or_path, (str, os.PathLike)):
        return df_or_path, Path(df_or_path).name
    if isinstance(df_or_path, (bytes, bytearray)):
        return bytes(df_or_path), "submission.csv"
    if hasattr(df_or_path, "as_dict") and hasattr(df_or_path, "ranked"):  # a tmr_lib.retrieval.Retrieval
        return submission_bytes(df_or_path.as_dict()), f"{df_or_path.name or 'retrieval'}.csv".replace(" ", "_")
    return submission_bytes(df_or_path), "submission.csv"  # DataFrame or {gid: ids}


def check(df_or_path: Any, competition: Any = None, *, data: str | os.PathLike | None = None,
          verbose: bool = True) -> ValidationReport:
    """The leaderboard's own validation (no score, no quota): every problem with its line.

    Checks against the competition's test and cite gids, or a participant folder's
    test.csv / cite_v2.csv with ``data="data/tmr-cpu"``.
    """
    payload, name = _payload(df_or_path)
    if data is not None:
        return check_submission(payload, data, verbose=verbose)
    comp = _open(competition)
    report = comp.validate(payload, filename=name)
    if verbose:
        print(report.format())
    return report


def _post_multipart(url: str, token: str, data: bytes, filename: str, note: str) -> dict[str, Any]:
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for key, value in (("note", note),):
        body.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{key}\"\r\n\r\n{value}\r\n".encode())
    safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    body.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{safe_name}\"\r\n"
               "Content-Type: text/csv\r\n\r\n".encode())
    body.write(data)
    body.write(f"\r\n--{boundary}--\r\n".encode())
    req = request.Request(
        url.rstrip("/") + "/api/submit", data=body.getvalue(), method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": f"Bearer {token}"},
    )
    try:
        with request.urlopen(req, timeout=300) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except error.HTTPError as exc:
        try:
            return json.loads(exc.read().decode("utf-8"))
        except ValueError:
            return {"accepted": False, "error": f"HTTP {exc.code} {exc.reason}"}


def submit(df_or_path: Any, team: str | None = None, competition: Any = None, *, note: str = "",
           token: str | None = None, url: str | None = None, raise_on_error: bool = False,
           verbose: bool = True) -> SubmitResult | dict[str, Any] | None:
    """Submit a DataFrame (``gid``, ``cite_gid``), a ``{gid: ids}`` dict or a CSV path.

    Local: ``submit(df, team="alpha")`` (competition found as in the CLI, or given).
    Remote: ``submit(df, url="http://host:8000", token="...")``.
    Prints the verdict (every problem when rejected). Returns the result, or None when it
    was refused (``raise_on_error=True`` raises instead).
    """
    payload, name = _payload(df_or_path)
    if url is not None:
        if not token:
            raise LeaderboardError("a remote submission needs the team token (token=...)")
        data = Path(payload).read_bytes() if isinstance(payload, (str, os.PathLike)) else payload
        res = _post_multipart(url, token, data, name, note)
        if verbose:
            print(res.get("summary") or res.get("report") or f"Not accepted: {res.get('error')}")
        if not res.get("accepted") and raise_on_error:
            raise LeaderboardError(res.get("report") or res.get("error") or "not accepted")
        return res if res.get("accepted") else None
    comp = _open(competition)
    try:
        res = comp.submit(payload, team, token=token, note=note, filename=name, via="notebook")
    except LeaderboardError as exc:
        if raise_on_error:
            raise
        if verbose:
            print(exc.report.format() if isinstance(exc, InvalidSubmission) else f"Not accepted: {exc}")
        return None
    if verbose:
        print(res.summary())
    return res


def _post_writeup(url: str, token: str, text: bytes) -> dict[str, Any]:
    req = request.Request(url.rstrip("/") + "/api/writeup", data=text, method="POST",
                          headers={"Content-Type": "text/markdown; charset=utf-8", "Authorization": f"Bearer {token}"})
    try:
        with request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except error.HTTPError as exc:
        try:
            return json.loads(exc.read().decode("utf-8"))
        except ValueError:
            return {"saved": False, "error": f"HTTP {exc.code} {exc.reason}"}


def writeup(text: str | os.PathLike | None = None, team: str | None = None, competition: Any = None, *,
            file: str | os.PathLike | None = None, token: str | None = None, url: str | None = None,
            raise_on_error: bool = False, verbose: bool = True) -> dict[str, Any] | None:
    """Attach (or replace) the team's Markdown write-up to its final submission (8 kB at most).

    ``writeup("## Our approach ...", team="alpha")`` or ``writeup(file="notes.md", team="alpha")``
    (a ``pathlib.Path`` as ``text`` is read too); remote: ``url=`` and ``token=``. Accepted after
    close or from the host's time; before that it prints when write-ups open. Returns what was
    saved, or None when refused (``raise_on_error=True`` raises instead).
    """
    if isinstance(text, os.PathLike):
        text, file = None, text
    if file is not None:
        data = Path(file).read_bytes()
    elif text is not None:
        data = str(text).encode("utf-8")
    else:
        raise LeaderboardError("give the write-up's text, or file='notes.md'")
    if url is not None:
        if not token:
            raise LeaderboardError("a remote write-up needs the team token (token=...)")
        res = _post_writeup(url, token, data)
        ok = bool(res.get("saved"))
        if verbose:
            print(f"Saved the write-up: {res.get('bytes', 0):,} bytes, attached to submission "
                  f"#{res.get('submission_id')}" if ok else f"Not saved: {res.get('error')}")
        if not ok and raise_on_error:
            raise LeaderboardError(res.get("error") or "not saved")
        return res if ok else None
    comp = _open(competition)
    try:
        res = comp.set_writeup(data, team, token=token, via="notebook")
    except LeaderboardError as exc:
        if raise_on_error:
            raise
        if verbose:
            print(f"Not saved: {exc}")
        return None
    if verbose:
        print(f"Saved the write-up of {res['team']}: {res['bytes']:,} bytes, "
              f"attached to submission #{res['submission_id']}")
    return res


def show(competition: Any = None):
    """The board as a pandas DataFrame (the final ranking once closed, else the public one)."""
    import pandas as pd

    comp = _open(competition)
    if comp.is_closed():
        rows = comp.private_board()
        cols = ["rank", "team", "recall20", "mrr", "public_recall20", "public_rank", "submission_id", "writeup_title"]
    else:
        rows = comp.public_board()
        cols = ["rank", "team", "recall20", "mrr", "entries", "last_submission"]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("recall20", "mrr", "public_recall20"):
        if c in df:
            df[c] = df[c].map(fmt)
    return df.set_index("rank")


def _remote_board_html(url: str) -> str:
    with request.urlopen(url.rstrip("/") + "/api/board", timeout=30) as resp:
        data = json.loads(resp.read().decode("utf-8"))
    key = "private" if data.get("closed") else "public"
    rows = "".join(
        f"<tr><td>{r['rank']}</td><td>{html.escape(r['team'])}</td><td>{fmt(r['recall20'])}</td>"
        f"<td>{fmt(r['mrr'])}</td></tr>" for r in data[key]
    )
    title = "Final ranking" if key == "private" else "Public leaderboard"
    return (f"<h3>{html.escape(data['name'])} — {title}</h3><table><tr><th>#</th><th>Team</th>"
            f"<th>Recall@20</th><th>MRR</th></tr>{rows}</table>")


def board(competition: Any = None, *, url: str | None = None):
    """An ipywidgets view of the board with a Refresh button (names escaped)."""
    import ipywidgets as widgets

    from .render import board_fragment

    out = widgets.HTML()
    button = widgets.Button(description="Refresh", icon="refresh")

    def refresh(_: Any = None) -> None:
        try:
            if url is not None:
                out.value = _remote_board_html(url)
            else:
                comp = _open(competition)
                try:
                    out.value = board_fragment(comp)
                finally:
                    if not isinstance(competition, Competition):
                        comp.close_db()
        except (LeaderboardError, OSError) as exc:
            out.value = f"<p>{html.escape(str(exc))}</p>"

    button.on_click(refresh)
    refresh()
    return widgets.VBox([button, out])
