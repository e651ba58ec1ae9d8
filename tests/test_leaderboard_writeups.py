"""Write-ups: the opening time, the cap, safe Markdown, hostile text everywhere, CLI, web, notebook."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "leaderboard_fixtures"))
from lbfix import Clock, make_dataset, ranked_lists, write_csv  # noqa: E402

import leaderboard  # noqa: E402
from leaderboard import Competition, InvalidWriteup, LeaderboardError, WriteupsNotOpen  # noqa: E402
from leaderboard.booklet import booklet_html  # noqa: E402
from leaderboard.cli import main as cli_main  # noqa: E402
from leaderboard.markdown import render_markdown, safe_url  # noqa: E402
from leaderboard.render import board_html, export  # noqa: E402
from leaderboard.web import create_app  # noqa: E402
from leaderboard.writeups import MAX_WRITEUP_BYTES, title  # noqa: E402


@pytest.fixture()
def ds(tmp_path):
    return make_dataset(tmp_path / "data", n_test=40, n_cite=200)


@pytest.fixture()
def clock():
    return Clock()


@pytest.fixture()
def comp(ds, tmp_path, clock):
    c, tokens = Competition.create(ds["host"], path=tmp_path / "comp", teams=["alpha", "beta", "gamma"],
                                   seed=123, daily_limit=5, now=clock)
    c.tokens = tokens
    yield c
    c.close_db()


def submit(comp, ds, tmp_path, team, rank=1, seed=1, **kw):
    path = write_csv(tmp_path / f"{team}_{seed}.csv".replace("/", "_"),
                     ranked_lists(ds, {g: rank for g in ds["test"]}, seed=seed))
    return comp.submit(path, team, **kw)


def n_writeups(comp) -> int:
    return comp.con.execute("SELECT COUNT(*) FROM writeups").fetchone()[0]


# ---- when: refused before, accepted after -----------------------------------------------------
def test_refused_before_close_accepted_after_and_every_version_kept(comp, ds, tmp_path):
    submit(comp, ds, tmp_path, "alpha")
    with pytest.raises(WriteupsNotOpen, match="they open when the host closes the competition") as err:
        comp.set_writeup("# Our approach", "alpha")
    assert err.value.opens_at == "" and n_writeups(comp) == 0
    assert not comp.settings()["writeups_are_open"]
    comp.close()
    assert comp.settings()["writeups_are_open"]
    with pytest.raises(LeaderboardError, match="no submission to attach a write-up to"):
        comp.set_writeup("# nothing", "beta")
    res = comp.set_writeup("# Our approach\n\nfirst version", "alpha")
    assert res["submission_id"] == 1 and res["title"] == "Our approach" and res["bytes"] == 29
    comp.set_writeup("# Our approach, v2\n\nsecond version", token=comp.tokens["alpha"])
    row = comp.private_board()[0]
    assert row["writeup_title"] == "Our approach, v2" and "second version" in row["writeup"]
    assert n_writeups(comp) == 2  # the first version is kept
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        comp.con.execute("UPDATE writeups SET body = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        comp.con.execute("DELETE FROM writeups")
    ev = [e for e in comp.events() if e["action"] == "writeup"]
    assert len(ev) == 2 and ev[0]["detail"]["bytes"] == 29 and "version" not in json.dumps(ev)  # no text in the log
    assert comp.verify(sample=0) == []


def test_host_set_time_opens_them_before_close_for_the_host_only(ds, tmp_path, clock):
    c, tokens = Competition.create(ds["host"], path=tmp_path / "c", teams=["alpha"], seed=1, now=clock,
                                   writeups_open="2025-03-03T12:00Z")
    submit(c, ds, tmp_path, "alpha")
    with pytest.raises(WriteupsNotOpen, match=r"open at 2025-03-03 12:00 UTC \(in 2h 00m\)") as err:
        c.set_writeup("early", "alpha")
    assert err.value.opens_at == "2025-03-03T12:00:00.000000Z"
    client = create_app(c.path, now=clock).test_client()
    assert "Write-ups open at 2025-03-03 12:00 UTC" in client.get("/").get_data(as_text=True)
    clock.advance(hours=2)
    c.set_writeup("## Notes\nopen before close", "alpha")
    assert c.private_board(host=True)[0]["writeup_title"] == "Notes"  # the host sees it
    assert "open before close" not in client.get("/").get_data(as_text=True)
    assert "writeup" not in json.dumps(c.public_board()) and "private" not in client.get("/api/board").get_json()
    c.set_writeups_open(None)  # back to the default: at close
    with pytest.raises(WriteupsNotOpen, match="when the host closes"):
        c.set_writeup("again", "alpha")
    assert any(e["action"] == "set_writeups_open" for e in c.events())
    c.close_db()


def test_the_cap_is_enforced_with_a_clear_message(comp, ds, tmp_path):
    submit(comp, ds, tmp_path, "alpha")
    comp.close()
    assert comp.set_writeup("a" * MAX_WRITEUP_BYTES, "alpha")["bytes"] == 8192
    with pytest.raises(InvalidWriteup, match=r"8,193 bytes; the limit is 8,192 bytes \(8 kB") as err:
        comp.set_writeup("a" * (MAX_WRITEUP_BYTES + 1), "alpha")
    assert "nothing was saved" in str(err.value)
    with pytest.raises(InvalidWriteup, match="8,193 bytes"):
        comp.set_writeup("あ" * 2731, "alpha")  # 3 bytes each in UTF-8: the cap counts bytes
    with pytest.raises(InvalidWriteup, match="10,000 bytes"):
        comp.set_writeup("x" * 10_000, "alpha")
    with pytest.raises(InvalidWriteup, match="empty"):
        comp.set_writeup(" \n\u200b\n\t", "alpha")
    with pytest.raises(InvalidWriteup, match="not UTF-8"):
        comp.set_writeup(b"\xff\xfe\x00bad", "alpha")
    assert n_writeups(comp) == 1


def test_a_database_from_before_writeups_gets_the_table_on_first_use(comp, ds, tmp_path):
    submit(comp, ds, tmp_path, "alpha")
    comp.con.execute("DROP TABLE writeups")  # as created by the first release
    comp.close()
    assert comp.private_board()[0]["writeup"] == ""
    comp.set_writeup("late table", "alpha")
    assert comp.private_board()[0]["writeup"] == "late table"
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        comp.con.execute("DELETE FROM writeups")


# ---- the Markdown subset ------------------------------------------------------------------------
ALLOWED = {"div": {"class", "dir"}, "h3": set(), "h4": set(), "h5": set(), "h6": set(), "p": set(), "ul": set(),
           "ol": {"start"}, "li": set(), "pre": set(), "code": set(), "strong": set(), "em": set(),
           "a": {"href", "rel"}}


class TagAudit(HTMLParser):
    """Every tag and attribute in a fragment (entities decoded as a browser would)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def audit(fragment: str) -> list[tuple[str, dict]]:
    p = TagAudit()
    p.feed(fragment)
    for tag, attrs in p.tags:
        assert tag in ALLOWED, (tag, fragment)
        assert set(attrs) <= ALLOWED[tag], (tag, attrs)
        if tag == "a":
            assert re.match(r"https?://", attrs["href"]) and attrs["rel"] == "noopener noreferrer nofollow"
    return p.tags


