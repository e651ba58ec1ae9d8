"""Self-supervised pretraining of a small encoder: the domain start (tmr-marks) and the teaching start.

Why: on a CPU, starting weights matter more than anything else. A random encoder trained for
minutes barely beats raw pixels, and ImageNet weights need a hub that offline machines cannot
reach. So the kit pretrains its own starting points, from one of two sources:

``source="scenes"`` (default; how ``tmr-marks`` was made) -- a *pair pool*: random trademark
scenes (the builder's base marks and composites) each drawn twice, once as registered and once
changed the way the four competition categories change a mark (redrawn, part of a larger mark
or a part of it, recoloured or inverted, rotated or mirrored); rendered once in parallel into a
uint8 array. Such a start already knows the task: fine-tuning from it adds little (issue 14).

``source="formula"`` (the *teaching start*, a stand-in for ImageNet) -- formula-driven images
(:mod:`tmr_lib.formula`: IFS fractals, radial contours, polygons and strokes; FractalDB and its
follow-ups), no mark of any competition. Positives are two instances of one formula (FDSL's
category labels) or two views of one image.

Views, batched in torch with one affine ``grid_sample`` per batch so the data path never starves:
``views="marks"`` -- :func:`tmr_lib.augment.marks_augment` (zoom, crop, flip, quarter turns,
colour mixing, gray, inversion, blur); ``views="generic"`` -- :func:`generic_augment` (crop of
the whole image, shift, ±10° tilt, ink lightness/contrast, gray, blur: none of the categories).
Loss: NT-Xent (SimCLR's, from pytorch-metric-learning): each pair's two views attract, every
other image in the batch repels.

Honest evaluation: whole marks (10%) and one whole icon family (DejaVu dingbats) are held out of
the scene pool; `evaluate_heldout` scores retrieval on scenes made only of held-out marks;
`zero_shot_validation` scores any start on a competition's train pairs (never its test answers)
beside raw pixels and a random init.

    python -m tmr_lib pretrain --minutes 5 --out runs/pretrain        # CPU or GPU
    python -m tmr_lib pretrain --resume runs/pretrain/last.pt --minutes 60
    python -m tmr_lib pretrain --source formula --views generic --threads 1 --minutes 100 \\
        --out runs/teach --validate data/tmr-cpu                       # the teaching start
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from . import scenes
from .marks import MarkRef, cpu_count, default_catalogue

HOLDOUT_FAMILY = "dejavu-dingbats"
CATEGORY_P = {2: 0.3, 3: 0.4, 4: 0.15, 5: 0.15}


@dataclass
class PretrainConfig:
    backbone: str = "mobilenetv3_large_100"
    image_size: int = 112  # model input
    pool_size: int = 128  # rendered canvas of the pair pool
    embed_dim: int = 512
    n_pairs: int = 20000
    batch_pairs: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    temperature: float = 0.1
    minutes: float = 5.0
    max_steps: int | None = None
    holdout_family: str = HOLDOUT_FAMILY
    holdout_frac: float = 0.1
    seed: int = 0
    workers: int | None = None
    device: str | None = None
    #: "scenes": the builder's pair pool (tmr-marks); "formula": formula-driven images, no mark at all
    source: str = "scenes"
    #: "marks": :func:`tmr_lib.augment.marks_augment` (the category changes); "generic": :func:`generic_augment`
    views: str = "marks"
    #: formula source: "category" (two instances of one formula attract) or "instance" (two views of one image)
    positives: str = "category"
    n_categories: int = 1000
    per_category: int = 16
    threads: int | None = None  #: torch CPU threads (None: torch's default)
    checkpoint_steps: int | None = None  #: steps between checkpoints (None: CHECKPOINT_STEPS)
    #: also keep the weights alone as step-N.pt every this many steps (pick a start by validation later)
    keep_every: int | None = None
    #: tie the stem's three colour channels (None: for the formula source): gray data never train their differences
    tie_stem: bool | None = None
    extra: dict = field(default_factory=dict)


def split_marks(refs: list[MarkRef], seed: int = 0, family: str = HOLDOUT_FAMILY, frac: float = 0.1):
    """Indices of pretraining marks and held-out marks (one whole family + `frac` of the rest)."""
    rng = np.random.default_rng([seed, 11])
    fam = np.array([r.family == family for r in refs])
    rest = np.flatnonzero(~fam)
    held_rest = rng.choice(rest, int(round(len(rest) * frac)), replace=False)
    held = np.sort(np.concatenate([np.flatnonzero(fam), held_rest]))
    train = np.setdiff1d(np.arange(len(refs)), held)
    return train, held


# --------------------------------------------------------------------------- the pair pool

_P: dict = {}


def _pool_init(refs, size, seed, path, n) -> None:
    _P.update(refs=refs, size=size, seed=seed, arr=np.lib.format.open_memmap(path, mode="r+"), n=n)


def render_pair(refs: list[MarkRef], i: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Scene i drawn as registered (view A) and as changed by a random category (view B)."""
    from .preprocess import load_mark_image

    rng = np.random.default_rng([seed, 7, i])
    layout = str(rng.choice(scenes.LAYOUTS, p=scenes.LAYOUT_WEIGHTS))
    scene = scenes.random_scene(rng, len(refs), layout)
    cat = int(rng.choice(list(CATEGORY_P), p=list(CATEGORY_P.values())))
    if cat == 5 and not scene["marks"]:
        cat = 4
    q, ops, _ = scenes.derive_query(scene, cat, rng, len(refs))
    canvas = max(size * 2, 160)
    a = scenes.render_item({"scene": scene, "ops": [], "seed": i, "margin": 0.0}, refs, canvas)
    b = scenes.render_item({"scene": q, "ops": ops, "seed": i, "margin": 0.0}, refs, canvas)
    return np.asarray(load_mark_image(a, size)), np.asarray(load_mark_image(b, size)), cat


