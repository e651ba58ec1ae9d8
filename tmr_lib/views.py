"""Check an augmentation recipe by measurement: sample views, count what every random step did.

A recipe is easy to misread in code (which branch holds the blur? is gray 0.2 or 0.5?), so this
module samples many weak and strong views with a :class:`tmr_lib.augment.Trace` attached and
compares each operation's measured rate with the rate the recipe declares
(:data:`tmr_lib.augment.DECLARED`, beside the pipelines), with a binomial (Wilson) interval
(95 % for the whole table: about 30 rows at 95 % each would flag a correct recipe most of the time).

    from tmr_lib.views import measure_views, plot_views
    table = measure_views(images_uint8, recipe="2nd-place", n=2000, size=112)
    table[~table["ok"]]                       # rows where the recipe does not do what it says
    plot_views(images_uint8[:2], "2nd-place")  # what each view went through, as titles

    tmr views --recipe 2nd-place --n 2000      # the same on the competition's cite images; exit 1 if off
"""
from __future__ import annotations

import argparse
import math
import os
import random
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from matplotlib.figure import Figure

    from .augment import FontBank, TextBank, Trace

__all__ = ["wilson", "expected_crop_area", "sample_views", "measure_views", "plot_views", "load_marks",
           "add_views_parser"]

LAYOUT_NAMES = {"top": "mark top, text below", "bottom": "text above, mark bottom",
                "left": "mark left, text right", "right": "mark right, text left"}


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial rate k/n (sound at rates of 0 and 1, unlike k/n +- z*se)."""
    if n == 0:
        return 0.0, 1.0
    z, p = _z(confidence), k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def expected_crop_area(lo: float, hi: float, size: int, grid: int = 400) -> float:
    """Mean area share RandomResizedCrop((lo, hi)) keeps of a square ``size`` image.

    Not (lo + hi) / 2: an (area, aspect 3/4-4/3) draw that does not fit is drawn again, up to ten
    times, then the whole image is kept; large areas fit less often. Integrated on a grid, with
    the crop's rounding to whole pixels.
    """
    import numpy as np

    a = lo + (hi - lo) * (np.arange(grid) + 0.5) / grid
    r = np.exp(math.log(3 / 4) + math.log(16 / 9) * (np.arange(grid) + 0.5) / grid)
    area, ratio = np.meshgrid(a * size * size, r, indexing="ij")
    w, h = np.round(np.sqrt(area * ratio)), np.round(np.sqrt(area / ratio))
    fits = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    q = fits.mean()
    kept = (w * h / (size * size))[fits].mean() if fits.any() else 1.0
    miss = (1 - q) ** 10
    return float((1 - miss) * kept + miss * 1.0)


def sample_views(images: torch.Tensor, recipe: str = "2nd-place", n: int = 2000, size: int = 112, seed: int = 0,
                 strong: bool = False, bank: FontBank | TextBank | None = None,
                 keep: bool = False) -> tuple[torch.Tensor | None, Trace]:
    """``n`` views of images drawn at random from ``images`` (uint8 (N, 3, S, S)) -> (views or None, Trace).

    The global random state (``random``, ``torch``) and torch's thread count are left as they were;
    sampling runs on one thread (per-image ops on tiny tensors: more threads only add overhead,
    4x slower on two busy cores).
    """
    import numpy as np
    import torch

    from .augment import BatchAugment, Trace

    trace = Trace()
    aug = BatchAugment(size, text_bank=bank, recipe=recipe, trace=trace)
    pick = torch.from_numpy(np.random.default_rng(seed + int(strong)).integers(len(images), size=n))
    py_state, torch_state, threads = random.getstate(), torch.get_rng_state(), torch.get_num_threads()
    out = []
    try:
        torch.set_num_threads(1)
        random.seed(seed * 2 + int(strong))
        torch.manual_seed(seed * 2 + int(strong))
        for start in range(0, n, 256):
            views = aug(images[pick[start:start + 256]], strong=strong)
            if keep:
                out.append(views)
    finally:
        random.setstate(py_state)
        torch.set_rng_state(torch_state)
        torch.set_num_threads(threads)
    return (torch.cat(out) if keep else None), trace


def _rate_row(view: str, op: str, declared: float, k: int, n: int) -> dict[str, Any]:
    return dict(view=view, operation=op, declared=declared, measured=k / n if n else float("nan"), n=n,
                kind="rate", k=k)


def _value_rows(view: str, name: str, values: list[float], mean: float, lo: float, hi: float,
                tol: float) -> list[dict[str, Any]]:
    """Mean (judged by its interval), min and max (judged by the declared range) of a drawn parameter."""
    k = len(values)
    m = sum(values) / k if k else float("nan")
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / max(1, k - 1)) if k else float("nan")
    rows = [dict(view=view, operation=f"{name} mean", declared=mean, measured=m, n=k, kind="mean", sd=sd, tol=tol)]
    for stat, declared, measured in (("min", lo, min(values, default=float("nan"))),
                                     ("max", hi, max(values, default=float("nan")))):
        rows.append(dict(view=view, operation=f"{name} {stat}", declared=declared, measured=measured, n=k,
                         kind="range", low=lo - tol, high=hi + tol))
    return rows


def _judge(row: dict[str, Any], confidence: float) -> dict[str, Any]:
    """Fill ``low``, ``high`` and ``ok`` of a row at ``confidence``."""
    kind = row.pop("kind")
    k, sd, tol = row.pop("k", 0), row.pop("sd", 0.0), row.pop("tol", 0.0)
    if kind == "rate":
        row["low"], row["high"] = wilson(k, row["n"], confidence)
        row["ok"] = bool(row["n"] > 0 and row["low"] - 1e-9 <= row["declared"] <= row["high"] + 1e-9)
    elif kind == "mean":
        half = _z(confidence) * sd / math.sqrt(max(1, row["n"])) + 1e-9
        row["low"], row["high"] = row["measured"] - half, row["measured"] + half
        row["ok"] = bool(row["low"] - tol <= row["declared"] <= row["high"] + tol)
    else:
        row["ok"] = bool(row["low"] <= row["measured"] <= row["high"])
    return row


def _view_rows(recipe: str, view: str, records: list[dict], size: int) -> list[dict]:
    from .augment import DECLARED, DECLARED_LAYOUTS, DECLARED_ZOOM

    n = len(records)
    declared = DECLARED[recipe][view]
    rows = [_rate_row(view, op, p, sum(op in r for r in records), n) for op, p in declared.items()]
    if view in DECLARED_ZOOM[recipe]:
        mean, lo, hi = DECLARED_ZOOM[recipe][view]
        rows += _value_rows(view, "zoom-out scale", [r["zoom-out"] for r in records if "zoom-out" in r],
                            mean, lo, hi, 1e-6)
    for op, p in declared.items():
        if op.startswith("crop") and p > 0:
            lo, hi = (float(x) for x in op.split()[1].split("-"))
            rows += _value_rows(view, f"{op} scale", [r[op] for r in records if op in r],
                                expected_crop_area(lo, hi, size), lo, hi, 1.0 / size)
    if declared.get("pseudo-logo", 0) > 0:
        logos = [r["pseudo-logo"] for r in records if "pseudo-logo" in r]
        for layout, share in DECLARED_LAYOUTS[recipe].items():
            rows.append(_rate_row(view, f"logo: {LAYOUT_NAMES[layout]}", share, logos.count(layout), len(logos)))
    return rows


def measure_views(images_uint8: torch.Tensor, recipe: str = "2nd-place", n: int = 2000, size: int = 112,
                  seed: int = 0, confidence: float = 0.95, familywise: bool = True,
                  bank: FontBank | TextBank | None = None) -> pd.DataFrame:
    """One row per operation and view: declared rate, measured rate, interval, ``ok``.

    Rates are shares of views (layouts: shares of pseudo-logos) with the Wilson interval; ``ok``
    when it holds the declared rate. Drawn parameters (the zoom-out's total scale, each crop's
    area share) get a mean row (normal interval around the measured mean; a crop's declared mean
    is :func:`expected_crop_area`) and min / max rows (``ok`` inside the declared range
    ``low``-``high``). ``familywise``: the whole table holds at ``confidence`` (Bonferroni: each of
    R rows at 1 - (1 - confidence) / R), so a correct recipe passes at that rate instead of
    failing some row of 30 most of the time; ``False``: every row at ``confidence``. ``attrs``:
    the per-row ``confidence`` used and ``logo_failures`` (failed, all pseudo-logos).
    """
    import pandas as pd

    rows: list[dict] = []
    failed = [0, 0]  # pseudo-logos whose font failed (the view went on unchanged), pseudo-logos
    for view in ("weak", "strong"):
        _, trace = sample_views(images_uint8, recipe, n, size, seed, strong=view == "strong", bank=bank)
        rows += _view_rows(recipe, view, trace.views, size)
        failed[0] += sum("pseudo-logo failed" in r for r in trace.views)
        failed[1] += sum("pseudo-logo" in r for r in trace.views)
    level = 1 - (1 - confidence) / len(rows) if familywise else confidence
    table = pd.DataFrame([_judge(r, level) for r in rows],
                         columns=["view", "operation", "declared", "measured", "low", "high", "n", "ok"])
    table.attrs.update(confidence=level, logo_failures=tuple(failed))
    return table


def _label(record: dict) -> str:
    """A view's title: what shaped it (pseudo-logo layout, zoom-out, crop) over what coloured it."""
    shape = []
    if "pseudo-logo" in record:
        shape.append(f"logo {record['pseudo-logo']}" + (" (failed)" if "pseudo-logo failed" in record else ""))
    if "zoom-out" in record:
        shape.append(f"zoom {record['zoom-out']:.2f}")
    shape += [f"crop {v:.2f}" for k, v in record.items() if k.startswith("crop")]
    colour = [op for op in ("blur", "gray", "flip") if op in record]
    return " ".join(shape) + "\n" + " ".join(colour)


