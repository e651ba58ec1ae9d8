"""`tmr plan`: the RAM, disk and time a competition will need at a preset, before a long run.

    from tmr_lib.config import get_config
    from tmr_lib.plan import Counts, plan, reference_costs, measure_costs
    cfg = get_config("gpu")
    counts = Counts.from_numbers(cites=800_000, test=1_542, train=27_000)  # or Counts.from_data("data/tmr-cpu")
    p = plan(cfg, counts, reference_costs(cfg))          # measure_costs(cfg, "data/tmr-cpu") on the target machine
    print(p.text()); print("\\n".join(p.advice())); p.fits

    tmr plan --preset gpu --cites 800000 --test 1542 --train 27000
    tmr plan --preset cpu --data data/tmr-cpu --measure   # this machine's decode / embed speeds

Exit code of `tmr plan`: 0 when RAM and disk fit, 1 when they do not (the advice says what to
change), 2 on a bad argument.

What is estimated (the data path of tmr_lib.images / embed / predict):

* decoded image cache (disk): every distinct image (train apply, train cite, cites, test queries)
  decoded once at the image size, one uint8 ``.npy`` (N, 3, S, S) per size in
  ``<data parent>/.tmr_cache/<data name>/``, read by rows (page cache, not the process's RAM);
* embeddings (disk and RAM): float32, ``len(backbones) * embed_dim`` per row (folds are averaged),
  for every row predict embeds: test + cites + train apply + train cite;
* index (RAM): the cites' vectors in faiss (flat: 4 D bytes each; IVF / HNSW / PQ from the factory string);
* peak RAM: the process baseline (python + torch + timm + faiss, measured) + the models' weights +
  the embeddings + the index + the tables of paths + a batch in flight; training: + optimizer state and,
  on a CPU, the activations (approximate);
* time: images / measured or reference throughput (``REFERENCE_COSTS``, sources noted beside each
  figure; the GPU figures are assumptions until ``tmr plan --measure`` runs on that machine).

Estimates, not promises: they are meant to say *which* resource runs out, by about how much, and
which knob moves it. This module imports nothing heavy (pandas, torch, faiss only inside functions).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import Config

__all__ = ["Counts", "Costs", "Plan", "plan", "reference_costs", "measure_costs", "REFERENCE_COSTS",
           "BASELINE_RSS_BYTES", "BACKBONES", "add_plan_parser", "index_bytes"]

GB = 1e9  #: every figure is printed in decimal GB (1e9 bytes), as disks are sold
NPY_HEADER = 128  #: bytes of a .npy header (numpy writes 128 for these shapes)

# ----------------------------------------------------------------------------------------------
# Measured and assumed constants (each with where it came from)
# ----------------------------------------------------------------------------------------------
#: Process baseline: ``import tmr_lib.encoder, torch, timm, faiss`` + the cpu preset's encoder
#: (``build_encoder("mobilenetv3_large_100", "random", 512, image_size=112)``) + one forward of 16
#: images, ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` = 847.7 MB (imports alone 767.6 MB; torch
#: 2.14.1+cu130, timm 1.0.31, faiss 1.15.1, python 3.11.7; the kit's 2-core machine, 2026).
BASELINE_RSS_BYTES = 848e6

#: Tables of paths and ids (pandas frames of gid/path, the store's path -> row map, the gids of the
#: search): a DataFrame(gid, path) + dict of 800,000 cite-like rows measured +168 MB (210 B a row, RSS
#: from /proc/self/statm); about three such structures live at once -> 630 B per image.
TABLE_BYTES_PER_IMAGE = 630

#: Activations kept for the backward pass, bytes per activation counted by timm's ``infer_macts``:
#: mobilenetv3_large_100 at 112 px, training mode, 64 images, forward: +736 MB RSS = 11.5 MB per image
#: over 1.10 M activations (4.41 M at 224 px / 4) -> 10.4 B per activation (fp32, all layers trained).
#: Halved under fp16 autocast on a GPU (an assumption). Approximate: enough to see a batch not fit.
ACT_BYTES_PER_ACTIVATION = 10.4

#: Share of a forward pass's activations alive at once at inference (no backward pass: each layer's
#: output is freed once the next has used it); an assumption.
INFERENCE_ALIVE = 0.2

#: An augmentation / decoding worker process (forked, copy-on-write): an assumption, 300 MB each.
WORKER_RSS_BYTES = 300e6


@dataclass(frozen=True)
class Backbone:
    """Size figures of one backbone (the kit's Encoder: backbone + a 512-d head)."""

    params_m: float  #: parameters, millions
    gmacs: float  #: multiply-adds per image at ``at`` px, billions (timm benchmark ``infer_gmacs``)
    macts: float  #: activations per image at ``at`` px, millions (timm ``infer_macts``)
    at: int  #: image size of the two figures above (they scale with the pixel count)


#: Parameter counts: timm 1.0.31 ``create_model(name, num_classes=0)`` on the meta device (no memory,
#: no weights) + the 512-d head (features x 512): swin_large_patch4_window12_384 195.20 M + 0.79 M,
#: convnext_base 87.57 M + 0.52 M; mobilenetv3_large_100: the kit's whole Encoder counted, 4.86 M.
#: GMACs / activations: huggingface/pytorch-image-models results/benchmark-infer-amp-nchw-pt291-cu128-4090.csv
#: (mobilenetv3_small_100 / large_100 at 224 px, convnext_base and swin_large_patch4_window12_384 at 384 px).
BACKBONES: dict[str, Backbone] = {
    "mobilenetv3_small_100": Backbone(params_m=2.0, gmacs=0.06, macts=1.42, at=224),
    "mobilenetv3_large_100": Backbone(params_m=4.86, gmacs=0.23, macts=4.41, at=224),
    "convnext_base": Backbone(params_m=88.1, gmacs=45.21, macts=84.49, at=384),
    "swin_large_patch4_window12_384": Backbone(params_m=196.0, gmacs=104.08, macts=202.16, at=384),
}


@dataclass(frozen=True)
class Figure:
    """One throughput figure and where it came from."""

    value: float
    source: str
    assumption: bool = False


#: The reference speeds ``reference_costs`` starts from (``tmr plan --measure`` replaces them with this
#: machine's). Keys: ("decode", size) images/s per decoding process; ("embed" | "train", device,
#: backbone, size) images/s of one model (train: augmented crops through forward + backward);
#: ("search", device) flat-search GFLOP/s per CPU core.
REFERENCE_COSTS: dict[tuple, Figure] = {
    ("decode", 112): Figure(1029.0, "measured: 64 cite JPEGs of data/tmr-cpu (211x104 px) through "
                                    "tmr_lib.embed.MarkDataset, one process, kit's 2-core machine; real JPO "
                                    "images are larger: decode is slower there (--measure on them)"),
    ("decode", 384): Figure(510.0, "measured: the same 64 JPEGs at 384 px, one process, kit's 2-core machine"),
    ("embed", "cpu", "mobilenetv3_large_100", 112): Figure(
        462.0, "measured: `tmr demo`'s predict stage on 2 cores, 2026-12-06 (17,960 rows read from the "
               "decoded-image file, embedded at batch 16, searched and post-processed in 38.9 s; the model "
               "alone reaches 791 img/s on cached images: benchmarks/RESULTS.md)"),
    ("train", "cpu", "mobilenetv3_large_100", 112): Figure(
        190.0, "measured: cpu recipe on 2 cores (tmr_lib/config.py: 195 img/s, model threads, 70 % frozen)"),
    ("embed", "cuda", "swin_large_patch4_window12_384", 384): Figure(
        400.0, "ASSUMPTION for one H100 (fp16): ~2x timm's RTX 4090 AMP benchmark (190 img/s); replace with "
               "`tmr plan --measure` on that machine", assumption=True),
    ("embed", "cuda", "convnext_base", 384): Figure(
        1400.0, "ASSUMPTION for one H100 (fp16): ~2x timm's RTX 4090 AMP benchmark (716 img/s); replace with "
                "`tmr plan --measure` on that machine", assumption=True),
    ("train", "cuda", "swin_large_patch4_window12_384", 384): Figure(
        125.0, "ASSUMPTION for one H100 (fp16): ~3x timm's RTX 3090 AMP training benchmark (41.7 img/s)",
        assumption=True),
    ("train", "cuda", "convnext_base", 384): Figure(
        350.0, "ASSUMPTION for one H100 (fp16): ~3x timm's RTX 3090 AMP training benchmark (116 img/s)",
        assumption=True),
    ("search", "cpu"): Figure(60.0, "measured: faiss IndexFlatIP, 256 x 50,000 x 512, one thread: 66 GFLOP/s"),
}

#: GMAC/s an unlisted backbone is assumed to run at, from the listed ones (same device): the cpu figure
#: is mobilenetv3_large_100's (model alone: 791 img/s x 0.0575 GMAC at 112 px), the cuda one between Swin-L (41,600)
#: and ConvNeXt-B (63,300) under the assumptions above.
GMACS_PER_S = {"cpu": 45.0, "cuda": 50_000.0}
#: tiny models are bound by the input pipeline, not by multiply-adds (an assumption)
MAX_IMAGES_PER_S = {"cpu": 2000.0, "cuda": 10_000.0}
#: training costs about this many times an inference pass per image (forward + backward + augmentation)
TRAIN_COST_FACTOR = {"cpu": 4.2, "cuda": 3.5}

#: Queries searched per test query: the plain search, then the 2nd-place post-processing's re-searches
#: (one per cite of the nearest train group, ~2 on average; an assumption).
SEARCHES_PER_QUERY = 3
#: HNSW build: distance computations per added vector (efConstruction 40 x ~20 hops; an assumption).
HNSW_BUILD_DISTANCES = 800
IVF_NITER = 25  #: faiss k-means iterations (its default, tmr_lib.search.build_index)
IVF_NPROBE = 16  #: tmr_lib.search.build_index's default
IVF_POINTS_PER_CENTROID = 256  #: faiss trains k-means on at most this many points per list


def backbone_key(name: str) -> str:
    """timm name without the pretrained tag: ``convnext_base.fb_in22k_ft_in1k_384`` -> ``convnext_base``."""
    return name.split(".", 1)[0]


def backbone_info(name: str) -> Backbone:
    """The :data:`BACKBONES` row of a timm name; an unlisted one is counted on timm's meta device."""
    key = backbone_key(name)
    if key in BACKBONES:
        return BACKBONES[key]
    try:  # cheap: no weights, no memory; GMACs unknown -> scaled from the parameter count
        import timm
        import torch

        with torch.device("meta"):
            m = timm.create_model(key, pretrained=False, num_classes=0)
        params = sum(p.numel() for p in m.parameters()) / 1e6
    except Exception:  # noqa: BLE001 - unknown to timm too: a mid-sized guess
        params = 25.0
    # GMACs and activations per parameter between a ResNet-50 (4.1 GMAC, 11 M acts / 25.6 M params at 224)
    return Backbone(params_m=params, gmacs=params * 0.16, macts=params * 0.43, at=224)


def _scale(value: float, at: int, size: int) -> float:
    return value * (size / at) ** 2


# ----------------------------------------------------------------------------------------------
# What is planned for: counts and costs
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Counts:
    """How many images a competition has (rows of its CSVs; nothing is decoded)."""

    cites: int  #: cite_v2.csv rows
    test: int  #: test.csv rows (queries)
    train: int  #: train.csv rows: (apply, cite) pairs
    apply_images: int  #: distinct train apply images
    extra_train_cites: int = 0  #: train cite images that are not in cite_v2.csv
    train_queries: int | None = None  #: distinct apply gids (validation queries over all folds)
    source: str = "numbers"

    @classmethod
    def from_numbers(cls, cites: int, test: int, train: int) -> Counts:
        """For a competition not on disk: each train row its own apply image, train cites among the cites."""
        for name, v in (("cites", cites), ("test", test), ("train", train)):
            if v is None or int(v) < 0:
                raise ValueError(f"--{name} must be a count >= 0, got {v!r}")
        return cls(cites=int(cites), test=int(test), train=int(train), apply_images=int(train),
                   train_queries=int(train), source="numbers given")

    @classmethod
    def from_data(cls, folder: str | os.PathLike) -> Counts:
        """Row counts of a participant folder's train.csv, test.csv and cite_v2.csv."""
        import pandas as pd

        root = Path(folder)
        files = {n: root / f for n, f in (("train", "train.csv"), ("test", "test.csv"), ("cite", "cite_v2.csv"))}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{root} is not a competition folder: missing {', '.join(missing)}")
        train = pd.read_csv(files["train"], dtype=str, usecols=["gid", "path", "cite_path"])
        test = pd.read_csv(files["test"], dtype=str, usecols=["path"])
        cite = pd.read_csv(files["cite"], dtype=str, usecols=["path"])
        apply = set(train["path"]) - set(test["path"])
        extra = set(train["cite_path"]) - set(cite["path"])
        return cls(cites=len(cite), test=len(test), train=len(train), apply_images=len(apply),
                   extra_train_cites=len(extra), train_queries=int(train["gid"].nunique()), source=str(root))

    @property
    def distinct_images(self) -> int:
        """Images the decoded cache holds (every distinct path once)."""
        return self.apply_images + self.extra_train_cites + self.cites + self.test

    @property
    def embedded_rows(self) -> int:
        """Rows predict embeds: test + cites + train apply + train cite (one per train row each)."""
        return self.test + self.cites + 2 * self.train

    def describe(self) -> str:
        return (f"{self.cites:,} cites, {self.test:,} test queries, {self.train:,} train pairs "
                f"({self.distinct_images:,} distinct images; {self.source})")


@dataclass
class Costs:
    """Throughput figures, with where each came from (:func:`reference_costs`, :func:`measure_costs`)."""

    device: str = "cpu"  #: where the models run: "cpu" or "cuda"
    cores: int = 2  #: CPU cores for decoding and search
    decode: dict[int, float] = field(default_factory=dict)  #: image size -> decoded images/s per process
    embed: dict[tuple[str, int], float] = field(default_factory=dict)  #: (backbone key, size) -> img/s
    train: dict[tuple[str, int], float] = field(default_factory=dict)  #: (backbone key, size) -> crops/s
    search_gflops: float = 60.0  #: flat search, GFLOP/s per core
    sources: dict[str, str] = field(default_factory=dict)  #: figure -> measured / reference / ASSUMPTION

    # -- one rate, scaled from the nearest known figure when that exact one is absent -----------
    def decode_rate(self, size: int) -> float:
        """Images/s per process at ``size``: t(S) = a + b S^2 fitted on the two reference sizes."""
        if size in self.decode:
            return self.decode[size]
        t112, t384 = 1 / REFERENCE_COSTS[("decode", 112)].value, 1 / REFERENCE_COSTS[("decode", 384)].value
        b = (t384 - t112) / (384 ** 2 - 112 ** 2)
        a = t112 - b * 112 ** 2

        def t(s: int) -> float:
            return a + b * s * s

        if self.decode:  # keep the known figure's machine speed, change only the size
            s0 = min(self.decode, key=lambda s: abs(s - size))
            return self.decode[s0] * t(s0) / t(size)
        return 1 / t(size)

    def _rate(self, table: dict[tuple[str, int], float], what: str, backbone: str, size: int) -> float:
        key = backbone_key(backbone)
        if (key, size) in table:
            return table[(key, size)]
        same = [s for (b, s) in table if b == key]
        if same:
            s0 = min(same, key=lambda s: abs(s - size))
            return table[(key, s0)] * (s0 / size) ** 2
        info = backbone_info(backbone)
        rate = min(GMACS_PER_S[self.device] / _scale(info.gmacs, info.at, size), MAX_IMAGES_PER_S[self.device])
        return rate / TRAIN_COST_FACTOR[self.device] if what == "train" else rate

    def embed_rate(self, backbone: str, size: int) -> float:
        return self._rate(self.embed, "embed", backbone, size)

    def train_rate(self, backbone: str, size: int) -> float:
        return self._rate(self.train, "train", backbone, size)


def _this_machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def reference_costs(cfg: Config, device: str | None = None, cores: int | None = None) -> Costs:
    """The :data:`REFERENCE_COSTS` for ``cfg``'s backbones and sizes on ``device`` ("cpu" or "cuda";
    default: "cuda" for the gpu preset, else "cpu") with ``cores`` CPU cores (default: this machine's;
    16 for a cuda plan, the lent H100 machines' count)."""
    device = device or ("cuda" if cfg.name == "gpu" else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device is cpu or cuda, not {device!r}")
    cores = cores or (16 if device == "cuda" else _this_machine_cores())
    c = Costs(device=device, cores=int(cores), search_gflops=REFERENCE_COSTS[("search", "cpu")].value)
    c.sources["search"] = REFERENCE_COSTS[("search", "cpu")].source
    for key, fig in REFERENCE_COSTS.items():
        if key[0] == "decode":
            c.decode[key[1]] = fig.value
            c.sources[f"decode {key[1]} px"] = fig.source
        elif key[0] in ("embed", "train") and key[1] == device:
            getattr(c, key[0])[(key[2], key[3])] = fig.value
    for b in cfg.backbones:  # name where each of this config's figures comes from
        size = cfg.for_backbone(b).image_size
        for what in ("embed", "train"):
            fig = REFERENCE_COSTS.get((what, device, backbone_key(b), size))
            if fig is not None:
                c.sources[f"{what} {backbone_key(b)} {size} px"] = fig.source
            else:
                c.sources[f"{what} {backbone_key(b)} {size} px"] = (
                    f"ASSUMPTION: scaled from the reference figures by pixels or GMACs "
                    f"({_rate(getattr(c, what + '_rate')(b, size))} img/s on {device}); `tmr plan --measure` to replace")
    return c


def measure_costs(cfg: Config, data: str | os.PathLike | None = None, n: int = 64,
                  log: Callable[[str], None] | None = None) -> Costs:
    """This machine's speeds: decode ``n`` of ``data``'s cite images (tmr_lib.embed.MarkDataset, one
    process) and embed ~2 batches per backbone with a random-initialised encoder of ``cfg`` at its image
    size on the current device (cuda when present). Training speed: the reference figure times the
    measured / reference embedding ratio. Without ``data`` the decode figures stay the reference ones."""
    import numpy as np
    import torch

    from .embed import MarkDataset, embed_images
    from .encoder import build_encoder

    log = log or (lambda m: None)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    costs = reference_costs(cfg, device=device, cores=_this_machine_cores())
    ref = dataclasses.replace(costs, embed=dict(costs.embed), train=dict(costs.train), decode=dict(costs.decode))
    sizes = sorted({cfg.for_backbone(b).image_size for b in cfg.backbones})
    if data is not None:
        import pandas as pd

        root = Path(data)
        cites = pd.read_csv(root / "cite_v2.csv", dtype=str, usecols=["path"], nrows=max(1, n))
        paths = [str(root / "cite_images" / p) for p in cites["path"]]
        for size in sizes:
            ds = MarkDataset(paths, size)
            ds[0]  # warm-up: imports, first file
            t0 = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            rate = len(ds) / max(time.perf_counter() - t0, 1e-9)
            costs.decode[size] = rate
            costs.sources[f"decode {size} px"] = f"measured here: {len(ds)} images of {root}, one process"
            log(f"[plan] decode {size} px: {rate:.0f} img/s per process")
    dev = torch.device(device)
    for b in cfg.backbones:
        c = cfg.for_backbone(b)
        model, _ = build_encoder(b, "random", c.embed_dim, c.pooling, c.image_size, c.seed,
                                 head_bn=c.head_bn, head_bias=c.head_bias)
        model = model.to(dev).eval()
        batch = max(1, min(c.embed_batch_size, n // 2))
        images = torch.randint(0, 256, (batch * 3, 3, c.image_size, c.image_size), dtype=torch.uint8)
        kw = dict(batch_size=batch, test_scale=c.test_scale, channels_last=c.channels_last, progress=False)
        embed_images(model, images[:batch], **kw)  # warm-up (kernels, allocator)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = embed_images(model, images[batch:], **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        rate = len(out) / max(time.perf_counter() - t0, 1e-9)
        key = (backbone_key(b), c.image_size)
        before = ref.embed_rate(b, c.image_size)
        costs.embed[key] = rate
        costs.train[key] = ref.train_rate(b, c.image_size) * rate / before
        costs.sources[f"embed {key[0]} {key[1]} px"] = f"measured here: {len(out)} images, batch {batch}, {device}"
        costs.sources[f"train {key[0]} {key[1]} px"] = (f"reference x measured/reference embedding speed "
                                                        f"({rate:.0f}/{before:.0f})")
        log(f"[plan] embed {key[0]} at {key[1]} px on {device}: {rate:.0f} img/s")
        del model
    try:  # other work on the cores makes every figure above pessimistic: say so beside them
        load = os.getloadavg()[0]
        if load > 0.5 * costs.cores:
            costs.sources["load"] = (f"load average {load:.1f} on {costs.cores} core(s) while measuring: other "
                                     "processes shared the cores, the measured speeds are pessimistic")
    except OSError:
        pass
    try:  # flat search speed, one core's share
        import faiss

        d = len(cfg.backbones) * cfg.embed_dim
        rng = np.random.default_rng(0)
        x, q = rng.random((20000, d), dtype=np.float32), rng.random((256, d), dtype=np.float32)
        index = faiss.IndexFlatIP(d)
        index.add(x)
        index.search(q[:8], 20)
        t0 = time.perf_counter()
        index.search(q, 20)
        gflops = 2 * len(q) * len(x) * d / max(time.perf_counter() - t0, 1e-9) / 1e9
        costs.search_gflops = gflops / max(1, faiss.omp_get_max_threads())
        costs.sources["search"] = f"measured here: faiss IndexFlatIP 256 x 20,000 x {d}: {gflops:.0f} GFLOP/s"
    except ImportError:
        pass
    return costs


# ----------------------------------------------------------------------------------------------
# The arithmetic
# ----------------------------------------------------------------------------------------------
def index_bytes(kind: str, n: int, d: int) -> tuple[float, str]:
    """(bytes, how) of a faiss index of ``n`` vectors of ``d`` floats (tmr_lib.search.factory_string names)."""
    spec = _factory_string(kind, n)
    vec = 4.0 * d
    m_pq = re.search(r"PQ(\d+)", spec)
    m_sq = re.search(r"SQ(\d+)", spec)
    m_ivf = re.search(r"IVF(\d+)", spec)
    m_hnsw = re.search(r"HNSW(\d+)", spec)
    if m_pq:
        per, how = int(m_pq.group(1)) + 8.0, f"{spec}: {n:,} x ({m_pq.group(1)} B code + 8 B id)"
        extra = 256 * d * 4.0
    elif m_sq:
        per, how = d * int(m_sq.group(1)) / 8 + 8.0, f"{spec}: {n:,} x ({d}-d x {m_sq.group(1)} bit + 8 B id)"
        extra = 0.0
    else:
        per, how, extra = vec, f"{spec}: {n:,} x {d}-d x 4 B", 0.0
    if m_ivf:
        nlist = int(m_ivf.group(1))
        extra += nlist * vec
        if not (m_pq or m_sq):
            per += 8.0
            how = f"{spec}: {n:,} x ({d}-d x 4 B + 8 B id) + {nlist:,} centroids"
        else:
            how += f" + {nlist:,} centroids"
        per *= 1.1  # inverted lists grow in chunks
        how += ", +10 %"
    if m_hnsw:
        m = int(m_hnsw.group(1))
        per += m * 2 * 4.0
        how += f" + HNSW links {m} x 2 x 4 B"
    return n * per + extra, how


def _factory_string(kind: str, n: int) -> str:
    """tmr_lib.search.factory_string (imported when a plan is made: `tmr --help` stays free of numpy)."""
    from .search import factory_string

    return factory_string(kind, n)


@dataclass
class Row:
    section: str  #: "disk", "ram", "gpu" or "time"
    name: str
    value: float  #: bytes or seconds
    how: str  #: the formula's inputs


def _gb(x: float) -> str:
    return f"{x / GB:,.1f} GB" if x >= 0.1 * GB else f"{x / 1e6:,.0f} MB"


def _rate(r: float) -> str:
    return f"{r:,.0f}" if r >= 10 else f"{r:.2g}"


def _dur(s: float) -> str:
    if s > 72 * 3600:
        return f"{s / 86400:,.1f} days"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _default_ram() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * GB


def _default_disk(where: str | os.PathLike | None) -> float:
    p = Path(where or ".").resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return float(shutil.disk_usage(p).free)


@dataclass
class Plan:
    """RAM, disk and time of one config on one competition (:func:`plan`); ``text()``, ``advice()``."""

    cfg: Config
    counts: Counts
    costs: Costs
    ram: float  #: bytes available
    disk: float  #: bytes available
    rows: list[Row]
    disk_needed: float
    ram_needed: float
    seconds: float
    gpu_needed: float = 0.0
    ram_given: bool = False
    disk_given: bool = False
    where: str = "here"  #: where the free disk was read

    @property
    def fits_ram(self) -> bool:
        return self.ram_needed <= self.ram

    @property
    def fits_disk(self) -> bool:
        return self.disk_needed <= self.disk

    @property
    def fits(self) -> bool:
        return self.fits_ram and self.fits_disk

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def text(self) -> str:
        c = self.cfg
        lines = [f"tmr plan: preset {c.name} ({', '.join(backbone_key(b) for b in c.backbones)}; "
                 f"{len(c.folds)} fold(s), {c.image_size} px, {len(c.backbones) * c.embed_dim}-d, index {c.index})",
                 f"  on {self.counts.describe()}",
                 f"  models on {self.costs.device}, {self.costs.cores} CPU core(s); "
                 f"RAM {_gb(self.ram)} ({'given' if self.ram_given else 'this machine'}), "
                 f"disk {_gb(self.disk)} free ({'given' if self.disk_given else self.where})",
                 ""]
        w = max(len(r.name) for r in self.rows)
        lines.append(f"  {'what':{w}s}  {'need':>10s}  from")
        for r in self.rows:
            val = _dur(r.value) if r.section == "time" else _gb(r.value)
            lines.append(f"  {r.name:{w}s}  {val:>10s}  {r.how}")
        lines.append("")
        verdict = []
        verdict.append(f"RAM {_gb(self.ram_needed)} of {_gb(self.ram)}: " + ("fits" if self.fits_ram else "DOES NOT FIT"))
        verdict.append(f"disk {_gb(self.disk_needed)} of {_gb(self.disk)}: "
                       + ("fits" if self.fits_disk else "DOES NOT FIT"))
        lines.append("  " + "; ".join(verdict) + f"; about {_dur(self.seconds)} in all")
        assumed = sorted({k for k, v in self.costs.sources.items() if "ASSUMPTION" in v and _used(k, self.cfg)})
        lines.append("  figures:")
        lines += [f"    {k}: {self.costs.sources[k]}" for k in sorted(self.costs.sources) if _used(k, self.cfg)]
        if assumed:
            lines.append(f"  ({len(assumed)} figure(s) are assumptions: run `tmr plan --measure` on the target machine)")
        lines.append("  estimates: training RAM and activations are approximate; decode speed depends on the JPEGs' size")
        return "\n".join(lines)

    def advice(self) -> list[str]:
        """What to change when RAM or disk will not fit (each change planned again), and a GPU when a CPU
        run would take more than a day. Empty when everything fits in reasonable time."""
        out: list[str] = []
        cfg, counts, costs = self.cfg, self.counts, self.costs
        kw = dict(ram_gb=self.ram / GB, disk_gb=self.disk / GB)

        def alt(label: str, changed: Config, what: str, costs_: Costs | None = None) -> None:
            try:
                p = plan(changed, counts, costs_ or costs, **kw)
            except (ValueError, TypeError):
                return
            before = self.ram_needed if what == "RAM" else self.disk_needed
            after = p.ram_needed if what == "RAM" else p.disk_needed
            if after >= before * 0.97:
                return
            ok = "fits" if p.fits else ("RAM fits" if what == "RAM" and p.fits_ram else
                                         "disk fits" if what == "disk" and p.fits_disk else "still short")
            out.append(f"{label}: {what} {_gb(before)} -> {_gb(after)} ({ok}; time {_dur(p.seconds)})")

        if not self.fits_ram:
            training = self.row("peak RAM training").value >= self.row("peak RAM embed+index+predict").value
            out.append(f"RAM: {_gb(self.ram_needed)} needed, {_gb(self.ram)} available "
                       f"(short by {_gb(self.ram_needed - self.ram)}); the peak is "
                       f"{'training' if training else 'embed + index + predict'}")
            d = len(cfg.backbones) * cfg.embed_dim
            nlist = max(1, min(65536, int(4 * math.sqrt(max(counts.cites, 1)))))
            m = max(8, min(128, d // 16))
            alt(f"--set 'index=IVF{nlist},PQ{m}' (compressed index; approximate search)",
                cfg.replace(index=f"IVF{nlist},PQ{m}"), "RAM")
            alt("--set index=ivf (same vectors, inverted lists: faster search, not smaller)",
                cfg.replace(index="ivf"), "RAM")
            if cfg.embed_dim > 128:
                alt(f"--set embed_dim={cfg.embed_dim // 2} (smaller embeddings; retrain)",
                    cfg.replace(embed_dim=cfg.embed_dim // 2), "RAM")
            if len(cfg.backbones) > 1:
                alt(f"--set backbones={cfg.backbones[0]} (one backbone: half the vectors; retrain)",
                    cfg.replace(backbones=(cfg.backbones[0],)), "RAM")
            if len(cfg.folds) > 1:
                alt("--set folds=[0] (one fold per backbone: fewer weights in RAM)", cfg.replace(folds=(0,)), "RAM")
            if cfg.embed_batch_size > 16:
                alt("--set embed_batch_size=16", cfg.replace(embed_batch_size=16), "RAM")
            if cfg.batch_pairs > 2 and costs.device == "cpu":
                alt(f"--set batch_pairs={cfg.batch_pairs // 2} (training activations)",
                    cfg.replace(batch_pairs=cfg.batch_pairs // 2), "RAM")
            out.append(f"or a machine with at least {_gb(self.ram_needed * 1.15)} RAM (15 % headroom)")
        if not self.fits_disk:
            out.append(f"disk: {_gb(self.disk_needed)} needed, {_gb(self.disk)} free "
                       f"(short by {_gb(self.disk_needed - self.disk)}); the decoded image cache is "
                       f"{_gb(self.row('decoded image cache (disk)').value)}")
            if getattr(cfg, "cache_images", True):
                alt("--set cache_images=false (no cache: every epoch and pass decodes the files again; "
                    "more CPU, as the 2nd place did)", cfg.replace(cache_images=False), "disk")
            for size in (cfg.image_size * 3 // 4, cfg.image_size // 2):
                size = max(32, size // 16 * 16)
                if size < cfg.image_size:
                    alt(f"--set image_size={size} (smaller cache; lower accuracy, retrain)",
                        cfg.replace(image_size=size, overrides=_drop_size(cfg.overrides)), "disk")
            if len(cfg.folds) > 1:
                alt("--set folds=[0] (fewer checkpoints)", cfg.replace(folds=(0,)), "disk")
            out.append(f"or more disk: free {_gb(self.disk_needed * 1.1 - self.disk)} more beside the data "
                       f"(the cache lives in <data parent>/.tmr_cache/), or put the data on a larger disk")
        if costs.device == "cpu" and self.seconds > 24 * 3600:
            gpu = plan(cfg, counts, reference_costs(cfg, device="cuda", cores=max(costs.cores, 16)), **kw)
            out.append(f"time: about {_dur(self.seconds)} on {costs.cores} CPU core(s); a GPU: about "
                       f"{_dur(gpu.seconds)} (reference/assumed figures: --device cuda, or --measure there)")
        return out


def _drop_size(overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {b: {k: v for k, v in o.items() if k != "image_size"} for b, o in overrides.items()}


def _used(source_key: str, cfg: Config) -> bool:
    """Whether a :attr:`Costs.sources` entry is about one of ``cfg``'s backbones / sizes."""
    sizes = {cfg.for_backbone(b).image_size for b in cfg.backbones}
    if source_key.startswith("decode"):
        exact = {f"decode {s} px" for s in sizes}
        return source_key in exact or not exact & {f"decode {s} px" for s in (112, 384)}
    if source_key.startswith(("embed", "train")):
        return any(source_key.endswith(f"{backbone_key(b)} {cfg.for_backbone(b).image_size} px") for b in cfg.backbones)
    return True


def plan(cfg: Config, counts: Counts, costs: Costs, ram_gb: float | None = None,
         disk_gb: float | None = None, where: str | os.PathLike | None = None) -> Plan:
    """RAM, disk and time of running ``cfg`` on ``counts`` at ``costs``' speeds.

    ``ram_gb`` default: this machine's total RAM (os.sysconf); ``disk_gb`` default: the free space of
    ``where`` (the data folder's parent; default the working folder). GB = 1e9 bytes."""
    rows: list[Row] = []
    n_b, n_f = len(cfg.backbones), len(cfg.folds)
    d = n_b * cfg.embed_dim
    per = [(b, cfg.for_backbone(b)) for b in cfg.backbones]
    info = {b: backbone_info(b) for b in cfg.backbones}
    sizes = sorted({c.image_size for _, c in per})
    distinct = counts.distinct_images
    procs = max(1, min(cfg.num_workers or 1, costs.cores))

    # -- disk ------------------------------------------------------------------------------
    cache = sum(distinct * 3 * s * s + NPY_HEADER for s in sizes)
    cache_how = " + ".join(f"{distinct:,} images x 3x{s}x{s} B + {NPY_HEADER} B header" for s in sizes)
    if not getattr(cfg, "cache_images", True):
        cache, cache_how = 0.0, "cache_images=False: decoded from the files at every read (no cache)"
    rows.append(Row("disk", "decoded image cache (disk)", cache, cache_how))
    emb_disk = counts.embedded_rows * d * 4.0 + 4 * NPY_HEADER
    rows.append(Row("disk", "embeddings (disk)", emb_disk,
                    f"{counts.embedded_rows:,} rows (test + cites + 2 x train) x {d}-d x 4 B, per trained model set"))
    params = {b: info[b].params_m * 1e6 for b in cfg.backbones}
    ckpt = sum(params[b] * 16 for b in cfg.backbones) * n_f
    rows.append(Row("disk", "checkpoints (disk)", ckpt,
                    f"{n_b} backbone(s) x {n_f} fold(s) x params x 16 B (best.safetensors 4 + last.pt with Adam 12); "
                    + ", ".join(f"{backbone_key(b)} {params[b] / 1e6:.1f} M" for b in cfg.backbones)))
    disk_needed = cache + emb_disk + ckpt

    # -- RAM: embed + index + predict --------------------------------------------------------
    idx, idx_how = index_bytes(cfg.index, counts.cites, d)
    if _factory_string(cfg.index, counts.cites) == "Flat" and costs.device == "cpu":
        idx, idx_how = 0.0, "Flat on the CPU: exact search over the cite embeddings in place (no copy)"
    rows.append(Row("ram", "index (RAM)", idx, idx_how))
    models = sum(params[b] * 4 for b in cfg.backbones) * n_f
    emb_ram = counts.embedded_rows * d * 4.0
    tables = distinct * TABLE_BYTES_PER_IMAGE
    if costs.device == "cpu":  # one batch in flight; inference keeps nothing for a backward pass
        batch = max(c.embed_batch_size * _scale(info[b].macts, info[b].at, c.image_size) * 1e6 * 4
                    * INFERENCE_ALIVE for b, c in per)
        batch_how = f"batch x activations x 4 B x {INFERENCE_ALIVE:g} alive at once"
    else:  # on the GPU; the host holds uint8 + float copies of the prefetched batches
        batch = max(c.embed_batch_size * 3 * c.image_size ** 2 * 5 * 2 for _, c in per)
        batch_how = "2 batches x 3xSxS x (1 + 4) B (uint8 read + float, host side)"
    peak_predict = BASELINE_RSS_BYTES + models + emb_ram + idx + tables + batch
    rows.append(Row("ram", "peak RAM embed+index+predict", peak_predict,
                    f"baseline {_gb(BASELINE_RSS_BYTES)} + weights {n_b}x{n_f} models {_gb(models)} + embeddings "
                    f"{counts.embedded_rows:,} x {d}-d x 4 B {_gb(emb_ram)} + index {_gb(idx)} + tables "
                    f"{distinct:,} x {TABLE_BYTES_PER_IMAGE} B {_gb(tables)} + {batch_how} {_gb(batch)}"))

    # -- RAM: training (per backbone, the largest) ---------------------------------------------
    train_peaks, gpu_peaks = [], []
    for b, c in per:
        workers = c.train_workers if c.train_workers is not None else c.num_workers
        if costs.device == "cpu":
            workers = min(workers, 1)
        acts = c.images_per_step * _scale(info[b].macts, info[b].at, c.image_size) * 1e6 * ACT_BYTES_PER_ACTIVATION
        xbm = c.xbm_memory * c.embed_dim * 4.0
        if costs.device == "cpu":
            acts *= max(0.1, 1.0 - c.freeze_layers)
            host = BASELINE_RSS_BYTES + params[b] * 16 + acts + tables + workers * WORKER_RSS_BYTES + xbm
            how = (f"baseline + {backbone_key(b)} weights/grads/Adam {params[b] / 1e6:.1f} M x 16 B + activations "
                   f"{c.images_per_step} crops x {_scale(info[b].macts, info[b].at, c.image_size):.1f} M x "
                   f"{ACT_BYTES_PER_ACTIVATION} B" + (f" x {1 - c.freeze_layers:.0%} trained" if c.freeze_layers else "")
                   + f" + {workers} worker(s) x {_gb(WORKER_RSS_BYTES)} + tables (approximate)")
        else:
            host = (BASELINE_RSS_BYTES + params[b] * 4 + tables + workers * WORKER_RSS_BYTES
                    + c.images_per_step * 3 * c.image_size ** 2 * 5 * 2)
            how = (f"baseline + {backbone_key(b)} weights before .cuda() {params[b] / 1e6:.1f} M x 4 B + "
                   f"{workers} worker(s) x {_gb(WORKER_RSS_BYTES)} + tables + batches (approximate)")
            gpu = params[b] * 18 + acts * (0.5 if c.amp else 1.0) + xbm
            gpu_peaks.append((gpu, f"{backbone_key(b)}: params x 18 B (weights, grads, Adam, fp16 copy) + "
                                   f"{c.images_per_step} crops x {_scale(info[b].macts, info[b].at, c.image_size):.0f} M "
                                   f"activations x {ACT_BYTES_PER_ACTIVATION * (0.5 if c.amp else 1):.1f} B (approximate)"))
        train_peaks.append((host, how))
    peak_train, train_how = max(train_peaks, key=lambda t: t[0])
    rows.append(Row("ram", "peak RAM training", peak_train, train_how))
    gpu_needed = 0.0
    if gpu_peaks:
        gpu_needed, gpu_how = max(gpu_peaks, key=lambda t: t[0])
        rows.append(Row("gpu", "GPU memory training", gpu_needed, gpu_how))
    ram_needed = max(peak_predict, peak_train)

    # -- time ----------------------------------------------------------------------------------
    t_decode = sum(distinct / (costs.decode_rate(s) * procs) for s in sizes)
    rows.append(Row("time", "time decode", t_decode,
                    " + ".join(f"{distinct:,} images / ({costs.decode_rate(s):,.0f} img/s x {procs} process(es)) at {s} px"
                               for s in sizes) + " (once; cached)"))
    t_train, train_parts = 0.0, []
    val_rows = counts.train / max(1, cfg.n_folds)
    val_queries = (counts.train_queries or counts.train) / max(1, cfg.n_folds)
    for b, c in per:
        pairs = counts.train - val_rows + min(c.extra_cite_pairs, max(0, counts.cites - counts.train))
        steps = max(1, int(pairs // c.batch_pairs)) if pairs else 0
        crops = steps * c.batch_pairs * c.crops_per_pair
        gallery = val_rows + min(c.val_distractors, counts.cites)
        evals = c.epochs + (1 if c.keep_epoch == "best" else 0)
        er, tr = costs.embed_rate(b, c.image_size), costs.train_rate(b, c.image_size)
        one = c.epochs * crops / tr + evals * (val_queries + gallery) / er
        capped = ""
        if c.max_train_minutes:
            if one > c.max_train_minutes * 60:
                capped = f", capped at max_train_minutes={c.max_train_minutes:g} (uncapped {_dur(one)})"
            one = min(one, c.max_train_minutes * 60)
        t_train += one * len(c.folds)
        train_parts.append(f"{backbone_key(b)}: {len(c.folds)} fold(s) x {c.epochs} epochs x {crops:,} crops / "
                           f"{_rate(tr)} img/s + validation {evals} x {val_queries + gallery:,.0f} images / {_rate(er)} img/s"
                           + capped)
    rows.append(Row("time", "time train", t_train, "; ".join(train_parts)))
    t_embed, embed_parts = 0.0, []
    flips = 2 if cfg.tta_flip else 1
    for b, c in per:
        er = costs.embed_rate(b, c.image_size)
        t_embed += len(c.folds) * flips * counts.embedded_rows / er
        embed_parts.append(f"{backbone_key(b)}: {len(c.folds)} fold(s){' x 2 (flip)' if flips == 2 else ''} x "
                           f"{counts.embedded_rows:,} rows / {_rate(er)} img/s")
    rows.append(Row("time", "time embed", t_embed, "; ".join(embed_parts)))
    t_search, search_how = _search_time(cfg, counts, costs, d)
    rows.append(Row("time", "time search", t_search, search_how))
    seconds = t_decode + t_train + t_embed + t_search

    ram = ram_gb * GB if ram_gb is not None else _default_ram()
    disk = disk_gb * GB if disk_gb is not None else _default_disk(where)
    return Plan(cfg, counts, costs, ram, disk, rows, disk_needed, ram_needed, seconds, gpu_needed,
                ram_given=ram_gb is not None, disk_given=disk_gb is not None,
                where=f"at {Path(where or '.').resolve()}")


def _search_time(cfg: Config, counts: Counts, costs: Costs, d: int) -> tuple[float, str]:
    """faiss runs on the CPU cores (the kit's faiss is the CPU build): build + searches."""
    spec = _factory_string(cfg.index, counts.cites)
    flops_s = costs.search_gflops * 1e9 * costs.cores
    q = counts.test * SEARCHES_PER_QUERY + counts.test  # + the nearest train apply image of each query
    n = counts.cites
    m_ivf, m_hnsw = re.search(r"IVF(\d+)", spec), re.search(r"HNSW(\d+)", spec)
    if m_ivf:
        nlist = int(m_ivf.group(1))
        train_n = min(n, IVF_POINTS_PER_CENTROID * nlist)
        build = IVF_NITER * 2.0 * d * train_n * nlist + 2.0 * d * n * nlist
        search = 2.0 * d * q * (n * min(1.0, IVF_NPROBE / nlist) + nlist)
        how = f"{spec}: k-means {IVF_NITER} it x {train_n:,} x {nlist:,} lists + {q:,} searches x nprobe {IVF_NPROBE}"
    elif m_hnsw:
        build = 2.0 * d * n * HNSW_BUILD_DISTANCES
        search = 2.0 * d * q * HNSW_BUILD_DISTANCES
        how = f"{spec}: build {n:,} x ~{HNSW_BUILD_DISTANCES} distances (assumption) + {q:,} searches"
    else:
        build = 0.0
        search = 2.0 * d * q * n
        how = f"{spec}: 2 x {q:,} queries x {n:,} cites x {d}-d flops"
    how += f" at {costs.search_gflops:.0f} GFLOP/s x {costs.cores} core(s)"
    return (build + search) / flops_s, how


# ----------------------------------------------------------------------------------------------
# `tmr plan`
# ----------------------------------------------------------------------------------------------
def add_plan_parser(sub: Any) -> None:
    """Register `tmr plan` (torch-free: the handler imports what it needs)."""
    from .pipeline_cli import _add_common

    p = sub.add_parser(
        "plan", help="RAM, disk and time a competition will need at a preset, and what to change if it will not fit",
        description="Estimate the decoded image cache, the embeddings, the index, peak RAM and the time of "
                    "decode / train / embed / search before a long run. Exit code 0: fits; 1: RAM or disk will "
                    "not fit (advice printed); 2: bad arguments.")
    _add_common(p)
    p.add_argument("--cites", type=int, default=None, help="plan for a competition not on disk: cite images")
    p.add_argument("--test", type=int, default=None, help="... test queries")
    p.add_argument("--train", type=int, default=None, help="... train pairs (train.csv rows)")
    p.add_argument("--measure", action="store_true",
                   help="time decoding (needs --data) and embedding on this machine instead of the reference figures")
    p.add_argument("--n", type=int, default=64, help="images --measure decodes (and embeds, about 2 batches)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where the models will run (default: cuda for the gpu preset, else cpu); --measure uses "
                        "this machine's")
    p.add_argument("--cores", type=int, default=None,
                   help="CPU cores of the target machine (default: this machine's; 16 for cuda)")
    p.add_argument("--ram-gb", type=float, default=None, help="RAM to plan for (default: this machine's total)")
    p.add_argument("--disk-gb", type=float, default=None,
                   help="free disk to plan for (default: free space beside the data folder)")
    p.set_defaults(func=_cmd_plan)


def _cmd_plan(args: argparse.Namespace) -> int:
    from .pipeline_cli import config_from_args

    cfg = config_from_args(args)
    numbers = [args.cites, args.test, args.train]
    if any(v is not None for v in numbers):
        if args.data:
            raise ValueError("give --data or --cites/--test/--train, not both")
        if any(v is None for v in numbers):
            raise ValueError("give --cites, --test and --train together (or --data DIR)")
        counts = Counts.from_numbers(args.cites, args.test, args.train)
        data = None
        where: Path = Path(".")
    else:
        data = Path(args.data) if args.data else _default_data(cfg)
        counts = Counts.from_data(data)
        where = data.resolve().parent
    if args.measure:
        costs = measure_costs(cfg, data, n=args.n, log=lambda m: print(m, flush=True))
        if args.cores:
            costs.cores = args.cores
    else:
        costs = reference_costs(cfg, device=args.device, cores=args.cores)
    p = plan(cfg, counts, costs, ram_gb=args.ram_gb, disk_gb=args.disk_gb, where=where)
    print(p.text())
    advice = p.advice()
    if advice:
        print("\nwhat to change:")
        for line in advice:
            print(f"  - {line}")
    print(f"\n{'fits' if p.fits else 'does not fit'} (exit code {0 if p.fits else 1})")
    return 0 if p.fits else 1


def _default_data(cfg: Config) -> Path:
    from .paths import default_data_dir

    data = default_data_dir(cfg.dataset)
    if not data.is_dir():
        raise FileNotFoundError(f"{data} does not exist: give --data DIR, or --cites N --test N --train N")
    return data