def _pool_job(i: int) -> int:
    a, b, cat = render_pair(_P["refs"], i, _P["size"], _P["seed"])
    _P["arr"][i, 0] = a
    _P["arr"][i, 1] = b
    return cat


def render_pool(refs: list[MarkRef], n: int, size: int, seed: int, path: str | Path,
                workers: int | None = None, progress: bool = True) -> np.ndarray:
    """Render n pairs into a .npy memmap (n, 2, size, size, 3) uint8, in parallel."""
    from tqdm.auto import tqdm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 2, size, size, 3))
    del arr
    workers = workers or cpu_count()
    ctx = get_context("spawn")
    with ctx.Pool(workers, initializer=_pool_init, initargs=(refs, size, seed, str(path), n)) as pool:
        for _ in tqdm(pool.imap_unordered(_pool_job, range(n), chunksize=64), total=n, desc="rendering pairs",
                      disable=not progress, mininterval=1.0):
            pass
    return np.load(path, mmap_mode="r")


# --------------------------------------------------------------------------- batched augmentation


def augment_batch(x, out: int, generator=None, views: str = "marks"):
    """uint8 (B, 3, S, S) -> augmented, normalised float (B, 3, out, out), a new draw per image.

    ``views="marks"``: :func:`tmr_lib.augment.marks_augment` (zoom, shift, tilt, quarter turns,
    mirror, channel mixing, gray, inversion, blur: the tmr-marks views); ``views="generic"``:
    :func:`generic_augment` (none of the competition's category changes)."""
    from .augment import MEAN, STD, marks_augment

    if views == "marks":
        y = marks_augment(x, out, generator, as_uint8=False)
    elif views == "generic":
        y = generic_augment(x, out, generator)
    else:
        raise ValueError(f"views must be 'marks' or 'generic', not {views!r}")
    mean = y.new_tensor(MEAN).view(1, 3, 1, 1)
    std = y.new_tensor(STD).view(1, 3, 1, 1)
    return (y - mean) / std


