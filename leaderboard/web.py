"""The leaderboard web app (Flask): public board, upload form, own history, host view, JSON API.

Teams authenticate with the token the host gave them (typed into a password field, or an
``Authorization: Bearer`` header for the API); the host view needs the host token. No
cookies, no sessions, no scripts: every page is plain server-rendered HTML with every name
escaped and a strict Content-Security-Policy. Every POST that a browser marks as coming from
another site (``Sec-Fetch-Site``, or an ``Origin`` other than this server's) is refused
with 403 before it is read, so another page cannot make a visitor's browser submit, select
or write a write-up here.

Uploads are validated in worker processes (:mod:`leaderboard.workers`; ``serve --workers N``,
default 1), so a flood of huge invalid files keeps the pages fast. A full disk or a read-only
folder answers 507 (JSON from the API) and records nothing.

Run it with ``python -m leaderboard serve`` (binds to 127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import Flask, Response, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from tmr_lib.submission import ValidationReport

from .core import (
    AuthError,
    DatabaseBusy,
    TooManyRejections,
    Competition,
    InvalidSubmission,
    InvalidWriteup,
    LeaderboardError,
    StorageError,
    WriteupsNotOpen,
)
from .render import board_csv, render
from .rules import MAX_NOTE
from .storage import is_busy_error, storage_error

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")


class _Site:
    """What every route needs: the per-request Competition, page rendering, the request's token."""

    def __init__(self, app: Flask, path: Path, kwargs: dict[str, Any], workers: int = 0):
        self.app, self.path, self.kwargs = app, path, kwargs
        self.shared: dict[str, Any] = {}  # the read-only Scorer (answers in memory), reused by every request
        self.lock = threading.Lock()
        self.pool = None
        if workers > 0:
            from .workers import ValidationPool

            self.pool = ValidationPool(workers)

    def validator(self, c: Competition) -> Callable[[Any, str], ValidationReport] | None:
        """What ``Competition.submit`` validates an upload with: the worker pool, or None (in-process)."""
        if self.pool is None:
            return None
        scorer = c.scorer()
        return lambda source, name: self.pool.validate(scorer, source, name)

    def comp(self) -> Competition:
        """One connection per request (closed at teardown); the scorer is shared."""
        if "comp" not in g:
            c = Competition(self.path, **self.kwargs)
            with self.lock:
                if "scorer" in self.shared:
                    c._scorer, c._scorer_key = self.shared["scorer"]
            g.comp = c
        return g.comp

    def close_comp(self, _exc: BaseException | None) -> None:
        c = g.pop("comp", None)
        if c is not None:
            if c._scorer is not None:
                with self.lock:
                    self.shared["scorer"] = (c._scorer, c._scorer_key)
            c.close_db()

    def page(self, template: str, status: int = 200, **ctx: Any) -> Response:
        return Response(render(template, self.comp(), url=url_for, **ctx), status=status, mimetype="text/html")

    @staticmethod
    def bearer() -> str:
        auth = request.headers.get("Authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else ""

    @staticmethod
    def token() -> str:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return (request.form.get("token") or "").strip()

    def token_form(self, status: int = 200, **ctx: Any) -> Response:
        """The "My submissions" token form, optionally with a message."""
        return self.page("form.html", status, form="token", title="My submissions", form_title="My submissions",
                         token_label="Team token", action=url_for("team_post"), **ctx)

    def team_or_refusal(self, c: Competition, token: str) -> tuple[dict[str, Any] | None, Response | None]:
        """(the token's team, None), or (None, the token form with a 403 "Not accepted" message): every
        form route that acts for a team starts with this."""
        try:
            return c.team_for_token(token), None
        except AuthError as exc:
            return None, self.token_form(403, message=True, message_class="err", message_title="Not accepted",
                                         message_lines=[str(exc)])

    def team_page(self, c: Competition, team: dict[str, Any], token: str, status: int = 200,
                  **ctx: Any) -> Response:
        s = c.settings()
        return self.page("team.html", status, title="My submissions", team=team["name"], token=token,
                         rows=c.history(team_id=team["id"]), show_private=s["closed"],
                         writeup=c.writeup(team["id"]),
                         remaining=max(0, s["daily_limit"] - c.used_today(team["id"])),
                         selection_note=c.selection_note(team["id"]), **ctx)


def cross_site(headers: Any, host: str) -> str:
    """Why a POST looks like it came from another site ("" when it does not).

    Browsers send ``Sec-Fetch-Site`` (same-origin / same-site / cross-site / none) and, on
    POSTs, ``Origin``; scripts and notebooks (urllib, requests) send neither and pass.
    """
    site = (headers.get("Sec-Fetch-Site") or "").strip().lower()
    if site and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {site}"
    origin = headers.get("Origin")
    if origin is not None:
        netloc = urlsplit(origin.strip()).netloc.lower() if origin.strip().lower() != "null" else ""
        if netloc != host.lower():
            return f"Origin: {origin[:100]}"
    return ""


def _refuse_cross_site() -> Response | None:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    why = cross_site(request.headers, request.host)
    if not why:
        return None
    msg = ("cross-site request refused: this form can only be sent from the leaderboard's own pages "
           f"({why}); nothing was read or recorded")
    if request.path.startswith("/api/"):
        resp = jsonify(accepted=False, saved=False, error=msg)
        resp.status_code = 403
        return resp
    return Response(msg + "\n", status=403, mimetype="text/plain")


def _security_headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def create_app(path: str | Path, now=None, wait: float | None = None, workers: int = 0) -> Flask:
    """A Flask app serving the competition stored at ``path``.

    ``wait``: seconds a write waits for a busy database before answering 503 (default
    $TMR_LEADERBOARD_WAIT or 60). ``workers``: processes that validate uploads (0: in the serving
    process; ``serve`` uses 1); the pool is ``app.extensions["tmr_pool"]`` (close it when done).
    """
    path = Path(path)
    app = Flask(__name__, static_folder=None)  # no static files: no route that serves files at all
    kwargs: dict[str, Any] = {"now": now} if now else {}
    if wait is not None:
        kwargs["wait"] = wait
    site = _Site(app, path, kwargs, workers)
    app.extensions["tmr_pool"] = site.pool
    app.teardown_appcontext(site.close_comp)
    app.before_request(_refuse_cross_site)
    app.after_request(_security_headers)
    with Competition(path, **site.kwargs) as c:
        app.config["MAX_CONTENT_LENGTH"] = c.settings()["max_bytes"] + 64 * 1024
    _board_routes(app, site)
    _submit_routes(app, site)
    _team_routes(app, site)
    _writeup_routes(app, site)
    _host_routes(app, site)
    _api_routes(app, site)
    _error_handlers(app, site)
    return app


def _board_routes(app: Flask, site: _Site) -> None:
    @app.get("/")
    def board() -> Response:
        c = site.comp()
        private = c.private_board() if c.is_closed() else None
        return site.page("board.html", public=c.public_board(), private=private, title="Leaderboard")

    @app.get("/board.csv")
    def csv_board() -> Response:
        c = site.comp()
        return Response(board_csv(c, private=c.is_closed()), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=board.csv"})


def _submit_routes(app: Flask, site: _Site) -> None:
    def refused(status: int, title: str, lines: list[str]) -> Response:
        return site.page("form.html", status, form="submit", title="Submit", message=True, message_class="err",
                         message_title=title, message_lines=lines)

    @app.get("/submit")
    def submit_form() -> Response:
        return site.page("form.html", form="submit", title="Submit")

    @app.post("/submit")
    def submit() -> Response:
        c = site.comp()
        try:
            team = c.team_for_token(site.token())
        except AuthError as exc:
            return refused(403, "Not accepted", [str(exc)])
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            return refused(400, "Not accepted", ["choose a CSV file to upload"])
        try:
            res = c.submit(upload.stream, token=site.token(), note=request.form.get("note", ""),
                           filename=upload.filename, via="web", validator=site.validator(c))
        except TooManyRejections as exc:
            resp = refused(429, "Not accepted — too many rejected files", [str(exc)])
            resp.headers["Retry-After"] = str(exc.retry_after)
            return resp
        except InvalidSubmission as exc:
            return refused(422, "Rejected — nothing was scored, no quota used", exc.report.format().splitlines())
        except (DatabaseBusy, StorageError):
            raise
        except LeaderboardError as exc:
            return refused(409, "Not accepted", [str(exc)])
        return site.team_page(c, team, site.token(), message=True, message_class="ok",
                              message_title=f"Accepted: submission #{res.submission_id}",
                              message_lines=res.summary().splitlines()[1:])


def _team_routes(app: Flask, site: _Site) -> None:
    @app.get("/team")
    def team() -> Response:
        return site.token_form()

    @app.post("/team")
    def team_post() -> Response:
        c = site.comp()
        t, refused = site.team_or_refusal(c, site.token())
        if refused is not None:
            return refused
        return site.team_page(c, t, site.token())

    @app.post("/select")
    def select() -> Response:
        c = site.comp()
        token = site.token()
        t, refused = site.team_or_refusal(c, token)
        if refused is not None:
            return refused
        try:
            ids = [int(i) for i in request.form.getlist("selected")]
            c.select(None, ids, team_id=t["id"])
        except (DatabaseBusy, StorageError):
            raise
        except (ValueError, LeaderboardError) as exc:
            msg = str(exc) if isinstance(exc, LeaderboardError) else "bad submission number"
            return site.team_page(c, t, token, 400, message=True, message_class="err",
                                  message_title="Selection not saved", message_lines=[msg])
        return site.team_page(c, t, token, message=True, message_class="ok",
                              message_title="Final selection saved", message_lines=[c.selection_note(t["id"])])


def _writeup_routes(app: Flask, site: _Site) -> None:
    @app.post("/writeup")
    def writeup_post() -> Response:
        c = site.comp()
        token = site.token()
        t, refused = site.team_or_refusal(c, token)
        if refused is not None:
            return refused
        try:
            res = c.set_writeup(request.form.get("text", ""), token=token, via="web")
        except (DatabaseBusy, StorageError):
            raise
        except WriteupsNotOpen as exc:
            return site.team_page(c, t, token, 409, message=True, message_class="err",
                                  message_title="Write-up not saved: not open yet", message_lines=[str(exc)])
        except LeaderboardError as exc:
            status = 422 if isinstance(exc, InvalidWriteup) else 409
            return site.team_page(c, t, token, status, message=True, message_class="err",
                                  message_title="Write-up not saved", message_lines=[str(exc)])
        return site.team_page(c, t, token, message=True, message_class="ok", message_title="Write-up saved",
                              message_lines=[f"{res['bytes']:,} bytes, attached to submission #{res['submission_id']}"])

    @app.post("/api/writeup")
    def api_writeup():
        c = site.comp()
        text = request.form.get("text") if request.form else None
        if text is None:
            text = request.get_data(cache=False)
        try:
            res = c.set_writeup(text, token=site.token(), via="api")
        except AuthError as exc:
            return jsonify(saved=False, error=str(exc)), 403
        except WriteupsNotOpen as exc:
            return jsonify(saved=False, error=str(exc), opens_at=exc.opens_at or None), 409
        except InvalidWriteup as exc:
            return jsonify(saved=False, error=str(exc)), 422
        except (DatabaseBusy, StorageError):
            raise
        except LeaderboardError as exc:
            return jsonify(saved=False, error=str(exc)), 409
        return jsonify(saved=True, **res)


def _host_routes(app: Flask, site: _Site) -> None:
    @app.get("/host")
    def host() -> Response:
        return site.page("form.html", form="token", title="Host", form_title="Host view",
                         token_label="Host token", action=url_for("host_post"))

    @app.post("/host")
    def host_post() -> Response:
        c = site.comp()
        if not c.is_host_token(site.token()):
            return site.page("form.html", 403, form="token", title="Host", form_title="Host view",
                             token_label="Host token", action=url_for("host_post"), message=True,
                             message_class="err", message_title="Not accepted",
                             message_lines=["wrong host token"])
        from .plots import TITLES, data_uri, race_pngs

        plots = {name: data_uri(png) for name, png in race_pngs(c).items()}
        return site.page("host.html", title="Host", public=c.public_board(), private=c.private_board(host=True),
                         teams=c.teams(), events=c.events(limit=30), plots=plots, plot_titles=TITLES)


def _api_routes(app: Flask, site: _Site) -> None:
    @app.get("/api/board")
    def api_board():
        c = site.comp()
        s = c.settings()
        out = {"name": s["name"], "closed": s["closed"], "public": c.public_board()}
        if s["closed"]:
            out["private"] = c.private_board()
        return jsonify(out)

    @app.post("/api/submit")
    def api_submit():
        c = site.comp()
        if site.bearer():  # refuse a throttled team before its upload is parsed
            try:
                c.check_rejections(c.team_for_token(site.bearer())["name"])
            except TooManyRejections as exc:
                return jsonify(accepted=False, error=str(exc), retry_after=exc.retry_after), 429, \
                    {"Retry-After": str(exc.retry_after)}
            except AuthError as exc:
                return jsonify(accepted=False, error=str(exc)), 403
        upload = request.files.get("file")
        data = upload.stream if upload is not None else request.get_data()
        try:
            res = c.submit(data, token=site.token(), note=request.form.get("note", ""),
                           filename=(upload.filename if upload is not None else None) or "upload.csv", via="api",
                           validator=site.validator(c))
        except AuthError as exc:
            return jsonify(accepted=False, error=str(exc)), 403
        except TooManyRejections as exc:
            return jsonify(accepted=False, error=str(exc), retry_after=exc.retry_after), 429, \
                {"Retry-After": str(exc.retry_after)}
        except InvalidSubmission as exc:
            return jsonify(accepted=False, error="invalid submission", report=exc.report.format(),
                           problems=[p.message for p in exc.report.problems]), 422
        except (DatabaseBusy, StorageError):
            raise
        except LeaderboardError as exc:
            return jsonify(accepted=False, error=str(exc)), 409
        return jsonify(accepted=True, submission_id=res.submission_id, team=res.team,
                       public_recall20=res.public_recall, public_mrr=res.public_mrr,
                       remaining_today=res.remaining_today, resets_at=res.reset_at,
                       summary=res.summary())


def _writeup_too_large() -> str:
    from .writeups import MAX_WRITEUP_BYTES

    return f"the write-up is far over the limit of {MAX_WRITEUP_BYTES:,} bytes (8 kB); nothing was saved"


def _error_handlers(app: Flask, site: _Site) -> None:
    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        if request.path in ("/writeup", "/api/writeup"):  # not a submission: no rejection logged
            msg = _writeup_too_large()
            if request.path.startswith("/api/"):
                return jsonify(saved=False, error=msg), 413
            return site.page("form.html", 413, title="Write-up", message=True, message_class="err",
                             message_title="Write-up not saved", message_lines=[msg])
        limit = app.config["MAX_CONTENT_LENGTH"] / 1048576
        msg = f"file too large: the limit is {limit:.0f} MB (nothing was scored, no quota used)"
        if (request.content_length or 0) <= app.config["MAX_CONTENT_LENGTH"]:  # the whole request fits: a field did not
            msg = (f"a form field is too large (the note is at most {MAX_NOTE} characters; the file itself may be "
                   f"up to {limit:.0f} MB): nothing was scored, no quota used")
        try:  # recorded like any rejection (the team is known only from a Bearer token: the form is unread)
            site.comp().log_too_large(site.bearer(), request.content_length)
        except (DatabaseBusy, StorageError):
            pass
        if request.path.startswith("/api/"):
            return jsonify(accepted=False, error=msg), 413
        return site.page("form.html", 413, form="submit", title="Submit", message=True, message_class="err",
                         message_title="Rejected", message_lines=[msg])

    @app.errorhandler(DatabaseBusy)
    def busy(exc: DatabaseBusy):
        if request.path.startswith("/api/"):
            resp = jsonify(accepted=False, error=str(exc), busy=True, retry_after=exc.retry_after)
            resp.status_code = 503
        else:
            resp = site.page("form.html", 503, form="submit" if request.path == "/submit" else None,
                             title="Busy", message=True, message_class="err",
                             message_title="The leaderboard is busy — nothing was recorded", message_lines=[str(exc)])
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp

    @app.errorhandler(StorageError)
    def storage(exc: StorageError):
        if request.path.startswith("/api/"):
            resp = jsonify(accepted=False, saved=False, error=str(exc), storage=exc.kind, retry_after=exc.retry_after)
            resp.status_code = 507
        else:
            resp = site.page("form.html", 507, form="submit" if request.path == "/submit" else None,
                             title="Not saved", message=True, message_class="err",
                             message_title="The leaderboard could not save — nothing was recorded",
                             message_lines=[str(exc)])
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp

    @app.errorhandler(sqlite3.OperationalError)
    def locked(exc: sqlite3.OperationalError):
        if not is_busy_error(exc):
            err = storage_error(exc)
            if err is None:
                raise exc
            return storage(err)
        return busy(DatabaseBusy(site.comp().wait))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return Response(f"{exc.code} {exc.name}\n", status=exc.code, mimetype="text/plain")


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 8000, wait: float | None = None,
          workers: int = 1) -> None:
    """Serve until interrupted (multi-threaded WSGI server from Werkzeug; uploads validated in
    ``workers`` processes, started before the first request)."""
    from werkzeug.serving import make_server

    app = create_app(path, wait=wait, workers=workers)
    pool = app.extensions["tmr_pool"]
    if pool is not None:
        with Competition(path, wait=wait) as c:
            pool.start(c.scorer())
    server = make_server(host, port, app, threaded=True)
    shown = f"http://{host}:{server.server_port}/"
    print(f"Leaderboard at {shown}  (Ctrl+C to stop)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  listening on {host}: anyone on this network can open it; teams need their tokens to submit",
              flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if pool is not None:
            pool.close()
