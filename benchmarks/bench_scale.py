"""Real scale (issue 15): bounded memory as the register grows, the streaming path's speed, resume.

    python benchmarks/bench_scale.py              # 50k and 200k cites (the `full` build; built if missing, ~40 min)
    python benchmarks/bench_scale.py --quick      # 600 and 2,400 cites (about a minute; the tests run it)
    python benchmarks/bench_scale.py --part throughput --data data/tmr-cpu

Every stage runs in its own process (`--stage`), so each peak is that stage's alone; the parent samples
the resident memory of the stage's whole process tree (DataLoader workers included) every 0.1 s.

- memory: at each size, decode (images -> the on-disk cache), predict (embed + index + search +
  post-processing, `cpu` preset settings, an untrained encoder: the data path, not the accuracy), the
  previous commit's predict on the same files (`--old`: everything in RAM; skipped where it would not
  fit), and training at the `gpu` preset's 384 px with a small backbone on a subsample.
- resume: an embedding run killed with SIGKILL part-way, then run again; its vectors are compared with
  an uninterrupted run's.
- throughput: on the `cpu` competition, embedding and training read from RAM (the old path) and
  streamed from the cache file (the new one), interleaved in one process.
- plan: `tmr plan`'s estimates (tmr_lib.plan) beside each measured run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import BENCH_DIR, ROOT, PeakMemory, Report, commit, gib, parser, write_results  # noqa: E402

RESULTS_JSON = ROOT / "benchmarks" / "results" / "scale.json"
SIZES = {"full": (50_000, 200_400), "quick": (300, 1_200)}
SMALL = "mobilenetv3_small_100"
OLD_COMMIT = "1383fda"  #: the last commit before the streaming data path (its predict holds every image in RAM)  #: the small backbone of the 384 px training run


# ----------------------------------------------------------------------------------------
# Stages (run in a child process: `bench_scale.py --stage NAME --data D ...`, print one JSON line)
# ----------------------------------------------------------------------------------------
def _cfg(args):
    from tmr_lib.config import get_config

    return get_config("cpu", pretrained="random", num_workers=args.workers)


def stage_decode(args) -> dict:
    from tmr_lib.data import load_competition
    from tmr_lib.images import image_store

    comp = load_competition(args.data)
    t0 = time.time()
    store = image_store(_cfg(args), comp, progress=False)
    return {"seconds": time.time() - t0, "images": len(store), "disk_bytes": store.images.path.stat().st_size,
            "streamed": store.streamed}


def stage_predict(args) -> dict:
    import shutil

    from tmr_lib.encoder import load_ensemble, state_fingerprint
    from tmr_lib.images import cache_dir
    from tmr_lib.predict import predict

    key = state_fingerprint(load_ensemble(args.model))
    for old in cache_dir(args.data).glob(f"emb-{key}-*"):  # embed afresh: the run measures the work
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    t0 = time.time()
    pred = predict(_cfg(args), args.data, args.model, Path(args.model) / "submission.csv", progress=False,
                   log=lambda s: None)
    return {"seconds": time.time() - t0, "queries": len(pred.retrieval)}


OLD_PREDICT = """
import json, sys, time
from pathlib import Path
import tmr_lib
from tmr_lib.config import get_config
from tmr_lib.predict import predict
data, model, workers, tree = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
assert str(Path(tmr_lib.__file__).resolve()).startswith(str(Path(tree).resolve())), tmr_lib.__file__
t0 = time.time()
pred = predict(get_config("cpu", pretrained="random", num_workers=workers), data, model,
               Path(model) / "submission-old.csv", progress=False, log=lambda s: None)