def test_markdown_subset():
    out = str(render_markdown("# Title\n\nsome *em* and **strong** and `a<b>`\n\n"
                              "- one\n- two [site](https://example.com/a?x=1&y=2)\n\n"
                              "3. three\n4. four\n\n```\n<script>x()</script>\n```\n###### deep"))
    assert "<h3>Title</h3>" in out and "<em>em</em>" in out and "<strong>strong</strong>" in out
    assert "<code>a&lt;b&gt;</code>" in out and "<ul><li>one</li>" in out and '<ol start="3">' in out
    assert '<a href="https://example.com/a?x=1&amp;y=2" rel="noopener noreferrer nofollow">site</a>' in out
    assert "<pre><code>&lt;script&gt;x()&lt;/script&gt;</code></pre>" in out and "<h6>deep</h6>" in out
    assert [t for t, _ in audit(out)].count("a") == 1
    assert title("## **Bold** idea\nmore") == "Bold idea" and title("```\ncode\n```") == "code"
    assert title("- see [our repo](https://e.example/r) `v2`") == "see our repo v2" and title("x" * 99).endswith("…")


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)", "data:text/html;base64,PHNjcmlwdD4=",
    "vbscript:msgbox(1)", "//evil.example/x", "/relative", "https:", "http://", "https://x\"onmouseover=\"alert(1)",
    "https://x'y", "https://x<y", "jav&#x61;script:alert(1)", "java\tscript:alert(1)", "file:///etc/passwd",
])
def test_only_absolute_http_links_are_linked(url):
    assert safe_url(url) is None
    out = str(render_markdown(f"[click]({url})"))
    assert all(t != "a" for t, _ in audit(out)), out
    assert "href" not in out


