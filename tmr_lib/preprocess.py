"""Image preprocessing shared by every stage: trim white margins, pad to square on white.

All solutions of the JPO competition trimmed white margins first (gray threshold 240), then
padded to a square on white, so that scale and position in the frame stop mattering.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

WHITE = (255, 255, 255)


#: the 2nd place's small-crop fallback (preprocess.py:84-115 of their code): a crop under 50 px on
#: its short side *and* under 10 % of the image's area is a speck, not the mark: keep the image
FALLBACK_SIDE, FALLBACK_AREA = 50, 0.10


def trim_margins(img: Image.Image, threshold: int = 240, fallback: bool = False) -> Image.Image:
    """Crop away the white border: keep the bounding box of pixels darker than `threshold`.

    An image with no such pixel (blank) is returned unchanged rather than cropped to nothing.
    ``fallback=True``: also unchanged when the crop is tiny (:data:`FALLBACK_SIDE`, :data:`FALLBACK_AREA`).
    """
    rgb = to_rgb(img)
    gray = np.asarray(rgb.convert("L"))
    ink = gray < threshold
    rows = np.flatnonzero(ink.any(axis=1))
    if rows.size == 0:
        return rgb
    cols = np.flatnonzero(ink.any(axis=0))
    w, h = int(cols[-1]) + 1 - int(cols[0]), int(rows[-1]) + 1 - int(rows[0])
    if fallback and min(w, h) < FALLBACK_SIDE and w * h < FALLBACK_AREA * gray.size:
        return rgb
    return rgb.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))


def pad_to_square(img: Image.Image, fill: int | tuple[int, int, int] = 255) -> Image.Image:
    """Centre the image on a square canvas filled with `fill` (white by default)."""
    rgb = to_rgb(img)
    w, h = rgb.size
    side = max(w, h)
    if w == h:
        return rgb
    colour = (fill,) * 3 if isinstance(fill, int) else tuple(fill)
    canvas = Image.new("RGB", (side, side), colour)
    canvas.paste(rgb, ((side - w) // 2, (side - h) // 2))
    return canvas


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB on white: transparent pixels become white (marks are drawn on paper, not on black)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def open_image(path: str | Path) -> Image.Image:
    """Open an image fully (so the file is closed) or raise a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}. Re-export it as PNG or JPEG.") from e


def load_mark(path: str | Path, size: int | None = None, threshold: int = 240,
              fallback: bool = False) -> Image.Image:
    """Read a mark the way every stage sees it: trimmed, padded to square, optionally resized."""
    return load_mark_image(open_image(path), size, threshold, fallback)


def load_mark_image(img: Image.Image, size: int | None = None, threshold: int = 240,
                    fallback: bool = False) -> Image.Image:
    """`load_mark` for an image already in memory."""
    img = pad_to_square(trim_margins(img, threshold, fallback))
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return img
