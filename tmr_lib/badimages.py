"""Find the missing, empty and undecodable images of a competition folder before any work starts.

The real competition data (800k cites) has such files. Found late, one of them crashes a DataLoader
worker an hour into embedding; found here, they are all listed at once in a CSV report, and
:func:`tmr_lib.data.load_competition` either stops with :class:`BadImagesError` or, with
``skip_bad_images=True``, leaves them out (test queries, which a submission must list, are kept and
embedded as :func:`blank_image`).

Checks, cheapest first (measured on data/tmr-cpu, 16,650 JPEGs of 235 px, one process, files in the
page cache): "stat" (missing / 0 bytes) 0.03 s per 10k files; "verify" (also ``Image.open`` +
``verify()``: not an image, broken header, PNG checksums) 0.3 s per 10k, 2.9 s per 10k when the files
are first read from disk; "load" (also a reduced-scale JPEG decode of the whole file: truncated files,
which "verify" passes) 1.3 s per 10k, more for larger images.
"""
from __future__ import annotations

import csv
import os
import stat as stat_mod
from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from .data import CompetitionError

if TYPE_CHECKING:
    import torch

MODES = ("stat", "verify", "load")
SHOWN = 20  #: bad images listed in the error message (all of them are in the report)


@dataclass(frozen=True)
class BadImage:
    """One unusable image: its path, why ("missing", "empty file", "undecodable: ..."), and where it
    is referenced (e.g. "cite_v2.csv line 17", "train.csv line 5 (cite_path)")."""

    path: str
    reason: str
    where: str


class BadImagesError(CompetitionError):
    """Images referenced by a competition folder are missing, empty or undecodable."""

    def __init__(self, bad: list[BadImage], report: Path, root: str | os.PathLike = "") -> None:
        self.bad, self.report = bad, Path(report)
        shown = "\n  ".join(f"{b.where}: {b.path}: {b.reason}" for b in bad[:SHOWN])
        more = f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        super().__init__(
            f"{len(bad)} bad image(s) referenced in {root}:\n  {shown}{more}\n"
            f"All of them are listed in {report}. Restore or remove the files, or pass "
            "--skip-bad-images (tmr train/predict/demo) / skip_bad_images=True to leave them out "
            "(test queries are then kept and embedded as blank white images)."
        )


def _mode(decode: bool | str) -> str:
    mode = ("verify" if decode else "stat") if isinstance(decode, bool) else decode
    if mode not in MODES:
        raise ValueError(f"decode must be True, False or one of {MODES}, not {decode!r}")
    return mode


def check_image(path: str, mode: str = "verify") -> str | None:
    """Why ``path`` is unusable, or None when it is fine (see the module docstring for the modes)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    if not stat_mod.S_ISREG(st.st_mode):
        return "not a file"
    if st.st_size == 0:
        return "empty file"
    if mode == "stat":
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if mode == "load":
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))  # JPEG: 1/8 scale, still reads it all
                im.load()
            else:
                im.verify()
    except UnidentifiedImageError:
        return "undecodable: not an image file PIL can identify"
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds (OSError, SyntaxError, ValueError, ...)
        text = str(e).replace(repr(path), "").replace(path, "").strip().splitlines()
        return f"undecodable: {type(e).__name__}: {text[0][:100] if text else ''}".rstrip(": ")
    return None


def _check_star(args: tuple[str, str]) -> str | None:
    return check_image(*args)


def scan_images(paths_with_where: Iterable[tuple[str, str]], decode: bool | str = True, workers: int = 0,
                progress: bool = False) -> list[BadImage]:
    """Check each (path, where) pair's file; return the bad ones, in input order.

    ``decode``: True / "verify" (default), False / "stat", or "load". With ``workers > 1`` the files are
    checked by a pool of processes (worth it for the decode checks on hundreds of thousands of files).
    """
    mode = _mode(decode)
    items = list(paths_with_where)
    jobs = [(str(p), mode) for p, _ in items]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:  # spawn: safe beside torch's threads
            reasons = _progress(pool.imap(_check_star, jobs, chunksize=256), len(jobs), progress)
            reasons = list(reasons)
    else:
        reasons = [check_image(*j) for j in _progress(jobs, len(jobs), progress)]
    return [BadImage(str(p), r, w) for (p, w), r in zip(items, reasons) if r is not None]


def _progress(it, total: int, progress: bool):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc="checking images", unit="img", mininterval=1.0)


def write_report(bad: Iterable[BadImage], path: str | os.PathLike) -> Path:
    """Write ``bad`` as a CSV (path, reason, where), atomically (a temporary file, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow([fl.name for fl in fields(BadImage)])
            w.writerows(astuple(b) for b in bad)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_report(path: str | os.PathLike) -> list[BadImage]:
    """The bad images of a report written by :func:`write_report`."""
    with open(path, newline="", encoding="utf-8") as f:
        return [BadImage(r["path"], r["reason"], r["where"]) for r in csv.DictReader(f)]


def blank_image(size: int) -> torch.Tensor:
    """A white uint8 image of shape (3, size, size): what a bad test query is embedded as."""
    import torch

    return torch.full((3, size, size), 255, dtype=torch.uint8)
