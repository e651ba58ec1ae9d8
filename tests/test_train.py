"""The training loop on the ci competition: history, best checkpoint, resume."""
import numpy as np
import pandas as pd
import pytest
import torch

from tmr_lib.config import get_config
from tmr_lib.train import PairBatches, lr_factor, train_encoder, validation_split


def test_lr_schedule_warms_up_then_decays():
    assert lr_factor(0.0, 0.1) == pytest.approx(0.01)
    assert lr_factor(0.05, 0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(1.0, 0.1) == pytest.approx(0.01)
    values = [lr_factor(p, 0.1) for p in np.linspace(0.1, 1, 20)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_validation_fold_holds_out_whole_labels(ci_competition):
    cfg = get_config("ci")
    tr, va = validation_split(ci_competition.train, cfg, 0)
    assert tr.sum() > 0 and va.sum() > 0 and not (tr & va).any()
    labels = ci_competition.train["label"]
    assert not set(labels[tr]) & set(labels[va])


def test_pair_batches_make_four_crops_per_pair():
    imgs = torch.full((6, 3, 40, 40), 255, dtype=torch.uint8)
    ds = PairBatches(imgs, 32, crops_per_pair=4)
    ds.set_plan([np.array([[0, 1, 0], [2, 3, 1], [-1, 4, 2]])])  # two pairs and one unannotated cite
    x, y = ds[0]
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist() == [0, 1, 2] * 4


def test_pair_batches_with_the_pretraining_views():
    """augment="marks": every crop is its own draw of the pretraining augmentation, uint8 like the other style."""
    torch.manual_seed(0)
    imgs = torch.full((5, 3, 40, 40), 255, dtype=torch.uint8)
    imgs[:, :, 10:30, 12:28] = torch.randint(0, 200, (5, 3, 20, 16), dtype=torch.uint8)
    ds = PairBatches(imgs, 32, crops_per_pair=4, style="marks")
    ds.set_plan([np.array([[0, 1, 0], [2, 3, 1], [-1, 4, 2]])])
    x, y = ds[0]
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist() == [0, 1, 2] * 4
    assert not torch.equal(x[:3], x[3:6])  # the two views of the apply image differ
    assert x.float().mean() > 150  # mostly white paper: zoom-outs pad with white, not black
    with pytest.raises(ValueError, match="unknown augmentation 'fancy'"):
        PairBatches(imgs, 32, style="fancy")


def test_train_writes_history_best_checkpoint_and_resumes(ci_competition, tmp_path):
    cfg = get_config("ci", epochs=2, xbm_start_epoch=1, extra_cite_pairs=16)
    r = train_encoder(cfg, ci_competition, tmp_path, fold=0, progress=False, log=lambda s: None)
    assert r.best_path.is_file() and (r.run_dir / "last.pt").is_file()
    hist = pd.read_csv(r.run_dir / "history.csv")
    assert list(hist["epoch"]) == [0, 1, 2]  # epoch 0: the starting weights, validated before training
    assert hist["loss"].iloc[1:].notna().all() and hist["val_recall"].notna().all()
    assert list(hist["xbm"]) == [False, False, True]  # CrossBatchMemory only after the warm-up
    assert 0 <= r.best_recall <= 1 and r.best_recall == pytest.approx(hist["val_recall"].max())
    assert (r.run_dir / "history.png").is_file()
    assert "tmr-teach" in str(r.weights) and r.images_per_s > 0  # the ci preset starts from the teaching start
    messages = []
    again = train_encoder(cfg, ci_competition, tmp_path, fold=0, progress=False, log=messages.append)
    assert any("resuming" in m for m in messages)
    assert again.best_recall == pytest.approx(r.best_recall)
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(again.model(x), r.model(x))


def test_a_fresh_run_killed_early_never_leaves_an_older_finished_checkpoint(ci_competition, tmp_path):
    """A run restarted with other settings writes its epoch-0 best.safetensors at once; killed then, the
    older finished last.pt must not survive beside it (a later resume would pair them: found in the ladder)."""
    cfg = get_config("ci", epochs=1)
    r = train_encoder(cfg, ci_competition, tmp_path, fold=0, progress=False, log=lambda s: None)
    assert (r.run_dir / "last.pt").is_file()

    class Killed(Exception):
        pass

    def kill(msg):
        if msg.startswith("[train] epoch 0"):
            raise Killed
    with pytest.raises(Killed):
        train_encoder(cfg.replace(lr=cfg.lr * 2), ci_competition, tmp_path, fold=0, progress=False, log=kill)
    assert not (r.run_dir / "last.pt").exists()


def test_fine_tuning_can_keep_batchnorm_statistics_and_early_layers(ci_competition, tmp_path):
    from tmr_lib.encoder import build_encoder

    cfg = get_config("ci", epochs=1, freeze_bn=True, freeze_layers=0.5, val_distractors=0)
    r = train_encoder(cfg, ci_competition, tmp_path, fold=None, progress=False, log=lambda s: None)
    start, _ = build_encoder(cfg.backbones[0], cfg.pretrained, cfg.embed_dim, cfg.pooling, cfg.image_size)
    before, after = start.state_dict(), r.model.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)  # BatchNorm statistics kept
    weights = [n for n, _ in start.backbone.named_parameters()]
    first, last = "backbone." + weights[0], "backbone." + weights[-1]
    assert torch.equal(before[first], after[first])  # the input side is frozen ...
    assert not torch.equal(before[last], after[last])  # ... the output side trains
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    with pytest.raises(ValueError, match="share of the backbone"):
        train_encoder(cfg.replace(freeze_layers=1.5), ci_competition, tmp_path / "bad", fold=None,
                      progress=False, log=lambda s: None)