@pytest.mark.parametrize("text", [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '<a href="javascript:alert(1)">x</a>',
    "[x](https://ok.example/)<svg onload=alert(1)>", "**<b>bold</b>**", "`</code><script>`", "\"'><script>",
    "<style>body{display:none}</style>", "<iframe src=https://evil.example>", "[a](https://e.example/\"x)",
    "```\n</pre><script>alert(1)</script>\n```", "- <li onclick=alert(1)>", "# <h1>big</h1>",
    "[`x`](https://e.example/) and [**y**](javascript:void(0))",
])
def test_raw_html_never_survives(text):
    out = str(render_markdown(text))
    audit(out)
    assert "<script" not in out and "<img" not in out and "<svg" not in out and "<iframe" not in out
    assert not re.search(r"<[^>]*\son\w+=", out)


# ---- hostile text: page, CLI, CSV, booklet ------------------------------------------------------
HOSTILE_NAMES = ["<script>alert('n')</script>", "\"quoted\" 'name'", "=HYPERLINK(\"http://evil\")", "+SUM(1)",
                 "-2+3", "@cmd", "＝全角"]
HOSTILE_WRITEUP = ("=cmd|' /C calc'!A0\n\n<script>alert('w')</script>\n\n[js](javascript:alert(1))\n\n"
                   "\"quotes\" and 'apostrophes'\u202eevil\u202c and zero\u200bwidth\ufeff\u2066x\u2069\n"
                   + "line\n" * 40)
FIRST_LINES = ["=cmd|' /C calc'!A0", "+1 weird", "-minus", "@at sign", "<b>tag</b>", "\"q\"", "plain"]


def test_names_with_invisible_or_control_characters_are_refused(comp):
    for bad in ("rtl\u202eeman", "zero\u200bwidth", "new\nline", "x" * 10_000, "bom\ufeff"):
        with pytest.raises(LeaderboardError):
            comp.add_team(bad)


def test_hostile_writeups_and_names_are_escaped_everywhere(comp, ds, tmp_path, capsys):
    for i, name in enumerate(HOSTILE_NAMES):
        comp.add_team(name)
        submit(comp, ds, tmp_path, name, rank=1 + i, seed=i)
    comp.close()
    for i, name in enumerate(HOSTILE_NAMES):
        comp.set_writeup(FIRST_LINES[i] + "\n\n" + HOSTILE_WRITEUP, name)

    client = create_app(comp.path).test_client()
    page = client.get("/").get_data(as_text=True)
    booklet = booklet_html(comp)
    assert cli_main(["show", "--dir", str(comp.path)]) == 0
    terminal = capsys.readouterr().out
    files = export(comp, tmp_path / "exp", plots=False)
    csv_text = (tmp_path / "exp" / "private_board.csv").read_text(encoding="utf-8-sig")
    api = client.get("/api/board").get_json()

    for html in (page, booklet, board_html(comp), (tmp_path / "exp" / "board.html").read_text()):
        assert "<script" not in html and "javascript:" not in re.sub(r"\[js\]\(javascript:alert\(1\)\)", "", html)
        assert "&lt;script&gt;alert(&#39;n&#39;)&lt;/script&gt;" in html or "&lt;script&gt;alert(&#x27;n&#x27;)" in html
        for frag in re.findall(r'<div class="writeup" dir="auto">.*?</div>', html, re.S):
            audit(frag)
        assert not re.search(r"<[^>]*\son\w+=", html)
    for text in (page, booklet, terminal, csv_text):
        assert "\u202e" not in text and "\u200b" not in text and "\ufeff" not in text and "\u2066" not in text
    assert "evil" in api["private"][0]["writeup"] and "\u202e" not in api["private"][0]["writeup"]
    assert "<b>tag</b>" not in page and "&lt;b&gt;tag&lt;/b&gt;" in page

    # the terminal: one line per team, each write-up's title only (never the body's lines)
    body = [line for line in terminal.splitlines() if re.match(r"\d+\s\s", line)]
    assert len(body) == 2 * len(HOSTILE_NAMES) and "line" not in terminal.replace("deadline", "")
    assert "=cmd|' /C calc'!A0" in terminal  # shown as text in a terminal, where it cannot run

    cells = [c for row in csv.reader(io.StringIO(csv_text)) for c in row]
    assert not any(c.startswith(("=", "+", "-", "@", "＝")) for c in cells), cells
    assert "'=cmd|' /C calc'!A0" in cells and "'+1 weird" in cells and "'-minus" in cells and "'@at sign" in cells
    assert "'=HYPERLINK(\"http://evil\")" in cells and all("\n" not in c for c in cells)
    assert [p.name for p in files] == ["board.html", "public_board.csv", "private_board.csv", "booklet.html"]


