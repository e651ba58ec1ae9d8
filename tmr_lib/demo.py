"""`make demo`: dataset -> baselines -> train -> index -> predict -> CSV -> score -> table -> board.

    from tmr_lib.demo import demo
    result = demo(get_config("cpu"))             # builds data/tmr-cpu if missing
    print(result["table"])

Every row of the table is a :class:`tmr_lib.retrieval.Retrieval` scored the same way: random ids,
raw pixels and the starting weights measured in the same run as the fine-tuned model (with and
without post-processing).
"""
from __future__ import annotations

import json
import os
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .retrieval import Retrieval

__all__ = ["demo", "format_table", "resolve_data", "score"]

Log = Callable[[str], None]


def score(ranked: dict[str, list[str]] | Retrieval | str | os.PathLike, host: str | os.PathLike,
          k: int = 20) -> dict[str, Any]:
    """Recall@k (and 1, 5, 10), MRR, mAP@k and per-category Recall@k against the host's answers."""
    r = ranked if isinstance(ranked, Retrieval) else Retrieval.from_ranked(ranked, k=k)
    return r.metrics(host, ks=(1, 5, 10, k))


def _cols(text: str) -> int:
    """Terminal columns of a string (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _rjust(text: str, width: int) -> str:
    return " " * max(0, width - _cols(text)) + text


def format_table(rows: list[tuple[str, dict[str, Any]]], k: int = 20) -> str:
    """A fixed-width table: one row per method, Recall@k, MRR (``-`` where absent) and Recall@k per category."""
    from .metrics import CATEGORY_NAMES

    cats = sorted({c for _, m in rows for c in m.get("per_category", {})})
    w = 10
    nw = max(34, *(len(name) for name, _ in rows))
    head = f"{'method':{nw}s} {'R@' + str(k):>6s} {'MRR':>6s} " + " ".join(
        _rjust(CATEGORY_NAMES.get(c, str(c)).split()[0], w) for c in cats)
    sub = f"{'':{nw}s} {'':>6s} {'':>6s} " + " ".join(_rjust(f"R@{k} cat {c}", w) for c in cats)
    lines = [head, sub, "-" * _cols(sub)]
    for name, m in rows:
        per = m.get("per_category", {})
        mrr = f"{m['mrr']:6.3f}" if "mrr" in m else f"{'-':>6s}"
        lines.append(f"{name:{nw}s} {m['recall'][k]:6.3f} {mrr} " + " ".join(
            _rjust(f"{per.get(c, float('nan')):.3f}", w) for c in cats))
    return "\n".join(lines)


def resolve_data(cfg: Config, data: str | os.PathLike | None, host: str | os.PathLike | None,
                 progress: bool) -> tuple[Path, Path]:
    """(participant folder, host folder): the given ones, or the recipe's dataset built on first use."""
    from .builder import ensure_dataset, host_dir_for
    from .paths import default_data_dir

    data = Path(data) if data else default_data_dir(cfg.dataset)
    if host is not None and (data / "train.csv").is_file() and (Path(host) / "answers.csv").is_file():
        return data, Path(host)  # an existing competition with its answers (the kit's or the real files)
    host = Path(host) if host else host_dir_for(data)
    if (data / "train.csv").is_file() and (host / "answers.csv").is_file():
        return data, host
    return ensure_dataset(cfg.dataset, data, progress=progress)


#: the kit's two shipped starts, and what each row says about it
STARTS = {"tmr-teach": "teaching start tmr-teach", "tmr-marks": "domain start tmr-marks"}


def _start_label(cfg: Config, source: str) -> str:
    if cfg.pretrained in STARTS:
        return STARTS[cfg.pretrained]
    return "random init" if source == "random" else f"{Path(source).name} weights"


def _baselines(cfg: Config, comp, store, progress: bool, log: Log) -> list[Retrieval]:
    """Random ids, raw pixels, the untrained encoder (the recipe's starting weights) and, when the
    recipe starts elsewhere, the domain start ``tmr-marks`` untrained: what learning added is the
    gap to the first, what domain pretraining gives is the second."""
    from .baselines import pixel_retrieval, random_retrieval
    from .encoder import encoder_from_config
    from .predict import retrieval_for

    one = cfg.replace(backbones=cfg.backbones[:1])
    untrained, info = encoder_from_config(cfg)
    log(f"[demo] untrained encoder: {info}")
    rows = [random_retrieval(comp.test["gid"], comp.cite["gid"], cfg.k, cfg.seed),
            pixel_retrieval(comp, store, cfg.k),
            retrieval_for(untrained, one, comp, store, train=False, cache=False, progress=progress,
                          name=f"untrained: {_start_label(cfg, info.source)}")]
    if cfg.pretrained != "tmr-marks":
        try:
            domain, info = encoder_from_config(one.replace(pretrained="tmr-marks"))
        except (FileNotFoundError, RuntimeError, ValueError) as e:  # another backbone: the kit ships none
            log(f"[demo] no domain-start row: {e}")
        else:
            rows.append(retrieval_for(domain, one.replace(pretrained="tmr-marks"), comp, store, train=False,
                                      cache=False, progress=progress,
                                      name="untrained: domain start tmr-marks (knows the 4 categories)"))
    return rows


