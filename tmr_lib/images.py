"""Decoded images by path: what training, validation, embedding and the notebooks read.

    from tmr_lib.images import image_store, cache_dir
    store = image_store(cfg, comp)          # every image of a competition at cfg.image_size
    batch = store.get(list(comp.test["path"][:16]))    # uint8 (16, 3, S, S), trimmed and padded

Every image is decoded, trimmed and padded once and written, batch by batch, to one uint8 ``.npy``
file beside the participant folder (:func:`cache_dir`), never inside it. The store reads rows from
that file on demand (:class:`ImageFile`): the operating system's page cache holds what fits, the
process holds one batch. So 800k cites at 384 px (354 GB) stream from disk like 15k at 112 px
(0.6 GB) do from the cache. A killed decode resumes from its last checkpoint; under torchrun every
rank decodes its own share of the rows into the same file.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["ImageStore", "ImageFile", "DecodedFiles", "image_store", "cache_dir", "resize_uint8", "decode_to_file"]


from .paths import cache_dir  # noqa: E402 - decoded images live beside the participant folder, never inside it


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> uint8 (N, 3, size, size), antialiased (a no-op at the same size)."""
    import torch.nn.functional as F

    if images.shape[-1] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def image_store(cfg, comp, progress: bool = True, cache: bool = True) -> ImageStore:
    """Every image the pipeline needs (train pairs, cites, test queries) decoded once at cfg.image_size.

    ``cache=True``: on disk beside the competition, read by rows; ``False``: decoded into RAM;
    ``cfg.cache_images=False``: no cache, decoded from the files at every read (:class:`DecodedFiles`)."""
    paths = (list(comp.train["path"]) + list(comp.train["cite_path"]) + list(comp.cite["path"])
             + list(comp.test["path"]))
    return ImageStore.load(paths, cfg.image_size, cache_dir(comp.root) if cache else None,
                           num_workers=cfg.num_workers, progress=progress, desc="decode images",
                           trim_fallback=getattr(cfg, "trim_fallback", False),
                           blank=getattr(comp, "blank_paths", ()), from_files=not getattr(cfg, "cache_images", True))


# ----------------------------------------------------------------------------------------
# One .npy file of uint8 images, read by rows
# ----------------------------------------------------------------------------------------
class ImageFile:
    """uint8 images ``(N, 3, S, S)`` in a ``.npy`` file, read by rows with ``pread``.

    Indexing reads only the rows asked for (an int, a slice, or an array of rows) and returns a
    tensor; :meth:`view` selects rows without reading them. Nothing is memory-mapped: pages sit
    in the OS cache, not in the process, so reading every row of a 30 GB file keeps the process
    at one batch. Safe to pickle into DataLoader workers (each opens its own descriptor)."""

    def __init__(self, path: str | os.PathLike, rows: np.ndarray | None = None):
        self.path = Path(path)
        shape, self.offset = _npy_header(self.path)
        self.n_stored, self.row_shape = shape[0], tuple(shape[1:])
        self.row_bytes = int(np.prod(self.row_shape))
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._fd: int | None = None
        self._pid = -1

    dtype = torch.uint8

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.row_shape)

    def __len__(self) -> int:
        return self.n_stored if self.rows is None else len(self.rows)

    def numel(self) -> int:
        return len(self) * self.row_bytes

    def view(self, index) -> ImageFile:
        """The rows ``index`` (array or slice, repeats allowed) without reading them."""
        idx = self._index(index)
        out = ImageFile.__new__(ImageFile)
        out.__dict__.update(self.__dict__, rows=idx if self.rows is None else self.rows[idx], _fd=None, _pid=-1)
        return out

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self.read(self._index([index]))[0]
        return self.read(self._index(index))

    def _index(self, index) -> np.ndarray:
        n = len(self)
        if isinstance(index, slice):
            return np.arange(*index.indices(n), dtype=np.int64)
        idx = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        if len(idx) and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row {int(idx.max() if idx.max() >= n else idx.min())} is out of range for "
                             f"{n} images ({self.path})")
        return np.where(idx < 0, idx + n, idx)

    def read(self, idx: np.ndarray) -> torch.Tensor:
        """Rows ``idx`` (of this view) as one uint8 tensor; contiguous runs are read in one call."""
        phys = idx if self.rows is None else self.rows[idx]
        if len(phys) == 0:
            return torch.empty((0, *self.row_shape), dtype=torch.uint8)
        order = np.argsort(phys, kind="stable")
        sp = phys[order]
        buf = np.empty((len(sp), *self.row_shape), dtype=np.uint8)
        breaks = np.flatnonzero(np.diff(sp) != 1) + 1
        fd = self._descriptor()
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(sp)]):
            _pread_into(fd, buf[a:b], self.offset + int(sp[a]) * self.row_bytes, self.path)
        if np.all(order[1:] > order[:-1]):
            return torch.from_numpy(buf)
        out = np.empty_like(buf)
        out[order] = buf
        return torch.from_numpy(out)

    def to_tensor(self) -> torch.Tensor:
        """Every row in RAM (small sets only)."""
        return self.read(np.arange(len(self)))

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"ImageFile({self.path.name}, {len(self)} x {self.row_shape})"