print(json.dumps({"seconds": time.time() - t0, "queries": len(pred.retrieval)}))
"""


def stage_train384(args) -> dict:
    from tmr_lib.config import get_config
    from tmr_lib.data import load_competition
    from tmr_lib.images import cache_dir
    from tmr_lib.train import train_encoder

    comp = load_competition(args.data)
    comp = dataclasses.replace(comp, train=comp.train.iloc[:args.train_pairs].reset_index(drop=True))
    cfg = get_config("cpu", backbones=(SMALL,), pretrained="random", image_size=384, embed_dim=128, epochs=1,
                     batch_pairs=16, crops_per_pair=2, val_distractors=args.val_distractors, extra_cite_pairs=0, xbm_memory=0,
                     max_train_minutes=args.train_minutes, num_workers=args.workers, train_workers=0,
                     embed_batch_size=32, freeze_layers=0.0)
    t0 = time.time()
    r = train_encoder(cfg, comp, Path(args.model) / "train384", fold=0, resume=False, progress=False,
                      log=lambda s: None, cache_dir=cache_dir(comp.root))
    return {"seconds": time.time() - t0, "images_per_s": r.images_per_s, "pairs": len(comp.train),
            "cites": len(comp.cite)}


def stage_embed(args) -> dict:
    """Embed the cites into ``--cache`` (the resume check's worker; the parent may kill it)."""
    import numpy as np

    from tmr_lib.data import load_competition
    from tmr_lib.embed import embed_cached, images_key
    from tmr_lib.encoder import load_ensemble
    from tmr_lib.images import image_store

    import tmr_lib.embed as emb_mod

    if args.die_after_shards:  # a real SIGKILL of this process once that many shards are recorded
        real, written = emb_mod._write_manifest, []

        def write_then_die(folder, spec, done):
            real(folder, spec, done)
            written.append(1)
            if len(written) >= args.die_after_shards:
                os.kill(os.getpid(), signal.SIGKILL)

        emb_mod._write_manifest = write_then_die
    cfg = _cfg(args)
    comp = load_competition(args.data)
    store = image_store(cfg, comp, progress=False)
    paths = list(comp.cite["path"])
    model = load_ensemble(args.model)
    emb = embed_cached(model, store.images_of(paths), images_key(paths, store.size), args.cache,
                       batch_size=cfg.embed_batch_size, test_scale=cfg.test_scale, tta_flip=cfg.tta_flip,
                       channels_last=cfg.channels_last, progress=False, shard_rows=args.shard_rows)
    np.save(Path(args.cache) / "result.npy", emb)
    return {"rows": len(emb), "shards": len(list(Path(args.cache).glob("emb-*/shard-*.npy")))}


STAGES = {"decode": stage_decode, "predict": stage_predict, "train384": stage_train384, "embed": stage_embed}


# ----------------------------------------------------------------------------------------
# The parent: build, run each stage in a child, sample its memory, compare
# ----------------------------------------------------------------------------------------
def run_stage(stage: str, data: Path, model: Path, extra: list[str] = (), env: dict | None = None,
              cwd: Path | None = None, cmd: list[str] | None = None, expect_kill: bool = False) -> dict:
    cmd = cmd or [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--data", str(data),
                  "--model", str(model), *extra]
    t0 = time.time()
    with PeakMemory(tree=True) as mem:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=cwd)
        out, _ = proc.communicate()
    if expect_kill:
        if proc.returncode != -signal.SIGKILL:
            raise SystemExit(f"stage {stage} was to be killed, but exited with {proc.returncode}")
        return {"killed_after_s": time.time() - t0, "peak_bytes": mem.peak - mem.base}
    if proc.returncode:
        raise SystemExit(f"stage {stage} on {data} failed (exit {proc.returncode})")
    res = json.loads(out.strip().splitlines()[-1])
    res.update(peak_bytes=mem.peak - mem.base, wall_s=time.time() - t0)
    print(f"  {stage:12s} {data.name}: peak {gib(res['peak_bytes']):.2f} GiB, {res['wall_s']:.0f} s", flush=True)
    return res


def ensure_build(n_cite: int, quick: bool) -> Path:
    from bench_builder import build_once

    from tmr_lib.builder import existing_build

    if n_cite == SIZES["full"][1] and (ROOT / "data" / "tmr-full" / "cite_v2.csv").is_file():
        return ROOT / "data" / "tmr-full"
    out = BENCH_DIR / f"tmr-scale-{n_cite}"
    if existing_build(out) is None:
        print(f"building {out} ({n_cite:,} cites)...", flush=True)
        build_once(n_cite, (40, 30) if quick else None, out, None)
    return out


