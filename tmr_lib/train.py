"""Fine-tuning: one encoder per backbone x fold, each through the kit's one training loop.

    from tmr_lib.train import train_encoder, train_models
    result = train_encoder(cfg, comp, "runs/cpu", fold=0)
    result.best_recall, result.best_path, result.history        # Recall@20 on the held-out fold
    summary = train_models(cfg, "data/tmr-cpu", "runs/cpu")      # every backbone x fold + model.json

The loop itself is :func:`tmr_lib.loop.train_one_epoch` (pretraining calls it too); this module
passes in what fine-tuning chooses: the fold's pairs (:class:`PairData`), their views
(:class:`PairBatches`), the loss and optimiser, the schedule, the :class:`Validator` and the
:class:`Checkpoints` that keep the best epoch.

What happens, in order:

* the training pairs are split by label groups (``group_kfold``); fold ``fold`` is held out;
* every image is decoded, trimmed, padded and resized once (:class:`tmr_lib.embed.ImageStore`);
* each step takes ``batch_pairs`` (apply, cite) pairs and makes 4 crops of each pair -- weak
  and strong augmentation of the apply image and of the cite -- all labelled with the pair's
  label (the connected component of train.csv), so every crop of a label is a positive;
* optionally ``extra_cite_pairs`` unannotated cites per epoch join as pseudo-pairs (weak and
  strong crops of the same cite, the 2nd place's appendix idea);
* loss from :func:`tmr_lib.losses.make_loss`; CrossBatchMemory joins after
  ``xbm_start_epoch`` epochs;
* AdamW, linear warm-up then cosine decay (per optimiser step), gradient accumulation,
  AMP (fp16) on CUDA;
* before training (epoch 0) and after every epoch: Recall@20 and MRR of the held-out queries
  against their cites plus ``val_distractors`` random cites; the best epoch is saved
  (``best.safetensors``), the last state too (``last.pt``, so an interrupted run resumes), with
  ``history.csv`` and ``history.png``;
* under ``torchrun`` every process takes its share of each step and the loss sees the gathered
  batch (:mod:`tmr_lib.distributed`); rank 0 validates, saves and logs.

With ``max_train_minutes`` the schedule follows whichever ends first, the planned steps or
the time budget, so the learning rate still decays to its end when time runs out.
"""
from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from . import distributed as dist
from .augment import BatchAugment, TextBank, marks_augment
from .config import Config
from .embed import ImageStore, default_device, embed_images
from .encoder import Encoder, WeightsInfo, build_encoder, save_encoder
from .loop import LoopState, Schedule, lr_factor, train_one_epoch
from .losses import make_loss
from .retrieval import Retrieval

__all__ = ["TrainResult", "TrainSummary", "train_encoder", "train_models", "Validator", "PairData", "Checkpoints", "run_dir_for", "PairBatches", "validation_split",
           "lr_factor", "plot_history", "freeze_batchnorm", "freeze_early_layers"]


@dataclass
class TrainResult:
    model: Encoder
    best_path: Path
    run_dir: Path
    history: pd.DataFrame
    best_recall: float
    weights: WeightsInfo
    images_per_s: float
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    best_epoch: int = -1  #: the epoch kept (0: the starting weights were never beaten on the held-out fold)


def run_dir_for(out_dir: str | os.PathLike, backbone: str, fold: int | None) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in backbone)
    return Path(out_dir) / f"{safe}-fold{fold if fold is not None else 'all'}"


# ----------------------------------------------------------------------------------------
# Data: items -> augmented batches
# ----------------------------------------------------------------------------------------
AUGMENT_STYLES = ("kit", "2nd-place", "marks")


