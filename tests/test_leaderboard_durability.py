"""Durability: a full disk and a read-only folder during a submit, a clock that moves back, close during
a submit, the private reveal against a fresh rescoring, and the scripted fault run (issue 16)."""

from __future__ import annotations

import csv
import os
import resource
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

FIX = Path(__file__).parent / "leaderboard_fixtures"
sys.path.insert(0, str(FIX))
import faults  # noqa: E402
from lbfix import sub, make_dataset, ranked_lists, write_csv  # noqa: E402

from leaderboard import Competition, QuotaExceeded, SubmissionsClosed, storage  # noqa: E402
from leaderboard.errors import StorageError  # noqa: E402
from leaderboard.web import create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self, start: str = "2025-03-03T23:50:00+00:00"):
        self.t = datetime.fromisoformat(start)

    def __call__(self) -> datetime:
        return self.t

    def set(self, text: str) -> None:
        self.t = datetime.fromisoformat(text)


@pytest.fixture()
def ds(tmp_path):
    return make_dataset(tmp_path / "data", n_test=40, n_cite=200)


@pytest.fixture()
def comp(ds, tmp_path):
    c, tokens = Competition.create(ds["host"], path=tmp_path / "comp", teams=["alpha", "beta"], seed=1, daily_limit=10)
    c.tokens = tokens
    yield c
    c.close_db()


def counts(c) -> tuple[int, int, int]:
    return tuple(c.con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("submissions", "scores", "events"))


def archive_names(c) -> list[str]:
    return sorted(os.listdir(c.path / "archive"))


# ---- a full disk ----------------------------------------------------------------------------------
@pytest.mark.parametrize("point", ["archive", "database"])
def test_disk_full_during_a_submit_records_nothing_and_says_so(comp, ds, tmp_path, point):
    comp.submit(sub(ds, tmp_path, 0), "alpha")
    before, files = counts(comp), archive_names(comp)
    with faults.disk_full(comp.path, point):
        c = Competition(comp.path)
        with pytest.raises(StorageError) as exc:
            c.submit(sub(ds, tmp_path, 1), "alpha")
        c.close_db()
    msg = str(exc.value)
    assert exc.value.kind == "full" and "its disk is full" in msg
    assert "Nothing was recorded and no quota was used" in msg and str(comp.path) not in msg  # no host path
    assert counts(comp) == before and archive_names(comp) == files  # nothing half-written, no temp file left
    assert comp.used_today(comp.team("alpha")["id"]) == 1
    assert comp.verify(sample=0) == []
    assert comp.submit(sub(ds, tmp_path, 1), "alpha").accepted  # space back: it goes through


def test_disk_full_on_the_log_keeps_the_accepted_submission_and_verify_finds_the_line(comp, ds, tmp_path, capsys):
    with faults.disk_full(comp.path, "log"):
        res = Competition(comp.path).submit(sub(ds, tmp_path, 0), "alpha")
    assert res.accepted  # recorded before the log: a failed log append does not un-accept it
    assert "log.jsonl could not be brought up to date" in capsys.readouterr().err
    kinds = sorted({f.kind for f in comp.verify_findings(sample=0)})
    assert kinds == ["log_bad", "log_missing"]
    comp.repair()
    assert comp.verify(sample=0) == [] and comp.history("alpha")[0]["id"] == res.submission_id


def test_disk_full_over_http_is_a_507_that_records_nothing(comp, ds, tmp_path):
    f = sub(ds, tmp_path, 1)
    client = create_app(comp.path).test_client()
    before = counts(comp)
    with faults.disk_full(comp.path, "database"):
        r = client.post("/api/submit", data=f.read_bytes(), headers={"Authorization": f"Bearer {comp.tokens['alpha']}"})
        assert r.status_code == 507 and r.get_json()["storage"] == "full" and r.headers["Retry-After"]
        assert "no quota was used" in r.get_json()["error"]
        r = client.post("/submit", data={"token": comp.tokens["alpha"], "file": (f.open("rb"), "s.csv")})
        assert r.status_code == 507 and b"could not save" in r.data and b"Traceback" not in r.data
    assert counts(comp) == before and comp.verify(sample=0) == []


