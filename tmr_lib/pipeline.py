"""The whole job in three calls: train, predict, demo (what `tmr train|predict|demo` run).

    from tmr_lib import pipeline
    from tmr_lib.config import get_config
    cfg = get_config("cpu")
    trained = pipeline.train(cfg, "data/tmr-cpu", "runs/cpu")            # one model per backbone x fold
    pred = pipeline.predict(cfg, "data/tmr-cpu", "runs/cpu", "runs/cpu/submission.csv")
    pipeline.score(pred.ranked, "data/tmr-cpu-host")                    # host side: Recall@20, MRR, ...
    pipeline.demo(cfg, "data/tmr-cpu", "runs/cpu")                      # everything, with baselines

The demo measures three baselines in the same run -- random ids, raw pixels (trimmed 32 px
grayscale, cosine) and the untrained encoder -- and prints them beside the trained model,
per category, then saves a picture of a few queries with their top-20 (correct hits framed).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import Config

__all__ = ["TrainSummary", "Prediction", "train", "predict", "score", "demo", "image_store", "cache_dir",
           "pixel_embeddings", "format_table", "rank_with"]

Log = Callable[[str], None]


def cache_dir(data: str | os.PathLike) -> Path:
    """Decoded images live beside the participant folder, never inside it (it is handed out as is)."""
    data = Path(data).resolve()
    return data.parent / ".tmr_cache" / data.name


def image_store(cfg: Config, comp, progress: bool = True, cache: bool = True):
    """Every image the pipeline needs (train pairs, cites, test queries) decoded once at cfg.image_size."""
    from .embed import ImageStore

    paths = (list(comp.train["path"]) + list(comp.train["cite_path"]) + list(comp.cite["path"])
             + list(comp.test["path"]))
    return ImageStore.load(paths, cfg.image_size, cache_dir(comp.root) if cache else None,
                           num_workers=cfg.num_workers, progress=progress, desc="decode images")


# ----------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------
@dataclass
class TrainSummary:
    model_dir: Path
    results: list[Any]  # tmr_lib.train.TrainResult, one per backbone x fold
    seconds: float

    @property
    def images_per_s(self) -> float:
        vals = [r.images_per_s for r in self.results if r.images_per_s == r.images_per_s]
        return float(np.mean(vals)) if vals else float("nan")


def train(cfg: Config, data: str | os.PathLike, out: str | os.PathLike, store=None, resume: bool = True,
          progress: bool = True, log: Log = print) -> TrainSummary:
    """Train every backbone x fold of ``cfg``; write ``out/model.json`` for :func:`predict`."""
    from .data import load_competition
    from .encoder import save_ensemble
    from .train import train_encoder

    t0 = time.time()
    comp = load_competition(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, files = [], []
    for backbone in cfg.backbones:
        bcfg = cfg.for_backbone(backbone)
        bstore = store if store is not None and store.size == bcfg.image_size else image_store(bcfg, comp, progress)
        group = []
        for fold in cfg.folds:
            fold_arg = fold if cfg.n_folds > 1 else None
            r = train_encoder(bcfg, comp, out, fold=fold_arg, backbone=backbone, store=bstore, resume=resume,
                              progress=progress, log=log)
            results.append(r)
            group.append(r.best_path)
        files.append(group)
    from . import distributed as dist

    if dist.is_main():  # under torchrun: rank 0 writes, the others wait
        save_ensemble(files, out, extra={
            "config": cfg.to_dict(),
            "weights": [str(r.weights) for r in results],
            "val_recall@20": [r.best_recall for r in results],
            "processes": dist.world_size(),
        })
    dist.barrier()
    return TrainSummary(out, results, time.time() - t0)


# ----------------------------------------------------------------------------------------
# predict
# ----------------------------------------------------------------------------------------
@dataclass
class Prediction:
    ranked: dict[str, list[str]]  #: test gid -> 20 cite gids, best first
    csv: Path | None
    plain: dict[str, list[str]] = field(default_factory=dict)  #: before post-processing
    seconds: float = 0.0


def _embed(model, store, paths, cfg: Config, cache: Path | None, name: str, progress: bool) -> np.ndarray:
    from . import distributed as dist
    from .embed import embed_cached, images_key

    images = store.get(paths)
    kw = dict(batch_size=cfg.embed_batch_size, test_scale=cfg.test_scale, tta_flip=cfg.tta_flip,
              channels_last=cfg.channels_last, progress=progress, desc=f"embed {name}",
              distributed=dist.is_distributed())
    return embed_cached(model, images, images_key(paths, store.size), cache, **kw)


def rank_with(model, cfg: Config, comp, store, progress: bool = True, cache: bool = True,
              postprocess: bool | None = None) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(post-processed, plain) top-k per test gid with ``model`` (an encoder or ensemble)."""
    from .postprocess import TrainMemory
    from .postprocess import postprocess as post
    from .search import build_index

    folder = cache_dir(comp.root) if cache else None
    from . import distributed as dist

    model = model.to(dist.device())
    cite_emb = _embed(model, store, list(comp.cite["path"]), cfg, folder, "cites", progress)
    test_emb = _embed(model, store, list(comp.test["path"]), cfg, folder, "test", progress)
    index = build_index(cite_emb, ids=comp.cite["gid"].to_numpy(), kind=cfg.index)
    gids = comp.test["gid"].tolist()
    plain = post(test_emb, index, None, k=cfg.k)
    do_post = cfg.postprocess if postprocess is None else postprocess
    if do_post and len(comp.train):
        apply_emb = _embed(model, store, list(comp.train["path"]), cfg, folder, "train queries", progress)
        tcite_emb = _embed(model, store, list(comp.train["cite_path"]), cfg, folder, "train cites", progress)
        memory = TrainMemory.from_frame(comp.train, apply_emb, tcite_emb)
        ranked = post(test_emb, index, memory, k=cfg.k, keep=cfg.pp_keep)
    else:
        ranked = plain
    return dict(zip(gids, ranked)), dict(zip(gids, plain))


