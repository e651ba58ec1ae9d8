"""Red team (issue 16): secrets, tokens, timing, path traversal, permissions, cross-site posts and
hostile names and notes on every surface. Each test fails if the thing it probes leaks.

Complements (does not repeat) test_leaderboard_core (answers absent from outputs, hashed tokens,
names escaped on the page / CSV), test_leaderboard_race (private scores byte-identical before close)
and test_leaderboard_writeups (hostile write-ups, cross-site posts on the write-up routes).
"""

from __future__ import annotations

import csv
import hmac
import http.client
import io
import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path

import markupsafe
import pytest

sys.path.insert(0, str(Path(__file__).parent / "leaderboard_fixtures"))
from lbfix import make_dataset, ranked_lists, write_csv  # noqa: E402

import leaderboard  # noqa: E402
from leaderboard import Competition, LeaderboardError, core  # noqa: E402
from leaderboard.booklet import booklet_html  # noqa: E402
from leaderboard.cli import main as cli_main  # noqa: E402
from leaderboard.render import export  # noqa: E402
from leaderboard.web import create_app  # noqa: E402

ROUTES = {("/", "GET"), ("/board.csv", "GET"), ("/submit", "GET"), ("/submit", "POST"), ("/team", "GET"),
          ("/team", "POST"), ("/select", "POST"), ("/writeup", "POST"), ("/api/writeup", "POST"), ("/host", "GET"),
          ("/host", "POST"), ("/api/board", "GET"), ("/api/submit", "POST")}
PROBES_SEEN: dict[str, int] = {}


def probe(kind: str, n: int = 1) -> None:
    PROBES_SEEN[kind] = PROBES_SEEN.get(kind, 0) + n


def routes(app) -> set[tuple[str, str]]:
    return {(r.rule, m) for r in app.url_map.iter_rules() for m in r.methods if m not in ("HEAD", "OPTIONS")}


class Server:
    def __init__(self, path: Path, **kw):
        from werkzeug.serving import make_server

        self.app = create_app(path, **kw)
        self.httpd = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.port = self.httpd.server_port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def raw(self, method: str, path: str, body: bytes | None = None, headers=None) -> tuple[int, dict, bytes]:
        """A request with the path sent exactly as given (no client-side normalisation)."""
        con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            con.putrequest(method, path, skip_accept_encoding=True)
            for k, v in (headers or {}).items():
                con.putheader(k, v)
            con.putheader("Content-Length", str(len(body or b"")))
            con.endheaders(body or b"")
            r = con.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            con.close()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def site(tmp_path):
    """An open competition (write-ups open early): alpha and beta each with submissions, alpha a write-up."""
    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200)
    comp, tokens = Competition.create(ds["host"], path=tmp_path / "comp", teams=["alpha", "beta"], seed=1,
                                      daily_limit=10, writeups_open="2000-01-01T00:00Z")
    comp.tokens = tokens
    for k, team in enumerate(["alpha", "beta", "alpha", "beta"]):
        hits = {g: (1 + (i + k) % 20 if (i * 7 + k) % 5 else None) for i, g in enumerate(ds["test"])}
        comp.submit(write_csv(tmp_path / f"{team}{k}.csv", ranked_lists(ds, hits, seed=k)), team,
                    note=f"secret note of {team} {k}")
    comp.set_writeup("# alpha's private draft\n\nSECRET-DRAFT-TEXT", "alpha")
    yield comp, tokens, ds
    comp.close_db()


def answers_in(text: str, ds: dict) -> list[str]:
    return [c for ids in ds["answers"].values() for c in ids if c in text]


def private_scores(comp) -> set[str]:
    """Private figures (4 decimals) that differ from every public figure: seeing one is a leak."""
    public = set()
    for r in comp.history("alpha", show_private=True) + comp.history("beta", show_private=True):
        public |= {f"{r['public_recall']:.4f}", f"{r['public_mrr']:.4f}"}
    out = set()
    for r in comp.history("alpha", show_private=True) + comp.history("beta", show_private=True):
        out |= {f"{r['private_recall']:.4f}", f"{r['private_mrr']:.4f}"} - public
    return out


# ---- secrets --------------------------------------------------------------------------------------
def test_the_route_list_is_known_so_every_route_below_is_probed(site):
    comp, _, _ = site
    assert routes(create_app(comp.path)) == ROUTES  # a new route must be added to these probes


