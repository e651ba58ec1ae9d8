"""`verify` / `verify --repair` (archive <-> database, temp files, log <-> events, scores) and a busy database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "leaderboard_fixtures"))
from lbfix import sub, make_dataset, ranked_lists, write_csv  # noqa: E402

from leaderboard import Competition  # noqa: E402
from leaderboard import storage  # noqa: E402
from leaderboard.errors import DatabaseBusy  # noqa: E402

FIXTURES = Path(__file__).parent / "leaderboard_fixtures"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def ds(tmp_path):
    return make_dataset(tmp_path / "data", n_test=40, n_cite=200)


@pytest.fixture()
def comp(ds, tmp_path):
    c, tokens = Competition.create(ds["host"], path=tmp_path / "comp", teams=["alpha", "beta"], seed=1,
                                   daily_limit=10)
    c.tokens = tokens
    yield c
    c.close_db()


def kinds(comp) -> list[str]:
    return [f.kind for f in comp.verify_findings(sample=0)]


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leaderboard", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_log_lines_carry_event_ids_and_match_the_table(comp, ds, tmp_path):
    comp.submit(sub(ds, tmp_path, 1), "alpha")
    lines = [json.loads(x) for x in (comp.path / "log.jsonl").read_text().splitlines()]
    assert [e["id"] for e in lines] == [e["id"] for e in comp.events()] == list(range(1, len(lines) + 1))
    assert comp.verify(sample=0) == []


def test_a_log_line_lost_after_commit_is_found_then_written_by_the_next_write(comp, ds, tmp_path):
    with comp._write() as con:  # a crash after COMMIT, before the log line: the event is only in the table
        comp._event("host", "set_deadline", con=con, detail={"deadline": ""})
    found = comp.verify(sample=0)
    assert len(found) == 1 and "event #4 (set_deadline" in found[0] and "is missing" in found[0]
    comp.submit(sub(ds, tmp_path, 1), "alpha")  # any later write brings the log up to date
    assert comp.verify(sample=0) == []
    assert [e["action"] for e in map(json.loads, (comp.path / "log.jsonl").read_text().splitlines())][-2:] == [
        "set_deadline", "submit"]


def test_verify_finds_every_kind_of_damage_and_repair_leaves_none(comp, ds, tmp_path):
    comp.submit(sub(ds, tmp_path, 1), "alpha")
    comp.submit(sub(ds, tmp_path, 2), "beta")
    arch = comp.path / "archive"
    orphan = b"gid,cite_gid\nsomeone's file\n"
    (arch / ("ab" * 32 + ".csv")).write_bytes(orphan)
    (arch / ".incoming.x1y2").write_bytes(b"half a fi")
    log = comp.path / "log.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    edited = json.loads(lines[1])
    edited["team"] = "mallory"
    log.write_text(lines[0] + json.dumps(edited) + "\n" + "".join(lines[3:]) + lines[0] + '{"id": 99, "at"')
    found = comp.verify_findings(sample=0)
    got = sorted(f.kind for f in found)
    assert got == sorted(["orphan_file", "temp_file", "log_differs", "log_missing", "log_extra", "log_bad"]), found
    text = "\n".join(map(str, found))
    assert "archive/" + "ab" * 32 + ".csv: not recorded in the database (orphan" in text
    assert "archive/.incoming.x1y2: leftover temporary file" in text
    assert "log.jsonl line 2: differs from event #2 (add_team, alpha" in text
    assert "event #3 (add_team, beta" in text and "is missing" in text

    done = comp.repair()
    assert any("moved orphan" in d for d in done) and any("removed leftover" in d for d in done)
    assert any("rewrote log.jsonl" in d for d in done)
    assert comp.verify(sample=0) == []
    moved = list((comp.path / "recovered").rglob("*.csv"))
    assert len(moved) == 1 and moved[0].read_bytes() == orphan  # never deleted
    assert list((comp.path / "recovered").rglob("log.jsonl"))  # the old log kept too
    assert not (arch / ".incoming.x1y2").exists()
    assert comp.events()[-1]["action"] == "repair"
    assert comp.con.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 2


def test_a_stored_score_that_differs_from_a_rescoring_is_reported(comp, ds, tmp_path):
    res = comp.submit(sub(ds, tmp_path, 1), "alpha")
    with comp._write() as con:
        storage.insert_score(con, res.submission_id, 2, "2025-01-01T00:00:00.000000Z",
                             {"recall20": 0.999, "mrr": 0.5}, {"recall20": 0.1, "mrr": 0.1}, {})
    assert kinds(comp) == ["score_differs"]
    assert comp.repair() == []  # not silently "repaired"
    comp.rescore()
    assert comp.verify(sample=0) == []


def test_altered_and_missing_archive_files(comp, ds, tmp_path):
    a = comp.submit(sub(ds, tmp_path, 1), "alpha")
    b = comp.submit(sub(ds, tmp_path, 2), "alpha")
    pa = comp.path / comp.con.execute("SELECT archive FROM submissions WHERE id = ?", (a.submission_id,)).fetchone()[0]
    pb = comp.path / comp.con.execute("SELECT archive FROM submissions WHERE id = ?", (b.submission_id,)).fetchone()[0]
    pa.chmod(0o644)
    pa.write_text("tampered")
    pb.unlink()
    assert kinds(comp) == ["altered_file", "missing_file"]


@pytest.mark.parametrize("point,kind", [("before_rename", "temp_file"), ("after_rename", "orphan_file"),
                                        ("after_commit", "log_missing")])
def test_fault_run_kill_at_each_point_of_a_submit(comp, ds, tmp_path, point, kind):
    comp.submit(sub(ds, tmp_path, 1), "alpha")
    f = sub(ds, tmp_path, 2)
    p = subprocess.run([sys.executable, str(FIXTURES / "crash_submit.py"), str(comp.path), str(f), "beta", point],
                       capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO)})
    assert p.returncode == 9, p.stderr
    n_before = comp.con.execute("SELECT COUNT(*) FROM submissions").fetchone()[0]
    assert n_before == (2 if point == "after_commit" else 1)
    assert kinds(comp) == [kind]
    assert comp.repair()
    assert comp.verify(sample=0) == []
    assert comp.con.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == n_before  # nothing accepted lost
    assert comp.used_today(comp.team("beta")["id"]) == n_before - 1  # a killed submit cost no quota


def test_cli_verify_exit_codes_and_repair(comp, ds, tmp_path):
    comp.submit(sub(ds, tmp_path, 1), "alpha")
    (comp.path / "archive" / ".incoming.zz").write_bytes(b"x")
    p = cli(tmp_path, "verify", "--dir", str(comp.path))
    assert p.returncode == 4, p.stderr
    assert "archive/.incoming.zz: leftover temporary file" in p.stdout and "1 problem(s)" in p.stdout
    p = cli(tmp_path, "verify", "--dir", str(comp.path), "--repair")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "repaired: removed leftover temporary file archive/.incoming.zz" in p.stdout
    assert "0 problem(s)" in p.stdout


# ---------------------------------------------------------------------------------------------
# a busy database
# ---------------------------------------------------------------------------------------------
def hold_write_lock(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(path / storage.DB_NAME), isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    return con


def counts(comp) -> tuple:
    return tuple(comp.con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("submissions", "events"))


def test_busy_database_is_a_clear_refusal_that_records_nothing(comp, ds, tmp_path):
    f = sub(ds, tmp_path, 1)
    before = counts(comp)
    holder = hold_write_lock(comp.path)
    try:
        c = Competition(comp.path, wait=0.2)
        t0 = time.monotonic()
        with pytest.raises(DatabaseBusy, match="database is busy.*Nothing was recorded and no quota was used"):
            c.submit(f, "alpha")
        assert time.monotonic() - t0 < 5
        bad = tmp_path / "bad.csv"
        bad.write_text("gid,cite_gid\n1,2\n")
        with pytest.raises(Exception, match="REJECTED"):  # an invalid file still gets its report
            c.submit(bad, "alpha")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert counts(comp) == before
    assert comp.used_today(comp.team("alpha")["id"]) == 0
    assert list((comp.path / "archive").iterdir()) == []
    assert Competition(comp.path, wait=0.2).submit(f, "alpha").accepted  # fine once the lock is gone


def test_busy_database_cli_exit_code_3_and_http_503(comp, ds, tmp_path):
    from leaderboard.web import create_app

    f = sub(ds, tmp_path, 1)
    holder = hold_write_lock(comp.path)
    try:
        p = cli(tmp_path, "submit", str(f), "--team", "alpha", "--dir", str(comp.path), "--wait", "0.3")
        assert p.returncode == 3, p.stdout + p.stderr
        assert "database is busy" in p.stderr and "Traceback" not in p.stderr
        client = create_app(comp.path, wait=0.2).test_client()
        r = client.post("/api/submit", data=f.read_bytes(), headers={"Authorization": f"Bearer {comp.tokens['alpha']}"})
        assert r.status_code == 503 and r.is_json and int(r.headers["Retry-After"]) >= 1
        assert r.get_json()["busy"] is True and "no quota" in r.get_json()["error"]
        r = client.post("/submit", data={"token": comp.tokens["alpha"], "file": (f.open("rb"), "s.csv")})
        assert r.status_code == 503 and "Retry-After" in r.headers and b"busy" in r.data
        assert client.get("/").status_code == 200  # reading the board is not blocked
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert counts(comp)[0] == 0


def test_help_documents_the_exit_codes(tmp_path):
    out = cli(tmp_path, "--help").stdout
    assert "3 the database was busy" in out and "4 verify found" in out
    assert "--wait" in cli(tmp_path, "submit", "--help").stdout
