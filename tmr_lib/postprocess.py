"""The 2nd place's post-processing of a top-k list, switchable step by step.

For each test query ``q`` (unit vectors throughout):

1. keep the top ``keep`` (15) cites of the plain search;
2. find the nearest **training query** ``a`` (an apply image of train.csv) and add the cites
   of its label -- a test mark that looks like a training query is probably cited with the
   same marks (+0.05-0.07 Recall@20 for the 2nd place);
3. re-search with ``q - a + c`` (``c``: the cite of that nearest training pair): the
   difference ``c - a`` carries "how this kind of query differs from its cite" (+0.002-0.006);
4. fill up from the plain search to ``k`` (20) unique ids.

    from tmr_lib.postprocess import TrainMemory, postprocess
    memory = TrainMemory(train_apply_emb, train_cite_emb, train_df)     # one row per train pair
    ranked = postprocess(test_emb, cite_index, memory, k=20)            # list of 20-id lists
    exact = postprocess(test_emb, cite_index, memory, k=20, recipe="2nd-place")

Two recipes (``recipe=``):

* ``"2nd-place"`` (default; make_submit.py:421-454): keep ``16 - n`` (n = the label's distinct
  cites, so a big label is never cut), the label's cites in group order, one re-search per group
  cite (``cite(g) + q - apply(t)``), whose top hits join by ascending distance; the list is filled
  from the plain search when repeats leave fewer than ``k`` ids (the original could leave it short);
* ``"kit"``: keep ``keep`` (15) always, the label's cites ordered by similarity to the query, one
  re-search from the nearest pair's own cite. Cuts a group of n >= 6 cites to 5: on a constructed
  competition with groups of 6-8 cites it loses 0.10-0.31 Recall@20 (benchmarks/bench_recipes.py),
  and it never measured better, so the kit adopted the 2nd place's rule.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TrainMemory", "postprocess", "plain_topk"]


@dataclass
class TrainMemory:
    """The training pairs the post-processing looks up: their embeddings and their labels.

    ``apply_emb[i]`` / ``cite_emb[i]``: embeddings of row i's apply and cite image;
    ``cite_gids[i]``: its cite gid; ``labels[i]``: its label (connected component).
    """

    apply_emb: np.ndarray
    cite_emb: np.ndarray
    cite_gids: Sequence[str]
    labels: Sequence[int]

    def __post_init__(self) -> None:
        self.apply_emb = np.ascontiguousarray(self.apply_emb, dtype=np.float32)
        self.cite_emb = np.ascontiguousarray(self.cite_emb, dtype=np.float32)
        self.cite_gids = np.asarray(self.cite_gids).astype(str)
        self.labels = np.asarray(self.labels)
        n = len(self.apply_emb)
        if not (len(self.cite_emb) == len(self.cite_gids) == len(self.labels) == n):
            raise ValueError("apply_emb, cite_emb, cite_gids and labels need one row per training pair")
        self._label_cites: dict[int, list[int]] = {}
        for i, lab in enumerate(self.labels.tolist()):
            self._label_cites.setdefault(lab, []).append(i)

    @classmethod
    def from_frame(cls, train_df, apply_emb: np.ndarray, cite_emb: np.ndarray) -> TrainMemory:
        """From train.csv rows (columns cite_gid, label) and their embeddings in row order."""
        return cls(apply_emb, cite_emb, train_df["cite_gid"].astype(str).to_numpy(),
                   train_df["label"].to_numpy())

    def nearest(self, queries: np.ndarray, metric: str = "ip") -> tuple[np.ndarray, np.ndarray]:
        """Row of the nearest training query for each query, and its inner product with it
        (``metric="l2"``: nearest by Euclidean distance, as on un-normalised ensembles)."""
        sims = np.asarray(queries, np.float32) @ self.apply_emb.T
        closeness = sims - 0.5 * (self.apply_emb ** 2).sum(axis=1)[None, :] if metric == "l2" else sims
        rows = closeness.argmax(axis=1)
        return rows, sims[np.arange(len(rows)), rows]

    def label_rows(self, row: int) -> list[int]:
        return self._label_cites[self.labels[row].item()]

    def group_cites(self, row: int) -> list[int]:
        """One row per distinct cite of ``row``'s label, in group order."""
        seen, out = set(), []
        for j in self.label_rows(row):
            if self.cite_gids[j] not in seen:
                seen.add(self.cite_gids[j])
                out.append(j)
        return out


