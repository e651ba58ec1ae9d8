"""Augmentation on batches of uint8 image tensors: the 2nd place's recipe exactly, and the kit's variant.

Images are decoded, trimmed, padded and resized once (see :mod:`tmr_lib.embed`), kept as a
uint8 tensor ``(N, 3, S, S)``, and augmented here batch by batch -- no file reads.

``recipe="2nd-place"`` (step for step as the 2nd place's code does it, docs/second-place.md;
``Config.augment = "2nd-place"``, the gpu preset):

* **weak**: Affine zoom-out 0.9 on white -> RandomResizedCrop(0.7-1) -> RGBShift (p 0.5) ->
  ToGray (p 0.5) -> HorizontalFlip (p 0.5).
* **strong**: the mark as trimmed (the cached square without its padding) -> RGBShift (0.5) ->
  ToGray (0.5) -> HorizontalFlip (0.5) -> exactly one of, 50/50: (a) the **pseudo-logo**
  (:class:`FontPseudoLogo`: a random AugLy font, 5-14 random glyphs of it, four layouts) then pad
  white, or (b) pad white -> Affine 0.9 -> one of Affine 0.6/0.7/0.8/0.9/1.0 -> RandomResizedCrop
  (0.4-1); then GaussianBlur (p 0.5, sigma 0.1-2) on either branch.

``recipe="kit"`` (the default here and of ``Config.augment``; the kit's own variant): weak =
RGBShift, ToGray (p 0.2), HFlip, RRC(0.7-1); strong = the same colour/flip, then one of four equal
branches: blur + RRC(0.7-1), zoom-out Affine 0.6-1 with translation, RRC(0.4-1), or a pseudo-logo
with one font (IPAexGothic, :class:`PseudoLogo`).

Neither has a vertical flip (it hurt the 2nd place). **Test time**: the cached image zoomed out by
Affine 0.9 on white (:func:`inference_transform`), then normalised.

Every random operation can record what it did (:class:`Trace`, off by default at no cost), so
that :mod:`tmr_lib.views` checks the recipe by measurement against :data:`DECLARED`.

Optional additions (``Config.aug_extra``): ``"rot90"`` (random quarter turns) and ``"invert"``
(colour inversion) -- in neither recipe, switchable for experiments.

:func:`marks_augment` is the other family: the batched views the kit's checkpoint was
pretrained with (``tmr pretrain``), usable for fine-tuning with ``Config.augment = "marks"``.

    aug = BatchAugment(size=112, recipe="2nd-place")
    x = aug(batch_uint8, strong=True)          # uint8 (B, 3, 112, 112), new random draw per image
    inputs = normalize(x)                      # float, ImageNet mean/std
"""
from __future__ import annotations

import importlib.util
import math
import pickle
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import RandomResizedCrop as _RRC
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "MEAN",
    "STD",
    "RECIPES",
    "DECLARED",
    "DECLARED_ZOOM",
    "DECLARED_LAYOUTS",
    "normalize",
    "Trace",
    "RGBShift",
    "RandomGray",
    "HorizontalFlip",
    "ZoomOut",
    "zoom_out",
    "Crop",
    "Blur",
    "TextBank",
    "PseudoLogo",
    "FontBank",
    "FontPseudoLogo",
    "EXCLUDED_FONTS",
    "augly_fonts",
    "default_font_bank",
    "font_glyphs",
    "unpad",
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
RECIPES = ("2nd-place", "kit")

