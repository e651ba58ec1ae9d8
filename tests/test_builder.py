"""The dataset builder: real format, determinism, no leaks, real difficulty, clear errors."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tmr_lib import builder
from tmr_lib.builder import BUILD_PRESETS, BuildError, build_competition, category_counts
from tmr_lib.data import load_answers, load_competition
from tmr_lib.scenes import thumb_distance, thumbnail

PARTICIPANT_FILES = {"train.csv", "test.csv", "cite_v2.csv", "sample_submission.csv", "dataset.json",
                     "apply_images", "cite_images"}


def test_participant_folder_is_in_the_real_format(ci_dataset):
    out, host = ci_dataset
    assert {p.name for p in out.iterdir()} == PARTICIPANT_FILES
    heads = {name: (out / name).read_text(encoding="utf-8").splitlines()[0] for name in
             ("train.csv", "test.csv", "cite_v2.csv", "sample_submission.csv")}
    assert heads == {"train.csv": "gid,path,cite_gid,cite_path,category", "test.csv": "gid,path",
                     "cite_v2.csv": "gid,path", "sample_submission.csv": "gid,cite_gid"}
    test = pd.read_csv(out / "test.csv", dtype=str)
    assert all(p == f"{g}/{g}.jpg" for g, p in zip(test["gid"], test["path"]))
    assert all(len(g) == 10 and g.isdigit() for g in test["gid"])
    for g in test["gid"][:5]:
        with Image.open(out / "apply_images" / g / f"{g}.jpg") as im:
            assert im.format == "JPEG"
    sample = pd.read_csv(out / "sample_submission.csv", dtype=str)
    cites = set(pd.read_csv(out / "cite_v2.csv", dtype=str)["gid"])
    assert sample["gid"].tolist() == test["gid"].tolist()
    for row in sample["cite_gid"]:
        ids = row.split(" ")
        assert len(ids) == 20 and len(set(ids)) == 20 and set(ids) <= cites


def test_host_folder_holds_the_answers_apart(ci_dataset):
    out, host = ci_dataset
    assert host.parent == out.parent and host.name == out.name + "-host"
    assert not any(p.name.startswith("answers") for p in out.rglob("*"))
    meta = json.loads((host / "host.json").read_text())
    assert (host / meta["participant_dir"]).resolve() == out.resolve()
    ans = load_answers(host)
    cites = set(pd.read_csv(out / "cite_v2.csv", dtype=str)["gid"])
    assert all(set(a) <= cites for a in ans["cite_gids"])
    assert set(ans["category"]) <= {2, 3, 4, 5}
    assert (host / "contact_sheet.png").stat().st_size > 10_000


def test_nothing_in_the_participant_folder_reveals_an_answer(ci_dataset):
    out, host = ci_dataset
    ans = load_answers(host)
    # no test-query -> cite mapping is written anywhere in the participant folder
    text = "".join((out / n).read_text() for n in ("train.csv", "test.csv", "cite_v2.csv", "dataset.json"))
    for g, cs in zip(ans["gid"], ans["cite_gids"]):
        for c in cs:
            assert f"{g},{c}" not in text and f"{g}/{g}.jpg,{c}" not in text
    # ids are not ordered by pair: the rank of a query id says nothing about its cite's rank
    cites = sorted(pd.read_csv(out / "cite_v2.csv", dtype=str)["gid"])
    rank = {g: i for i, g in enumerate(cites)}
    q_rank = np.argsort(np.argsort(ans["gid"].to_numpy()))
    c_rank = np.array([rank[cs[0]] for cs in ans["cite_gids"]])
    rho = np.corrcoef(q_rank, c_rank)[0, 1]
    assert abs(rho) < 0.35, rho
    # every file and folder carries the same timestamp
    mtimes = {int(p.stat().st_mtime) for p in out.rglob("*")}
    assert mtimes == {builder.FILE_TIME}


def test_categories_in_the_real_proportions(ci_dataset):
    out, host = ci_dataset
    train = pd.read_csv(out / "train.csv", dtype=str).drop_duplicates("gid")
    ans = pd.read_csv(host / "answers.csv", dtype=str)
    cats = pd.concat([train["category"], ans["category"]]).astype(int)
    share = cats.value_counts(normalize=True)
    for c, p in builder.CATEGORY_SHARE.items():
        assert abs(share[c] - p) <= 0.05, (c, share[c])
    assert category_counts(1542) == {2: 463, 3: 755, 4: 247, 5: 77}


def test_database_images_are_unique_by_content(ci_competition):
    seen = {}
    for g, p in zip(ci_competition.cite["gid"], ci_competition.cite["path"]):
        with Image.open(p) as im:
            h = hashlib.sha1(im.convert("RGB").tobytes() + repr(im.size).encode()).hexdigest()
        assert h not in seen, (g, seen.get(h))
        seen[h] = g


def test_queries_are_not_trivially_identical_to_their_cites(ci_competition):
    t = ci_competition.train
    d = [thumb_distance(thumbnail(Image.open(a)), thumbnail(Image.open(c))) for a, c in zip(t["path"], t["cite_path"])]
    assert min(d) >= builder.MIN_QUERY_DISTANCE
    assert np.median(d) > 10


def test_several_cites_per_query_and_shared_cites(ci_competition):
    t = ci_competition.train
    assert (t.groupby("gid")["cite_gid"].nunique() > 1).any()  # a query with several correct cites
    assert (t.groupby("cite_gid")["gid"].nunique() > 1).any()  # several queries share a cite
    assert t["label"].nunique() < t["gid"].nunique()


def test_same_seed_same_bytes_other_seed_other_ids(ci_dataset, tmp_path):
    out, _ = ci_dataset
    again, _ = build_competition(tmp_path / "again", preset="ci", seed=0, workers=1, progress=False)
    for name in ("train.csv", "test.csv", "cite_v2.csv", "sample_submission.csv"):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    g = pd.read_csv(out / "test.csv", dtype=str)["gid"][0]
    assert (out / "apply_images" / g / f"{g}.jpg").read_bytes() == (again / "apply_images" / g / f"{g}.jpg").read_bytes()
    other, _ = build_competition(tmp_path / "other", preset="ci", seed=1, progress=False)
    a = set(pd.read_csv(out / "cite_v2.csv", dtype=str)["gid"])
    b = set(pd.read_csv(other / "cite_v2.csv", dtype=str)["gid"])
    assert len(a & b) == 0


def test_rebuild_is_a_no_op_and_another_dataset_is_refused(ci_dataset, tmp_path):
    out, host = ci_dataset
    before = (out / "train.csv").stat().st_mtime_ns
    assert build_competition(out, preset="ci", seed=0, progress=False) == (out, host)
    assert (out / "train.csv").stat().st_mtime_ns == before
    with pytest.raises(BuildError, match="already holds another dataset .*--force"):
        build_competition(out, preset="ci", seed=5, progress=False)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(BuildError, match="not a dataset built by the kit"):
        build_competition(stranger, preset="ci", progress=False)
    assert (stranger / "notes.txt").read_text() == "mine"


def test_ensure_dataset_rebuilds_a_folder_of_an_older_format(ci_dataset, tmp_path):
    """A v1 folder (queries could use marks the teaching start saw) is rebuilt, not silently reused."""
    import shutil

    out, host = ci_dataset
    old, old_host = tmp_path / "tmr-ci", tmp_path / "tmr-ci-host"
    shutil.copytree(out, old)
    shutil.copytree(host, old_host)
    assert builder.ensure_dataset("ci", old, progress=False) == (old.resolve(), old_host.resolve())  # reused
    meta = json.loads((old / "dataset.json").read_text())
    (old / "dataset.json").write_text(json.dumps({**meta, "format": "tmr-kit competition v1"}))
    builder.ensure_dataset("ci", old, progress=False)
    assert json.loads((old / "dataset.json").read_text())["format"] == builder.FORMAT
    assert (old / "train.csv").read_bytes() == (out / "train.csv").read_bytes()


def test_a_failed_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(builder, "_write_tables", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        build_competition(tmp_path / "half", preset="ci", workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def _user_marks(folder: Path, n: int = 12) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = Image.new("RGB", (90, 60), "white")
        colour = tuple(int(v) for v in rng.integers(0, 200, 3))
        x, y = int(rng.integers(5, 40)), int(rng.integers(5, 25))
        img.paste(colour, (x, y, x + 20 + i * 2, y + 25))
        img.paste((255, 255, 255), (x + 5, y + 5, x + 10, y + 10))
        img.save(folder / f"mark{i:02d}.png")
    (folder / "logo.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 50"><circle cx="25" cy="25" r="20" fill="#c00"/>'
        '<rect x="55" y="10" width="40" height="30" fill="#036"/></svg>')


def test_build_from_the_users_own_marks(tmp_path):
    marks = tmp_path / "marks"
    _user_marks(marks)
    tiny = replace(BUILD_PRESETS["ci"], name="tiny", n_cite=80, n_train_queries=30, n_test_queries=10, image_size=96)
    out, host = build_competition(tmp_path / "mine", preset=tiny, marks_dir=marks, workers=1, progress=False)
    comp = load_competition(out)
    assert len(comp.cite) >= 75 and len(comp.test) == 10
    assert json.loads((out / "dataset.json").read_text())["marks"] == str(marks.resolve())


def test_heldout_marks_build_draws_only_marks_pretraining_never_saw(tmp_path, monkeypatch):
    """--marks heldout: a competition of the marks held out of `tmr pretrain`, to judge fine-tuning on marks
    the starting weights never met."""
    from tmr_lib.marks import default_catalogue
    from tmr_lib.pretrain import split_marks

    seen = {}
    real = builder.make_plan

    def spy(spec, seed, n_refs, query_refs=None):
        seen["n_refs"] = n_refs
        return real(spec, seed, n_refs, query_refs)

    monkeypatch.setattr(builder, "make_plan", spy)
    tiny = replace(BUILD_PRESETS["ci"], name="tiny", n_cite=80, n_train_queries=30, n_test_queries=10, image_size=96)
    out, host = build_competition(tmp_path / "held", preset=tiny, marks="heldout", workers=1, progress=False)
    everything = default_catalogue()
    assert seen["n_refs"] == len(split_marks(everything)[1]) < len(everything) // 3
    assert json.loads((out / "dataset.json").read_text())["marks"] == "heldout"
    assert len(load_competition(out).test) == 10
    with pytest.raises(BuildError, match="give one of them"):
        build_competition(tmp_path / "x", preset=tiny, marks="heldout", marks_dir=tmp_path, progress=False)
    with pytest.raises(BuildError, match="unknown marks 'mine'"):
        build_competition(tmp_path / "y", preset=tiny, marks="mine", progress=False)


def test_queries_are_made_only_of_query_marks():
    """Every query (its cite and any mark it adds) is made of query marks, so the teaching start,
    pretrained on the other half, never saw a mark of any competition's queries; the split is by
    identity, so a subset (the held-out set) keeps each mark's side."""
    from tmr_lib import scenes
    from tmr_lib.marks import default_catalogue, query_mark, query_mark_indices
    from tmr_lib.pretrain import split_marks, teaching_marks

    refs = default_catalogue()
    q = query_mark_indices(refs)
    assert 0.4 < len(q) / len(refs) < 0.6
    held = [refs[i] for i in split_marks(refs)[1]]
    assert {r.name for r in (held[i] for i in query_mark_indices(held))} <= {refs[i].name for i in q}
    assert not any(query_mark(r) for r in teaching_marks(refs)) and len(teaching_marks(refs)) == len(refs) - len(q)
    plan = builder.make_plan(BUILD_PRESETS["ci"], 3, len(refs), q)
    allowed = set(q.tolist())
    for k, c in enumerate(plan.query_cite):
        cite = plan.cite_scene(int(c))
        assert {m["ref"] for m in cite["marks"]} <= allowed
        for attempt in range(2):
            scene, _, _ = scenes.derive_query(cite, int(plan.query_category[k]), builder._rng(3, 4, k, attempt),
                                              plan.query_refs)
            assert {m["ref"] for m in scene["marks"]} <= allowed
    assert any(not {m["ref"] for m in plan.cite_scene(i)["marks"]} <= allowed for i in range(plan.n_cite))
    with pytest.raises(BuildError, match="not enough cites made of query marks"):
        builder.make_plan(BUILD_PRESETS["ci"], 0, len(refs), q[:1])


