"""faiss behind one factory: exact ids equal a brute-force numpy top-k; HNSW/IVF; save/load."""
import numpy as np
import pytest

from tmr_lib.search import SearchIndex, brute_force_topk, build_index, factory_string


def _data(n=2000, d=32, q=40, seed=0):
    rng = np.random.default_rng(seed)
    db = rng.normal(size=(n, d)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    queries = db[rng.choice(n, q, replace=n < q)] + 0.2 * rng.normal(size=(q, d)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return db, queries


def test_flat_equals_brute_force_numpy():
    db, q = _data()
    ids = np.array([f"c{i:05d}" for i in range(len(db))])
    index = build_index(db, ids=ids, kind="flat", use_gpu=False)
    got, scores = index.search(q, k=20)
    rows, ref_scores = brute_force_topk(q, db, 20)
    assert got.shape == (40, 20)
    np.testing.assert_array_equal(got, ids[rows])
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "HNSW16"])
def test_approximate_indexes_find_most_neighbours(kind):
    db, q = _data()
    index = build_index(db, kind=kind, use_gpu=False, nprobe=32 if kind == "ivf" else None)
    got, _ = index.search(q, k=10)
    rows, _ = brute_force_topk(q, db, 10)
    recall = np.mean([len(set(g) & set(map(str, r))) / 10 for g, r in zip(got, rows)])
    assert recall > 0.8


def test_factory_strings():
    assert factory_string("flat", 10) == "Flat"
    assert factory_string("hnsw", 10) == "HNSW32"
    assert factory_string("ivf", 100_000).startswith("IVF") and factory_string("ivf", 100_000).endswith(",Flat")
    assert factory_string("IVF256,PQ16", 10) == "IVF256,PQ16"


def test_save_load_round_trip(tmp_path):
    db, q = _data(n=500)
    index = build_index(db, ids=[f"g{i}" for i in range(500)], kind="hnsw", use_gpu=False)
    index.save(tmp_path / "idx")
    again = SearchIndex.load(tmp_path / "idx", use_gpu=False)
    assert len(again) == 500 and again.kind == "HNSW32"
    np.testing.assert_array_equal(again.search(q, 20)[0], index.search(q, 20)[0])


def test_k_larger_than_database():
    db, q = _data(n=5)
    ids, scores = build_index(db, use_gpu=False).search(q, k=20)
    assert ids.shape == (40, 5)


def test_tuning_knobs():
    """ef_construction / train_size at build time, set_params at search time (the benchmarks tune these)."""
    import faiss

    db, q = _data()
    hnsw = build_index(db, kind="HNSW16", use_gpu=False, ef_construction=80, ef_search=16)
    assert faiss.downcast_index(hnsw.index).hnsw.efConstruction == 80
    assert hnsw.set_params(ef_search=64).ef_search == 64
    assert faiss.downcast_index(hnsw.index).hnsw.efSearch == 64
    ivf = build_index(db, kind="IVF16,Flat", use_gpu=False, train_size=1000, train_iter=5, nprobe=1)
    assert faiss.extract_index_ivf(ivf.index).cp.niter == 5
    low = ivf.search(q, 10)[0]
    full = ivf.set_params(nprobe=16).search(q, 10)[0]  # every list: exact
    rows, _ = brute_force_topk(q, db, 10)
    np.testing.assert_array_equal(full, rows.astype(str))
    assert (low != full).any()