def _gaussian_blur_each(y, sigma):
    """Blur image b of y (B, 3, H, W) with its own sigma[b] (<= 0.05: untouched), as two grouped convs."""
    import torch
    import torch.nn.functional as F

    B, C, H, W = y.shape
    r = max(1, int(math.ceil(2.5 * float(sigma.max()))))
    taps = torch.arange(-r, r + 1, device=y.device, dtype=y.dtype)
    k = torch.exp(-0.5 * (taps[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B*C, K)
    z = F.pad(y.reshape(1, B * C, H, W), (r, r, r, r), mode="replicate")
    z = F.conv2d(z, k.view(B * C, 1, 1, -1), groups=B * C)
    z = F.conv2d(z, k.view(B * C, 1, -1, 1), groups=B * C)
    return z.view(B, C, H, W)


def generic_augment(x, out: int, generator=None):
    """uint8 (B, 3, S, S) -> float (B, 3, out, out) in [0, 1]: SimCLR-like views with no category change.

    Why: a teaching start must not learn the competition's four categories (redraw, part crop,
    recolour/inversion, quarter turn/mirror). So: a random resized crop of the whole image (area
    0.5-1, aspect 0.8-1.25), a small shift, a tilt of at most ±10°, NO flip, NO quarter turn; the
    ink (not the paper) made lighter or its contrast changed, never inverted nor its channels
    permuted; sometimes gray; sometimes a Gaussian blur. One affine grid per image, one
    ``grid_sample`` per batch, white outside the image."""
    import torch
    import torch.nn.functional as F

    B, dev, g = x.shape[0], x.device, generator

    def U(lo: float, hi: float):
        return torch.rand(B, device=dev, generator=g) * (hi - lo) + lo

    area, aspect = U(0.5, 1.0), torch.exp(U(math.log(0.8), math.log(1.25)))
    w, h = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
    cx, cy = U(-1, 1) * (1 - w) + U(-0.05, 0.05), U(-1, 1) * (1 - h) + U(-0.05, 0.05)
    ang = U(-math.radians(10), math.radians(10))
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([w * cos, -h * sin, cx], 1), torch.stack([w * sin, h * cos, cy], 1)], 1)
    grid = F.affine_grid(theta, (B, 3, out, out), align_corners=False)
    ink = -F.grid_sample(x.float().div(255.0) - 1.0, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)  # 0 = paper, 1 = full ink
    gray = torch.rand(B, device=dev, generator=g) < 0.2
    if gray.any():
        ink[gray] = ink[gray].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    gamma = torch.exp(U(math.log(0.7), math.log(1.4))).view(B, 1, 1, 1)
    ink = ink.clamp(0.0, 1.0).pow(gamma) * U(0.6, 1.0).view(B, 1, 1, 1)
    blur = torch.rand(B, device=dev, generator=g) < 0.3
    if blur.any():
        ink = _gaussian_blur_each(ink, torch.where(blur, U(0.3, 1.5) * out / 112, torch.zeros(B, device=dev)))
    return (1.0 - ink).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------- training


class _Endless:
    """An endless batch generator the loop can leave and re-enter round after round. Why not the
    generator itself: ``tqdm(disable=True)`` iterates with ``yield from``, so leaving the loop early
    closes the generator and the next round would get no batch at all."""

    def __init__(self, gen):
        self.gen = gen

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.gen)


def _pair_batches(data, batch_pairs: int, image_size: int, gen, device, views: str = "marks"):
    """Endless (augmented views, labels) batches: B random pairs, their two sides in random order, each
    view a new draw of the pretraining augmentation; the two views of a pair share a label."""
    import torch

    B = batch_pairs
    labels = torch.arange(B, device=device).repeat(2)
    while True:
        idx = torch.randint(0, data.shape[0], (B,), generator=gen, device=device)
        pair = data[idx.to(data.device)].to(device, non_blocking=True)
        swap = torch.rand(B, device=device, generator=gen) < 0.5
        a = torch.where(swap[:, None, None, None], pair[:, 1], pair[:, 0])
        b = torch.where(swap[:, None, None, None], pair[:, 0], pair[:, 1])
        yield augment_batch(torch.cat([a, b]), image_size, gen, views), labels


def _formula_batches(data, per_category: int, batch_pairs: int, image_size: int, gen, device,
                     views: str = "generic", positives: str = "category"):
    """Endless batches from the formula pool (N, 1, S, S), rows category-major: B distinct categories,
    two views each -- of two different instances (``positives="category"``, FDSL's labels) or of the
    same image (``"instance"``, SimCLR); the two views share a label, every other view repels."""
    import torch

    n_cat = data.shape[0] // per_category
    B = min(batch_pairs, n_cat)
    labels = torch.arange(B, device=device).repeat(2)
    while True:
        cats = torch.randperm(n_cat, generator=gen, device=device)[:B]
        i = torch.randint(0, per_category, (B,), generator=gen, device=device)
        j = i if positives == "instance" else (i + torch.randint(1, max(2, per_category), (B,), generator=gen,
                                                                 device=device)) % per_category
        rows = torch.cat([cats * per_category + i, cats * per_category + j])
        x = data[rows.to(data.device)].to(device, non_blocking=True).expand(-1, 3, -1, -1)
        yield augment_batch(x, image_size, gen, views), labels


#: optimiser steps between two checkpoints (one "epoch" of the loop)
CHECKPOINT_STEPS = 500


