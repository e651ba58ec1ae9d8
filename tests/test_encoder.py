"""Encoder: timm backbone -> pooling -> FC -> BN -> L2; ensembles; starting weights."""
import pytest
import torch

from tmr_lib.encoder import (
    EnsembleEncoder,
    WeightsUnavailableError,
    build_encoder,
    load_encoder,
    load_ensemble,
    load_pretrained,
    register_weights,
    save_encoder,
    save_ensemble,
)

BACKBONE = "mobilenetv3_small_050"  # the ci preset's


def _images(n=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


@pytest.mark.parametrize("pooling", ["avg", "gem"])
def test_embeddings_shape_and_unit_norm(pooling):
    model, info = build_encoder(BACKBONE, "random", embed_dim=32, pooling=pooling, image_size=64)
    assert "random initialisation" in str(info)
    z = model.eval()(_images())
    assert z.shape == (3, 32)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))


def test_ensemble_averages_folds_and_concatenates_backbones():
    a, _ = build_encoder(BACKBONE, embed_dim=16, image_size=64, seed=0)
    b, _ = build_encoder(BACKBONE, embed_dim=16, image_size=64, seed=1)
    c, _ = build_encoder(BACKBONE, embed_dim=8, image_size=64, seed=2)
    ens = EnsembleEncoder([[a, b], [c]]).eval()
    x = _images()
    z = ens(x)
    assert z.shape == (3, 24) and ens.embed_dim == 24
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    first = torch.nn.functional.normalize((a.eval()(x) + b.eval()(x)) / 2, dim=1)
    torch.testing.assert_close(z[:, :16] * (2 ** 0.5), first, atol=1e-5, rtol=1e-4)


def test_save_and_load_encoder_and_ensemble(tmp_path):
    model, _ = build_encoder(BACKBONE, embed_dim=16, image_size=64)
    model.eval()
    f = save_encoder(model, tmp_path / "m" / "best.safetensors", meta={"epoch": 1})
    again = load_encoder(f)
    x = _images()
    torch.testing.assert_close(again(x), model(x))
    save_ensemble([[f]], tmp_path)
    torch.testing.assert_close(load_ensemble(tmp_path)(x), model(x))


def test_pretrained_from_local_safetensors_backbone_file(tmp_path):
    from safetensors.torch import save_file

    donor, _ = build_encoder(BACKBONE, embed_dim=16, image_size=64, seed=123)
    sd = {k: v.contiguous() for k, v in donor.backbone.state_dict().items()}
    save_file(sd, str(tmp_path / f"{BACKBONE}.safetensors"))
    for spec in (tmp_path / f"{BACKBONE}.safetensors", tmp_path):  # a file, or a folder holding it
        model, info = build_encoder(BACKBONE, spec, embed_dim=16, image_size=64, seed=0)
        assert str(tmp_path) in str(info) and "backbone tensors" in str(info)
        for k, v in donor.backbone.state_dict().items():
            torch.testing.assert_close(model.backbone.state_dict()[k], v)


def test_pretrained_from_a_whole_encoder_pth(tmp_path):
    donor, _ = build_encoder(BACKBONE, embed_dim=16, image_size=64, seed=7)
    torch.save({"state_dict": donor.state_dict()}, tmp_path / "enc.pth")
    model, info = build_encoder(BACKBONE, tmp_path / "enc.pth", embed_dim=16, image_size=64, seed=0)
    assert "encoder tensors" in str(info)
    torch.testing.assert_close(model.fc.weight, donor.fc.weight)


def test_missing_weights_error_names_the_fixes(tmp_path):
    with pytest.raises(WeightsUnavailableError) as e:
        build_encoder(BACKBONE, tmp_path / "nope.safetensors", embed_dim=16, image_size=64)
    text = str(e.value)
    assert "nope.safetensors" in text and BACKBONE in text
    assert "Fixes" in text and "--pretrained PATH" in text and "--pretrained random" in text
    assert "imagenet" in text and "HF_HUB_OFFLINE" in text


def test_weights_for_another_backbone_are_refused(tmp_path):
    from safetensors.torch import save_file

    other, _ = build_encoder("resnet18", embed_dim=16, image_size=64)
    save_file({k: v.contiguous() for k, v in other.backbone.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        build_encoder(BACKBONE, tmp_path / "r18.safetensors", embed_dim=16, image_size=64)


def test_registered_weights_plug_in(tmp_path):
    from safetensors.torch import save_file

    donor, _ = build_encoder(BACKBONE, embed_dim=16, image_size=64, seed=5)
    path = tmp_path / "kit.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    register_weights("test-kit-weights", lambda backbone: path)
    model, info = build_encoder(BACKBONE, "test-kit-weights", embed_dim=16, image_size=64)
    assert "test-kit-weights" in str(info)
    torch.testing.assert_close(model.bn.running_var, donor.bn.running_var)
    fresh, _ = build_encoder(BACKBONE, embed_dim=16, image_size=64)
    with pytest.raises(WeightsUnavailableError, match="test-kit-weights"):
        load_pretrained(fresh, tmp_path / "missing")  # the error lists registered names


@pytest.mark.slow
def test_gpu_preset_forward_backward_at_384_on_cpu():
    """The 2nd-place configuration must not rot: both backbones, 384 px, a tiny batch, no weights."""
    from tmr_lib.config import get_config
    from tmr_lib.losses import make_loss

    cfg = get_config("gpu")
    x = _images(n=2, size=cfg.image_size)
    labels = torch.tensor([0, 0])
    parts = []
    for backbone in cfg.backbones:
        model, info = build_encoder(backbone, "random", cfg.embed_dim, cfg.pooling, cfg.image_size)
        assert "random" in str(info)
        z = model.train()(x)
        assert z.shape == (2, cfg.embed_dim)
        loss = make_loss(cfg.loss, cfg.embed_dim, xbm_memory=cfg.xbm_memory)(z, labels)
        loss.backward()
        assert model.fc.weight.grad is not None and torch.isfinite(model.fc.weight.grad).all()
        parts.append(z.detach())
        del model
    assert torch.cat(parts, dim=1).shape == (2, 1024)


def test_combine_embeddings_is_the_ensemble_arithmetic():
    import numpy as np

    from tmr_lib.encoder import Encoder, EnsembleEncoder, combine_embeddings

    torch.manual_seed(0)
    a1, a2, b = (Encoder("mobilenetv3_small_100", embed_dim=8, image_size=32).eval() for _ in range(3))
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = EnsembleEncoder([[a1, a2], [b]])(x).numpy()
        got = combine_embeddings([[a1(x).numpy(), a2(x).numpy()], [b(x).numpy()]])
    assert got.shape == (4, 16) and np.allclose(got, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        combine_embeddings([[a1(x).detach().numpy()], []])
