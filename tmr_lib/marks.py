"""Where the kit's marks come from, and how one is drawn at any size.

Every source ships inside a PyPI package, so a dataset builds offline:
- Font Awesome Free SVGs (`fontawesomefree`; solid, regular and brand logos; CC BY 4.0),
  rasterised with `resvg-py`. The package holds each SVG twice (svgs/ and js-packages/): we read
  svgs/ only, and aliases with identical content are kept once.
- DejaVu Sans symbol glyphs shipped with matplotlib (arrows, geometric shapes, misc symbols,
  dingbats; DejaVu licence, a free Bitstream Vera derivative).
- Text: DejaVu Sans/Serif for Latin words and monograms, IPAexGothic from `matplotlib-fontja`
  for Japanese (IPA Font Licence).
- A user's own folder of marks (PNG, JPEG or SVG) instead of the above.

Marks are drawn from vectors at the size asked for, so a "redraw" is a real re-rendering, not a
resampled bitmap. A mark is returned as an RGBA image whose alpha is the ink.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Unicode blocks of DejaVu Sans that hold pictorial symbols (not letters).
GLYPH_BLOCKS: dict[str, tuple[int, int]] = {
    "arrows": (0x2190, 0x21FF),
    "geometric": (0x25A0, 0x25FF),
    "misc-symbols": (0x2600, 0x26FF),
    "dingbats": (0x2700, 0x27BF),
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg"}


@dataclass(frozen=True)
class MarkRef:
    """One base mark: where it comes from and which family it belongs to (for held-out splits)."""

    source: str  # "fontawesome", "dejavu" or "user"
    key: str  # SVG path, code point as hex, or image path
    family: str  # "fa-solid", "fa-regular", "fa-brands", "dejavu-arrows", ..., "user"
    name: str
    colour: bool = False  # True when the mark carries its own colours (user marks)


def font_path(name: str) -> str:
    """Absolute path of a font the kit ships through its dependencies."""
    if name == "ipaexg":
        import matplotlib_fontja

        return str(Path(matplotlib_fontja.__file__).parent / "fonts" / "ipaexg.ttf")
    import matplotlib

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{name}.ttf")


@lru_cache(maxsize=64)
def get_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(name), size)


def fontawesome_svg_dir() -> Path:
    import fontawesomefree

    return Path(fontawesomefree.__file__).parent / "static" / "fontawesomefree" / "svgs"


def fontawesome_marks() -> list[MarkRef]:
    """Font Awesome Free icons, one per distinct SVG content, in a stable order."""
    root = fontawesome_svg_dir()
    seen: set[str] = set()
    out = []
    for style in ("solid", "regular", "brands"):
        for p in sorted((root / style).glob("*.svg")):
            digest = hashlib.sha1(p.read_bytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            out.append(MarkRef("fontawesome", str(p), f"fa-{style}", f"fa-{style}/{p.stem}"))
    return out


def dejavu_marks() -> list[MarkRef]:
    """Symbol glyphs that DejaVu Sans actually draws (no blanks, no look-alike duplicates)."""
    from fontTools.ttLib import TTFont

    cmap = TTFont(font_path("DejaVuSans"), lazy=True).getBestCmap()
    out = []
    seen: set[bytes] = set()
    for block, (lo, hi) in GLYPH_BLOCKS.items():
        for cp in range(lo, hi + 1):
            if cp not in cmap:
                continue
            mask = _glyph_mask(cp, 48)
            if mask is None:
                continue
            digest = hashlib.sha1(np.asarray(mask).tobytes() + bytes(str(mask.size), "ascii")).digest()
            if digest in seen:
                continue
            seen.add(digest)
            out.append(MarkRef("dejavu", f"{cp:04X}", f"dejavu-{block}", f"U+{cp:04X}"))
    return out


def user_marks(folder: str | Path) -> list[MarkRef]:
    """A user's own marks: every PNG, JPEG or SVG under `folder` (recursively), sorted by path."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"--marks-dir {folder} is not a folder.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(
            f"--marks-dir {folder} holds no PNG, JPEG or SVG file; put one mark per image file there."
        )
    out, bad = [], []
    seen: set[str] = set()
    for p in files:
        try:
            render_ref(MarkRef("user", str(p), "user", p.stem, colour=True), 32)
        except Exception as e:  # noqa: BLE001 - every unreadable file is listed, not just the first
            bad.append(f"{p}: {e}")
            continue
        digest = hashlib.sha1(p.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            out.append(MarkRef("user", str(p), "user", str(p.relative_to(folder)), colour=True))
    if bad:
        raise ValueError(
            f"{len(bad)} file(s) in {folder} cannot be read as marks:\n  " + "\n  ".join(bad[:20])
            + "\nFix or remove them and build again."
        )
    return out


def default_catalogue() -> list[MarkRef]:
    """Every base mark the kit can obtain offline: Font Awesome, then DejaVu symbols."""
    return fontawesome_marks() + dejavu_marks()


#: share of every catalogue's marks that competition queries may use (the rest never appear in a query)
QUERY_SHARE = 0.5


def query_mark(ref: MarkRef) -> bool:
    """True when `ref` is one of the marks competition queries are made of.

    Why: the teaching start stands in for ImageNet, which never saw the competition's marks. So
    the builder makes every query (train and test) only from *query marks*, and the teaching start
    is pretrained only on the others. The split is a hash of the mark's identity, not of its place
    in a list, so it holds for every competition: any seed, any size, the held-out set (a subset of
    the catalogue keeps each mark's side), a user's folder."""
    digest = hashlib.sha1(f"{ref.source}:{ref.family}:{ref.name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < QUERY_SHARE


def query_mark_indices(refs: list[MarkRef]) -> np.ndarray:
    """Indices of the query marks of `refs` (:func:`query_mark`); for a small user folder whose hash
    split came out lopsided (under a quarter on one side), the lower-hash half by rank instead."""
    flags = np.array([query_mark(r) for r in refs], dtype=bool)
    if len(refs) and not (len(refs) / 4 <= flags.sum() <= 3 * len(refs) / 4):
        keys = [hashlib.sha1(f"{r.source}:{r.family}:{r.name}".encode()).digest() for r in refs]
        flags[:] = False
        flags[np.argsort(keys, kind="stable")[: max(1, int(round(len(refs) * QUERY_SHARE)))]] = True
    return np.flatnonzero(flags)


# --------------------------------------------------------------------------- drawing


def render_ref(ref: MarkRef, size: int, stroke: float = 0.0) -> Image.Image:
    """Draw `ref` so that its longer side is `size` px; RGBA, alpha = ink, tightly cropped.

    `stroke` thickens (>0) or thins (<0) the drawing by that fraction of `size`: the 'stroke
    jitter' of a redrawn mark.
    """
    size = max(int(size), 4)
    if ref.source == "fontawesome":
        img = _render_svg(ref.key, size, stroke)
    elif ref.source == "dejavu":
        mask = _glyph_mask(int(ref.key, 16), size)
        if mask is None:
            raise ValueError(f"glyph {ref.name} draws nothing")
        img = _mask_to_rgba(mask)
        img = _stroke(img, stroke, size)
    else:
        img = _render_user(ref.key, size)
        img = _stroke(img, stroke, size)
    return _crop_to_ink(img)


def _render_svg(path: str, size: int, stroke: float) -> Image.Image:
    import resvg_py

    sheet = None
    if stroke > 0:
        # Thicken the outline in SVG units: FA icons are drawn on a 512-unit grid.
        sheet = f"path {{ stroke: #000; stroke-width: {stroke * 512:.1f}px; stroke-linejoin: round; }}"
    png = resvg_py.svg_to_bytes(svg_path=path, width=size, style_sheet=sheet)
    img = Image.open(io.BytesIO(bytes(png)))
    img.load()
    img = img.convert("RGBA")
    if img.height > size:  # tall icons: fit the longer side
        png = resvg_py.svg_to_bytes(svg_path=path, height=size, style_sheet=sheet)
        img = Image.open(io.BytesIO(bytes(png)))
        img.load()
        img = img.convert("RGBA")
    if stroke < 0:
        img = _stroke(img, stroke, size)
    return img


def _glyph_mask(cp: int, size: int) -> Image.Image | None:
    font = get_font("DejaVuSans", size)
    ch = chr(cp)
    left, top, right, bottom = font.getbbox(ch)
    if right - left < 2 or bottom - top < 2:
        return None
    canvas = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), ch, fill=255, font=font)
    box = canvas.getbbox()
    if box is None:
        return None
    mask = canvas.crop(box)
    w, h = mask.size
    scale = size / max(w, h)
    if abs(scale - 1) > 0.05:
        mask = mask.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    return mask