def _every_response(comp, tokens) -> dict[str, tuple[int, str]]:
    """What anyone can make the app answer before close: every GET, every POST with each token and none."""
    client = create_app(comp.path).test_client()
    out = {}
    for path, method in sorted(ROUTES):
        if method == "GET":
            r = client.get(path)
            out[f"GET {path}"] = (r.status_code, r.get_data(as_text=True))
            continue
        for who in ("alpha", "beta", "nobody"):
            tok = tokens.get(who, "wrong-token")
            form = {"token": tok, "text": "", "selected": ["1"]}  # an empty write-up saves nothing
            r = client.post(path, data=form, headers={"Authorization": f"Bearer {tok}"} if path.startswith("/api/")
                            else {})
            out[f"POST {path} as {who}"] = (r.status_code, r.get_data(as_text=True))
    for bad in ("/nope", "/api/nope", "/team/1", "/archive/x.csv"):
        r = client.get(bad)
        out[f"GET {bad}"] = (r.status_code, r.get_data(as_text=True))
    return out


def test_no_route_reveals_answers_private_scores_or_another_teams_data_before_close(site):
    comp, tokens, ds = site
    secret = private_scores(comp)
    assert secret, "the fixture needs private scores that differ from the public ones"
    answers = _every_response(comp, tokens)
    for key, (status, text) in answers.items():
        probe("secret: route response")
        assert not answers_in(text, ds), key
        leaked = [s for s in secret if s in text]
        assert not leaked, (key, leaked)
        own_page = key in ("POST /team as alpha", "POST /select as alpha", "POST /writeup as alpha")
        assert "SECRET-DRAFT-TEXT" not in text or own_page, key  # alpha's draft: alpha's own pages only
        if "as beta" in key:
            assert "secret note of alpha" not in text and "alpha0.csv" not in text, key
        assert tokens["host"] not in text and (tokens["alpha"] not in text or key.endswith("as alpha")), key
        assert tokens["beta"] not in text or key.endswith("as beta"), key
    assert answers["POST /team as alpha"][0] == 200 and "SECRET-DRAFT-TEXT" in answers["POST /team as alpha"][1]
    api = json.loads(answers["GET /api/board"][1])

    def keys(x):
        return set(x) | set().union(*(keys(v) for v in x.values())) if isinstance(x, dict) else \
            set().union(*(keys(v) for v in x)) if isinstance(x, list) else set()

    assert not [k for k in keys(api) if "private" in k or k in ("seed", "answer", "token_hash")]
    probe("secret: JSON keys")


def test_one_team_cannot_select_or_write_for_another_and_no_route_serves_files(site):
    comp, tokens, ds = site
    client = create_app(comp.path).test_client()
    alpha_ids = [r["id"] for r in comp.history("alpha")]
    r = client.post("/select", data={"token": tokens["beta"], "selected": [str(alpha_ids[0])]})
    assert r.status_code == 400 and "not submissions of team" in r.get_data(as_text=True)
    assert comp.con.execute("SELECT COUNT(*) FROM selections").fetchone()[0] == 0
    r = client.post("/api/writeup", data=b"# beta writes", headers={"Authorization": f"Bearer {tokens['beta']}"})
    assert r.get_json()["team"] == "beta" and "SECRET-DRAFT-TEXT" in comp.writeup(comp.team("alpha")["id"])["body"]
    sha = comp.history("alpha")[0]["sha256"]
    for path in (f"/archive/{sha}.csv", f"/{sha}.csv", "/log.jsonl", "/leaderboard.sqlite3", "/static/x",
                 f"/api/submission/{alpha_ids[0]}", "/export/board.html"):
        assert client.get(path).status_code == 404, path
        probe("secret: file fetch")


