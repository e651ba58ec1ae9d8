"""Build a competition in the real JPO format from real marks, with the answers kept apart.

    python -m tmr_lib data build --size cpu --out data/tmr-cpu

writes the participant folder `data/tmr-cpu/` (train.csv, test.csv, cite_v2.csv,
sample_submission.csv, apply_images/, cite_images/, dataset.json) and the host folder
`data/tmr-cpu-host/` (answers.csv, host.json, build_report.json, contact_sheet.png).

How it stays honest:
- every cite and query is a pure function of (seed, index), so builds are deterministic and
  can be rendered in parallel, streamed, with memory that does not grow with the image count;
- ids are random 10-digit numbers, CSVs are sorted by id and every file gets the same
  timestamp, so neither order, numbering nor file dates reveal which cite answers which query;
- answer cites are drawn from the same scene generator as the distractors;
- a query is re-derived if it comes out (nearly) pixel-identical to its cite;
- the build happens in temporary folders renamed into place at the end: a failed build leaves
  nothing that looks complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from . import scenes
from .marks import MarkRef, cpu_count, default_catalogue, query_mark_indices, user_marks

FORMAT = "tmr-kit competition v2"  # v2: queries are made only of query marks (marks.query_mark)
CATEGORY_SHARE = {2: 0.30, 3: 0.49, 4: 0.16, 5: 0.05}  # the real competition's proportions
FILE_TIME = 1640995200  # 2022-01-01T00:00:00Z on every file: dates must not leak anything
MIN_QUERY_DISTANCE = 3.0  # mean gray-level difference (of 255) below which a query is "trivial"


@dataclass(frozen=True)
class BuildPreset:
    """Sizes of a generated competition."""

    name: str
    n_cite: int
    n_train_queries: int
    n_test_queries: int
    image_size: int
    share_p: float = 0.12  # probability that a query reuses a cite another query already has
    family_p: float = 0.12  # probability that a mark is registered twice (two correct cites)
    pixel_baseline: bool = True


BUILD_PRESETS = {
    "ci": BuildPreset("ci", n_cite=600, n_train_queries=150, n_test_queries=60, image_size=128),
    "cpu": BuildPreset("cpu", n_cite=15000, n_train_queries=1050, n_test_queries=600, image_size=256),
    "full": BuildPreset(
        "full", n_cite=200_400, n_train_queries=2000, n_test_queries=1542, image_size=192, pixel_baseline=False
    ),
}


class BuildError(RuntimeError):
    """The build cannot proceed; the message says why and what to do."""


# --------------------------------------------------------------------------- the plan


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


@dataclass
class Plan:
    """Everything about a competition except the pixels: small, deterministic, picklable."""

    preset: BuildPreset
    seed: int
    n_refs: int
    single_refs: np.ndarray  # cite i < len(single_refs) is base mark single_refs[i] alone
    n_primary: int
    variant_of: list[int]  # cite n_primary + j is a second registration of cite variant_of[j]
    query_cite: np.ndarray  # the primary cite each query is derived from
    query_category: np.ndarray
    query_is_test: np.ndarray
    answers: list[list[int]]  # correct cite indices per query
    dropped: set
    query_refs: np.ndarray  # the marks queries are made of (marks.query_mark); no other mark is in a query

    def cite_scene(self, i: int, attempt: int = 0) -> dict:
        if attempt:  # a redraw of a cite whose first drawing collided with another cite's pixels
            return scenes.variant_registration(self.cite_scene(i), _rng(self.seed, 6, i, attempt))
        if i >= self.n_primary:
            j = i - self.n_primary
            return scenes.variant_registration(self.cite_scene(self.variant_of[j]), _rng(self.seed, 3, j))
        return primary_scene(self.seed, self.n_refs, self.single_refs, i)

    @property
    def n_cite(self) -> int:
        return self.n_primary + len(self.variant_of)


def category_counts(n: int) -> dict[int, int]:
    """Exact counts in the real proportions (largest remainder), so small sets keep the shares."""
    raw = {c: n * p for c, p in CATEGORY_SHARE.items()}
    counts = {c: int(v) for c, v in raw.items()}
    for c in sorted(raw, key=lambda c: raw[c] - counts[c], reverse=True)[: n - sum(counts.values())]:
        counts[c] += 1
    return counts


def primary_scene(seed: int, n_refs: int, single_refs: np.ndarray, i: int) -> dict:
    """Primary cite i's scene: base mark single_refs[i] alone, or a random composition."""
    rng = _rng(seed, 1, i)
    if i < len(single_refs):
        return scenes.random_scene(rng, n_refs, "single", ref=int(single_refs[i]))
    w = scenes.LAYOUT_WEIGHTS.copy()
    w[scenes.LAYOUTS.index("single")] = 0.0
    layout = str(rng.choice(scenes.LAYOUTS, p=w / w.sum()))
    return scenes.random_scene(rng, n_refs, layout)