# ---- the command line -----------------------------------------------------------------------------
def test_cli_writeup_exit_codes(comp, ds, tmp_path, capsys):
    submit(comp, ds, tmp_path, "alpha")
    notes = tmp_path / "notes.md"
    notes.write_text("# Mobilenet + TTA\n\nIt worked.\n", encoding="utf-8")
    d = ["--dir", str(comp.path)]
    assert cli_main(["writeup", str(notes), "--team", "alpha", *d]) == 5  # not open yet: its own code
    assert "write-ups are not open yet" in capsys.readouterr().err
    comp.close()
    assert cli_main(["writeup", str(notes), "--team", "nobody", *d]) == 2
    assert cli_main(["writeup", str(tmp_path / "missing.md"), "--team", "alpha", *d]) == 2
    big = tmp_path / "big.md"
    big.write_text("x" * 9000)
    assert cli_main(["writeup", str(big), "--team", "alpha", *d]) == 1
    assert "9,000 bytes; the limit is 8,192" in capsys.readouterr().err
    assert cli_main(["writeup", str(notes), "--team", "alpha", *d]) == 0
    out = capsys.readouterr().out
    assert "Saved the write-up of alpha: 29 bytes, attached to submission #1 (Mobilenet + TTA)" in out
    assert cli_main(["show", *d]) == 0
    assert re.search(r"1\s+alpha\s+.*#1 \(auto\)\s+Mobilenet \+ TTA", capsys.readouterr().out)


def test_cli_in_a_real_process_reads_stdin_and_documents_code_5(tmp_path):
    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200, name="tmr-mini")
    c, _ = Competition.create(ds["host"], path=tmp_path / "c", teams=["alpha"], seed=1,
                              writeups_open="2099-01-01T00:00Z")
    c.submit(write_csv(tmp_path / "g.csv", ranked_lists(ds, {g: 1 for g in ds["test"]})), "alpha")
    c.close_db()

    def run(*args, stdin=""):
        return subprocess.run([sys.executable, "-m", "leaderboard", *args, "--dir", "c"], cwd=tmp_path,
                              input=stdin, capture_output=True, text=True, timeout=120)

    p = run("writeup", "-", "--team", "alpha", stdin="# from stdin\n")
    assert p.returncode == 5 and "open at 2099-01-01 00:00 UTC" in p.stderr
    assert run("writeups-open", "2000-01-01T00:00Z").returncode == 0
    p = run("writeup", "-", "--team", "alpha", stdin="# from stdin\n")
    assert p.returncode == 0 and "(from stdin)" in p.stdout
    help_text = subprocess.run([sys.executable, "-m", "leaderboard", "--help"], capture_output=True, text=True).stdout
    assert "5 not open yet" in help_text and "writeup" in help_text


