"""The `tmr` command line (also `python -m tmr_lib`).

    tmr data build --size cpu --out data/tmr-cpu       build a competition (answers kept apart)
    tmr data build --marks heldout --out data/tmr-heldout   ... from marks pretraining never saw
    tmr data summary data/tmr-cpu                      describe a built competition
    tmr data sheet data/tmr-cpu --out sheet.png        contact sheet of examples per category
    tmr train | predict | demo                         the pipeline (see README; `make demo`)
    tmr pretrain --minutes 30                          pretrain a mark encoder (resumable)
    tmr heldout --model runs/cpu                       score it on marks pretraining never saw
    tmr views --recipe 2nd-place                       measured augmentation rates beside the declared ones
    tmr ablate --preset cpu                            the 2nd-place steps one at a time, gains with 95 % intervals
    tmr contest simulate --preset ci                   the ablation's recipes as teams on the real leaderboard
    tmr plan --preset gpu --cites 800000 --test 1542 --train 27000   RAM, disk, time before a long run (exit 1: won't fit)

Heavy libraries (torch) are imported only by the commands that need them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import pipeline_cli
from .ablate import add_ablate_parser
from .contest import add_contest_parser
from .plan import add_plan_parser
from .views import add_views_parser


def _add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="build, describe and look at competition datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)

    b = dsub.add_parser("build", help="build a competition in the real JPO format",
                        description="Build a competition: a participant folder in the real format and a "
                                    "separate host folder with the test answers.")
    b.add_argument("--size", "--preset", dest="size", default="cpu", choices=["ci", "cpu", "full"],
                   help="dataset size: ci (seconds, <1k cites), cpu (default, ~15k cites), full (200k cites). "
                        "Not a training recipe: the ci recipe trains on the ci size, cpu and gpu on the cpu size")
    b.add_argument("--out", default=None, help="participant folder (default data/tmr-<size>)")
    b.add_argument("--host-out", default=None, help="host folder for the answers (default <out>-host)")
    b.add_argument("--seed", type=int, default=0, help="same seed, same dataset and ids (default 0)")
    b.add_argument("--marks-dir", default=None, help="build from your own folder of marks (PNG, JPEG or SVG)")
    b.add_argument("--marks", default="default", choices=["default", "heldout"],
                   help="built-in marks: all (default) or only those held out of the tmr-marks pretraining")
    b.add_argument("--workers", type=int, default=None, help="rendering processes (default: all cores)")
    b.add_argument("--force", action="store_true", help="replace whatever --out already holds")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_cmd_build)

    s = dsub.add_parser("summary", help="describe a built competition")
    s.add_argument("folder")
    s.add_argument("--host", default=None, help="host folder (default <folder>-host)")
    s.set_defaults(func=_cmd_summary)

    c = dsub.add_parser("sheet", help="contact sheet: train examples of each category as a PNG")
    c.add_argument("folder")
    c.add_argument("--out", default=None, help="PNG path (default <folder>-host/contact_sheet.png)")
    c.add_argument("--per-category", type=int, default=4)
    c.set_defaults(func=_cmd_sheet)


def _cmd_build(args) -> int:
    from .builder import build_competition, existing_build, summary_text

    out = Path(args.out or f"data/tmr-{args.size}")
    before = existing_build(out)
    out, host = build_competition(out, preset=args.size, seed=args.seed, marks_dir=args.marks_dir,
                                  host_out=args.host_out, workers=args.workers, force=args.force,
                                  progress=not args.quiet, marks=args.marks)
    if before is not None and not args.force and existing_build(out) == before:
        print(f"{out} already holds this dataset (size {args.size}, seed {args.seed}); nothing to do.")
    print(summary_text(out, host))
    return 0


def _cmd_summary(args) -> int:
    from .builder import existing_build, summary_text

    if existing_build(Path(args.folder)) is None:
        from .data import load_competition

        print(load_competition(args.folder, check_images=False).summary())
        return 0
    print(summary_text(args.folder, args.host))
    return 0


def _cmd_sheet(args) -> int:
    from .builder import host_dir_for
    from .viz import contact_sheet

    out = Path(args.out) if args.out else host_dir_for(Path(args.folder)) / "contact_sheet.png"
    contact_sheet(args.folder, out, per_category=args.per_category)
    print(f"contact sheet written to {out}")
    return 0


def _add_pretrain_commands(sub) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pretraining of a mark encoder (CPU or GPU)",
                       description="Pretrain a small encoder with NT-Xent on open marks (--source scenes, the "
                                   "tmr-marks recipe), on the marks no query uses, each alone (--source marks --views generic, "
                                   "the teaching start: no query mark, no category change) or on formula-driven "
                                   "images (--source formula); resumable.")
    p.add_argument("--out", default="runs/pretrain", help="folder for last.pt, history and the pair pool")
    p.add_argument("--source", choices=["scenes", "formula", "marks"], default="scenes",
                   help="scenes: mark pairs made with the four categories; marks: each non-query mark alone; "
                        "formula: fractals, contours, polygons")
    p.add_argument("--views", choices=["marks", "generic"], default="marks",
                   help="marks: tmr-marks' views (quarter turns, mirrors, inversion...); generic: crop, ink jitter, blur")
    p.add_argument("--positives", choices=["category", "instance"], default="category",
                   help="formula source: two instances of one formula attract (category) or two views of one (instance)")
    p.add_argument("--n-categories", type=int, default=1000, help="formula source: formulas in the pool")
    p.add_argument("--per-category", type=int, default=16, help="formula source: jittered renders of each")
    p.add_argument("--pool-size", type=int, default=128, help="rendered canvas of the pool (px)")
    p.add_argument("--backbone", default="mobilenetv3_large_100")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--n-pairs", type=int, default=20000, help="rendered pairs in the pool")
    p.add_argument("--batch-pairs", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--minutes", type=float, default=30.0, help="stop after this long (a checkpoint is kept)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--checkpoint-steps", type=int, default=None, help="steps between two last.pt (default 500)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--keep-every", type=int, default=None,
                   help="also keep the weights as step-N.pt every N steps (choose one by validation later)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--pool", default=None, help="where the pair pool .npy lives (default inside --out)")
    p.add_argument("--resume", default=None, help="continue from a last.pt")
    p.add_argument("--export", default=None, help="also write the fp16 safetensors weights here")
    p.add_argument("--validate", default=None, metavar="DATA",
                   help="then score it zero-shot on DATA's train pairs (validation, not the test answers), "
                        "beside raw pixels and a random init")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (a log line per checkpoint)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_pretrain)


def _cmd_pretrain(args) -> int:
    from .pretrain import PretrainConfig, export_weights, pretrain, zero_shot_validation

    cfg = PretrainConfig(backbone=args.backbone, image_size=args.image_size, pool_size=args.pool_size,
                         n_pairs=args.n_pairs, batch_pairs=args.batch_pairs, lr=args.lr,
                         temperature=args.temperature, warmup_steps=args.warmup_steps, minutes=args.minutes,
                         max_steps=args.max_steps, workers=args.workers, seed=args.seed, source=args.source,
                         views=args.views, positives=args.positives, n_categories=args.n_categories,
                         per_category=args.per_category, threads=args.threads,
                         checkpoint_steps=args.checkpoint_steps, keep_every=args.keep_every)
    ck = pretrain(cfg, args.out, resume=args.resume, pool_path=args.pool, progress=not args.no_progress,
                  log=lambda m: print(m, flush=True))
    print(f"checkpoint: {ck}")
    if args.export:
        print(f"weights: {export_weights(ck, args.export)}")
    if args.validate:
        zero_shot_validation({f"this checkpoint ({ck})": ck}, args.validate)  # at 112 px, the cpu recipe's size
    return 0


def _add_heldout_command(sub) -> None:
    p = sub.add_parser("heldout", help="Recall@20 on marks held out of pretraining: pixels, checkpoint, your models",
                       description="Score raw pixels, the kit's tmr-marks checkpoint and any trained models on "
                                   "queries made only from marks that pretraining never saw (issue 7's honest check).")
    p.add_argument("--model", action="append", default=[], metavar="PATH",
                   help="a trained model folder (model.json, e.g. runs/cpu) or .safetensors file; repeatable")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--distractors", type=int, default=1200)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--seed", type=int, default=123)
    p.set_defaults(func=_cmd_heldout)


def _cmd_heldout(args) -> int:
    from pathlib import Path

    from .demo import format_table
    from .encoder import build_encoder, load_ensemble
    from .pretrain import heldout_answers, heldout_retrieval, heldout_set

    for m in args.model:  # fail before the rendering, not after
        if not Path(m).exists():
            raise FileNotFoundError(f"--model {m} does not exist: give a trained model folder (model.json, "
                                    "e.g. runs/cpu after `make demo`) or a .safetensors file")
    print(f"rendering {args.queries} held-out queries and {args.queries + args.distractors} gallery images ...",
          flush=True)
    Q, G, ans, cats = heldout_set(args.queries, args.distractors, seed=args.seed)
    answers = heldout_answers(ans, cats)
    models = [("tmr-marks checkpoint (no fine-tuning)",
               build_encoder("mobilenetv3_large_100", "tmr-marks", image_size=args.image_size)[0])]
    models += [(m, load_ensemble(m)) for m in args.model]
    rows = [heldout_retrieval(None, Q, G)] + [heldout_retrieval(model, Q, G, args.image_size, name)
                                              for name, model in models]
    print(format_table([(r.name, r.metrics(answers)) for r in rows]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tmr", description="TMR Kit: trademark image retrieval, end to end.")
    sub = p.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_pretrain_commands(sub)
    _add_heldout_command(sub)
    pipeline_cli.register(sub)  # train, predict, demo (torch is imported only when they run)
    add_views_parser(sub)  # tmr views: measured rates of the augmentations beside the declared ones
    add_ablate_parser(sub)  # tmr ablate: the 2nd-place ladder, each gain with its 95 % paired interval
    add_contest_parser(sub)  # tmr contest simulate: the ladder's rungs as teams on the real leaderboard
    add_plan_parser(sub)  # tmr plan: RAM, disk and time of a preset on a competition, and what to change
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