#: What each recipe declares, per view: the share of views each random operation fires on.
#: ``crop a-b`` is a RandomResizedCrop keeping a share a-b of the area. tmr_lib.views measures these.
DECLARED: dict[str, dict[str, dict[str, float]]] = {
    "2nd-place": {
        "weak": {"rgb shift": 0.5, "gray": 0.5, "flip": 0.5, "pseudo-logo": 0.0, "blur": 0.0,
                 "zoom-out": 1.0, "crop 0.7-1": 1.0, "crop 0.4-1": 0.0},
        "strong": {"rgb shift": 0.5, "gray": 0.5, "flip": 0.5, "pseudo-logo": 0.5, "blur": 0.5,
                   "zoom-out": 0.5, "crop 0.7-1": 0.0, "crop 0.4-1": 0.5},
    },
    "kit": {
        "weak": {"rgb shift": 0.5, "gray": 0.2, "flip": 0.5, "pseudo-logo": 0.0, "blur": 0.0,
                 "zoom-out": 0.0, "crop 0.7-1": 1.0, "crop 0.4-1": 0.0},
        "strong": {"rgb shift": 0.5, "gray": 0.2, "flip": 0.5, "pseudo-logo": 0.25, "blur": 0.25,
                   "zoom-out": 0.25, "crop 0.7-1": 0.25, "crop 0.4-1": 0.25},
    },
}
#: The zoom-out's total scale where it fires: (mean, min, max). 2nd place: 0.9, or 0.9 x one of 0.6-1.0.
DECLARED_ZOOM: dict[str, dict[str, tuple[float, float, float]]] = {
    "2nd-place": {"weak": (0.9, 0.9, 0.9), "strong": (0.72, 0.54, 0.9)},
    "kit": {"strong": (0.8, 0.6, 1.0)},
}
#: The pseudo-logo's layouts, as shares of pseudo-logos: where the mark goes, the text beside it.
DECLARED_LAYOUTS: dict[str, dict[str, float]] = {
    "2nd-place": {"top": 0.35, "bottom": 0.15, "left": 0.25, "right": 0.25},
    "kit": {"top": 0.4, "bottom": 0.0, "left": 0.45, "right": 0.15},
}


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
    """Test-time transform of trimmed, padded images: Affine zoom-out ``scale`` on white (uint8).

    Uses :func:`zoom_out` (as cv2's warpAffine with a white border): torchvision's bilinear ``fill``
    drew a gray frame where the zoomed image ends (194 of 255 on a white 112 px image at 0.9) that no
    training view has. The embedding cache key carries :data:`INFERENCE_VERSION`, so vectors made
    with the old frame are not reused.
    """
    if scale == 1.0:
        return batch
    return zoom_out(batch, scale)


#: bumped when :func:`inference_transform` changes what the model sees (keys the embedding cache)
INFERENCE_VERSION = 2


# ----------------------------------------------------------------------------------------
# Recording what the random operations did
# ----------------------------------------------------------------------------------------
class Trace:
    """What every random operation did, view by view: ``views[i] = {"view": "weak", "gray": True, ...}``.

    Pass one to :class:`BatchAugment` (``trace=``) to check a recipe by measurement instead of by
    reading its code; without one the operations skip recording entirely.
    """

    def __init__(self) -> None:
        self.views: list[dict[str, Any]] = []

    def start(self, view: str) -> None:
        self.views.append({"view": view})

    def log(self, op: str, value: Any = True) -> None:
        if not self.views:
            self.start("")
        self.views[-1][op] = value

    def get(self, op: str, default: Any = None) -> Any:
        return self.views[-1].get(op, default) if self.views else default


class _Op(nn.Module):
    """A random operation that tells an optional :class:`Trace` when it fires and with what."""

    def __init__(self, trace: Trace | None = None):
        super().__init__()
        self.trace = trace

    def _log(self, op: str, value: Any = True) -> None:
        if self.trace is not None:
            self.trace.log(op, value)


