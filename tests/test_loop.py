"""tmr_lib.loop: the one training loop that fine-tuning and pretraining both run."""
from __future__ import annotations

import pytest
import torch

from tmr_lib import loop
from tmr_lib.loop import LoopState, Schedule, lr_factor, train_one_epoch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.nn.functional.normalize(self.fc(x.flatten(1)), dim=1)


def batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 4, generator=g), torch.arange(4).repeat(2)) for _ in range(n)]


def run(n=6, **kw):
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    from tmr_lib.losses import make_loss

    state = LoopState()
    stats = train_one_epoch(model, batches(n), make_loss("contrastive", 3, xbm_memory=0), opt,
                            kw.pop("schedule", Schedule(total_updates=n)), state, device=torch.device("cpu"),
                            prepare=lambda x: x, channels_last=False, **kw)
    return model, opt, state, stats


def test_schedule_warms_up_then_decays_by_steps_or_time():
    s = Schedule(total_updates=100, warmup=0.1)
    assert s.factor(0, 0) == pytest.approx(0.01) and s.factor(10, 0) == pytest.approx(1.0)
    assert s.factor(100, 0) == pytest.approx(0.01) and s.factor(55, 0) == pytest.approx(lr_factor(0.55, 0.1))
    timed = Schedule(total_updates=10**9, budget_s=60)
    assert timed.factor(1, 30) == pytest.approx(lr_factor(0.5, 0)) and timed.out_of_time(61)
    ramp = Schedule(total_updates=1000, warmup_updates=10, floor=0.02)
    assert ramp.factor(0, 0) == pytest.approx(0.1 * lr_factor(0, 0, 0.02)) and ramp.factor(10, 0) > 0.99


def test_one_epoch_steps_counts_and_sets_the_rate():
    _, opt, state, stats = run(6)
    assert state.updates == 6 and state.images_seen == 48 and stats.images == 48 and len(stats.losses) == 6
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * Schedule(6).factor(5, 0), rel=1e-3)
    assert not stats.out_of_time and stats.loss == pytest.approx(sum(stats.losses) / 6)


def test_accumulation_steps_the_optimiser_every_k_batches_and_at_the_end():
    _, _, state, _ = run(7, accum_steps=3)
    assert state.updates == 3  # after batches 3, 6 and the last one


def test_time_budget_and_max_steps_stop_the_epoch():
    _, _, state, stats = run(50, schedule=Schedule(total_updates=50, budget_s=1e-9))
    assert stats.out_of_time and state.updates == 1
    _, _, state, stats = run(50, max_steps=4)
    assert state.updates == 4 and not stats.out_of_time


def test_fine_tuning_and_pretraining_both_run_this_loop(monkeypatch, ci_competition, tmp_path):
    """The loop is shared: both callers go through loop.train_one_epoch (no second loop)."""
    from tmr_lib import pretrain as P
    from tmr_lib import train as T
    from tmr_lib.config import get_config

    calls = []
    real = loop.train_one_epoch

    def spy(*a, **kw):
        calls.append(kw.get("desc"))
        return real(*a, **kw)

    monkeypatch.setattr(T, "train_one_epoch", spy)
    monkeypatch.setattr(loop, "train_one_epoch", spy)
    cfg = get_config("ci", epochs=1, max_train_minutes=0.2, val_distractors=10, extra_cite_pairs=0)
    T.train_encoder(cfg, ci_competition, tmp_path / "ft", fold=0, progress=False, log=lambda *_: None)
    pc = P.PretrainConfig(backbone="mobilenetv3_small_050", image_size=32, pool_size=40, n_pairs=16,
                          batch_pairs=4, max_steps=2, minutes=1, workers=1, embed_dim=16)
    P.pretrain(pc, tmp_path / "pt", progress=False, log=lambda *_: None)
    assert calls[0].startswith("epoch 1/") and calls[-1].startswith("pretraining")