def plain_topk(queries: np.ndarray, index, k: int = 20) -> list[list[str]]:
    ids, _ = index.search(queries, k)
    return [[i for i in row if i] for row in ids]


def _unique(seq, k: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for x in seq:
        if x and x not in seen:
            seen.add(x)
            out.append(x)
            if len(out) == k:
                break
    return out


RECIPES = ("kit", "2nd-place")


def postprocess(queries: np.ndarray, index, memory: TrainMemory | None, k: int = 20, keep: int = 15,
                label_cites: bool = True, research: bool = True, min_similarity: float | None = None,
                known_ids: set[str] | None = None, recipe: str = "2nd-place") -> list[list[str]]:
    """Ranked lists of ``k`` unique ids per query (see the module docstring).

    ``index``: a :class:`tmr_lib.search.SearchIndex` over the cites. ``memory``: the training
    pairs (None switches steps 2 and 3 off). ``min_similarity``: add the nearest training
    query's cites only when it is at least this similar (None: always, as the 2nd place).
    ``known_ids``: ids allowed in the output (default: the index's ids). ``recipe``: see the module
    docstring (``keep`` is ignored by ``"2nd-place"``, which keeps ``16 - n``).
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown post-processing recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    depth = min(index.ntotal, max(2 * k, k + 20))
    base_ids, _ = index.search(q, depth)
    use_memory = memory is not None and len(memory.apply_emb) > 0 and (label_cites or research)
    if not use_memory:
        return [_unique(row, k) for row in base_ids]
    rows, sims = memory.nearest(q, getattr(index, "metric", "ip"))
    allowed = known_ids if known_ids is not None else (set(index.ids.tolist()) if label_cites else None)
    if recipe == "2nd-place":
        return [_second_place(q[i], base_ids[i], int(row), index, memory, k,
                              label_cites and (min_similarity is None or sims[i] >= min_similarity), research, allowed)
                for i, row in enumerate(rows)]
    re_ids = None
    if research:
        shifted = q - memory.apply_emb[rows] + memory.cite_emb[rows]
        shifted /= np.maximum(np.linalg.norm(shifted, axis=1, keepdims=True), 1e-12)
        re_ids, _ = index.search(shifted, k)
    out = []
    for i, row in enumerate(rows):
        parts: list[str] = list(base_ids[i][:keep])
        if label_cites and (min_similarity is None or sims[i] >= min_similarity):
            label = memory.label_rows(int(row))
            # the label's cites, most similar to the query first
            order = sorted(label, key=lambda j: -float(q[i] @ memory.cite_emb[j]))
            parts += [memory.cite_gids[j] for j in order]
        if re_ids is not None:
            parts += list(re_ids[i])
        parts += list(base_ids[i][keep:])
        if allowed is not None:
            parts = [p for p in parts if p in allowed]
        out.append(_unique(parts, k))
    return out


def _second_place(q: np.ndarray, base: np.ndarray, row: int, index, memory: TrainMemory, k: int,
                  label_cites: bool, research: bool, allowed: set[str] | None) -> list[str]:
    """One query, as make_submit.py:421-454 does it (see the module docstring)."""
    group = memory.group_cites(row)
    n = len(group)
    parts: list[str] = list(base[:max(0, 16 - n)])
    if label_cites:
        parts += [memory.cite_gids[j] for j in group]
    if research and n:
        shifted = memory.cite_emb[group] + (q - memory.apply_emb[row])[None, :]
        shifted /= np.maximum(np.linalg.norm(shifted, axis=1, keepdims=True), 1e-12)
        ids, scores = index.search(shifted, 1)  # one re-search per group cite, its top hit
        order = np.argsort(-scores[:, 0] if getattr(index, "metric", "ip") == "ip" else scores[:, 0], kind="stable")
        parts += [ids[i, 0] for i in order]
    parts += list(base[max(0, 16 - n):])  # fill: the original could leave the list short
    if allowed is not None:
        parts = [p for p in parts if p in allowed]
    return _unique(parts, k)