def plot_views(images: torch.Tensor, recipe: str = "2nd-place", n_views: int = 8, size: int = 112, seed: int = 0,
               cell: float = 1.25, out: str | os.PathLike | None = None) -> Figure:
    """Per image: a weak row and a strong row of views, each titled with what its draw did; a Figure."""
    from .viz import show_marks

    marks, titles = [], []
    for i, img in enumerate(images):
        for strong in (False, True):
            views, trace = sample_views(img[None], recipe, n_views, size, seed + i, strong=strong, keep=True)
            marks += [img, *views]
            titles += ["original\n" + ("strong" if strong else "weak"), *[_label(r) for r in trace.views]]
    return show_marks(marks, titles, size=size, ncols=n_views + 1, cell=cell,
                      suptitle=f"recipe {recipe!r}: weak and strong views", out=out)


def load_marks(data: str | os.PathLike, n: int = 300, size: int = 112, seed: int = 0) -> torch.Tensor:
    """``n`` cite images of a competition folder, trimmed and padded as training sees them: uint8 (n, 3, size, size)."""
    import numpy as np
    import torch

    from .augment import pil_to_uint8
    from .data import load_competition
    from .preprocess import load_mark

    cite = load_competition(data, check_images=False).cite
    rows = np.random.default_rng(seed).choice(len(cite), size=min(n, len(cite)), replace=False)
    return torch.stack([pil_to_uint8(load_mark(p, size)) for p in cite["path"].iloc[np.sort(rows)]])