@lru_cache(maxsize=256)
def _load_user_source(path: str) -> Image.Image:
    if path.lower().endswith(".svg"):
        import resvg_py

        png = resvg_py.svg_to_bytes(svg_path=path, width=512)
        img = Image.open(io.BytesIO(bytes(png)))
        img.load()
        return _crop_to_ink(img.convert("RGBA"))
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P"):
            rgba = im.convert("RGBA")
            if np.asarray(rgba.getchannel("A")).min() < 250:
                return _crop_to_ink(rgba)
            im = rgba.convert("RGB")
        rgb = np.asarray(im.convert("RGB")).astype(np.int32)
    # Ink = anything not near-white; keep the mark's own colours.
    alpha = np.clip((255 - rgb.min(axis=2)) * 255 // 48, 0, 255).astype(np.uint8)
    if alpha.max() == 0:
        raise ValueError("image is blank (all white)")
    rgba = np.dstack([rgb.astype(np.uint8), alpha])
    return _crop_to_ink(Image.fromarray(rgba, "RGBA"))


def _render_user(path: str, size: int) -> Image.Image:
    src = _load_user_source(path)
    w, h = src.size
    scale = size / max(w, h)
    return src.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)


def _mask_to_rgba(mask: Image.Image) -> Image.Image:
    img = Image.new("RGBA", mask.size, (0, 0, 0, 0))
    img.putalpha(mask)
    return img


