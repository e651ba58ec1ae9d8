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

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of the nearest training query for each query, and its cosine similarity."""
        sims = np.asarray(queries, np.float32) @ self.apply_emb.T
        rows = sims.argmax(axis=1)
        return rows, sims[np.arange(len(rows)), rows]

    def label_rows(self, row: int) -> list[int]:
        return self._label_cites[self.labels[row].item()]


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


def postprocess(queries: np.ndarray, index, memory: TrainMemory | None, k: int = 20, keep: int = 15,
                label_cites: bool = True, research: bool = True, min_similarity: float | None = None,
                known_ids: set[str] | None = None) -> list[list[str]]:
    """Ranked lists of ``k`` unique ids per query (see the module docstring).

    ``index``: a :class:`tmr_lib.search.SearchIndex` over the cites. ``memory``: the training
    pairs (None switches steps 2 and 3 off). ``min_similarity``: add the nearest training
    query's cites only when it is at least this similar (None: always, as the 2nd place).
    ``known_ids``: ids allowed in the output (default: the index's ids).
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    depth = min(index.ntotal, max(2 * k, k + 20))
    base_ids, _ = index.search(q, depth)
    use_memory = memory is not None and len(memory.apply_emb) > 0 and (label_cites or research)
    if not use_memory:
        return [_unique(row, k) for row in base_ids]
    rows, sims = memory.nearest(q)
    re_ids = None
    if research:
        shifted = q - memory.apply_emb[rows] + memory.cite_emb[rows]
        shifted /= np.maximum(np.linalg.norm(shifted, axis=1, keepdims=True), 1e-12)
        re_ids, _ = index.search(shifted, k)
    allowed = known_ids if known_ids is not None else (set(index.ids.tolist()) if label_cites else None)
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