def pretrain(cfg: PretrainConfig, out_dir: str | Path, resume: str | Path | None = None,
             pool_path: str | Path | None = None, progress: bool = True, log=print) -> Path:
    """Pretrain an Encoder on the pair pool or the formula pool; writes last.pt (resumable) and history.json.

    The loop is the kit's one training loop (:func:`tmr_lib.loop.train_one_epoch`), called in
    rounds of ``cfg.checkpoint_steps`` (default :data:`CHECKPOINT_STEPS`) steps with a checkpoint
    after each, so a long CPU run can be exported at any time; what pretraining passes in: the
    endless batches of augmented views (:func:`_batches`), NT-Xent, AdamW, a warm-up + cosine
    :class:`tmr_lib.loop.Schedule` over the time budget (or ``max_steps``), bf16 on CUDA."""
    import torch
    from pytorch_metric_learning.losses import NTXentLoss

    from .encoder import Encoder
    from .loop import LoopState, Schedule, train_one_epoch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    model = Encoder(cfg.backbone, cfg.embed_dim, image_size=cfg.image_size).to(device)
    model = model.to(memory_format=torch.channels_last)
    if cfg.tie_stem or (cfg.tie_stem is None and cfg.source in ("formula", "marks")):
        tie_stem_channels(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = NTXentLoss(temperature=cfg.temperature)
    state, history = LoopState(), []
    if resume:
        ck = torch.load(resume, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state.updates, state.images_seen, history = ck["step"], ck["seen"], ck["history"]
        log(f"resumed from {resume} at step {state.updates} ({state.images_seen} crops seen)")
    total_steps = cfg.max_steps or 10**9
    schedule = Schedule(total_updates=total_steps, budget_s=cfg.minutes * 60, warmup_updates=cfg.warmup_steps,
                        floor=0.02)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed + state.updates)
    batches, info = _batches(cfg, out_dir, pool_path, gen, device, progress, log)
    state.started = t_start = time.time()  # the time budget and the rate count training only, not rendering
    seen_start = state.images_seen

    def on_step(step: int, loss: float) -> None:
        if step % 25 == 0 or step == 1:
            rate = (state.images_seen - seen_start) / max(1e-6, time.time() - t_start)
            history.append({"step": step, "loss": round(loss, 4), "lr": opt.param_groups[0]["lr"],
                            "crops_per_s": round(rate, 1)})

    model.train()
    every = cfg.checkpoint_steps or CHECKPOINT_STEPS
    while state.updates < total_steps:
        stats = train_one_epoch(model, batches, loss_fn, opt, schedule, state, device=device, prepare=lambda x: x,
                                amp="bf16", max_steps=min(every, total_steps - state.updates),
                                progress=progress, desc=f"pretraining (step {state.updates})", on_step=on_step)
        _save(out_dir / "last.pt", model, opt, state.updates, state.images_seen, history, cfg)
        (out_dir / "history.json").write_text(json.dumps(history) + "\n")
        if cfg.keep_every and state.updates % cfg.keep_every == 0:
            torch.save({"model": model.state_dict(), "step": state.updates, "seen": state.images_seen,
                        "config": asdict(cfg)}, out_dir / f"step-{state.updates}.pt")
        log(f"step {state.updates}: loss {stats.loss:.3f}, lr {stats.lr:.2e}, {stats.images_per_s:.1f} crops/s, "
            f"{state.elapsed() / 60:.1f} min; checkpoint {out_dir / 'last.pt'}")
        if stats.out_of_time:
            break
    elapsed = state.elapsed()
    summary = {"steps": state.updates, "crops_seen": state.images_seen, "seconds_this_run": round(elapsed, 1),
               "crops_per_s": round((state.images_seen - seen_start) / max(time.time() - t_start, 1e-6), 1),
               "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
               **info, "config": asdict(cfg)}
    (out_dir / "pretrain_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"pretrained {state.updates} steps, {state.images_seen} crops, {summary['crops_per_s']} crops/s "
        f"on {summary['device']}")
    return out_dir / "last.pt"


def tie_stem_channels(model) -> None:
    """Give the first convolution's three input channels their mean kernel (the same response to a
    gray image). Why: on gray formula images the three channels get nearly identical gradients (they
    differ only by ImageNet's per-channel normalisation), so their random-init differences would stay
    and turn a coloured mark into noise in the embedding."""
    import torch

    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 3)
    with torch.no_grad():
        conv.weight.copy_(conv.weight.mean(dim=1, keepdim=True).expand_as(conv.weight))


