"""The 2nd place's steps as a ladder of measured rungs (`tmr ablate`, notebook 06, `tmr contest`).

    from tmr_lib.ablate import ablation_ladder, ablation_table, plot_ablation
    ladder = ablation_ladder(cfg, comp, store, out="runs/cpu/ablate", answers=answers)
    table = ablation_table(ladder.steps(), answers)             # gains with 95 % paired intervals
    plot_ablation(table, "runs/cpu/ablate/ablation_test.png")
    ablation_table(ladder.steps("validation"), ladder.validation_answers)   # choose recipes here

Each rung adds one step to the rung above: raw pixels (the reference), the starting weights
untrained, fine-tuned with two views a pair and no memory, four views a pair (the strong views
and the pseudo-logo on both images), CrossBatchMemory, fold averaging, a second model
concatenated, label transfer, the re-search (the whole post-processing) and, optionally, flip TTA.

Every model is trained once (a finished run in ``out`` is reused, so a second call only embeds,
and embeddings are cached too) and embeds the competition once; fold averaging, the second
model and the post-processing are :class:`Retrieval` arithmetic on those embeddings.

Two scopes. ``"test"``: the host's answers for the test queries, which a teaching kit shows.
``"validation"``: the held-out fold of the train pairs (:class:`tmr_lib.train.Validator`'s
queries and gallery, post-processing memory from the other folds), where a recipe must be
chosen; the test answers are for reporting, never for choosing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import Config
from .retrieval import Retrieval, as_answers

__all__ = ["RUNGS", "Rung", "Ladder", "rung_configs", "rung_names", "ablation_ladder", "ablation_table",
           "format_ablation", "plot_ablation", "search_database", "validation_view", "add_ablate_parser"]

Log = Callable[[str], None]

#: the rungs in ladder order (keys; names are built from the config)
RUNGS = ("pixels", "start", "weak", "strong", "memory", "folds", "second", "labels", "post", "tta")
VERDICTS = ("beyond noise", "within noise")


@dataclass
class Rung:
    key: str  #: one of :data:`RUNGS`
    name: str  #: the row label
    test: Retrieval  #: the test queries searched in the ablation's database
    validation: Retrieval | None = None  #: the held-out train queries (None: cannot be measured there)
    how: str = ""  #: trained / reused / embedded / derived, for the progress line


@dataclass
class Ladder:
    """The rungs in order, the models and each model's embedding pass."""

    cfg: Config
    rungs: list[Rung]
    models: dict[str, Any]  #: "start", "weak", "strong", "memory0", "memory1", "second"
    passes: dict[str, Retrieval]  #: the same keys (and "<key> flip"): one plain search per model
    validation_answers: pd.DataFrame | None
    n_cites: int  #: cites searched in the test scope
    out: Path
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def steps(self, scope: str = "test") -> dict[str, Retrieval]:
        """Row name -> Retrieval, in ladder order (``scope="validation"``: the rungs measurable there)."""
        if scope not in ("test", "validation"):
            raise ValueError(f"scope is 'test' or 'validation', not {scope!r}")
        if scope == "test":
            return {r.name: r.test for r in self.rungs}
        return {r.validation.name: r.validation for r in self.rungs if r.validation is not None}

    def rung(self, key: str) -> Rung:
        for r in self.rungs:
            if r.key == key:
                return r
        raise KeyError(f"no rung {key!r} in this ladder (rungs: {', '.join(r.key for r in self.rungs)})")


# ----------------------------------------------------------------------------------------
# what each rung trains with
# ----------------------------------------------------------------------------------------
def rung_configs(cfg: Config, second: str = "loss", second_loss: str = "multisimilarity") -> dict[str, Config]:
    """The recipe of each trained rung, from ``cfg``'s scale: only the switch of the step changes.

    The ladder is the 2nd place's, so its views are "kit" or "2nd-place" (a preset that fine-tunes
    with the pretraining views, ``augment="marks"``, gets the method's own). Two views a pair are
    PairBatches' ``crops_per_pair=2``: a weak view of the apply image and a strong one of the cite;
    four add the other two. CrossBatchMemory starts within the run (``xbm_start_epoch`` capped)."""
    aug = cfg.augment if cfg.augment in ("kit", "2nd-place") else ("2nd-place" if cfg.method == "2nd-place" else "kit")
    base = cfg.replace(augment=aug, folds=(0,))
    weak = base.replace(crops_per_pair=2, xbm_memory=0)
    strong = weak.replace(crops_per_pair=4)
    memory = strong.replace(xbm_memory=cfg.xbm_memory or 1024,
                            xbm_start_epoch=min(cfg.xbm_start_epoch, max(cfg.epochs - 1, 0)))
    if second == "backbone" and len(cfg.backbones) < 2:
        raise ValueError("second='backbone' needs a recipe with two backbones (e.g. gpu); use 'loss' or 'seed'")
    if second not in ("loss", "seed", "backbone", "none"):
        raise ValueError(f"second is 'loss', 'seed', 'backbone' or 'none', not {second!r}")
    other = {"loss": memory.replace(loss=second_loss, seed=cfg.seed + 1), "seed": memory.replace(seed=cfg.seed + 1),
             "backbone": memory, "none": memory}[second]
    return {"start": base, "weak": weak, "strong": strong, "memory": memory, "second": other}


