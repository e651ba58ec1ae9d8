"""Screenshots of a closed demo competition for the docs: the final board with write-ups, the booklet.

    python tools/leaderboard_screenshots.py            # writes docs/leaderboard_final.png, docs/leaderboard_booklet.png

Needs a headless Chromium (Debian: ``apt-get install chromium``). Builds a throw-away competition
with the test fixtures' demo teams (hostile names included: they must show escaped), closes it,
attaches a write-up per team and renders the real pages: what a host sees after close.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "leaderboard_fixtures"))

WRITEUPS = [
    "## Swin-S + flip TTA\n\nFine-tuned **two folds**, averaged; post-processing with the train groups.\n\n"
    "- weak + strong views\n- CrossBatchMemory 1024\n",
    "## 色と向きに強く\n\nStrong views with pseudo-logo text; quarter turns helped 向きの相違.\n",
    "<script>alert('x')</script> plain text only: *this* must show escaped.",
    "=HYPERLINK(\"http://evil\") a formula that must stay text.",
    "## Baseline\n\nThe starter notebook as handed out, one epoch.\n",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("no headless Chromium: apt-get install chromium")


def _shoot(url: str, out: Path, size: str, profile: Path) -> None:
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                    f"--window-size={size}", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=120)
    print(f"wrote {out}")


def main() -> int:
    import threading

    from lbfix import DEMO_TEAMS, demo_competition
    from werkzeug.serving import make_server

    from leaderboard.render import export
    from leaderboard.web import create_app

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        comp, _tokens, _ds = demo_competition(tmp)
        comp.close()
        for team, text in zip(DEMO_TEAMS, WRITEUPS):
            comp.set_writeup(text, team)
        export(comp, tmp / "export")
        httpd = make_server("127.0.0.1", 0, create_app(comp.path), threaded=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            _shoot(f"http://127.0.0.1:{httpd.server_port}/", ROOT / "docs" / "leaderboard_final.png", "1200,900",
                   tmp / "p1")
        finally:
            httpd.shutdown()
            httpd.server_close()
            comp.close_db()
        booklet = tmp / "export" / "booklet.html"
        _shoot(booklet.as_uri(), ROOT / "docs" / "leaderboard_booklet.png", "900,1200", tmp / "p2")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
