"""Augmentation of the 2nd place on batches of uint8 image tensors (torchvision.transforms.v2).

Images are decoded, trimmed, padded and resized once (see :mod:`tmr_lib.embed`), kept as a
uint8 tensor ``(N, 3, S, S)``, and augmented here batch by batch -- no PIL, no file reads.

* **weak**: RGB shift, to-gray, horizontal flip, random resized crop (0.7-1).
* **strong**: weak colour/flip + one of: Gaussian blur (+ RRC 0.7-1), zoom-out (Affine 0.6-1
  on white), random resized crop (0.4-1), or a **pseudo-logo** -- the mark shrunk beside or
  above random lines of Latin and Japanese text (IPAexGothic from ``matplotlib-fontja``).
* No vertical flip (it hurt the 2nd place).
* **test time**: the cached image (already trimmed and padded to a white square) zoomed out
  by Affine scale 0.9 on white, then normalised.

Optional additions (``Config.aug_extra``): ``"rot90"`` (random quarter turns) and
``"invert"`` (colour inversion) -- not in the 2nd place's recipe, switchable for experiments.

:func:`marks_augment` is the other family: the batched views the kit's checkpoint was
pretrained with (``tmr pretrain``), usable for fine-tuning with ``Config.augment = "marks"``.

    aug = BatchAugment(size=112)
    x = aug(batch_uint8, strong=True)          # uint8 (B, 3, 112, 112), new random draw per image
    inputs = normalize(x)                      # float, ImageNet mean/std
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "MEAN",
    "STD",
    "normalize",
    "RGBShift",
    "TextBank",
    "PseudoLogo",
    "weak_transform",
    "strong_transform",
    "BatchAugment",
    "marks_augment",
    "inference_transform",
    "pil_to_uint8",
]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
WHITE = 255


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float normalised with ImageNet mean/std (what timm models expect)."""
    x = batch.float().div_(255.0)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def pil_to_uint8(img) -> torch.Tensor:
    """A PIL RGB image -> uint8 tensor (3, H, W)."""
    return TF.pil_to_tensor(img.convert("RGB"))


def inference_transform(batch: torch.Tensor, scale: float = 0.9) -> torch.Tensor:
    """Test-time transform of trimmed, padded images: Affine zoom-out ``scale`` on white (uint8)."""
    if scale == 1.0:
        return batch
    return TF.affine(batch, angle=0.0, translate=[0, 0], scale=scale, shear=[0.0, 0.0],
                     interpolation=v2.InterpolationMode.BILINEAR, fill=WHITE)


class RGBShift(nn.Module):
    """Shift each colour channel by a random offset in [-limit, limit] (albumentations' RGBShift)."""

    def __init__(self, limit: int = 20, p: float = 0.5):
        super().__init__()
        self.limit, self.p = limit, p

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return img
        shift = torch.randint(-self.limit, self.limit + 1, (img.shape[-3], 1, 1), dtype=torch.int16)
        return (img.to(torch.int16) + shift).clamp_(0, 255).to(torch.uint8)