def _second_label(cfg: Config, second: str, second_loss: str) -> str:
    if second == "backbone":
        return f"backbone {cfg.backbones[1]}"
    return f"loss {second_loss}, seed {cfg.seed + 1}" if second == "loss" else f"seed {cfg.seed + 1}"


def rung_names(cfg: Config, folds: int = 2, second: str = "loss", second_loss: str = "multisimilarity",
               validation: bool = False) -> dict[str, str]:
    """The row label of every rung (the validation scope has no fold rung: see :func:`ablation_ladder`)."""
    mem = cfg.xbm_memory or 1024
    return {
        "pixels": "raw pixels (reference)",
        "start": f"starting weights ({cfg.pretrained}), untrained",
        "weak": "+ fine-tuned: 2 views a pair, no memory",
        "strong": "+ 4 views a pair (strong views, pseudo-logo)",
        "memory": f"+ CrossBatchMemory ({mem})",
        "folds": f"+ fold averaging ({folds} folds)",
        "second": f"+ second model ({_second_label(cfg, second, second_loss)})" + (" on fold 0" if validation else ""),
        "labels": "+ label transfer",
        "post": "+ re-search (full post-processing)",
        "tta": "+ flip TTA",
    }


# ----------------------------------------------------------------------------------------
# the two scopes' databases
# ----------------------------------------------------------------------------------------
def search_database(comp, answers: Any = None, cites: int | None = None, seed: int = 0):
    """``comp`` searched in a smaller database of ``cites`` cites: every correct cite of the test
    queries, every train cite (for the post-processing) and random others (None: all cites).
    Easier than the full database, so recalls run higher; the gains between rungs are compared."""
    if not cites or cites >= len(comp.cite):
        return comp
    if answers is None:
        raise ValueError("a smaller database keeps the correct cites: pass answers= with cites=")
    a = as_answers(answers)
    keep = {c for cs in a["cite_gids"] for c in cs} | set(comp.train["cite_gid"])
    others = comp.cite[~comp.cite["gid"].isin(keep)]
    pick = others.sample(max(0, min(len(others), cites - len(keep))), random_state=seed)["gid"]
    return dataclasses.replace(comp, cite=comp.cite[comp.cite["gid"].isin(keep | set(pick))].reset_index(drop=True))


def validation_view(cfg: Config, comp, store, fold: int = 0) -> tuple[Any, pd.DataFrame]:
    """(a competition whose test queries are fold ``fold``'s held-out train queries, searched in the
    :class:`~tmr_lib.train.Validator`'s gallery, with the other folds as its train pairs; their answers).

    The same embedding and post-processing code then scores both scopes, and no held-out pair
    is in the post-processing's memory."""
    from .data import relabel
    from .train import Validator, validation_split

    train = relabel(comp.train.reset_index(drop=True), cfg.labels)
    train_mask, val_mask = validation_split(train, cfg, fold)
    v = Validator(train, val_mask, comp.cite, store, cfg)
    if not v.enabled:
        raise ValueError("no held-out fold to validate on (n_folds < 2)")
    paths = dict(zip(comp.cite["gid"].astype(str), comp.cite["path"]))
    paths.update(zip(train["cite_gid"].astype(str), train["cite_path"]))
    view = dataclasses.replace(
        comp, train=train[train_mask].reset_index(drop=True),
        test=pd.DataFrame({"gid": v.query_gids, "path": v.query_paths}),
        cite=pd.DataFrame({"gid": v.gallery_gids, "path": [paths[g] for g in v.gallery_gids]}))
    return view, v.answer_frame