def test_tokens_never_travel_in_urls_or_land_in_logs(site, caplog):
    comp, tokens, ds = site
    client = create_app(comp.path).test_client()
    tok = tokens["alpha"]
    for path, method in ROUTES:
        if method != "GET":
            continue
        plain = client.get(path).get_data(as_text=True)
        with_token = client.get(f"{path}?token={tok}").get_data(as_text=True)
        assert _unstamp(with_token) == _unstamp(plain), path  # a token in the query string does nothing
        probe("token: GET ?token=")
    for path, method in ROUTES:  # nor does it authenticate a POST: only the form field or the header do
        if method == "POST":
            r = client.post(f"{path}?token={tok}", data={"text": "", "selected": []})
            assert r.status_code in (400, 403, 422) and "secret note of alpha" not in r.get_data(as_text=True), path
            probe("token: POST ?token=")
    pages = [client.post(p, data={"token": t}) for p in ("/team", "/host") for t in (tok, tokens["host"])]
    pages.append(client.post("/select", data={"token": tok, "selected": []}))
    for r in pages:
        assert "Location" not in r.headers and r.status_code != 302
        html = r.get_data(as_text=True)
        for attr in re.findall(r'(?:href|src|action)="([^"]*)"', html):
            assert tok not in attr and tokens["host"] not in attr
        for form in re.findall(r"<form[^>]*>", html):
            assert 'method="post"' in form
        assert r.headers["Cache-Control"] == "no-store" and r.headers["Referrer-Policy"] == "no-referrer"
        probe("token: page links, forms, headers")

    caplog.set_level(logging.INFO, logger="werkzeug")
    server = Server(comp.path)
    try:
        good = (comp.path / comp.con.execute("SELECT archive FROM submissions").fetchone()[0]).read_bytes()
        leaderboard.submit(good, url=f"http://127.0.0.1:{server.port}", token=tok, verbose=False)
        body = f"token={tok}".encode()
        server.raw("POST", "/team", body, {"Content-Type": "application/x-www-form-urlencoded"})
        server.raw("POST", "/host", f"token={tokens['host']}".encode(),
                   {"Content-Type": "application/x-www-form-urlencoded"})
    finally:
        server.stop()
    logged = caplog.text
    assert "POST /api/submit" in logged and "POST /team" in logged  # the server's request log was captured
    for secret_tok in tokens.values():
        assert secret_tok not in logged
        assert secret_tok not in (comp.path / "log.jsonl").read_text()
        assert secret_tok not in json.dumps(comp.events())
        probe("token: server log, log.jsonl, events", 3)


def _unstamp(text: str) -> str:
    return re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "generated T", text)


def test_token_checks_compare_hashes_in_constant_time(site, monkeypatch):
    comp, tokens, _ = site
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(core.hmac, "compare_digest", spy)
    tok = tokens["alpha"]
    for guess in (tok[:-1] + ("A" if tok[-1] != "A" else "B"), "x", tok[:5]):
        with pytest.raises(LeaderboardError):
            comp.team_for_token(guess)
    assert not comp.is_host_token(tokens["host"][:-2])
    assert len(calls) >= 7  # sha256 hex digests are compared, never the raw token
    assert all(re.fullmatch(r"[0-9a-f]{64}", a) and re.fullmatch(r"[0-9a-f]{64}", b) for a, b in calls)
    assert not any(tok in (a, b) for a, b in calls)
    monkeypatch.setattr(core.hmac, "compare_digest", real)

    def timed(guess: str, n: int = 400) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            try:
                comp.team_for_token(guess)
            except LeaderboardError:
                pass
        return time.perf_counter() - t0

    near, far = tok[:-1] + ("A" if tok[-1] != "A" else "B"), "Z" * len(tok)
    timed(near, 50), timed(far, 50)  # warm-up
    rounds = [(timed(near, 200), timed(far, 200)) for _ in range(9)]  # interleaved; the fastest round of
    ratio = min(a for a, _ in rounds) / min(b for _, b in rounds)  # each is what noise cannot inflate
    assert 1 / 3 < ratio < 3, ratio  # coarse on purpose: a right prefix buys nothing measurable
    probe("timing", 2)


TRAVERSAL = ["/../leaderboard.sqlite3", "/%2e%2e/leaderboard.sqlite3", "/..%2fleaderboard.sqlite3",
             "/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "//etc/passwd", "/static/../../leaderboard.sqlite3",
             "/board.csv/../../log.jsonl", "/board.csv%00.html", "/%00", "/team%00", "/api/board/../../archive",
             "/C:/Windows/win.ini", "/archive/..%5c..%5cleaderboard.sqlite3", "/%252e%252e/leaderboard.sqlite3"]


