"""The 2nd place's post-processing keeps k unique known ids and is switchable."""
import numpy as np

from tmr_lib.postprocess import TrainMemory, postprocess
from tmr_lib.search import build_index


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    cites = _unit(rng.normal(size=(300, 16)))
    cite_ids = np.array([f"c{i}" for i in range(300)])
    index = build_index(cites, ids=cite_ids, use_gpu=False)
    # training pairs: apply i looks like cite 10*i; labels group pairs 0+1 together
    apply = _unit(cites[[0, 10, 20, 30]] + 0.1 * rng.normal(size=(4, 16)))
    memory = TrainMemory(apply, cites[[0, 10, 20, 30]], ["c0", "c10", "c20", "c30"], [0, 0, 1, 2])
    return rng, cites, index, memory


def test_keeps_k_unique_known_ids():
    rng, cites, index, memory = _setup()
    queries = _unit(rng.normal(size=(25, 16)))
    ranked = postprocess(queries, index, memory, k=20, keep=15)
    known = set(index.ids)
    for row in ranked:
        assert len(row) == 20 and len(set(row)) == 20 and set(row) <= known


def test_adds_the_cites_of_the_nearest_training_querys_label():
    rng, cites, index, memory = _setup()
    query = _unit(memory.apply_emb[:1] + 0.05 * rng.normal(size=(1, 16)))  # looks like train query 0
    ranked = postprocess(query, index, memory, k=20, keep=15, recipe="kit")[0]
    plain = postprocess(query, index, None, k=20)[0]
    assert ranked[:15] == plain[:15]
    assert {"c0", "c10"} <= set(ranked)  # label 0 holds the cites of pairs 0 and 1
    assert len(ranked) == 20


def test_switches():
    rng, cites, index, memory = _setup()
    queries = _unit(rng.normal(size=(5, 16)))
    plain = postprocess(queries, index, None, k=20)
    off = postprocess(queries, index, memory, k=20, label_cites=False, research=False)
    assert off == plain
    ids, _ = index.search(queries, 20)
    assert plain == [list(r) for r in ids]
    strict = postprocess(queries, index, memory, k=20, min_similarity=0.999, research=False)
    assert strict == plain  # no training query that close: nothing added