def _fill(ranked: dict[str, list[str]], cite_gids: list[str], k: int) -> dict[str, list[str]]:
    """Pad short lists (tiny databases, approximate indexes) to k unique ids."""
    out = {}
    for g, ids in ranked.items():
        if len(ids) < k:
            have = set(ids)
            ids = ids + [c for c in cite_gids if c not in have][: k - len(ids)]
        out[g] = ids[:k]
    return out


def predict(cfg: Config, data: str | os.PathLike, model_dir: str | os.PathLike,
            out_csv: str | os.PathLike | None = None, store=None, progress: bool = True,
            postprocess: bool | None = None, log: Log = print) -> Prediction:
    """Embed cites and test queries with the trained model(s), search, post-process, write the CSV."""
    from .data import load_competition
    from .encoder import load_ensemble
    from .submission import write_submission

    t0 = time.time()
    comp = load_competition(data)
    model = load_ensemble(model_dir)
    size = model.image_size or cfg.image_size
    if store is None or store.size != size:
        store = image_store(cfg.replace(image_size=size), comp, progress)
    ranked, plain = rank_with(model, cfg.replace(image_size=size), comp, store, progress, postprocess=postprocess)
    cite_gids = comp.cite["gid"].tolist()
    ranked, plain = _fill(ranked, cite_gids, cfg.k), _fill(plain, cite_gids, cfg.k)
    path = None
    from . import distributed as dist

    if out_csv is not None and dist.is_main():
        path = write_submission(ranked, out_csv, test_gids=comp.test["gid"].tolist(), cite_gids=cite_gids,
                                n_ids=cfg.k)
        log(f"[predict] wrote {path} ({len(ranked)} queries x {cfg.k} ids)")
    return Prediction(ranked, path, plain, time.time() - t0)


# ----------------------------------------------------------------------------------------
# score
# ----------------------------------------------------------------------------------------
def score(ranked: dict[str, list[str]] | str | os.PathLike, host: str | os.PathLike, k: int = 20) -> dict[str, Any]:
    """Recall@k, MRR, mAP@k and per-category Recall@k against the host's answers."""
    from .data import load_answers
    from .metrics import retrieval_metrics

    answers = load_answers(host)
    if not isinstance(ranked, dict):
        from .submission import read_submission

        df = read_submission(ranked)
        ranked = {g: ids.split() for g, ids in zip(df["gid"], df["cite_gid"])}
    missing = [g for g in answers["gid"] if g not in ranked]
    if missing:
        raise ValueError(f"{len(missing)} test gids have no prediction (first: {missing[0]})")
    lists = [ranked[g] for g in answers["gid"]]
    return retrieval_metrics(lists, answers["cite_gids"].tolist(), answers["category"].tolist(), ks=(1, 5, 10, k))


