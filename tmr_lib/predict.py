"""From trained weights to a :class:`tmr_lib.retrieval.Retrieval` and a submission (`tmr predict`).

    from tmr_lib.predict import embed_competition, retrieval_for, predict
    emb = embed_competition(model, cfg, comp, store)            # {"test", "cite", "apply", "train_cite"}
    r = retrieval_for(model, cfg, comp, store)                  # searched, with the train memory
    r.postprocess().to_submission("runs/cpu/submission.csv")
    pred = predict(cfg, "data/tmr-cpu", "runs/cpu", "runs/cpu/submission.csv")   # the CLI's job

The model's only job is to make embeddings; everything after is the Retrieval's.
Embeddings are cached beside the competition, keyed by the model's weights and the images.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import Config
from .images import cache_dir, image_store
from .postprocess import TrainMemory
from .retrieval import Retrieval

__all__ = ["PARTS", "embed_competition", "retrieval_from", "retrieval_for", "Prediction", "predict"]

Log = Callable[[str], None]

#: the images of a competition an encoder embeds: name -> (frame, path column)
PARTS = {"test": ("test", "path"), "cite": ("cite", "path"), "apply": ("train", "path"),
         "train_cite": ("train", "cite_path")}


def embed_competition(model: torch.nn.Module, cfg: Config, comp, store, parts: Sequence[str] = tuple(PARTS),
                      cache: bool = True, progress: bool = True, flip: bool = False) -> dict[str, np.ndarray]:
    """Embeddings of the named parts of a competition (see :data:`PARTS`), in row order.

    ``flip=True`` embeds the mirrored images (a TTA member: ``Retrieval.ensemble([[r, r_flip]])``);
    ``cfg.tta_flip`` instead sums both passes inside every embedding."""
    from . import distributed as dist
    from .embed import embed_cached, images_key

    model = model.to(dist.device())
    folder = cache_dir(comp.root) if cache else None
    out = {}
    for name in parts:
        frame, column = PARTS[name]
        paths = list(getattr(comp, frame)[column])
        images = store.images_of(paths)  # streamed from the decoded-image file, batch by batch
        key = images_key(paths, store.size, getattr(store, "trim_fallback", False))
        out[name] = embed_cached(model, images, key, folder, batch_size=cfg.embed_batch_size,
                                 test_scale=cfg.test_scale, tta_flip=cfg.tta_flip, channels_last=cfg.channels_last,
                                 progress=progress, desc=f"embed {name}", distributed=dist.is_distributed(),
                                 mirror=flip)
    return out


def retrieval_from(emb: dict[str, np.ndarray], comp, k: int = 20, index: str = "flat", name: str = "",
                   metric: str = "ip", labels: str = "union-find") -> Retrieval:
    """The test queries searched among the cites (``metric`` "ip" or "l2"), with the train memory
    (label groups made by ``labels``) when ``emb`` has it."""
    from .data import relabel

    memory = None
    if "apply" in emb and "train_cite" in emb and len(comp.train):
        memory = TrainMemory.from_frame(relabel(comp.train, labels), emb["apply"], emb["train_cite"])
    return Retrieval.from_embeddings(comp.test["gid"], emb["test"], comp.cite["gid"], emb["cite"], memory=memory,
                                     k=k, index=index, name=name, metric=metric)


def retrieval_for(model: torch.nn.Module, cfg: Config, comp, store, train: bool = True, cache: bool = True,
                  progress: bool = True, name: str = "", flip: bool = False) -> Retrieval:
    """Embed with ``model`` (an encoder or an ensemble) and search; ``train`` adds the train memory."""
    parts = tuple(PARTS) if train else ("test", "cite")
    emb = embed_competition(model, cfg, comp, store, parts, cache=cache, progress=progress, flip=flip)
    return retrieval_from(emb, comp, k=cfg.k, index=cfg.index, name=name, metric=cfg.search_metric,
                          labels=cfg.labels)


@dataclass
class Prediction:
    retrieval: Retrieval  #: what was written (post-processed when asked)
    plain: Retrieval  #: the plain search
    csv: Path | None
    seconds: float = 0.0

    @property
    def ranked(self) -> dict[str, list[str]]:
        """test gid -> 20 cite gids, best first (as written)."""
        return self.retrieval.as_dict()


def predict(cfg: Config, data: str | os.PathLike, model_dir: str | os.PathLike,
            out_csv: str | os.PathLike | None = None, store=None, progress: bool = True,
            postprocess: bool | None = None, log: Log = print) -> Prediction:
    """Embed cites and test queries with the trained model(s), search, post-process, write the CSV."""
    from . import distributed as dist
    from .data import load_competition
    from .encoder import load_ensemble

    t0 = time.time()
    comp = load_competition(data, skip_bad_images=cfg.skip_bad_images, log=log)
    model = load_ensemble(model_dir, normalize=cfg.ensemble_normalize)
    size = model.image_size or cfg.image_size
    cfg = cfg.replace(image_size=size)
    if store is None or store.size != size or getattr(store, "trim_fallback", False) != cfg.trim_fallback:
        store = image_store(cfg, comp, progress)
    do_post = cfg.postprocess if postprocess is None else postprocess
    plain = retrieval_for(model, cfg, comp, store, train=do_post, progress=progress, name="plain search")
    final = (plain.postprocess(keep=cfg.pp_keep, recipe=cfg.pp_recipe) if do_post and plain.memory is not None
             else plain)
    path = None
    if out_csv is not None and dist.is_main():
        path = final.to_submission(out_csv)
        log(f"[predict] wrote {path} ({len(final)} queries x {cfg.k} ids)")
    return Prediction(final, plain, path, time.time() - t0)
