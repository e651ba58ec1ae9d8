"""Dataset builder: images per second and peak memory as the competition grows (issue 6, target 4).

    python benchmarks/bench_builder.py                  # the `full` preset at 50k and 200k cites
    python benchmarks/bench_builder.py --quick          # 600 and 2,400 cites (well under a minute)
    python benchmarks/bench_builder.py --keep-full data/tmr-full   # keep the 200k build as the dataset

Each size is the `full` preset (192 px, 3,542 queries) with only the number of cites changed, built
into a temporary folder. Peak memory is the resident memory of the whole process tree (this process
and the rendering workers), sampled every 0.1 s; "flat" means the peak does not grow with the size
(the target: the 200k peak within 1.25x the 50k peak). The baseline column of the 200k row is the
50k figure.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from _common import PeakMemory, Report, mib, parser  # noqa: E402

from tmr_lib.builder import BUILD_PRESETS, build_competition  # noqa: E402


def build_once(n_cite: int, n_queries: tuple[int, int] | None, out: Path, workers: int | None) -> dict:
    full = BUILD_PRESETS["full"]
    kw = {"n_cite": n_cite}
    if n_queries:
        kw.update(n_train_queries=n_queries[0], n_test_queries=n_queries[1])
    spec = dataclasses.replace(full, name="full" if n_cite == full.n_cite and not n_queries else f"full-{n_cite}", **kw)
    t0 = time.perf_counter()
    with PeakMemory(tree=True) as mem:
        out, host = build_competition(out, preset=spec, seed=0, workers=workers, progress=False, force=True)
    wall = time.perf_counter() - t0
    ds = json.loads((out / "dataset.json").read_text())
    counts = ds.get("counts", {})
    n_img = counts["cites"] + counts["train_queries"] + counts["test_queries"]
    return {"n_cite": n_cite, "images": n_img, "wall": wall, "ips": n_img / wall, "peak": mem.peak,
            "base": mem.base, "counts": counts}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sizes", default=None, help="comma-separated cite counts (default 50000,200400; quick 600,2400)")
    ap.add_argument("--workers", type=int, default=None, help="rendering processes (default: all cores)")
    ap.add_argument("--keep-full", default=None, help="build the largest size here and keep it (e.g. data/tmr-full)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([600, 2400] if args.quick else [50_000, 200_400])
    queries = (60, 40) if args.quick else None
    rep = Report("Dataset builder (target 4)", args.quick, args.results)
    res = []
    for n in sizes:
        keep = args.keep_full and n == max(sizes)
        if keep:
            out = Path(args.keep_full)
            r = build_once(n, queries, out, args.workers)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="tmr-bench-build-"))
            try:
                r = build_once(n, queries, tmp / "comp", args.workers)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        res.append(r)
        print(f"{n:,} cites: {r['images']:,} images in {r['wall']:.1f} s = {r['ips']:.0f} img/s, "
              f"peak {mib(r['peak']):.0f} MiB", flush=True)
    first = res[0]
    for r in res:
        ratio = r["peak"] / first["peak"]
        rep.row(f"build {r['n_cite']:,} cites: images/s", r["ips"], first["ips"] if r is not first else None,
                ratio=(r["ips"] / first["ips"]) if r is not first else None)
        rep.row(f"build {r['n_cite']:,} cites: wall time", r["wall"], unit="s",
                ours_s=f"{r['wall']:.0f} s ({r['images']:,} images)")
        rep.row(f"build {r['n_cite']:,} cites: peak memory (process tree)", mib(r["peak"]),
                mib(first["peak"]) if r is not first else None, "MiB",
                ratio=ratio if r is not first else None,
                target="flat: <= 1.25x the smallest" if r is not first else None,
                ok=(ratio <= 1.25) if r is not first else None)
    rep.note(f"`full` preset (192 px) with the cite count changed; {res[-1]['images']:,} images at the largest "
             f"size; workers = {args.workers or 'all cores'}. Memory is the summed RSS of the builder and its "
             "rendering workers (shared pages counted once per process, so an over-estimate).")
    rep.finish()


if __name__ == "__main__":
    main()