# ----------------------------------------------------------------------------------------
# training and embedding each model once
# ----------------------------------------------------------------------------------------
def _finished(run_dir: Path, cfg: Config) -> bool:
    """A finished run of this very recipe is already in ``run_dir`` (train_encoder will reuse it)."""
    import torch

    from .train import _state_for_resume

    last = run_dir / "last.pt"
    if not last.is_file():
        return False
    try:
        ck = torch.load(last, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a broken file is retrained
        return False
    return bool(ck.get("finished")) and ck.get("config") == _state_for_resume(cfg)


def _train(cfg: Config, comp, store, folder: Path, fold: int | None, backbone: str, progress: bool,
           log: Log) -> tuple[Any, str]:
    """One model of the ladder, trained or reused; (model, how it was made)."""
    from .train import run_dir_for, train_encoder

    run = run_dir_for(folder, backbone, fold)
    reused = _finished(run, cfg.for_backbone(backbone))
    t = time.time()
    r = train_encoder(cfg, comp, folder, fold=fold, backbone=backbone, store=store, resume=True,
                      progress=progress, log=log)
    how = f"reused {run}" if reused else f"trained in {time.time() - t:.0f} s"
    if r.best_recall == r.best_recall:
        how += f" (kept epoch {r.best_epoch}, held-out R@20 {r.best_recall:.3f})"
    return r.model.eval(), how


def _train_models(cfgs: dict[str, Config], comp, store, out: Path, folds: int, second: str,
                  progress: bool, log: Log, note: Log) -> tuple[dict[str, Any], dict[str, str]]:
    """Every model of the ladder: the start untrained, weak, strong, memory (fold 0, fold 1...), second."""
    from .encoder import encoder_from_config

    cfg = cfgs["start"]
    fold0 = 0 if cfg.n_folds > 1 else None
    start, info = encoder_from_config(cfg)
    models, how = {"start": start.eval()}, {"start": f"starting weights: {info}"}
    plan = [("weak", "weak", fold0), ("strong", "strong", fold0), ("memory0", "memory", fold0)]
    plan += [(f"memory{f}", "memory", f) for f in range(1, folds if fold0 is not None else 1)]
    if second != "none":
        plan.append(("second", "second", fold0))
    for key, recipe, fold in plan:
        backbone = cfg.backbones[1] if key == "second" and second == "backbone" else cfg.backbones[0]
        folder = out / recipe
        models[key], how[key] = _train(cfgs[recipe], comp, store, folder, fold, backbone, progress, log)
        note(f"[ablate] model {key} ({recipe}, fold {fold}): {how[key]}")
    return models, how


#: embedding files the ladder keeps in ``<out>/embeddings`` (the shared cache keeps too few for a ladder)
KEEP_PASSES = 64


def _embed_view(model, cfg: Config, view, store, mirrored: bool, folder: Path, progress: bool) -> dict[str, np.ndarray]:
    """:func:`tmr_lib.predict.embed_competition` of every part of ``view``, cached in ``folder`` by the
    model's weights, the images and the inference settings (a second ladder call only loads)."""
    import hashlib

    from .augment import INFERENCE_VERSION
    from .embed import images_key
    from .encoder import state_fingerprint
    from .predict import PARTS, embed_competition

    parts = [(name, list(getattr(view, frame)[col])) for name, (frame, col) in PARTS.items()]
    h = hashlib.sha1(f"{state_fingerprint(model)};{cfg.test_scale};{cfg.tta_flip};{mirrored};"
                     f"{INFERENCE_VERSION};{store.size}".encode())
    for name, paths in parts:
        h.update(f"{name}:{images_key(paths, store.size, getattr(store, 'trim_fallback', False))};".encode())
    file = folder / f"pass-{h.hexdigest()[:20]}.npz"
    if file.is_file():
        with np.load(file) as z:
            return {k: z[k] for k in z.files}
    emb = embed_competition(model, cfg, view, store, cache=False, progress=progress, flip=mirrored)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **emb)
    os.replace(tmp, file)
    for old in sorted(folder.glob("pass-*.npz"), key=lambda f: f.stat().st_mtime, reverse=True)[KEEP_PASSES:]:
        old.unlink(missing_ok=True)
    return emb


