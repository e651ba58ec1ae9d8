"""Presets for the whole pipeline as one small dataclass a notebook can print and tweak.

    from tmr_lib.config import get_config
    cfg = get_config()               # TMR_PRESET (ci / cpu / gpu), default "cpu"
    cfg = get_config("cpu", epochs=3, image_size=96)
    print(cfg)                       # one line per field, grouped as below

Three recipes (presets; ``--preset`` / ``$TMR_PRESET``). A recipe is *how* to train; a dataset
*size* (ci / cpu / full, ``tmr data build --size``) is what to train on, and ``Config.dataset``
says which size a recipe uses by default: ci -> ci, cpu -> cpu, gpu -> cpu.

* ``ci``  -- the kit's teaching start (tmr-teach, a MobileNetV3) at 64 px, one short epoch: seconds, for the tests.
* ``cpu`` -- the teaching start fine-tuned at 112 px: minutes on 2 cores. ``DOMAIN_RECIPE`` fine-tunes
  the domain start (tmr-marks) instead.
* ``gpu`` -- the 2nd-place configuration: swin_large_patch4_window12_384 (20 epochs, batch 8
  x 4 accumulation) + convnext_base 22k 384 (10 epochs, batch 16), 512-d each, 5 folds, fp16,
  AdamW 1e-4, ContrastiveLoss in CrossBatchMemory(1024).

Per-backbone settings (the 2nd place trained its two models differently) live in
``overrides``; ``cfg.for_backbone(name)`` returns the config one backbone trains with.
This module imports nothing heavy (no torch), so the command line can read it instantly.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Config", "PRESETS", "METHODS", "DOMAIN_RECIPE", "get_config", "preset_names", "DEFAULT_PRESET", "DATASET_SIZES"]

#: dataset sizes (``tmr data build --size``; tmr_lib.builder.BUILD_PRESETS): a different word from a
#: recipe (ci / cpu / gpu); each recipe names its size in ``Config.dataset``.
DATASET_SIZES = ("ci", "cpu", "full")

DEFAULT_PRESET = "cpu"


@dataclass
class Config:
    """Every knob of the pipeline; the presets below fill it in."""

    name: str = "cpu"
    #: the dataset size this recipe trains on by default (``tmr data build --size``): ci, cpu or full.
    #: The one place a recipe name meets a dataset size (the gpu recipe trains on the cpu-sized competition).
    dataset: str = "cpu"

    # -- encoder ---------------------------------------------------------------------------
    #: timm model names; several backbones are trained separately and their embeddings concatenated.
    backbones: tuple[str, ...] = ("mobilenetv3_small_100",)
    #: starting weights: "random", "imagenet" (timm hub), a local file/folder, or a registered name.
    pretrained: str = "random"
    image_size: int = 112
    embed_dim: int = 512
    pooling: str = "avg"  #: "avg" (the backbone's own head) or "gem"
    channels_last: bool = True

    # -- training --------------------------------------------------------------------------
    epochs: int = 4
    batch_pairs: int = 32  #: (apply, cite) pairs per step; each gives ``crops_per_pair`` images
    crops_per_pair: int = 4  #: 4 = weak + strong on apply and on cite (2nd place); 2 = weak only
    accum_steps: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    loss: str = "contrastive"  #: see tmr_lib.losses.LOSSES
    xbm_memory: int = 1024  #: CrossBatchMemory size; 0 switches it off
    xbm_start_epoch: int = 1  #: CrossBatchMemory joins only after this many epochs (warm-up)
    freeze_bn: bool = False  #: BatchNorm layers keep the starting weights' statistics (fine-tuning)
    freeze_layers: float = 0.0  #: share of the backbone's layers, from the input, left untrained (fine-tuning)
    extra_cite_pairs: int = 0  #: unannotated cites per epoch used as (weak, strong) self-pairs
    #: "kit" (the kit's weak/strong views: four equal strong branches, gray 0.2, one-font
    #: pseudo-logo), "2nd-place" (theirs exactly, docs/second-place.md; `tmr views` measures both)
    #: or "marks" (the pretraining views of ``tmr pretrain``: fine-tuning keeps teaching them)
    augment: str = "kit"
    aug_extra: tuple[str, ...] = ()  #: additions to the "kit" / "2nd-place" views: "rot90", "invert"
    n_folds: int = 5
    folds: tuple[int, ...] = (0,)  #: which folds to train (one model each; embeddings averaged)
    val_distractors: int = 2000  #: random cites added to the validation gallery
    amp: bool = True  #: mixed precision (fp16) when training on CUDA; ignored on CPU
    max_train_minutes: float | None = None  #: safety stop for one model's training
    seed: int = 0

    # -- inference -------------------------------------------------------------------------
    test_scale: float = 0.9  #: test-time Affine zoom-out (2nd place)
    tta_flip: bool = False
    embed_batch_size: int = 256
    num_workers: int = 2  #: image decoding processes
    #: leave out missing / empty / undecodable images instead of stopping (``--skip-bad-images``): train
    #: rows and cites dropped, test queries embedded as blank white images (tmr_lib.badimages)
    skip_bad_images: bool = False
    #: decoded images cached on disk beside the data and read by rows (False: decoded from the image
    #: files at every read: no disk, more CPU; for a register whose cache will not fit, see `tmr plan`)
    cache_images: bool = True
    #: augmentation processes beside the model while training (None: ``num_workers``; on a CPU at most 1)
    train_workers: int | None = None

    # -- search and post-processing ----------------------------------------------------------
    index: str = "flat"  #: "flat", "hnsw", "ivf" or any faiss index_factory string
    k: int = 20
    #: fold means and the backbone concat re-normalised (kit) or left as they are (2nd place)
    ensemble_normalize: bool = True
    search_metric: str = "ip"  #: "ip": inner product on unit vectors (kit); "l2": Euclidean kNN (2nd place)
    postprocess: bool = True
    #: "2nd-place" (default, measured better): keep the top 16 - n for a train group of n cites, then the
    #: whole group, one re-search per group cite; "kit": keep ``pp_keep`` always, one re-search (a group of
    #: 8 cites loses 3 of them: -0.31 Recall@20 on such groups, benchmarks/bench_recipes.py)
    pp_recipe: str = "2nd-place"
    pp_keep: int = 15  #: with pp_recipe="kit": how many of the plain top 20 to keep

    # -- method switches: the kit's choice or the 2nd place's (docs/second-place.md) -----------
    #: which bundle of the switches below this config started from: "kit" or "2nd-place";
    #: ``replace(method=...)`` / ``get_config(..., method=...)`` sets them together (METHODS)
    method: str = "kit"
    head_bn: bool = True  #: BatchNorm1d after the FC (2nd place: on Swin, not on ConvNeXt)
    head_bias: bool = True  #: FC with a bias; False: no bias, xavier-normal init (2nd place, both backbones)
    #: "step": warm-up then cosine every step to 1 % (kit); "epoch": cosine stepped once per epoch to 0,
    #: no warm-up (the 2nd place's CosineAnnealingWarmRestarts(T_0=epochs))
    lr_schedule: str = "step"
    #: "group": group k-fold, no label group on both sides (kit); "stratified": StratifiedKFold on the
    #: category, groups ignored (2nd place; leaks a group-mate into training for some validation rows)
    fold_method: str = "group"
    keep_epoch: str = "best"  #: "best" held-out epoch, start weights as epoch 0 (kit) or "last" (2nd place)
    labels: str = "union-find"  #: label groups: "union-find" (kit) or "one-pass" (2nd place's sequential pass)
    trim_fallback: bool = False  #: keep the untrimmed image when the trim leaves a tiny crop (2nd place)

    # -- per-backbone overrides ----------------------------------------------------------------
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (unknown names raise a TypeError listing the fields).

        ``method="2nd-place"`` (or ``"kit"``) first sets that method's switches (:data:`METHODS`),
        then the other changes, so ``replace(method="2nd-place", xbm_start_epoch=1)`` works."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown config field(s) {sorted(unknown)}; fields: {', '.join(self.field_names())}")
        if "method" in changes:
            method = changes["method"]
            if method not in METHODS:
                raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
            changes = {**METHODS[method], **changes}
        _check_choices(changes)
        changes = {k: _coerce(self, k, v) for k, v in changes.items()}
        return dataclasses.replace(self, **changes)

    def for_backbone(self, backbone: str) -> Config:
        """The config one backbone trains with: its ``overrides`` applied, ``backbones=(backbone,)``."""
        extra = dict(self.overrides.get(backbone, {}))
        return self.replace(backbones=(backbone,), overrides={}, **extra)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        base = cls()
        return base.replace(**{k: v for k, v in d.items() if k in known})

    @property
    def images_per_step(self) -> int:
        return self.batch_pairs * self.crops_per_pair

    def __str__(self) -> str:
        lines = [f"Config {self.name!r}"]
        for f in dataclasses.fields(self):
            if f.name == "name":
                continue
            lines.append(f"  {f.name:18s} = {getattr(self, f.name)!r}")
        return "\n".join(lines)


#: the allowed values of the method switches (a typo fails at once, not deep inside training)
CHOICES: dict[str, tuple[str, ...]] = {
    "augment": ("kit", "2nd-place", "marks"),
    "lr_schedule": ("step", "epoch"),
    "fold_method": ("group", "stratified"),
    "keep_epoch": ("best", "last"),
    "labels": ("union-find", "one-pass"),
    "search_metric": ("ip", "l2"),
    "pp_recipe": ("kit", "2nd-place"),
}


def _check_choices(changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if key in CHOICES and value not in CHOICES[key]:
            raise ValueError(f"{key}={value!r} is not one of {', '.join(CHOICES[key])}")


#: The two methods: the switches that make a recipe the 2nd place's, step for step, or the kit's.
#: Scale (backbone, image size, epochs, batch, budget) stays the preset's. Where the kit's choice is
#: better (group folds, the best epoch, union-find labels) the 2nd-place method keeps it; the
#: original is one switch away (fold_method="stratified", keep_epoch="last", labels="one-pass").
#: Every row, with file:line in their code and why: docs/second-place.md.
METHODS: dict[str, dict[str, Any]] = {
    "kit": dict(
        augment="kit", aug_extra=(), crops_per_pair=4, loss="contrastive", xbm_memory=1024, xbm_start_epoch=1,
        warmup_epochs=1.0, lr_schedule="step", trim_fallback=False,
        ensemble_normalize=True, search_metric="ip", pp_recipe="2nd-place",
    ),
    "2nd-place": dict(
        augment="2nd-place", aug_extra=(), crops_per_pair=4, loss="contrastive", xbm_memory=1024,
        xbm_start_epoch=0, warmup_epochs=0.0, lr_schedule="epoch", lr=1e-4, weight_decay=1e-2,
        freeze_bn=False, freeze_layers=0.0, extra_cite_pairs=0, test_scale=0.9, tta_flip=False,
        trim_fallback=True, ensemble_normalize=False, search_metric="l2", pp_recipe="2nd-place",
    ),
}


def _coerce(cfg: Config, key: str, value: Any) -> Any:
    """Lists become tuples for tuple fields (JSON round trips, notebook convenience)."""
    current = getattr(cfg, key)
    if isinstance(current, tuple) and isinstance(value, (list, str)):
        return tuple([value] if isinstance(value, str) else value)
    if isinstance(current, bool) and isinstance(value, str):  # "--set freeze_bn=False" must not be truthy
        if value.strip().lower() in ("true", "1", "yes", "on"):
            return True
        if value.strip().lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key} is true or false, not {value!r}")
    return value


# The presets. ci and cpu start from the kit's teaching start ("tmr-teach", tmr_lib/weights/
# MODEL_CARD_teach.md): a MobileNetV3 pretrained on open marks by identity (two generic views of one
# mark attract), never shown the four category changes, text beside a mark, part crops, nor any mark a
# competition query is made of. It stands in for the ImageNet weights the 2nd place started from, so
# fine-tuning teaches the task and each step of the 2nd place can show what it is worth. The domain
# start "tmr-marks" (pretrained on exactly those changes) is --pretrained tmr-marks; fine-tuning it
# needs the gentle recipe DOMAIN_RECIPE below. Recipe figures: README, benchmarks/results/learning.json.
PRESETS: dict[str, Config] = {
    "ci": Config(
        name="ci",
        dataset="ci",
        backbones=("mobilenetv3_large_100",),
        pretrained="tmr-teach",
        image_size=64,
        embed_dim=512,
        epochs=1,
        batch_pairs=8,
        lr=1e-3,
        warmup_epochs=0.0,
        xbm_memory=128,
        xbm_start_epoch=1,
        extra_cite_pairs=32,
        n_folds=3,
        val_distractors=50,
        embed_batch_size=64,
        num_workers=1,
        max_train_minutes=2,
    ),
    "cpu": Config(
        name="cpu",
        backbones=("mobilenetv3_large_100",),
        pretrained="tmr-teach",  # the teaching start: no network needed, does not know the answer
        image_size=112,
        epochs=20,
        batch_pairs=64,
        # Chosen on the held-out fold (fold 0 against 5,000 distractors; starting weights 0.332), 8 min each
        # on 2 cores: every layer trained 0.449 (52-72 img/s); the first 70 % of the backbone frozen 0.500
        # (137 img/s): the same gain per epoch, 2.6x the epochs.
        lr=1e-3,
        freeze_bn=False,  # the start's statistics are of 64 px identity views, not of these crops
        freeze_layers=0.7,
        warmup_epochs=0.5,
        loss="contrastive",
        xbm_memory=1024,
        xbm_start_epoch=1,
        # the batched tensor views (zoom, shift, tilt, quarter turns, mirror, colour mixing, gray, inversion,
        # blur): what fine-tuning teaches a start that never saw a category change
        augment="marks",
        aug_extra=("rot90", "invert"),  # used only with augment="kit" or "2nd-place"
        extra_cite_pairs=3000,
        n_folds=5,
        folds=(0,),
        val_distractors=5000,  # 2,000 saturates (0.956 for every model): too easy to pick the best epoch
        max_train_minutes=9,
        # On 2 cores the model's two threads beat one augmentation process + one model thread: 195 img/s
        # against 137 (same recipe, same machine); the tensor views cost little beside the model.
        train_workers=0,
        embed_batch_size=16,  # on 2 cores small batches stay in cache: 791 img/s at 16, 314 at 256 (RESULTS.md)
    ),
    # The 2nd-place solution, step for step (method "2nd-place"; docs/second-place.md): their two
    # backbones at 384 px, 5 folds each, fp16, AdamW 1e-4 / wd 0.01, ContrastiveLoss in
    # CrossBatchMemory(1024) from the first step, cosine per epoch, their views and pseudo-logo,
    # their head per backbone, un-normalised ensemble, Euclidean search, post-processing 16 - n.
    "gpu": Config(
        name="gpu",
        dataset="cpu",  # the 2nd-place recipe on the default competition; --data for any other
        backbones=(
            "swin_large_patch4_window12_384.ms_in22k_ft_in1k",
            "convnext_base.fb_in22k_ft_in1k_384",
        ),
        pretrained="imagenet",
        image_size=384,
        embed_dim=512,
        channels_last=True,
        epochs=20,
        batch_pairs=8,
        accum_steps=4,
        n_folds=5,
        folds=(0, 1, 2, 3, 4),
        val_distractors=20000,
        amp=True,
        embed_batch_size=64,
        num_workers=8,
        index="flat",
        overrides={
            # Swin-L: FC without bias -> BatchNorm1d (train_swin.py:485-492); 20 epochs, 8 pairs x 4
            "swin_large_patch4_window12_384.ms_in22k_ft_in1k": {"head_bn": True, "head_bias": False},
            # ConvNeXt-B: FC without bias, no BatchNorm (train_convnext.py:683-698); 10 epochs, 16 pairs
            "convnext_base.fb_in22k_ft_in1k_384": {"epochs": 10, "batch_pairs": 16, "accum_steps": 1,
                                                   "head_bn": False, "head_bias": False},
        },
    ).replace(method="2nd-place"),
}


#: Fine-tuning the domain start (``get_config("cpu", **DOMAIN_RECIPE)``): it already knows the four
#: changes, and a higher rate washes that out (on the v1 cpu competition, from 0.951 on the held-out
#: fold: lr 2e-3 -> 0.707 test, 3e-4 -> 0.813, 1e-4 -> 0.822; frozen BatchNorm 0.843; this recipe held
#: 0.951 -> 0.956 on the fold, 0.865 -> 0.868 on test). Gentle rate, BatchNorm statistics and the
#: first 70 % of the backbone frozen, the pretraining's own views, memory from the first step.
DOMAIN_RECIPE: dict[str, Any] = dict(pretrained="tmr-marks", lr=2e-5, freeze_bn=True, freeze_layers=0.7,
                                     xbm_start_epoch=0, augment="marks", max_train_minutes=7)


def preset_names() -> list[str]:
    return list(PRESETS)


def get_config(preset: str | None = None, **changes: Any) -> Config:
    """The named preset (default: ``$TMR_PRESET``, else ``cpu``), with ``changes`` applied."""
    name = preset or os.environ.get("TMR_PRESET") or DEFAULT_PRESET
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} (or set TMR_PRESET)")
    return PRESETS[name].replace(**changes)