def make_plan(preset: BuildPreset, seed: int, n_refs: int, query_refs: np.ndarray | None = None) -> Plan:
    """The competition's plan. Queries (train and test) derive only from cites made wholly of
    `query_refs` (default: every mark), and a mark a query adds is one of them too."""
    query_refs = np.arange(n_refs) if query_refs is None else np.asarray(query_refs, dtype=np.int64)
    allowed = np.zeros(n_refs, dtype=bool)
    allowed[query_refs] = True
    rng = _rng(seed, 0)
    n_q = preset.n_train_queries + preset.n_test_queries
    n_single = int(min(n_refs, round(preset.n_cite * float(scenes.LAYOUT_WEIGHTS[0]))))
    single_refs = rng.permutation(n_refs)[:n_single]
    n_primary = preset.n_cite

    # Categories in the real proportions, shuffled.
    cats = np.concatenate([np.full(k, c) for c, k in category_counts(n_q).items()])
    rng.shuffle(cats)

    # Each query gets a cite; some reuse a cite another query already has.
    order = iter(rng.permutation(n_primary))
    query_cite = np.empty(n_q, dtype=np.int64)
    used: list[int] = []
    scene_refs: dict[int, list[int]] = {}

    def refs_of(i: int) -> list[int]:
        if i not in scene_refs:
            scene_refs[i] = [m["ref"] for m in primary_scene(seed, n_refs, single_refs, i)["marks"]]
        return scene_refs[i]

    def is_text_only(i: int) -> bool:
        return not refs_of(i)

    def of_query_marks(i: int) -> bool:
        return all(allowed[r] for r in refs_of(i))

    for q in range(n_q):
        need_marks = cats[q] == 5
        if used and rng.random() < preset.share_p:
            cand = [c for c in used[-200:] if not (need_marks and is_text_only(c))]
            if cand:
                query_cite[q] = cand[int(rng.integers(len(cand)))]
                continue
        for c in order:
            if (need_marks and is_text_only(int(c))) or not of_query_marks(int(c)):
                continue
            query_cite[q] = int(c)
            used.append(int(c))
            break
        else:
            raise BuildError(f"preset {preset.name}: not enough cites made of query marks ({len(query_refs)} of "
                             f"{n_refs} marks) for {n_q} queries: give more marks or build a larger preset")

    # Some marks are registered twice: both registrations are correct answers.
    distinct = sorted(set(query_cite.tolist()))
    variant_of = [c for c in distinct if rng.random() < preset.family_p]
    variant_index = {c: n_primary + j for j, c in enumerate(variant_of)}
    answers = [[int(c)] + ([variant_index[int(c)]] if int(c) in variant_index else []) for c in query_cite]

    # Keep the database at n_cite: drop as many distractors as variants were added.
    answer_set = set(query_cite.tolist())
    dropped: set = set()
    for c in rng.permutation(n_primary):
        if len(dropped) == len(variant_of):
            break
        if int(c) not in answer_set:
            dropped.add(int(c))

    is_test = np.zeros(n_q, dtype=bool)
    is_test[rng.permutation(n_q)[: preset.n_test_queries]] = True
    return Plan(preset, seed, n_refs, single_refs, n_primary, variant_of, query_cite, cats, is_test, answers, dropped,
                query_refs)


def random_gids(rng: np.random.Generator, n: int) -> list[str]:
    """n unique random 10-digit ids (like the real competition's), in random order."""
    out: list[int] = []
    seen: set[int] = set()
    while len(out) < n:
        for g in rng.integers(1_000_000_000, 9_999_999_999, size=n - len(out) + 16).tolist():
            if g not in seen and len(out) < n:
                seen.add(g)
                out.append(g)
    return [str(g) for g in out]