def _batches(cfg: PretrainConfig, out_dir: Path, pool_path, gen, device, progress: bool, log):
    """The endless batches of ``cfg.source`` with ``cfg.views``, and what the summary says about the data."""
    if cfg.source == "scenes":
        data, n_train, n_held = _load_pool(cfg, out_dir, pool_path, progress, log)
        if device.type == "cuda":
            data = data.to(device)
        info = {"source": "scenes", "n_train_marks": n_train, "n_heldout_marks": n_held}
        return _Endless(_pair_batches(data, cfg.batch_pairs, cfg.image_size, gen, device, cfg.views)), info
    if cfg.source == "formula":
        data = _load_formula_pool(cfg, out_dir, pool_path, progress, log)
        if device.type == "cuda":
            data = data.to(device)
        info = {"source": "formula", "n_categories": cfg.n_categories, "per_category": cfg.per_category,
                "marks_used": 0}
        return _Endless(_formula_batches(data, cfg.per_category, cfg.batch_pairs, cfg.image_size, gen, device,
                                         cfg.views, cfg.positives)), info
    if cfg.source == "marks":
        data, n_marks = _load_marks_pool(cfg, out_dir, pool_path, log)
        if device.type == "cuda":
            data = data.to(device)
        info = {"source": "marks", "n_marks": n_marks, "query_marks_used": 0}
        return _Endless(_formula_batches(data, 1, cfg.batch_pairs, cfg.image_size, gen, device, cfg.views,
                                         "instance")), info
    raise ValueError(f"source must be 'scenes', 'formula' or 'marks', not {cfg.source!r}")


def render_marks_pool(refs: list[MarkRef], size: int, progress: bool = True) -> np.ndarray:
    """Each base mark alone, black on white, trimmed and padded square like a cite: uint8 (N, 1, S, S)."""
    from PIL import Image
    from tqdm.auto import tqdm

    from .marks import render_ref
    from .preprocess import load_mark_image

    out = np.empty((len(refs), 1, size, size), dtype=np.uint8)
    for k, ref in enumerate(tqdm(refs, desc="drawing marks", disable=not progress, mininterval=1.0)):
        ink = render_ref(ref, 2 * size)
        page = Image.new("RGBA", ink.size, (255, 255, 255, 255))
        if ref.colour:  # a user's mark keeps its own colours (then gray)
            page.alpha_composite(ink)
        else:  # the catalogue's marks are ink: draw it black
            page.paste((0, 0, 0, 255), mask=ink.getchannel("A"))
        out[k, 0] = np.asarray(load_mark_image(page.convert("RGB"), size).convert("L"))
    return out


def teaching_marks(refs: list[MarkRef] | None = None) -> list[MarkRef]:
    """The marks the teaching start may see: every catalogue mark that no competition query uses."""
    from .marks import query_mark

    return [r for r in (refs if refs is not None else default_catalogue()) if not query_mark(r)]


def _load_marks_pool(cfg: PretrainConfig, out_dir: Path, pool_path, log):
    """The teaching start's pool: the non-query marks alone (:func:`teaching_marks`), drawn on first use."""
    import torch

    refs = teaching_marks()
    pool_path = Path(pool_path) if pool_path else out_dir / f"marks-{len(refs)}-{cfg.pool_size}.npy"
    if pool_path.is_file():
        imgs = np.load(pool_path)
        log(f"marks pool: reusing {pool_path} ({len(imgs)} marks)")
    else:
        t0 = time.time()
        imgs = render_marks_pool(refs, cfg.pool_size, progress=False)
        tmp = pool_path.with_name(pool_path.stem + ".tmp.npy")
        np.save(tmp, imgs)
        os.replace(tmp, pool_path)
        log(f"marks pool: {len(refs)} marks (no query mark) drawn in {time.time() - t0:.0f} s -> {pool_path}")
    if imgs.shape[0] != len(refs) or imgs.shape[1] != 1:
        raise ValueError(f"{pool_path} holds {imgs.shape}, not ({len(refs)}, 1, S, S): another pool's file?")
    return torch.from_numpy(imgs), len(refs)