class Chain(nn.Module):
    """Steps applied in order (like ``v2.Compose``, with the steps registered as sub-modules)."""

    def __init__(self, transforms: Sequence[nn.Module]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            img = t(img)
        return img


class OneOf(nn.Module):
    """Exactly one of the branches, chosen uniformly (albumentations' OneOf of equal ``p``)."""

    def __init__(self, branches: Sequence[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.branches[random.randrange(len(self.branches))](img)


# ----------------------------------------------------------------------------------------
# The operations
# ----------------------------------------------------------------------------------------
class RGBShift(_Op):
    """Shift each colour channel by a random offset in [-limit, limit] (albumentations' RGBShift)."""

    def __init__(self, limit: int = 20, p: float = 0.5, trace: Trace | None = None):
        super().__init__(trace)
        self.limit, self.p = limit, p

    def extra_repr(self) -> str:
        return f"limit={self.limit}, p={self.p}"

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return img
        shift = torch.randint(-self.limit, self.limit + 1, (img.shape[-3], 1, 1), dtype=torch.int16)
        if self.trace is not None:
            self._log("rgb shift", tuple(shift.flatten().tolist()))
        return (img.to(torch.int16) + shift).clamp_(0, 255).to(torch.uint8)


class RandomGray(_Op):
    """ToGray with probability ``p`` (ITU-R 601 luma, kept as three channels)."""

    def __init__(self, p: float, trace: Trace | None = None):
        super().__init__(trace)
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return img
        self._log("gray")
        return TF.rgb_to_grayscale(img, num_output_channels=img.shape[-3])


class HorizontalFlip(_Op):
    """Mirror left-right with probability ``p`` (there is no vertical flip: it hurt the 2nd place)."""

    def __init__(self, p: float = 0.5, trace: Trace | None = None):
        super().__init__(trace)
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return img
        self._log("flip")
        return img.flip(-1)


class RandomQuarterTurn(_Op):
    """Rotate by 0, 90, 180 or 270 degrees (for orientation-difference pairs)."""

    def __init__(self, p: float = 0.5, trace: Trace | None = None):
        super().__init__(trace)
        self.p = p

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return img
        k = random.randint(1, 3)
        self._log("rot90", k)
        return torch.rot90(img, k=k, dims=(-2, -1))


class RandomInvert(_Op):
    """Invert the colours with probability ``p``."""

    def __init__(self, p: float = 0.2, trace: Trace | None = None):
        super().__init__(trace)
        self.p = p

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return img
        self._log("invert")
        return 255 - img


def zoom_out(img: torch.Tensor, scale: float) -> torch.Tensor:
    """Affine zoom-out by ``scale`` on white, uint8 in and out, as cv2.warpAffine(borderValue=255) does.

    torchvision's ``fill=`` with bilinear interpolation weights the image's edge pixels by their
    coverage twice, which draws a gray frame (down to 201 of 255 at 0.9) where the zoomed image ends;
    sampling (image - 255) with zero padding and adding 255 back blends the edge with white once.
    """
    if scale == 1.0:
        return img
    x = TF.affine(img.float() - WHITE, angle=0.0, translate=[0, 0], scale=scale, shear=[0.0, 0.0],
                  interpolation=v2.InterpolationMode.BILINEAR)
    return (x + WHITE).round_().clamp_(0, 255).to(torch.uint8)


class ZoomOut(_Op):
    """Affine zoom-out on white by one of ``scales`` (one value: always that one).

    Chained zoom-outs multiply: the trace keeps the view's total scale under ``"zoom-out"``.
    """

    def __init__(self, scales: Sequence[float], trace: Trace | None = None):
        super().__init__(trace)
        self.scales = tuple(float(s) for s in scales)

    def extra_repr(self) -> str:
        return f"scales={self.scales}"

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        s = self.scales[0] if len(self.scales) == 1 else random.choice(self.scales)
        if self.trace is not None:
            self._log("zoom-out", self.trace.get("zoom-out", 1.0) * s)
        return zoom_out(img, s)


class ShiftZoom(_Op):
    """The kit's RandomAffine: zoom 0.6-1 and shift up to 10 % on white (nearest neighbour)."""

    def __init__(self, scale: tuple[float, float] = (0.6, 1.0), translate: float = 0.1, trace: Trace | None = None):
        super().__init__(trace)
        self.scale, self.translate = scale, translate

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        s = random.uniform(*self.scale)
        tx = int(round(random.uniform(-self.translate * w, self.translate * w)))
        ty = int(round(random.uniform(-self.translate * h, self.translate * h)))
        self._log("zoom-out", s)
        self._log("translate", (tx, ty))
        return TF.affine(img, angle=0.0, translate=[tx, ty], scale=s, shear=[0.0, 0.0],
                         interpolation=v2.InterpolationMode.NEAREST, fill=WHITE)


class Crop(_Op):
    """RandomResizedCrop(size, scale): torchvision's draw (area share and aspect 3/4-4/3, ten tries,
    else the whole image), as albumentations' copy of it; the trace gets the area share kept."""

    def __init__(self, size: int, scale: tuple[float, float], trace: Trace | None = None):
        super().__init__(trace)
        self.size, self.scale = size, (float(scale[0]), float(scale[1]))
        self.name = f"crop {self.scale[0]:g}-{self.scale[1]:g}"

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}"

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        i, j, h, w = _RRC.get_params(img, list(self.scale), [3 / 4, 4 / 3])
        self._log(self.name, h * w / (img.shape[-2] * img.shape[-1]))
        return TF.resized_crop(img, i, j, h, w, [self.size, self.size], antialias=True)


class Blur(_Op):
    """GaussianBlur with probability ``p``: an odd kernel from ``kernels``, sigma uniform in ``sigma``."""

    def __init__(self, kernels: Sequence[int], sigma: tuple[float, float], p: float = 1.0,
                 trace: Trace | None = None):
        super().__init__(trace)
        self.kernels, self.sigma, self.p = tuple(kernels), sigma, p

    def extra_repr(self) -> str:
        return f"kernels={self.kernels}, sigma={self.sigma}, p={self.p}"

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if self.p < 1.0 and random.random() >= self.p:
            return img
        k = random.choice(self.kernels)
        s = random.uniform(*self.sigma)
        self._log("blur", s)
        return TF.gaussian_blur(img, [k, k], [s, s])


class Resize(nn.Module):
    """Resize to a ``size`` square (antialiased); nothing to do at that size already."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if tuple(img.shape[-2:]) == (self.size, self.size):
            return img
        return TF.resize(img, [self.size, self.size], antialias=True)


def unpad(img: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """The cached square (3, S, S) without its white padding, longest side ``size`` (default S).

    The cache pads every trimmed mark to a square once; the 2nd place's strong view works on the
    trimmed mark as LongestMaxSize left it, so that RGBShift never tints the padding and the
    pseudo-logo shrinks the mark with its own aspect. The padding is pure white (255).
    """
    size = size or max(img.shape[-2:])
    ink = (img < WHITE).any(dim=0)
    rows, cols = torch.nonzero(ink.any(dim=1)).flatten(), torch.nonzero(ink.any(dim=0)).flatten()
    if rows.numel():
        img = img[:, int(rows[0]):int(rows[-1]) + 1, int(cols[0]):int(cols[-1]) + 1]
    return _fit_longest(img, size)


def _fit_longest(img: torch.Tensor, size: int) -> torch.Tensor:
    """LongestMaxSize(size): the longest side becomes ``size``, the aspect is kept."""
    h, w = img.shape[-2:]
    if max(h, w) == size:
        return img
    return TF.resize(img, [max(1, round(h * size / max(h, w))), max(1, round(w * size / max(h, w)))],
                     antialias=True)


class Unpad(nn.Module):
    """:func:`unpad` as a pipeline step."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return unpad(img, self.size)


class PadSquare(nn.Module):
    """PadIfNeeded(size, size) on white, centred (a larger image is resized down to the square)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        if max(h, w) > self.size:
            img = _fit_longest(img, self.size)
            h, w = img.shape[-2:]
        if (h, w) == (self.size, self.size):
            return img
        top, left = (self.size - h) // 2, (self.size - w) // 2
        return F.pad(img, (left, self.size - w - left, top, self.size - h - top), value=WHITE)


# ----------------------------------------------------------------------------------------
# The kit's pseudo-logo: the mark beside random Latin / Japanese text in one font
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

    The kit recipe's text. Rendering with PIL is slow, so a few hundred lines are drawn at
    start-up and reused.
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


def _ink_over(canvas: torch.Tensor, ink: torch.Tensor, y: int, x: int, colour: torch.Tensor) -> None:
    """Blend an ink mask (1, h, w) in [0, 1] into ``canvas`` at (y, x) in ``colour``, clipped to the canvas."""
    h, w = canvas.shape[-2:]
    if y >= h or x >= w:
        return
    ink = ink[:, : h - y, : w - x]
    region = canvas[:, y:y + ink.shape[-2], x:x + ink.shape[-1]].float()
    canvas[:, y:y + ink.shape[-2], x:x + ink.shape[-1]] = (region * (1 - ink) + colour * ink).round_().to(torch.uint8)


class PseudoLogo(_Op):
    """The kit's pseudo-logo: the mark shrunk to 35-65 % and placed beside or above 1-3 lines of random text."""

    def __init__(self, text_bank: TextBank | None = None, scale: tuple[float, float] = (0.35, 0.65),
                 trace: Trace | None = None):
        super().__init__(trace)
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
        self._log("pseudo-logo", ("left" if mark_left else "right") if beside else "top")
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
            _ink_over(canvas, ink, y, tx0, colour)
        return canvas


# ----------------------------------------------------------------------------------------
# The 2nd place's pseudo-logo: AugLy's fonts, random glyphs, four layouts
# ----------------------------------------------------------------------------------------
#: Fonts of AugLy's list the 2nd place left out (train_convnext.py, MakePadTextLogo's blacklist).
EXCLUDED_FONTS = ("TypeMyMusic", "PainttheSky-Regular")


def augly_fonts_dir() -> Path | None:
    """AugLy's bundled font folder, found without importing AugLy (its image API pins old Pillow)."""
    spec = importlib.util.find_spec("augly")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets" / "fonts"
    return folder if folder.is_dir() else None


def augly_fonts(folder: str | Path | None = None) -> list[Path]:
    """The fonts the 2nd place drew from: AugLy's font list in its order, less :data:`EXCLUDED_FONTS`.

    Files missing from the installed AugLy are skipped (1.0.0 lists PainttheSky-Regular without
    shipping it -- one reason to exclude it).
    """
    folder = Path(folder) if folder is not None else augly_fonts_dir()
    if folder is None:
        raise RuntimeError("the 2nd-place pseudo-logo draws AugLy's fonts: pip install augly")
    listing = folder / "list"
    names = ([Path(line.strip()).name for line in listing.read_text().splitlines() if line.strip()]
             if listing.is_file() else sorted(p.name for p in folder.glob("*.ttf")))
    return [folder / n for n in names if not any(x in n for x in EXCLUDED_FONTS) and (folder / n).is_file()]


class _CodePoints(pickle.Unpickler):
    """Unpickles plain data only: a glyph table is a list of ints, never an object to construct."""

    def find_class(self, module: str, name: str):  # noqa: ARG002
        raise pickle.UnpicklingError("a glyph table holds code points only")


def font_glyphs(path: str | Path) -> list[int]:
    """The font's own glyph table, as AugLy's overlay_text draws from it.

    AugLy ships ``<font>.pkl`` beside each font: the code points it renders (the cmap less
    duplicate and blank glyphs); read as plain data. Without it, the font's cmap (fontTools).
    """
    path = Path(path)
    pkl = path.with_suffix(".pkl")
    if pkl.is_file():
        try:
            with open(pkl, "rb") as f:
                chars = _CodePoints(f).load()
            if isinstance(chars, list) and chars and all(isinstance(c, int) for c in chars):
                return chars
        except (pickle.UnpicklingError, EOFError, ValueError):
            pass
    from fontTools.ttLib import TTFont, TTLibError

    try:
        with TTFont(str(path), lazy=True) as font:
            return sorted(font.getBestCmap() or {})
    except (TTLibError, AttributeError, KeyError) as e:  # not a font, or no cmap
        raise OSError(f"no glyph table in {path}: {e}") from e


class FontBank:
    """AugLy's fonts for :class:`FontPseudoLogo`: glyph tables and rendered lines, cached per font.

    Fonts are opened and lines rendered on first use (no start-up cost for 363 fonts). A line
    is ``n`` random glyphs of one font rendered once as an ink mask with ``height`` px fonts (the
    largest text the pseudo-logo draws) and scaled down when drawn smaller; ``variants`` lines per
    (font, length), at most ``max_lines`` kept, so text stays varied and memory bounded.
    """

    def __init__(self, height: int = 24, variants: int = 4, max_lines: int = 2048, seed: int = 0,
                 fonts: Sequence[str | Path] | None = None):
        self.fonts = [Path(f) for f in fonts] if fonts is not None else augly_fonts()
        if not self.fonts:
            raise RuntimeError("no fonts for the pseudo-logo")
        self.height, self.variants, self.max_lines, self.seed = height, variants, max_lines, seed
        self._glyphs: dict[int, list[int]] = {}
        self._faces: dict[int, Any] = {}
        self._lines: dict[tuple[int, int, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.fonts)

    def __getstate__(self) -> dict:  # FreeType faces do not pickle (DataLoader workers under spawn)
        return {**self.__dict__, "_faces": {}, "_lines": {}}

    def name(self, i: int) -> str:
        return self.fonts[i].stem

    def glyphs(self, i: int) -> list[int]:
        if i not in self._glyphs:
            self._glyphs[i] = font_glyphs(self.fonts[i])
        return self._glyphs[i]

    def face(self, i: int):
        """Font ``i`` at ``height`` px (PIL's basic layout: no shaping, as AugLy's PIL drew it)."""
        if i not in self._faces:
            from PIL import ImageFont

            self._faces[i] = ImageFont.truetype(str(self.fonts[i]), self.height,
                                                layout_engine=ImageFont.Layout.BASIC)
        return self._faces[i]

    def line(self, i: int, n: int, variant: int = 0) -> torch.Tensor:
        """Ink mask (1, h, w) uint8 of ``n`` random glyphs of font ``i``, top at the font's ascender.

        The glyphs depend only on (seed, font, n, variant), never on the global random state.
        Raises OSError (or ValueError) for a font PIL cannot use.
        """
        key = (i, n, variant)
        mask = self._lines.get(key)
        if mask is None:
            from PIL import Image, ImageDraw

            rng = random.Random(f"{self.seed}:{i}:{n}:{variant}")
            glyphs = self.glyphs(i)
            if not glyphs:
                raise OSError(f"{self.fonts[i].name} maps no characters")
            text = "".join(chr(rng.choice(glyphs)) for _ in range(n))
            font = self.face(i)
            ascent, descent = font.getmetrics()
            _, _, right, bottom = font.getbbox(text)
            img = Image.new("L", (max(1, int(right)), max(1, ascent + descent, int(bottom))), 0)
            ImageDraw.Draw(img).text((0, 0), text, fill=255, font=font)
            mask = TF.pil_to_tensor(img)
            if len(self._lines) >= self.max_lines:
                self._lines.pop(next(iter(self._lines)))
            self._lines[key] = mask
        return mask


_FONT_BANKS: dict[int, FontBank] = {}


def default_font_bank(size: int) -> FontBank:
    """One FontBank per image size, shared (its caches fill as training goes)."""
    height = max(1, int(size * 0.2))
    if height not in _FONT_BANKS:
        _FONT_BANKS[height] = FontBank(height=height)
    return _FONT_BANKS[height]


def _logo_layout(h: int, w: int, size: int) -> tuple[str, int, int, int, int, float, list[tuple[float, float, int]]]:
    """A random layout as MakePadTextLogo draws it: (name, mark h, mark w, mark top, mark left,
    font size as a share of the canvas, [(x, y, glyphs) per text line] with x, y shares of it)."""
    if random.random() < 0.5:  # "vertical": mark on top (70 %) or at the bottom
        top = random.random() > 0.3
        rate = random.random() * 0.3 + (0.5 if top else 0.3)
        rh, rw = max(1, int(h * rate)), max(1, int(w * rate))
        n = random.randrange(1, 3) if top else random.randrange(1, 4)
        offset = int(random.uniform(0, 0.2) * size)
        edge = (rh + offset) / size
        if top:
            fs = min((1 - edge) / n, 0.2)
            y0, mark_top = random.uniform(edge, 1 - fs * n), offset
        else:
            fs = min((1 - edge) / n * 0.8, 0.2)
            y0, mark_top = random.uniform(0, 1 - edge - fs * n), size - rh - offset
        lines = []
        for j in range(n):
            g = random.randrange(5, 15)
            lines.append((max(0.5 - g * 0.3 * fs, 0.0), y0 + j * fs, g))  # roughly centred
        return ("top" if top else "bottom"), rh, rw, mark_top, int((size - rw) / 2), fs, lines
    left = random.random() > 0.5  # "horizontal": mark left or right, text beside it
    rate = random.random() * 0.3 + 0.4
    rh, rw = max(1, int(h * rate)), max(1, int(w * rate))
    n = random.randrange(1, 3)
    fs = random.uniform(0.1, 0.2)
    y0 = random.uniform(0.3, 0.7 - fs * n)
    x = rw / size + 0.05 if left else 0.02
    lines = [(x, y0 + j * fs, random.randrange(5 if left else 10, 15)) for j in range(n)]
    return ("left" if left else "right"), rh, rw, int((size - rh) / 2), (0 if left else size - rw), fs, lines


class FontPseudoLogo(_Op):
    """The 2nd place's pseudo-logo (train_convnext.py, MakePadTextLogo), on uint8 tensors.

    A white ``size`` canvas (default: the input's longest side); a random AugLy font; 1-3 lines
    of 5-14 random glyphs of that font in black, font at most 0.2 of the canvas; the mark
    (the input, its aspect kept) scaled 0.3-0.8 on top (35 %), at the bottom (15 %), left (25 %)
    or right (25 %) of the text. A font failure (one PIL cannot use, or a font size that rounds
    to 0 px, which Pillow 8 refused) returns the input unchanged, as theirs did.
    """

    def __init__(self, bank: FontBank | None = None, size: int | None = None, trace: Trace | None = None):
        super().__init__(trace)
        self.bank = bank if bank is not None else default_font_bank(size or 112)
        self.size = size

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        size = self.size or max(img.shape[-2:])
        img = _fit_longest(img, size)  # the mark as LongestMaxSize(size) gives it
        c, h, w = img.shape
        font = random.randrange(len(self.bank))
        layout, rh, rw, top, left, fs, lines = _logo_layout(h, w, size)
        if self.trace is not None:
            self._log("pseudo-logo", layout)
            self._log("font", self.bank.name(font))
        variants = [random.randrange(self.bank.variants) for _ in lines]
        px = int(size * fs)
        try:
            if px <= 0:
                raise OSError("invalid ppem value")  # what FreeType said for a 0 px font
            inks = [self.bank.line(font, g, v) for (_, _, g), v in zip(lines, variants)]
        except (OSError, ValueError, RuntimeError):
            self._log("pseudo-logo failed")
            return img
        canvas = torch.full((c, size, size), WHITE, dtype=torch.uint8)
        black = torch.zeros(c, 1, 1)
        for (x, y, _), ink in zip(lines, inks):
            k = px / self.bank.height
            th, tw = max(1, round(ink.shape[-2] * k)), max(1, round(ink.shape[-1] * k))
            ink = F.interpolate(ink[None].float(), size=(th, tw), mode="bilinear", antialias=True,
                                align_corners=False)[0] / 255.0
            _ink_over(canvas, ink, int(y * size), int(x * size), black)
        mark = F.interpolate(img[None].float(), size=(rh, rw), mode="bicubic", antialias=True,
                             align_corners=False)[0].round_().clamp_(0, 255).to(torch.uint8)
        canvas[:, top:top + rh, left:left + rw] = mark[:, : size - top, : size - left]
        return canvas


# ----------------------------------------------------------------------------------------
# The pipelines
# ----------------------------------------------------------------------------------------
def _extras(extra: Sequence[str], trace: Trace | None = None) -> list[nn.Module]:
    out: list[nn.Module] = []
    for name in extra:
        if name == "rot90":
            out.append(RandomQuarterTurn(p=0.3, trace=trace))
        elif name == "invert":
            out.append(RandomInvert(p=0.2, trace=trace))
        else:
            raise ValueError(f"unknown extra augmentation {name!r}; choose from 'rot90', 'invert'")
    return out


def _check_recipe(recipe: str) -> None:
    if recipe not in RECIPES:
        raise ValueError(f"unknown augmentation recipe {recipe!r}; choose from {', '.join(RECIPES)}")


def _colour_flip(gray: float, trace: Trace | None) -> list[nn.Module]:
    return [RGBShift(limit=20, p=0.5, trace=trace), RandomGray(p=gray, trace=trace), HorizontalFlip(0.5, trace)]


def weak_transform(size: int, extra: Sequence[str] = (), recipe: str = "kit",
                   trace: Trace | None = None) -> Chain:
    """The weak view of one cached image (3, S, S) uint8 -> (3, size, size).

    2nd place: Affine 0.9 on white, RRC(0.7-1), RGBShift, ToGray (0.5), HFlip.
    kit: RGBShift, ToGray (0.2), HFlip, RRC(0.7-1) -- no zoom-out, so its training framing differs
    from the test-time Affine 0.9.
    """
    _check_recipe(recipe)
    if recipe == "kit":
        return Chain([*_colour_flip(0.2, trace), *_extras(extra, trace), Crop(size, (0.7, 1.0), trace)])
    return Chain([Resize(size), ZoomOut((0.9,), trace), Crop(size, (0.7, 1.0), trace),
                  *_colour_flip(0.5, trace), *_extras(extra, trace)])


def strong_transform(size: int, extra: Sequence[str] = (), text_bank: TextBank | FontBank | None = None,
                     recipe: str = "kit", trace: Trace | None = None) -> Chain:
    """The strong view of one cached image (3, S, S) uint8 -> (3, size, size).

    2nd place: the trimmed mark, RGBShift, ToGray (0.5), HFlip, then 50/50 the pseudo-logo (pad
    white) or pad -> Affine 0.9 -> Affine 0.6-1.0 -> RRC(0.4-1); then GaussianBlur (0.5).
    kit: colour/flip (gray 0.2), then one of blur + RRC(0.7-1), zoom-out 0.6-1 with translation,
    RRC(0.4-1), its one-font pseudo-logo.
    ``text_bank``: the pseudo-logo's text, a :class:`FontBank` for the 2nd place, a :class:`TextBank`
    for the kit; a bank of the other kind (or None) gets the recipe's default.
    """
    _check_recipe(recipe)
    if recipe == "kit":
        bank = text_bank if isinstance(text_bank, TextBank) else TextBank()
        k = max(3, (size // 16) | 1)  # odd kernel that scales with the image
        return Chain([*_colour_flip(0.2, trace), *_extras(extra, trace), OneOf([
            Chain([Blur((k,), (0.5, 2.0), 1.0, trace), Crop(size, (0.7, 1.0), trace)]),
            Chain([ShiftZoom((0.6, 1.0), 0.1, trace), Resize(size)]),
            Crop(size, (0.4, 1.0), trace),
            Chain([PseudoLogo(bank, trace=trace), Resize(size)]),
        ])])
    bank = text_bank if isinstance(text_bank, FontBank) else default_font_bank(size)
    return Chain([
        Unpad(size), *_colour_flip(0.5, trace), *_extras(extra, trace),
        OneOf([
            Chain([FontPseudoLogo(bank, size, trace), PadSquare(size)]),
            Chain([PadSquare(size), ZoomOut((0.9,), trace), ZoomOut((0.6, 0.7, 0.8, 0.9, 1.0), trace),
                   Crop(size, (0.4, 1.0), trace)]),
        ]),
        # albumentations' GaussianBlur(blur_limit=(3, 7)): randrange(3, 8), an even size rounded up
        Blur((3, 5, 5, 7, 7), (0.1, 2.0), 0.5, trace),
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

    Each image goes through the recipe's pipeline on its own (random parameters per image); on
    small tensors this is cheap compared with decoding files. ``trace``: a :class:`Trace` that
    gets one entry per view (``"weak"`` / ``"strong"``) with what every random operation did.
    """

    def __init__(self, size: int, extra: Sequence[str] = (), text_bank: TextBank | FontBank | None = None,
                 recipe: str = "kit", trace: Trace | None = None):
        _check_recipe(recipe)
        self.size, self.recipe, self.trace = size, recipe, trace
        if recipe == "kit":
            self.bank = text_bank if isinstance(text_bank, TextBank) else TextBank()
        else:
            self.bank = text_bank if isinstance(text_bank, FontBank) else default_font_bank(size)
        self.weak = weak_transform(size, extra, recipe, trace)
        self.strong = strong_transform(size, extra, self.bank, recipe, trace)

    def __call__(self, batch: torch.Tensor, strong: bool = False) -> torch.Tensor:
        t = self.strong if strong else self.weak
        if self.trace is None:
            return torch.stack([t(img) for img in batch])
        views = []
        for img in batch:
            self.trace.start("strong" if strong else "weak")
            views.append(t(img))
        return torch.stack(views)