class RandomQuarterTurn(nn.Module):
    """Rotate by 0, 90, 180 or 270 degrees (for orientation-difference pairs)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return img
        return torch.rot90(img, k=random.randint(1, 3), dims=(-2, -1))


# ----------------------------------------------------------------------------------------
# Pseudo-logo: the mark beside random text
# ----------------------------------------------------------------------------------------
_LATIN_SYLLABLES = ["ka", "ri", "to", "mo", "na", "sa", "ke", "lu", "ven", "tor", "ex", "ia", "co",
                    "tech", "sun", "star", "ma", "ru", "shi", "ne", "ol", "ar", "in", "on", "del"]
_KANA = ("アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン"
         "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわん")
_KANJI = "日本商標株式会社山川田中東西南北大小新光明星空海花木金石工業食品電気技術研究所"


def _random_line(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:  # Latin words
        words = []
        for _ in range(rng.randint(1, 3)):
            w = "".join(rng.choice(_LATIN_SYLLABLES) for _ in range(rng.randint(1, 3)))
            words.append(w.upper() if rng.random() < 0.4 else w.capitalize())
        return " ".join(words)
    alphabet = _KANA + _KANJI if kind < 0.8 else _KANJI
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 7)))


class TextBank:
    """Lines of random Latin / Japanese text rendered once as ink masks (uint8, 0 = paper).

    Rendering with PIL is slow, so a few hundred lines are drawn at start-up and reused.
    """

    def __init__(self, n_lines: int = 256, height: int = 32, seed: int = 0):
        from PIL import Image, ImageDraw, ImageFont

        font = ImageFont.truetype(self.font_path(), size=int(height * 0.8))
        rng = random.Random(seed)
        self.lines: list[torch.Tensor] = []
        for _ in range(n_lines):
            text = _random_line(rng)
            left, top, right, bottom = font.getbbox(text)
            w = max(1, right - left + 4)
            img = Image.new("L", (w, height), 0)
            ImageDraw.Draw(img).text((2 - left, (height - (bottom - top)) // 2 - top), text, fill=255, font=font)
            self.lines.append(TF.pil_to_tensor(img))  # (1, height, w)

    @staticmethod
    def font_path() -> str:
        from matplotlib_fontja import get_font_ttf_path

        return str(get_font_ttf_path())

    def sample(self) -> torch.Tensor:
        return random.choice(self.lines)


class PseudoLogo(nn.Module):
    """The mark shrunk to 35-65 % and placed beside or above 1-3 lines of random text."""

    def __init__(self, text_bank: TextBank | None = None, scale: tuple[float, float] = (0.35, 0.65)):
        super().__init__()
        self.bank = text_bank or TextBank()
        self.scale = scale

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        c, h, w = img.shape
        s = int(min(h, w) * random.uniform(*self.scale))
        mark = F.interpolate(img[None].float(), size=(s, s), mode="bilinear", antialias=True,
                             align_corners=False)[0].round_().clamp_(0, 255).to(torch.uint8)
        canvas = torch.full_like(img, WHITE)
        beside = random.random() < 0.6
        n_lines = random.randint(1, 3)
        margin = max(1, h // 32)
        if beside:  # mark left (or right), text lines in the remaining width
            mark_left = random.random() < 0.75
            my = (h - s) // 2 + random.randint(-margin, margin)
            mx = margin if mark_left else w - s - margin
            canvas[:, max(0, my):max(0, my) + s, mx:mx + s] = mark[:, : h - max(0, my)]
            tx0 = mx + s + margin if mark_left else margin
            tw = (w - s - 3 * margin)
            line_h = max(4, min(h // (n_lines + 2), s // n_lines))
            ty = (h - n_lines * line_h) // 2
        else:  # mark on top, text lines below
            mx = (w - s) // 2
            my = margin
            canvas[:, my:my + s, mx:mx + s] = mark
            tx0, tw = margin, w - 2 * margin
            line_h = max(4, min((h - s - 2 * margin) // n_lines, h // 6))
            ty = my + s + margin
        colour = torch.tensor([0, 0, 0] if random.random() < 0.7 else
                              [random.randint(0, 160) for _ in range(c)], dtype=torch.float32).view(c, 1, 1)
        for i in range(n_lines):
            y = ty + i * line_h
            if line_h < 4 or tw < 4 or y + line_h > h:
                break
            line = self.bank.sample()
            lw = max(1, min(tw, int(line.shape[-1] * line_h / line.shape[-2])))
            ink = F.interpolate(line[None].float(), size=(line_h, lw), mode="bilinear", antialias=True,
                                align_corners=False)[0] / 255.0  # (1, line_h, lw) in [0, 1]
            region = canvas[:, y:y + line_h, tx0:tx0 + lw].float()
            ink = ink[:, : region.shape[-2], : region.shape[-1]]
            canvas[:, y:y + line_h, tx0:tx0 + lw] = (region * (1 - ink) + colour * ink).round().to(torch.uint8)
        return canvas


# ----------------------------------------------------------------------------------------
# The pipelines
# ----------------------------------------------------------------------------------------
def _extras(extra: Sequence[str]) -> list[nn.Module]:
    out: list[nn.Module] = []
    for name in extra:
        if name == "rot90":
            out.append(RandomQuarterTurn(p=0.3))
        elif name == "invert":
            out.append(v2.RandomInvert(p=0.2))
        else:
            raise ValueError(f"unknown extra augmentation {name!r}; choose from 'rot90', 'invert'")
    return out


def _colour_flip() -> list[nn.Module]:
    return [RGBShift(limit=20, p=0.5), v2.RandomGrayscale(p=0.2), v2.RandomHorizontalFlip(p=0.5)]


def weak_transform(size: int, extra: Sequence[str] = ()) -> v2.Compose:
    """RGBShift, ToGray, HFlip, RandomResizedCrop(0.7-1) -- one image (3, H, W) uint8 at a time."""
    return v2.Compose([
        *_colour_flip(),
        *_extras(extra),
        v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True),
    ])


def strong_transform(size: int, extra: Sequence[str] = (), text_bank: TextBank | None = None) -> v2.Compose:
    """Weak colour/flip, then one of blur / zoom-out / RRC(0.4-1) / pseudo-logo."""
    k = max(3, (size // 16) | 1)  # odd kernel that scales with the image
    return v2.Compose([
        *_colour_flip(),
        *_extras(extra),
        v2.RandomChoice([
            v2.Compose([v2.GaussianBlur(k, sigma=(0.5, 2.0)),
                        v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True)]),
            v2.Compose([v2.RandomAffine(degrees=0, translate=(0.1, 0.1), scale=(0.6, 1.0), fill=WHITE),
                        v2.Resize((size, size), antialias=True)]),
            v2.RandomResizedCrop(size, scale=(0.4, 1.0), antialias=True),
            v2.Compose([PseudoLogo(text_bank), v2.Resize((size, size), antialias=True)]),
        ]),
    ])


def marks_augment(x: torch.Tensor, out: int, generator: torch.Generator | None = None,
                  as_uint8: bool = True) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> (B, 3, out, out) views of marks, a new draw per image, all in a few kernels.

    The augmentation ``tmr pretrain`` taught the kit's checkpoint with (``Config.augment =
    "marks"`` fine-tunes with it too): geometry (zoom in 0.55-1 or out to 1.3, shift, small tilt,
    quarter turns, mirror) is one affine grid per image applied with ``grid_sample`` on white;
    colour is a per-image channel mix or permutation, gray, inversion; a few images are blurred.
    Returns uint8, or float in [0, 1] with ``as_uint8=False``.
    """
    B = x.shape[0]
    dev = x.device
    g = generator

    def U(lo, hi, n=B):
        return torch.rand(n, device=dev, generator=g) * (hi - lo) + lo

    zoom = torch.where(torch.rand(B, device=dev, generator=g) < 0.25, U(1.0, 1.3), U(0.55, 1.0))
    ang = U(-0.2, 0.2) + (torch.randint(0, 4, (B,), device=dev, generator=g) * (math.pi / 2)) * (
        torch.rand(B, device=dev, generator=g) < 0.25)
    flip = torch.where(torch.rand(B, device=dev, generator=g) < 0.5, -1.0, 1.0)
    tx, ty = U(-0.15, 0.15), U(-0.15, 0.15)
    cos, sin = torch.cos(ang) * zoom, torch.sin(ang) * zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    xf = x.float().div_(255.0)
    grid = F.affine_grid(theta, (B, 3, out, out), align_corners=False)
    y = F.grid_sample(xf - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1.0

    # colour: mix channels near identity or permute, gray, invert
    mix = torch.eye(3, device=dev).expand(B, 3, 3).clone()
    perm = torch.rand(B, device=dev, generator=g) < 0.3
    if perm.any():
        idx = torch.rand(int(perm.sum()), 3, device=dev, generator=g).argsort(dim=1)
        mix[perm] = torch.eye(3, device=dev)[idx]
    mix = mix + 0.15 * torch.randn(B, 3, 3, device=dev, generator=g)
    y = torch.einsum("bij,bjhw->bihw", mix, y - 1.0) + 1.0
    gray = torch.rand(B, device=dev, generator=g) < 0.2
    if gray.any():
        y[gray] = y[gray].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    inv = torch.rand(B, device=dev, generator=g) < 0.1
    if inv.any():
        y[inv] = 1.0 - y[inv]
    blur = torch.rand(B, device=dev, generator=g) < 0.2
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0], device=dev)
        k = (k[:, None] * k[None, :]) / 16.0
        y[blur] = F.conv2d(F.pad(y[blur], (1, 1, 1, 1), mode="replicate"), k.expand(3, 1, 3, 3), groups=3)
    y = y.clamp_(0.0, 1.0)
    return y.mul_(255.0).round_().to(torch.uint8) if as_uint8 else y


class BatchAugment:
    """Weak / strong augmentation of a uint8 batch ``(B, 3, S, S)`` with a new draw per image.

    torchvision's v2 transforms draw one set of random parameters per call, so each image
    of the batch goes through the pipeline on its own -- on small tensors this is cheap
    (thousands of images per second) compared with decoding files.
    """

    def __init__(self, size: int, extra: Sequence[str] = (), text_bank: TextBank | None = None):
        self.size = size
        self.bank = text_bank or TextBank()
        self.weak = weak_transform(size, extra)
        self.strong = strong_transform(size, extra, self.bank)

    def __call__(self, batch: torch.Tensor, strong: bool = False) -> torch.Tensor:
        t = self.strong if strong else self.weak
        return torch.stack([t(img) for img in batch])
