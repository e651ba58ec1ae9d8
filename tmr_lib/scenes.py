"""Trademark scenes: how a registered mark is composed, and how a query is derived from it.

A *scene* is a small dict (picklable, printable) that says what a trademark image holds: one or
two base marks, an optional word or monogram, a frame or a solid backdrop, colours and the
drawing's jitter. `render_scene` draws it; `derive_query` turns a cite's scene into an
application ("apply") scene of one of the four categories of the JPO competition:

2 酷似 near-identical   - a redraw: scale/position/stroke jitter, a small element added or
                          erased, a slight tilt or squash, a different font, low resolution
3 部分一致 partial       - the mark inside a larger composition, a part of a composite, the mark
                          with another word, or a cropped part of the mark
4 色彩相違 colour        - recoloured, inverted, reversed on a solid shape, or grayscale
5 向きの相違 orientation - rotated by 90/180/270 degrees and/or mirrored
"""
from __future__ import annotations

import copy
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from .marks import MarkRef, render_ref, render_text

PALETTE = {
    "black": (20, 20, 20),
    "navy": (24, 44, 110),
    "red": (200, 30, 40),
    "green": (20, 130, 60),
    "blue": (30, 100, 200),
    "orange": (235, 120, 20),
    "purple": (110, 40, 140),
    "teal": (0, 128, 128),
    "brown": (120, 70, 30),
    "gold": (190, 150, 20),
    "gray": (90, 90, 90),
    "magenta": (200, 30, 130),
}
COLOUR_NAMES = list(PALETTE)
COLOUR_WEIGHTS = np.array([0.5] + [0.5 / (len(PALETTE) - 1)] * (len(PALETTE) - 1))
LATIN_FONTS = ["DejaVuSans-Bold", "DejaVuSans", "DejaVuSerif-Bold", "DejaVuSerif", "DejaVuSans-Oblique"]
FRAMES = ["circle", "square", "rounded", "double-circle", "octagon"]
EXTRAS = ["dot", "star", "ring", "bar"]

KATAKANA = list("アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン")
KANJI_WORDS = [
    "日本", "東京", "大阪", "富士", "桜", "山田", "商事", "工業", "製作所", "食品", "電機", "薬品",
    "化学", "運輸", "建設", "農園", "酒造", "珈琲", "茶房", "本舗", "未来", "匠", "極", "旭", "鶴",
    "亀", "松竹", "梅", "龍", "虎", "鷹", "光", "星", "月", "花", "和", "森", "海", "空", "青葉",
]
LATIN_SYLLABLES = [
    "ka", "ro", "mi", "ne", "ta", "su", "vo", "li", "ra", "po", "zen", "tek", "lux", "mar", "nova",
    "sol", "tri", "ax", "on", "el", "ki", "do", "ve", "ri", "sa", "to", "qu", "ber", "lin", "ox",
]


def pick_colour(rng: np.random.Generator) -> str:
    return str(rng.choice(COLOUR_NAMES, p=COLOUR_WEIGHTS))


def random_word(rng: np.random.Generator) -> dict:
    """A brand-like word: Latin (60%) or Japanese katakana/kanji (40%), with its font."""
    if rng.random() < 0.6:
        n = int(rng.integers(2, 4))
        word = "".join(rng.choice(LATIN_SYLLABLES, n))
        word = word.upper() if rng.random() < 0.5 else word.capitalize()
        return {"text": word, "font": str(rng.choice(LATIN_FONTS))}
    if rng.random() < 0.5:
        word = "".join(rng.choice(KATAKANA, int(rng.integers(2, 5))))
    else:
        word = "".join(rng.choice(KANJI_WORDS, int(rng.integers(1, 3))))
    return {"text": word, "font": "ipaexg"}


def random_monogram(rng: np.random.Generator) -> dict:
    letters = "".join(rng.choice(list("ABCDEFGHIJKLMNOPRSTUVWXYZ"), int(rng.integers(1, 4))))
    return {"text": letters, "font": str(rng.choice(["DejaVuSerif-Bold", "DejaVuSans-Bold"]))}