def _embed_passes(models: dict[str, Any], cfg: Config, view, store, flip: bool, folder: Path,
                  progress: bool) -> dict[str, Retrieval]:
    """One plain search per model (and per mirrored pass) on ``view``."""
    from .predict import retrieval_from

    out = {}
    for key, model in models.items():
        for mirrored in (False, True) if flip else (False,):
            name = key + (" flip" if mirrored else "")
            emb = _embed_view(model, cfg, view, store, mirrored, folder, progress)
            out[name] = retrieval_from(emb, view, k=cfg.k, index=cfg.index, name=name, metric=cfg.search_metric,
                                       labels=cfg.labels)
    return out


def _rungs_of(P: dict[str, Retrieval], pixels: Retrieval, names: dict[str, str], cfg: Config,
              fold_keys: list[str], flip: bool) -> dict[str, Retrieval]:
    """The ladder's Retrievals from the models' passes (ensembles and post-processing are arithmetic)."""
    ens = lambda groups: Retrieval.ensemble(groups, normalize=cfg.ensemble_normalize)  # noqa: E731
    out = {"pixels": pixels, "start": P["start"], "weak": P["weak"], "strong": P["strong"], "memory": P["memory0"]}
    A = [P[k] for k in fold_keys]
    if len(A) > 1:
        out["folds"] = ens([A])
    top = ens([A, [P["second"]]]) if "second" in P else out.get("folds", out["memory"])
    if "second" in P:
        out["second"] = top
    if top.memory is not None:
        out["labels"] = top.postprocess(keep=cfg.pp_keep, recipe=cfg.pp_recipe, research=False)
        out["post"] = top.postprocess(keep=cfg.pp_keep, recipe=cfg.pp_recipe)
        if flip:
            groups = [A + [P[k + " flip"] for k in fold_keys]]
            if "second" in P:
                groups.append([P["second"], P["second flip"]])
            out["tta"] = ens(groups).postprocess(keep=cfg.pp_keep, recipe=cfg.pp_recipe)
    return {k: r.renamed(names[k]) for k, r in out.items()}


# ----------------------------------------------------------------------------------------
# the ladder
# ----------------------------------------------------------------------------------------
def ablation_ladder(cfg: Config, comp, store=None, out: str | os.PathLike | None = None, answers: Any = None,
                    cites: int | None = None, folds: int = 2, second: str = "loss",
                    second_loss: str = "multisimilarity", flip: bool = False, validation: bool = True,
                    progress: bool = False, log: Log = print, verbose: bool = False) -> Ladder:
    """Train (or reuse) and embed every model once, then build each rung; one progress line per rung.

    ``answers`` (the host's) adds the test Recall@20 to the progress lines and is needed for a
    smaller database (``cites``). ``validation``: also search the held-out fold (fold 0, which every
    single model of the ladder held out); its ladder has no fold rung, because the fold-1 model
    trained on those queries, so its second-model rung joins fold 0 alone with the second model.
    ``out``: the models' folder (default ``runs/<recipe>/ablate``, shared with `tmr contest simulate`)."""
    from .baselines import pixel_retrieval
    from .images import image_store
    from .paths import runs_root

    t0, out = time.time(), Path(out) if out is not None else runs_root(cfg.name) / "ablate"
    cfgs = rung_configs(cfg, second, second_loss)
    base = cfgs["start"]
    store = store if store is not None else image_store(base, comp, progress)
    folds = max(1, min(folds, base.n_folds)) if base.n_folds > 1 else 1
    validation = validation and base.n_folds > 1
    models, how = _train_models(cfgs, comp, store, out, folds, second, progress and verbose,
                                log if verbose else (lambda _s: None), log)
    fold_keys = [k for k in models if k.startswith("memory")]
    db = search_database(comp, answers, cites, base.seed)
    passes = _embed_passes(models, base, db, store, flip, out / "embeddings", progress)
    test = _rungs_of(passes, pixel_retrieval(db, store, base.k), rung_names(base, folds, second, second_loss),
                     base, fold_keys, flip)
    val, val_answers = {}, None
    if validation:
        view, val_answers = validation_view(base, comp, store, fold=0)
        single = {k: m for k, m in models.items() if not (k.startswith("memory") and k != "memory0")}
        vp = _embed_passes(single, base, view, store, flip, out / "embeddings", progress)
        val = _rungs_of(vp, pixel_retrieval(view, store, base.k),
                        rung_names(base, folds, second, second_loss, validation=True), base, ["memory0"], flip)
    rungs = [Rung(k, r.name, r, val.get(k), _how(k, how)) for k, r in test.items()]
    ladder = Ladder(base, rungs, models, passes, val_answers, len(db.cite), out, notes=_notes(base, comp, answers))
    for i, r in enumerate(rungs, 1):
        log(_progress_line(i, len(rungs), r, answers, val_answers))
    ladder.seconds = time.time() - t0
    return ladder