# --------------------------------------------------------------------------- workers

_W: dict = {}


def _init_worker(refs: list[MarkRef], plan: Plan, root: str) -> None:
    _W.update(refs=refs, plan=plan, root=root)


def _render_cite(job: tuple[int, str, int]) -> tuple[int, str, bytes | None]:
    i, gid, attempt = job
    plan: Plan = _W["plan"]
    rng = _rng(plan.seed, 2, i, attempt)
    item = {"scene": plan.cite_scene(i, attempt), "ops": [], "seed": i, "margin": float(rng.uniform(0.0, 0.15))}
    img = scenes.render_item(item, _W["refs"], plan.preset.image_size)
    digest = hashlib.sha1(img.tobytes() + repr(img.size).encode()).hexdigest()
    _write_jpeg(Path(_W["root"]) / "cite_images" / gid / f"{gid}.jpg", img, int(rng.integers(82, 96)))
    thumb = scenes.thumbnail(img).tobytes() if plan.preset.pixel_baseline else None
    return i, digest, thumb


def _render_query(job: tuple[int, str]) -> tuple[int, str, float, int, bytes | None]:
    q, gid = job
    plan: Plan = _W["plan"]
    refs = _W["refs"]
    size = plan.preset.image_size
    cite = plan.cite_scene(int(plan.query_cite[q]))
    cite_thumb = scenes.thumbnail(scenes.render_item({"scene": cite, "ops": [], "seed": 0, "margin": 0.0}, refs, size))
    best = None
    for attempt in range(6):
        rng = _rng(plan.seed, 4, q, attempt)
        scene, ops, how = scenes.derive_query(cite, int(plan.query_category[q]), rng, plan.query_refs)
        if attempt >= 3:  # e.g. a symmetric mark whose rotation looks the same: redraw it less faithfully
            ops = ops + [{"op": "rotate", "deg": float(rng.choice([-1, 1]) * rng.uniform(4, 8))},
                         {"op": "lowres", "factor": float(rng.uniform(1.5, 2.5))}]
            how += "+redrawn"
        item = {"scene": scene, "ops": ops, "seed": q, "margin": float(rng.uniform(0.0, 0.2))}
        img = scenes.render_item(item, refs, size)
        dist = scenes.thumb_distance(scenes.thumbnail(img), cite_thumb)
        if best is None or dist > best[2]:
            best = (img, how, dist, int(rng.integers(55, 93)))
        if dist >= MIN_QUERY_DISTANCE:
            break
    img, how, dist, quality = best
    _write_jpeg(Path(_W["root"]) / "apply_images" / gid / f"{gid}.jpg", img, quality)
    thumb = scenes.thumbnail(img).tobytes() if plan.preset.pixel_baseline else None
    return q, how, dist, attempt + 1, thumb


def _write_jpeg(path: Path, img, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=quality)


# --------------------------------------------------------------------------- the build


def host_dir_for(out: str | Path) -> Path:
    """The host folder that goes with a participant folder: data/tmr-cpu -> data/tmr-cpu-host."""
    out = Path(out)
    return out.with_name(out.name + "-host")


#: the built-in mark sets: the whole catalogue, or only the marks held out of pretraining
MARK_SETS = ("default", "heldout")


def _identity(preset: BuildPreset, seed: int, marks_dir: str | None) -> dict:
    return {"format": FORMAT, "preset": asdict(preset), "seed": seed, "marks": marks_dir or "default"}


