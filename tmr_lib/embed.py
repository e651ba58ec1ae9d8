"""Images -> uint8 tensors -> embeddings, batched (DataLoader workers, inference_mode).

Every image is decoded, trimmed (white margins), padded to a white square and resized
**once** (:func:`tmr_lib.images.decode_to_file`: written to disk batch by batch and read back by
rows, never all in RAM). Embedding then works on batches of those rows (:func:`embed_images`,
which takes a tensor or a streamed :class:`tmr_lib.images.ImageFile`), with the test transform
(Affine 0.9 on white), channels-last memory, optional horizontal-flip TTA, and an on-disk cache
in shards keyed by the model's weights and the data (:func:`embed_cached`): a killed run resumes
from its last finished shard, a changed model or setting embeds afresh.

:func:`embed_paths` streams image files through the same DataLoader without any cache.
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

    def __init__(self, paths: Sequence[str | os.PathLike], size: int, trim_fallback: bool = False,
                 blank: Sequence[str] = ()):
        self.paths = [str(p) for p in paths]
        self.size = size
        self.trim_fallback = trim_fallback
        self.blank = frozenset(str(p) for p in blank)  #: known-bad images, read as a white square

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from .preprocess import load_mark

        if self.paths[i] in self.blank:
            return torch.full((3, self.size, self.size), 255, dtype=torch.uint8)
        try:
            return pil_to_uint8(load_mark(self.paths[i], self.size, fallback=self.trim_fallback))
        except Exception as e:  # name the file: a worker's bare traceback does not
            raise OSError(f"cannot decode image {self.paths[i]}: {e}. Check the competition for bad images "
                          "(tmr train/predict stop on them before any work) or pass --skip-bad-images.") from e


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
            trim_fallback: bool = False, blank: Sequence[str] = ()) -> DataLoader:
    workers = max(0, min(num_workers, (os.cpu_count() or 1)))
    return DataLoader(MarkDataset(paths, size, trim_fallback, blank), batch_size=batch_size, shuffle=False,
                      num_workers=workers, persistent_workers=False,
                      )


def load_images(paths: Sequence[str | os.PathLike], size: int, cache_dir: str | os.PathLike | None = None,
                num_workers: int = 2, batch_size: int = 64, progress: bool = True,
                desc: str = "decode", trim_fallback: bool = False, blank: Sequence[str] = ()) -> torch.Tensor:
    """All images as one uint8 tensor (N, 3, size, size) in RAM: for small sets.

    With ``cache_dir`` they are decoded once into ``cache_dir/images-<size>-<hash>.npy`` (see
    :func:`tmr_lib.images.decode_to_file`) and read back; large sets should stay there
    (:class:`tmr_lib.images.ImageStore` streams them)."""
    from tqdm.auto import tqdm

    from .images import decode_to_file

    paths = [str(p) for p in paths]
    if cache_dir is not None:
        file = Path(cache_dir) / f"images-{size}-{images_key(paths, size, trim_fallback)}.npy"
        return decode_to_file(paths, size, file, num_workers=num_workers, batch_size=batch_size, progress=progress,
                              desc=desc, trim_fallback=trim_fallback, blank=blank).to_tensor()
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    if paths:
        i = 0
        loader = _loader(paths, size, batch_size, num_workers if len(paths) > 4 * batch_size else 0,
                         trim_fallback, blank)
        with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for batch in loader:
                out[i:i + len(batch)] = batch
                i += len(batch)
                bar.update(len(batch))
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


def embed_images(model: torch.nn.Module, images, batch_size: int = 256,
                 test_scale: float = 0.9, tta_flip: bool = False, channels_last: bool = True,
                 amp: bool = True, progress: bool = True, desc: str = "embed",
                 distributed: bool = False, mirror: bool = False) -> np.ndarray:
    """Embeddings (N, D) float32, unit norm, of uint8 images (N, 3, S, S): a tensor, or an
    :class:`tmr_lib.images.ImageFile` read one batch at a time (any number of images).

    ``mirror``: embed the horizontally flipped images (a TTA member); ``distributed=True`` under
    torchrun: every rank embeds its slice and gets all N rows back."""
    from . import distributed as dist

    part = dist.shard(len(images)) if distributed else slice(0, len(images))
    start, stop = part.start, part.stop

    def batches():
        for i in range(start, stop, batch_size):
            b = images[i:min(i + batch_size, stop)]
            yield torch.flip(b, dims=[3]) if mirror else b

    emb = _embed_all(model, batches(), -(-(stop - start) // batch_size), test_scale, tta_flip, channels_last, amp,
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


#: rows per embedding shard (rounded up to whole batches): what a killed run can lose at most
SHARD_ROWS = 8192
#: embedding caches kept per cache folder (the oldest are deleted beyond this)
KEEP_EMBEDDINGS = 24


def embed_cached(model: torch.nn.Module, images, data_key: str, cache_dir: str | os.PathLike | None,
                 model_key: str | None = None, shard_rows: int = SHARD_ROWS, **kwargs) -> np.ndarray:
    """:func:`embed_images` with an on-disk cache in shards, keyed by the model's weights and ``data_key``.

    The folder ``emb-<model>-<data>-<options>/`` holds ``shard-NNNNN.npy`` files and a
    ``manifest.json`` naming the finished ones, so a killed run resumes at the first unfinished
    shard and gives the same vectors as one uninterrupted run (shards are whole batches). Under
    torchrun the ranks take the shards in turn and every rank returns all rows."""
    if cache_dir is None:
        return embed_images(model, images, **kwargs)
    from . import distributed as dist
    from .augment import INFERENCE_VERSION
    from .encoder import state_fingerprint

    model_key = model_key or state_fingerprint(model)
    opts = (f"s{kwargs.get('test_scale', 0.9)}-f{int(bool(kwargs.get('tta_flip', False)))}"
            f"-m{int(bool(kwargs.get('mirror', False)))}-v{INFERENCE_VERSION}")
    folder = Path(cache_dir) / f"emb-{model_key}-{data_key}-{opts}"
    batch = int(kwargs.get("batch_size", 256))
    rows = max(batch, -(-shard_rows // batch) * batch)
    n = len(images)
    spec = {"format": 1, "model": model_key, "data": data_key, "options": opts, "rows": n, "shard_rows": rows}
    kwargs = {**kwargs, "distributed": False}
    shards = [(i, min(i + rows, n)) for i in range(0, n, rows)]
    done = _manifest_done(folder, spec) if dist.is_main() else None
    done = dist.broadcast_object(done)
    progress = kwargs.pop("progress", True) and dist.is_main()
    from tqdm.auto import tqdm

    with tqdm(total=n, initial=sum(b - a for j, (a, b) in enumerate(shards) if j in done), unit="img",
              desc=kwargs.get("desc", "embed"), disable=not progress, leave=False) as bar:
        for j, (a, b) in enumerate(shards):
            if j in done or j % dist.world_size() != dist.rank():
                continue
            emb = embed_images(model, _rows_view(images, a, b), progress=False, **kwargs)
            _write_npy(folder / f"shard-{j:05d}.npy", emb)
            if not dist.is_distributed():
                done.add(j)
                _write_manifest(folder, spec, done)
            bar.update(b - a)
    if dist.is_distributed():
        dist.barrier()
        if dist.is_main():
            _write_manifest(folder, spec, set(range(len(shards))))
    if dist.is_main():
        _prune(folder.parent, "emb-*", keep=KEEP_EMBEDDINGS)
    if not shards:
        return np.zeros((0, getattr(model, "embed_dim", 0)), dtype=np.float32)
    first = np.load(folder / "shard-00000.npy", mmap_mode="r")
    out = np.empty((n, first.shape[1]), dtype=first.dtype)  # filled shard by shard: held once
    for j, (a, b) in enumerate(shards):
        out[a:b] = np.load(folder / f"shard-{j:05d}.npy")  # one shard at a time (no mapped pages)
    return out


def _rows_view(images, a: int, b: int):
    """Rows a..b without reading them (a tensor slice is a view; a file's rows are read per batch)."""
    return images.view(slice(a, b)) if hasattr(images, "view") and not isinstance(images, torch.Tensor) \
        else images[a:b]


def _manifest_done(folder: Path, spec: dict) -> set[int]:
    """The finished shards of a matching manifest (a different one: the folder starts over)."""
    import json

    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if {k: manifest.get(k) for k in spec} == spec:
            return {j for j in manifest.get("done", []) if (folder / f"shard-{j:05d}.npy").is_file()}
    except (OSError, ValueError):
        pass
    if folder.is_dir():
        for f in folder.glob("shard-*.npy"):
            f.unlink(missing_ok=True)
    return set()


def _write_manifest(folder: Path, spec: dict, done: set[int]) -> None:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"manifest.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({**spec, "done": sorted(done)}))
    os.replace(tmp, folder / "manifest.json")
    os.utime(folder)  # newest first when pruning


def _write_npy(file: Path, arr: np.ndarray) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, file)


def _prune(folder: Path, pattern: str, keep: int) -> None:
    import shutil

    entries = sorted(folder.glob(pattern), key=lambda f: f.stat().st_mtime, reverse=True)
    for f in entries[keep:]:
        try:
            shutil.rmtree(f) if f.is_dir() else f.unlink()
        except OSError:
            pass


from .images import ImageStore  # noqa: E402 - moved to tmr_lib.images; kept importable here