def _load_formula_pool(cfg: PretrainConfig, out_dir: Path, pool_path, progress: bool, log):
    """The formula pool as a gray uint8 tensor (N, 1, S, S), category-major, rendered on first use."""
    import torch

    from .formula import render_pool as render_formulas

    name = f"formula-{cfg.n_categories}x{cfg.per_category}-{cfg.pool_size}-s{cfg.seed}.npy"
    pool_path = Path(pool_path) if pool_path else out_dir / name
    if pool_path.is_file():
        imgs = np.load(pool_path)
        log(f"formula pool: reusing {pool_path} ({len(imgs)} images)")
    else:
        t0 = time.time()
        imgs, _ = render_formulas(cfg.n_categories, cfg.per_category, cfg.pool_size, cfg.seed,
                                  workers=cfg.workers or 1, channels=1, progress=progress)
        tmp = pool_path.with_name(pool_path.stem + ".tmp.npy")
        np.save(tmp, imgs)
        os.replace(tmp, pool_path)
        log(f"formula pool: {cfg.n_categories} categories x {cfg.per_category} instances rendered in "
            f"{time.time() - t0:.0f} s ({len(imgs) / (time.time() - t0):.0f} images/s) -> {pool_path}")
    expect = cfg.n_categories * cfg.per_category
    if imgs.shape[0] != expect or imgs.shape[1] != 1:
        raise ValueError(f"{pool_path} holds {imgs.shape}, not ({expect}, 1, S, S): another pool's file?")
    return torch.from_numpy(imgs)


def _load_pool(cfg: PretrainConfig, out_dir: Path, pool_path, progress: bool, log):
    """The rendered pair pool as a uint8 tensor (N, 2, 3, S, S), rendered on first use."""
    import torch

    refs = default_catalogue()
    train_idx, held_idx = split_marks(refs, cfg.seed, cfg.holdout_family, cfg.holdout_frac)
    train_refs = [refs[i] for i in train_idx]
    pool_path = Path(pool_path) if pool_path else out_dir / f"pool-{cfg.n_pairs}-{cfg.pool_size}-s{cfg.seed}.npy"
    t0 = time.time()
    if pool_path.is_file():
        pool = np.load(pool_path, mmap_mode="r")
        log(f"pair pool: reusing {pool_path} ({len(pool)} pairs)")
    else:
        pool = render_pool(train_refs, cfg.n_pairs, cfg.pool_size, cfg.seed, pool_path, cfg.workers, progress)
        log(f"pair pool: {cfg.n_pairs} pairs of {len(train_refs)} marks rendered in {time.time() - t0:.0f} s "
            f"({2 * cfg.n_pairs / (time.time() - t0):.0f} images/s); {len(held_idx)} marks held out")
    return torch.from_numpy(np.array(pool)).permute(0, 1, 4, 2, 3), len(train_idx), len(held_idx)


def _save(path: Path, model, opt, step, seen, history, cfg) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "seen": seen,
                "history": history, "config": asdict(cfg)}, tmp)
    os.replace(tmp, path)


def export_weights(checkpoint: str | Path, out: str | Path, meta: dict | None = None) -> Path:
    """The shipped file: the encoder's state dict in fp16 safetensors (a few MB)."""
    import torch
    from safetensors.torch import save_file

    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in ck["model"].items()}
    info = {"backbone": ck["config"]["backbone"], "embed_dim": str(ck["config"]["embed_dim"]),
            "image_size": str(ck["config"]["image_size"]), "steps": str(ck["step"]), "crops_seen": str(ck["seen"])}
    info.update({k: str(v) for k, v in (meta or {}).items()})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(out), metadata=info)
    return out


# --------------------------------------------------------------------------- evaluation


def heldout_set(n_queries: int = 300, n_distractors: int = 1200, size: int = 128, seed: int = 123,
                refs: list[MarkRef] | None = None):
    """Queries, their cites and distractors drawn only from held-out marks: (Q, G, answers, cats)."""
    refs = refs or default_catalogue()
    _, held = split_marks(refs)
    hrefs = [refs[i] for i in held]
    Q, G, cats = [], [], []
    for i in range(n_queries):
        a, b, cat = render_pair(hrefs, i, size, seed)
        G.append(a)
        Q.append(b)
        cats.append(cat)
    rng = np.random.default_rng([seed, 9])
    for j in range(n_distractors):
        r = np.random.default_rng([seed, 8, j])
        layout = str(r.choice(scenes.LAYOUTS, p=scenes.LAYOUT_WEIGHTS))
        sc = scenes.random_scene(r, len(hrefs), layout)
        from .preprocess import load_mark_image

        img = scenes.render_item({"scene": sc, "ops": [], "seed": j, "margin": 0.0}, hrefs, max(size * 2, 160))
        G.append(np.asarray(load_mark_image(img, size)))
    del rng
    return np.stack(Q), np.stack(G), np.arange(n_queries), np.array(cats)