def _npy_header(path: Path) -> tuple[tuple[int, ...], int]:
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if dtype != np.uint8 or fortran or len(shape) != 4:
            raise ValueError(f"{path} is not a uint8 (N, 3, S, S) image array")
        return tuple(int(s) for s in shape), f.tell()


def _pread_into(fd: int, out: np.ndarray, offset: int, path: Path) -> None:
    view, done = memoryview(out.reshape(-1)), 0
    while done < len(view):
        chunk = os.pread(fd, min(len(view) - done, 1 << 30), offset + done)
        if not chunk:
            raise OSError(f"{path} ends early (truncated?): delete it to decode the images again")
        view[done:done + len(chunk)] = chunk
        done += len(chunk)


class DecodedFiles:
    """The same rows as an :class:`ImageFile`, decoded from the image files at every read.

    For a register whose decoded cache will not fit on disk (800k cites at 384 px: 367 GB): no
    cache, more CPU (every epoch and every embedding pass decodes again, as the 2nd place did).
    Reads decode in a few threads (PIL releases the GIL); training reads run in DataLoader workers."""

    dtype = torch.uint8

    def __init__(self, paths: Sequence[str], size: int, trim_fallback: bool = False, blank: Sequence[str] = (),
                 rows: np.ndarray | None = None, threads: int = 4):
        self.paths, self.size, self.trim_fallback = list(paths), size, trim_fallback
        self.blank = frozenset(str(p) for p in blank)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.row_shape, self.threads = (3, size, size), threads

    path = Path("<the image files>")  #: named in errors
    shape = ImageFile.shape
    numel = ImageFile.numel

    def __len__(self) -> int:
        return len(self.paths) if self.rows is None else len(self.rows)

    row_bytes = property(lambda self: 3 * self.size * self.size)
    _index = ImageFile._index
    __getitem__ = ImageFile.__getitem__
    to_tensor = ImageFile.to_tensor

    def view(self, index) -> DecodedFiles:
        idx = self._index(index)
        return DecodedFiles(self.paths, self.size, self.trim_fallback, self.blank,
                            idx if self.rows is None else self.rows[idx], self.threads)

    def read(self, idx: np.ndarray) -> torch.Tensor:
        from concurrent.futures import ThreadPoolExecutor

        from .embed import MarkDataset

        phys = idx if self.rows is None else self.rows[idx]
        ds = MarkDataset([self.paths[i] for i in phys], self.size, self.trim_fallback, self.blank)
        if len(ds) == 0:
            return torch.empty((0, *self.row_shape), dtype=torch.uint8)
        if self.threads > 1 and len(ds) > 4:
            with ThreadPoolExecutor(self.threads) as pool:
                return torch.stack(list(pool.map(ds.__getitem__, range(len(ds)))))
        return torch.stack([ds[i] for i in range(len(ds))])

    def __repr__(self) -> str:
        return f"DecodedFiles({len(self)} images at {self.size} px, decoded at every read)"