def demo(cfg: Config, data: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
         host: str | os.PathLike | None = None, progress: bool = True, resume: bool = False,
         baselines: bool = True, figure: bool = True, log: Log = print) -> dict[str, Any]:
    """Dataset -> baselines -> train -> index -> predict -> CSV -> score -> table -> figure -> board."""
    from .data import load_competition
    from .images import image_store
    from .predict import predict
    from .train import train_models

    t0, timings = time.time(), {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.time() - since, 1)
        return time.time()

    data, host = resolve_data(cfg, data, host, progress)
    out = Path(out) if out else Path("runs") / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    comp = load_competition(data, skip_bad_images=cfg.skip_bad_images, log=log)
    log(f"[demo] {comp}")
    log(f"[demo] preset {cfg.name!r}: {', '.join(cfg.backbones)} at {cfg.image_size} px, "
        f"{cfg.epochs} epochs, loss {cfg.loss}" + (f" + CrossBatchMemory({cfg.xbm_memory})" if cfg.xbm_memory else ""))
    t = time.time()
    store = image_store(cfg, comp, progress)
    t = lap("decode images", t)
    rows: list[Retrieval] = []
    if baselines:
        rows += _baselines(cfg, comp, store, progress, log)
        t = lap("baselines", t)

    summary = train_models(cfg, data, out, store=store, resume=resume, progress=progress, log=log)
    t = lap("train", t)
    pred = predict(cfg, data, out, out_csv=None, store=store, progress=progress, postprocess=True, log=log)
    kept = sorted({r.best_epoch for r in summary.results})
    if kept == [0]:  # honest label: no epoch beat the starting weights on the held-out fold
        ours = "ours: starting weights kept"
        log("[demo] no fine-tuned epoch beat the starting weights on the held-out fold: they are kept")
    else:
        ours = "ours: fine-tuned (epoch " + "/".join(str(e) for e in kept) + ")"
    rows.append(pred.plain.renamed(ours))
    if cfg.postprocess:
        rows.append(pred.retrieval.renamed(ours + " + post-processing"))
    final = rows[-1]
    csv = final.to_submission(out / "submission.csv")
    t = lap("predict", t)

    scored = [(r.name, score(r, host, cfg.k)) for r in rows]
    table = format_table(scored, cfg.k)
    weights = "; ".join(dict.fromkeys(str(r.weights) for r in summary.results))
    log("")
    log(f"Test queries: {len(comp.test)}   database: {len(comp.cite)} cites   starting weights: {weights}")
    log(table)
    log(f"training: {summary.images_per_s:.0f} images/s (augmented crops through forward+backward)")
    fig_path = None
    if figure:
        fig_path = out / "retrieval.png"
        final.plot(comp, host, fig_path, n_queries=5, seed=cfg.seed)
        log(f"figure: {fig_path}")
    log(f"submission: {csv}")
    total = time.time() - t0
    log(f"total wall time: {total / 60:.1f} min ({', '.join(f'{n} {s:.0f} s' for n, s in timings.items())})")
    result = {
        "preset": cfg.name, "data": str(data), "out": str(out), "table": table,
        "rows": dict(scored), "wall_s": round(total, 1), "timings": timings,
        "train_images_per_s": round(summary.images_per_s, 1), "weights": weights,
        "submission": str(csv), "figure": str(fig_path) if fig_path else None,
        "history": [r.history.to_dict(orient="records") for r in summary.results],
    }
    (out / "demo_results.json").write_text(json.dumps(result, indent=2, default=_json_default, ensure_ascii=False))
    _maybe_submit(out, csv, data, host, log)
    return result


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _maybe_submit(out: Path, csv: Path, data: Path, host: Path, log: Log) -> None:
    """Submit the CSV to a local leaderboard in ``out/leaderboard`` (created on first use), print the board.

    Skipped quietly when the leaderboard package is not installed; any leaderboard error is
    reported and leaves the demo's result standing.
    """
    try:
        from leaderboard.core import DB_NAME
        from leaderboard.core import Competition as Board
    except ImportError:
        return
    try:
        board_dir = out / "leaderboard"
        if (board_dir / DB_NAME).is_file():
            board = Board(board_dir)
        else:
            board, _tokens = Board.create(host, data, path=board_dir, name=f"{Path(data).name} demo",
                                          seed=0, daily_limit=1000, teams=["demo"])
        res = board.submit(csv, "demo", note="tmr demo", filename=csv.name)
        log(f"[demo] leaderboard: {res.summary().splitlines()[0]}")
        try:
            from leaderboard.cli import print_public

            print_public(board)
        except Exception:  # noqa: BLE001 - printing is a nicety
            pass
    except Exception as e:  # noqa: BLE001 - the demo's result stands without the board
        log(f"[demo] leaderboard submission skipped: {type(e).__name__}: {e}")