def test_identical_drawings_are_redrawn_not_kept(tmp_path):
    """13 marks and 400 cites: the same mark, frame and colour come up again and again."""
    marks = tmp_path / "marks"
    _user_marks(marks)
    tiny = replace(BUILD_PRESETS["ci"], name="crowded", n_cite=400, n_train_queries=40, n_test_queries=20,
                   image_size=64)
    out, host = build_competition(tmp_path / "crowded", preset=tiny, marks_dir=marks, workers=1, progress=False)
    report = json.loads((host / "build_report.json").read_text())
    assert report["duplicates_redrawn"] > 0
    comp = load_competition(out)
    hashes = set()
    for p in comp.cite["path"]:
        with Image.open(p) as im:
            hashes.add(hashlib.sha1(im.convert("RGB").tobytes() + repr(im.size).encode()).hexdigest())
    assert len(hashes) == len(comp.cite) >= 390
    cites = set(comp.cite["gid"])
    assert all(set(a) <= cites for a in load_answers(host)["cite_gids"])


def test_users_marks_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no PNG, JPEG or SVG"):
        build_competition(tmp_path / "o1", preset="ci", marks_dir=empty, progress=False)
    marks = tmp_path / "marks"
    _user_marks(marks)
    (marks / "broken.png").write_bytes(b"\x89PNG garbage")
    (marks / "blank.png").write_bytes(b"")
    with pytest.raises(ValueError) as e:
        build_competition(tmp_path / "o2", preset="ci", marks_dir=marks, progress=False)
    assert "broken.png" in str(e.value) and "blank.png" in str(e.value)
    assert not (tmp_path / "o2").exists()


def test_cli_build_and_errors(tmp_path, ci_dataset):
    run = lambda *a: subprocess.run([sys.executable, "-m", "tmr_lib", *a], capture_output=True, text=True)
    r = run("data", "summary", str(ci_dataset[0]))
    assert r.returncode == 0 and "raw-pixel baseline Recall@20" in r.stdout
    r = run("data", "build", "--preset", "ci", "--out", str(ci_dataset[0]), "--seed", "3", "--quiet")
    assert r.returncode == 2 and "already holds another dataset" in r.stderr
    r = run("data", "build", "--preset", "nope")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = run("data", "build", "--size", "ci", "--out", str(ci_dataset[0]), "--quiet")  # the size's own name
    assert r.returncode == 0 and "already holds this dataset (size ci, seed 0)" in r.stdout
    r = run("data", "build", "--size", "gpu")  # a recipe is not a dataset size
    assert r.returncode == 2 and "invalid choice" in r.stderr
