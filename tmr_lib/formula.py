"""Formula-driven images: shapes with no mark in them, for a teaching start that knows shapes, not marks.

Why: the kit's ``tmr-marks`` checkpoint was pretrained on the dataset builder's own competition
transformations, so it already knows the answer and fine-tuning adds nothing (issue 14). A
teaching start must stand in for ImageNet instead: it knows edges, strokes, curves and filled
regions, but has never seen a mark nor the four category changes. Formula-driven supervised
learning (Kataoka et al., "Pre-training without Natural Images", ACCV 2020; the radial-contour
and polygon follow-ups) gives exactly that: every image is rendered from a formula.

Three kinds of formula, black ink on white paper at the pool size:

- ``ifs`` -- FractalDB-style iterated function systems: 2-8 random affine maps, kept only when
  their σ-factor (Anderson & Farrell 2022: Σ σ1 + 2 σ2 of the maps' singular values) lies in the
  band where attractors are neither dust nor blobs; 20k points of the chaos game, lightly blurred;
- ``radial`` -- radial contours: a Fourier-series radius r(θ), drawn as several concentric
  outlines or alternately filled rings;
- ``polygon`` -- star-shaped polygons (filled or outlined) and polyline strokes.

A *category* is one formula's parameters; an *instance* is a re-render with a small jitter of
those parameters (and a new chaos-game draw). Nothing here rotates by quarter turns, mirrors,
inverts, recolours or crops: those are the competition's categories.

    imgs, labels = render_pool(1000, 16, size=128, seed=0)   # uint8 (16000, 3, 128, 128), (16000,)
"""
from __future__ import annotations

import time
from multiprocessing import get_context
from typing import Any

import numpy as np

__all__ = ["KINDS", "category_params", "jitter", "render", "render_instance", "render_pool", "render_speed"]

KINDS = ("ifs", "radial", "polygon")
Params = dict[str, Any]


