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


def test_the_shipped_checkpoint_loads_offline_and_embeds():
    from tmr_lib.encoder import build_encoder
    from tmr_lib.weights import kit_weights_path

    path = kit_weights_path("mobilenetv3_large_100")
    assert 1e6 < path.stat().st_size < 25e6
    model, info = build_encoder("mobilenetv3_large_100", pretrained="tmr-marks", embed_dim=512, image_size=112)
    assert "tmr-marks" in str(info)
    x = torch.rand(2, 3, 112, 112)
    model.eval()
    with torch.inference_mode():
        e = model(x)
    assert e.shape == (2, 512) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-4)
    with pytest.raises(FileNotFoundError, match="ships mark-pretrained weights for"):
        kit_weights_path("resnet18")


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