def test_path_traversal_on_every_route_finds_nothing(site):
    comp, tokens, ds = site
    server = Server(comp.path)
    secrets_in_files = [b"SQLite format 3", b"root:x:0:0", tokens["host"].encode()]
    try:
        targets = []
        for path, method in sorted(ROUTES):
            targets += [(method, path + t) for t in TRAVERSAL] + [(method, t + path) for t in ("/..", "/%2e%2e")]
        targets += [("GET", t) for t in TRAVERSAL]
        for method, target in targets:
            status, headers, body = server.raw(method, target)
            probe("traversal")
            assert 400 <= status < 500, (method, target, status)
            assert not any(s in body for s in secrets_in_files), (method, target)
            assert not answers_in(body.decode("utf-8", "replace"), ds), (method, target)
    finally:
        server.stop()
    n_files = sum(1 for _ in comp.path.rglob("*"))
    client = create_app(comp.path).test_client()
    good = (comp.path / comp.con.execute("SELECT archive FROM submissions").fetchone()[0]).read_bytes()
    for name in ("../../evil.csv", "/etc/passwd", "..\\..\\evil.csv", "a\x00b.csv", "../" * 50 + "x.csv"):
        r = client.post("/submit", data={"token": tokens["beta"], "file": (io.BytesIO(good), name)})
        assert r.status_code == 200, r.get_data(as_text=True)[:300]
        probe("traversal: upload file name")
    names = [p.name for p in (comp.path / "archive").iterdir()]
    assert all(re.fullmatch(r"[0-9a-f]{64}\.csv", n) for n in names)
    assert sum(1 for _ in comp.path.rglob("*")) == n_files  # the same sha: nothing new, nothing outside
    assert not list(comp.path.parent.rglob("evil.csv")) and "\x00" not in json.dumps(comp.history("beta"))


def test_the_competition_folder_and_database_are_not_readable_by_others(ds_umask0):
    comp = ds_umask0
    assert comp.path.stat().st_mode & 0o077 == 0
    for p in [comp.path, *comp.path.rglob("*")]:
        probe("permissions")
        inner = p.relative_to(comp.path).parts
        reachable = all((comp.path.joinpath(*inner[:i]).stat().st_mode & 0o001) for i in range(len(inner)))
        assert not (reachable and p.stat().st_mode & 0o004), p  # an outsider could read it
    from leaderboard.storage import exposed_to_others

    assert exposed_to_others(comp.path, ["leaderboard.sqlite3", "log.jsonl"]) == ""


@pytest.fixture()
def ds_umask0(tmp_path):
    """A competition created, used, repaired and exported under the loosest umask (0)."""
    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200)
    old = os.umask(0)
    try:
        comp, _ = Competition.create(ds["host"], path=tmp_path / "comp", teams=["alpha"], seed=1)
        comp.submit(write_csv(tmp_path / "g.csv", ranked_lists(ds, {g: 1 for g in ds["test"]})), "alpha")
        (comp.path / "archive" / ("ab" * 32 + ".csv")).write_bytes(b"orphan")
        comp.repair()
        export(comp, comp.path / "export", plots=False)
    finally:
        os.umask(old)
    yield comp
    comp.close_db()


def test_every_post_route_refuses_cross_site_requests_before_reading_them(site):
    comp, tokens, ds = site
    client = create_app(comp.path).test_client()
    good = (comp.path / comp.con.execute("SELECT archive FROM submissions").fetchone()[0]).read_bytes()
    before = comp.con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    posts = sorted(p for p, m in ROUTES if m == "POST")
    assert posts == ["/api/submit", "/api/writeup", "/host", "/select", "/submit", "/team", "/writeup"]
    for path in posts:
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
            data = {"token": tokens["alpha"], "file": (io.BytesIO(good), "g.csv"), "text": "# x", "selected": ["1"]}
            r = client.post(path, data=data, headers={**headers, "Authorization": f"Bearer {tokens['alpha']}"})
            assert r.status_code == 403 and "cross-site request refused" in r.get_data(as_text=True), (path, headers)
            probe("cross-site POST")
    assert comp.con.execute("SELECT COUNT(*) FROM events").fetchone()[0] == before


# ---- hostile names and notes on every surface -----------------------------------------------------
NAMES = ["<script>alert('n')</script>", "<img src=x onerror=alert(1)>", "\"'><svg onload=alert(1)>",
         "=HYPERLINK(\"http://evil\",\"x\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "＝全角",
         "مرحبا <b>عالم</b>", "{{7*7}} ${7*7} %s", "<" * 64]
