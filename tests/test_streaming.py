"""The streaming data path (issue 15): decoded images on disk read by rows, resumable decode and
embedding shards, nothing held in RAM but a batch."""
import pickle

import numpy as np
import pytest
import torch

import tmr_lib.embed as embed_mod
import tmr_lib.images as images_mod
from tmr_lib.embed import embed_cached, embed_images, load_images
from tmr_lib.encoder import build_encoder
from tmr_lib.images import ImageFile, ImageStore, decode_to_file


def _paths(comp, n=20):
    return list(comp.cite["path"][:n])


def test_image_file_reads_the_rows_asked_for_in_any_order(ci_competition, tmp_path):
    paths = _paths(ci_competition)
    ram = load_images(paths, 32, num_workers=0, progress=False)
    f = decode_to_file(paths, 32, tmp_path / "images.npy", num_workers=0, progress=False)
    assert isinstance(f, ImageFile) and f.shape == (20, 3, 32, 32) and len(f) == 20
    assert torch.equal(f.to_tensor(), ram)
    rows = [7, 3, 3, 19, 0, -1]
    assert torch.equal(f[rows], ram[rows]) and torch.equal(f[torch.tensor(rows)], ram[rows])
    assert torch.equal(f[2:9], ram[2:9]) and torch.equal(f[5], ram[5])
    v = f.view([4, 5, 6, 11]).view(slice(1, 3))  # views compose without reading
    assert len(v) == 2 and torch.equal(v.to_tensor(), ram[[5, 6]])
    assert torch.equal(pickle.loads(pickle.dumps(v)).to_tensor(), ram[[5, 6]])  # into DataLoader workers
    assert f[[]].shape == (0, 3, 32, 32)
    with pytest.raises(IndexError, match="out of range for 20 images"):
        f[[3, 20]]


def test_store_streams_from_disk_and_images_of_reads_nothing_yet(ci_competition, tmp_path):
    paths = _paths(ci_competition)
    store = ImageStore.load(paths + paths[:3], 32, tmp_path, num_workers=0, progress=False)
    assert store.streamed and len(store) == 20
    lazy = store.images_of([paths[4], paths[4], paths[1]])
    assert isinstance(lazy, ImageFile)
    assert torch.equal(lazy.to_tensor(), store.get([paths[4], paths[4], paths[1]]))
    ram = ImageStore.load(paths, 32, None, num_workers=0, progress=False)
    assert not ram.streamed and torch.equal(ram.get(paths), store.get(paths))


def test_a_killed_decode_resumes_where_its_checkpoint_was(ci_competition, tmp_path, monkeypatch):
    paths = _paths(ci_competition)
    whole = decode_to_file(paths, 32, tmp_path / "whole.npy", num_workers=0, progress=False).to_tensor()
    calls = {"n": 0}
    real = embed_mod.MarkDataset.__getitem__

    def dies_after_12(self, i):
        calls["n"] += 1
        if calls["n"] > 12:
            raise KeyboardInterrupt
        return real(self, i)

    monkeypatch.setattr(images_mod, "CHECKPOINT_S", 0.0)  # checkpoint after every batch
    monkeypatch.setattr(embed_mod.MarkDataset, "__getitem__", dies_after_12)
    with pytest.raises(KeyboardInterrupt):
        decode_to_file(paths, 32, tmp_path / "killed.npy", num_workers=0, batch_size=4, progress=False)
    assert not (tmp_path / "killed.npy").exists() and (tmp_path / "killed.partial.npy").exists()
    monkeypatch.setattr(embed_mod.MarkDataset, "__getitem__", real)
    counted = {"n": 0}

    def counting(self, i):
        counted["n"] += 1
        return real(self, i)

    monkeypatch.setattr(embed_mod.MarkDataset, "__getitem__", counting)
    resumed = decode_to_file(paths, 32, tmp_path / "killed.npy", num_workers=0, batch_size=4, progress=False)
    assert counted["n"] == 20 - 12  # the three finished batches were not decoded again
    assert torch.equal(resumed.to_tensor(), whole)
    assert not list(tmp_path.glob("killed.partial*"))


def test_a_killed_embedding_resumes_from_its_last_shard_with_identical_vectors(ci_competition, tmp_path):
    paths = _paths(ci_competition)
    images = decode_to_file(paths, 64, tmp_path / "img.npy", num_workers=0, progress=False)
    model, _ = build_encoder("mobilenetv3_small_050", embed_dim=16, image_size=64, seed=0)
    kw = dict(batch_size=3, progress=False)
    plain = embed_images(model, images, **kw)
    np.testing.assert_allclose(plain, embed_images(model, images.to_tensor(), **kw), atol=1e-6)

    class Dies(torch.nn.Module):  # a model killed after its 3rd batch
        def __init__(self, inner, after):
            super().__init__()
            self.inner, self.after, self.calls = inner, after, 0

        def forward(self, x):
            self.calls += 1
            if self.calls > self.after:
                raise KeyboardInterrupt
            return self.inner(x)

    dies = Dies(model, after=3)
    with pytest.raises(KeyboardInterrupt):
        embed_cached(dies, images, "d", tmp_path, model_key="m", shard_rows=6, **kw)
    manifest = next(tmp_path.glob("emb-m-d-*/manifest.json"))
    assert '"done": [0]' in manifest.read_text()  # one whole shard (two batches) survived
    again = Dies(model, after=10**6)
    resumed = embed_cached(again, images, "d", tmp_path, model_key="m", shard_rows=6, **kw)
    assert again.calls == 5  # shards of 6 rows in batches of 3: 2 + 2 + 1 batches left after the first shard
    full = embed_cached(model, images, "d", tmp_path / "fresh", model_key="m", shard_rows=6, **kw)
    np.testing.assert_array_equal(resumed, full)
    np.testing.assert_allclose(resumed, plain, atol=1e-6)
    # a different setting (mirror) is another cache, never the stale vectors
    mirrored = embed_cached(model, images, "d", tmp_path, model_key="m", shard_rows=6, mirror=True, **kw)
    assert not np.allclose(mirrored, resumed)


def test_without_a_cache_every_read_decodes_the_files(ci_competition, tmp_path):
    from tmr_lib.config import get_config
    from tmr_lib.images import DecodedFiles, image_store

    paths = _paths(ci_competition)
    cached = ImageStore.load(paths, 32, tmp_path, num_workers=0, progress=False)
    files = ImageStore.load(paths, 32, None, from_files=True)
    assert isinstance(files.images, DecodedFiles) and files.streamed and not list(tmp_path.glob("*.tmp*"))
    assert torch.equal(files.get(paths[::-1]), cached.get(paths[::-1]))
    lazy = files.images_of([paths[2], paths[2]])
    assert isinstance(lazy, DecodedFiles) and torch.equal(lazy.to_tensor(), cached.get([paths[2]] * 2))
    store = image_store(get_config("ci", cache_images=False), ci_competition, progress=False)
    assert isinstance(store.images, DecodedFiles) and len(store) > len(paths)
    model, _ = build_encoder("mobilenetv3_small_050", embed_dim=16, image_size=32, seed=0)
    np.testing.assert_allclose(embed_images(model, files.images_of(paths), batch_size=7, progress=False),
                               embed_images(model, cached.images_of(paths), batch_size=7, progress=False), atol=1e-6)
