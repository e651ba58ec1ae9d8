"""The 2nd place's recipe as a method one switch away (Config.method="2nd-place"): each step as their
code does it, and the kit's better choices kept as the default with the original selectable."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tmr_lib.config import METHODS, get_config
from tmr_lib.data import fold_leak, group_kfold, label_groups, one_pass_labels, relabel, stratified_kfold
from tmr_lib.encoder import EnsembleEncoder, build_encoder, encoder_from_config, load_encoder, save_encoder
from tmr_lib.loop import Schedule
from tmr_lib.preprocess import trim_margins
from tmr_lib.train import Checkpoints, _build_schedule

BACKBONE = "mobilenetv3_small_050"


def test_the_method_switch_sets_every_step_together_and_keeps_the_scale():
    cpu = get_config("cpu")
    exact = get_config("cpu", method="2nd-place")
    for key, value in METHODS["2nd-place"].items():
        assert getattr(exact, key) == (tuple(value) if isinstance(value, list) else value), key
    assert (exact.backbones, exact.image_size, exact.epochs, exact.batch_pairs) == (
        cpu.backbones, cpu.image_size, cpu.epochs, cpu.batch_pairs)
    assert (exact.search_metric, exact.ensemble_normalize, exact.pp_recipe) == ("l2", False, "2nd-place")
    assert (exact.xbm_start_epoch, exact.warmup_epochs, exact.lr_schedule) == (0, 0.0, "epoch")
    # the kit's better choices stay, the originals one switch away
    assert (exact.fold_method, exact.keep_epoch, exact.labels) == ("group", "best", "union-find")
    later = get_config("cpu", method="2nd-place", fold_method="stratified", keep_epoch="last")
    assert (later.method, later.fold_method, later.keep_epoch) == ("2nd-place", "stratified", "last")
    back = exact.replace(method="kit")
    assert (back.search_metric, back.ensemble_normalize, back.augment) == ("ip", True, "kit")
    assert back.pp_recipe == "2nd-place"  # adopted by the kit: keeping the whole group measured better
    with pytest.raises(ValueError, match="unknown method"):
        get_config("cpu", method="3rd-place")
    with pytest.raises(ValueError, match="search_metric"):
        get_config("cpu", search_metric="cosine")


def test_gpu_preset_is_the_exact_method_with_the_head_per_backbone():
    gpu = get_config("gpu")
    assert gpu.method == "2nd-place" and gpu.augment == "2nd-place" and gpu.search_metric == "l2"
    swin, conv = (gpu.for_backbone(b) for b in gpu.backbones)
    assert (swin.head_bn, swin.head_bias) == (True, False)
    assert (conv.head_bn, conv.head_bias, conv.epochs, conv.batch_pairs) == (False, False, 10, 16)


def test_head_per_backbone_bn_present_or_absent_and_fc_bias(tmp_path):
    kit, _ = build_encoder(BACKBONE, embed_dim=16, image_size=64)
    assert isinstance(kit.bn, torch.nn.BatchNorm1d) and kit.fc.bias is not None
    convnext_like, _ = build_encoder(BACKBONE, embed_dim=16, image_size=64, head_bn=False, head_bias=False)
    assert isinstance(convnext_like.bn, torch.nn.Identity) and convnext_like.fc.bias is None
    assert not any(k.startswith("bn.") for k in convnext_like.state_dict())
    cfg = get_config("ci", backbones=(BACKBONE,), pretrained="random", head_bn=True, head_bias=False)
    swin_like, _ = encoder_from_config(cfg)
    assert isinstance(swin_like.bn, torch.nn.BatchNorm1d) and swin_like.fc.bias is None
    # the head survives saving and loading (the architecture travels in the file)
    again = load_encoder(save_encoder(convnext_like, tmp_path / "m.safetensors"))
    assert isinstance(again.bn, torch.nn.Identity) and again.fc.bias is None
    x = torch.rand(3, 3, 64, 64)
    assert torch.allclose(again(x), convnext_like.eval()(x), atol=1e-5)


def test_the_exact_ensemble_is_not_renormalised():
    a, _ = build_encoder(BACKBONE, embed_dim=8, image_size=64, seed=0)
    b, _ = build_encoder(BACKBONE, embed_dim=8, image_size=64, seed=1)
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        kit = EnsembleEncoder([[a, b], [a]]).eval()(x)
        exact = EnsembleEncoder([[a, b], [a]], normalize=False).eval()(x)
        mean = (a.eval()(x) + b.eval()(x)) / 2
    assert torch.allclose(kit.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(exact[:, :8], mean, atol=1e-6)  # the plain fold mean
    assert not torch.allclose(exact.norm(dim=1), torch.ones(4), atol=1e-3)  # concat left as it is


def test_one_pass_labels_are_not_transitive_and_union_find_is():
    # a-x, b-y, a-y join a and b; c-x joins c to a's old label only: union-find makes one group
    gids = ["z", "a", "b", "a", "c"]
    cites = ["w", "x", "y", "y", "x"]
    uf = label_groups(gids, cites)
    one = one_pass_labels(gids, cites)
    assert len(set(uf[1:])) == 1  # a, b, c all share cites: one group
    assert one[1] == one[2] == one[3] and one[4] != one[1]  # the sequential pass splits c off
    # their falsy test: label 0 counts as none, so row 0's group-mate starts a new label
    assert list(one_pass_labels(["q0", "q1"], ["c0", "c0"])) == [0, 1]
    assert len(set(label_groups(["q0", "q1"], ["c0", "c0"]))) == 1
    df = pd.DataFrame({"gid": gids, "cite_gid": cites, "label": uf})
    assert list(relabel(df, "one-pass")["label"]) == list(one)
    with pytest.raises(ValueError, match="one-pass"):
        relabel(df, "two-pass")


def test_stratified_folds_leak_group_mates_where_group_folds_do_not(ci_competition):
    train = ci_competition.train
    group = group_kfold(train, n_splits=3, seed=0)
    strat = stratified_kfold(train, n_splits=3, seed=0)
    assert fold_leak(train, group) == 0.0
    assert fold_leak(train, strat) > 0.0
    # stratified: every fold holds about its share of each category
    for cat, rows in train.groupby("category").groups.items():
        counts = np.bincount(strat[train.index.get_indexer(rows)], minlength=3)
        assert counts.max() - counts.min() <= 1, cat


def test_per_epoch_cosine_moves_once_per_epoch_to_the_2nd_places_values():
    cfg = get_config("cpu", method="2nd-place", epochs=4, max_train_minutes=None)
    s = _build_schedule(cfg, steps_per_epoch=10)
    factors = [s.factor(u, 0.0) for u in range(40)]
    for e in range(4):
        expected = 0.5 * (1 + math.cos(math.pi * e / 4))  # CosineAnnealingWarmRestarts(T_0=4), eta_min 0
        assert all(abs(f - expected) < 1e-9 for f in factors[10 * e:10 * (e + 1)]), e
    assert factors[0] == 1.0  # no warm-up
    kit = _build_schedule(get_config("cpu", epochs=4, max_train_minutes=None), steps_per_epoch=10)
    assert kit.factor(0, 0.0) < 0.2 and len({round(kit.factor(u, 0.0), 6) for u in range(10)}) == 10
    assert isinstance(s, Schedule)


def test_keep_last_keeps_the_last_epoch_even_when_an_earlier_one_scored_higher(tmp_path):
    model, info = build_encoder(BACKBONE, embed_dim=8, image_size=64)
    for keep, expected in (("best", 1), ("last", 3)):
        ck = Checkpoints(tmp_path / keep, get_config("ci", keep_epoch=keep), 0, info)
        (tmp_path / keep).mkdir()
        for epoch, recall in ((0, 0.5), (1, 0.9), (2, 0.7), (3, 0.6)):
            ck.record({"epoch": epoch, "loss": 1.0, "val_recall": recall, "val_mrr": 0.1}, model)
        assert ck.best_epoch == expected, keep


def test_trim_fallback_keeps_the_image_when_the_crop_is_a_speck():
    img = Image.new("RGB", (200, 200), "white")
    img.paste((0, 0, 0), (100, 100, 110, 110))  # a 10 px speck: 0.25 % of the area
    assert trim_margins(img).size == (10, 10)  # the kit crops to the speck
    assert trim_margins(img, fallback=True).size == (200, 200)  # the 2nd place keeps the image
    big = Image.new("RGB", (200, 200), "white")
    big.paste((0, 0, 0), (20, 20, 60, 180))  # 40 px wide but 160 px tall: a real crop either way
    assert trim_margins(big, fallback=True).size == (40, 160)


def test_the_test_time_zoom_out_draws_no_gray_frame():
    from tmr_lib.augment import inference_transform

    white = torch.full((2, 3, 112, 112), 255, dtype=torch.uint8)
    assert inference_transform(white, 0.9).min() == 255  # torchvision's fill= drew a 194 frame here
    black = torch.zeros((1, 3, 112, 112), dtype=torch.uint8)
    out = inference_transform(black, 0.9)
    assert out[0, :, 0, 0].tolist() == [255, 255, 255] and out[0, :, 56, 56].tolist() == [0, 0, 0]


def test_the_command_line_help_lists_every_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "tmr_lib", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for command in ("train", "predict", "demo", "pretrain", "views", "ablate", "contest"):
        assert command in out.stdout