REFUSED_NAMES = ["rtl\u202eevil", "zero\u200bwidth", "line\nbreak", "x" * 10_000, "bom\ufeff", "iso\u2066x\u2069",
                 "lrm\u200e", "esc\x1b[31m", "ne\x85l", "ls\u2028x", "cr\rx", "alm\u061c", "nul\x00",
                 "tab\tname", "alpha\u3164", "\u2800", "cgj\u034fx", "half\uffa0width"]
NOTES = NAMES + ["rtl\u202eevil note", "zero\u200bwidth\u200dnote", "two\nlines\r\nthree", "y" * 10_000,
                 "esc\x1b[2J clear", "bidi \u2066iso\u2069 \u200f"]
INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\u061c\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029]")


def test_names_with_invisible_or_control_characters_are_refused_on_every_entry_point(tmp_path):
    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200)
    comp, _ = Competition.create(ds["host"], path=tmp_path / "c", seed=1)
    for bad in REFUSED_NAMES:
        with pytest.raises(LeaderboardError):
            comp.add_team(bad)
        with pytest.raises(LeaderboardError):
            Competition.create(ds["host"], path=tmp_path / "never", teams=[bad])
        assert cli_main(["add-team", bad, "--dir", str(comp.path)]) == 2
        probe("hostile: refused name", 3)
    assert not (tmp_path / "never").exists() and comp.teams() == []
    comp.close_db()


def _html_ok(html: str, where: str, shown: list[str]) -> None:
    for raw in ("<script", "<svg", "<img src=x", "<b>عالم", "'><"):  # the probes' own markup, never the page's
        assert raw not in html, (where, raw)
    assert not re.search(r"<[^>]*\son\w+\s*=", html), where
    assert not INVISIBLE.search(html.replace("\t", " ")), (where, INVISIBLE.search(html.replace("\t", " ")))
    for s in shown:
        assert str(markupsafe.escape(s)) in html, (where, s)
        probe("hostile: probe x HTML surface")


def _csv_ok(text: str, where: str, shown: list[str]) -> None:
    cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
    assert not any(c.startswith(("=", "+", "-", "@", "＝", "＋", "－", "＠", "\t", "\r")) for c in cells), where
    assert not any("\n" in c for c in cells), where
    assert not INVISIBLE.search(text.replace("\r\n", "").replace("\n", "")), where
    for s in shown:
        assert (("'" + s) if s.startswith(("=", "+", "-", "@", "＝", "\t")) else s) in cells, (where, s)
        probe("hostile: probe x CSV surface")


def _terminal_ok(text: str, where: str, shown: list[str], n_rows: int | None = None) -> None:
    assert not INVISIBLE.search(text.replace("\n", "")), (where, INVISIBLE.search(text.replace("\n", "")))
    for s in shown:
        clipped = "".join(c if c.isprintable() else "?" for c in s)[:31]
        assert clipped in text, (where, s)
        probe("hostile: probe x terminal surface")
    if n_rows is not None:
        assert len([ln for ln in text.splitlines() if re.match(r"\s*\d+\s\s", ln)]) == n_rows, where


@pytest.fixture()
def hostile(tmp_path):
    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200)
    comp, tokens = Competition.create(ds["host"], path=tmp_path / "comp", teams=NAMES, seed=2, daily_limit=10)
    comp.tokens = tokens
    for i, name in enumerate(NAMES):
        hits = {g: (1 + (j + i) % 20 if (j + i) % 4 else None) for j, g in enumerate(ds["test"])}
        f = write_csv(tmp_path / f"h{i}.csv", ranked_lists(ds, hits, seed=i))
        comp.submit(f, name, note=NOTES[i], filename=NOTES[-1 - i % 6])
    client = create_app(comp.path).test_client()
    f = write_csv(tmp_path / "web.csv", ranked_lists(ds, {g: 2 for g in ds["test"]}, seed=99))
    for note in NOTES[len(NAMES):]:
        r = client.post("/submit", data={"token": tokens[NAMES[0]], "note": note, "file": (f.open("rb"), note)})
        if "\n" in note:  # a file name with a line break breaks the multipart header: refused cleanly
            assert r.status_code == 400 and "choose a CSV file" in r.get_data(as_text=True)
            r = client.post("/submit", data={"token": tokens[NAMES[0]], "note": note, "file": (f.open("rb"), "n.csv")})
        assert r.status_code == 200, r.get_data(as_text=True)[-500:]
    yield comp, tokens, ds, client
    comp.close_db()