def untrained_model(folder: Path, seed: int = 0) -> Path:
    """A model folder holding the `cpu` preset's encoder at random initialisation (the data path's load)."""
    from tmr_lib.config import get_config
    from tmr_lib.encoder import encoder_from_config, save_encoder, save_ensemble

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "model.json").is_file():
        cfg = get_config("cpu", pretrained="random", seed=seed)
        model, _ = encoder_from_config(cfg)
        save_ensemble([[save_encoder(model, folder / "encoder.safetensors")]], folder, extra={"config": cfg.to_dict()})
    return folder


def old_tree(commit: str) -> Path:
    tree = BENCH_DIR / f"old-{commit[:10]}"
    if not (tree / "tmr_lib").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(tree), commit],
                       check=True, capture_output=True)
    return tree


def part_memory(report: Report, args, sizes: tuple[int, ...], model: Path) -> dict:
    out = {}
    for n in sizes:
        data = ensure_build(n, args.quick)
        r = {"data": str(data), "cites": n}
        r["decode"] = run_stage("decode", data, model, ["--workers", str(args.workers)])
        r["predict"] = run_stage("predict", data, model, ["--workers", str(args.workers)])
        if args.old:
            tree = old_tree(args.old)
            need = n * 3 * 112 * 112 * 2.2  # the old path holds the store and a copy of the cites
            if need < 0.7 * _total_ram():
                env = {**os.environ, "PYTHONPATH": str(tree)}
                cmd = [sys.executable, "-c", OLD_PREDICT, str(data), str(model), str(args.workers), str(tree)]
                r["old_predict"] = run_stage("old-predict", data, model, env=env, cwd=tree, cmd=cmd)
        r["train384"] = run_stage("train384", data, model, [
            "--workers", str(args.workers), "--train-pairs", str(args.train_pairs), "--train-minutes",
            str(args.train_minutes), "--val-distractors", str(args.val_distractors)])
        out[n] = r
    return out


