"""Augmentation on uint8 batches: weak / strong (incl. pseudo-logo), test-time Affine 0.9."""
import random

import torch
from torchvision.transforms import v2

from tmr_lib.augment import (
    BatchAugment,
    PseudoLogo,
    TextBank,
    normalize,
    strong_transform,
    inference_transform,
    weak_transform,
)


def _marks(n=6, size=48):
    """Synthetic marks: a dark square of random colour on white."""
    x = torch.full((n, 3, size, size), 255, dtype=torch.uint8)
    for i in range(n):
        x[i, :, size // 4: 3 * size // 4, size // 3: 2 * size // 3] = torch.randint(0, 120, (3, 1, 1), dtype=torch.uint8)
    return x


def test_text_bank_renders_latin_and_japanese():
    bank = TextBank(n_lines=20, height=24, seed=0)
    assert len(bank.lines) == 20
    assert all(line.dtype == torch.uint8 and line.shape[0] == 1 and line.shape[1] == 24 for line in bank.lines)
    assert all(line.max() > 128 for line in bank.lines)  # every line has ink (no missing glyph boxes only)
    assert bank.font_path().endswith(".ttf")


def test_weak_and_strong_batches_keep_shape_and_dtype():
    random.seed(0)
    torch.manual_seed(0)
    aug = BatchAugment(40, text_bank=TextBank(n_lines=8))
    batch = _marks()
    for strong in (False, True):
        out = aug(batch, strong=strong)
        assert out.shape == (6, 3, 40, 40) and out.dtype == torch.uint8
    x = normalize(out)
    assert x.dtype == torch.float32 and x.shape == out.shape


def test_each_image_gets_its_own_random_draw():
    random.seed(1)
    torch.manual_seed(1)
    aug = BatchAugment(48, text_bank=TextBank(n_lines=8))
    same = _marks(1).repeat(8, 1, 1, 1)
    out = aug(same, strong=True)
    distinct = {tuple(o.flatten()[::97].tolist()) for o in out}
    assert len(distinct) > 4


def test_pseudo_logo_puts_the_mark_beside_text_on_white():
    random.seed(2)
    torch.manual_seed(2)
    mark = _marks(1, 64)[0]
    out = PseudoLogo(TextBank(n_lines=8))(mark)
    assert out.shape == mark.shape and out.dtype == torch.uint8
    ink = (out.float().mean(0) < 200)
    assert 0.02 < ink.float().mean() < 0.6  # something drawn, mostly white paper
    assert (out[:, 0, :] == 255).all() or (out[:, :, -1] == 255).all()


def test_no_vertical_flip_anywhere():
    for t in (weak_transform(32), strong_transform(32, text_bank=TextBank(n_lines=4))):
        text = repr(t)
        assert "VerticalFlip" not in text and "HorizontalFlip" in text
    assert not any(isinstance(m, v2.RandomVerticalFlip) for m in weak_transform(32).transforms)


def test_inference_transform_zooms_out_on_white():
    batch = torch.zeros(2, 3, 40, 40, dtype=torch.uint8)  # a black image fills the frame
    out = inference_transform(batch, 0.9)
    assert out.shape == batch.shape
    assert (out[:, :, 0, :] == 255).all() and (out[:, :, :, -1] == 255).all()  # white border appears
    assert (out[:, :, 20, 20] == 0).all()
    assert torch.equal(inference_transform(batch, 1.0), batch)