def existing_build(out: Path) -> dict | None:
    meta = out / "dataset.json"
    if meta.is_file():
        try:
            return json.loads(meta.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None
    return None


def _already_built(out: Path, host: Path, identity: dict, force: bool) -> bool:
    """True when ``out`` already holds this very build; a BuildError when it (or the host folder)
    holds anything else and ``force`` is not given."""
    if out.exists() and any(out.iterdir()):
        have = existing_build(out)
        same = have is not None and {k: have.get(k) for k in identity} == identity
        if same and (host / "answers.csv").is_file() and not force:
            return True
        if not force:
            what = (
                f"another dataset ({have.get('preset', {}).get('name')}, seed {have.get('seed')})"
                if have else "files that are not a dataset built by the kit"
            )
            raise BuildError(
                f"{out} already holds {what}. Choose another --out, or pass --force to replace it."
            )
    if host.exists() and any(host.iterdir()) and not force and not (host / "host.json").is_file():
        raise BuildError(f"{host} (the host folder) holds files that are not the kit's; pass --host-out "
                         "to put the answers elsewhere, or --force to replace it.")
    return False


def build_competition(
    out: str | Path,
    preset: str | BuildPreset = "cpu",
    seed: int = 0,
    marks_dir: str | Path | None = None,
    host_out: str | Path | None = None,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    marks: str = "default",
) -> tuple[Path, Path]:
    """Build a competition; return (participant folder, host folder).

    ``marks="heldout"`` draws only the marks that ``tmr pretrain`` held out (never seen by the
    kit's tmr-marks checkpoint), so fine-tuning can be judged on marks the starting weights never met.

    If `out` already holds this very build (same preset, seed and marks), nothing is done.
    If it holds anything else, a BuildError says so unless `force` replaces it.
    """
    from tqdm.auto import tqdm

    if isinstance(preset, str) and preset not in BUILD_PRESETS:
        raise BuildError(f"unknown dataset size {preset!r}; choose one of {', '.join(BUILD_PRESETS)}")
    spec = BUILD_PRESETS[preset] if isinstance(preset, str) else preset
    out = Path(out).expanduser().resolve()
    host = Path(host_out).expanduser().resolve() if host_out else host_dir_for(out)
    if marks not in MARK_SETS:
        raise BuildError(f"unknown marks {marks!r}; choose one of {', '.join(MARK_SETS)} (or --marks-dir)")
    if marks_dir and marks != "default":
        raise BuildError(f"--marks {marks} and --marks-dir both choose the marks: give one of them")
    marks_dir = str(Path(marks_dir).expanduser().resolve()) if marks_dir else None
    identity = _identity(spec, seed, marks_dir or (marks if marks != "default" else None))
    if _already_built(out, host, identity, force):
        return out, host

    t0 = time.time()
    refs = user_marks(marks_dir) if marks_dir else default_catalogue()
    if marks == "heldout":
        from .pretrain import split_marks

        refs = [refs[i] for i in split_marks(refs)[1]]
    if len(refs) < 8:
        raise BuildError(f"{len(refs)} usable mark(s) in {marks_dir}: at least 8 are needed to build a competition.")
    plan = make_plan(spec, seed, len(refs), query_mark_indices(refs))

    rng = _rng(seed, 5)
    n_q = len(plan.query_cite)
    ids = random_gids(rng, plan.n_cite + n_q)
    cite_gid = ids[: plan.n_cite]
    apply_gid = ids[plan.n_cite :]

    out.parent.mkdir(parents=True, exist_ok=True)
    host.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    tmp_host = host.with_name(f".{host.name}.partial-{os.getpid()}")
    for d in (tmp, tmp_host):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    try:
        report = _render_all(plan, refs, cite_gid, apply_gid, tmp, workers, progress, tqdm)
        _write_tables(plan, cite_gid, apply_gid, report, tmp, tmp_host, identity, rng)
        report["build_seconds"] = round(time.time() - t0, 1)
        report["disk_mb"] = round(_disk_mb(tmp), 1)
        _write_host_files(tmp_host, out, host, spec, seed, plan, report)
        _stamp_times(tmp)
        # Swap into place: host first, participant last (its dataset.json marks a complete build).
        for final, partial in ((host, tmp_host), (out, tmp)):
            if final.exists():
                shutil.rmtree(final)
            partial.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp_host, ignore_errors=True)
        raise
    try:
        import matplotlib.pyplot as plt

        from .viz import contact_sheet

        plt.close(contact_sheet(out, host / "contact_sheet.png"))  # saved, not shown in a notebook
    except Exception as e:  # noqa: BLE001 - a picture must never fail a finished build
        print(f"warning: contact sheet not drawn: {e}", file=sys.stderr)
    owner_only(host)
    return out, host


def owner_only(folder: Path) -> None:
    """Make the host folder (it holds the answers) private: folder 700, files 600 (POSIX)."""
    os.chmod(folder, 0o700)
    for p in Path(folder).rglob("*"):
        os.chmod(p, 0o700 if p.is_dir() else 0o600)


