"""The per-team limit on rejected files (window and count set by the host; 429 over HTTP; 413 logged)."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "leaderboard_fixtures"))
from lbfix import make_dataset, ranked_lists, write_csv  # noqa: E402

from leaderboard import Competition, InvalidSubmission  # noqa: E402
from leaderboard.errors import TooManyRejections  # noqa: E402


class Clock:
    def __init__(self):
        self.t = datetime.fromisoformat("2025-03-03T10:00:00+00:00")

    def __call__(self):
        return self.t


@pytest.fixture()
def setup(tmp_path):
    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200)
    clock = Clock()
    comp, tokens = Competition.create(ds["host"], path=tmp_path / "comp", teams=["alpha", "beta"], seed=1,
                                      daily_limit=5, reject_limit=3, reject_window=10, now=clock)
    good = write_csv(tmp_path / "good.csv", ranked_lists(ds, {g: 1 for g in ds["test"]}))
    bad = tmp_path / "bad.csv"
    bad.write_text("gid,cite_gid\n1,2\n")
    yield comp, tokens, clock, good, bad
    comp.close_db()


def n_events(comp) -> int:
    return comp.con.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def test_rejected_files_past_the_limit_wait_for_the_window(setup):
    comp, tokens, clock, good, bad = setup
    for _ in range(3):
        with pytest.raises(InvalidSubmission):
            comp.submit(bad, "alpha")
        clock.t += timedelta(minutes=1)
    before = n_events(comp)
    with pytest.raises(TooManyRejections) as exc:
        comp.submit(good, "alpha")  # even a good file waits: the refusal comes before reading it
    msg = str(exc.value)
    assert "too many rejected files: 3 in the last 10 min (the host's limit is 3)" in msg
    assert "from 2025-03-03 10:10 UTC (in 7m 00s)" in msg and "not read and cost nothing" in msg
    assert exc.value.retry_after == 420
    assert n_events(comp) == before  # a throttled file costs no database write
    assert comp.submit(good, "beta").accepted  # other teams are not affected
    clock.t += timedelta(minutes=7)  # the first rejection leaves the window
    assert comp.submit(good, "alpha").accepted
    assert comp.used_today(comp.team("alpha")["id"]) == 1


def test_quota_refusals_do_not_count_and_zero_means_no_limit(tmp_path):
    ds = make_dataset(tmp_path / "data", n_test=40, n_cite=200)
    comp, _ = Competition.create(ds["host"], path=tmp_path / "c", teams=["alpha"], seed=1, reject_limit=0)
    bad = tmp_path / "bad.csv"
    bad.write_text("gid,cite_gid\n1,2\n")
    for _ in range(25):
        with pytest.raises(InvalidSubmission):
            comp.submit(bad, "alpha")
    assert comp.settings()["reject_limit"] == 0
    with pytest.raises(Exception, match="rejection limit"):
        Competition.create(ds["host"], path=tmp_path / "d", reject_limit=-1)


def test_http_429_with_retry_after_and_413_logged_as_rejection(setup):
    from leaderboard.web import create_app

    comp, tokens, clock, good, bad = setup
    app = create_app(comp.path, now=clock)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {tokens['alpha']}"}
    big = b"gid,cite_gid\n" + b"1,2\n" * (app.config["MAX_CONTENT_LENGTH"] // 4 + 10)
    r = client.post("/api/submit", data=big, headers=auth)
    assert r.status_code == 413
    ev = comp.events()[-1]
    assert ev["action"] == "rejected" and ev["team"] == "alpha" and ev["detail"]["reason"] == "too_large"
    assert ev["detail"]["bytes"] == len(big)
    for _ in range(2):
        assert client.post("/api/submit", data=bad.read_bytes(), headers=auth).status_code == 422
    r = client.post("/api/submit", data=good.read_bytes(), headers=auth)
    assert r.status_code == 429 and r.headers["Retry-After"] == "600"
    assert "too many rejected files" in r.get_json()["error"]
    r = client.post("/submit", data={"token": tokens["alpha"], "file": (good.open("rb"), "good.csv")})
    assert r.status_code == 429 and b"too many rejected files" in r.data
    r = client.post("/api/submit", data=good.read_bytes(), headers={"Authorization": f"Bearer {tokens['beta']}"})
    assert r.status_code == 200