def _how(key: str, how: dict[str, str]) -> str:
    model = {"memory": "memory0", "folds": "memory1"}.get(key, key)
    if key == "pixels":
        return "32 px gray ink, cosine"
    return how.get(model, "from the rungs above (embeddings reused)")


def _progress_line(i: int, n: int, r: Rung, answers: Any, val_answers: pd.DataFrame | None) -> str:
    parts = []
    if answers is not None:
        parts.append(f"test R@20 {r.test.metrics(answers)['recall'][20]:.3f}")
    if r.validation is not None and val_answers is not None:
        parts.append(f"validation R@20 {r.validation.metrics(val_answers)['recall'][20]:.3f}")
    score = f" [{', '.join(parts)}]" if parts else ""
    return f"[ablate] rung {i}/{n} {r.name}{score}: {r.how}"


def _notes(cfg: Config, comp, answers: Any) -> list[str]:
    """What a reader of the table must know to read the post-processing rows."""
    notes = []
    if answers is not None:
        train_cites = set(comp.train["cite_gid"].astype(str))
        share = np.mean([any(c in train_cites for c in cs) for cs in as_answers(answers)["cite_gids"]])
        notes.append(f"{share:.1%} of the test queries have a correct cite that is also a train cite "
                     "(only they can gain from label transfer)")
    if cfg.fold_method == "group":
        notes.append("validation: group k-fold keeps every label group on one side, so no held-out query shares "
                     "a cite with the train folds and label transfer has nothing to find there by construction")
    return notes


# ----------------------------------------------------------------------------------------
# the table and its plot
# ----------------------------------------------------------------------------------------
def ablation_table(steps: Mapping[str, Retrieval] | Ladder, answers: Any, n_resamples: int = 1000,
                   seed: int = 0, k: int = 20) -> pd.DataFrame:
    """One row per rung: Recall@k, its gain over the row above with the 95 % paired-bootstrap
    interval (:func:`tmr_lib.metrics.paired_bootstrap`, resampling the same queries for both
    rows), whether that interval excludes 0, MRR and Recall@k per category.

    A gain is only worth a sentence when it is beyond the luck of which queries were drawn."""
    from .data import CATEGORIES
    from .metrics import paired_bootstrap

    steps = steps.steps() if isinstance(steps, Ladder) else steps
    a = as_answers(answers)
    rows, prev = [], None
    for name, r in steps.items():
        m = r.metrics(a, ks=(1, k))
        row = {"step": name, f"Recall@{k}": m["recall"][k], "gain": np.nan, "95% low": np.nan, "95% high": np.nan,
               "noise": "", "MRR": m["mrr"]}
        row.update({CATEGORIES.get(c, str(c)).split()[0]: v for c, v in sorted(m.get("per_category", {}).items())})
        hits = r.hits(a, k)
        if prev is not None:
            b = paired_bootstrap(prev, hits, n_resamples=n_resamples, seed=seed)
            row.update({"gain": b["diff"], "95% low": b["low"], "95% high": b["high"],
                        "noise": VERDICTS[0] if b["beyond_noise"] else VERDICTS[1]})
        rows.append(row)
        prev = hits
    table = pd.DataFrame(rows).set_index("step")
    table.attrs.update(n_queries=len(a), n_resamples=n_resamples, seed=seed, k=k)
    return table


def format_ablation(table: pd.DataFrame, title: str = "") -> str:
    """The table as fixed-width text (gain +0.012 [+0.004, +0.021])."""
    from .demo import _cols, _rjust

    k = table.attrs.get("k", 20)
    cats = [c for c in table.columns if c not in (f"Recall@{k}", "gain", "95% low", "95% high", "noise", "MRR")]
    nw = max(_cols(n) for n in table.index)
    head = (f"{'step':{nw}s} {'R@' + str(k):>6s} {'gain [95 % interval]':>26s} {'':12s} {'MRR':>6s} "
            + " ".join(_rjust(c, 9) for c in cats))
    lines = ([title] if title else []) + [head, "-" * _cols(head)]
    for name, r in table.iterrows():
        gain = "" if r["gain"] != r["gain"] else f"{r['gain']:+.3f} [{r['95% low']:+.3f}, {r['95% high']:+.3f}]"
        lines.append(name + " " * (nw - _cols(name)) + f" {r[f'Recall@{k}']:6.3f} {gain:>26s} {r['noise']:12s} "
                     f"{r['MRR']:6.3f} " + " ".join(f"{r[c]:9.3f}" for c in cats))
    n = table.attrs.get("n_queries")
    if n:
        lines.append(f"gain: Recall@{k} minus the row above; 95 % paired bootstrap over {n} queries, "
                     f"{table.attrs.get('n_resamples', 1000)} resamples, seed {table.attrs.get('seed', 0)}")
    return "\n".join(lines)


