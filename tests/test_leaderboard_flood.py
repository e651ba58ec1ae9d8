"""A flood of huge invalid files: the early line cap and the validation worker processes (issue 16).

The latency target itself (board page p95 within 2x of idle under 50 invalid 8 MB files) is
measured by benchmarks/bench_leaderboard_flood.py; these tests pin the behaviour it relies on.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "leaderboard_fixtures"))
from lbfix import make_dataset, ranked_lists, write_csv  # noqa: E402

import leaderboard  # noqa: E402
from leaderboard import Competition, InvalidSubmission  # noqa: E402
from leaderboard.scorer import line_cap  # noqa: E402
from leaderboard.web import create_app  # noqa: E402
from leaderboard.workers import ValidationPool  # noqa: E402


@pytest.fixture()
def setup(tmp_path):
    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200)
    comp, tokens = Competition.create(ds["host"], path=tmp_path / "comp", teams=["alpha"], seed=1, daily_limit=5)
    good = write_csv(tmp_path / "good.csv", ranked_lists(ds, {g: 1 for g in ds["test"]})).read_bytes()
    yield comp, tokens, ds, good
    comp.close_db()


def rows_of(good: bytes) -> list[bytes]:
    return good.splitlines(keepends=True)[1:]


def test_the_line_cap_refuses_only_files_that_cannot_be_valid(setup):
    comp, _, ds, good = setup
    cap = line_cap(40)
    assert cap == 2 * 41 + 1000
    head, rows = b"gid,cite_gid\n", rows_of(good)
    at_cap = head + b"".join(rows[i % 40] for i in range(cap - 1))  # exactly `cap` non-blank lines
    report = comp.validate(at_cap)
    assert "too_many_lines" not in report.counts and report.counts["duplicate_gid"] > 0  # the full listing
    over = head + b"".join(rows[i % 40] for i in range(cap))
    report = comp.validate(over, filename="over.csv")
    assert [p.kind for p in report.errors] == ["too_many_lines"]
    assert report.errors[0].message == (
        f"file has {cap + 1:,} lines; a valid file has 41 (the header and one line per test gid): it was refused "
        f"after counting its lines, without checking each one (more than {cap:,} lines cannot be valid: a file for "
        "another competition, or rows repeated?)")
    assert report.n_bytes == len(over) and len(report.sha256) == 64
    cr = over.replace(b"\n", b"\r")  # old Mac line endings count the same
    assert [p.kind for p in comp.validate(cr).errors] == ["too_many_lines"]
    blank = head + b"\n \r\n\t\n" * 2000 + b"".join(rows)  # 6,000 blank lines: still a valid file
    assert comp.validate(blank).ok and comp.submit(blank, "alpha").accepted


def test_a_capped_file_is_a_free_logged_rejection_and_check_agrees(setup, tmp_path):
    comp, _, ds, good = setup
    tiny = b"gid,cite_gid\n" + b"1,\n" * 200_000
    path = tmp_path / "tiny.csv"
    path.write_bytes(tiny)
    with pytest.raises(InvalidSubmission) as exc:
        comp.submit(path, "alpha")
    assert "file has 200,001 lines" in str(exc.value)
    ev = comp.events()[-1]
    assert ev["action"] == "rejected" and ev["detail"]["problems"] == {"too_many_lines": 1}
    assert comp.used_today(comp.team("alpha")["id"]) == 0
    assert leaderboard.check(path, comp, verbose=False).format() == exc.value.report.format()
    with open(path, "rb") as fh:
        assert comp.validate(fh, filename="tiny.csv").format() == exc.value.report.format()


def _eval_in_worker(pool: ValidationPool, comp: Competition, expr: str):
    return pool._get(comp.scorer()).submit(eval, expr).result()


def test_the_worker_pool_gives_the_same_verdicts_and_holds_no_answers(setup):
    comp, _, ds, good = setup
    scorer = comp.scorer()
    files = {"good": good, "bom": b"\xef\xbb\xbf" + good, "short": good.replace(b" ", b",", 3),
             "utf16": good.decode().encode("utf-16-le"), "tiny rows": b"gid,cite_gid\n" + b"1,\n" * 50_000,
             "empty": b"", "dupes": good + b"".join(rows_of(good)[:5])}
    pool = ValidationPool(1)
    try:
        for name, data in files.items():
            ours, ref = pool.validate(scorer, data, f"{name}.csv"), scorer.validate(data, f"{name}.csv")
            assert (ours.ok, ours.format(), ours.sha256, ours.n_rows) == (ref.ok, ref.format(), ref.sha256, ref.n_rows)
            assert ours.data == (data if ref.ok else b"") and ours.ranked == (ref.ranked if ref.ok else [])
        state = _eval_in_worker(pool, comp, "sorted(__import__('leaderboard.workers').workers._STATE)")
        assert state == ["cites", "max_bytes", "n_ids", "test"]  # no answers in the worker
        assert _eval_in_worker(pool, comp, "__import__('os').getpid()") != os.getpid()
        [pid] = pool.start(scorer)
        os.kill(pid, signal.SIGKILL)  # a worker killed (out of memory, by hand)
        assert pool.validate(scorer, good, "g.csv").ok  # answered in-process, the pool replaced
        assert pool.start(scorer) != [pid]
    finally:
        pool.close()


def test_the_server_validates_uploads_in_its_worker_and_records_the_same(setup):
    from werkzeug.serving import make_server

    comp, tokens, ds, good = setup
    app = create_app(comp.path, workers=1)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_port}"
    try:
        res = leaderboard.submit(b"gid,cite_gid\n" + b"1,\n" * 300_000, url=url, token=tokens["alpha"], verbose=False)
        assert res is None
        ev = comp.events()[-1]
        assert ev["detail"]["problems"] == {"too_many_lines": 1} and ev["detail"]["filename"] == "submission.csv"
        res = leaderboard.submit(good, url=url, token=tokens["alpha"], verbose=False)
        assert res["accepted"] and res["remaining_today"] == 4
        pool = app.extensions["tmr_pool"]
        assert pool is not None and pool._pool is not None  # the upload went through the worker
    finally:
        httpd.shutdown()
        httpd.server_close()
        app.extensions["tmr_pool"].close()
    assert comp.verify(sample=0) == []
    archived = comp.path / comp.con.execute("SELECT archive FROM submissions").fetchone()[0]
    assert archived.read_bytes() == good