def _stroke(img: Image.Image, stroke: float, size: int) -> Image.Image:
    """Dilate (stroke > 0) or erode (stroke < 0) the ink by about |stroke| * size pixels."""
    from PIL import ImageFilter

    px = int(round(abs(stroke) * size))
    if px < 1:
        return img
    k = 2 * px + 1
    alpha = img.getchannel("A")
    pad = px + 1
    big = Image.new("L", (alpha.width + 2 * pad, alpha.height + 2 * pad), 0)
    big.paste(alpha, (pad, pad))
    big = big.filter(ImageFilter.MaxFilter(k) if stroke > 0 else ImageFilter.MinFilter(k))
    rgb = img.convert("RGB")
    big_rgb = Image.new("RGB", big.size, rgb.getpixel((rgb.width // 2, rgb.height // 2)) if stroke > 0 else (0, 0, 0))
    big_rgb.paste(rgb, (pad, pad))
    out = big_rgb.convert("RGBA")
    out.putalpha(big)
    return out


def _crop_to_ink(img: Image.Image) -> Image.Image:
    box = img.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        raise ValueError("mark draws nothing")
    return img.crop(box)


def render_text(text: str, font: str, height: int) -> Image.Image:
    """A word set in `font`, RGBA black ink, cropped; `height` is the font size in px."""
    f = get_font(font, max(int(height), 6))
    left, top, right, bottom = f.getbbox(text)
    canvas = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(canvas).text((4 - left, 4 - top), text, fill=255, font=f)
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"font {font} draws nothing for {text!r}")
    return _mask_to_rgba(canvas.crop(box))


def cpu_count() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