def plot_ablation(table: pd.DataFrame, out: str | os.PathLike | None = None, title: str = ""):
    """Recall@20 per rung (left) and each rung's gain with its 95 % interval as error bars (right):
    green or red when the interval excludes 0, grey when it is within noise."""
    from .viz import _finish, _plt

    plt = _plt()
    k = table.attrs.get("k", 20)
    names = list(table.index)
    y = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 0.42 * len(names) + 1.4), sharey=True,
                                   gridspec_kw={"width_ratios": [3, 2]})
    ax1.barh(y, table[f"Recall@{k}"], color=["#999999"] + ["#2b6cb0"] * (len(names) - 1))
    for i, v in enumerate(table[f"Recall@{k}"]):
        ax1.text(v + 0.01, i, f"{v:.3f}", va="center", fontsize=7)
    ax1.set_yticks(y, names, fontsize=8)
    ax1.set_xlim(0, 1.1)
    ax1.set_xlabel(f"Recall@{k}" + (f" ({table.attrs['n_queries']} queries)" if "n_queries" in table.attrs else ""))
    ax1.invert_yaxis()
    gain, low, high = (table[c].to_numpy(dtype=float) for c in ("gain", "95% low", "95% high"))
    ok = ~np.isnan(gain)
    colour = np.where(table["noise"] == VERDICTS[1], "#a0aec0", np.where(gain > 0, "#2f855a", "#c53030"))
    ax2.barh(y[ok], gain[ok], color=colour[ok],
             xerr=np.vstack([gain[ok] - low[ok], high[ok] - gain[ok]]), capsize=3, ecolor="#333333")
    ax2.axvline(0, color="#333333", linewidth=0.8)
    ax2.set_xlabel("gain over the row above (95 % paired bootstrap)")
    for ax in (ax1, ax2):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title or "アブレーション: one step at a time", fontsize=10)
    fig.tight_layout()
    return _finish(fig, out)


# ----------------------------------------------------------------------------------------
# `tmr ablate`
# ----------------------------------------------------------------------------------------
def add_common_ladder_args(p: argparse.ArgumentParser) -> None:
    """The options `tmr ablate` and `tmr contest simulate` share (so both train the same runs)."""
    p.add_argument("--preset", default=None, help="recipe: ci, cpu or gpu (default $TMR_PRESET or cpu)")
    p.add_argument("--data", default=None, help="participant folder (default: the recipe's, built if missing)")
    p.add_argument("--host", default=None, help="host folder with answers.csv (default <data>-host)")
    p.add_argument("--pretrained", default=None, help="starting weights (default: the preset's)")
    p.add_argument("--method", default=None, choices=("kit", "2nd-place"), help="the method's switches")
    p.add_argument("--runs", default=None, help="where the ladder's models go (default runs/<preset>/ablate)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per model (default: the preset's)")
    p.add_argument("--minutes", type=float, default=None, help="training budget per model (default: the preset's)")
    p.add_argument("--folds", type=int, default=2, help="fold models averaged (default 2; 1: no fold rung)")
    p.add_argument("--second", default="loss", choices=("loss", "seed", "backbone", "none"),
                   help="the second model: another loss and seed (default), another seed, the recipe's "
                        "second backbone, or none")
    p.add_argument("--second-loss", default="multisimilarity", help="the second model's loss with --second loss")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="change a config field (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def ladder_setup(args: argparse.Namespace) -> tuple[Config, Any, Path, Path, Path]:
    """(config, competition, participant folder, host folder, runs folder) from the shared options."""
    from .data import load_competition
    from .demo import resolve_data
    from .paths import runs_root
    from .pipeline_cli import config_from_args

    cfg = config_from_args(args)
    changes = {"epochs": args.epochs, "max_train_minutes": args.minutes}
    cfg = cfg.replace(**{k: v for k, v in changes.items() if v is not None})
    data, host = resolve_data(cfg, args.data, args.host, progress=not args.quiet)
    runs = Path(args.runs) if args.runs else runs_root(cfg.name) / "ablate"
    return cfg, load_competition(data), data, host, runs