# ----------------------------------------------------------------------------------------
# Decoding into the file, resumably, each torchrun rank its share
# ----------------------------------------------------------------------------------------
#: seconds between checkpoints of a long decode (what a killed run keeps)
CHECKPOINT_S = 30.0


def decode_to_file(paths: Sequence[str], size: int, file: str | os.PathLike, num_workers: int = 2,
                   batch_size: int = 64, progress: bool = True, desc: str = "decode",
                   trim_fallback: bool = False, blank: Sequence[str] = ()) -> ImageFile:
    """Decode ``paths`` (trimmed, padded, resized to ``size``) into the ``.npy`` ``file``, batch by batch.

    Nothing is held in RAM but a batch. A partial file and a checkpoint beside it let a killed
    decode resume; the finished file is renamed into place. Under torchrun every rank decodes its
    contiguous share into the same file, and all ranks return once the file is whole.
    ``blank``: paths decoded as a white square (known-bad test images, see tmr_lib.badimages)."""
    from . import distributed as dist

    file = Path(file)
    shape = (len(paths), 3, size, size)
    if file.is_file() and _npy_header(file)[0] == shape:
        return ImageFile(file)
    partial = file.with_name(f"{file.stem}.partial.npy")
    if dist.is_main():
        _open_partial(partial, shape)
    else:
        _wait_for(lambda: partial.is_file() or file.is_file(), f"{partial} (rank 0 creates it)")
    if not file.is_file():
        part = dist.shard(len(paths)) if dist.is_distributed() else slice(0, len(paths))
        tag = f"{dist.rank()}of{dist.world_size()}" if dist.is_distributed() else "0of1"
        _decode_share(paths, size, partial, part, partial.with_name(f"{file.stem}.partial.{tag}.json"),
                      num_workers, batch_size, progress and dist.is_main(), desc, trim_fallback, set(blank))
        if dist.is_main():
            marks = [partial.with_name(f"{file.stem}.partial.{r}of{dist.world_size()}.json")
                     for r in range(dist.world_size())]
            _wait_for(lambda: all(_done(m) for m in marks), "every rank's share of the images")
            os.replace(partial, file)
            for m in marks:
                m.unlink(missing_ok=True)
        else:
            _wait_for(file.is_file, f"{file} (rank 0 renames it when every share is done)")
    return ImageFile(file)