def heldout_retrieval(model, Q: np.ndarray, G: np.ndarray, image_size: int = 112, name: str = "",
                      batch_size: int = 64):
    """The held-out queries searched among the held-out gallery with ``model`` (None: raw pixels)."""
    import torch

    from .baselines import PIXELS_NAME, pixel_embeddings
    from .embed import embed_images
    from .images import resize_uint8
    from .retrieval import Retrieval

    q = torch.from_numpy(np.ascontiguousarray(Q)).permute(0, 3, 1, 2)
    g = torch.from_numpy(np.ascontiguousarray(G)).permute(0, 3, 1, 2)
    if model is None:
        eq, eg, name = pixel_embeddings(q), pixel_embeddings(g), name or PIXELS_NAME
    else:
        kw = dict(batch_size=batch_size, progress=False)
        eq = embed_images(model, resize_uint8(q, image_size), **kw)
        eg = embed_images(model, resize_uint8(g, image_size), **kw)
    return Retrieval.from_embeddings([f"q{i}" for i in range(len(Q))], eq, [f"g{j}" for j in range(len(G))], eg,
                                     name=name)


def heldout_answers(ans: np.ndarray, cats: np.ndarray):
    """The held-out set's answers in the host's form (query i's cite is gallery row ans[i])."""
    import pandas as pd

    return pd.DataFrame({"gid": [f"q{i}" for i in range(len(ans))], "cite_gids": [[f"g{a}"] for a in ans],
                         "category": [int(c) for c in cats]})


def evaluate_heldout(model=None, image_size: int = 112, **kw) -> dict:
    """Recall@20 metrics on held-out marks for raw pixels and (if given) the model."""
    Q, G, ans, cats = heldout_set(**kw)
    answers = heldout_answers(ans, cats)
    res = {"pixels": heldout_retrieval(None, Q, G).metrics(answers)}
    if model is not None:
        res["model"] = heldout_retrieval(model, Q, G, image_size).metrics(answers)
    res["n_queries"], res["n_gallery"] = len(Q), len(G)
    return res


# --------------------------------------------------------------------------- zero-shot validation


@dataclass
class ValidationSet:
    """A competition's train pairs as queries (apply image -> its cites) against its whole cite gallery."""

    query_ids: list[str]
    query_images: object  # uint8 tensor (Q, 3, S, S)
    gallery_ids: list[str]
    gallery_images: object  # uint8 tensor (G, 3, S, S)
    answers: object  # DataFrame gid, cite_gids, category

    def retrieval(self, model=None, name: str = "", batch_size: int = 128):
        """Search with ``model`` (None: the kit's raw-pixel baseline), at the model's own image size."""
        from .baselines import PIXELS_NAME, pixel_embeddings
        from .embed import embed_images
        from .images import resize_uint8
        from .retrieval import Retrieval

        if model is None:
            eq, eg = pixel_embeddings(self.query_images), pixel_embeddings(self.gallery_images)
            name = name or PIXELS_NAME
        else:
            size = getattr(model, "image_size", None) or self.query_images.shape[-1]
            kw = dict(batch_size=batch_size, progress=False)
            eq = embed_images(model, resize_uint8(self.query_images, size), **kw)
            eg = embed_images(model, resize_uint8(self.gallery_images, size), **kw)
        return Retrieval.from_embeddings(self.query_ids, eq, self.gallery_ids, eg, name=name)