# ----------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------
def pixel_embeddings(images: torch.Tensor, size: int = 32, batch: int = 2048) -> np.ndarray:
    """Raw-pixel baseline: trimmed image -> ``size`` px grayscale -> ink (1 - gray) -> unit vector."""
    parts = []
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    for i in range(0, len(images), batch):
        x = images[i:i + batch].float() / 255.0
        g = (x * weights).sum(dim=1, keepdim=True)
        g = F.interpolate(g, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        v = (1.0 - g).flatten(1)
        parts.append(F.normalize(v, dim=1))
    return torch.cat(parts).numpy() if parts else np.zeros((0, size * size), np.float32)


def _rank_vectors(test_vec: np.ndarray, cite_vec: np.ndarray, cite_gids: np.ndarray, k: int) -> list[list[str]]:
    from .search import build_index

    index = build_index(cite_vec, ids=cite_gids, kind="flat", use_gpu=False)
    ids, _ = index.search(test_vec, k)
    return [list(r) for r in ids]


def _random_ids(test_gids: list[str], cite_gids: list[str], k: int, seed: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    arr = np.asarray(cite_gids)
    return {g: list(arr[rng.choice(len(arr), size=k, replace=False)]) for g in test_gids}


# ----------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------
def _cols(text: str) -> int:
    """Terminal columns of a string (CJK characters take two)."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _rjust(text: str, width: int) -> str:
    return " " * max(0, width - _cols(text)) + text


def format_table(rows: list[tuple[str, dict[str, Any]]], k: int = 20) -> str:
    """A fixed-width table: one row per method, Recall@k, MRR (``-`` where absent) and Recall@k per category."""
    from .metrics import CATEGORY_NAMES

    cats = sorted({c for _, m in rows for c in m.get("per_category", {})})
    w = 10
    nw = max(34, *(len(name) for name, _ in rows))
    head = f"{'method':{nw}s} {'R@' + str(k):>6s} {'MRR':>6s} " + " ".join(
        _rjust(CATEGORY_NAMES.get(c, str(c)).split()[0], w) for c in cats)
    sub = f"{'':{nw}s} {'':>6s} {'':>6s} " + " ".join(_rjust(f"R@{k} cat {c}", w) for c in cats)
    lines = [head, sub, "-" * _cols(sub)]
    for name, m in rows:
        per = m.get("per_category", {})
        mrr = f"{m['mrr']:6.3f}" if "mrr" in m else f"{'-':>6s}"
        lines.append(f"{name:{nw}s} {m['recall'][k]:6.3f} {mrr} " + " ".join(
            _rjust(f"{per.get(c, float('nan')):.3f}", w) for c in cats))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# demo
# ----------------------------------------------------------------------------------------
def _resolve_data(cfg: Config, data: str | os.PathLike | None, host: str | os.PathLike | None,
                  progress: bool) -> tuple[Path, Path]:
    dataset_preset = cfg.name if cfg.name in ("ci", "cpu", "full") else "cpu"
    data = Path(data) if data else Path("data") / f"tmr-{dataset_preset}"
    if host is not None and (data / "train.csv").is_file() and (Path(host) / "answers.csv").is_file():
        return data, Path(host)  # an existing competition with its answers (the kit's or the real files)
    from .builder import ensure_dataset, host_dir_for

    host = Path(host) if host else host_dir_for(data)
    if (data / "train.csv").is_file() and (host / "answers.csv").is_file():
        return data, host
    return ensure_dataset(dataset_preset, data, progress=progress)


def demo(cfg: Config, data: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
         host: str | os.PathLike | None = None, progress: bool = True, resume: bool = False,
         baselines: bool = True, figure: bool = True, log: Log = print) -> dict[str, Any]:
    """Dataset -> baselines -> train -> index -> predict -> CSV -> score -> table -> figure."""
    from .data import load_answers, load_competition
    from .encoder import build_encoder
    from .submission import write_submission

    t0 = time.time()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.time() - since, 1)
        return time.time()

    data, host = _resolve_data(cfg, data, host, progress)
    out = Path(out) if out else Path("runs") / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    comp = load_competition(data)
    log(f"[demo] {comp}")
    log(f"[demo] preset {cfg.name!r}: {', '.join(cfg.backbones)} at {cfg.image_size} px, "
        f"{cfg.epochs} epochs, loss {cfg.loss}" + (f" + CrossBatchMemory({cfg.xbm_memory})" if cfg.xbm_memory else ""))
    t = time.time()
    store = image_store(cfg, comp, progress)
    t = lap("decode images", t)
    k = cfg.k
    test_gids = comp.test["gid"].tolist()
    cite_gids = comp.cite["gid"].tolist()
    rows: list[tuple[str, dict[str, Any]]] = []

    if baselines:
        rows.append(("random ids", score(_random_ids(test_gids, cite_gids, k, cfg.seed), host, k)))
        pix_c = pixel_embeddings(store.get(list(comp.cite["path"])))
        pix_t = pixel_embeddings(store.get(list(comp.test["path"])))
        rows.append(("raw pixels (32 px gray, cosine)",
                     score(dict(zip(test_gids, _rank_vectors(pix_t, pix_c, comp.cite["gid"].to_numpy(), k))), host, k)))
        untrained, info = build_encoder(cfg.backbones[0], cfg.pretrained, cfg.embed_dim, cfg.pooling,
                                        cfg.image_size, cfg.seed)
        log(f"[demo] untrained encoder: {info}")
        ranked_u, _ = rank_with(untrained, cfg.replace(backbones=cfg.backbones[:1]), comp, store, progress,
                                cache=False, postprocess=False)
        start = "random init" if info.source == "random" else f"{Path(info.source).name} weights"
        rows.append((f"untrained encoder ({start})", score(ranked_u, host, k)))
        t = lap("baselines", t)

    summary = train(cfg, data, out, store=store, resume=resume, progress=progress, log=log)
    t = lap("train", t)
    pred = predict(cfg, data, out, out_csv=None, store=store, progress=progress, postprocess=True, log=log)
    kept = sorted({r.best_epoch for r in summary.results})
    if kept == [0]:  # honest label: no epoch beat the starting weights on the held-out fold
        ours = "ours: starting weights kept"
        log("[demo] no fine-tuned epoch beat the starting weights on the held-out fold: they are kept")
    else:
        ours = "ours: fine-tuned (epoch " + "/".join(str(e) for e in kept) + ")"
    rows.append((ours, score(pred.plain, host, k)))
    if cfg.postprocess:
        rows.append((ours + " + post-processing", score(pred.ranked, host, k)))
    final = pred.ranked if cfg.postprocess else pred.plain
    csv = write_submission(final, out / "submission.csv", test_gids=test_gids, cite_gids=cite_gids, n_ids=k)
    t = lap("predict", t)

    table = format_table(rows, k)
    total = time.time() - t0
    weights = "; ".join(dict.fromkeys(str(r.weights) for r in summary.results))
    log("")
    log(f"Test queries: {len(test_gids)}   database: {len(cite_gids)} cites   starting weights: {weights}")
    log(table)
    log(f"training: {summary.images_per_s:.0f} images/s (augmented crops through forward+backward)")
    fig_path = None
    if figure:
        from .viz import plot_retrieval

        answers = load_answers(host)
        fig_path = out / "retrieval.png"
        plot_retrieval(comp, final, answers, fig_path, n_queries=5, k=k, seed=cfg.seed)
        log(f"figure: {fig_path}")
    log(f"submission: {csv}")
    log(f"total wall time: {total / 60:.1f} min ({', '.join(f'{n} {s:.0f} s' for n, s in timings.items())})")
    result = {
        "preset": cfg.name, "data": str(data), "out": str(out), "table": table,
        "rows": {name: m for name, m in rows}, "wall_s": round(total, 1), "timings": timings,
        "train_images_per_s": round(summary.images_per_s, 1), "weights": weights,
        "submission": str(csv), "figure": str(fig_path) if fig_path else None,
        "history": [r.history.to_dict(orient="records") for r in summary.results],
    }
    (out / "demo_results.json").write_text(json.dumps(result, indent=2, default=_json_default, ensure_ascii=False))
    _maybe_submit(out, csv, data, host, log)
    return result


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _maybe_submit(out: Path, csv: Path, data: Path, host: Path, log: Log) -> None:
    """Submit the CSV to a local leaderboard in ``out/leaderboard`` (created on first use), print the board.

    Skipped quietly when the leaderboard package is not installed; any leaderboard error is
    reported and leaves the demo's result standing.
    """
    try:
        from leaderboard.core import DB_NAME
        from leaderboard.core import Competition as Board
    except ImportError:
        return
    try:
        board_dir = out / "leaderboard"
        if (board_dir / DB_NAME).is_file():
            board = Board(board_dir)
        else:
            board, _tokens = Board.create(host, data, path=board_dir, name=f"{Path(data).name} demo",
                                          seed=0, daily_limit=1000, teams=["demo"])
        res = board.submit(csv, "demo", note="tmr demo", filename=csv.name)
        log(f"[demo] leaderboard: {res.summary().splitlines()[0]}")
        try:
            from leaderboard.cli import print_public

            print_public(board)
        except Exception:  # noqa: BLE001 - printing is a nicety
            pass
    except Exception as e:  # noqa: BLE001 - the demo's result stands without the board
        log(f"[demo] leaderboard submission skipped: {type(e).__name__}: {e}")
