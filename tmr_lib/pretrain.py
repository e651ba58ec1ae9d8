"""Self-supervised pretraining of a small mark encoder on every mark the kit can obtain offline.

Why: on a CPU, starting weights matter more than anything else. A random encoder trained for
minutes barely beats raw pixels, and ImageNet weights need a hub that offline machines cannot
reach. So the kit pretrains its own starting point on open marks:

- a *pair pool*: random trademark scenes (the builder's base marks and composites) each drawn
  twice, once as registered and once changed the way the four competition categories change a
  mark (redrawn, part of a larger mark or a part of it, recoloured or inverted, rotated or
  mirrored); rendered once in parallel into a uint8 array;
- batched tensor augmentation on top (zoom, crop, flip, quarter turns, colour mixing, gray,
  inversion, blur) with one affine `grid_sample` per batch, so the data path never starves;
- NT-Xent (SimCLR's loss, from pytorch-metric-learning): each pair's two views attract, every
  other image in the batch repels.

Honest evaluation: whole marks (10%) and one whole icon family (DejaVu dingbats) are held out of
the pool; `evaluate_heldout` scores retrieval on scenes made only of held-out marks.

    python -m tmr_lib pretrain --minutes 5 --out runs/pretrain        # CPU or GPU
    python -m tmr_lib pretrain --resume runs/pretrain/last.pt --minutes 60
"""
from __future__ import annotations

import json
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


def augment_batch(x, out: int, generator=None):
    """uint8 (B, 3, S, S) -> augmented, normalised float (B, 3, out, out), a new draw per image.

    The pretraining views: :func:`tmr_lib.augment.marks_augment` (zoom, shift, tilt, quarter
    turns, mirror, channel mixing, gray, inversion, blur), kept in float and normalised.
    """
    from .augment import MEAN, STD, marks_augment

    y = marks_augment(x, out, generator, as_uint8=False)
    mean = y.new_tensor(MEAN).view(1, 3, 1, 1)
    std = y.new_tensor(STD).view(1, 3, 1, 1)
    return (y - mean) / std


# --------------------------------------------------------------------------- training


def _pair_batches(data, batch_pairs: int, image_size: int, gen, device):
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
        yield augment_batch(torch.cat([a, b]), image_size, gen), labels


#: optimiser steps between two checkpoints (one "epoch" of the loop)
CHECKPOINT_STEPS = 500


def pretrain(cfg: PretrainConfig, out_dir: str | Path, resume: str | Path | None = None,
             pool_path: str | Path | None = None, progress: bool = True, log=print) -> Path:
    """Pretrain an Encoder on the pair pool; writes last.pt (resumable) and history.json.

    The loop is the kit's one training loop (:func:`tmr_lib.loop.train_one_epoch`), called in
    rounds of :data:`CHECKPOINT_STEPS` steps with a checkpoint after each; what pretraining passes
    in: the endless batches of augmented scene pairs, NT-Xent, AdamW, a warm-up + cosine
    :class:`tmr_lib.loop.Schedule` over the time budget (or ``max_steps``), bf16 on CUDA."""
    import torch
    from pytorch_metric_learning.losses import NTXentLoss

    from .encoder import Encoder
    from .loop import LoopState, Schedule, train_one_epoch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    data, n_train, n_held = _load_pool(cfg, out_dir, pool_path, progress, log)
    if device.type == "cuda":
        data = data.to(device)

    model = Encoder(cfg.backbone, cfg.embed_dim, image_size=cfg.image_size).to(device)
    model = model.to(memory_format=torch.channels_last)
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
    seen_start = state.images_seen

    def on_step(step: int, loss: float) -> None:
        if step % 25 == 0 or step == 1:
            rate = (state.images_seen - seen_start) / max(1e-6, state.elapsed())
            history.append({"step": step, "loss": round(loss, 4), "lr": opt.param_groups[0]["lr"],
                            "crops_per_s": round(rate, 1)})

    batches = _pair_batches(data, cfg.batch_pairs, cfg.image_size, gen, device)
    model.train()
    while state.updates < total_steps:
        stats = train_one_epoch(model, batches, loss_fn, opt, schedule, state, device=device, prepare=lambda x: x,
                                amp="bf16", max_steps=min(CHECKPOINT_STEPS, total_steps - state.updates),
                                progress=progress, desc=f"pretraining (step {state.updates})", on_step=on_step)
        _save(out_dir / "last.pt", model, opt, state.updates, state.images_seen, history, cfg)
        if stats.out_of_time:
            break
    elapsed = state.elapsed()
    summary = {"steps": state.updates, "crops_seen": state.images_seen, "seconds_this_run": round(elapsed, 1),
               "crops_per_s": round((state.images_seen - seen_start) / max(elapsed, 1e-6), 1),
               "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
               "n_train_marks": n_train, "n_heldout_marks": n_held, "config": asdict(cfg)}
    (out_dir / "pretrain_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"pretrained {state.updates} steps, {state.images_seen} crops, {summary['crops_per_s']} crops/s "
        f"on {summary['device']}")
    return out_dir / "last.pt"


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
