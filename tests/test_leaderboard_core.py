"""Competition state: init, scoring, ranking, limits, races, selections, close, export, leaks."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "leaderboard_fixtures"))
from lbfix import Clock, make_dataset, ranked_lists, write_csv  # noqa: E402

from leaderboard import (  # noqa: E402
    AuthError,
    Competition,
    InvalidSubmission,
    LeaderboardError,
    QuotaExceeded,
    SubmissionsClosed,
)
from leaderboard.render import board_csv, board_html, csv_safe, export  # noqa: E402

FIXTURES = Path(__file__).parent / "leaderboard_fixtures"


@pytest.fixture()
def ds(tmp_path):
    return make_dataset(tmp_path / "data", n_test=40, n_cite=200)


@pytest.fixture()
def clock():
    return Clock()


@pytest.fixture()
def comp(ds, tmp_path, clock):
    c, tokens = Competition.create(ds["host"], path=tmp_path / "comp", teams=["alpha", "beta", "gamma"],
                                   seed=123, daily_limit=3, now=clock)
    c.tokens = tokens
    yield c
    c.close_db()


def sub(ds, tmp_path, name, hits, seed=1):
    """A valid submission file; ``hits`` maps gid -> rank of the first correct cite (or None)."""
    return write_csv(tmp_path / f"{name}.csv", ranked_lists(ds, hits, seed=seed))


def all_hit(ds, rank=1):
    return {g: rank for g in ds["test"]}


def public_gids(comp):
    return [r[0] for r in comp.con.execute("SELECT gid FROM queries WHERE split='public' ORDER BY pos")]


def hits_on(gids, rank=1):
    return {g: rank for g in gids}


# ---- init -----------------------------------------------------------------------------------
def test_init_is_self_contained_and_seeded(ds, tmp_path, comp):
    s = comp.settings()
    assert (s["n_test"], s["n_public"], s["n_cite"]) == (40, 12, 200)  # 30% of each category
    assert s["daily_limit"] == 3 and s["n_final"] == 2 and s["reset_utc"] == "00:00"
    assert comp.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # the same seed gives the same split, whatever the file order; another seed differs
    c2, _ = Competition.create(ds["host"], path=tmp_path / "c2", seed=123)
    c3, _ = Competition.create(ds["host"], path=tmp_path / "c3", seed=124)
    assert public_gids(c2) == public_gids(comp) != public_gids(c3)
    # stratified: each category is ~30% public
    per_cat = comp.con.execute("SELECT category, SUM(split='public'), COUNT(*) FROM queries GROUP BY category")
    assert [tuple(r) for r in per_cat] == [(2, 3, 10), (3, 3, 10), (4, 3, 10), (5, 3, 10)]
    # the dataset can vanish: the competition keeps working
    import shutil

    shutil.rmtree(ds["participant"])
    shutil.rmtree(ds["host"])
    res = comp.submit(write_csv(tmp_path / "s.csv", ranked_lists(ds, all_hit(ds))), "alpha")
    assert res.public_recall == 1.0


def test_init_refuses_bad_host_data_and_leaves_nothing(ds, tmp_path):
    ans = ds["host"] / "answers.csv"
    rows = list(csv.reader(io.StringIO(ans.read_text())))
    rows[2][2] = "7"  # bad category
    rows[3][1] = rows[3][1] + " 4242424242"  # unknown cite
    rows[5] = rows[4]  # duplicate gid, and one test gid without answer
    with open(ans, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(LeaderboardError) as err:
        Competition.create(ds["host"], path=tmp_path / "bad")
    msg = str(err.value)
    assert "answers.csv line 3: category must be one of 2, 3, 4, 5" in msg
    assert "answers.csv line 4: 1 correct cite id(s) are not in cite_v2.csv" in msg
    assert "answers.csv line 6: gid" in msg and "repeated (first on line 5)" in msg
    assert "no answer for 1 test gid(s)" in msg
    assert "4242424242" not in msg  # the host's answer ids are not echoed either
    assert not (tmp_path / "bad").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temp folder left


def test_init_refuses_existing_dir_and_missing_participant(ds, tmp_path, comp):
    with pytest.raises(LeaderboardError, match="already exists"):
        Competition.create(ds["host"], path=comp.path)
    with pytest.raises(LeaderboardError, match="participant folder not found"):
        Competition.create(ds["host"], data_dir=tmp_path / "nowhere", path=tmp_path / "x")


# ---- scoring, ranking, tie-breaks ----------------------------------------------------------------
def test_scores_match_hand_computation(ds, tmp_path, comp):
    pub = public_gids(comp)
    # public: half the queries hit at rank 1, a quarter at rank 4, the rest miss
    hits = {g: 1 for g in pub[:6]} | {g: 4 for g in pub[6:9]}
    priv = [g for g in ds["test"] if g not in pub]
    hits |= {g: 2 for g in priv[:7]}
    res = comp.submit(sub(ds, tmp_path, "s", hits), "alpha")
    assert res.public_recall == 0.75  # 9 of 12
    assert res.public_mrr == round((6 * 1 + 3 * 0.25) / 12, 4) == 0.5625
    hist = comp.history("alpha", show_private=True)[0]
    assert hist["private_recall"] == 0.25 and hist["private_mrr"] == 0.125  # 7 of 28 at rank 2
    assert "private_recall" not in comp.history("alpha")[0]  # hidden until close


def test_ranking_recall_then_mrr_then_earliest(ds, tmp_path, comp, clock):
    pub = public_gids(comp)
    comp.submit(sub(ds, tmp_path, "a", hits_on(pub[:6], 2)), "alpha")  # R .5, MRR .25
    clock.advance(minutes=1)
    comp.submit(sub(ds, tmp_path, "b", hits_on(pub[:6], 1)), "beta")  # R .5, MRR .5 -> beats alpha
    clock.advance(minutes=1)
    comp.submit(sub(ds, tmp_path, "c", hits_on(pub[:6], 1), seed=9), "gamma")  # tie with beta, later
    board = comp.public_board()
    assert [(r["rank"], r["team"]) for r in board] == [(1, "beta"), (2, "gamma"), (3, "alpha")]
    clock.advance(minutes=1)
    comp.submit(sub(ds, tmp_path, "a2", hits_on(pub[:7], 20)), "alpha")  # higher recall wins
    board = comp.public_board()
    assert [r["team"] for r in board] == ["alpha", "beta", "gamma"]
    assert board[0]["entries"] == 2 and board[0]["recall20"] == round(7 / 12, 4)


def test_scores_rounded_to_4_decimals_before_ranking(ds, tmp_path, comp, clock):
    pub = public_gids(comp)
    # MRR 0.0417 (1/24) vs 0.04166..: identical after rounding -> the earlier one wins
    comp.submit(sub(ds, tmp_path, "a", hits_on(pub[:1], 2)), "alpha")
    clock.advance(seconds=1)
    comp.submit(sub(ds, tmp_path, "b", hits_on(pub[:1], 2), seed=5), "beta")
    assert [r["team"] for r in comp.public_board()] == ["alpha", "beta"]
    assert comp.public_board()[0]["mrr"] == 0.0417


# ---- daily limit ---------------------------------------------------------------------------------
def test_daily_limit_reset_and_rejections_are_free(ds, tmp_path, comp, clock):
    good = sub(ds, tmp_path, "good", all_hit(ds))
    bad = tmp_path / "bad.csv"
    bad.write_text("gid,cite_gid\n1,2\n")
    for _ in range(3):
        with pytest.raises(InvalidSubmission):
            comp.submit(bad, "alpha")  # costs nothing
    for i in range(3):
        assert comp.submit(good, "alpha").used_today == i + 1
    with pytest.raises(QuotaExceeded) as err:
        comp.submit(good, "alpha")
    assert "3 of 3 submissions used today" in str(err.value)
    assert "resets at 2025-03-04 00:00 UTC (in 14h 00m)" in str(err.value)
    assert comp.submit(good, "beta").accepted  # other teams unaffected
    clock.advance(hours=13, minutes=59)
    with pytest.raises(QuotaExceeded):
        comp.submit(good, "alpha")
    clock.advance(minutes=1)  # midnight UTC
    assert comp.submit(good, "alpha").used_today == 1
    n = comp.con.execute("SELECT COUNT(*) FROM submissions WHERE team_id=1").fetchone()[0]
    assert n == 4
    actions = [e["action"] for e in comp.events()]
    assert actions.count("rejected") == 5  # 3 invalid + 2 over the limit: logged, not counted
    assert actions.count("submit") == 5


def test_reset_time_is_configurable(ds, tmp_path, clock):
    c, _ = Competition.create(ds["host"], path=tmp_path / "r", teams=["alpha"], daily_limit=1,
                              reset_utc="09:30", now=clock)
    good = sub(ds, tmp_path, "g", all_hit(ds))
    c.submit(good, "alpha")  # 10:00 UTC
    with pytest.raises(QuotaExceeded, match="resets at 2025-03-04 09:30 UTC"):
        c.submit(good, "alpha")
    clock.advance(hours=23, minutes=30)  # 09:30 next day
    assert c.submit(good, "alpha").accepted


def test_parallel_processes_cannot_exceed_the_limit(ds, tmp_path):
    comp, _ = Competition.create(ds["host"], path=tmp_path / "race", teams=["alpha"], daily_limit=3)  # real clock
    to_reset = (comp._next_reset(comp.now()) - comp.now()).total_seconds()
    if to_reset < 60:  # keep the whole race inside one quota day
        time.sleep(to_reset + 1)
    good = sub(ds, tmp_path, "g", all_hit(ds))
    comp.submit(good, "alpha")
    comp.submit(sub(ds, tmp_path, "g2", all_hit(ds, 2)), "alpha")  # 2 of 3 used
    files = [sub(ds, tmp_path, f"race{i}", all_hit(ds, 1 + i), seed=20 + i) for i in range(8)]
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, str(FIXTURES / "race_submit.py"), str(comp.path), str(f),
                               "alpha", str(start)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for f in files]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    accepted = [r for r in results if r["accepted"]]
    refused = [r for r in results if not r["accepted"]]
    assert len(accepted) == 1, results
    assert len(refused) == 7 and all("daily limit reached" in r["error"] for r in refused)
    assert comp.con.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 3
    n_archive = len(list((comp.path / "archive").glob("*.csv")))
    assert n_archive == 3 and not list((comp.path / "archive").glob(".incoming*"))
    print(f"race: 1 accepted, 7 refused; {sum(r['started_late'] for r in results)} started late",
          file=sys.stderr)


# ---- selections, close, private board --------------------------------------------------------------
def test_final_selection_defaults_and_limits(ds, tmp_path, comp, clock):
    pub = public_gids(comp)
    priv = [g for g in ds["test"] if g not in pub]
    # #1: best public, poor private; #2: worse public, best private; #3: middling
    comp.submit(sub(ds, tmp_path, "1", hits_on(pub, 1) | hits_on(priv[:5], 1)), "alpha")
    comp.submit(sub(ds, tmp_path, "2", hits_on(pub[:6], 1) | hits_on(priv, 1)), "alpha")
    comp.submit(sub(ds, tmp_path, "3", hits_on(pub[:9], 1) | hits_on(priv[:20], 1)), "alpha")
    clock.advance(days=1)
    comp.submit(sub(ds, tmp_path, "4", hits_on(pub[:3], 1) | hits_on(priv[:10], 1)), "beta")
    # no selection: the best public one (#1) counts
    board = {r["team"]: r for r in comp.private_board(host=True)}
    assert board["alpha"]["submission_id"] == 1 and board["alpha"]["auto_selected"]
    assert board["alpha"]["recall20"] == round(5 / 28, 4)
    assert "No final selection" in comp.selection_note(1)
    # select two: the better private of the two counts
    comp.select("alpha", [3, 2])
    board = {r["team"]: r for r in comp.private_board(host=True)}
    assert board["alpha"]["submission_id"] == 2 and not board["alpha"]["auto_selected"]
    with pytest.raises(LeaderboardError, match="at most 2"):
        comp.select("alpha", [1, 2, 3])
    with pytest.raises(LeaderboardError, match="not submissions of team 'beta': #1"):
        comp.select("beta", [1])
    comp.select("alpha", [])
    assert comp.private_board(host=True)[0]["team"] == "beta"  # alpha back to #1: 5/28 < 10/28


def test_private_board_hidden_until_close(ds, tmp_path, comp):
    comp.submit(sub(ds, tmp_path, "a", all_hit(ds)), "alpha")
    with pytest.raises(AuthError, match="hidden until the host closes"):
        comp.private_board()
    html = board_html(comp)
    assert "Final ranking" not in html and "private split" not in html
    assert "private" not in board_csv(comp)
    out = export(comp, tmp_path / "exp")
    assert [p.name for p in out] == ["board.html", "public_board.csv", "race_submissions_per_day.png",
                                     "race_best_public.png"]  # no private board, booklet or shake-up yet
    board = comp.close()
    assert board[0]["team"] == "alpha"
    assert comp.private_board()[0]["recall20"] == 1.0
    assert "Final ranking" in board_html(comp)
    assert "private_recall" in comp.history("alpha")[0]
    with pytest.raises(SubmissionsClosed):
        comp.submit(sub(ds, tmp_path, "late", all_hit(ds)), "alpha")
    with pytest.raises(SubmissionsClosed):
        comp.select("alpha", [1])
    with pytest.raises(LeaderboardError, match="already closed"):
        comp.close()


def test_deadline_stops_submissions(ds, tmp_path, clock):
    c, _ = Competition.create(ds["host"], path=tmp_path / "d", teams=["alpha"], deadline="2025-03-03T10:30Z",
                              now=clock)
    good = sub(ds, tmp_path, "g", all_hit(ds))
    assert c.submit(good, "alpha").accepted
    clock.advance(minutes=30)
    with pytest.raises(SubmissionsClosed, match="deadline passed at 2025-03-03 10:30 UTC"):
        c.submit(good, "alpha")
    assert c.settings()["deadline_passed"]


# ---- storage: archive, append-only log, rescore --------------------------------------------------
def test_archive_hash_append_only_and_rescore(ds, tmp_path, comp):
    f = sub(ds, tmp_path, "a", all_hit(ds, 3))
    res = comp.submit(f, "alpha", note="first try")
    import hashlib

    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    archived = comp.path / "archive" / f"{sha}.csv"
    assert archived.read_bytes() == f.read_bytes()
    assert comp.history("alpha")[0]["sha256"] == sha
    dup = comp.submit(f, "alpha")
    assert dup.duplicate_of == res.submission_id and "identical to your submission #1" in dup.summary()
    for stmt in ("UPDATE submissions SET team_id = 2", "DELETE FROM submissions", "DELETE FROM events",
                 "UPDATE scores SET public_recall = 1", "UPDATE queries SET answer = ''"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            comp.con.execute(stmt)
    log = [json.loads(line) for line in (comp.path / "log.jsonl").read_text().splitlines()]
    assert [e["action"] for e in log] == ["init", "add_team", "add_team", "add_team", "submit", "submit"]
    assert log[4]["detail"]["sha256"] == sha and log[4]["team"] == "alpha"
    assert comp.verify() == []
    assert comp.rescore() == {"rescored": 2, "changed": 0}
    runs = comp.con.execute("SELECT submission_id, run FROM scores ORDER BY id").fetchall()
    assert [tuple(r) for r in runs] == [(1, 1), (2, 1), (1, 2), (2, 2)]  # history kept
    archived.chmod(0o644)
    archived.write_text("tampered")
    assert "does not match its sha256" in comp.verify()[0]
    with pytest.raises(LeaderboardError, match="altered"):
        comp.rescore()


def test_tokens_are_hashed_and_checked(ds, tmp_path, comp):
    tok = comp.tokens["alpha"]
    assert comp.team_for_token(tok)["name"] == "alpha"
    with pytest.raises(AuthError):
        comp.team_for_token(tok + "x")
    with pytest.raises(AuthError):
        comp.team_for_token("")
    assert comp.is_host_token(comp.tokens["host"]) and not comp.is_host_token(tok)
    raw = (comp.path / "leaderboard.sqlite3").read_bytes()
    assert tok.encode() not in raw and comp.tokens["host"].encode() not in raw
    new = comp.add_team("ALPHA", reset_token=True)
    with pytest.raises(AuthError):
        comp.team_for_token(tok)
    assert comp.team_for_token(new)["name"] == "alpha"
    with pytest.raises(LeaderboardError, match="already exists"):
        comp.add_team("Alpha")
    for bad in ("", " ", "a" * 65, "bad\x00name", "new\nline"):
        with pytest.raises(LeaderboardError):
            comp.add_team(bad)


# ---- no leaks, escaping, formula safety -------------------------------------------------------------
def test_answers_never_appear_in_outputs(ds, tmp_path, comp):
    """Answer cites (they start with 7 in the fixture) appear in no message, board, export or log."""
    hits = {g: None for g in ds["test"]}  # the submission holds no correct cite at all
    f = sub(ds, tmp_path, "none", hits)
    res = comp.submit(f, "alpha")
    bad = tmp_path / "bad.csv"
    lines = f.read_text().splitlines()
    lines[3] = lines[3].rsplit(" ", 1)[0]  # 19 ids
    lines.append(lines[2])  # duplicate
    bad.write_text("\n".join(lines[:-5]) + "\n")
    with pytest.raises(InvalidSubmission) as err:
        comp.submit(bad, "alpha")
    comp.close()
    texts = [res.summary(), str(err.value), board_html(comp), board_csv(comp), board_csv(comp, private=True),
             json.dumps(comp.history("alpha")), json.dumps(comp.private_board()), json.dumps(comp.public_board()),
             (comp.path / "log.jsonl").read_text(), json.dumps(comp.events()), json.dumps(comp.settings())]
    for p in export(comp, tmp_path / "exp"):
        if p.suffix != ".png":  # the plots draw scores, never ids
            texts.append(p.read_text(encoding="utf-8-sig"))
    blob = "\n".join(texts)
    for ids in ds["answers"].values():
        for cite in ids:
            assert cite not in blob
    assert str(comp.meta()["seed"]) not in json.dumps(comp.settings())


def test_hostile_names_escaped_in_html_and_safe_in_csv(ds, tmp_path, comp):
    evil = "<script>alert('pwn')</script>"
    formula = "=HYPERLINK(\"http://evil\",\"x\")"
    comp.add_team(evil)
    comp.add_team(formula)
    comp.add_team("＝SUM(A1)")
    comp.add_team("@cmd")
    f = sub(ds, tmp_path, "a", all_hit(ds))
    for t in (evil, formula, "＝SUM(A1)", "@cmd"):
        comp.submit(f, t, note="<img src=x onerror=alert(1)>")
    html = board_html(comp)
    assert "<script>" not in html and "&lt;script&gt;alert(&#39;pwn&#39;)&lt;/script&gt;" in html
    comp.close()
    out = export(comp, tmp_path / "exp")
    html = (tmp_path / "exp" / "board.html").read_text()
    assert "<script>" not in html and "<img" not in html
    for p in [p for p in out if p.suffix == ".csv"]:
        text = p.read_text(encoding="utf-8-sig")
        cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
        assert not any(c.startswith(("=", "+", "-", "@", "＝")) for c in cells), cells
        assert "'=HYPERLINK" in text and "'＝SUM(A1)" in text and "'@cmd" in text
    assert csv_safe("-1+2") == "'-1+2" and csv_safe("plain") == "plain" and csv_safe(0.5) == 0.5
