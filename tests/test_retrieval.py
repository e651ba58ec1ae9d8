"""tmr_lib.retrieval.Retrieval: search, ensemble, post-processing, padding, metrics, paired comparison,
submission -- built from embeddings alone, as the notebooks, the CLI and the demo use it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tmr_lib.metrics import paired_bootstrap, query_hits
from tmr_lib.postprocess import TrainMemory
from tmr_lib.retrieval import Retrieval


def unit(v):
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def toy():
    """30 queries, each a noisy copy of gallery row i, in a 200-row gallery."""
    rng = np.random.default_rng(0)
    g = unit(rng.normal(size=(200, 16)))
    q = unit(g[:30] + 0.3 * rng.normal(size=(30, 16)))
    qids = [f"q{i}" for i in range(30)]
    gids = [f"c{j}" for j in range(200)]
    answers = pd.DataFrame({"gid": qids, "cite_gids": [[f"c{i}"] for i in range(30)], "category": [2, 3] * 15})
    return q, g, qids, gids, answers


def test_from_embeddings_searches_exactly_and_scores(toy):
    q, g, qids, gids, answers = toy
    r = Retrieval.from_embeddings(qids, q, gids, g, k=20, name="toy")
    assert len(r) == 30 and all(len(v) == 20 == len(set(v)) for v in r.ranked)
    best = np.argsort(-(q @ g.T), axis=1)[:, :20]
    assert r.ranked == [[gids[j] for j in row] for row in best]  # the exact ranking
    m = r.metrics(answers)
    assert m["recall"][20] == pytest.approx(np.mean([f"c{i}" in r.ranked[i] for i in range(30)]))
    assert set(m["per_category"]) == {2, 3}
    assert np.array_equal(r.hits(answers), query_hits(r.ranked, answers["cite_gids"].tolist(), 20))


def test_mismatched_inputs_and_missing_queries_get_clear_errors(toy):
    q, g, qids, gids, answers = toy
    with pytest.raises(ValueError, match="29 query ids for 30"):
        Retrieval.from_embeddings(qids[:29], q, gids, g)
    with pytest.raises(ValueError, match="16-d"):
        Retrieval.from_embeddings(qids, q[:, :8], gids, g)
    r = Retrieval.from_embeddings(qids[:10], q[:10], gids, g)
    with pytest.raises(ValueError, match="20 answered queries have no ranked list"):
        r.metrics(answers)
    with pytest.raises(ValueError, match="needs embeddings"):
        Retrieval.from_ranked(r.as_dict()).postprocess()
    with pytest.raises(ValueError, match="memory"):
        r.postprocess()


def test_approximate_and_tiny_galleries_are_padded_to_k_unique_ids(toy):
    q, g, qids, gids, _ = toy
    small = Retrieval.from_embeddings(qids, q, gids[:12], g[:12], k=20)
    assert all(len(v) == 12 == len(set(v)) for v in small.ranked)  # fewer cites than k: all of them
    ivf = Retrieval.from_embeddings(qids, q, gids, g, k=20, index="IVF8,Flat").search()
    assert all(len(v) == 20 == len(set(v)) and set(v) <= set(gids) for v in ivf.ranked)


def test_ensemble_averages_folds_and_concatenates_backbones(toy):
    q, g, qids, gids, answers = toy
    rng = np.random.default_rng(1)
    noise = [unit(rng.normal(size=q.shape)) * 0.1 for _ in range(3)]
    a0 = Retrieval.from_embeddings(qids, unit(q + noise[0]), gids, g, name="a0")
    a1 = Retrieval.from_embeddings(qids, unit(q + noise[1]), gids, g, name="a1")
    b = Retrieval.from_embeddings(qids, unit(q + noise[2]), gids, g, name="b")
    both = Retrieval.ensemble([[a0, a1], [b]])
    fold = unit((a0.query_emb + a1.query_emb) / 2)
    assert np.allclose(both.query_emb, unit(np.concatenate([fold, b.query_emb], axis=1)), atol=1e-6)
    assert both.query_emb.shape == (30, 32) and both.name == "a0 + a1 + b"
    assert a0.concat(b).query_emb.shape == (30, 32)
    other = Retrieval.from_embeddings(qids, q, gids[::-1], g[::-1])
    with pytest.raises(ValueError, match="share queries and gallery"):
        Retrieval.ensemble([[a0, other]])


def test_postprocess_adds_the_nearest_train_querys_label_cites(toy):
    q, g, qids, gids, _ = toy
    # one train pair whose apply image equals test query 0, cited with c150 and c151 (one label)
    memory = TrainMemory(np.stack([q[0], q[0]]), np.stack([g[150], g[151]]), ["c150", "c151"], [7, 7])
    r = Retrieval.from_embeddings(qids, q, gids, g, memory=memory)
    post = r.postprocess()  # the default: the 2nd place's rule, keep 16 - n = 14, then the group
    assert post.ranked[0][14:16] == ["c150", "c151"] and post.ranked[0][:14] == r.ranked[0][:14]
    kit = r.postprocess(keep=15, recipe="kit")
    assert {"c150", "c151"} <= set(kit.ranked[0][15:]) and kit.ranked[0][:15] == r.ranked[0][:15]
    assert all(len(v) == 20 == len(set(v)) for v in post.ranked)
    assert post.name.endswith("post-processing") and r.ranked[0] != post.ranked[0]


def test_compare_is_a_paired_bootstrap_of_the_difference(toy):
    q, g, qids, gids, answers = toy
    good = Retrieval.from_embeddings(qids, q, gids, g, name="good")
    bad = Retrieval.from_embeddings(qids, unit(np.random.default_rng(3).normal(size=q.shape)), gids, g, name="bad")
    c = bad.compare(good, answers)
    assert c["baseline"] == "bad" and c["candidate"] == "good"
    assert c["diff"] == pytest.approx(good.hits(answers).mean() - bad.hits(answers).mean())
    assert c["low"] <= c["diff"] <= c["high"] and c["beyond_noise"] and c["low"] > 0
    same = good.compare(good, answers)
    assert same["diff"] == same["low"] == same["high"] == 0 and not same["beyond_noise"]
    assert c == bad.compare(good, answers)  # seeded


def test_paired_bootstrap_interval_covers_and_narrows():
    rng = np.random.default_rng(0)
    a = (rng.random(2000) < 0.5).astype(float)
    b = np.where(rng.random(2000) < 0.05, 1 - a, a)  # b differs from a on 5 % of queries
    paired = paired_bootstrap(a, b)
    alone = paired_bootstrap(b)
    assert paired["high"] - paired["low"] < (alone["high"] - alone["low"]) / 2
    assert alone["low"] < b.mean() < alone["high"]
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap(a, b[:10])
    with pytest.raises(ValueError, match="1,000"):
        paired_bootstrap(a, b, n_resamples=100)


def test_from_ranked_and_to_submission_round_trip(toy, tmp_path):
    q, g, qids, gids, answers = toy
    r = Retrieval.from_embeddings(qids, q, gids, g, name="toy")
    csv = r.to_submission(tmp_path / "sub.csv")
    back = Retrieval.from_ranked(csv)
    assert back.as_dict() == r.as_dict() and back.name == "sub.csv"
    assert back.metrics(answers) == r.metrics(answers)
    sub = r.with_gallery(gids[:100])
    assert all(set(v) <= set(gids[:100]) for v in sub.ranked)


def test_euclidean_equals_inner_product_on_unit_vectors_and_differs_on_an_unnormalised_ensemble():
    rng = np.random.default_rng(5)
    g, q = unit(rng.normal(size=(50, 8))), unit(rng.normal(size=(10, 8)))
    ids = [f"c{j}" for j in range(50)]
    ip = Retrieval.from_embeddings(range(10), q, ids, g)
    l2 = Retrieval.from_embeddings(range(10), q, ids, g, metric="l2")
    assert ip.ranked == l2.ranked  # unit vectors: the same ranking
    # a constructed case: a long gallery vector pointing the query's way wins by inner product only
    gq = np.array([[1.0, 0.0], [3.0, 3.0]], np.float32)
    query = np.array([[1.0, 0.2]], np.float32)
    assert Retrieval.from_embeddings(["q"], query, ["near", "long"], gq, k=1).ranked == [["long"]]
    assert Retrieval.from_embeddings(["q"], query, ["near", "long"], gq, k=1, metric="l2").ranked == [["near"]]


def test_the_second_places_ensemble_is_not_renormalised_and_searches_euclidean(toy):
    q, g, qids, gids, _ = toy
    rng = np.random.default_rng(2)
    members = [Retrieval.from_embeddings(qids, unit(q + 0.3 * rng.normal(size=q.shape)), gids,
                                         unit(g + 0.1 * rng.normal(size=g.shape)), name=f"m{i}") for i in range(2)]
    exact = Retrieval.ensemble([members], normalize=False)
    assert exact.metric == "l2" and np.allclose(exact.query_emb, (members[0].query_emb + members[1].query_emb) / 2)
    assert not np.allclose(np.linalg.norm(exact.query_emb, axis=1), 1.0)  # plain means: shorter than 1
    kit = Retrieval.ensemble([members])
    assert kit.metric == "ip" and np.allclose(np.linalg.norm(kit.query_emb, axis=1), 1.0)


def test_second_place_postprocessing_keeps_16_minus_n_and_researches_once_per_group_cite(toy):
    q, g, qids, gids, _ = toy
    group = [f"c{j}" for j in range(150, 156)]  # a train label with 6 cites, its query = test query 0
    memory = TrainMemory(np.stack([q[0]] * 6), g[150:156], group, [3] * 6)
    r = Retrieval.from_embeddings(qids, q, gids, g, memory=memory)
    index = r.search_index()
    searched = []
    real = index.search

    def counting(x, k=20):
        searched.append(len(x))
        return real(x, k)

    index.search = counting
    exact = r.postprocess(recipe="2nd-place").ranked[0]
    assert exact[:10] == r.ranked[0][:10] and exact[10:16] == group  # 16 - 6 kept, then the whole group
    # the plain search of all queries, then per query (each one's nearest train query is this pair)
    # one re-search per group cite: 6 vectors
    assert searched == [len(qids)] + [6] * len(qids)
    kit = r.postprocess(keep=15, recipe="kit").ranked[0]
    assert kit[:15] == r.ranked[0][:15] and len(set(kit[15:]) & set(group)) == 5  # 15 kept: the group cut to 5
    with pytest.raises(ValueError, match="recipe"):
        r.postprocess(recipe="3rd-place")
