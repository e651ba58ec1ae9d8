"""Training one encoder (one backbone, one fold): a plain PyTorch loop, as the 2nd place ran it.

    from tmr_lib.train import train_encoder
    result = train_encoder(cfg, comp, "runs/cpu", fold=0)
    result.best_recall, result.best_path, result.history        # Recall@20 on the held-out fold

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from . import distributed as dist
from .augment import BatchAugment, TextBank, marks_augment, normalize
from .config import Config
from .embed import ImageStore, default_device, embed_images
from .encoder import Encoder, WeightsInfo, build_encoder, save_encoder
from .losses import make_loss

__all__ = ["TrainResult", "train_encoder", "run_dir_for", "PairBatches", "validation_split",
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


def lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` share of training, then cosine down to 1 %."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 0.01)
    rest = (progress - warmup) / max(1e-9, 1.0 - warmup)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * rest))


# ----------------------------------------------------------------------------------------
# Data: items -> augmented batches
# ----------------------------------------------------------------------------------------
AUGMENT_STYLES = ("2nd-place", "marks")


class PairBatches(Dataset):
    """Step ``i`` -> (uint8 crops (4B, 3, S, S), labels (4B,)) for one epoch's plan.

    An item is (row of the apply image or -1, row of the cite image, label); an unannotated
    cite is (-1, row, its own label) and gives weak/strong crops of itself twice.
    Works in DataLoader workers (the image tensor is shared with the worker processes).
    """

    def __init__(self, images: torch.Tensor, size: int, crops_per_pair: int = 4, extra=(),
                 text_bank: TextBank | None = None, style: str = "2nd-place"):
        if style not in AUGMENT_STYLES:
            raise ValueError(f"unknown augmentation {style!r}; choose from {', '.join(AUGMENT_STYLES)}")
        if crops_per_pair not in (2, 4):
            raise ValueError("crops_per_pair must be 2 or 4")
        self.images = images
        self.crops = crops_per_pair
        self.size, self.style = size, style
        self.augment = BatchAugment(size, extra, text_bank) if style == "2nd-place" else None
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
    from .data import group_kfold

    folds = group_kfold(train, n_splits=cfg.n_folds, seed=cfg.seed)
    return folds != fold, folds == fold


# ----------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------
class Validator:
    """Recall@20 / MRR of held-out train queries against their cites + random distractor cites."""

    def __init__(self, train: pd.DataFrame, val_mask: np.ndarray, cite: pd.DataFrame, store: ImageStore,
                 cfg: Config, k: int = 20):
        from .metrics import retrieval_metrics  # noqa: F401 - fail early if missing

        val = train[val_mask]
        self.k = k
        self.cfg = cfg
        self.enabled = len(val) > 0
        if not self.enabled:
            return
        by_query = val.groupby("gid", sort=False)
        self.query_paths = [g["path"].iloc[0] for _, g in by_query]
        self.answers = [list(dict.fromkeys(g["cite_gid"])) for _, g in by_query]
        self.categories = [int(g["category"].iloc[0]) for _, g in by_query]
        gallery = val.drop_duplicates("cite_gid")[["cite_gid", "cite_path"]]
        gids, paths = list(gallery["cite_gid"]), list(gallery["cite_path"])
        rng = np.random.default_rng(cfg.seed + 1)
        pool = cite[~cite["gid"].isin(set(gids))]
        take = min(cfg.val_distractors, len(pool))
        pick = pool.iloc[np.sort(rng.choice(len(pool), size=take, replace=False))] if take else pool.iloc[:0]
        self.gallery_gids = np.asarray(gids + list(pick["gid"]), dtype=str)
        gallery_paths = paths + list(pick["path"])
        self.query_images = store.get(self.query_paths)
        self.gallery_images = store.get(gallery_paths)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        from .metrics import retrieval_metrics

        if not self.enabled:
            return {}
        kw = dict(batch_size=self.cfg.embed_batch_size, test_scale=self.cfg.test_scale,
                  channels_last=self.cfg.channels_last, progress=False)
        q = embed_images(model, self.query_images, **kw)
        g = embed_images(model, self.gallery_images, **kw)
        sims = torch.from_numpy(q) @ torch.from_numpy(g).T
        top = torch.topk(sims, min(self.k, sims.shape[1]), dim=1).indices.numpy()
        ranked = self.gallery_gids[top]
        m = retrieval_metrics(ranked, self.answers, self.categories, ks=(1, self.k))
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
    for k in ("max_train_minutes", "num_workers", "embed_batch_size"):
        d.pop(k, None)
    return d


def train_encoder(cfg: Config, comp, out_dir: str | os.PathLike, fold: int | None = 0,
                  backbone: str | None = None, store: ImageStore | None = None, resume: bool = True,
                  progress: bool = True, log: Callable[[str], None] = print,
                  cache_dir: str | os.PathLike | None = None, device: torch.device | str | None = None
                  ) -> TrainResult:
    """Train one encoder for ``backbone`` (default the first) holding out ``fold``; see module doc."""
    from tqdm.auto import tqdm

    backbone = backbone or cfg.backbones[0]
    cfg = cfg.for_backbone(backbone)
    world = dist.world_size()
    if world > 1:  # under torchrun: this rank's device; rank 0 alone logs, validates and saves
        device = dist.device()
        progress = progress and dist.is_main()
        log = log if dist.is_main() else (lambda _msg: None)
        if cfg.batch_pairs % world:
            raise ValueError(f"batch_pairs={cfg.batch_pairs} must be divisible by the {world} processes")
    device = torch.device(device) if device is not None else default_device()
    run_dir = run_dir_for(out_dir, backbone, fold)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    train = comp.train.reset_index(drop=True)
    train_mask, val_mask = validation_split(train, cfg, fold)
    tr = train[train_mask]
    label_ids = {lab: i for i, lab in enumerate(sorted(tr["label"].unique()))}
    n_labels = len(label_ids)

    # images: train pairs, validation queries + gallery, unannotated cites for pseudo-pairs
    used_cites = set(train["cite_gid"])
    extra_cites = comp.cite[~comp.cite["gid"].isin(used_cites)]
    if store is None:
        need = list(train["path"]) + list(train["cite_path"])
        if cfg.val_distractors or cfg.extra_cite_pairs:
            need += list(comp.cite["path"])
        store = ImageStore.load(need, cfg.image_size, cache_dir, num_workers=cfg.num_workers,
                                progress=progress, desc="decode images")
    if store.size != cfg.image_size:
        raise ValueError(f"image store holds {store.size} px images, config wants {cfg.image_size}")
    pair_items = np.stack([store.rows(list(tr["path"])), store.rows(list(tr["cite_path"])),
                           tr["label"].map(label_ids).to_numpy()], axis=1).astype(np.int64)
    if cfg.extra_cite_pairs:
        extra_rows = store.rows(list(extra_cites["path"]))
        extra_items = np.stack([np.full(len(extra_rows), -1), extra_rows,
                                n_labels + np.arange(len(extra_rows))], axis=1).astype(np.int64)
    else:
        extra_items = np.zeros((0, 3), np.int64)
    validator = Validator(train, val_mask if dist.is_main() else np.zeros_like(val_mask), comp.cite, store, cfg)

    # model, loss, optimiser
    model, weights = build_encoder(backbone, cfg.pretrained, cfg.embed_dim, cfg.pooling, cfg.image_size, cfg.seed)
    log(f"[train] {backbone} fold {fold}: starting weights = {weights}")
    frozen = freeze_early_layers(model, cfg.freeze_layers)
    if frozen:
        log(f"[train] {frozen} of {len(list(model.backbone.parameters()))} backbone tensors frozen (input side)")
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    n_classes = n_labels + (len(extra_items) if cfg.extra_cite_pairs else 0)
    loss_fn = make_loss(cfg.loss, cfg.embed_dim, num_classes=n_classes, xbm_memory=cfg.xbm_memory).to(device)
    params = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_params:
        params.append({"params": loss_params, "lr": cfg.lr * 10})
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    n_items = len(pair_items) + (min(cfg.extra_cite_pairs, len(extra_items)) if cfg.extra_cite_pairs else 0)
    steps_per_epoch = max(1, n_items // cfg.batch_pairs)
    total_updates = max(1, cfg.epochs * math.ceil(steps_per_epoch / cfg.accum_steps))
    budget_s = cfg.max_train_minutes * 60 if cfg.max_train_minutes else None

    history: list[dict[str, Any]] = []
    start_epoch, updates, best, elapsed_before, best_epoch = 0, 0, -1.0, 0.0, -1
    best_path = run_dir / "best.safetensors"
    last_path = run_dir / "last.pt"
    finished = False
    if resume and last_path.is_file():
        state = torch.load(last_path, map_location=device, weights_only=False)
        if state.get("config") == _state_for_resume(cfg):
            model.load_state_dict(state["model"])
            loss_fn.load_state_dict(state["loss"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            start_epoch, updates = state["epoch"] + 1, state["updates"]
            best, elapsed_before = state["best"], state["elapsed"]
            best_epoch = state.get("best_epoch", -1)
            history = state["history"]
            finished = state.get("finished", False)
            rng = np.random.default_rng(cfg.seed + 1000 * start_epoch)
            log(f"[train] resuming {run_dir} after epoch {state['epoch'] + 1} (best Recall@20 {best:.3f})")
        else:
            log(f"[train] {last_path} was written with other settings: starting afresh")

    dataset = PairBatches(store.images, cfg.image_size, cfg.crops_per_pair, cfg.aug_extra, style=cfg.augment)
    workers = cfg.num_workers
    threads_before = torch.get_num_threads()
    if device.type == "cpu":
        # One augmentation process beside the model; the model gets the other cores. Fewer
        # model threads than cores also keeps OpenMP from stalling when the machine is shared.
        workers = min(cfg.num_workers, 1)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
    t_start = time.time() - elapsed_before
    images_seen, train_time = 0, 0.0

    def save_last(epoch: int, done: bool) -> None:
        torch.save({"model": model.state_dict(), "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "epoch": epoch, "updates": updates, "best": best,
                    "elapsed": time.time() - t_start, "history": history, "finished": done,
                    "best_epoch": best_epoch,
                    "config": _state_for_resume(cfg)}, run_dir / "last.pt.tmp")
        os.replace(run_dir / "last.pt.tmp", last_path)

    if start_epoch == 0 and not history and validator.enabled and cfg.epochs > 0:
        # epoch 0: the starting weights, so the curve starts where training starts and the best
        # checkpoint is never worse on the held-out fold than what training began from
        row = {"epoch": 0, "loss": float("nan"), "lr": 0.0, "xbm": False, "seconds": 0.0,
               "images_per_s": float("nan"), **validator(model)}
        history.append(row)
        best, best_epoch = _selection_score(row), 0
        save_encoder(model, best_path, meta={"epoch": 0, "fold": fold, "weights": str(weights),
                                             "val": {k: v for k, v in row.items() if k.startswith("val")}})
        log(f"[train] epoch 0 (starting weights): val Recall@20 {row['val_recall']:.3f}  MRR {row['val_mrr']:.3f}")
        t_start = time.time() - elapsed_before  # the time budget and the warm-up count training only

    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.epochs if not finished else start_epoch):
        plan = _epoch_plan(rng, pair_items, extra_items, cfg.extra_cite_pairs, cfg.batch_pairs)
        dataset.set_plan([b[dist.shard(len(b))] for b in plan])  # every rank: its share of each step
        loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                            prefetch_factor=2 if workers else None)
        loss_fn.use_memory = loss_fn.memory is not None and epoch >= cfg.xbm_start_epoch
        model.train()
        if cfg.freeze_bn:
            freeze_batchnorm(model)
        losses = []
        t_epoch = time.time()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", disable=not progress, leave=False)
        out_of_time = False
        for step, (x, y) in enumerate(bar):
            x = normalize(x.to(device, non_blocking=True))
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                emb = net(x)
            # one process: a no-op; torchrun: the global batch, gradients flowing back to each rank
            emb, y = dist.gather_with_grad(emb.float()), dist.gather_rows(y)
            loss = loss_fn(emb, y) / cfg.accum_steps
            scaler.scale(loss).backward()
            images_seen += len(y)
            if (step + 1) % cfg.accum_steps == 0 or step + 1 == len(dataset):
                progress_share = updates / total_updates
                if budget_s:
                    progress_share = max(progress_share, (time.time() - t_start) / budget_s)
                for g, base in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = base * lr_factor(progress_share, cfg.warmup_epochs / max(cfg.epochs, 1))
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                updates += 1
            losses.append(loss.detach().item() * cfg.accum_steps)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
            if dist.any_true(bool(budget_s) and time.time() - t_start > budget_s):
                out_of_time = True
                break
        bar.close()
        train_time += time.time() - t_epoch
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
               "lr": optimizer.param_groups[0]["lr"], "xbm": bool(loss_fn.use_memory),
               "seconds": round(time.time() - t_epoch, 1),
               "images_per_s": round(len(losses) * cfg.images_per_step / max(1e-9, time.time() - t_epoch), 1)}
        if not dist.is_main():  # rank 0 validates and writes; the others wait for it
            dist.barrier()
            if out_of_time:
                break
            continue
        row.update(validator(model))
        history.append(row)
        score = _selection_score(row)
        msg = f"[train] epoch {epoch + 1}/{cfg.epochs} loss {row['loss']:.4f}"
        if "val_recall" in row:
            msg += f"  val Recall@20 {row['val_recall']:.3f}  MRR {row['val_mrr']:.3f}"
        log(msg + f"  ({row['seconds']:.0f} s, {row['images_per_s']:.0f} img/s)")
        if score > best or not best_path.is_file():
            best, best_epoch = score, epoch + 1
            save_encoder(model, best_path, meta={"epoch": epoch + 1, "fold": fold, "weights": str(weights),
                                                 "val": {k: v for k, v in row.items() if k.startswith("val")}})
        done = out_of_time or epoch + 1 == cfg.epochs
        save_last(epoch, done)
        pd.DataFrame(history).to_csv(run_dir / "history.csv", index=False)
        plot_history(pd.DataFrame(history), run_dir / "history.png", title=f"{backbone} fold {fold}")
        dist.barrier()
        if out_of_time:
            log(f"[train] time budget of {cfg.max_train_minutes} min reached after epoch {epoch + 1}")
            break

    torch.set_num_threads(threads_before)
    if dist.is_main() and not best_path.is_file():  # nothing trained (epochs=0): keep the starting model
        save_encoder(model, best_path, meta={"epoch": 0, "fold": fold, "weights": str(weights)})
    dist.barrier()
    from .encoder import load_encoder

    best_model = load_encoder(best_path).to(device)
    hist = pd.DataFrame(history)
    best_recall = float(hist.loc[hist["epoch"] == best_epoch, "val_recall"].iloc[0]) \
        if "val_recall" in hist and best_epoch in set(hist["epoch"]) else float("nan")
    best_recall, best_epoch = dist.broadcast_object((best_recall, best_epoch))
    ips = images_seen / train_time if train_time else float("nan")
    has_val = dist.broadcast_object(validator.enabled)
    return TrainResult(best_model, best_path, run_dir, hist, best_recall if has_val else float("nan"),
                       weights, ips, time.time() - t_start, best_epoch=best_epoch)