class PairBatches(Dataset):
    """Step ``i`` -> (uint8 crops (4B, 3, S, S), labels (4B,)) for one epoch's plan.

    An item is (row of the apply image or -1, row of the cite image, label); an unannotated
    cite is (-1, row, its own label) and gives weak/strong crops of itself twice.
    Works in DataLoader workers (the image tensor is shared with the worker processes).
    """

    def __init__(self, images: torch.Tensor, size: int, crops_per_pair: int = 4, extra=(),
                 text_bank: TextBank | None = None, style: str = "2nd-place"):
        """``style``: "kit", "2nd-place" (exact; tmr_lib.augment) or "marks"; ``text_bank``: the
        pseudo-logo's text (a TextBank for "kit", a FontBank for "2nd-place"; None: the recipe's own)."""
        if style not in AUGMENT_STYLES:
            raise ValueError(f"unknown augmentation {style!r}; choose from {', '.join(AUGMENT_STYLES)}")
        if crops_per_pair not in (2, 4):
            raise ValueError("crops_per_pair must be 2 or 4")
        self.images = images
        self.crops = crops_per_pair
        self.size, self.style = size, style
        self.augment = BatchAugment(size, extra, text_bank, recipe=style) if style != "marks" else None
        self.plan: list[np.ndarray] = []

    def set_plan(self, batches: list[np.ndarray]) -> None:
        self.plan = batches

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        items = self.plan[step]  # (B, 3): apply row, cite row, label
        apply_rows = np.where(items[:, 0] >= 0, items[:, 0], items[:, 1])
        a = self.images[torch.from_numpy(apply_rows)]
        c = self.images[torch.from_numpy(items[:, 1])]
        labels = torch.from_numpy(items[:, 2]).long()
        if self.style == "marks":  # the pretraining views: every crop an independent draw
            crops = [marks_augment(src, self.size) for src in ((a, c) if self.crops == 2 else (a, a, c, c))]
        elif self.crops == 4:
            crops = [self.augment(a, False), self.augment(a, True), self.augment(c, False), self.augment(c, True)]
        else:
            crops = [self.augment(a, False), self.augment(c, True)]
        return torch.cat(crops), labels.repeat(len(crops))


def validation_split(train: pd.DataFrame, cfg: Config, fold: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train rows, held-out rows) for ``fold`` (None: train on everything)."""
    n = len(train)
    if fold is None or cfg.n_folds < 2:
        return np.ones(n, bool), np.zeros(n, bool)
    from .data import group_kfold, stratified_kfold

    split = stratified_kfold if cfg.fold_method == "stratified" else group_kfold
    folds = split(train, n_splits=cfg.n_folds, seed=cfg.seed)
    return folds != fold, folds == fold


# ----------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------
def validation_gallery(val: pd.DataFrame, cite: pd.DataFrame, cfg: Config) -> tuple[list[str], list[str]]:
    """(gids, paths) of the validation gallery: the held-out pairs' cites + ``cfg.val_distractors``
    other cites drawn with ``cfg.seed`` (the same draw wherever it is asked for)."""
    gallery = val.drop_duplicates("cite_gid")[["cite_gid", "cite_path"]]
    gids, paths = list(gallery["cite_gid"]), list(gallery["cite_path"])
    rng = np.random.default_rng(cfg.seed + 1)
    pool = cite[~cite["gid"].isin(set(gids))]
    take = min(cfg.val_distractors, len(pool))
    pick = pool.iloc[np.sort(rng.choice(len(pool), size=take, replace=False))] if take else pool.iloc[:0]
    return gids + list(pick["gid"]), paths + list(pick["path"])


class Validator:
    """Recall@20 / MRR of held-out train queries against their cites + random distractor cites."""

    def __init__(self, train: pd.DataFrame, val_mask: np.ndarray, cite: pd.DataFrame, store: ImageStore,
                 cfg: Config, k: int = 20):
        val = train[val_mask]
        self.k = k
        self.cfg = cfg
        self.enabled = len(val) > 0
        if not self.enabled:
            return
        by_query = val.groupby("gid", sort=False)
        self.query_gids = [str(g) for g, _ in by_query]
        self.query_paths = [g["path"].iloc[0] for _, g in by_query]
        self.answers = [list(dict.fromkeys(g["cite_gid"])) for _, g in by_query]
        self.categories = [int(g["category"].iloc[0]) for _, g in by_query]
        gids, gallery_paths = validation_gallery(val, cite, cfg)
        self.gallery_gids = np.asarray(gids, dtype=str)
        self.query_images = store.images_of(self.query_paths)  # streamed when the store is
        self.gallery_images = store.images_of(gallery_paths)  # on disk: no copy of the distractors

    @property
    def answer_frame(self) -> pd.DataFrame:
        """The held-out queries' answers in the host's form (gid, cite_gids, category)."""
        return pd.DataFrame({"gid": self.query_gids, "cite_gids": self.answers, "category": self.categories})

    def retrieval(self, model: torch.nn.Module, name: str = "") -> Retrieval:
        """The held-out queries searched in the validation gallery with ``model``."""
        kw = dict(batch_size=self.cfg.embed_batch_size, test_scale=self.cfg.test_scale,
                  channels_last=self.cfg.channels_last, progress=False)
        return Retrieval.from_embeddings(self.query_gids, embed_images(model, self.query_images, **kw),
                                         self.gallery_gids, embed_images(model, self.gallery_images, **kw),
                                         k=self.k, name=name)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        if not self.enabled:
            return {}
        m = self.retrieval(model).metrics(self.answer_frame, ks=(1, self.k))
        return {"val_recall": m["recall"][self.k], "val_recall1": m["recall"][1], "val_mrr": m["mrr"]}


# ----------------------------------------------------------------------------------------
# History
# ----------------------------------------------------------------------------------------
def plot_history(history: pd.DataFrame, out: str | os.PathLike | None = None, title: str = ""):
    """Loss and validation Recall@20 per epoch, side by side; saved as PNG when ``out`` is given."""
    from .viz import _plt

    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(history["epoch"], history["loss"], marker="o")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax1.grid(alpha=0.3)
    if "val_recall" in history and history["val_recall"].notna().any():
        ax2.plot(history["epoch"], history["val_recall"], marker="o", color="tab:green")
        ax2.set_ylim(0, 1)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation Recall@20")
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=100)
        plt.close(fig)
    return fig


# ----------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------
def freeze_batchnorm(model: torch.nn.Module) -> int:
    """Put every BatchNorm layer in eval mode: it normalises with the statistics the starting weights
    learned instead of re-estimating them from heavily augmented training batches. Returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            n += 1
    return n