# ---- the web page and the API -------------------------------------------------------------------
def test_web_form_behind_the_token_and_cross_site_posts_refused(comp, ds, tmp_path):
    submit(comp, ds, tmp_path, "alpha")
    client = create_app(comp.path, now=comp._now).test_client()
    tok = comp.tokens["alpha"]
    page = client.post("/team", data={"token": tok}).get_data(as_text=True)
    assert "Write-ups open when the host closes the competition" in page and "<textarea" not in page
    r = client.post("/writeup", data={"token": tok, "text": "# early"})
    assert r.status_code == 409 and "not open yet" in r.get_data(as_text=True)
    r = client.post("/api/writeup", data="# early", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 409 and r.get_json()["saved"] is False
    comp.close()

    page = client.post("/team", data={"token": tok}).get_data(as_text=True)
    assert "<textarea" in page and 'action="/writeup"' in page
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"},
                    {"Origin": "http://localhost.evil.example"}):
        r = client.post("/writeup", data={"token": tok, "text": "# forged"}, headers=headers)
        assert r.status_code == 403 and "cross-site request refused" in r.get_data(as_text=True), headers
        r = client.post("/api/writeup", data="# forged", headers={"Authorization": f"Bearer {tok}", **headers})
        assert r.status_code == 403 and r.get_json()["saved"] is False
        assert client.post("/select", data={"token": tok, "selected": ["1"]}, headers=headers).status_code == 403
    assert n_writeups(comp) == 0
    assert client.post("/writeup", data={"token": "wrong", "text": "# x"}).status_code == 403
    r = client.post("/writeup", data={"token": tok, "text": "x" * 9000})
    assert r.status_code == 422 and "9,000 bytes; the limit is 8,192" in r.get_data(as_text=True)
    r = client.post("/writeup", data={"token": tok, "text": "x" * 700_000})  # refused before it is cleaned
    assert r.status_code == 422 and "700,000 bytes" in r.get_data(as_text=True)
    r = client.post("/writeup", data={"token": tok, "text": "x" * (9 << 20)})  # past the request cap
    assert r.status_code == 413 and "far over the limit of 8,192 bytes" in r.get_data(as_text=True)
    assert not [e for e in comp.events() if e["action"] == "rejected"]  # not a rejected submission

    r = client.post("/writeup", data={"token": tok, "text": "# Same origin\n\n*works*"},
                    headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200 and "Write-up saved" in r.get_data(as_text=True)
    assert "<em>works</em>" in r.get_data(as_text=True)
    r = client.post("/api/writeup", data="# From the API".encode(), headers={"Authorization": f"Bearer {tok}",
                                                                            "Content-Type": "text/markdown"})
    assert r.status_code == 200 and r.get_json()["title"] == "From the API"
    board = client.get("/").get_data(as_text=True)
    assert "<summary>From the API</summary>" in board and "<h3>From the API</h3>" in board
    assert n_writeups(comp) == 2


class _Server:
    def __init__(self, path: Path):
        from werkzeug.serving import make_server

        self.httpd = make_server("127.0.0.1", 0, create_app(path), threaded=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_notebook_writeup_local_and_remote(comp, ds, tmp_path, capsys):
    submit(comp, ds, tmp_path, "alpha")
    submit(comp, ds, tmp_path, "beta")
    assert leaderboard.writeup("# early", team="alpha", competition=comp) is None
    assert "Not saved: write-ups are not open yet" in capsys.readouterr().out
    with pytest.raises(WriteupsNotOpen):
        leaderboard.writeup("# early", team="alpha", competition=comp, raise_on_error=True)
    comp.close()
    notes = tmp_path / "n.md"
    notes.write_text("# From a file\n")
    assert leaderboard.writeup(file=notes, team="alpha", competition=comp, verbose=False)["title"] == "From a file"
    assert leaderboard.writeup(notes, team="alpha", competition=comp, verbose=False)["title"] == "From a file"
    server = _Server(comp.path)
    try:
        res = leaderboard.writeup("# Remote\n\nhello", url=server.url, token=comp.tokens["beta"], verbose=False)
        assert res["saved"] and res["team"] == "beta"
        assert leaderboard.writeup("x" * 9000, url=server.url, token=comp.tokens["beta"]) is None
        assert "9,000 bytes" in capsys.readouterr().out
        assert leaderboard.writeup("# x", url=server.url, token="wrong", verbose=False) is None
    finally:
        server.stop()
    titles = {r["team"]: r["writeup_title"] for r in comp.private_board()}
    assert titles == {"alpha": "From a file", "beta": "Remote"}
    assert list(leaderboard.show(comp)["writeup_title"]) == [titles[t] for t in leaderboard.show(comp)["team"]]