def test_hostile_names_and_notes_are_escaped_everywhere_they_are_shown(hostile, capsys, tmp_path):
    comp, tokens, ds, client = hostile
    for open_or_closed in ("open", "closed"):
        if open_or_closed == "closed":
            comp.close()
            comp.set_writeup(NOTES[0] + "\n\n" + NOTES[-2], NAMES[1])
        page = client.get("/").get_data(as_text=True)
        _html_ok(page, f"board page ({open_or_closed})", NAMES)
        host = client.post("/host", data={"token": tokens["host"]}).get_data(as_text=True)
        _html_ok(host, f"host page ({open_or_closed})", NAMES)
        for name in NAMES:
            team = client.post("/team", data={"token": tokens[name]}).get_data(as_text=True)
            _html_ok(team, f"team page of {name!r}", [name])
        assert cli_main(["show", "--dir", str(comp.path)]) == 0
        _terminal_ok(capsys.readouterr().out, f"CLI show ({open_or_closed})", NAMES,
                     n_rows=len(NAMES) * (2 if open_or_closed == "closed" else 1))
        _csv_ok(client.get("/board.csv").get_data(as_text=True), f"/board.csv ({open_or_closed})", NAMES)
        files = export(comp, tmp_path / f"exp-{open_or_closed}", plots=False)
        for p in files:
            text = p.read_text(encoding="utf-8-sig")
            (_csv_ok if p.suffix == ".csv" else _html_ok)(text, f"export {p.name} ({open_or_closed})",
                                                        NAMES if p.suffix == ".csv" else NAMES)
        df = leaderboard.show(comp)
        _html_ok(df.to_html(), f"notebook show() ({open_or_closed})", [])
        assert list(df["team"]) and set(df["team"]) == set(NAMES)  # shown as the data they are
        probe("hostile: probe x notebook show()", len(NAMES))
        widget = leaderboard.board(comp)
        _html_ok(widget.children[1].value, f"notebook board() widget ({open_or_closed})", NAMES)
        api = client.get("/api/board").get_json()
        assert {r["team"] for r in api["public"]} == set(NAMES) and not INVISIBLE.search(json.dumps(api,
                                                                                        ensure_ascii=False))
    _html_ok(booklet_html(comp), "booklet", NAMES)
    for name in NAMES[:3]:
        assert cli_main(["history", "--team", name, "--dir", str(comp.path)]) == 0
        _terminal_ok(capsys.readouterr().out, f"CLI history of {name!r}", [name])
    assert cli_main(["teams", "--dir", str(comp.path)]) == 0
    _terminal_ok(capsys.readouterr().out, "CLI teams", NAMES, n_rows=len(NAMES))
    assert cli_main(["log", "--dir", str(comp.path)]) == 0
    _terminal_ok(capsys.readouterr().out, "CLI log", [])


def test_notes_and_file_names_are_cleaned_before_they_are_stored(hostile, capsys):
    comp, tokens, ds, client = hostile
    rows = [r for t in NAMES for r in comp.history(t)]
    for r in rows:
        for field in ("note", "filename"):
            v = r[field]
            assert not INVISIBLE.search(v) and "\n" not in v and "\r" not in v, (field, v)
            assert len(v) <= 200
            probe("hostile: stored note / file name")
    assert any(r["note"] == "y" * 200 for r in rows) and any(r["note"].startswith("two lines") for r in rows)
    for line in (comp.path / "log.jsonl").read_text().splitlines():
        assert not INVISIBLE.search(json.loads(line).get("detail", {}).get("filename", ""))
    assert cli_main(["history", "--team", NAMES[0], "--dir", str(comp.path)]) == 0
    out = capsys.readouterr().out
    _terminal_ok(out, "CLI history (hostile notes)", [])
    body = [ln for ln in out.splitlines() if ln.startswith("#")]
    assert len(body) == len(comp.history(NAMES[0]))  # one line per submission: no note breaks a row
    page = client.post("/team", data={"token": tokens[NAMES[0]]}).get_data(as_text=True)
    _html_ok(page, "team page (hostile notes and file names)", [])


def test_probe_counts(capsys):
    """Runs last in this file: prints how many probes the tests above made (see the issue's report)."""
    with capsys.disabled():
        print("\nred-team probes: " + ", ".join(f"{k}: {v}" for k, v in sorted(PROBES_SEEN.items())))
    assert sum(PROBES_SEEN.values()) > 300