def _fsize_limit(limit: int):
    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past `limit` bytes fail: EFBIG
    return pre


def test_a_real_write_failure_from_the_kernel_gives_exit_code_6_and_no_traceback(comp, ds, tmp_path):
    """RLIMIT_FSIZE (no root needed): the kernel refuses the archive write past 4 kB, as a full disk would."""
    f = sub(ds, tmp_path, 1)
    assert f.stat().st_size > 4096
    before = counts(comp)
    p = subprocess.run([sys.executable, "-m", "leaderboard", "submit", str(f), "--team", "alpha", "--dir",
                        str(comp.path)], capture_output=True, text=True, timeout=120, preexec_fn=_fsize_limit(4096),
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
    assert p.returncode == 6, p.stdout + p.stderr
    assert "disk is full" in p.stderr and "Nothing was recorded" in p.stderr and "Traceback" not in p.stderr
    assert counts(comp) == before and archive_names(comp) == [] and comp.verify(sample=0) == []
    out = subprocess.run([sys.executable, "-m", "leaderboard", "--help"], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout
    assert "6 the leaderboard could not write its files" in out
    assert "6 the leaderboard could not write its files" in (REPO / "leaderboard" / "README.md").read_text()


# ---- a read-only folder ---------------------------------------------------------------------------
def ro_cli(comp_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FIX / "ro_cli.py"), str(comp_dir), *args, "--dir", str(comp_dir)],
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO),
                                                                              "PATH": "/usr/bin:/bin"})


def test_read_only_folders_give_a_clear_error_and_no_traceback(comp, ds, tmp_path):
    comp.submit(sub(ds, tmp_path, 0), "alpha")
    f = sub(ds, tmp_path, 1)
    before = counts(comp)
    os.chmod(comp.path / "archive", 0o555)
    try:
        p = ro_cli(comp.path, "submit", str(f), "--team", "beta")
        assert p.returncode == 6, p.stdout + p.stderr
        assert "read-only" in p.stderr and "Nothing was recorded" in p.stderr and "Traceback" not in p.stderr
        p = ro_cli(comp.path, "verify")
        assert p.returncode == 4 and "archive/ cannot be written" in p.stdout and "Traceback" not in p.stderr
        with faults.permissions_enforced(comp.path):
            client = create_app(comp.path).test_client()
            r = client.post("/api/submit", data=f.read_bytes(),
                            headers={"Authorization": f"Bearer {comp.tokens['beta']}"})
            assert r.status_code == 507 and r.get_json()["storage"] == "read_only"
        os.chmod(comp.path, 0o500)  # the whole folder, and the database file, read-only
        os.chmod(comp.path / storage.DB_NAME, 0o400)
        p = ro_cli(comp.path, "submit", str(f), "--team", "beta")
        assert p.returncode == 6 and "Traceback" not in p.stderr, p.stderr
        p = ro_cli(comp.path, "show")
        assert p.returncode in (0, 6) and "Traceback" not in p.stderr, p.stderr  # reads may still work
        p = ro_cli(comp.path, "verify", "--repair")  # gives the owner write permission back, then verifies
        assert p.returncode == 0 and "gave the owner write permission" in p.stdout, p.stdout + p.stderr
    finally:
        os.chmod(comp.path, 0o700)
        os.chmod(comp.path / "archive", 0o700)
    assert counts(comp)[0] == before[0] and comp.verify(sample=0) == []
    assert comp.submit(f, "beta").accepted