def pick_ref(rng: np.random.Generator, pool) -> int:
    """A random base mark: any of `pool` marks (an int), or one of the indices in `pool` (an array)."""
    if isinstance(pool, (int, np.integer)):
        return int(rng.integers(pool))
    return int(pool[int(rng.integers(len(pool)))])


def new_mark(ref: int, rng: np.random.Generator) -> dict:
    return {"ref": int(ref), "rot": 0, "flip": False, "stroke": 0.0}


def random_scene(rng: np.random.Generator, n_refs: int, layout: str, ref: int | None = None) -> dict:
    """A registered mark of the given layout; `ref` fixes the main base mark."""
    main = int(rng.integers(n_refs)) if ref is None else int(ref)
    scene = {
        "layout": layout,
        "marks": [new_mark(main, rng)],
        "text": None,
        "text_pos": str(rng.choice(["below", "right"])),
        "frame": None,
        "backdrop": None,
        "colour": pick_colour(rng),
        "text_colour": None,
        "scale": float(rng.uniform(0.82, 0.95)),
        "dx": 0.0,
        "dy": 0.0,
        "extra": None,
    }
    if layout == "framed":
        scene["frame"] = str(rng.choice(FRAMES))
    elif layout == "wordmark":
        scene["text"] = random_word(rng)
    elif layout == "monogram":
        scene["text"] = random_monogram(rng)
    elif layout == "pair":
        scene["marks"].append(new_mark(int(rng.integers(n_refs)), rng))
    elif layout == "reversed":
        scene["backdrop"] = str(rng.choice(["circle", "square", "rounded"]))
    elif layout == "emblem":
        scene["frame"] = str(rng.choice(FRAMES))
        scene["text"] = random_word(rng)
        scene["text_pos"] = "below"
    elif layout == "text":
        scene["marks"] = []
        scene["text"] = random_word(rng)
        if rng.random() < 0.3:
            scene["frame"] = str(rng.choice(["square", "rounded"]))
    if scene["text"] is not None and rng.random() < 0.35:
        scene["text_colour"] = pick_colour(rng)
    return scene


LAYOUTS = ["single", "framed", "wordmark", "monogram", "pair", "reversed", "emblem", "text"]
LAYOUT_WEIGHTS = np.array([0.30, 0.11, 0.22, 0.07, 0.11, 0.08, 0.06, 0.05])


# --------------------------------------------------------------------------- rendering


def _boxes(scene: dict) -> list[tuple[str, int, tuple[float, float, float, float]]]:
    """Element boxes (cx, cy, w, h) in unit coordinates: ('mark', i, box) or ('text', 0, box)."""
    s = scene["scale"]
    inner = 0.62 if (scene["frame"] or scene["backdrop"]) else 1.0
    marks = scene["marks"]
    has_text = scene["text"] is not None
    out = []
    if not marks:
        out.append(("text", 0, (0.5, 0.5, 0.9 * s * inner, 0.4 * s)))
    elif has_text and scene["text_pos"] == "right":
        n = len(marks)
        for i in range(n):
            out.append(("mark", i, (0.2 + 0.3 * i, 0.5, 0.3 * s, 0.3 * s)))
        out.append(("text", 0, (0.2 + 0.3 * n + 0.22, 0.5, 0.45 * s, 0.18 * s)))
    elif has_text:
        n = len(marks)
        w = 0.55 * s * inner / n
        for i in range(n):
            out.append(("mark", i, (0.5 + (i - (n - 1) / 2) * w * 1.1, 0.40, w, 0.55 * s * inner)))
        out.append(("text", 0, (0.5, 0.80 if not scene["frame"] else 0.70, 0.7 * s * inner, 0.13 * s)))
    else:
        n = len(marks)
        w = s * inner / n
        for i in range(n):
            out.append(("mark", i, (0.5 + (i - (n - 1) / 2) * w, 0.5, w * 0.92, s * inner)))
    return [(k, i, (cx + scene["dx"], cy + scene["dy"], w, h)) for k, i, (cx, cy, w, h) in out]


