"""Hand-made competition folders for the leaderboard tests (no dataset builder needed)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

CATS = (2, 3, 4, 5)


def make_dataset(root: Path, n_test: int = 40, n_cite: int = 200, seed: int = 0, name: str = "tiny") -> dict:
    """Write <root>/<name>/ (participant) and <root>/<name>-host/ (answers + host.json).

    Returns the ids so tests can build submissions: test gids, cite gids, answers
    (gid -> list of correct cites), categories. Cite gids that are answers start with "7";
    the others start with "1", so a test can spot an answer gid anywhere in an output.
    """
    rng = random.Random(seed)
    part = root / name
    host = root / f"{name}-host"
    part.mkdir(parents=True)
    host.mkdir(parents=True)
    test = [str(5_000_000_000 + rng.randrange(10**8)) for _ in range(n_test)]
    assert len(set(test)) == n_test
    n_answer_cites = n_test + n_test // 4
    answer_pool = [str(7_000_000_000 + i * 7919 + rng.randrange(7)) for i in range(n_answer_cites)]
    other = [str(1_000_000_000 + i * 104729 + rng.randrange(11)) for i in range(n_cite - n_answer_cites)]
    cites = answer_pool + other
    rng.shuffle(cites)
    answers, cats = {}, {}
    for i, g in enumerate(test):
        ids = [answer_pool[i]]
        if i % 4 == 0:
            ids.append(answer_pool[n_test + i // 4])
        answers[g] = ids
        cats[g] = CATS[i % 4]
    with open(part / "test.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["gid", "path"])
        w.writerows([g, f"apply_images/{g}/{g}.jpg"] for g in test)
    with open(part / "cite_v2.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["gid", "path"])
        w.writerows([c, f"cite_images/{c}/{c}.jpg"] for c in cites)
    with open(part / "sample_submission.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["gid", "cite_gid"])
        w.writerows([g, " ".join(other[:20])] for g in test)
    with open(host / "answers.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["gid", "cite_gid", "category"])
        w.writerows([g, " ".join(answers[g]), cats[g]] for g in test)
    (host / "host.json").write_text(json.dumps({
        "name": name, "preset": "test", "seed": seed, "participant_dir": f"../{name}",
        "n_test": n_test, "n_cite": n_cite}))
    return {"participant": part, "host": host, "test": test, "cites": cites, "answers": answers,
            "categories": cats, "answer_pool": answer_pool, "others": other}


def ranked_lists(ds: dict, hit_rank: dict[str, int | None], seed: int = 1) -> dict[str, list[str]]:
    """20 ids per test gid: the first correct cite at hit_rank[gid] (1-based), or no hit (None).

    Filler ids are non-answer cites, so no other correct cite sneaks in.
    """
    rng = random.Random(seed)
    out = {}
    for g in ds["test"]:
        ids = rng.sample(ds["others"], 20)
        r = hit_rank.get(g)
        if r is not None:
            ids[r - 1] = ds["answers"][g][0]
        out[g] = ids
    return out


def write_csv(path: Path, ranked: dict[str, list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        fh.write("gid,cite_gid\n")
        for g, ids in ranked.items():
            fh.write(f"{g},{' '.join(ids)}\n")
    return path


DEMO_TEAMS = ["Tokyo 🗼 team", "データ分析チーム", "<script>alert('x')</script>", "=HYPERLINK(\"http://evil\")",
              "mobilenet baseline"]


def demo_competition(root: Path, n_test: int = 200, now=None):
    """A competition with a few teams and varied scores (for pages and screenshots)."""
    from leaderboard import Competition

    ds = make_dataset(root / "data", n_test=n_test, n_cite=600, name="tmr-demo")
    kwargs = {"now": now} if now else {}
    comp, tokens = Competition.create(ds["host"], path=root / "competitions" / "tmr-demo", teams=DEMO_TEAMS,
                                      seed=7, deadline="2099-03-14T09:00Z", **kwargs)
    rng = random.Random(3)
    for k, (team, p_hit) in enumerate(zip(DEMO_TEAMS, (0.78, 0.71, 0.55, 0.33, 0.62))):
        for j in range(1 + k % 3):
            p = p_hit - 0.05 * j
            hits = {g: (rng.randint(1, 20) if rng.random() < p else None) for g in ds["test"]}
            path = write_csv(root / f"sub_{k}_{j}.csv", ranked_lists(ds, hits, seed=10 * k + j))
            comp.submit(path, team, note=f"try {j + 1}")
    return comp, tokens, ds


class Clock:
    """A clock the tests move by hand (Competition(now=clock))."""

    def __init__(self, start: str = "2025-03-03T10:00:00+00:00"):
        from datetime import datetime

        self.t = datetime.fromisoformat(start)

    def __call__(self):
        return self.t

    def advance(self, **kw) -> None:
        from datetime import timedelta

        self.t += timedelta(**kw)


def sub(ds, tmp_path, k: int) -> Path:
    """Submission k: a varied but deterministic ranking (about two thirds of the queries hit)."""
    hits = {g: (1 + (i + k) % 20 if (i + k) % 3 else None) for i, g in enumerate(ds["test"])}
    return write_csv(tmp_path / f"s{k}.csv", ranked_lists(ds, hits, seed=k))