# ---- the clock moving back ------------------------------------------------------------------------
def test_a_clock_moving_back_over_the_daily_reset_grants_no_extra_submission(ds, tmp_path):
    clock = Clock("2025-03-03T23:50:00+00:00")
    c, _ = Competition.create(ds["host"], path=tmp_path / "c", teams=["alpha"], seed=1, daily_limit=2, now=clock)
    c.submit(sub(ds, tmp_path, 0), "alpha")  # day 1: 1 of 2
    clock.set("2025-03-04T00:05:00+00:00")  # day 2
    c.submit(sub(ds, tmp_path, 1), "alpha")
    c.submit(sub(ds, tmp_path, 2), "alpha")  # day 2: 2 of 2
    clock.set("2025-03-03T23:55:00+00:00")  # the clock jumps back into day 1, which had one left
    with pytest.raises(QuotaExceeded, match="resets at 2025-03-05 00:00 UTC"):
        c.submit(sub(ds, tmp_path, 3), "alpha")
    assert c.used_today(c.team("alpha")["id"], c.now()) == 2 and c.settings()["next_reset"].startswith("2025-03-05")
    stamps = [r["submitted_at"] for r in c.history("alpha")]
    assert stamps == sorted(stamps)  # recorded times never run backwards
    clock.set("2025-03-05T00:01:00+00:00")  # the real next day
    assert c.submit(sub(ds, tmp_path, 3), "alpha").accepted
    c.close_db()


def test_a_clock_moving_back_reopens_neither_the_deadline_nor_a_closed_contest(ds, tmp_path):
    clock = Clock("2025-03-03T10:20:00+00:00")
    c, _ = Competition.create(ds["host"], path=tmp_path / "c", teams=["alpha"], seed=1,
                              deadline="2025-03-03T10:30Z", now=clock)
    assert c.submit(sub(ds, tmp_path, 0), "alpha").accepted
    clock.set("2025-03-03T10:31:00+00:00")
    with pytest.raises(SubmissionsClosed, match="deadline passed"):
        c.submit(sub(ds, tmp_path, 1), "alpha")
    assert c.events()[-1]["action"] == "rejected" and c.events()[-1]["detail"]["reason"] == "closed"
    clock.set("2025-03-03T10:25:00+00:00")  # back before the deadline
    with pytest.raises(SubmissionsClosed, match="deadline passed"):
        c.submit(sub(ds, tmp_path, 1), "alpha")
    assert c.settings()["deadline_passed"]
    clock.set("2025-03-03T11:00:00+00:00")
    c.close()
    clock.set("2025-03-02T09:00:00+00:00")  # a day back
    with pytest.raises(SubmissionsClosed, match="closed"):
        c.submit(sub(ds, tmp_path, 1), "alpha")
    with pytest.raises(SubmissionsClosed):
        c.select("alpha", [1])
    assert c.is_closed() and c.private_board()[0]["team"] == "alpha"
    assert c.con.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 1
    c.close_db()


# ---- close during a submit ------------------------------------------------------------------------
def _consistent(c) -> None:
    """Every submission whole: a score row, a submit event, its archive file; verify clean."""
    for s in c.con.execute("SELECT id FROM submissions"):
        assert c.con.execute("SELECT COUNT(*) FROM scores WHERE submission_id = ?", (s[0],)).fetchone()[0] >= 1
        assert c.con.execute("SELECT COUNT(*) FROM events WHERE action = 'submit' AND submission_id = ?",
                             (s[0],)).fetchone()[0] == 1
    assert c.verify(sample=0) == []


def test_close_after_scoring_before_recording_refuses_the_submit(comp, ds, tmp_path):
    comp.submit(sub(ds, tmp_path, 0), "alpha")
    sub_comp = Competition(comp.path)
    scorer = sub_comp.scorer()
    real = scorer.score

    def score_then_close(*a, **k):
        out = real(*a, **k)
        Competition(comp.path).close()  # the host closes while this file is being scored
        return out

    scorer.score = score_then_close
    with pytest.raises(SubmissionsClosed, match="closed"):
        sub_comp.submit(sub(ds, tmp_path, 1), "beta")
    assert comp.con.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 1
    assert len(archive_names(comp)) == 1 and comp.events()[-1]["detail"]["reason"] == "closed"
    _consistent(comp)
    sub_comp.close_db()