def freeze_early_layers(model: Encoder, share: float) -> int:
    """Stop training the first ``share`` of the backbone's parameter tensors (input side): with little
    labelled data the early, generic filters of a pretrained backbone are best left alone, and the
    steps get faster. Returns how many tensors were frozen."""
    if not share:
        return 0
    if not 0 < share < 1:
        raise ValueError(f"freeze_layers is a share of the backbone between 0 and 1, not {share}")
    tensors = list(model.backbone.parameters())
    n = int(len(tensors) * share)
    for p in tensors[:n]:
        p.requires_grad_(False)
    return n


def _epoch_plan(rng: np.random.Generator, pair_items: np.ndarray, extra_items: np.ndarray,
                n_extra: int, batch: int) -> list[np.ndarray]:
    items = pair_items
    if n_extra and len(extra_items):
        pick = extra_items[rng.choice(len(extra_items), size=min(n_extra, len(extra_items)), replace=False)]
        items = np.concatenate([items, pick])
    items = items[rng.permutation(len(items))]
    n_batches = max(1, len(items) // batch)  # drop the ragged end (BatchNorm, stable loss)
    return [items[i * batch:(i + 1) * batch] for i in range(n_batches)]


def _selection_score(row: dict[str, Any]) -> float:
    """Which epoch to keep: the held-out Recall@20, ties broken by MRR (a finer signal on a few hundred
    queries); without validation, the lowest loss."""
    if "val_recall" in row:
        return float(row["val_recall"]) + 1e-6 * float(row.get("val_mrr", 0.0))
    return -float(row["loss"])


def _state_for_resume(cfg: Config) -> dict[str, Any]:
    d = cfg.to_dict()
    for k in ("max_train_minutes", "num_workers", "train_workers", "embed_batch_size", "skip_bad_images",
              "cache_images"):
        d.pop(k, None)
    return d


# ----------------------------------------------------------------------------------------
# What fine-tuning passes to the loop: data, model and optimiser, checkpoints
# ----------------------------------------------------------------------------------------
@dataclass
class PairData:
    """One fold's training items (apply row, cite row, label) and its validator."""

    store: ImageStore
    pair_items: np.ndarray
    extra_items: np.ndarray
    n_classes: int
    validator: Validator

    @classmethod
    def build(cls, cfg: Config, comp, fold: int | None, store: ImageStore | None,
              cache_dir: str | os.PathLike | None, progress: bool) -> PairData:
        from .data import relabel

        train = relabel(comp.train.reset_index(drop=True), cfg.labels)
        train_mask, val_mask = validation_split(train, cfg, fold)
        tr = train[train_mask]
        label_ids = {lab: i for i, lab in enumerate(sorted(tr["label"].unique()))}
        if store is None:  # train pairs, the validation gallery, unannotated cites for pseudo-pairs
            need = list(train["path"]) + list(train["cite_path"])
            need += validation_gallery(train[val_mask], comp.cite, cfg)[1]
            if cfg.extra_cite_pairs:
                need += list(comp.cite["path"])
            store = ImageStore.load(need, cfg.image_size, cache_dir, num_workers=cfg.num_workers,
                                    progress=progress, desc="decode images", trim_fallback=cfg.trim_fallback,
                                    from_files=not cfg.cache_images)
        if store.size != cfg.image_size:
            raise ValueError(f"image store holds {store.size} px images, config wants {cfg.image_size}")
        pair_items = np.stack([store.rows(list(tr["path"])), store.rows(list(tr["cite_path"])),
                               tr["label"].map(label_ids).to_numpy()], axis=1).astype(np.int64)
        extra_items = np.zeros((0, 3), np.int64)
        if cfg.extra_cite_pairs:  # each unannotated cite is its own label: weak and strong crops of itself
            extra_cites = comp.cite[~comp.cite["gid"].isin(set(train["cite_gid"]))]
            rows = store.rows(list(extra_cites["path"]))
            extra_items = np.stack([np.full(len(rows), -1), rows, len(label_ids) + np.arange(len(rows))],
                                   axis=1).astype(np.int64)
        validator = Validator(train, val_mask if dist.is_main() else np.zeros_like(val_mask), comp.cite, store, cfg)
        return cls(store, pair_items, extra_items, len(label_ids) + len(extra_items), validator)

    def steps_per_epoch(self, cfg: Config) -> int:
        n_items = len(self.pair_items) + min(cfg.extra_cite_pairs, len(self.extra_items))
        return max(1, n_items // cfg.batch_pairs)


def _build_model(cfg: Config, backbone: str, fold: int | None, device: torch.device, log: Callable[[str], None]):
    """(encoder, the module that runs forward (DDP under torchrun), where its weights came from)."""
    model, weights = build_encoder(backbone, cfg.pretrained, cfg.embed_dim, cfg.pooling, cfg.image_size, cfg.seed,
                                   head_bn=cfg.head_bn, head_bias=cfg.head_bias)
    log(f"[train] {backbone} fold {fold}: starting weights = {weights}")
    frozen = freeze_early_layers(model, cfg.freeze_layers)
    if frozen:
        log(f"[train] {frozen} of {len(list(model.backbone.parameters()))} backbone tensors frozen (input side)")
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net = model
    if dist.world_size() > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    return model, net, weights


def _build_optimizer(cfg: Config, model: Encoder, loss_fn: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW over the trainable encoder weights; a loss's own weights (ArcFace centres) at 10x the rate."""
    params = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_params:
        params.append({"params": loss_params, "lr": cfg.lr * 10})
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _build_schedule(cfg: Config, steps_per_epoch: int) -> Schedule:
    """The learning-rate schedule of ``cfg.lr_schedule``: "step" (warm-up, then cosine every update to
    1 %) or "epoch" (the 2nd place's: cosine to 0 moved once per epoch, no warm-up)."""
    updates = math.ceil(steps_per_epoch / cfg.accum_steps)
    budget = cfg.max_train_minutes * 60 if cfg.max_train_minutes else None
    if cfg.lr_schedule == "epoch":
        return Schedule(total_updates=max(1, cfg.epochs * updates), warmup=0.0, budget_s=budget, floor=0.0,
                        epoch_updates=updates)
    return Schedule(total_updates=max(1, cfg.epochs * updates), warmup=cfg.warmup_epochs / max(cfg.epochs, 1),
                    budget_s=budget)


@dataclass
class Checkpoints:
    """best.safetensors (the kept epoch), last.pt (resume), history.csv/.png of one run folder."""

    run_dir: Path
    cfg: Config
    fold: int | None
    weights: WeightsInfo
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float = -1.0
    best_epoch: int = -1
    next_epoch: int = 0
    finished: bool = False

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.safetensors"

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    def resume(self, model, loss_fn, optimizer, scaler, state: LoopState, device, log) -> bool:
        """Load last.pt when it was written with the same settings; True when it was."""
        if not self.last_path.is_file():
            return False
        ck = torch.load(self.last_path, map_location=device, weights_only=False)
        if ck.get("config") != _state_for_resume(self.cfg):
            log(f"[train] {self.last_path} was written with other settings: starting afresh")
            return False
        model.load_state_dict(ck["model"])
        loss_fn.load_state_dict(ck["loss"], strict=False)
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        self.next_epoch, state.updates = ck["epoch"] + 1, ck["updates"]
        self.best, self.best_epoch, self.history = ck["best"], ck.get("best_epoch", -1), ck["history"]
        self.finished = ck.get("finished", False)
        state.started = time.time() - ck["elapsed"]
        log(f"[train] resuming {self.run_dir} after epoch {self.next_epoch} (best Recall@20 {self.best:.3f})")
        return True

    def record(self, row: dict[str, Any], model: Encoder) -> None:
        """Add an epoch's row; save the model as kept when it beats every earlier epoch (or, with
        ``keep_epoch="last"``, the 2nd place's rule, always: the last epoch is kept)."""
        self.history.append(row)
        score = _selection_score(row)
        if score > self.best or not self.best_path.is_file() or self.cfg.keep_epoch == "last":
            self.best, self.best_epoch = score, row["epoch"]
            save_encoder(model, self.best_path, meta={"epoch": row["epoch"], "fold": self.fold,
                                                      "weights": str(self.weights),
                                                      "val": {k: v for k, v in row.items() if k.startswith("val")}})

    def save_last(self, epoch: int, done: bool, model, loss_fn, optimizer, scaler, state: LoopState,
                  backbone: str) -> None:
        torch.save({"model": model.state_dict(), "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "epoch": epoch, "updates": state.updates, "best": self.best,
                    "elapsed": state.elapsed(), "history": self.history, "finished": done,
                    "best_epoch": self.best_epoch, "config": _state_for_resume(self.cfg)},
                   self.run_dir / "last.pt.tmp")
        os.replace(self.run_dir / "last.pt.tmp", self.last_path)
        pd.DataFrame(self.history).to_csv(self.run_dir / "history.csv", index=False)
        plot_history(pd.DataFrame(self.history), self.run_dir / "history.png", title=f"{backbone} fold {self.fold}")


def _log_epoch(log, row: dict[str, Any], epochs: int) -> None:
    msg = f"[train] epoch {row['epoch']}/{epochs} loss {row['loss']:.4f}"
    if "val_recall" in row:
        msg += f"  val Recall@20 {row['val_recall']:.3f}  MRR {row['val_mrr']:.3f}"
    log(msg + f"  ({row['seconds']:.0f} s, {row['images_per_s']:.0f} img/s)")


@contextmanager
def _cpu_threads(device: torch.device, workers: int):
    """On a CPU: one augmentation process beside the model, the model gets the other cores (fewer
    model threads than cores also keeps OpenMP from stalling on a shared machine)."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------
# Fine-tuning one encoder
# ----------------------------------------------------------------------------------------
def train_encoder(cfg: Config, comp, out_dir: str | os.PathLike, fold: int | None = 0,
                  backbone: str | None = None, store: ImageStore | None = None, resume: bool = True,
                  progress: bool = True, log: Callable[[str], None] = print,
                  cache_dir: str | os.PathLike | None = None, device: torch.device | str | None = None
                  ) -> TrainResult:
    """Train one encoder for ``backbone`` (default the first) holding out ``fold``; see module doc."""
    backbone = backbone or cfg.backbones[0]
    cfg = cfg.for_backbone(backbone)
    if dist.world_size() > 1:  # under torchrun: this rank's device; rank 0 alone logs, validates and saves
        device, progress = dist.device(), progress and dist.is_main()
        log = log if dist.is_main() else (lambda _msg: None)
        if cfg.batch_pairs % dist.world_size():
            raise ValueError(f"batch_pairs={cfg.batch_pairs} must be divisible by the {dist.world_size()} processes")
    device = torch.device(device) if device is not None else default_device()
    run_dir = run_dir_for(out_dir, backbone, fold)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    data = PairData.build(cfg, comp, fold, store, cache_dir, progress)
    model, net, weights = _build_model(cfg, backbone, fold, device, log)
    loss_fn = make_loss(cfg.loss, cfg.embed_dim, num_classes=data.n_classes, xbm_memory=cfg.xbm_memory).to(device)
    optimizer = _build_optimizer(cfg, model, loss_fn)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    schedule = _build_schedule(cfg, data.steps_per_epoch(cfg))
    state = LoopState()
    ckpt = Checkpoints(run_dir, cfg, fold, weights)
    if resume and ckpt.resume(model, loss_fn, optimizer, scaler, state, device, log):
        rng = np.random.default_rng(cfg.seed + 1000 * ckpt.next_epoch)
    elif dist.is_main():  # a fresh run: an older last.pt must never be paired with this run's best
        ckpt.last_path.unlink(missing_ok=True)

    if ckpt.next_epoch == 0 and not ckpt.history and data.validator.enabled and cfg.epochs > 0:
        # epoch 0: the starting weights, so the curve starts where training starts and the best
        # checkpoint is never worse on the held-out fold than what training began from
        row = {"epoch": 0, "loss": float("nan"), "lr": 0.0, "xbm": False, "seconds": 0.0,
               "images_per_s": float("nan"), **data.validator(model)}
        ckpt.record(row, model)
        log(f"[train] epoch 0 (starting weights): val Recall@20 {row['val_recall']:.3f}  MRR {row['val_mrr']:.3f}")
        state.started = time.time()  # the time budget and the warm-up count training only

    dataset = PairBatches(data.store.images, cfg.image_size, cfg.crops_per_pair, cfg.aug_extra, style=cfg.augment)
    workers = cfg.num_workers if cfg.train_workers is None else cfg.train_workers
    workers = min(workers, 1) if device.type == "cpu" else workers
    with _cpu_threads(device, workers):
        for epoch in range(ckpt.next_epoch, cfg.epochs if not ckpt.finished else ckpt.next_epoch):
            plan = _epoch_plan(rng, data.pair_items, data.extra_items, cfg.extra_cite_pairs, cfg.batch_pairs)
            dataset.set_plan([b[dist.shard(len(b))] for b in plan])  # every rank: its share of each step
            loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                prefetch_factor=2 if workers else None)
            loss_fn.use_memory = loss_fn.memory is not None and epoch >= cfg.xbm_start_epoch
            model.train()
            if cfg.freeze_bn:
                freeze_batchnorm(model)
            stats = train_one_epoch(model, loader, loss_fn, optimizer, schedule, state, device=device, net=net,
                                    amp="fp16" if cfg.amp else None, scaler=scaler, accum_steps=cfg.accum_steps,
                                    channels_last=cfg.channels_last, progress=progress,
                                    desc=f"epoch {epoch + 1}/{cfg.epochs}")
            if not dist.is_main():  # rank 0 validates and writes; the others wait for it
                dist.barrier()
                if stats.out_of_time:
                    break
                continue
            row = {"epoch": epoch + 1, "loss": stats.loss, "lr": stats.lr, "xbm": bool(loss_fn.use_memory),
                   "seconds": round(stats.seconds, 1),
                   "images_per_s": round(len(stats.losses) * cfg.images_per_step / max(1e-9, stats.seconds), 1),
                   **data.validator(model)}
            ckpt.record(row, model)
            _log_epoch(log, row, cfg.epochs)
            ckpt.save_last(epoch, stats.out_of_time or epoch + 1 == cfg.epochs, model, loss_fn, optimizer, scaler,
                           state, backbone)
            dist.barrier()
            if stats.out_of_time:
                log(f"[train] time budget of {cfg.max_train_minutes} min reached after epoch {epoch + 1}")
                break
    return _finish(ckpt, model, device, weights, state, data.validator.enabled)


def _finish(ckpt: Checkpoints, model: Encoder, device: torch.device, weights: WeightsInfo, state: LoopState,
            has_val: bool) -> TrainResult:
    """Reload the kept epoch (every rank) and report."""
    from .encoder import load_encoder

    if dist.is_main() and not ckpt.best_path.is_file():  # nothing trained (epochs=0): keep the starting model
        save_encoder(model, ckpt.best_path, meta={"epoch": 0, "fold": ckpt.fold, "weights": str(weights)})
    dist.barrier()
    best_model = load_encoder(ckpt.best_path).to(device)
    hist = pd.DataFrame(ckpt.history)
    best_epoch = ckpt.best_epoch
    best_recall = float(hist.loc[hist["epoch"] == best_epoch, "val_recall"].iloc[0]) \
        if "val_recall" in hist and best_epoch in set(hist["epoch"]) else float("nan")
    best_recall, best_epoch = dist.broadcast_object((best_recall, best_epoch))
    ips = state.images_seen / state.train_seconds if state.train_seconds else float("nan")
    has_val = dist.broadcast_object(has_val)
    return TrainResult(best_model, ckpt.best_path, ckpt.run_dir, hist, best_recall if has_val else float("nan"),
                       weights, ips, state.elapsed(), best_epoch=best_epoch)


# ----------------------------------------------------------------------------------------
# Every backbone x fold of a recipe
# ----------------------------------------------------------------------------------------
@dataclass
class TrainSummary:
    model_dir: Path
    results: list[TrainResult]  #: one per backbone x fold
    seconds: float

    @property
    def images_per_s(self) -> float:
        vals = [r.images_per_s for r in self.results if r.images_per_s == r.images_per_s]
        return float(np.mean(vals)) if vals else float("nan")


def train_models(cfg: Config, data: str | os.PathLike, out: str | os.PathLike, store: ImageStore | None = None,
                 resume: bool = True, progress: bool = True, log: Callable[[str], None] = print) -> TrainSummary:
    """Train every backbone x fold of ``cfg``; write ``out/model.json`` for :func:`tmr_lib.predict.predict`."""
    from .data import load_competition
    from .encoder import save_ensemble
    from .images import image_store

    t0 = time.time()
    comp = load_competition(data, skip_bad_images=cfg.skip_bad_images, log=log)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, files = [], []
    for backbone in cfg.backbones:
        bcfg = cfg.for_backbone(backbone)
        fits = store is not None and store.size == bcfg.image_size and store.trim_fallback == bcfg.trim_fallback
        bstore = store if fits else image_store(bcfg, comp, progress)
        group = []
        for fold in cfg.folds:
            r = train_encoder(bcfg, comp, out, fold=fold if cfg.n_folds > 1 else None, backbone=backbone,
                              store=bstore, resume=resume, progress=progress, log=log)
            results.append(r)
            group.append(r.best_path)
        files.append(group)
    if dist.is_main():  # under torchrun: rank 0 writes, the others wait
        save_ensemble(files, out, extra={
            "config": cfg.to_dict(),
            "weights": [str(r.weights) for r in results],
            "val_recall@20": [r.best_recall for r in results],
            "processes": dist.world_size(),
        })
    dist.barrier()
    return TrainSummary(out, results, time.time() - t0)
