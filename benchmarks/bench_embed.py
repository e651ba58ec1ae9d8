"""Embedding the database, image files -> embeddings (issue 6, target 3), and training speed.

    python benchmarks/bench_embed.py            # 2,000 cite images of data/tmr-full (else tmr-cpu)
    python benchmarks/bench_embed.py --quick    # 48 images of data/tmr-ci

Same model (the `cpu` preset: MobileNetV3-large, 112 px, kit weights "tmr-marks"), same images,
same preprocessing (read, trim white margins, pad to square, resize, Affine 0.9, normalise):

* baseline -- the 2nd place's loop: one image at a time, read -> trim -> transform -> forward;
* ours -- the kit's ``embed_paths``: a DataLoader decoding in worker processes, batches of 256,
  inference_mode, channels-last.

The two are interleaved (loop, ours, loop with one torch thread) and the best round of each is
kept; the stronger loop (2 or 1 torch threads) is the baseline; the embeddings are compared. The
loop's rate holds from its first image, so it runs on a subset (300 images); the batched path
runs on all 2,000 (its first batch waits for a worker to decode 256 images, so a few batches
understate it). Then the `cpu` preset's training step (4 augmented crops per
pair, 64 pairs = 256 images, contrastive loss + CrossBatchMemory, AdamW; augmentation in one
DataLoader worker, as ``train_encoder`` runs it) gives training images per second.
"""

from __future__ import annotations

import os
import time

import numpy as np

from _common import ROOT, Report, competition_dir, parser  # noqa: E402

import torch  # noqa: E402

from tmr_lib.config import get_config  # noqa: E402
from tmr_lib.embed import embed_paths  # noqa: E402
from tmr_lib.encoder import encoder_from_config  # noqa: E402

TARGET = 2.0


def one_at_a_time(model, paths, size: int, scale: float) -> np.ndarray:
    """The 2nd place's inference loop: each image read, trimmed, transformed and embedded alone."""
    from tmr_lib.augment import inference_transform, normalize, pil_to_uint8
    from tmr_lib.preprocess import load_mark

    model.eval()
    out = []
    with torch.no_grad():
        for p in paths:
            img = load_mark(p, size)  # read, trim margins, pad to square, resize
            x = normalize(inference_transform(pil_to_uint8(img)[None], scale))
            out.append(model(x)[0].numpy())
    return np.stack(out)


def ours(model, paths, cfg) -> np.ndarray:
    return embed_paths(model, paths, cfg.image_size, batch_size=cfg.embed_batch_size,
                       num_workers=cfg.num_workers, test_scale=cfg.test_scale, channels_last=cfg.channels_last,
                       progress=False)