def _total_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def part_resume(data: Path, model: Path, shard_rows: int) -> dict:
    """Embed the cites once whole, once SIGKILLed after half its shards and run again: same vectors?"""
    import shutil

    import numpy as np

    base = BENCH_DIR / "resume"
    shutil.rmtree(base, ignore_errors=True)
    whole, killed = base / "whole", base / "killed"
    a = run_stage("embed", data, model, ["--cache", str(whole), "--shard-rows", str(shard_rows)])
    half = max(1, a["shards"] // 2)
    k = run_stage("embed", data, model, ["--cache", str(killed), "--shard-rows", str(shard_rows),
                                         "--die-after-shards", str(half)], expect_kill=True)
    manifest = next(killed.glob("emb-*/manifest.json"))
    kept = len(json.loads(manifest.read_text())["done"])
    b = run_stage("embed", data, model, ["--cache", str(killed), "--shard-rows", str(shard_rows)])
    same = bool(np.array_equal(np.load(whole / "result.npy"), np.load(killed / "result.npy")))
    return {"rows": a["rows"], "shards": a["shards"], "killed_after_s": k["killed_after_s"], "shards_kept": kept,
            "identical": same, "whole_s": a["wall_s"], "resumed_s": b["wall_s"]}


def part_throughput(data: str, rounds: int = 2, steps: int = 6) -> dict:
    """Embedding and training images/s, RAM tensor (the old path) vs streamed file (the new one),
    interleaved in one process; training is the kit's own `train_one_epoch` with the recipe's loss."""
    import numpy as np
    import torch

    from tmr_lib.config import get_config
    from tmr_lib.data import load_competition
    from tmr_lib.embed import embed_images
    from tmr_lib.encoder import encoder_from_config
    from tmr_lib.images import image_store
    from tmr_lib.loop import LoopState, Schedule, train_one_epoch
    from tmr_lib.losses import make_loss
    from tmr_lib.train import PairBatches

    cfg = get_config("cpu")
    torch.set_num_threads(os.cpu_count() or 1)
    comp = load_competition(data)
    store = image_store(cfg, comp, progress=False)
    paths = list(comp.cite["path"])
    src = {"streamed": store.images, "ram": store.images.to_tensor()}
    model, _ = encoder_from_config(cfg)
    loss = make_loss(cfg.loss, cfg.embed_dim)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    kw = dict(batch_size=cfg.embed_batch_size, test_scale=cfg.test_scale, channels_last=cfg.channels_last,
              progress=False)
    items = np.stack([store.rows(list(comp.train["path"])), store.rows(list(comp.train["cite_path"])),
                      np.arange(len(comp.train))], axis=1)
    rng = np.random.default_rng(0)
    res = {"embed": {"ram": [], "streamed": []}, "train": {"ram": [], "streamed": []}}
    rows = store.rows(paths)
    for _ in range(rounds):
        for name in ("ram", "streamed"):
            images = src[name][torch.from_numpy(rows)] if name == "ram" else store.images_of(paths)
            t = time.perf_counter()
            embed_images(model, images, **kw)
            res["embed"][name].append(len(paths) / (time.perf_counter() - t))
            batches = PairBatches(src[name], cfg.image_size, cfg.crops_per_pair, cfg.aug_extra, style=cfg.augment)
            batches.set_plan([items[rng.choice(len(items), cfg.batch_pairs)] for _ in range(steps)])
            stats = train_one_epoch(model.train(), batches, loss, opt, Schedule(steps), LoopState(),
                                    device=torch.device("cpu"), channels_last=cfg.channels_last)
            res["train"][name].append(stats.images_per_s)
    return {k: {n: float(np.median(v)) for n, v in d.items()} for k, d in res.items()}


def part_plan(report: Report, measured: dict, sizes, workers: int) -> dict:
    """tmr plan's estimates (reference costs, no --measure) beside the measured runs (target: within +-30 %)."""
    from tmr_lib import plan as tplan
    from tmr_lib.config import get_config

    out = {}
    for n in sizes:
        m = measured[n]
        cfg = get_config("cpu", pretrained="random", num_workers=workers)
        p = tplan.plan(cfg, tplan.Counts.from_data(m["data"]), tplan.reference_costs(cfg))
        pairs = {"decoded image cache (disk)": m["decode"]["disk_bytes"],
                 "peak RAM embed+index+predict": m["predict"]["peak_bytes"],
                 "time decode": m["decode"]["seconds"],
                 "time embed + search": m["predict"]["seconds"]}
        out[n] = {}
        for name, real in pairs.items():
            est = sum(p.row(part).value for part in name.replace("time embed + search", "time embed|time search")
                      .split("|"))
            out[n][name] = {"estimate": est, "measured": real, "ratio": est / max(real, 1e-9)}
            unit, f = ("GiB", gib) if "time" not in name else ("s", float)
            report.row(f"{n:,} cites: plan's {name} vs measured", f(est), f(real), unit, ratio=est / max(real, 1e-9),
                       target="0.7x-1.3x", ok=0.7 <= est / max(real, 1e-9) <= 1.3)
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--part", choices=("memory", "resume", "throughput", "all"), default="all")
    ap.add_argument("--stage", choices=tuple(STAGES), default=None, help=argparse_hidden())
    ap.add_argument("--data", default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--shard-rows", type=int, default=8192)
    ap.add_argument("--die-after-shards", type=int, default=0, help=argparse_hidden())
    ap.add_argument("--workers", type=int, default=2, help="decoding processes (default 2)")
    ap.add_argument("--train-pairs", type=int, default=300)
    ap.add_argument("--train-minutes", type=float, default=1.0)
    ap.add_argument("--val-distractors", type=int, default=1000, help="the 384 px run's validation distractors")
    ap.add_argument("--old", default=None, help="the commit whose in-RAM path is the baseline (default 1383fda, "
                    "the last before streaming; --quick: none; '' to skip)")
    ap.add_argument("--throughput-data", default=None, help="competition for the throughput part (default "
                    "data/tmr-cpu; --quick: data/tmr-ci)")
    ap.add_argument("--json", default=None, help="results file (default benchmarks/results/scale.json; "
                    "not written by --quick; '-' to skip)")
    args = ap.parse_args()
    if args.old is None:
        args.old = "" if args.quick else OLD_COMMIT
    if args.stage:
        print(json.dumps(STAGES[args.stage](args)), flush=True)
        return
    _run(args)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def _run(args) -> None:
    sizes = SIZES["quick" if args.quick else "full"]
    if args.quick:
        args.train_minutes, args.train_pairs = min(args.train_minutes, 0.02), min(args.train_pairs, 16)
        args.val_distractors = min(args.val_distractors, 20)
    report = Report("Real scale: bounded memory, streaming, resume", args.quick, args.results)
    model = untrained_model(BENCH_DIR / "scale-model")
    figures, t0 = {"sizes": list(sizes)}, time.time()
    if args.part in ("memory", "all"):
        mem = figures["memory"] = part_memory(report, args, sizes, model)
        small, big = mem[sizes[0]], mem[sizes[-1]]
        for stage, label in (("decode", "decode (images -> cache)"), ("predict", "embed + index + predict"),
                             ("old_predict", "previous commit's predict (all in RAM)"),
                             ("train384", f"training at 384 px ({SMALL}, {args.train_pairs} pairs)")):
            if stage not in big:
                continue
            ratio = big[stage]["peak_bytes"] / max(1, small[stage]["peak_bytes"]) if stage in small else None
            target = {"predict": "<= 1.3x and < 4 GiB", "train384": "flat, < 4 GiB"}.get(stage)
            ok = None
            if stage == "predict":
                ok = ratio <= 1.3 and gib(big[stage]["peak_bytes"]) < 4
            elif stage == "train384":
                ok = ratio <= 1.3 and gib(big[stage]["peak_bytes"]) < 4
            report.row(f"{label}: peak RSS at {sizes[-1]:,} cites (vs {sizes[0]:,})", gib(big[stage]["peak_bytes"]),
                       gib(small[stage]["peak_bytes"]) if stage in small else None, "GiB", ratio=ratio,
                       target=target, ok=ok)
        for n in sizes:
            r = mem[n]
            report.row(f"{n:,} cites: decoded-image cache on disk", gib(r["decode"]["disk_bytes"]), None, "GiB")
            report.row(f"{n:,} cites: decode images/s", r["decode"]["images"] / r["decode"]["seconds"], None)
            report.row(f"{n:,} cites: predict wall (embed {r['predict']['queries']:,} queries + all cites)",
                       r["predict"]["seconds"], r.get("old_predict", {}).get("seconds"), "s")
        figures["plan"] = part_plan(report, mem, sizes, args.workers)
    if args.part in ("resume", "all"):
        data = ensure_build(sizes[0], args.quick)
        res = figures["resume"] = part_resume(data, model, shard_rows=64 if args.quick else 4096)
        report.row(f"embedding of {res['rows']:,} cites SIGKILLed after {res['shards_kept']} of {res['shards']} shards, "
                   "run again: identical to an uninterrupted run", None, None, ours_s="yes" if res["identical"] else "NO",
                   target="identical", ok=res["identical"])
        report.row("  resumed run's wall time vs the uninterrupted one", res["resumed_s"], res["whole_s"], "s",
                   ratio=res["resumed_s"] / res["whole_s"])
    if args.part in ("throughput", "all"):
        data = args.throughput_data or args.data or ("data/tmr-ci" if args.quick else "data/tmr-cpu")
        if not (ROOT / data / "cite_v2.csv").is_file() and not Path(data, "cite_v2.csv").is_file():
            from tmr_lib.builder import ensure_dataset

            ensure_dataset("ci" if args.quick else "cpu", ROOT / data, progress=False)
        tp = figures["throughput"] = part_throughput(data, rounds=1 if args.quick else 2, steps=2 if args.quick else 6)
        for k in ("embed", "train"):
            r = tp[k]["streamed"] / tp[k]["ram"]
            report.row(f"{k} images/s on {Path(data).name}: streamed vs in RAM", tp[k]["streamed"], tp[k]["ram"],
                       ratio=r, target=">= 0.8x", ok=r >= 0.8)
    report.note("Peak RSS: the stage process and its DataLoader workers, sampled every 0.1 s, minus the parent's "
                "share; predict = embed all cites and test queries + faiss + search + post-processing with an "
                "untrained `cpu` encoder (the data path, not the accuracy).")
    report.finish()
    write_results({"figures": figures, "commit": commit(), "wall_s": round(time.time() - t0),
                   "seeds": {"build": 0, "model": 0}}, RESULTS_JSON, args.json, args.quick)


if __name__ == "__main__":
    main()