def _write_host_files(tmp_host: Path, out: Path, host: Path, spec, seed: int, plan, report: dict) -> None:
    """host.json (what the leaderboard reads) and build_report.json (figures, no answers)."""
    host_json = {
        "name": out.name,
        "preset": spec.name,
        "seed": seed,
        "participant_dir": os.path.relpath(out, host),
        "n_test": int(plan.query_is_test.sum()),
        "n_cite": len(report["cite_kept"]),
        "answers": "answers.csv",
    }
    (tmp_host / "host.json").write_text(json.dumps(host_json, indent=2) + "\n", encoding="utf-8")
    public = {k: v for k, v in report.items()
              if k not in ("cite_kept", "thumbs_cite", "thumbs_query", "query_how", "alias")}
    (tmp_host / "build_report.json").write_text(json.dumps(public, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _render_all(plan, refs, cite_gid, apply_gid, root: Path, workers, progress, tqdm) -> dict:
    workers = workers or cpu_count()
    cite_jobs = [(i, cite_gid[i], 0) for i in range(plan.n_cite) if i not in plan.dropped]
    query_jobs = [(q, apply_gid[q]) for q in range(len(plan.query_cite))]
    digests: dict[str, int] = {}
    duplicates: list[int] = []
    alias: dict[int, int] = {}
    thumbs_cite: dict[int, bytes] = {}
    thumbs_query: dict[int, bytes] = {}
    how: dict[int, str] = {}
    dists = np.zeros(len(query_jobs))
    attempts = np.zeros(len(query_jobs), dtype=int)
    answer_cites = {c for a in plan.answers for c in a}
    ctx = get_context("spawn")  # safe even when torch is loaded in a notebook's kernel
    chunks = max(1, min(64, len(cite_jobs) // (workers * 8)))
    with ctx.Pool(workers, initializer=_init_worker, initargs=(refs, plan, str(root))) if workers > 1 else _Inline(
        refs, plan, str(root)
    ) as pool:
        bar = tqdm(total=len(cite_jobs) + len(query_jobs), desc=f"rendering {plan.preset.name}", unit="img",
                   disable=not progress, mininterval=0.5)
        # Identical drawings happen at scale (same mark, frame and colour): the later distractor
        # is redrawn with a variation; an answer keeps its drawing and pushes the distractor
        # out instead; two identical answers become one cite that answers both queries.
        attempt_of: dict[int, int] = {}
        digest_of: dict[int, str] = {}
        jobs = cite_jobs
        for round_ in range(6):
            redo = []
            for i, digest, thumb in pool.imap(_render_cite, jobs, chunksize=chunks if round_ == 0 else 1):
                j = digests.get(digest)
                if j is not None and j != i:
                    if i in answer_cites and j in answer_cites:
                        alias[i] = j
                        duplicates.append(i)
                        shutil.rmtree(root / "cite_images" / cite_gid[i], ignore_errors=True)
                    else:
                        loser = j if i in answer_cites else i
                        if loser == j:
                            digests[digest] = i
                            digest_of[i] = digest
                            thumbs_cite[i] = thumb
                        attempt_of[loser] = attempt_of.get(loser, 0) + 1
                        redo.append((loser, cite_gid[loser], attempt_of[loser]))
                else:
                    digests[digest] = i
                    digest_of[i] = digest
                    if thumb is not None:
                        thumbs_cite[i] = thumb
                if round_ == 0:
                    bar.update()
            if not redo:
                break
            for loser, _, _ in redo:
                if digest_of.get(loser) and digests.get(digest_of[loser]) == loser:
                    del digests[digest_of[loser]]
                thumbs_cite.pop(loser, None)
            jobs = redo
        else:
            for loser, _, _ in jobs:
                duplicates.append(loser)
                shutil.rmtree(root / "cite_images" / cite_gid[loser], ignore_errors=True)
        for q, h, d, a, thumb in pool.imap(_render_query, query_jobs, chunksize=max(1, chunks // 4)):
            how[q], dists[q], attempts[q] = h, d, a
            if thumb is not None:
                thumbs_query[q] = thumb
            bar.update()
        bar.close()
    kept = sorted(set(i for i, _, _ in cite_jobs) - set(duplicates))
    return {
        "cite_kept": kept,
        "alias": alias,
        "duplicates_redrawn": sum(attempt_of.values()),
        "duplicates_dropped": len(duplicates),
        "thumbs_cite": thumbs_cite,
        "thumbs_query": thumbs_query,
        "query_how": how,
        "query_distance": {"min": round(float(dists.min()), 2), "median": round(float(np.median(dists)), 2)},
        "queries_rederived": int((attempts > 1).sum()),
        "queries_below_threshold": int((dists < MIN_QUERY_DISTANCE).sum()),
        "workers": workers,
    }


class _Inline:
    """A one-process stand-in for a Pool (workers=1): same code path, no subprocesses."""

    def __init__(self, refs, plan, root):
        _init_worker(refs, plan, root)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap(self, fn, jobs, chunksize=1):
        return map(fn, jobs)


def _write_tables(plan: Plan, cite_gid, apply_gid, report, root: Path, host: Path, identity, rng) -> None:
    kept = report["cite_kept"]
    kept_set = set(kept)
    cite_df = pd.DataFrame({"gid": [cite_gid[i] for i in kept], "path": [f"{cite_gid[i]}/{cite_gid[i]}.jpg" for i in kept]})
    cite_df = cite_df.sort_values("gid", kind="stable")
    rows_train, rows_test, rows_ans = [], [], []
    for q in range(len(plan.query_cite)):
        g = apply_gid[q]
        cat = int(plan.query_category[q])
        alias = report["alias"]
        ans = sorted({cite_gid[alias.get(c, c)] for c in plan.answers[q] if alias.get(c, c) in kept_set})
        if plan.query_is_test[q]:
            rows_test.append((g, f"{g}/{g}.jpg"))
            rows_ans.append((g, " ".join(sorted(ans)), cat))
        else:
            for c in sorted(ans):
                rows_train.append((g, f"{g}/{g}.jpg", c, f"{c}/{c}.jpg", cat))
    train = pd.DataFrame(rows_train, columns=["gid", "path", "cite_gid", "cite_path", "category"]).sort_values(
        ["gid", "cite_gid"], kind="stable")
    test = pd.DataFrame(rows_test, columns=["gid", "path"]).sort_values("gid", kind="stable")
    answers = pd.DataFrame(rows_ans, columns=["gid", "cite_gid", "category"]).sort_values("gid", kind="stable")
    all_cites = cite_df["gid"].to_numpy()
    sample = pd.DataFrame({
        "gid": test["gid"].to_numpy(),
        "cite_gid": [" ".join(rng.choice(all_cites, 20, replace=False)) for _ in range(len(test))],
    })
    for name, df in (("train.csv", train), ("test.csv", test), ("cite_v2.csv", cite_df), ("sample_submission.csv", sample)):
        df.to_csv(root / name, index=False, lineterminator="\n")
    answers.to_csv(host / "answers.csv", index=False, lineterminator="\n")

    n_train_q = int((~plan.query_is_test).sum())
    shares = Counter(int(c) for c in plan.query_category)
    test_cats = answers["category"].value_counts().sort_index()
    train_cite_set = set(train["cite_gid"])
    report.update({
        "counts": {
            "cites": len(cite_df),
            "train_pairs": len(train),
            "train_queries": n_train_q,
            "test_queries": len(test),
            "test_queries_with_several_cites": int(answers["cite_gid"].str.contains(" ").sum()),
            "test_queries_sharing_a_train_cite": int(sum(any(c in train_cite_set for c in s.split(" "))
                                                         for s in answers["cite_gid"])),
        },
        "category_share": {c: round(shares[c] / len(plan.query_category), 3) for c in sorted(shares)},
        "test_categories": {int(k): int(v) for k, v in test_cats.items()},
        "derivations": dict(Counter(h.split("+")[0] for h in report["query_how"].values()).most_common()),
    })
    if plan.preset.pixel_baseline and report["thumbs_cite"]:
        report["pixel_baseline_recall@20"] = _pixel_baseline(plan, report, kept, answers, apply_gid, cite_gid)
    meta = dict(identity)
    meta["counts"] = report["counts"]
    meta["note"] = "Answers for test.csv are not here: they live in the host folder."
    (root / "dataset.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _pixel_baseline(plan, report, kept, answers, apply_gid, cite_gid) -> dict:
    """Recall@20 of raw pixels (trimmed 32 px gray, cosine) on the test queries: how hard it is."""
    C = np.stack([np.frombuffer(report["thumbs_cite"][i], np.uint8) for i in kept]).astype(np.float32)
    C = 255.0 - C  # ink, not paper, carries the signal
    C /= np.linalg.norm(C, axis=1, keepdims=True) + 1e-6
    test_q = [q for q in range(len(plan.query_cite)) if plan.query_is_test[q]]
    Q = np.stack([np.frombuffer(report["thumbs_query"][q], np.uint8) for q in test_q]).astype(np.float32)
    Q = 255.0 - Q
    Q /= np.linalg.norm(Q, axis=1, keepdims=True) + 1e-6
    from .retrieval import Retrieval

    qids = [str(q) for q in test_q]
    answers = {str(q): [str(report["alias"].get(c, c)) for c in plan.answers[q]] for q in test_q}
    r = Retrieval.from_embeddings(qids, Q, [str(i) for i in kept], C, k=20)
    m = r.metrics(pd.DataFrame({"gid": qids, "cite_gids": list(answers.values()),
                                "category": [int(plan.query_category[q]) for q in test_q]}), ks=(20,))
    return {"all": round(m["recall"][20], 3), **{int(c): round(v, 3) for c, v in m["per_category"].items()}}


def _stamp_times(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (FILE_TIME, FILE_TIME))
    os.utime(root, (FILE_TIME, FILE_TIME))


def _disk_mb(root: Path) -> float:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1e6


def ensure_dataset(preset: str = "cpu", out: str | Path | None = None, seed: int = 0, progress: bool = True) -> tuple[Path, Path]:
    """The dataset the demo and the notebooks use: built on first use, reused afterwards."""
    out = Path(out) if out else Path("data") / f"tmr-{preset}"
    have = existing_build(out)
    if have is not None and (host_dir_for(out) / "answers.csv").is_file():
        if have.get("preset", {}).get("name") == preset and have.get("seed") == seed:
            if have.get("format") == FORMAT:
                return out.resolve(), host_dir_for(out).resolve()
            # the kit's own folder from an older format (v1: queries could use marks the teaching start saw)
            print(f"{out} was built as {have.get('format')!r}; rebuilding it as {FORMAT!r}", flush=True)
            return build_competition(out, preset=preset, seed=seed, progress=progress, force=True)
    return build_competition(out, preset=preset, seed=seed, progress=progress)


def summary_text(out: str | Path, host: str | Path | None = None) -> str:
    """A short, printable description of a built competition (from its reports, no answers)."""
    out = Path(out)
    host = Path(host) if host else host_dir_for(out)
    meta = existing_build(out) or {}
    rep_path = host / "build_report.json"
    rep = json.loads(rep_path.read_text(encoding="utf-8")) if rep_path.is_file() else {}
    c = meta.get("counts", {})
    from .data import CATEGORIES

    lines = [
        f"Competition {out}  (size {meta.get('preset', {}).get('name')}, seed {meta.get('seed')}, marks {meta.get('marks')})",
        f"  database (cite_v2.csv): {c.get('cites')} marks",
        f"  train.csv: {c.get('train_pairs')} pairs from {c.get('train_queries')} queries",
        f"  test.csv: {c.get('test_queries')} queries "
        f"({c.get('test_queries_with_several_cites')} with several correct cites, "
        f"{c.get('test_queries_sharing_a_train_cite')} sharing a cite with a train query)",
    ]
    if rep:
        lines.append("  categories (all queries): " + ", ".join(
            f"{CATEGORIES[int(k)].split()[0]} {v:.0%}" for k, v in rep.get("category_share", {}).items()))
        pb = rep.get("pixel_baseline_recall@20")
        if pb:
            per = ", ".join(f"{CATEGORIES[int(k)].split()[0]} {v:.2f}" for k, v in pb.items() if k != "all")
            lines.append(f"  raw-pixel baseline Recall@20 on test: {pb['all']:.3f}  ({per})")
        lines.append(f"  built in {rep.get('build_seconds')} s with {rep.get('workers')} worker(s); {rep.get('disk_mb')} MB")
    lines.append(f"  host folder (answers, never hand out): {host}")
    if (host / "contact_sheet.png").is_file():
        lines.append(f"  contact sheet: {host / 'contact_sheet.png'}")
    return "\n".join(lines)
