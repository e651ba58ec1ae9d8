"""Decoded images by path: what training, validation, embedding and the notebooks read.

    from tmr_lib.images import image_store, cache_dir
    store = image_store(cfg, comp)          # every image of a competition at cfg.image_size
    batch = store.get(list(comp.test["path"][:16]))    # uint8 (16, 3, S, S), trimmed and padded

Images are decoded, trimmed and padded once (:func:`tmr_lib.embed.load_images`) and cached
beside the participant folder (:func:`cache_dir`), never inside it. The whole store lives in
RAM: fine for the ``ci`` and ``cpu`` competitions; the scale issue replaces it with a streaming
store for 800k cites.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["ImageStore", "image_store", "cache_dir", "resize_uint8"]


def cache_dir(data: str | os.PathLike) -> Path:
    """Decoded images live beside the participant folder, never inside it (it is handed out as is)."""
    data = Path(data).resolve()
    return data.parent / ".tmr_cache" / data.name


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> uint8 (N, 3, size, size), antialiased (a no-op at the same size)."""
    import torch.nn.functional as F

    if images.shape[-1] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def image_store(cfg, comp, progress: bool = True, cache: bool = True) -> ImageStore:
    """Every image the pipeline needs (train pairs, cites, test queries) decoded once at cfg.image_size."""
    paths = (list(comp.train["path"]) + list(comp.train["cite_path"]) + list(comp.cite["path"])
             + list(comp.test["path"]))
    return ImageStore.load(paths, cfg.image_size, cache_dir(comp.root) if cache else None,
                           num_workers=cfg.num_workers, progress=progress, desc="decode images",
                           trim_fallback=getattr(cfg, "trim_fallback", False))


class ImageStore:
    """Decoded images by path: one uint8 tensor (N, 3, S, S) plus a path -> row map.

        store = ImageStore.load(all_paths, size=112, cache_dir="data/tmr-cpu/.cache")
        batch = store.get(["/abs/apply_images/123/123.jpg", ...])
    """

    def __init__(self, paths: Sequence[str], images: torch.Tensor, trim_fallback: bool = False):
        self.paths = [str(p) for p in paths]
        self.images = images
        self.trim_fallback = trim_fallback  #: decoded with the 2nd place's small-crop fallback
        self.row = {p: i for i, p in enumerate(self.paths)}
        if len(self.row) != len(self.paths):
            raise ValueError("ImageStore paths must be unique")

    @classmethod
    def load(cls, paths: Sequence[str | os.PathLike], size: int, cache_dir: str | os.PathLike | None = None,
             num_workers: int = 2, progress: bool = True, desc: str = "decode",
             trim_fallback: bool = False) -> ImageStore:
        from .embed import load_images

        unique = list(dict.fromkeys(str(p) for p in paths))
        return cls(unique, load_images(unique, size, cache_dir, num_workers=num_workers, progress=progress,
                                       desc=desc, trim_fallback=trim_fallback), trim_fallback)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.paths)

    def __contains__(self, path: object) -> bool:
        return str(path) in self.row

    def rows(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        try:
            return np.fromiter((self.row[str(p)] for p in paths), dtype=np.int64, count=len(paths))
        except KeyError as e:
            raise KeyError(f"image not in the store: {e.args[0]}") from None

    def get(self, paths: Sequence[str | os.PathLike]) -> torch.Tensor:
        return self.images[torch.from_numpy(self.rows(paths))]

    def subset(self, paths: Sequence[str | os.PathLike]) -> ImageStore:
        unique = list(dict.fromkeys(str(p) for p in paths))
        return ImageStore(unique, self.get(unique), self.trim_fallback)
