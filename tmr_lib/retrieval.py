"""Retrieval results, embeddings first: everything after the model works on this one object.

    from tmr_lib.retrieval import Retrieval
    r = Retrieval.from_embeddings(test_gids, test_emb, cite_gids, cite_emb, memory=train_memory)
    r.metrics(answers)                      # Recall@1/5/10/20, MRR, mAP@20, per category
    post = r.postprocess()                  # the 2nd place's label transfer + re-search
    r.compare(post, answers)                # paired bootstrap of the Recall@20 difference
    both = Retrieval.ensemble([[fold0, fold1], [second_backbone]])   # fold mean, backbone concat
    post.plot(comp, answers); post.to_submission("runs/cpu/submission.csv")

The model's only job is to make embeddings (:func:`tmr_lib.predict.embed_competition`); search,
ensembling, post-processing, padding, metrics, paired comparison, pictures and the submission
are methods here, each returning a new :class:`Retrieval` or plain values (OML's
``RetrievalResults`` is the model). A submission file or a dict of ranked lists becomes one too
(:meth:`Retrieval.from_ranked`), so baselines, the leaderboard's check and the notebooks score
the same way.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .postprocess import TrainMemory

__all__ = ["Retrieval", "as_answers"]


def as_answers(answers: Any) -> pd.DataFrame:
    """The host's answers as a DataFrame (gid, cite_gids, category) from a host folder, a
    DataFrame or a ``{gid: [cite gids]}`` mapping (category 0 when unknown)."""
    if isinstance(answers, (str, os.PathLike)):
        from .data import load_answers

        return load_answers(answers)
    if isinstance(answers, pd.DataFrame):
        if "cite_gids" not in answers and "cite_gid" in answers:
            answers = answers.assign(cite_gids=[str(s).split() for s in answers["cite_gid"]])
        if "category" not in answers:
            answers = answers.assign(category=0)
        return answers
    if isinstance(answers, Mapping):
        return pd.DataFrame({"gid": list(answers), "cite_gids": [list(v) for v in answers.values()], "category": 0})
    raise TypeError(f"answers: a host folder, a DataFrame or a dict, not {type(answers).__name__}")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True, eq=False)
class Retrieval:
    """Ranked gallery ids per query, with the embeddings they came from (when they did).

    ``ranked[i]``: the top-``k`` gallery ids of query ``query_ids[i]``, best first, ``k`` unique
    ids whenever the gallery has that many (approximate indexes are padded). ``memory``: the
    training pairs' embeddings, for :meth:`postprocess`.
    """

    query_ids: np.ndarray
    ranked: list[list[str]]
    query_emb: np.ndarray | None = None
    gallery_ids: np.ndarray | None = None
    gallery_emb: np.ndarray | None = None
    memory: TrainMemory | None = None
    k: int = 20
    index: str = "flat"
    name: str = ""
    metric: str = "ip"  #: "ip" (inner product) or "l2" (Euclidean: the 2nd place's, on un-normalised ensembles)
    _cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_embeddings(cls, query_ids: Sequence[str], query_emb: np.ndarray, gallery_ids: Sequence[str],
                        gallery_emb: np.ndarray, *, memory: TrainMemory | None = None, k: int = 20,
                        index: str = "flat", name: str = "", metric: str = "ip") -> Retrieval:
        """Search ``query_emb`` against ``gallery_emb`` (exact inner product by default)."""
        q = np.ascontiguousarray(query_emb, dtype=np.float32)
        g = np.ascontiguousarray(gallery_emb, dtype=np.float32)
        qids, gids = np.asarray(query_ids).astype(str), np.asarray(gallery_ids).astype(str)
        if len(qids) != len(q) or len(gids) != len(g):
            raise ValueError(f"{len(qids)} query ids for {len(q)} query vectors, "
                             f"{len(gids)} gallery ids for {len(g)} gallery vectors")
        if q.shape[1:] != g.shape[1:]:
            raise ValueError(f"queries are {q.shape[1]}-d but the gallery is {g.shape[1]}-d")
        base = cls(qids, [], q, gids, g, memory, k, index, name, metric)
        return base.search(k=k, index=index)

    @classmethod
    def from_ranked(cls, ranked: Mapping[str, Sequence[str]] | str | os.PathLike, name: str = "",
                    k: int = 20) -> Retrieval:
        """From ``{query gid: ranked ids}`` or a submission CSV (no embeddings: metrics, compare,
        plot and to_submission work; search and postprocess need embeddings)."""
        if not isinstance(ranked, Mapping):
            from .submission import read_submission

            df = read_submission(ranked)
            name = name or Path(ranked).name
            ranked = {g: ids.split() for g, ids in zip(df["gid"], df["cite_gid"])}
        return cls(np.asarray(list(ranked), dtype=str), [list(map(str, v))[:k] for v in ranked.values()],
                   k=k, name=name)

    def _with(self, **changes: Any) -> Retrieval:
        return dataclasses.replace(self, _cache={}, **changes)

    def renamed(self, name: str) -> Retrieval:
        return dataclasses.replace(self, name=name)

    # ------------------------------------------------------------------ search
    def _need_embeddings(self, what: str) -> None:
        if self.query_emb is None or self.gallery_emb is None:
            raise ValueError(f"{what} needs embeddings; this Retrieval ({self.name or 'unnamed'}) was made from "
                             "ranked lists. Build it with Retrieval.from_embeddings.")

    def search_index(self):
        """The faiss index over the gallery (built once per object)."""
        from .search import build_index

        self._need_embeddings("search")
        if "index" not in self._cache:
            self._cache["index"] = build_index(self.gallery_emb, ids=self.gallery_ids, kind=self.index,
                                               metric=self.metric)
        return self._cache["index"]

    def search(self, k: int | None = None, index: str | None = None, nprobe: int | None = None,
               ef_search: int | None = None) -> Retrieval:
        """Plain top-``k`` search (``index``: "flat", "hnsw", "ivf" or a faiss factory string;
        ``nprobe`` (IVF) and ``ef_search`` (HNSW) trade speed for recall)."""
        from .postprocess import postprocess

        self._need_embeddings("search")
        index = index or self.index
        new = dataclasses.replace(self, k=k or self.k, index=index, ranked=[],
                                  _cache=self._cache if index == self.index else {})  # same gallery, same index
        if nprobe is not None or ef_search is not None:
            new.search_index().set_params(nprobe=nprobe, ef_search=ef_search)
        lists = postprocess(new.query_emb, new.search_index(), None, k=new.k)
        return dataclasses.replace(new, ranked=new._padded(lists), _cache=new._cache)

    def deeper(self, k: int = 200) -> Retrieval:
        """The same search to depth ``k`` (where did a missed answer end up?)."""
        return self.search(k=k)

    def _padded(self, lists: list[list[str]]) -> list[list[str]]:
        """Short lists (tiny galleries, approximate indexes) filled to k unique ids in gallery order."""
        k, out = self.k, []
        for ids in lists:
            if len(ids) < k and self.gallery_ids is not None:
                have = set(ids)
                ids = ids + [c for c in self.gallery_ids[: k + len(ids)].tolist() if c not in have][: k - len(ids)]
                if len(ids) < k:
                    have = set(ids)
                    ids = ids + [c for c in self.gallery_ids.tolist() if c not in have][: k - len(ids)]
            out.append(list(ids[:k]))
        return out

    def with_gallery(self, keep_ids: Iterable[str]) -> Retrieval:
        """The same queries searched in a part of the gallery (e.g. a smaller ablation database)."""
        self._need_embeddings("with_gallery")
        keep = set(map(str, keep_ids))
        rows = np.flatnonzero([g in keep for g in self.gallery_ids])
        return self._with(gallery_ids=self.gallery_ids[rows], gallery_emb=self.gallery_emb[rows]).search()

    # ------------------------------------------------------------------ ensembles
    @staticmethod
    def ensemble(groups: Sequence[Sequence[Retrieval]], name: str = "", k: int | None = None,
                 normalize: bool = True) -> Retrieval:
        """Average the members of each group (fold models, or a model and its mirrored TTA pass),
        re-normalise, concatenate the groups (backbones) and normalise; then search again.
        ``normalize=False``: the 2nd place's arithmetic (plain means, plain concat) searched with
        Euclidean distance (``metric="l2"``). All members must hold embeddings of the same queries
        and gallery (and memory, if any)."""
        from .encoder import combine_embeddings

        members = [r for g in groups for r in g]
        if not members:
            raise ValueError("ensemble needs at least one Retrieval")
        first = members[0]
        for r in members:
            r._need_embeddings("ensemble")
            if not (np.array_equal(r.query_ids, first.query_ids) and np.array_equal(r.gallery_ids, first.gallery_ids)):
                raise ValueError(f"ensemble members must share queries and gallery: {r.name!r} differs from {first.name!r}")

        def combine(get) -> np.ndarray:
            return combine_embeddings([[get(r) for r in g] for g in groups], normalize=normalize)

        memory = None
        if all(r.memory is not None for r in members):
            m0 = first.memory
            memory = TrainMemory(combine(lambda r: r.memory.apply_emb), combine(lambda r: r.memory.cite_emb),
                                 m0.cite_gids, m0.labels)
        out = first._with(query_emb=combine(lambda r: r.query_emb), gallery_emb=combine(lambda r: r.gallery_emb),
                          memory=memory, name=name or " + ".join(r.name for r in members), k=k or first.k,
                          metric="ip" if normalize else "l2")
        return out.search()

    def concat(self, *others: Retrieval, name: str = "") -> Retrieval:
        """Backbone concatenation: ``Retrieval.ensemble([[self], [other], ...])``."""
        return Retrieval.ensemble([[self], *[[o] for o in others]], name=name)

    # ------------------------------------------------------------------ post-processing
    def postprocess(self, keep: int = 15, label_cites: bool = True, research: bool = True,
                    min_similarity: float | None = None, name: str | None = None,
                    recipe: str = "2nd-place") -> Retrieval:
        """The 2nd place's post-processing (:mod:`tmr_lib.postprocess`): keep the top 16 - n, add the
        nearest training query's n label cites, one re-search with ``cite - apply + query`` per cite,
        fill to k. ``recipe="kit"``: keep ``keep`` always and one re-search."""
        from .postprocess import postprocess

        self._need_embeddings("postprocess")
        if self.memory is None:
            raise ValueError("postprocess needs the training pairs' embeddings: pass memory= to from_embeddings "
                             "(tmr_lib.predict.embed_competition(..., train=True) makes them)")
        lists = postprocess(self.query_emb, self.search_index(), self.memory, k=self.k, keep=keep,
                            label_cites=label_cites, research=research, min_similarity=min_similarity,
                            recipe=recipe)
        return dataclasses.replace(self, ranked=self._padded(lists),
                                   name=name if name is not None else (self.name + " + post-processing").strip())

    # ------------------------------------------------------------------ results
    def as_dict(self) -> dict[str, list[str]]:
        return dict(zip(self.query_ids.tolist(), self.ranked))

    def _aligned(self, answers: pd.DataFrame) -> list[list[str]]:
        ranked = self.as_dict()
        missing = [g for g in answers["gid"] if g not in ranked]
        if missing:
            raise ValueError(f"{len(missing)} answered queries have no ranked list in {self.name or 'this Retrieval'} "
                             f"(first: {missing[0]})")
        return [ranked[g] for g in answers["gid"]]

    def metrics(self, answers: Any, ks: Sequence[int] = (1, 5, 10, 20)) -> dict[str, Any]:
        """Recall@k, MRR, mAP and per-category Recall@k over the answered queries."""
        from .metrics import retrieval_metrics

        a = as_answers(answers)
        return retrieval_metrics(self._aligned(a), a["cite_gids"].tolist(), a["category"].tolist(),
                                 ks=sorted({*ks, self.k}))

    def hits(self, answers: Any, k: int | None = None) -> np.ndarray:
        """1.0 per answered query with a correct cite in the top ``k``, else 0.0 (answers' order)."""
        from .metrics import query_hits

        a = as_answers(answers)
        return query_hits(self._aligned(a), a["cite_gids"].tolist(), k or self.k)

    def compare(self, other: Retrieval, answers: Any, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
        """``other``'s Recall@k minus this one's, with a 95 % paired bootstrap interval over queries."""
        from .metrics import paired_bootstrap

        a = as_answers(answers)
        out = paired_bootstrap(self.hits(a), other.hits(a), n_resamples=n_resamples, seed=seed)
        return {"baseline": self.name, "candidate": other.name, **out}

    def to_submission(self, path: str | os.PathLike, cite_gids: Iterable[str] | None = None) -> Path:
        """The competition's CSV (checked: every query once, k unique ids, known ids)."""
        from .submission import write_submission

        known = cite_gids if cite_gids is not None else (self.gallery_ids.tolist() if self.gallery_ids is not None
                                                         else None)
        return write_submission(self.as_dict(), path, test_gids=self.query_ids.tolist(), cite_gids=known,
                                n_ids=self.k)

    def plot(self, competition, answers: Any = None, out: str | os.PathLike | None = None, n_queries: int = 5,
             seed: int = 0, gids=None):
        """Queries with their top-k, correct hits framed (:func:`tmr_lib.viz.plot_retrieval`)."""
        from .viz import plot_retrieval

        a = as_answers(answers) if answers is not None else None
        return plot_retrieval(competition, self.as_dict(), a, out, n_queries=n_queries, k=self.k, seed=seed, gids=gids)

    def failures(self, answers: Any, deep: Retrieval | None = None) -> pd.DataFrame:
        """One row per answered query (rank of the first correct cite, found), misses first."""
        from .gallery import failure_table

        return failure_table(self.as_dict(), as_answers(answers), k=self.k,
                             deep=deep.as_dict() if deep is not None else None)

    def plot_failures(self, competition, answers: Any, deep: Retrieval | None = None, **kw):
        from .gallery import plot_failures

        return plot_failures(competition, self.as_dict(), as_answers(answers),
                             deep=deep.as_dict() if deep is not None else None, k=self.k, **kw)

    def __len__(self) -> int:
        return len(self.query_ids)

    def __repr__(self) -> str:
        dims = f", {self.query_emb.shape[1]}-d" if self.query_emb is not None else ""
        gallery = f" x {len(self.gallery_ids)} gallery" if self.gallery_ids is not None else ""
        memory = f", memory of {len(self.memory.apply_emb)} train pairs" if self.memory is not None else ""
        return f"Retrieval({self.name or 'unnamed'}: {len(self)} queries{gallery}{dims}, top {self.k}{memory})"