def add_ablate_parser(subparsers: Any) -> None:
    """Add ``tmr ablate`` to the ``tmr`` parser (torch is imported only when it runs)."""
    p = subparsers.add_parser(
        "ablate", help="the 2nd place's steps one rung at a time, each gain with its 95 %% interval",
        description="Train (or reuse) one model per rung, embed each once, and print what every step adds: "
                    "raw pixels, the starting weights untrained, fine-tuned (2 views a pair), 4 views, "
                    "CrossBatchMemory, fold averaging, a second model, label transfer, re-search. Each gain "
                    "comes with a 95 % paired-bootstrap interval. Writes ablation_<scope>.{csv,json,png}.")
    add_common_ladder_args(p)
    p.add_argument("--out", default=None, help="where the tables and plots go (default: --runs)")
    p.add_argument("--cites", type=int, default=None,
                   help="search a smaller database of N cites (correct + train cites + random; default all)")
    p.add_argument("--scope", default="both", choices=("test", "validation", "both"),
                   help="score on the test answers, on the held-out train fold (where recipes are chosen), or "
                        "both (default)")
    p.add_argument("--flip", action="store_true", help="add a flip-TTA rung (one more embedding pass per model)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(func=_cmd_ablate)


def _cmd_ablate(args: argparse.Namespace) -> int:
    cfg, comp, data, host, runs = ladder_setup(args)
    from .data import load_answers
    from .images import image_store

    out = Path(args.out) if args.out else runs
    out.mkdir(parents=True, exist_ok=True)
    answers = load_answers(host)
    print(f"[ablate] {comp}\n[ablate] recipe {cfg.name!r} from {cfg.pretrained}: {cfg.backbones[0]} at "
          f"{cfg.image_size} px, {cfg.epochs} epoch(s), at most {cfg.max_train_minutes} min a model; models in {runs}",
          flush=True)
    store = image_store(cfg, comp, progress=not args.quiet)
    ladder = ablation_ladder(cfg, comp, store, runs, answers=answers, cites=args.cites, folds=args.folds,
                             second=args.second, second_loss=args.second_loss, flip=args.flip,
                             validation=args.scope != "test", progress=not args.quiet,
                             log=lambda s: print(s, flush=True))
    scopes = ["validation", "test"] if args.scope == "both" else [args.scope]
    for scope in scopes:
        ans = ladder.validation_answers if scope == "validation" else answers
        table = ablation_table(ladder.steps(scope), ans, n_resamples=args.resamples, seed=args.seed)
        title = _scope_title(scope, ladder, table)
        print("\n" + format_ablation(table, title))
        _write_table(table, out / f"ablation_{scope}", title, ladder)
    for note in ladder.notes:
        print(f"note: {note}")
    print(f"[ablate] tables and plots in {out} ({ladder.seconds / 60:.1f} min)")
    return 0


def _scope_title(scope: str, ladder: Ladder, table: pd.DataFrame) -> str:
    n = table.attrs["n_queries"]
    if scope == "validation":
        return (f"VALIDATION scope (choose recipes here): {n} held-out train queries of fold 0 against their "
                f"cites + {ladder.cfg.val_distractors} distractors; no fold rung (the fold-1 model trained on them)")
    return (f"TEST scope (report only, never choose on it): {n} test queries with the host's answers, "
            f"{ladder.n_cites:,} cites searched")


def _write_table(table: pd.DataFrame, stem: Path, title: str, ladder: Ladder) -> None:
    table.to_csv(stem.with_suffix(".csv"))
    doc = {"title": title, **{k: v for k, v in table.attrs.items()}, "recipe": ladder.cfg.name,
           "pretrained": ladder.cfg.pretrained, "seconds": round(ladder.seconds, 1), "notes": ladder.notes,
           "rows": [{"step": name, **{c: (None if isinstance(v, float) and v != v else v) for c, v in r.items()}}
                    for name, r in table.iterrows()]}
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=float))
    plot_ablation(table, stem.with_suffix(".png"), title=title.split(":")[0])
