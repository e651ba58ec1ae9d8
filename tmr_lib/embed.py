"""Images -> cached uint8 tensors -> embeddings, batched (DataLoader workers, inference_mode).

Every image is decoded, trimmed (white margins), padded to a white square and resized
**once** (:func:`load_images`), and the uint8 result ``(N, 3, S, S)`` is cached on disk, keyed
by the file list and the size, so training, validation, prediction and the notebooks all
reuse it. Embedding then works on batches of tensors (:func:`embed_images`), with the test
transform (Affine 0.9 on white), channels-last memory, optional horizontal-flip TTA, and an
on-disk cache keyed by the model's weights and the data (:func:`embed_cached`).

For databases too large to hold in memory, :func:`embed_paths` streams files through the
same DataLoader without keeping the images.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .augment import normalize, pil_to_uint8, inference_transform

__all__ = [
    "MarkDataset",
    "load_images",
    "images_key",
    "embed_images",
    "embed_paths",
    "embed_cached",
    "default_device",
    "ImageStore",
]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class MarkDataset(Dataset):
    """Image files -> uint8 tensors (3, S, S), trimmed and padded as every stage sees them."""

    def __init__(self, paths: Sequence[str | os.PathLike], size: int, trim_fallback: bool = False):
        self.paths = [str(p) for p in paths]
        self.size = size
        self.trim_fallback = trim_fallback

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from .preprocess import load_mark

        return pil_to_uint8(load_mark(self.paths[i], self.size, fallback=self.trim_fallback))


def images_key(paths: Sequence[str | os.PathLike], size: int, trim_fallback: bool = False) -> str:
    """A short hash of the file list (names, sizes, modification times), the image size and the trim."""
    h = hashlib.sha1(f"size={size};".encode())
    if trim_fallback:
        h.update(b"trim-fallback;")
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:16]


def _loader(paths: Sequence[str], size: int, batch_size: int, num_workers: int,
            trim_fallback: bool = False) -> DataLoader:
    workers = max(0, min(num_workers, (os.cpu_count() or 1)))
    return DataLoader(MarkDataset(paths, size, trim_fallback), batch_size=batch_size, shuffle=False,
                      num_workers=workers, persistent_workers=False,
                      )


def load_images(paths: Sequence[str | os.PathLike], size: int, cache_dir: str | os.PathLike | None = None,
                num_workers: int = 2, batch_size: int = 64, progress: bool = True,
                desc: str = "decode", trim_fallback: bool = False) -> torch.Tensor:
    """All images as one uint8 tensor (N, 3, size, size); decoded once, then read from the cache.

    The cache file is ``cache_dir/images-<size>-<hash>.npy``.
    """
    from tqdm.auto import tqdm

    paths = [str(p) for p in paths]
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"images-{size}-{images_key(paths, size, trim_fallback)}.npy"
        if cache_file.is_file():
            arr = np.load(cache_file)
            if arr.shape == (len(paths), 3, size, size):
                return torch.from_numpy(arr)
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    if paths:
        i = 0
        loader = _loader(paths, size, batch_size, num_workers if len(paths) > 4 * batch_size else 0,
                         trim_fallback)
        with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for batch in loader:
                out[i:i + len(batch)] = batch
                i += len(batch)
                bar.update(len(batch))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, out.numpy())
        os.replace(tmp, cache_file)
    return out


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.inference_mode()
def _embed_batch(model: torch.nn.Module, batch: torch.Tensor, scale: float, tta_flip: bool,
                 channels_last: bool, amp: bool) -> torch.Tensor:
    device = _model_device(model)
    x = normalize(inference_transform(batch.to(device, non_blocking=True), scale))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
        z = model(x).float()
        if tta_flip:
            z = z + model(torch.flip(x, dims=[3])).float()
    return torch.nn.functional.normalize(z, dim=1).cpu()


def embed_images(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256,
                 test_scale: float = 0.9, tta_flip: bool = False, channels_last: bool = True,
                 amp: bool = True, progress: bool = True, desc: str = "embed",
                 distributed: bool = False) -> np.ndarray:
    """Embeddings (N, D) float32, unit norm, of a cached uint8 image tensor (N, 3, S, S).

    ``distributed=True`` under torchrun: every rank embeds its slice and gets all N rows back."""
    from . import distributed as dist

    part = dist.shard(len(images)) if distributed else slice(None)
    mine = images[part]
    batches = (mine[i:i + batch_size] for i in range(0, len(mine), batch_size))
    emb = _embed_all(model, batches, -(-len(mine) // batch_size), test_scale, tta_flip, channels_last, amp,
                     progress and dist.is_main(), desc)
    return _gather(emb) if distributed else emb


def _gather(emb: np.ndarray) -> np.ndarray:
    from . import distributed as dist

    if not dist.is_distributed():
        return emb
    t = torch.from_numpy(emb)
    return dist.gather_rows(t.to(dist.device()) if dist.on_gpus() else t).cpu().numpy()


def embed_paths(model: torch.nn.Module, paths: Sequence[str | os.PathLike], size: int,
                batch_size: int = 256, num_workers: int = 2, test_scale: float = 0.9,
                tta_flip: bool = False, channels_last: bool = True, amp: bool = True,
                progress: bool = True, desc: str = "embed", distributed: bool = False) -> np.ndarray:
    """Embeddings of image files streamed through a DataLoader (nothing kept but the vectors).

    ``distributed=True`` under torchrun: every rank reads and embeds its slice of the files."""
    from . import distributed as dist

    paths = [str(p) for p in paths]
    loader = _loader(paths[dist.shard(len(paths))] if distributed else paths, size, batch_size, num_workers)
    emb = _embed_all(model, loader, len(loader), test_scale, tta_flip, channels_last, amp,
                     progress and dist.is_main(), desc)
    return _gather(emb) if distributed else emb


def _embed_all(model: torch.nn.Module, batches, total: int, test_scale: float, tta_flip: bool,
               channels_last: bool, amp: bool, progress: bool, desc: str) -> np.ndarray:
    """Run uint8 batches through the model in eval mode (restoring its mode), stacked as float32."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    parts = []
    try:
        for batch in tqdm(batches, total=total, desc=desc, unit="batch", disable=not progress, leave=False):
            parts.append(_embed_batch(model, batch, test_scale, tta_flip, channels_last, amp))
    finally:
        model.train(was_training)
    if not parts:
        return np.zeros((0, getattr(model, "embed_dim", 0)), dtype=np.float32)
    return torch.cat(parts).numpy().astype(np.float32, copy=False)


