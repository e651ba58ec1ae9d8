"""Images decoded once and cached; batched embedding; on-disk embedding cache."""
import numpy as np
import torch

from tmr_lib.embed import ImageStore, embed_cached, embed_images, embed_paths, load_images
from tmr_lib.encoder import build_encoder


def _paths(ci_competition, n=12):
    return list(ci_competition.cite["path"][:n])


def test_load_images_decodes_once_then_reads_the_cache(ci_competition, tmp_path):
    paths = _paths(ci_competition)
    imgs = load_images(paths, 32, cache_dir=tmp_path, num_workers=0, progress=False)
    assert imgs.shape == (12, 3, 32, 32) and imgs.dtype == torch.uint8
    cached = list(tmp_path.glob("images-32-*.npy"))
    assert len(cached) == 1
    again = load_images(paths, 32, cache_dir=tmp_path, num_workers=0, progress=False)
    assert torch.equal(again, imgs)
    store = ImageStore(paths, imgs)
    assert torch.equal(store.get(paths[3:5]), imgs[3:5]) and paths[0] in store


def test_embeddings_shape_unit_norm_tta_and_streaming(ci_competition):
    paths = _paths(ci_competition)
    imgs = load_images(paths, 64, num_workers=0, progress=False)
    model, _ = build_encoder("mobilenetv3_small_050", embed_dim=16, image_size=64)
    emb = embed_images(model, imgs, batch_size=5, progress=False)
    assert emb.shape == (12, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    flip = embed_images(model, imgs, batch_size=5, tta_flip=True, progress=False)
    assert flip.shape == emb.shape and not np.allclose(flip, emb)
    streamed = embed_paths(model, paths, 64, batch_size=5, num_workers=0, progress=False)
    np.testing.assert_allclose(streamed, emb, atol=1e-5)
    assert model.training  # the caller's mode is restored


def test_embedding_cache_is_keyed_by_model_and_data(ci_competition, tmp_path):
    imgs = load_images(_paths(ci_competition), 64, num_workers=0, progress=False)
    model, _ = build_encoder("mobilenetv3_small_050", embed_dim=16, image_size=64, seed=0)
    a = embed_cached(model, imgs, "data1", tmp_path, progress=False)
    assert len(list(tmp_path.glob("emb-*"))) == 1
    np.testing.assert_array_equal(embed_cached(model, imgs, "data1", tmp_path, progress=False), a)
    other, _ = build_encoder("mobilenetv3_small_050", embed_dim=16, image_size=64, seed=1)
    embed_cached(other, imgs, "data1", tmp_path, progress=False)
    assert len(list(tmp_path.glob("emb-*"))) == 2
