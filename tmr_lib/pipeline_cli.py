"""`tmr train`, `tmr predict` and `tmr demo`: argument definitions (torch-free at import).

tmr_lib/cli.py calls :func:`register` with its subparsers; the handlers import the heavy
modules (torch, timm, faiss) only when they run, so `tmr --help` stays instant.

    tmr demo                                   # build data/tmr-cpu if missing, train, predict, score
    tmr train --preset cpu --data data/tmr-cpu --out runs/cpu
    tmr predict --model runs/cpu --data data/tmr-cpu --out runs/cpu/submission.csv
"""
from __future__ import annotations

import argparse
from typing import Any

PRESET_HELP = ("the recipe: ci (seconds), cpu (minutes on a laptop; default), gpu (the 2nd-place configuration); "
               "each trains on its own dataset size by default (Config.dataset)")


def _add_common(p: argparse.ArgumentParser, data_required: bool = False) -> None:
    p.add_argument("--preset", default=None,
                   help=f"{PRESET_HELP}; default $TMR_PRESET or cpu")
    p.add_argument("--data", default=None, required=data_required,
                   help="participant folder (train.csv, test.csv, cite_v2.csv, images); default: the recipe's "
                        "dataset (data/tmr-ci for ci, data/tmr-cpu for cpu and gpu; built if missing by demo)")
    p.add_argument("--pretrained", default=None,
                   help="starting weights: random, imagenet (timm hub), a local .safetensors/.pth file or "
                        "folder, or a registered name (default: the preset's)")
    p.add_argument("--method", default=None, choices=("kit", "2nd-place"),
                   help="the method's switches at the preset's scale: kit (the kit's choices) or 2nd-place (the "
                        "2nd place's steps exactly: views, schedule, ensemble, Euclidean search, post-processing "
                        "16 - n; docs/second-place.md); default: the preset's")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="change a config field, e.g. --set epochs=2 --set image_size=96 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out missing, empty or undecodable images (listed in a bad_images.csv report "
                        "beside the data) instead of stopping: their train pairs and cites are dropped, test "
                        "queries are kept and embedded as blank white images")


def register(subparsers: Any) -> None:
    """Add the train, predict and demo subcommands to the `tmr` parser."""
    t = subparsers.add_parser("train", help="train the encoder(s) of a preset on a competition folder",
                              description="Train one encoder per backbone x fold (2nd-place recipe), keep the "
                                          "best epoch by held-out Recall@20, write <out>/model.json.")
    _add_common(t)
    t.add_argument("--out", default=None, help="run folder (default runs/<preset>)")
    t.add_argument("--fresh", action="store_true", help="ignore last.pt checkpoints instead of resuming")
    t.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("predict", help="write the top-20 submission CSV for the test queries",
                              description="Embed the cites and the test queries with a trained model, search "
                                          "with faiss, post-process, write a submission CSV.")
    _add_common(p)
    p.add_argument("--model", default=None, help="run folder with model.json (default runs/<preset>)")
    p.add_argument("--out", default=None, help="CSV path (default <model>/submission.csv)")
    p.add_argument("--no-postprocess", action="store_true", help="plain top-20 without the 2nd-place post-processing")
    p.add_argument("--host", default=None, help="host folder with answers.csv: also print the score")
    p.set_defaults(func=_cmd_predict)

    d = subparsers.add_parser("demo", help="the main job: data -> train -> predict -> score vs baselines",
                              description="Build the dataset if missing, measure three baselines, train, index, "
                                          "predict, write the top-20 CSV, score it against the host answers and "
                                          "save a figure of queries with their top-20.")
    _add_common(d)
    d.add_argument("--out", default=None, help="run folder (default runs/<preset>)")
    d.add_argument("--host", default=None, help="host folder with answers.csv (default <data>-host)")
    d.add_argument("--resume", action="store_true", help="reuse finished checkpoints in --out instead of retraining")
    d.add_argument("--no-baselines", action="store_true", help="skip the three baselines")
    d.set_defaults(func=_cmd_demo)


def _parse_value(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:
        if "," in text:
            return [v.strip() for v in text.split(",") if v.strip()]
        return text


def config_from_args(args: argparse.Namespace):
    from .config import get_config

    changes: dict[str, Any] = {}
    if getattr(args, "method", None):
        changes["method"] = args.method
    for item in args.overrides:
        if "=" not in item:
            raise ValueError(f"--set wants FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        changes[key.strip()] = _parse_value(value.strip())
    if args.pretrained is not None:
        changes["pretrained"] = args.pretrained
    if getattr(args, "skip_bad_images", False):
        changes["skip_bad_images"] = True
    return get_config(args.preset, **changes)


def _default_data(cfg) -> str:
    """The recipe's dataset (Config.dataset: ci -> data/tmr-ci, cpu and gpu -> data/tmr-cpu)."""
    from .paths import default_data_dir

    return str(default_data_dir(cfg.dataset))


def _cmd_train(args: argparse.Namespace) -> int:
    from . import pipeline

    from . import distributed as dist

    dist.init_from_env()  # under torchrun: join the process group (one process otherwise)
    cfg = config_from_args(args)
    if dist.is_main():
        print(cfg)
    out = args.out or f"runs/{cfg.name}"
    summary = pipeline.train(cfg, args.data or _default_data(cfg), out, resume=not args.fresh,
                             progress=not args.quiet)
    if dist.is_main():
        for r in summary.results:
            print(f"{r.best_path}: best held-out Recall@20 {r.best_recall:.3f}, "
                  f"{r.images_per_s:.0f} training images/s over {dist.world_size()} process(es)")
        print(f"model: {summary.model_dir / 'model.json'}  ({summary.seconds / 60:.1f} min)")
    dist.cleanup()
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import pipeline

    from . import distributed as dist

    dist.init_from_env()  # under torchrun: every process embeds a share of the images
    cfg = config_from_args(args)
    model = args.model or f"runs/{cfg.name}"
    out = args.out or str(Path(model) / "submission.csv")
    pred = pipeline.predict(cfg, args.data or _default_data(cfg), model, out,
                            progress=not args.quiet, postprocess=not args.no_postprocess)
    if args.host and dist.is_main():
        m = pred.retrieval.metrics(args.host)
        print(pipeline.format_table([("submission", m)], cfg.k))
    dist.cleanup()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import pipeline

    cfg = config_from_args(args)
    pipeline.demo(cfg, args.data, args.out, host=args.host, progress=not args.quiet, resume=args.resume,
                  baselines=not args.no_baselines)
    return 0