def embed_cached(model: torch.nn.Module, images: torch.Tensor, data_key: str,
                 cache_dir: str | os.PathLike | None, model_key: str | None = None, **kwargs) -> np.ndarray:
    """:func:`embed_images` with an on-disk cache keyed by the model's weights and ``data_key``."""
    if cache_dir is None:
        return embed_images(model, images, **kwargs)
    from .encoder import state_fingerprint

    model_key = model_key or state_fingerprint(model)
    from .augment import INFERENCE_VERSION

    opts = f"s{kwargs.get('test_scale', 0.9)}-f{int(bool(kwargs.get('tta_flip', False)))}-v{INFERENCE_VERSION}"
    file = Path(cache_dir) / f"emb-{model_key}-{data_key}-{opts}.npy"
    if file.is_file():
        arr = np.load(file)
        if arr.shape[0] == len(images):
            return arr
    emb = embed_images(model, images, **kwargs)
    from .distributed import is_main

    if is_main():  # under torchrun every rank holds the same rows: one writes them
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, emb)
        os.replace(tmp, file)
        _prune(file.parent, "emb-*.npy", keep=KEEP_EMBEDDINGS)
    return emb


#: embedding cache files kept per cache folder (the oldest are deleted beyond this)
KEEP_EMBEDDINGS = 24


def _prune(folder: Path, pattern: str, keep: int) -> None:
    files = sorted(folder.glob(pattern), key=lambda f: f.stat().st_mtime, reverse=True)
    for f in files[keep:]:
        try:
            f.unlink()
        except OSError:
            pass


from .images import ImageStore  # noqa: E402 - moved to tmr_lib.images; kept importable here
