"""The 2-D toy of notebook 02: marks, views, pair counts, and training that separates the marks in seconds."""
import numpy as np
import pytest
import torch

from tmr_lib import toy


@pytest.fixture(scope="module")
def marks():
    return toy.toy_marks(toy.TOY_MARKS[:4], size=32)


def test_toy_marks_are_black_on_white_squares(marks):
    assert marks.shape == (4, 3, 32, 32) and marks.dtype == torch.uint8
    assert (marks[:, :, 0, :] > 200).float().mean() > 0.5  # mostly paper along the top edge
    assert all(m.min() < 60 for m in marks)  # every mark has ink
    with pytest.raises(KeyError, match="catalogue"):
        toy.toy_marks(["no-such-mark"])


def test_augment_views_keeps_labels_in_order(marks):
    views, labels = toy.augment_views(marks, torch.arange(4), n_views=3)
    assert views.shape == (12, 3, 32, 32) and views.dtype == torch.uint8
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_count_pairs_in_a_batch_and_against_a_memory():
    y = torch.arange(4).repeat_interleave(4)  # 4 marks x 4 views
    assert toy.count_pairs(y, y) == {"pos": 16 * 3, "neg": 16 * 12}
    memory = torch.arange(10).repeat_interleave(4)
    assert toy.count_pairs(y, memory)["neg"] == 16 * 36
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    close = toy.count_pairs(torch.tensor([0, 1]), torch.tensor([0, 1]), z, z, close=1.5)
    assert close["close_neg"] == 2  # distance sqrt(2) < 1.5, both orders
    assert toy.count_pairs(torch.tensor([0, 1]), torch.tensor([0, 1]), z, z, close=1.0)["close_neg"] == 0


def test_knn_accuracy():
    emb = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.1, 0.99]], np.float32)
    assert toy.knn_accuracy(emb, np.array([0, 0, 1, 1])) == 1.0
    assert toy.knn_accuracy(emb, np.array([0, 1, 0, 1])) == 0.0


def test_contrastive_training_separates_the_marks_and_is_seeded(marks):
    before = torch.get_num_threads()
    run = toy.train_toy(marks, "contrastive", steps=60, views_per_class=4, seed=0)
    assert torch.get_num_threads() == before  # the one-thread setting is undone
    emb, labels = toy.embed_views(run.model, marks, n_views=8, seed=0)
    assert emb.shape == (32, 2) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    untrained = toy.embed_views(toy.ToyNet(2), marks, n_views=8, seed=0)
    assert toy.knn_accuracy(emb, labels) > toy.knn_accuracy(*untrained)
    assert toy.knn_accuracy(emb, labels) >= 0.8
    h = run.history
    assert list(h.columns[:5]) == ["step", "loss", "pos", "neg", "close_neg"] and len(h) == 60
    assert h["loss"].tail(10).mean() < h["loss"].head(10).mean()
    assert (h["neg"] == 16 * 12).all() and run.centres is None
    again = toy.train_toy(marks, "contrastive", steps=60, views_per_class=4, seed=0)
    assert np.allclose(again.history["loss"], h["loss"])  # same seed, same run


def test_cross_batch_memory_raises_the_negatives_per_step(marks):
    small = dict(steps=40, classes_per_batch=2, views_per_class=2, seed=0)
    plain = toy.train_toy(marks, "contrastive", **small)
    xbm = toy.train_toy(marks, "contrastive", xbm_memory=32, xbm_start=10, **small)
    assert (plain.history["neg"] == 4 * 2).all()
    assert not xbm.history["memory"].iloc[:10].any() and xbm.history["memory"].iloc[10:].all()
    assert xbm.history["neg"].iloc[-10:].mean() >= 5 * plain.history["neg"].iloc[-10:].mean()


@pytest.mark.parametrize("loss", ["triplet", "multisimilarity", "arcface"])
def test_every_loss_trains(marks, loss):
    run = toy.train_toy(marks, loss, steps=30, seed=0, loss_kwargs={"margin": 10, "scale": 16} if loss == "arcface" else None)
    assert np.isfinite(run.history["loss"]).all()
    if loss == "arcface":
        assert run.centres.shape == (4, 2)  # one class weight vector per mark
