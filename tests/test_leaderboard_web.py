"""The web app end to end over HTTP on 127.0.0.1, and a headless-browser screenshot."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib import error, parse, request

import pytest

sys.path.insert(0, str(Path(__file__).parent / "leaderboard_fixtures"))
from lbfix import DEMO_TEAMS, demo_competition, make_dataset, ranked_lists, write_csv  # noqa: E402

import leaderboard  # noqa: E402
from leaderboard import Competition  # noqa: E402
from leaderboard.web import create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class Server:
    def __init__(self, path: Path):
        from werkzeug.serving import make_server

        self.httpd = make_server("127.0.0.1", 0, create_app(path), threaded=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def http(url: str, fields: dict | None = None, file: tuple[str, bytes] | None = None, headers=None):
    """(status, headers, body text) for a GET, a form POST or a multipart POST."""
    data, hdrs = None, dict(headers or {})
    if file is not None:
        boundary = uuid.uuid4().hex
        buf = io.BytesIO()
        for k, v in (fields or {}).items():
            buf.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
        buf.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file[0]}"\r\n'
                  "Content-Type: text/csv\r\n\r\n".encode() + file[1] + f"\r\n--{boundary}--\r\n".encode())
        data = buf.getvalue()
        hdrs["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    elif fields is not None:
        data = parse.urlencode(fields, doseq=True).encode()
    req = request.Request(url, data=data, headers=hdrs, method="POST" if data is not None else "GET")
    try:
        with request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers, resp.read().decode("utf-8")
    except error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode("utf-8")


@pytest.fixture()
def site(tmp_path):
    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200)
    comp, tokens = Competition.create(ds["host"], path=tmp_path / "comp", teams=["alpha", "beta"],
                                      daily_limit=2, seed=1)
    comp.add_team("<script>alert('x')</script>")
    server = Server(comp.path)
    yield server, comp, tokens, ds, tmp_path
    server.stop()
    comp.close_db()


def test_end_to_end_over_http(site):
    server, comp, tokens, ds, tmp_path = site
    good = write_csv(tmp_path / "good.csv", ranked_lists(ds, {g: 1 for g in ds["test"]})).read_bytes()
    status, headers, body = http(server.url + "/")
    assert status == 200 and "No submissions yet" in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert http(server.url + "/submit")[0] == 200

    # wrong token refused, nothing recorded
    status, _, body = http(server.url + "/submit", {"token": "nope"}, ("good.csv", good))
    assert status == 403 and "unknown team token" in body
    status, _, body = http(server.url + "/submit", {"token": tokens["host"]}, ("good.csv", good))
    assert status == 403  # the host token is not a team token
    assert comp.con.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 0

    # invalid file: every problem listed (escaped), no quota used
    bad = good.replace(b"gid,cite_gid", b"gid,<b>cite</b>", 1)
    status, _, body = http(server.url + "/submit", {"token": tokens["alpha"]}, ("bad<i>.csv", bad))
    assert status == 422 and "line 1: header must be exactly" in body and "<b>cite" not in body
    assert "&lt;b&gt;cite&lt;/b&gt;" in body

    # upload accepted -> own history with the score
    status, _, body = http(server.url + "/submit", {"token": tokens["alpha"], "note": "<u>first</u>"},
                           ("good.csv", good))
    assert status == 200 and "Accepted: submission #1" in body and "1.0000" in body
    assert "&lt;u&gt;first&lt;/u&gt;" in body and "1</b> of 2 submissions left today" in body
    # the board shows it
    status, _, body = http(server.url + "/")
    assert "alpha" in body and "1.0000" in body and "Final ranking" not in body
    assert json.loads(http(server.url + "/api/board")[2])["public"][0]["team"] == "alpha"

    # the notebook's remote submit goes through the JSON API
    res = leaderboard.submit(good, url=server.url, token=tokens["beta"], note="nb", verbose=False)
    assert res["accepted"] and res["public_recall20"] == 1.0
    assert leaderboard.submit(good, url=server.url, token="wrong", verbose=False) is None

    # own history, selection; wrong token refused
    assert http(server.url + "/team", {"token": "nope"})[0] == 403
    status, _, body = http(server.url + "/team", {"token": tokens["beta"]})
    assert status == 200 and "Submissions of beta" in body and "#2" in body and "#1<" not in body
    status, _, body = http(server.url + "/select", {"token": tokens["beta"], "selected": ["2"]})
    assert status == 200 and "Selected for the final ranking: #2" in body
    status, _, body = http(server.url + "/select", {"token": tokens["beta"], "selected": ["1"]})
    assert status == 400 and "not submissions of team" in body
    assert http(server.url + "/select", {"token": "nope", "selected": ["1"]})[0] == 403

    # daily limit over HTTP
    http(server.url + "/submit", {"token": tokens["alpha"]}, ("good.csv", good))
    status, _, body = http(server.url + "/submit", {"token": tokens["alpha"]}, ("good.csv", good))
    assert status == 409 and "daily limit reached" in body

    # host view needs the host token
    status, _, body = http(server.url + "/host", {"token": tokens["alpha"]})
    assert status == 403 and "wrong host token" in body
    status, _, body = http(server.url + "/host", {"token": tokens["host"]})
    assert status == 200 and "private ranking" in body
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in body and "<script>" not in body

    # the private ranking appears on the public page only after close
    assert "private" not in json.loads(http(server.url + "/api/board")[2])
    comp.close()
    status, _, body = http(server.url + "/")
    assert "Final ranking" in body
    status, _, body = http(server.url + "/submit", {"token": tokens["alpha"]}, ("good.csv", good))
    assert status == 409 and "closed" in body

    # nothing served anywhere holds an answer
    pages = [http(server.url + p)[2] for p in ("/", "/api/board", "/board.csv", "/team", "/host")]
    pages.append(http(server.url + "/host", {"token": tokens["host"]})[2])
    pages.append(http(server.url + "/team", {"token": tokens["alpha"]})[2])
    blob = "\n".join(pages)
    assert not any(c in blob for ids in ds["answers"].values() for c in ids)


def test_upload_size_limit_and_unknown_paths(site):
    server, comp, tokens, ds, tmp_path = site
    status, _, body = http(server.url + "/submit", {"token": tokens["alpha"]}, ("big.csv", b"x" * (9 * 2**20)))
    assert status == 413 and "file too large" in body
    assert http(server.url + "/leaderboard.sqlite3")[0] == 404
    assert http(server.url + "/../archive")[0] == 404
    assert comp.con.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 0


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no headless browser: install Debian's chromium "
                    "(apt-get install chromium) to run the screenshot test")
def test_board_screenshot_in_headless_chromium(tmp_path):
    comp, tokens, ds = demo_competition(tmp_path)
    server = Server(comp.path)
    shot = tmp_path / "leaderboard.png"
    try:
        proc = subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
             "--window-size=1200,720", f"--screenshot={shot}", server.url + "/"],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        server.stop()
        comp.close_db()
    assert shot.is_file() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 720)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours and len(colours) > 50  # a rendered page, not a blank one
    docs = REPO / "docs" / "leaderboard.png"
    if not docs.exists() or os.environ.get("TMR_UPDATE_SCREENSHOT") == "1":
        docs.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, docs)
    print(f"screenshot: {shot} (docs copy: {docs})", file=sys.stderr)
    assert DEMO_TEAMS