def test_close_while_a_submit_holds_the_lock_waits_and_the_submit_lands_first(comp, ds, tmp_path):
    c = Competition(comp.path)
    real = c._write_archive
    closed: dict = {}

    def write_then_race(data, dest):
        out = real(data, dest)
        t = threading.Thread(target=lambda: closed.setdefault("board", Competition(comp.path, wait=20).close()))
        t.start()
        time.sleep(0.3)  # close is now waiting for the write lock this submit holds
        closed["thread"] = t
        return out

    c._write_archive = write_then_race
    res = c.submit(sub(ds, tmp_path, 1), "beta")
    closed["thread"].join(30)
    assert res.accepted and [r["submission_id"] for r in closed["board"]] == [res.submission_id]
    s = comp.settings()
    assert s["closed"] and s["closed_at"] > comp.history("beta")[0]["submitted_at"]
    _consistent(comp)
    c.close_db()


# ---- the private reveal equals a fresh rescoring of the archive -----------------------------------
def _fresh_scores(comp, ds, archive: Path) -> tuple[float, float, float]:
    """(public R@20, private R@20, private MRR) by hand from an archived file and the host's answers.csv."""
    with open(ds["host"] / "answers.csv", newline="") as fh:
        answers = {r["gid"]: set(r["cite_gid"].split()) for r in csv.DictReader(fh)}
    split = dict(comp.con.execute("SELECT gid, split FROM queries"))
    ranked = {}
    for line in archive.read_text().splitlines()[1:]:
        g, ids = line.split(",")
        ranked[g] = ids.split()
    out = {}
    for part in ("public", "private"):
        gids = [g for g in split if split[g] == part]
        firsts = [next((i + 1 for i, x in enumerate(ranked[g][:20]) if x in answers[g]), 0) for g in gids]
        out[part] = (sum(f > 0 for f in firsts) / len(gids), sum(1 / f for f in firsts if f) / len(gids))
    return out["public"][0], out["private"][0], out["private"][1]


def test_the_private_reveal_equals_a_fresh_rescoring_of_the_archive(comp, ds, tmp_path):
    for k in range(6):
        comp.submit(sub(ds, tmp_path, k), "alpha" if k % 2 else "beta")
    beta_ids = [r["id"] for r in comp.history("beta")]
    comp.select("beta", beta_ids[1:3])
    comp.close()
    fresh = {}
    for s in comp.con.execute("SELECT s.id, t.name, s.archive FROM submissions s JOIN teams t ON t.id = s.team_id"):
        fresh[s[0]] = (s[1], *_fresh_scores(comp, ds, comp.path / s[2]))
    expected = []
    for team, chosen in (("alpha", None), ("beta", beta_ids[1:3])):
        mine = {i: v for i, v in fresh.items() if v[0] == team}
        if chosen is None:  # no selection: the best public submission (earliest on a tie)
            chosen = [min(mine, key=lambda i: (-round(mine[i][1], 4), i))]
        best = min(chosen, key=lambda i: (-round(mine[i][2], 4), -round(mine[i][3], 4), i))
        expected.append((team, best, round(mine[best][2], 4), round(mine[best][3], 4)))
    expected.sort(key=lambda e: (-e[2], -e[3], e[1]))
    board = comp.private_board()
    assert [(r["team"], r["submission_id"], r["recall20"], r["mrr"]) for r in board] == expected


# ---- the scripted fault run -----------------------------------------------------------------------
def test_scripted_fault_run_every_problem_found_repaired_nothing_lost(tmp_path, capsys):
    rows = faults.run_all(tmp_path)
    with capsys.disabled():
        print("\n" + faults.table(rows))
    assert len(rows) == len(faults.FAULTS) + 1
    for r in rows:
        assert r.listed == r.expected, (r.fault, r.expected, r.listed)  # 0 missed, nothing made up
        assert r.left == [], (r.fault, r.left)
        assert r.lost == 0, r.fault
    assert {r.fault: r.outcome for r in rows}["disk full in the database (SQLITE_FULL)"].startswith("refused")