# --------------------------------------------------------------------------- drawing helpers


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in [-1, 1] (x to the right, y down)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, c)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D float image (edge-replicated), in numpy only."""
    if sigma <= 0.05:
        return img
    r = max(1, int(np.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    n = img.shape[0]
    p = np.pad(img, r, mode="edge")
    rows = sum(w * p[:, j:j + n] for j, w in enumerate(k))
    return sum(w * rows[j:j + n, :] for j, w in enumerate(k))


def _seg_dist(px: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points px (M, 2) to the nearest of the segments a[e]-b[e] (E, 2): (M,)."""
    x, y = px[:, :1], px[:, 1:]
    a, ab = a.astype(np.float32), (b - a).astype(np.float32)
    ax, ay, dx, dy = a[None, :, 0], a[None, :, 1], ab[None, :, 0], ab[None, :, 1]
    t = np.clip(((x - ax) * dx + (y - ay) * dy) / np.maximum(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    ex, ey = x - ax - t * dx, y - ay - t * dy
    return np.sqrt((ex * ex + ey * ey).min(1))


def _inside(px: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of px (M, 2) against a closed polygon (V, 2)."""
    a, b = poly, np.roll(poly, -1, axis=0)
    x, y = px[:, :1], px[:, 1:]
    cross = (a[None, :, 1] > y) != (b[None, :, 1] > y)
    xint = (b[:, 0] - a[:, 0])[None] * (y - a[None, :, 1]) / (b[:, 1] - a[:, 1] + 1e-12)[None] + a[None, :, 0]
    return ((cross & (x < xint)).sum(1) % 2).astype(bool)


# --------------------------------------------------------------------------- IFS fractals


def _ifs_maps(rng: np.random.Generator) -> Params:
    """2-8 contractive affine maps whose σ-factor is in Anderson & Farrell's band ½(5+N)..½(6+N)."""
    n = int(rng.integers(2, 9))
    alpha = rng.uniform(0.5 * (5 + n), 0.5 * (6 + n))
    for _ in range(200):
        s = np.sort(rng.uniform(0.0, 1.0, (n, 2)), axis=1)[:, ::-1]  # σ1 >= σ2
        s = s * alpha / (s[:, 0] + 2 * s[:, 1]).sum()
        if s.max() < 0.98:
            break
    else:
        s = np.clip(s, 0.0, 0.98)
    th, ph = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n)
    d = rng.choice([-1.0, 1.0], n)
    return {"kind": "ifs", "s": s, "theta": th, "phi": ph, "d": d, "b": rng.uniform(-1, 1, (n, 2)),
            "sigma": float(rng.uniform(0.5, 1.1)), "margin": float(rng.uniform(0.08, 0.16))}


def _rot(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _render_ifs(p: Params, size: int, rng: np.random.Generator, points: int = 20000) -> np.ndarray:
    """The chaos game with many chains in parallel, points normalised into the canvas."""
    s = p["s"]
    A = _rot(p["theta"]) @ (np.eye(2)[None] * np.stack([s[:, 0], s[:, 1] * p["d"]], -1)[:, None, :]) @ _rot(p["phi"])
    prob = s[:, 0] * s[:, 1] + 1e-3
    prob = prob / prob.sum()
    chains, burn = 512, 12
    steps = burn + -(-points // chains)
    pick = rng.choice(len(prob), size=(steps, chains), p=prob)
    x = rng.uniform(-1, 1, (chains, 2))
    out = []
    for t in range(steps):
        k = pick[t]
        x = np.einsum("cij,cj->ci", A[k], x) + p["b"][k]
        if t >= burn:
            out.append(x)
    pts = np.concatenate(out)
    pts = pts[np.isfinite(pts).all(1)]
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    span = max(float((hi - lo).max()), 1e-6)
    inner = size * (1 - 2 * p["margin"])
    q = (pts - (lo + hi) / 2) / span * inner + size / 2
    q = np.floor(q).astype(np.int64)
    ok = (q >= 0).all(1) & (q < size).all(1)
    q = q[ok]
    count = np.bincount(q[:, 1] * size + q[:, 0], minlength=size * size).reshape(size, size).astype(np.float32)
    ink = np.minimum(count, 1.0)
    return np.clip(_blur(ink, p["sigma"] * size / 128) * 1.6, 0, 1)


# --------------------------------------------------------------------------- radial contours


def _radial_params(rng: np.random.Generator) -> Params:
    """A Fourier-series radius r(θ) and how many rings of it are drawn, outlined or filled."""
    k = int(rng.integers(1, 7))
    freq = np.sort(rng.choice(np.arange(1, 13), k, replace=False))
    amp = rng.uniform(0.2, 1.0, k) / freq ** rng.uniform(0.3, 1.0)
    amp = amp / amp.sum() * rng.uniform(0.15, 0.6)
    rings = int(rng.integers(1, 6))
    return {"kind": "radial", "freq": freq, "amp": amp, "phase": rng.uniform(0, 2 * np.pi, k),
            "rings": rings, "step": float(rng.uniform(0.12, 0.3)), "twist": float(rng.uniform(-0.6, 0.6)),
            "width": float(rng.uniform(0.025, 0.08)), "filled": bool(rng.random() < 0.4),
            "centre": rng.uniform(-0.08, 0.08, 2), "outer": float(rng.uniform(0.7, 0.92))}


def _render_radial(p: Params, size: int, rng: np.random.Generator) -> np.ndarray:
    """Rings r_j(θ) = scale_j · R(θ + j·twist), outer first; antialiased by distance in pixels."""
    u, v = _grid(size)
    u, v = u - p["centre"][0], v - p["centre"][1]
    rho, th = np.hypot(u, v), np.arctan2(v, u)
    pix = 2.0 / size
    ink = np.zeros((size, size), np.float32)
    peak = 1.0 + p["amp"].sum()
    for j in range(p["rings"]):
        scale = p["outer"] * (1.0 - j * p["step"])
        if scale < 0.08:
            break
        wave = (p["amp"][:, None, None] * np.sin(p["freq"][:, None, None] * (th + j * p["twist"])
                                                  + p["phase"][:, None, None])).sum(0)
        r = scale * (1.0 + wave) / peak
        if p["filled"]:
            m = np.clip((r - rho) / pix + 0.5, 0, 1)
            ink = ink * (1 - m) + m * (1.0 if j % 2 == 0 else 0.0)
        else:
            m = np.clip((p["width"] / 2 - np.abs(rho - r)) / pix + 0.5, 0, 1)
            ink = np.maximum(ink, m)
    return ink


# --------------------------------------------------------------------------- polygons and strokes


def _polygon_params(rng: np.random.Generator) -> Params:
    """1-3 shapes: star-shaped polygons (filled or outlined) or polyline strokes."""
    shapes = []
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(["polygon", "polygon", "stroke"]))
        centre, scale = rng.uniform(-0.35, 0.35, 2), rng.uniform(0.3, 0.75)
        if kind == "polygon":
            n = int(rng.integers(3, 11))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = rng.uniform(0.35, 1.0, n)
            pts = np.stack([np.cos(ang) * rad, np.sin(ang) * rad], 1)
        else:
            n = int(rng.integers(3, 8))
            pts = np.cumsum(rng.normal(0, 0.6, (n, 2)), 0)
            pts = (pts - pts.mean(0)) / max(np.abs(pts - pts.mean(0)).max(), 1e-6)
        shapes.append({"kind": kind, "pts": pts * scale + centre, "filled": bool(rng.random() < 0.5),
                       "width": float(rng.uniform(0.03, 0.1))})
    return {"kind": "polygon", "shapes": shapes}


def _render_polygon(p: Params, size: int, rng: np.random.Generator) -> np.ndarray:
    """Signed-distance rendering: fill by the even-odd rule, strokes by distance to segments."""
    u, v = _grid(size)
    px = np.stack([u.ravel(), v.ravel()], 1)
    pix = 2.0 / size
    ink = np.zeros(size * size, np.float32)
    for s in p["shapes"]:
        pts = s["pts"]
        closed = s["kind"] == "polygon"
        a, b = (pts, np.roll(pts, -1, 0)) if closed else (pts[:-1], pts[1:])
        d = _seg_dist(px, a, b)
        if closed and s["filled"]:
            sd = np.where(_inside(px, pts), -d, d)
            m = np.clip(0.5 - sd / pix, 0, 1)
        else:
            m = np.clip((s["width"] / 2 - d) / pix + 0.5, 0, 1)
        ink = np.maximum(ink, m)
    return ink.reshape(size, size)


# --------------------------------------------------------------------------- categories and instances

_PARAMS = {"ifs": _ifs_maps, "radial": _radial_params, "polygon": _polygon_params}
_RENDER = {"ifs": _render_ifs, "radial": _render_radial, "polygon": _render_polygon}


def render(p: Params, size: int, rng: np.random.Generator) -> np.ndarray:
    """Ink coverage (S, S) float32 in [0, 1] of one formula."""
    return _RENDER[p["kind"]](p, size, rng).astype(np.float32)


def category_params(c: int, seed: int = 0, kinds: tuple[str, ...] = KINDS, size: int = 64) -> Params:
    """Category c's formula: kinds in turn, redrawn until the render has 4-70 % ink (no dust, no blob)."""
    kind = kinds[c % len(kinds)]
    rng = np.random.default_rng([seed, 1, c])
    for _ in range(50):
        p = _PARAMS[kind](rng)
        fill = float((render(p, size, np.random.default_rng([seed, 3, c])) > 0.5).mean())
        if 0.04 <= fill <= 0.7:
            break
    return p


def jitter(p: Params, rng: np.random.Generator, amount: float = 1.0) -> Params:
    """An instance of the category: every continuous parameter moved a little (no turn, no mirror)."""
    q = dict(p)
    a = amount
    if p["kind"] == "ifs":
        q["s"] = np.clip(p["s"] * (1 + rng.normal(0, 0.03 * a, p["s"].shape)), 0, 0.98)
        q["theta"] = p["theta"] + rng.normal(0, 0.04 * a, p["theta"].shape)
        q["phi"] = p["phi"] + rng.normal(0, 0.04 * a, p["phi"].shape)
        q["b"] = p["b"] + rng.normal(0, 0.03 * a, p["b"].shape)
        q["sigma"] = p["sigma"] * float(np.exp(rng.normal(0, 0.15 * a)))
    elif p["kind"] == "radial":
        q["amp"] = p["amp"] * (1 + rng.normal(0, 0.08 * a, p["amp"].shape))
        q["phase"] = p["phase"] + rng.normal(0, 0.08 * a, p["phase"].shape)
        q["width"] = p["width"] * float(np.exp(rng.normal(0, 0.12 * a)))
        q["step"] = p["step"] * float(np.exp(rng.normal(0, 0.06 * a)))
    else:
        q["shapes"] = [dict(s, pts=s["pts"] + rng.normal(0, 0.025 * a, s["pts"].shape),
                            width=s["width"] * float(np.exp(rng.normal(0, 0.12 * a)))) for s in p["shapes"]]
    return q


def render_instance(c: int, i: int, size: int = 128, seed: int = 0, kinds: tuple[str, ...] = KINDS,
                    params: Params | None = None) -> np.ndarray:
    """Instance i of category c as a gray uint8 image (S, S): black ink on white. Instance 0 is unjittered."""
    p = params if params is not None else category_params(c, seed, kinds)
    rng = np.random.default_rng([seed, 2, c, i])
    ink = render(p if i == 0 else jitter(p, rng), size, rng)
    return np.round(255.0 * (1.0 - ink)).astype(np.uint8)


def _category_job(args: tuple) -> np.ndarray:
    c, per, size, seed, kinds = args
    p = category_params(c, seed, kinds)
    return np.stack([render_instance(c, i, size, seed, kinds, p) for i in range(per)])


def render_pool(n_categories: int, per_category: int, size: int = 128, seed: int = 0, workers: int = 1,
                kinds: tuple[str, ...] = KINDS, channels: int = 3, progress: bool = False):
    """``per_category`` instances of each of ``n_categories`` formulas: (uint8 (N, C, S, S), labels (N,)).

    Rows are category-major (row = c * per_category + i); ``workers > 1`` renders categories in a
    process pool; ``channels=1`` keeps the gray plane only (a third of the memory)."""
    from tqdm.auto import tqdm

    jobs = [(c, per_category, size, seed, tuple(kinds)) for c in range(n_categories)]
    out = np.empty((n_categories, per_category, size, size), np.uint8)
    bar = dict(total=n_categories, desc="rendering formulas", disable=not progress, mininterval=1.0)
    if workers > 1:
        with get_context("spawn").Pool(workers) as pool:
            for c, imgs in enumerate(tqdm(pool.imap(_category_job, jobs, chunksize=8), **bar)):
                out[c] = imgs
    else:
        for c, job in enumerate(tqdm(jobs, **bar)):
            out[c] = _category_job(job)
    imgs = out.reshape(-1, 1, size, size)
    if channels == 3:
        imgs = np.repeat(imgs, 3, axis=1)
    labels = np.repeat(np.arange(n_categories, dtype=np.int64), per_category)
    return imgs, labels


def render_speed(n_categories: int = 30, per_category: int = 4, size: int = 128, seed: int = 0) -> dict:
    """Images per second of each kind on one process (what the pool's rendering costs)."""
    res = {}
    for kind in KINDS:
        t0 = time.perf_counter()
        render_pool(n_categories, per_category, size, seed, kinds=(kind,), channels=1)
        res[kind] = round(n_categories * per_category / (time.perf_counter() - t0), 1)
    return res
