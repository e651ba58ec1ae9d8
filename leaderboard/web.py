"""The leaderboard web app (Flask): public board, upload form, own history, host view, JSON API.

Teams authenticate with the token the host gave them (typed into a password field, or an
``Authorization: Bearer`` header for the API); the host view needs the host token. No
cookies, no sessions, no scripts: every page is plain server-rendered HTML with every name
escaped and a strict Content-Security-Policy.

Run it with ``python -m leaderboard serve`` (binds to 127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .core import (
    AuthError,
    Competition,
    InvalidSubmission,
    LeaderboardError,
)
from .render import board_csv, render

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")


def create_app(path: str | Path, now=None) -> Flask:
    """A Flask app serving the competition stored at ``path``."""
    path = Path(path)
    kwargs = {"now": now} if now else {}
    app = Flask(__name__)
    shared: dict[str, Any] = {}  # the read-only Scorer (answers in memory), reused by every request
    lock = threading.Lock()

    def comp() -> Competition:
        """One connection per request (closed at teardown); the scorer is shared."""
        if "comp" not in g:
            c = Competition(path, **kwargs)
            with lock:
                if "scorer" in shared:
                    c._scorer, c._scorer_key = shared["scorer"]
            g.comp = c
        return g.comp

    @app.teardown_appcontext
    def close_comp(_exc: BaseException | None) -> None:
        c = g.pop("comp", None)
        if c is not None:
            if c._scorer is not None:
                with lock:
                    shared["scorer"] = (c._scorer, c._scorer_key)
            c.close_db()

    with Competition(path, **kwargs) as c:
        app.config["MAX_CONTENT_LENGTH"] = c.settings()["max_bytes"] + 64 * 1024

    def url(name: str) -> str:
        return url_for(name)

    def page(template: str, status: int = 200, **ctx: Any) -> Response:
        return Response(render(template, comp(), url=url, **ctx), status=status, mimetype="text/html")

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    def token_from_request() -> str:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return (request.form.get("token") or "").strip()

    # -- pages ----------------------------------------------------------------------------
    @app.get("/")
    def board() -> Response:
        c = comp()
        private = c.private_board() if c.is_closed() else None
        return page("board.html", public=c.public_board(), private=private, title="Leaderboard")

    @app.get("/submit")
    def submit_form() -> Response:
        return page("form.html", form="submit", title="Submit")

    @app.post("/submit")
    def submit() -> Response:
        c = comp()
        try:
            team = c.team_for_token(token_from_request())
        except AuthError as exc:
            return page("form.html", 403, form="submit", title="Submit", message=True,
                        message_class="err", message_title="Not accepted", message_lines=[str(exc)])
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            return page("form.html", 400, form="submit", title="Submit", message=True, message_class="err",
                        message_title="Not accepted", message_lines=["choose a CSV file to upload"])
        try:
            res = c.submit(upload.stream, token=token_from_request(), note=request.form.get("note", ""),
                           filename=upload.filename, via="web")
        except InvalidSubmission as exc:
            return page("form.html", 422, form="submit", title="Submit", message=True, message_class="err",
                        message_title="Rejected — nothing was scored, no quota used",
                        message_lines=exc.report.format().splitlines())
        except LeaderboardError as exc:
            return page("form.html", 409, form="submit", title="Submit", message=True, message_class="err",
                        message_title="Not accepted", message_lines=[str(exc)])
        return team_page(c, team, token_from_request(), message=True, message_class="ok",
                         message_title=f"Accepted: submission #{res.submission_id}",
                         message_lines=res.summary().splitlines()[1:])

    def team_page(c: Competition, team: dict[str, Any], token: str, status: int = 200, **ctx: Any) -> Response:
        s = c.settings()
        return page("team.html", status, title="My submissions", team=team["name"], token=token,
                    rows=c.history(team_id=team["id"]), show_private=s["closed"],
                    remaining=max(0, s["daily_limit"] - c.used_today(team["id"])),
                    selection_note=c.selection_note(team["id"]), **ctx)

    @app.get("/team")
    def team() -> Response:
        return page("form.html", form="token", title="My submissions", form_title="My submissions",
                    token_label="Team token", action=url_for("team_post"))

    @app.post("/team")
    def team_post() -> Response:
        c = comp()
        try:
            t = c.team_for_token(token_from_request())
        except AuthError as exc:
            return page("form.html", 403, form="token", title="My submissions", form_title="My submissions",
                        token_label="Team token", action=url_for("team_post"), message=True,
                        message_class="err", message_title="Not accepted", message_lines=[str(exc)])
        return team_page(c, t, token_from_request())

    @app.post("/select")
    def select() -> Response:
        c = comp()
        token = token_from_request()
        try:
            t = c.team_for_token(token)
        except AuthError as exc:
            return page("form.html", 403, form="token", title="My submissions", form_title="My submissions",
                        token_label="Team token", action=url_for("team_post"), message=True,
                        message_class="err", message_title="Not accepted", message_lines=[str(exc)])
        try:
            ids = [int(i) for i in request.form.getlist("selected")]
            c.select(None, ids, team_id=t["id"])
        except (ValueError, LeaderboardError) as exc:
            msg = str(exc) if isinstance(exc, LeaderboardError) else "bad submission number"
            return team_page(c, t, token, 400, message=True, message_class="err",
                             message_title="Selection not saved", message_lines=[msg])
        return team_page(c, t, token, message=True, message_class="ok",
                         message_title="Final selection saved", message_lines=[c.selection_note(t["id"])])

    @app.get("/host")
    def host() -> Response:
        return page("form.html", form="token", title="Host", form_title="Host view",
                    token_label="Host token", action=url_for("host_post"))

    @app.post("/host")
    def host_post() -> Response:
        c = comp()
        if not c.is_host_token(token_from_request()):
            return page("form.html", 403, form="token", title="Host", form_title="Host view",
                        token_label="Host token", action=url_for("host_post"), message=True,
                        message_class="err", message_title="Not accepted",
                        message_lines=["wrong host token"])
        return page("host.html", title="Host", public=c.public_board(), private=c.private_board(host=True),
                    teams=c.teams(), events=c.events(limit=30))

    # -- JSON / CSV -----------------------------------------------------------------------
    @app.get("/api/board")
    def api_board():
        c = comp()
        s = c.settings()
        out = {"name": s["name"], "closed": s["closed"], "public": c.public_board()}
        if s["closed"]:
            out["private"] = c.private_board()
        return jsonify(out)

    @app.get("/board.csv")
    def csv_board() -> Response:
        c = comp()
        return Response(board_csv(c, private=c.is_closed()), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=board.csv"})

    @app.post("/api/submit")
    def api_submit():
        c = comp()
        upload = request.files.get("file")
        data = upload.stream if upload is not None else request.get_data()
        try:
            res = c.submit(data, token=token_from_request(), note=request.form.get("note", ""),
                           filename=(upload.filename if upload is not None else None) or "upload.csv", via="api")
        except AuthError as exc:
            return jsonify(accepted=False, error=str(exc)), 403
        except InvalidSubmission as exc:
            return jsonify(accepted=False, error="invalid submission", report=exc.report.format(),
                           problems=[p.message for p in exc.report.problems]), 422
        except LeaderboardError as exc:
            return jsonify(accepted=False, error=str(exc)), 409
        return jsonify(accepted=True, submission_id=res.submission_id, team=res.team,
                       public_recall20=res.public_recall, public_mrr=res.public_mrr,
                       remaining_today=res.remaining_today, resets_at=res.reset_at,
                       summary=res.summary())

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        limit = app.config["MAX_CONTENT_LENGTH"] / 1048576
        msg = f"file too large: the limit is {limit:.0f} MB (nothing was scored, no quota used)"
        if request.path.startswith("/api/"):
            return jsonify(accepted=False, error=msg), 413
        return page("form.html", 413, form="submit", title="Submit", message=True, message_class="err",
                    message_title="Rejected", message_lines=[msg])

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return Response(f"{exc.code} {exc.name}\n", status=exc.code, mimetype="text/plain")

    return app


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted (multi-threaded WSGI server from Werkzeug)."""
    from werkzeug.serving import make_server

    app = create_app(path)
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