def _tint(img: Image.Image, rgb: tuple[int, int, int], ref: MarkRef | None) -> Image.Image:
    if ref is not None and ref.colour:
        return img  # a user's colour mark keeps its colours unless the scene recolours it
    out = Image.new("RGBA", img.size, rgb + (0,))
    out.putalpha(img.getchannel("A"))
    return out


def _fit(img: Image.Image, w: int, h: int) -> Image.Image:
    scale = min(w / img.width, h / img.height)
    if abs(scale - 1) < 0.02:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, fill=None, outline=None, width=0):
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    elif shape == "square":
        draw.rectangle(box, fill=fill, outline=outline, width=width)
    elif shape == "rounded":
        draw.rounded_rectangle(box, radius=(x1 - x0) // 6, fill=fill, outline=outline, width=width)
    elif shape == "double-circle":
        draw.ellipse(box, fill=fill, outline=outline, width=max(1, width // 2))
        g = width * 2
        draw.ellipse((x0 + g, y0 + g, x1 - g, y1 - g), outline=outline, width=max(1, width // 2))
    elif shape == "octagon":
        r = (x1 - x0) / 2
        draw.regular_polygon(((x0 + x1) / 2, (y0 + y1) / 2, r), 8, rotation=22.5, fill=fill, outline=outline, width=width)
    else:
        raise ValueError(f"unknown shape {shape}")


def render_scene(scene: dict, refs: list[MarkRef], size: int) -> Image.Image:
    """Draw a scene on a white square canvas of `size` px (before image-level ops)."""
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    colour = PALETTE[scene["colour"]]
    ink = colour
    if scene["backdrop"]:
        m = int(size * 0.06)
        _draw_shape(draw, scene["backdrop"], (m, m, size - m, size - m), fill=colour)
        ink = (255, 255, 255)
    if scene["frame"]:
        m = int(size * 0.05)
        _draw_shape(draw, scene["frame"], (m, m, size - m, size - m), outline=colour, width=max(2, size // 40))
    for kind, i, (cx, cy, w, h) in _boxes(scene):
        bw, bh = max(4, int(w * size)), max(4, int(h * size))
        if kind == "mark":
            m = scene["marks"][i]
            ref = refs[m["ref"]]
            img = render_ref(ref, max(bw, bh), stroke=m["stroke"])
            if m["flip"]:
                img = ImageOps.mirror(img)
            if m["rot"]:
                img = img.rotate(-m["rot"], expand=True)  # PIL rotates counter-clockwise
            if ref.colour and m.get("hue"):
                img = _shift_hue(img, m["hue"])
            img = _tint(img, ink, ref)
            if ref.colour and scene["backdrop"]:
                img = _tint(img, ink, None)
        else:
            t = scene["text"]
            img = render_text(t["text"], t["font"], bh)
            tc = PALETTE[scene["text_colour"]] if scene["text_colour"] and not scene["backdrop"] else ink
            img = _tint(img, tc, None)
        img = _fit(img, bw, bh)
        canvas.paste(img, (int(cx * size - img.width / 2), int(cy * size - img.height / 2)), img)
    if scene.get("extra"):
        _draw_extra(draw, scene["extra"], size, ink)
    return canvas


def _shift_hue(img: Image.Image, hue: int) -> Image.Image:
    alpha = img.getchannel("A")
    h, s, v = img.convert("RGB").convert("HSV").split()
    h = h.point(lambda x: (x + hue) % 256)
    out = Image.merge("HSV", (h, s, v)).convert("RGB").convert("RGBA")
    out.putalpha(alpha)
    return out


def _draw_extra(draw: ImageDraw.ImageDraw, extra: dict, size: int, ink) -> None:
    """A small added element (a dot, star, ring or bar) near a corner: the 'small element added'."""
    cx, cy, r = extra["cx"] * size, extra["cy"] * size, extra["r"] * size
    box = (cx - r, cy - r, cx + r, cy + r)
    kind = extra["kind"]
    if kind == "dot":
        draw.ellipse(box, fill=ink)
    elif kind == "ring":
        draw.ellipse(box, outline=ink, width=max(2, int(r / 3)))
    elif kind == "star":
        draw.regular_polygon((cx, cy, r), 5, fill=ink)
    else:
        draw.rectangle((cx - 2 * r, cy - r / 3, cx + 2 * r, cy + r / 3), fill=ink)


def apply_ops(img: Image.Image, ops: list[dict], rng_seed: int) -> Image.Image:
    """Image-level edits of a derived query, in order."""
    for op in ops:
        kind = op["op"]
        if kind == "rotate":
            img = img.rotate(-op["deg"], expand=True, fillcolor=(255, 255, 255), resample=Image.Resampling.BICUBIC)
        elif kind == "mirror":
            img = ImageOps.mirror(img)
        elif kind == "invert":
            img = ImageOps.invert(img)
        elif kind == "gray":
            img = ImageOps.grayscale(img).convert("RGB")
        elif kind == "crop":
            w, h = img.size
            x0, y0, x1, y1 = op["box"]
            img = img.crop((int(x0 * w), int(y0 * h), int(x1 * w), int(y1 * h)))
        elif kind == "erase":
            w, h = img.size
            d = ImageDraw.Draw(img)
            cx, cy, r = op["cx"] * w, op["cy"] * h, op["r"] * w
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 255, 255))
        elif kind == "squash":
            w, h = img.size
            img = img.resize((max(8, int(w * op["sx"])), max(8, int(h * op["sy"]))), Image.Resampling.BILINEAR)
        elif kind == "blur":
            img = img.filter(ImageFilter.GaussianBlur(op["radius"]))
        elif kind == "lowres":
            w, h = img.size
            f = op["factor"]
            img = img.resize((max(8, int(w / f)), max(8, int(h / f))), Image.Resampling.BILINEAR)
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        else:
            raise ValueError(f"unknown op {kind}")
    return img


def finish(img: Image.Image, margin: float, max_side: int) -> Image.Image:
    """Crop to the ink plus a white margin (real files have all sizes and aspect ratios)."""
    from .preprocess import trim_margins

    img = trim_margins(img, threshold=250)
    w, h = img.size
    m = int(max(w, h) * margin)
    out = Image.new("RGB", (w + 2 * m, h + 2 * m), (255, 255, 255))
    out.paste(img, (m, m))
    if max(out.size) > max_side:
        s = max_side / max(out.size)
        out = out.resize((max(8, round(out.width * s)), max(8, round(out.height * s))), Image.Resampling.LANCZOS)
    return out


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality), optimize=False)
    return buf.getvalue()


def render_item(item: dict, refs: list[MarkRef], size: int) -> Image.Image:
    """Scene + ops + framing of one cite or query, as the final RGB image (before JPEG)."""
    img = render_scene(item["scene"], refs, size)
    img = apply_ops(img, item.get("ops", []), item["seed"])
    return finish(img, item["margin"], size)


# --------------------------------------------------------------------------- query derivation


def _jitter(scene: dict, rng: np.random.Generator, strength: float) -> dict:
    """A redraw of the same mark: scale, position and stroke move a little."""
    q = copy.deepcopy(scene)
    q["scale"] = float(np.clip(q["scale"] * rng.uniform(1 - 0.12 * strength, 1 + 0.08 * strength), 0.5, 1.0))
    q["dx"] = float(q["dx"] + rng.uniform(-0.04, 0.04) * strength)
    q["dy"] = float(q["dy"] + rng.uniform(-0.04, 0.04) * strength)
    for m in q["marks"]:
        m["stroke"] = float(np.clip(m["stroke"] + rng.uniform(-0.012, 0.025) * strength, -0.015, 0.04))
    return q


def _base_ops(rng: np.random.Generator, strength: float) -> list[dict]:
    ops = []
    if rng.random() < 0.3 * strength:
        ops.append({"op": "blur", "radius": float(rng.uniform(0.4, 1.2))})
    if rng.random() < 0.25 * strength:
        ops.append({"op": "lowres", "factor": float(rng.uniform(1.5, 2.5))})
    return ops


def _near_identical(scene: dict, rng: np.random.Generator, pool) -> tuple[dict, list[dict], str]:
    """Category 2, near-identical: a redraw (jitter, an element added or erased, tilt, squash, stroke,
    font, low resolution)."""
    ops: list[dict] = []
    q = _jitter(scene, rng, 1.0)
    choices = ["extra", "erase", "tilt", "squash", "stroke", "font", "lowres"]
    if q["text"] is None:
        choices.remove("font")
    picks = rng.choice(choices, size=int(rng.integers(1, 3)), replace=False)
    for how in picks:
        if how == "extra":
            corner = rng.choice([0.12, 0.88], 2)
            q["extra"] = {"kind": str(rng.choice(EXTRAS)), "cx": float(corner[0]), "cy": float(corner[1]),
                          "r": float(rng.uniform(0.03, 0.06))}
        elif how == "erase":
            ops.append({"op": "erase", "cx": float(rng.uniform(0.3, 0.7)), "cy": float(rng.uniform(0.3, 0.7)),
                        "r": float(rng.uniform(0.05, 0.09))})
        elif how == "tilt":
            ops.append({"op": "rotate", "deg": float(rng.choice([-1, 1]) * rng.uniform(3, 8))})
        elif how == "squash":
            ops.append({"op": "squash", "sx": float(rng.uniform(0.8, 1.2)), "sy": 1.0})
        elif how == "stroke":
            for m in q["marks"]:
                m["stroke"] = float(rng.choice([-0.012, 0.03, 0.04]))
        elif how == "font":
            fonts = LATIN_FONTS if q["text"]["font"] != "ipaexg" else ["ipaexg"]
            q["text"]["font"] = str(rng.choice(fonts))
            q["scale"] *= 0.95
        elif how == "lowres":
            ops.append({"op": "lowres", "factor": float(rng.uniform(2.0, 3.0))})
    return q, ops + _base_ops(rng, 0.5), "near-identical:" + "+".join(map(str, picks))


def _partial(scene: dict, rng: np.random.Generator, pool) -> tuple[dict, list[dict], str]:
    """Category 3, partial match: the mark inside a larger composition, one part of a composite, or a cropped part."""
    ops: list[dict] = []
    q = _jitter(scene, rng, 0.6)
    options = []
    if q["marks"] and q["text"] is None and len(q["marks"]) == 1:
        options += ["add-text", "add-mark", "add-frame-text", "part"]
    if q["marks"] and (q["text"] is not None or len(q["marks"]) == 2 or q["frame"] or q["backdrop"]):
        options += ["keep-mark", "swap-text" if q["text"] is not None else "keep-mark"]
    if not options:  # text-only cite: the word inside a larger composition
        options = ["add-mark-to-text"]
    how = str(rng.choice(options))
    if how == "add-text":
        q["text"] = random_word(rng)
        q["text_pos"] = str(rng.choice(["below", "right"]))
        q["layout"] = "wordmark"
    elif how == "add-mark":
        q["marks"].append(new_mark(pick_ref(rng, pool), rng))
        q["layout"] = "pair"
    elif how == "add-frame-text":
        q["frame"] = str(rng.choice(FRAMES))
        q["text"] = random_word(rng)
        q["text_pos"] = "below"
        q["layout"] = "emblem"
    elif how == "part":
        # A part of the mark: a window covering 55-75% of each side.
        fw, fh = rng.uniform(0.55, 0.75, 2)
        x0, y0 = rng.uniform(0.1, 0.9 - fw), rng.uniform(0.1, 0.9 - fh)
        ops.append({"op": "crop", "box": (float(x0), float(y0), float(x0 + fw), float(y0 + fh))})
    elif how == "keep-mark":
        q["marks"] = q["marks"][:1]
        q["text"] = None
        q["frame"] = None
        if q["backdrop"]:
            q["backdrop"] = None
        q["layout"] = "single"
        q["scale"] = float(rng.uniform(0.8, 0.95))
    elif how == "swap-text":
        old = q["text"]["text"]
        while q["text"]["text"] == old:
            q["text"] = random_word(rng) if old and len(old) > 3 else random_monogram(rng)
    elif how == "add-mark-to-text":
        q["marks"] = [new_mark(pick_ref(rng, pool), rng)]
        q["text_pos"] = "below"
        q["layout"] = "wordmark"
    return q, ops + _base_ops(rng, 0.5), "partial:" + how


def _colour(scene: dict, rng: np.random.Generator, pool) -> tuple[dict, list[dict], str]:
    """Category 4, colour difference: recoloured, inverted, reversed on a solid shape, gray or black."""
    ops: list[dict] = []
    q = _jitter(scene, rng, 0.5)
    options = ["recolour", "invert", "reverse"]
    if q["colour"] != "black":
        options += ["gray", "black"]
    if q["backdrop"]:
        options = ["recolour", "invert", "un-reverse"]
    how = str(rng.choice(options))
    if how == "recolour":
        q["colour"] = str(rng.choice([c for c in COLOUR_NAMES if c not in (q["colour"], "black", "gray")]))
        if q["text_colour"]:
            q["text_colour"] = str(rng.choice(COLOUR_NAMES))
        for m in q["marks"]:
            m["hue"] = int(rng.integers(50, 200))
    elif how == "invert":
        ops.append({"op": "invert"})
    elif how == "reverse":
        q["backdrop"] = str(rng.choice(["circle", "square", "rounded"]))
        q["frame"] = None
    elif how == "un-reverse":
        q["backdrop"] = None
    elif how == "gray":
        ops.append({"op": "gray"})
    elif how == "black":
        q["colour"] = "black"
        q["text_colour"] = None
    return q, ops + _base_ops(rng, 0.4), "colour:" + how


def _orientation(scene: dict, rng: np.random.Generator, pool) -> tuple[dict, list[dict], str]:
    """Category 5, orientation difference: quarter turns and/or a mirror."""
    ops: list[dict] = []
    q = _jitter(scene, rng, 0.4)
    how = str(rng.choice(["rot90", "rot180", "rot270", "mirror", "mirror+rot90"], p=[0.25, 0.2, 0.2, 0.25, 0.1]))
    for m in q["marks"]:
        if how.startswith("mirror"):
            m["flip"] = not m["flip"]
        if "rot" in how:
            m["rot"] = (m["rot"] + int(how.split("rot")[1])) % 360
    if not q["marks"]:
        ops.append({"op": "rotate", "deg": 180.0})
    return q, ops + _base_ops(rng, 0.3), "orientation:" + how

_DERIVE = {2: _near_identical, 3: _partial, 4: _colour, 5: _orientation}


def derive_query(cite: dict, category: int, rng: np.random.Generator, pool) -> tuple[dict, list[dict], str]:
    """An application scene of `category` derived from a cite scene: (scene, ops, how). A mark the
    query adds (category 3) is drawn from `pool`: all n marks (an int) or those indices (an array)."""
    if category not in _DERIVE:
        raise ValueError(f"unknown category {category}")
    return _DERIVE[category](cite, rng, pool)


def variant_registration(scene: dict, rng: np.random.Generator) -> dict:
    """A second registration of the same mark (another colourway or stroke): also a correct cite."""
    v = _jitter(scene, rng, 0.6)
    if rng.random() < 0.6:
        v["colour"] = "black" if scene["colour"] != "black" else str(rng.choice(COLOUR_NAMES[1:]))
    else:
        for m in v["marks"]:
            m["stroke"] = float(m["stroke"] + 0.02)
    return v


def thumbnail(img: Image.Image, side: int = 32) -> np.ndarray:
    """The raw-pixel view used for difficulty checks and the pixel baseline: trimmed 32 px gray."""
    from .preprocess import pad_to_square, trim_margins

    g = pad_to_square(trim_margins(img)).convert("L").resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(g, dtype=np.uint8)


def thumb_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute gray-level difference between two thumbnails (0 = identical)."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())