def _open_partial(partial: Path, shape: tuple[int, ...]) -> None:
    """Create the partial file (header + sparse rows) unless one of this shape is there."""
    try:
        if _npy_header(partial)[0] == shape:
            return
    except (OSError, ValueError):
        pass
    for old in partial.parent.glob(f"{partial.name[:-len('.npy')]}.*.json"):
        old.unlink(missing_ok=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    mm = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
    del mm


def _done(mark: Path) -> bool:
    try:
        state = json.loads(mark.read_text())
        return state["done"] >= state["stop"]
    except (OSError, ValueError, KeyError):
        return False


def _decode_share(paths: Sequence[str], size: int, partial: Path, part: slice, mark: Path, num_workers: int,
                  batch_size: int, progress: bool, desc: str, trim_fallback: bool, blank: set[str]) -> None:
    from tqdm.auto import tqdm

    from .embed import _loader

    start, stop = part.start, part.stop
    try:
        state = json.loads(mark.read_text())
        if (state["start"], state["stop"]) == (start, stop):
            start = max(start, int(state["done"]))
    except (OSError, ValueError, KeyError):
        pass
    todo = list(paths[start:stop])
    offset = _npy_header(partial)[1]
    row_bytes = 3 * size * size
    fd = os.open(partial, os.O_WRONLY)
    i, last = start, time.time()
    try:
        loader = _loader(todo, size, batch_size, num_workers if len(todo) > 4 * batch_size else 0,
                         trim_fallback, blank)
        with tqdm(total=stop - part.start, initial=start - part.start, desc=desc, unit="img",
                  disable=not progress, leave=False) as bar:
            for batch in loader:
                data = batch.numpy().tobytes()
                os.pwrite(fd, data, offset + i * row_bytes)
                i += len(batch)
                bar.update(len(batch))
                if time.time() - last > CHECKPOINT_S:
                    _checkpoint(fd, mark, part, i)
                    last = time.time()
        _checkpoint(fd, mark, part, i)
    finally:
        os.close(fd)


def _checkpoint(fd: int, mark: Path, part: slice, done: int) -> None:
    os.fsync(fd)  # the rows are on disk before the checkpoint says so
    tmp = mark.with_name(f"{mark.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"start": part.start, "stop": part.stop, "done": done}))
    os.replace(tmp, mark)


def _wait_for(ready, what: str, poll_s: float = 0.5, log_every_s: float = 60.0) -> None:
    t0 = last = time.time()
    while not ready():
        time.sleep(poll_s)
        if time.time() - last > log_every_s:
            print(f"[images] waiting {time.time() - t0:.0f} s for {what}", flush=True)
            last = time.time()


# ----------------------------------------------------------------------------------------
# The store: paths -> rows of a tensor (RAM) or of an ImageFile (disk)
# ----------------------------------------------------------------------------------------
class ImageStore:
    """Decoded images by path: uint8 ``(N, 3, S, S)`` rows (a tensor or an :class:`ImageFile`)
    plus a path -> row map.

        store = ImageStore.load(all_paths, size=112, cache_dir="data/.tmr_cache/tmr-cpu")
        batch = store.get(["/abs/apply_images/123/123.jpg", ...])      # read now
        lazy = store.images_of(list(comp.cite["path"]))                # read batch by batch later
    """

    def __init__(self, paths: Sequence[str], images: torch.Tensor | ImageFile, trim_fallback: bool = False):
        self.paths = [str(p) for p in paths]
        self.images = images
        self.trim_fallback = trim_fallback  #: decoded with the 2nd place's small-crop fallback
        self.row = {p: i for i, p in enumerate(self.paths)}
        if len(self.row) != len(self.paths):
            raise ValueError("ImageStore paths must be unique")

    @classmethod
    def load(cls, paths: Sequence[str | os.PathLike], size: int, cache_dir: str | os.PathLike | None = None,
             num_workers: int = 2, progress: bool = True, desc: str = "decode",
             trim_fallback: bool = False, blank: Sequence[str] = (), from_files: bool = False) -> ImageStore:
        """Decode ``paths`` once; with ``cache_dir`` the rows stay on disk (streamed), else in RAM;
        ``from_files``: no cache at all, every read decodes the files (:class:`DecodedFiles`)."""
        from .embed import images_key, load_images

        unique = list(dict.fromkeys(str(p) for p in paths))
        if from_files:
            return cls(unique, DecodedFiles(unique, size, trim_fallback, blank), trim_fallback)
        if cache_dir is None:
            return cls(unique, load_images(unique, size, None, num_workers=num_workers, progress=progress,
                                           desc=desc, trim_fallback=trim_fallback, blank=blank), trim_fallback)
        file = Path(cache_dir) / f"images-{size}-{images_key(unique, size, trim_fallback)}.npy"
        return cls(unique, decode_to_file(unique, size, file, num_workers=num_workers, progress=progress, desc=desc,
                                          trim_fallback=trim_fallback, blank=blank), trim_fallback)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def streamed(self) -> bool:
        """True when rows are read on demand (from the cache file or the image files), not held in RAM."""
        return isinstance(self.images, (ImageFile, DecodedFiles))

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
        """The images of ``paths`` as one uint8 tensor, read now."""
        return self.images[torch.from_numpy(self.rows(paths))]

    def images_of(self, paths: Sequence[str | os.PathLike]) -> torch.Tensor | ImageFile:
        """The images of ``paths`` in order (repeats allowed), not read yet when the store streams:
        what :func:`tmr_lib.embed.embed_images` takes for a database of any size."""
        rows = self.rows(paths)
        return self.images.view(rows) if self.streamed else self.images[torch.from_numpy(rows)]

    def subset(self, paths: Sequence[str | os.PathLike]) -> ImageStore:
        unique = list(dict.fromkeys(str(p) for p in paths))
        return ImageStore(unique, self.images_of(unique), self.trim_fallback)