def validation_set(data: str | Path = "data/tmr-cpu", image_size: int = 112, progress: bool = False,
                   max_queries: int | None = None, n_distractors: int | None = None, seed: int = 0) -> ValidationSet:
    """The validation side of a competition, never its test answers: each train apply image
    searches the whole cite gallery (cite_v2.csv, which holds the train cites) for its own cites;
    ``n_distractors`` keeps only that many other cites (a quick look). Images come from the kit's
    decoded-image cache (the same one ``tmr demo`` fills)."""
    import pandas as pd
    from types import SimpleNamespace

    from .data import load_competition
    from .images import image_store

    comp = load_competition(data)
    store = image_store(SimpleNamespace(image_size=image_size, num_workers=1), comp, progress)
    groups = list(comp.train.groupby("gid", sort=False))
    if max_queries and len(groups) > max_queries:
        keep = np.sort(np.random.default_rng(seed).choice(len(groups), max_queries, replace=False))
        groups = [groups[i] for i in keep]
    qids = [str(g) for g, _ in groups]
    answers = pd.DataFrame({"gid": qids, "cite_gids": [list(dict.fromkeys(f["cite_gid"])) for _, f in groups],
                            "category": [int(f["category"].iloc[0]) for _, f in groups]})
    gal = pd.concat([comp.cite[["gid", "path"]],
                     comp.train[["cite_gid", "cite_path"]].set_axis(["gid", "path"], axis=1)]).drop_duplicates("gid")
    if n_distractors is not None:
        cited = gal["gid"].isin({g for c in answers["cite_gids"] for g in c})
        rest = np.flatnonzero(~cited.to_numpy())
        pick = np.random.default_rng([seed, 1]).choice(rest, min(n_distractors, len(rest)), replace=False)
        gal = gal.iloc[np.sort(np.concatenate([np.flatnonzero(cited.to_numpy()), pick]))]
    return ValidationSet(qids, store.get([f["path"].iloc[0] for _, f in groups]), list(gal["gid"]),
                         store.get(list(gal["path"])), answers)


def load_start(spec: str | Path, image_size: int | None = None):
    """An Encoder from a pretraining checkpoint (last.pt), an exported .safetensors, a kit name or "random"."""
    import torch

    from .encoder import Encoder, build_encoder

    if str(spec).endswith(".pt"):
        ck = torch.load(spec, map_location="cpu", weights_only=False)
        c = ck["config"]
        model = Encoder(c["backbone"], c["embed_dim"], image_size=image_size or c["image_size"])
        model.load_state_dict(ck["model"])
        return model
    return build_encoder("mobilenetv3_large_100", str(spec), image_size=image_size or 112)[0]


def zero_shot_validation(starts: dict, data: str | Path = "data/tmr-cpu", image_size: int = 112,
                         max_queries: int | None = None, log=print) -> list[tuple[str, dict]]:
    """Recall@20 on the validation side for raw pixels, a random init and each start, in one run.

    ``starts``: name -> an Encoder or anything :func:`load_start` reads; every model embeds at
    ``image_size`` (the size fine-tuning will use, whatever size it was pretrained at). Why:
    choosing a teaching start must never look at the test answers, and every figure needs its
    baselines beside it."""
    import torch

    from .demo import format_table
    from .encoder import Encoder

    vs = validation_set(data, image_size, max_queries=max_queries)
    torch.manual_seed(0)
    models = {"random init (mobilenetv3_large_100)": Encoder("mobilenetv3_large_100", 512, image_size=image_size)}
    models.update({k: (v if isinstance(v, torch.nn.Module) else load_start(v, image_size)) for k, v in starts.items()})
    pixels = vs.retrieval(None)
    rows = [(pixels.name, pixels.metrics(vs.answers))]
    for name, model in models.items():
        t0 = time.time()
        rows.append((name, vs.retrieval(model, name).metrics(vs.answers)))
        log(f"  {name}: R@20 {rows[-1][1]['recall'][20]:.3f} ({time.time() - t0:.0f} s)")
    log(f"zero-shot validation on {data}: {len(vs.query_ids)} train queries, {len(vs.gallery_ids)} cites")
    log(format_table(rows))
    return rows


def step_throughput(image_size: int, batch_pairs: int = 64, steps: int = 4, backbone: str = "mobilenetv3_large_100",
                    threads: int | None = 1, views: str = "generic") -> float:
    """Crops per second of the whole pretraining step (views + forward + backward + AdamW), after one warm-up."""
    import torch
    from pytorch_metric_learning.losses import NTXentLoss

    from .encoder import Encoder
    from .loop import LoopState, Schedule, train_one_epoch

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device("cpu")
    data = torch.randint(0, 256, (batch_pairs * 2, 1, 128, 128), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    batches = _Endless(_formula_batches(data, 2, batch_pairs, image_size, gen, dev, views))
    model = Encoder(backbone, 512, image_size=image_size).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    kw = dict(device=dev, prepare=lambda x: x, on_step=None)
    train_one_epoch(model, batches, NTXentLoss(0.1), opt, Schedule(10**6), LoopState(), max_steps=1, **kw)
    stats = train_one_epoch(model, batches, NTXentLoss(0.1), opt, Schedule(10**6), LoopState(), max_steps=steps, **kw)
    return stats.images_per_s