def training_speed(model, cfg, paths, steps: int, batch_pairs: int) -> tuple[float, float]:
    """(images per second, seconds per step) of the cpu preset's training step, after one warm-up step."""
    from torch.utils.data import DataLoader

    from tmr_lib.images import ImageStore
    from tmr_lib.loop import LoopState, Schedule, train_one_epoch
    from tmr_lib.losses import make_loss
    from tmr_lib.train import PairBatches

    store = ImageStore.load(paths, cfg.image_size, progress=False)
    rng = np.random.default_rng(0)
    n = len(store)
    plan = []
    for _ in range(steps + 1):
        cites = rng.choice(n, batch_pairs, replace=n < batch_pairs)
        applies = rng.choice(n, batch_pairs)
        plan.append(np.stack([applies, cites, np.arange(batch_pairs)], axis=1).astype(np.int64))
    ds = PairBatches(store.images, cfg.image_size, cfg.crops_per_pair, cfg.aug_extra)
    ds.set_plan(plan)
    workers = min(cfg.num_workers, 1)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))  # as train_encoder does on a CPU
    loss_fn = make_loss(cfg.loss, cfg.embed_dim, xbm_memory=cfg.xbm_memory)
    loss_fn.use_memory = loss_fn.memory is not None and cfg.xbm_start_epoch == 0
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = DataLoader(ds, batch_size=None, num_workers=workers, prefetch_factor=2 if workers else None)
    ticks = []  # after each step; the first (worker start, first allocations) is the warm-up
    try:
        train_one_epoch(model, loader, loss_fn, opt, Schedule(total_updates=steps + 1), LoopState(),
                        device=torch.device("cpu"), channels_last=cfg.channels_last,
                        on_step=lambda _u, _loss: ticks.append(time.perf_counter()))
    finally:
        torch.set_num_threads(threads_before)
        model.eval()
    dt = ticks[-1] - ticks[0]
    images = (len(ticks) - 1) * batch_pairs * cfg.crops_per_pair
    return images / dt, dt / steps


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--n", type=int, default=None, help="images for the batched path (default 2,000; quick 48)")
    ap.add_argument("--loop-n", type=int, default=None, help="images for the one-at-a-time loop (default 300, "
                    "a fifth of them with 2 torch threads; quick 16)")
    ap.add_argument("--batch-size", type=int, default=None, help="the batched path's batch size (default: the "
                    "cpu preset's embed_batch_size)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 2; quick 1)")
    ap.add_argument("--data", default=None, help="competition to take cite images from")
    args = ap.parse_args()
    n = args.n or (48 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 2)
    full = (ROOT / "data/tmr-full/cite_v2.csv").is_file()
    data = competition_dir(args.data or (None if args.quick or full else "data/tmr-cpu"), args.quick)
    from tmr_lib.data import load_competition

    comp = load_competition(ROOT / data, check_images=False)
    paths = list(comp.cite["path"].sample(n=min(n, len(comp.cite)), random_state=0))
    cfg = get_config("cpu")
    if args.batch_size:
        cfg = cfg.replace(embed_batch_size=args.batch_size)
    model, weights = encoder_from_config(cfg)
    model.eval()
    rep = Report("Embedding the database (target 3)", args.quick, args.results)
    print(f"{len(paths):,} images of {data}, {cfg.backbones[0]} at {cfg.image_size} px ({weights}); "
          f"torch threads {torch.get_num_threads()}", flush=True)

    ours(model, paths[:8], cfg)  # warm-up both paths (first-call allocations)
    one_at_a_time(model, paths[:8], cfg.image_size, cfg.test_scale)
    # The loop's rate is per image from the first image on, so it runs on a subset; the batched
    # path needs many batches to reach its steady state (the first batch waits for one worker to
    # decode 256 images), so it runs on all of them. Rates are images per second either way.
    sub = paths[:args.loop_n or (16 if args.quick else 300)]
    sub2 = sub[: max(8, len(sub) // 5)]  # 2 torch threads on batch-1 ops can crawl on a busy machine
    t_base, t_base1, t_ours = [], [], []
    threads = torch.get_num_threads()
    for r in range(rounds):
        t0 = time.perf_counter()
        e_base = one_at_a_time(model, sub2, cfg.image_size, cfg.test_scale)
        t_base.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        e_ours = ours(model, paths, cfg)
        t_ours.append(time.perf_counter() - t0)
        torch.set_num_threads(1)  # the loop with one torch thread: no thread hand-offs per tiny op
        t0 = time.perf_counter()
        one_at_a_time(model, sub, cfg.image_size, cfg.test_scale)
        t_base1.append(time.perf_counter() - t0)
        torch.set_num_threads(threads)
        print(f"round {r + 1}: one-at-a-time {len(sub2) / t_base[-1]:.0f} img/s ({threads} torch threads), "
              f"{len(sub) / t_base1[-1]:.0f} img/s (1 thread); DataLoader batches {len(paths) / t_ours[-1]:.0f} "
              "img/s", flush=True)
    ips_ours = len(paths) / min(t_ours)
    ips_b2, ips_b1 = len(sub2) / min(t_base), len(sub) / min(t_base1)
    ips_base = max(ips_b2, ips_b1)  # the stronger of the two loops is the baseline
    cos = float(np.min(np.sum(e_base * e_ours[:len(sub2)], axis=1)))
    rep.row("inference, image files -> embeddings: images/s", ips_ours, ips_base,
            ratio=ips_ours / ips_base, target=f">= {TARGET:.0f}x", ok=ips_ours / ips_base >= TARGET,
            ours_s=f"{ips_ours:.0f} (kit DataLoader, batch {cfg.embed_batch_size}, {cfg.num_workers} workers)",
            base_s=f"{ips_base:.0f} (one image at a time, best of {threads} and 1 torch threads)")
    rep.row("  the one-image loop with 2 / 1 torch threads: images/s", None,
            ours_s=f"{ips_b2:.0f} / {ips_b1:.0f}")
    rep.row("same embeddings (lowest cosine, ours vs baseline)", cos, target=">= 0.999", ok=cos >= 0.999)

    # inference from the decoded-image cache (what predict does after the first run)
    from tmr_lib.embed import ImageStore, embed_images

    store = ImageStore.load(paths, cfg.image_size, progress=False)
    t0 = time.perf_counter()
    embed_images(model, store.images, batch_size=cfg.embed_batch_size, test_scale=cfg.test_scale, progress=False)
    ips_cached = len(paths) / (time.perf_counter() - t0)
    rep.row("inference from cached decoded images: images/s", ips_cached, ours_s=f"{ips_cached:.0f}")

    steps = 2 if args.quick else 8
    ips_train, s_step = training_speed(model, cfg, paths, steps, 16 if args.quick else cfg.batch_pairs)
    bp = 16 if args.quick else cfg.batch_pairs
    rep.row("training (cpu preset step): images/s", ips_train,
            ours_s=f"{ips_train:.0f} ({bp} pairs x {cfg.crops_per_pair} crops per step, {s_step:.2f} s/step)")
    rep.note(f"{len(paths):,} cite images of {data} ({comp.cite.shape[0]:,} cites) through the batched path, the "
             f"first {len(sub)} through the loop with 1 torch thread and the first {len(sub2)} with {threads}; best of "
             f"{rounds} interleaved rounds: one-at-a-time {', '.join(f'{len(sub2) / t:.0f}' for t in t_base)} img/s "
             f"({threads} threads), {', '.join(f'{len(sub) / t:.0f}' for t in t_base1)} img/s (1 thread), "
             f"DataLoader {', '.join(f'{len(paths) / t:.0f}' for t in t_ours)} img/s. Training: {steps} steps "
             "after a warm-up step, 1 augmentation worker + model on the other core (as train_encoder).")
    rep.finish()


if __name__ == "__main__":
    main()
