"""Missing, empty and undecodable images: found before any work, reported, stopped on or left out."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from tmr_lib.badimages import BadImage, BadImagesError, blank_image, read_report, scan_images, write_report
from tmr_lib.data import CompetitionError, label_groups, load_competition


@pytest.fixture()
def broken(ci_dataset, tmp_path):
    """A copy of the ci competition with three bad cites, each referenced by a train pair:
    one deleted, one emptied, one overwritten with garbage. Returns (root, {path: reason start})."""
    root = tmp_path / "comp"
    shutil.copytree(ci_dataset[0], root)
    train = pd.read_csv(root / "train.csv", dtype=str)
    cites = list(dict.fromkeys(train["cite_path"]))[:3]
    paths = [str(root / "cite_images" / c) for c in cites]
    (root / "cite_images" / cites[0]).unlink()
    (root / "cite_images" / cites[1]).write_bytes(b"")
    (root / "cite_images" / cites[2]).write_bytes(b"\x00garbage, not a JPEG" * 50)
    return root, dict(zip(paths, ["missing", "empty file", "undecodable"]))


def test_default_load_stops_listing_every_bad_image(broken):
    root, expected = broken
    with pytest.raises(BadImagesError) as e:
        load_competition(root)
    assert isinstance(e.value, CompetitionError)  # the CLI maps it to exit code 2
    msg = str(e.value)
    report = root.parent / ".tmr_cache" / "comp" / "bad_images.csv"  # beside the folder, never inside
    assert msg.startswith("3 bad image(s)") and str(report) in msg and "--skip-bad-images" in msg
    for path, reason in expected.items():
        assert f"{path}: {reason}" in msg
    assert "cite_v2.csv line " in msg
    assert e.value.report == report and len(e.value.bad) == 3
    rows = read_report(report)
    assert {r.path: r.reason.split(":")[0] for r in rows} == expected
    assert all(r.where.startswith("cite_v2.csv line ") for r in rows)
    assert pd.read_csv(report).columns.tolist() == ["path", "reason", "where"]
    assert not list((root.parent / ".tmr_cache").rglob("*.tmp"))  # written atomically

    # check_images=False keeps the old behaviour: no scan at all
    comp = load_competition(root, check_images=False)
    assert comp.bad_images == [] and comp.blank_paths == frozenset()


def test_skip_bad_images_leaves_them_out(broken, tmp_path):
    root, expected = broken
    test = pd.read_csv(root / "test.csv", dtype=str)
    missing_test = root / "apply_images" / test["path"][1]
    missing_test.unlink()
    before = load_competition(root, check_images=False)
    lines: list[str] = []
    report = tmp_path / "elsewhere" / "bad.csv"
    comp = load_competition(root, skip_bad_images=True, report=report, log=lines.append)

    bad_cites = set(expected)
    assert len(comp.cite) == len(before.cite) - 3 and not comp.cite["path"].isin(bad_cites).any()
    dropped = before.train["cite_path"].isin(bad_cites)
    assert dropped.any() and len(comp.train) == len(before.train) - dropped.sum()
    assert not comp.train["cite_path"].isin(bad_cites).any()
    assert (comp.train["label"].to_numpy() == label_groups(comp.train["gid"], comp.train["cite_gid"])).all()
    assert comp.train.index.equals(pd.RangeIndex(len(comp.train)))

    assert len(comp.test) == len(test)  # a submission must list every test gid
    assert comp.blank_paths == frozenset({str(missing_test)})
    assert {b.path for b in comp.bad_images} == bad_cites | {str(missing_test)}
    assert {r.path: r.where for r in read_report(report)}[str(missing_test)] == "test.csv line 3"
    assert lines == [f"left out 3 bad images; 1 bad test queries kept as blank white images (report: {report})"]


def test_scan_modes_and_workers(ci_dataset, tmp_path):
    good = next((ci_dataset[0] / "cite_images").rglob("*.jpg"))
    data = good.read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])  # header intact, scan data cut short
    (tmp_path / "junk.jpg").write_bytes(b"junk" * 10)
    (tmp_path / "empty.png").write_bytes(b"")
    items = [(str(p), f"line {i}") for i, p in enumerate(
        [good, tmp_path / "trunc.jpg", tmp_path / "junk.jpg", tmp_path / "empty.png", tmp_path / "gone.jpg"])]

    def reasons(**kw):
        return {b.path.rsplit("/", 1)[1]: b.reason.split(":")[0] for b in scan_images(items, **kw)}

    assert reasons(decode=False) == {"empty.png": "empty file", "gone.jpg": "missing"}
    verify = reasons()
    assert verify == {"junk.jpg": "undecodable", "empty.png": "empty file", "gone.jpg": "missing"}
    assert reasons(decode="load") == {**verify, "trunc.jpg": "undecodable"}  # verify passes a truncated JPEG
    assert scan_images(items, workers=2) == scan_images(items)
    first = scan_images(items)[0]
    assert first == BadImage(str(tmp_path / "junk.jpg"), first.reason, "line 2")
    assert first.reason == "undecodable: not an image file PIL can identify"
    with pytest.raises(ValueError, match="decode must be"):
        scan_images(items, decode="thorough")

    out = write_report(scan_images(items), tmp_path / "r" / "bad.csv")
    assert read_report(out) == scan_images(items) and not list(out.parent.glob("*.tmp"))


def test_blank_image_is_white_uint8():
    import torch

    img = blank_image(8)
    assert img.shape == (3, 8, 8) and img.dtype == torch.uint8 and bool((img == 255).all())


def test_cli_flag_and_exit_code(broken, tmp_path, capsys):
    from tmr_lib.cli import build_parser, main
    from tmr_lib.pipeline_cli import config_from_args

    parse = build_parser().parse_args
    assert config_from_args(parse(["train", "--preset", "ci", "--skip-bad-images"])).skip_bad_images is True
    assert config_from_args(parse(["predict", "--preset", "ci"])).skip_bad_images is False

    root, _ = broken
    rc = main(["predict", "--preset", "ci", "--quiet", "--data", str(root), "--model", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert rc == 2 and "3 bad image(s)" in err and "bad_images.csv" in err


def test_a_clean_scan_is_remembered_until_a_file_changes(ci_dataset, tmp_path):
    root = tmp_path / "comp"
    shutil.copytree(ci_dataset[0], root)
    load_competition(root)
    markers = list((root.parent / ".tmr_cache" / "comp").glob("clean-verify-*"))
    assert len(markers) == 1  # the next load of the same files only stats them
    load_competition(root)
    victim = next((root / "cite_images").rglob("*.jpg"))
    victim.write_bytes(b"\x00not a JPEG any more" * 40)  # new size and mtime: scanned again, and caught
    with pytest.raises(BadImagesError, match="1 bad image"):
        load_competition(root)
