"""Mark pretraining: honest held-out split, the pair pool, batched augmentation, resumable runs,
and the shipped checkpoint loading with no network."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tmr_lib import pretrain as P
from tmr_lib.marks import default_catalogue


@pytest.fixture(scope="module")
def refs():
    return default_catalogue()


def test_held_out_marks_include_a_whole_family_and_never_meet_the_pool(refs):
    train, held = P.split_marks(refs, seed=0)
    assert len(np.intersect1d(train, held)) == 0 and len(train) + len(held) == len(refs)
    fam = {i for i, r in enumerate(refs) if r.family == P.HOLDOUT_FAMILY}
    assert fam and fam <= set(held.tolist())
    assert 0.08 * len(refs) < len(held) - len(fam) < 0.12 * len(refs)
    assert (P.split_marks(refs, seed=0)[1] == held).all()


def test_pairs_are_deterministic_and_differ_between_views(refs):
    a1, b1, c1 = P.render_pair(refs[:300], 5, 64, seed=0)
    a2, b2, c2 = P.render_pair(refs[:300], 5, 64, seed=0)
    assert a1.shape == b1.shape == (64, 64, 3) and a1.dtype == np.uint8
    assert (a1 == a2).all() and (b1 == b2).all() and c1 == c2 in (2, 3, 4, 5)
    assert np.abs(a1.astype(int) - b1.astype(int)).mean() > 1


def test_batched_augmentation_draws_per_image_and_keeps_white_paper():
    x = torch.full((6, 3, 48, 48), 255, dtype=torch.uint8)
    x[:, :, 16:32, 16:32] = 0
    g = torch.Generator().manual_seed(0)
    y = P.augment_batch(x, 40, g)
    assert y.shape == (6, 3, 40, 40) and torch.isfinite(y).all()
    flat = y.flatten(1)
    assert not torch.allclose(flat[0], flat[1])  # a new draw per image
    corner = y[:, :, 0, 0].mean(dim=1)  # white paper stays paper (or ink after an inversion)
    assert (corner.abs() > 1.0).all()


def test_pretrain_runs_resumes_and_exports(tmp_path):
    from tmr_lib.encoder import build_encoder

    cfg = P.PretrainConfig(backbone="mobilenetv3_small_050", image_size=48, pool_size=56, n_pairs=64,
                           batch_pairs=8, max_steps=3, minutes=2, workers=1, embed_dim=64)
    ck = P.pretrain(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    first = torch.load(ck, weights_only=False)
    assert first["step"] == 3 and first["seen"] == 3 * 16
    cfg.max_steps = 5
    ck = P.pretrain(cfg, tmp_path / "run", resume=ck, progress=False, log=lambda *_: None)
    again = torch.load(ck, weights_only=False)
    assert again["step"] == 5 and len(again["history"]) >= len(first["history"])
    out = P.export_weights(ck, tmp_path / "w.safetensors")
    model, info = build_encoder("mobilenetv3_small_050", pretrained=str(out), embed_dim=64, image_size=48)
    assert "from" in str(info) and "random" not in str(info).lower().split(":")[0]
    sd = model.state_dict()
    key = next(k for k in sd if k.startswith("fc."))
    assert torch.allclose(sd[key].float(), again["model"][key].float(), atol=1e-2)


@pytest.mark.parametrize("name", ["tmr-marks", "tmr-teach"])
def test_the_shipped_checkpoints_load_offline_and_embed(name):
    """Both starts ship in the package: the domain start (tmr-marks) and the teaching start (tmr-teach)."""
    from tmr_lib.encoder import build_encoder
    from tmr_lib.weights import kit_weights_path

    path = kit_weights_path("mobilenetv3_large_100", name)
    assert 1e6 < path.stat().st_size < 25e6
    model, info = build_encoder("mobilenetv3_large_100", pretrained=name, embed_dim=512, image_size=112)
    assert name in str(info) and "random" not in str(info).lower()
    x = torch.rand(2, 3, 112, 112)
    model.eval()
    with torch.inference_mode():
        e = model(x)
    assert e.shape == (2, 512) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-4)
    with pytest.raises(FileNotFoundError, match=f"ships {name} weights for"):
        kit_weights_path("resnet18", name)
    with pytest.raises(FileNotFoundError, match="not 'tmr-other'"):
        kit_weights_path("mobilenetv3_large_100", "tmr-other")


def test_the_two_starts_are_different_weights():
    """The teaching start is not the domain start under another name."""
    from safetensors.torch import load_file

    from tmr_lib.weights import kit_weights_path

    a, b = (load_file(str(kit_weights_path("mobilenetv3_large_100", n))) for n in ("tmr-marks", "tmr-teach"))
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_heldout_command_scores_pixels_checkpoint_and_a_model(tmp_path, capsys):
    """`tmr heldout --model F`: one table, raw pixels below the checkpoint, and a model file holding the
    checkpoint's own weights scores exactly what the checkpoint scores."""
    from tmr_lib.cli import main
    from tmr_lib.encoder import build_encoder, save_encoder

    model, _ = build_encoder("mobilenetv3_large_100", pretrained="tmr-marks", image_size=112)
    path = save_encoder(model, tmp_path / "same.safetensors")
    assert main(["heldout", "--model", str(path), "--queries", "40", "--distractors", "40"]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        parts = line.split()
        for name in ("raw pixels", "tmr-marks checkpoint", str(path)):
            if line.startswith(name):
                rows[name] = [float(v) for v in parts[-6:] if v != "-"]
    assert len(rows) == 3, rows
    assert rows["tmr-marks checkpoint"] == rows[str(path)]
    assert rows["tmr-marks checkpoint"][0] > rows["raw pixels"][0] + 0.2
    assert main(["heldout", "--model", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------- the teaching start (issue 14)


def _big_f() -> torch.Tensor:
    x = torch.full((1, 3, 64, 64), 255, dtype=torch.uint8)
    x[:, :, 8:56, 8:26] = 0
    x[:, :, 8:22, 8:56] = 0
    x[:, :, 30:38, 8:42] = 0
    return x


def _layout(y: torch.Tensor) -> torch.Tensor:
    """Where the ink is, coarsely (4 x 4, centred, unit norm): what a turn or a mirror changes."""
    import torch.nn.functional as F

    f = F.adaptive_avg_pool2d(1 - y.float().mean(1, keepdim=True), 4).flatten(1)
    return F.normalize(f - f.mean(1, keepdim=True), dim=1)


def test_generic_views_never_turn_mirror_or_invert():
    """Each generic view of an asymmetric F stays nearer the F than its mirrors and quarter turns (the
    tmr-marks views do not: they teach orientation), and the paper stays white."""
    import torch.nn.functional as F

    from tmr_lib.augment import marks_augment

    x = _big_f()
    base = F.interpolate(x.float() / 255, size=48, mode="bilinear", antialias=True)
    others = [torch.flip(base, [3]), torch.flip(base, [2])] + [torch.rot90(base, k, [2, 3]) for k in (1, 2, 3)]

    def nearer_original(views: torch.Tensor) -> torch.Tensor:
        f = _layout(views)
        own = (f @ _layout(base).T)[:, 0]
        worst = torch.stack([(f @ _layout(o).T)[:, 0] for o in others], 1).max(1).values
        return own > worst

    views = P.generic_augment(x.expand(512, -1, -1, -1), 48, torch.Generator().manual_seed(0))
    assert views.shape == (512, 3, 48, 48) and views.min() >= 0 and views.max() <= 1
    assert nearer_original(views).all()
    dot = torch.full((1, 3, 64, 64), 255, dtype=torch.uint8)
    dot[:, :, 28:36, 28:36] = 0
    seen = P.generic_augment(dot.expand(256, -1, -1, -1), 48, torch.Generator().manual_seed(2))
    corners = seen[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners > 0.95).all() and (seen.amin(dim=(1, 2, 3)) < 0.7).all()  # paper stays paper, ink stays ink
    marks = marks_augment(x.expand(512, -1, -1, -1), 48, torch.Generator().manual_seed(0), as_uint8=False)
    assert nearer_original(marks).float().mean() < 0.8
    y = P.augment_batch(x.expand(4, -1, -1, -1), 40, torch.Generator().manual_seed(1), views="generic")
    assert y.shape == (4, 3, 40, 40) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="views must be"):
        P.augment_batch(x, 40, views="rot90")


def test_formula_batches_pair_two_instances_of_distinct_categories():
    data = torch.arange(6 * 4, dtype=torch.uint8).view(24, 1, 1, 1).expand(24, 1, 8, 8).contiguous()
    gen = torch.Generator().manual_seed(0)
    seen = []
    import tmr_lib.pretrain as PP

    PP_aug = PP.augment_batch
    try:
        PP.augment_batch = lambda x, out, g, views: x  # look at the rows picked, not the views
        x, y = next(PP._formula_batches(data, 4, 5, 8, gen, torch.device("cpu")))
        rows = x[:, 0, 0, 0].long()
        a, b = rows[:5], rows[5:]
        assert (a // 4 == b // 4).all() and (a != b).all()  # same formula, another instance
        assert len(set((a // 4).tolist())) == 5 and (y == torch.arange(5).repeat(2)).all()
        x, _ = next(PP._formula_batches(data, 4, 5, 8, gen, torch.device("cpu"), positives="instance"))
        seen = x[:, 0, 0, 0].long()
        assert (seen[:5] == seen[5:]).all()
    finally:
        PP.augment_batch = PP_aug


def test_formula_pretraining_runs_checkpoints_in_rounds_and_resumes(tmp_path, monkeypatch):
    """source="formula": 3 steps in rounds of 2 (two checkpoints), no mark catalogue opened, then resumed."""
    def no_marks(*a, **k):
        raise AssertionError("the formula source must not open the mark catalogue")

    monkeypatch.setattr(P, "default_catalogue", no_marks)
    cfg = P.PretrainConfig(backbone="mobilenetv3_small_050", image_size=40, pool_size=48, embed_dim=32,
                           source="formula", views="generic", n_categories=9, per_category=3, batch_pairs=6,
                           max_steps=3, checkpoint_steps=2, keep_every=2, minutes=2, threads=1, warmup_steps=2)
    lines: list[str] = []
    ck = P.pretrain(cfg, tmp_path / "run", progress=False, log=lines.append)
    first = torch.load(ck, weights_only=False)
    assert first["step"] == 3 and first["seen"] == 3 * 12
    assert sum(line.startswith("step ") for line in lines) == 2  # a checkpoint after each round
    assert (tmp_path / "run" / "formula-9x3-48-s0.npy").is_file() and (tmp_path / "run" / "history.json").is_file()
    assert torch.load(tmp_path / "run" / "step-2.pt", weights_only=False)["step"] == 2
    stem = first["model"]["backbone.conv_stem.weight"]  # gray data: the colour channels stay (nearly) tied
    assert (stem - stem.mean(1, keepdim=True)).abs().max() < 1e-2
    summary = __import__("json").loads((tmp_path / "run" / "pretrain_summary.json").read_text())
    assert summary["source"] == "formula" and summary["marks_used"] == 0
    cfg.max_steps = 5
    ck = P.pretrain(cfg, tmp_path / "run", resume=ck, progress=False, log=lines.append)
    again = torch.load(ck, weights_only=False)
    assert again["step"] == 5 and again["config"]["source"] == "formula"
    assert any("reusing" in line for line in lines) and any("resumed" in line for line in lines)
    model = P.load_start(ck)
    assert model.embed_dim == 32
    with pytest.raises(ValueError, match="source must be"):
        P.pretrain(P.PretrainConfig(source="imagenet", max_steps=1, backbone="mobilenetv3_small_050"),
                   tmp_path / "bad", progress=False, log=lambda *_: None)


def test_marks_source_draws_only_non_query_marks_alone(tmp_path, monkeypatch):
    """source="marks" (the teaching start): each non-query mark alone, two generic views of it attract."""
    from tmr_lib.marks import default_catalogue, query_mark

    few = [r for r in default_catalogue() if not query_mark(r)][:10]
    monkeypatch.setattr(P, "teaching_marks", lambda refs=None: few)
    cfg = P.PretrainConfig(backbone="mobilenetv3_small_050", image_size=40, pool_size=48, embed_dim=32,
                           source="marks", views="generic", batch_pairs=4, max_steps=2, checkpoint_steps=2,
                           minutes=2, threads=1, warmup_steps=1)
    P.pretrain(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    pool = np.load(tmp_path / "run" / "marks-10-48.npy")
    assert pool.shape == (10, 1, 48, 48) and (pool < 128).any() and (pool[:, :, 0, 0] > 200).all()  # ink on paper
    summary = __import__("json").loads((tmp_path / "run" / "pretrain_summary.json").read_text())
    assert summary["source"] == "marks" and summary["n_marks"] == 10 and summary["query_marks_used"] == 0


def test_pretrain_command_takes_the_teaching_start_options(tmp_path, monkeypatch):
    """`tmr pretrain --source formula --views generic --threads 1 ...` reaches PretrainConfig as given."""
    from tmr_lib import cli

    got = {}

    def fake(cfg, out, resume=None, pool_path=None, progress=True, log=print):
        got.update(cfg=cfg, out=out, progress=progress)
        return tmp_path / "last.pt"

    monkeypatch.setattr(P, "pretrain", fake)
    assert cli.main(["pretrain", "--source", "formula", "--views", "generic", "--positives", "instance",
                     "--threads", "1", "--checkpoint-steps", "50", "--keep-every", "100", "--n-categories", "7",
                     "--per-category", "5", "--image-size", "64", "--no-progress", "--out", str(tmp_path)]) == 0
    c = got["cfg"]
    assert (c.source, c.views, c.positives, c.threads, c.checkpoint_steps, c.keep_every) == (
        "formula", "generic", "instance", 1, 50, 100)
    assert (c.n_categories, c.per_category, c.image_size, got["progress"]) == (7, 5, 64, False)
    assert P.PretrainConfig().source == "scenes" and P.PretrainConfig().views == "marks"  # tmr-marks' recipe