# ----------------------------------------------------------------------------------------
# tmr views
# ----------------------------------------------------------------------------------------
def add_views_parser(subparsers: Any) -> None:
    """Add ``tmr views`` to the ``tmr`` parser (torch is imported only when it runs)."""
    p = subparsers.add_parser(
        "views", help="measure how often each random augmentation fires, against the recipe",
        description="Sample N weak and N strong views of the competition's cite images, count what every "
                    "random operation did, and compare with the rates the recipe declares (Wilson intervals, "
                    "95 % for the whole table). Exit 0 when every row is ok, 1 otherwise.")
    p.add_argument("--data", default=None,
                   help="participant folder (default: the dataset of $TMR_PRESET or cpu, e.g. data/tmr-cpu)")
    p.add_argument("--recipe", default="2nd-place", choices=["2nd-place", "kit"],
                   help="augmentation recipe (default 2nd-place)")
    p.add_argument("--n", type=int, default=2000, help="views of each kind (default 2000)")
    p.add_argument("--size", type=int, default=112, help="view size in px (default 112)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--marks", type=int, default=300, help="cite images to draw from (default 300)")
    p.set_defaults(func=_cmd_views)


def _cmd_views(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from .paths import default_data_dir

    data = Path(args.data) if args.data else default_data_dir(os.environ.get("TMR_PRESET") or "cpu")
    if not data.is_dir():
        raise FileNotFoundError(f"no competition folder at {data}; build one with `tmr data build` or pass --data")
    marks = load_marks(data, args.marks, args.size, args.seed)
    t0 = time.perf_counter()
    table = measure_views(marks, args.recipe, args.n, args.size, args.seed)
    print(f"recipe {args.recipe!r}: {args.n} weak + {args.n} strong views of {len(marks)} cites of {data} "
          f"at {args.size} px ({time.perf_counter() - t0:.0f} s); intervals at {table.attrs['confidence']:.2%} "
          f"each, 95 % for the whole table")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    bad, logos = table.attrs["logo_failures"]
    if logos:
        print(f"pseudo-logos whose font failed (view left unchanged, as theirs): {bad} of {logos}")
    off = table[~table["ok"]]
    print(f"all {len(table)} rows ok" if off.empty else
          f"{len(off)} of {len(table)} rows off: {', '.join(off['view'] + ' ' + off['operation'])}")
    return 0 if off.empty else 1
