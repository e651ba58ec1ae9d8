"""The competition loader, union-find labels, group folds and the white-margin trim."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tmr_lib.data import CompetitionError, group_kfold, label_groups, load_answers, load_competition
from tmr_lib.preprocess import load_mark, open_image, pad_to_square, trim_margins


def test_union_find_groups_a_hand_made_graph():
    # q1-c1, q2-c1 share a cite; q2-c2 links c2 in; q3-c3 alone; q4-c2 joins the first group
    # through c2 only; q5 has two cites of its own.
    gids = ["q1", "q2", "q2", "q3", "q4", "q5", "q5"]
    cites = ["c1", "c1", "c2", "c3", "c2", "c4", "c5"]
    labels = label_groups(gids, cites)
    assert labels.tolist() == [0, 0, 0, 1, 0, 2, 2]


def test_union_find_keeps_apply_and_cite_ids_apart():
    # The same digits as an apply id and as a cite id must not merge two groups.
    labels = label_groups(["100", "200"], ["200", "300"])
    assert labels[0] != labels[1]


def test_group_kfold_never_splits_a_label():
    df = pd.DataFrame({"label": np.repeat(np.arange(40), np.arange(40) % 3 + 1)})
    folds = group_kfold(df, n_splits=5, seed=1)
    assert set(folds) == set(range(5))
    for lab, f in df.assign(f=folds).groupby("label")["f"]:
        assert f.nunique() == 1, lab
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 3
    assert (group_kfold(df, 5, seed=1) == folds).all()


def test_trim_removes_white_margin_and_pad_makes_square():
    img = Image.new("RGB", (200, 120), "white")
    img.paste((0, 0, 0), (50, 30, 90, 100))  # a 40 x 70 black block
    img.paste((250, 250, 250), (0, 0, 10, 10))  # near-white noise above the 240 threshold
    trimmed = trim_margins(img)
    assert trimmed.size == (40, 70)
    sq = pad_to_square(trimmed)
    assert sq.size == (70, 70)
    arr = np.asarray(sq)
    assert arr[0, 0].tolist() == [255, 255, 255] and arr[35, 35].tolist() == [0, 0, 0]


def test_trim_leaves_a_blank_image_alone_and_handles_transparency():
    blank = Image.new("RGB", (30, 20), "white")
    assert trim_margins(blank).size == (30, 20)
    rgba = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    rgba.paste((10, 10, 10, 255), (20, 20, 30, 40))
    assert trim_margins(rgba).size == (10, 20)


def test_load_mark_and_unreadable_image(tmp_path):
    p = tmp_path / "m.png"
    img = Image.new("RGB", (64, 32), "white")
    img.paste((0, 0, 200), (8, 8, 24, 24))
    img.save(p)
    assert load_mark(p, size=48).size == (48, 48)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match="bad.jpg"):
        open_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        open_image(tmp_path / "missing.png")


def test_loader_reads_a_built_competition(ci_dataset, ci_competition):
    comp = ci_competition
    assert list(comp.train.columns) == ["gid", "path", "cite_gid", "cite_path", "category", "label"]
    assert comp.train["gid"].map(type).eq(str).all()
    assert all(p.startswith(str(comp.root)) for p in comp.test["path"])
    assert set(comp.train["category"]) == {2, 3, 4, 5}
    assert comp.summary()["cites"] == len(comp.cite)
    answers = load_answers(ci_dataset[1])
    assert set(answers["gid"]) == set(comp.test["gid"])
    assert all(isinstance(a, list) and a for a in answers["cite_gids"])


def _copy(ci_dataset, tmp_path):
    dst = tmp_path / "comp"
    shutil.copytree(ci_dataset[0], dst)
    return dst


def test_loader_errors_name_the_file_and_rows(ci_dataset, tmp_path):
    dst = _copy(ci_dataset, tmp_path)

    # missing column
    df = pd.read_csv(dst / "test.csv", dtype=str)
    df.rename(columns={"path": "file"}).to_csv(dst / "test.csv", index=False)
    with pytest.raises(CompetitionError, match=r"test.csv lacks column\(s\) \['path'\]"):
        load_competition(dst)
    df.to_csv(dst / "test.csv", index=False)

    # missing images are all listed, with their lines
    cite = pd.read_csv(dst / "cite_v2.csv", dtype=str)
    for g in cite["gid"][:3]:
        shutil.rmtree(dst / "cite_images" / g)
    with pytest.raises(CompetitionError) as e:
        load_competition(dst)
    msg = str(e.value)
    assert "3 image(s)" in msg or "image(s)" in msg
    for g in cite["gid"][:3]:
        assert g in msg
    assert "cite_v2.csv line 2" in msg
    load_competition(dst, check_images=False)  # the real data has empty folders: allowed

    # a bad category and a duplicate gid
    train = pd.read_csv(dst / "train.csv", dtype=str)
    train.loc[4, "category"] = "7"
    train.to_csv(dst / "train.csv", index=False)
    with pytest.raises(CompetitionError, match=r"line\(s\) 6 \('7'\)"):
        load_competition(dst, check_images=False)


def test_loader_errors_for_folders(tmp_path):
    with pytest.raises(CompetitionError, match="is not a folder"):
        load_competition(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompetitionError, match="train.csv is missing"):
        load_competition(tmp_path / "empty")
    with pytest.raises(CompetitionError, match="answers.csv is missing"):
        load_answers(tmp_path / "empty")


def test_loader_rejects_duplicate_ids_and_empty_values(ci_dataset, tmp_path):
    dst = _copy(ci_dataset, tmp_path)
    test = pd.read_csv(dst / "test.csv", dtype=str)
    pd.concat([test, test.iloc[[0]]]).to_csv(dst / "test.csv", index=False)
    with pytest.raises(CompetitionError, match="duplicate gid"):
        load_competition(dst, check_images=False)
    test.loc[2, "path"] = ""
    test.to_csv(dst / "test.csv", index=False)
    with pytest.raises(CompetitionError, match=r"empty values on line\(s\) 4"):
        load_competition(dst, check_images=False)
