"""The command line (``python -m leaderboard``), run as a user would, plus the notebook helpers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "leaderboard_fixtures"))
from lbfix import make_dataset, ranked_lists, write_csv  # noqa: E402

import leaderboard  # noqa: E402


def run(cwd: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "leaderboard", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_help_lists_every_command(tmp_path):
    out = run(tmp_path, "--help").stdout
    for cmd in ("init", "add-team", "submit", "show", "history", "select", "close", "export", "serve",
                "check", "rescore", "verify", "log", "deadline", "host-token", "teams"):
        assert cmd in out
    assert "Recall@20 ranks" in out
    assert "--daily-limit" in run(tmp_path, "init", "--help").stdout
    assert "127.0.0.1" in run(tmp_path, "serve", "--help").stdout


def test_full_competition_from_the_command_line(tmp_path):
    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200, name="tmr-mini")
    outputs: list[str] = []

    def go(*args, check=0):
        p = run(tmp_path, *args, check=check)
        outputs.extend([p.stdout, p.stderr])
        return p

    p = go("init", "data/tmr-mini-host", "--team", "alpha", "--team", "beta", "--daily-limit", "2",
           "--seed", "5", "--deadline", "2099-01-01T00:00Z")
    assert "Created competition 'tmr-mini' in competitions/tmr-mini" in p.stdout
    assert "12 public, 28 private" in p.stdout
    tokens = dict(re.findall(r"^  (\S+): (\S+)$", p.stdout, re.M))
    assert set(tokens) == {"HOST", "alpha", "beta"}
    assert go("init", "data/tmr-mini-host", check=2).stderr.startswith("error: competitions/tmr-mini already exists")

    good = write_csv(tmp_path / "good.csv", ranked_lists(ds, {g: 2 for g in ds["test"]}))
    bad = tmp_path / "bad.csv"
    bad.write_text(good.read_text().replace("gid,cite_gid", "gid,cites").rsplit("\n", 3)[0] + "\n")

    p = go("check", "bad.csv", check=1)
    assert "REJECTED" in p.stdout and "line 1: header" in p.stdout and "2 test gids of 40 missing" in p.stdout
    p = go("submit", "bad.csv", "--team", "alpha", check=1)
    assert "REJECTED" in p.stderr and "nothing was scored" in p.stderr
    p = go("submit", "good.csv", "--team", "alpha", "--note", "first")
    assert "Accepted: submission #1 by alpha" in p.stdout and "Recall@20 1.0000   MRR 0.5000" in p.stdout
    assert "1 of 2 submissions left today" in p.stdout
    go("submit", "good.csv", "--team", "beta")
    go("submit", "good.csv", "--team", "alpha")
    p = go("submit", "good.csv", "--team", "alpha", check=2)
    assert "daily limit reached" in p.stderr
    p = go("submit", "good.csv", "--team", "nobody", check=2)
    assert "no team named 'nobody'" in p.stderr

    p = go("show")
    assert "public leaderboard (12 of 40 queries) [open]" in p.stdout
    assert re.search(r"1\s+alpha\s+1\.0000\s+0\.5000\s+2", p.stdout)
    assert "HOST ONLY" not in p.stdout and "private" not in p.stdout.lower()
    p = go("show", "--private")
    assert "HOST ONLY: private ranking" in p.stdout

    p = go("history", "--team", "alpha")
    assert "alpha: 2 submissions" in p.stdout and "first" in p.stdout and "private" not in p.stdout
    p = go("select", "--team", "alpha", "3")
    assert "Selected for the final ranking: #3" in p.stdout
    assert "not submissions of team 'alpha': #2" in go("select", "--team", "alpha", "2", check=2).stderr

    p = go("close", check=2)  # not a terminal: refuses without --yes
    assert "pass --yes" in p.stderr
    p = go("close", "--yes")
    assert "final ranking (private split, 28 queries)" in p.stdout
    p = go("show")
    assert "final ranking" in p.stdout and "[CLOSED]" in p.stdout
    p = go("export", "--out", "out")
    assert {Path(x).name for x in re.findall(r"wrote (\S+)", p.stdout)} == {
        "board.html", "public_board.csv", "private_board.csv", "booklet.html", "race_submissions_per_day.png",
        "race_best_public.png", "race_shakeup.png"}
    outputs += [f.read_text(encoding="utf-8-sig") for f in (tmp_path / "out").iterdir() if f.suffix != ".png"]
    assert "0 problem(s)" in go("verify").stdout
    p = go("log")
    assert "host:close" in p.stdout and "team:rejected" in p.stdout
    go("rescore")

    blob = "\n".join(outputs)
    assert not any(c in blob for ids in ds["answers"].values() for c in ids)  # no answer leaked


def test_entry_point_script_is_declared():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'tmr-leaderboard = "leaderboard.cli:main"' in text


def test_notebook_helpers(tmp_path, capsys):
    import pandas as pd

    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200)
    comp, tokens = leaderboard.Competition.create(ds["host"], path=tmp_path / "c", teams=["alpha"])
    ranked = ranked_lists(ds, {g: 1 for g in ds["test"]})
    df = pd.DataFrame({"gid": list(ranked), "cite_gid": [" ".join(v) for v in ranked.values()]})

    assert leaderboard.check(df, comp).ok
    assert leaderboard.check(df, data=ds["participant"]).ok
    bad = df.iloc[:-1]
    assert leaderboard.submit(bad, team="alpha", competition=comp) is None
    assert "1 test gid of 40 missing" in capsys.readouterr().out
    with pytest.raises(leaderboard.InvalidSubmission):
        leaderboard.submit(bad, team="alpha", competition=comp, raise_on_error=True)
    res = leaderboard.submit(df, team="alpha", competition=comp)
    assert res.accepted and "Accepted: submission #1" in capsys.readouterr().out
    res = leaderboard.submit(ranked, token=tokens["alpha"], competition=comp, verbose=False)  # dict + token
    assert res.submission_id == 2
    from tmr_lib.retrieval import Retrieval

    r = Retrieval.from_ranked(ranked, name="fold 0")  # what the notebooks hold: a Retrieval
    assert leaderboard.check(r, comp, verbose=False).ok
    assert leaderboard.submit(r, team="alpha", competition=comp, verbose=False).submission_id == 3
    table = leaderboard.show(comp)
    assert table.loc[1, "team"] == "alpha" and table.loc[1, "recall20"] == "1.0000"
    comp.add_team("<b>bold</b>")
    widget = leaderboard.board(comp)
    html = widget.children[1].value
    assert "alpha" in html and "1.0000" in html and "<b>bold</b>" not in html


def test_serve_binds_loopback_by_default(tmp_path):
    from urllib import request

    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200)
    leaderboard.Competition.create(ds["host"], path=tmp_path / "c", teams=["alpha"])[0].close_db()
    proc = subprocess.Popen([sys.executable, "-m", "leaderboard", "serve", "--dir", "c", "--port", "0"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.match(r"Leaderboard at (http://127\.0\.0\.1:\d+/)", line)
        assert m, line + proc.stderr.read() if proc.poll() is not None else line
        with request.urlopen(m.group(1), timeout=30) as resp:
            assert resp.status == 200 and "No submissions yet" in resp.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
