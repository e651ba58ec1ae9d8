"""Presets: a small dataclass a notebook can print and tweak; TMR_PRESET picks the default."""
import pytest

from tmr_lib.config import PRESETS, Config, get_config


def test_presets_exist_and_print():
    assert {"ci", "cpu", "gpu"} <= set(PRESETS)
    text = str(get_config("cpu"))
    assert "backbones" in text and "image_size" in text


def test_env_picks_default(monkeypatch):
    monkeypatch.setenv("TMR_PRESET", "ci")
    assert get_config().name == "ci"
    monkeypatch.delenv("TMR_PRESET")
    assert get_config().name == "cpu"


def test_replace_and_unknown_field():
    cfg = get_config("ci", epochs=3)
    assert cfg.epochs == 3 and PRESETS["ci"].epochs == 1  # the preset itself is untouched
    with pytest.raises(TypeError, match="unknown config field"):
        cfg.replace(epoch=3)
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("laptop")
    assert cfg.replace(backbones=["resnet18"]).backbones == ("resnet18",)


def test_a_typed_false_is_false():
    """`--set freeze_bn=False` arrives as the string "False", which Python finds truthy."""
    cfg = get_config("cpu")
    assert cfg.replace(freeze_bn="False").freeze_bn is False and cfg.replace(tta_flip="true").tta_flip is True
    with pytest.raises(ValueError, match="freeze_bn is true or false"):
        cfg.replace(freeze_bn="maybe")


def test_gpu_preset_is_the_second_place_configuration():
    cfg = get_config("gpu")
    assert cfg.backbones[0].startswith("swin_large_patch4_window12_384")
    assert cfg.backbones[1].startswith("convnext_base") and "384" in cfg.backbones[1]
    assert cfg.image_size == 384 and cfg.embed_dim == 512 and cfg.n_folds == 5 and len(cfg.folds) == 5
    assert (cfg.batch_pairs, cfg.accum_steps, cfg.lr, cfg.amp) == (8, 4, 1e-4, True)
    assert cfg.loss == "contrastive" and cfg.xbm_memory == 1024
    conv = cfg.for_backbone(cfg.backbones[1])
    assert conv.backbones == (cfg.backbones[1],) and conv.batch_pairs == 16 and conv.epochs == 10


def test_dict_round_trip():
    cfg = get_config("gpu")
    assert Config.from_dict(cfg.to_dict()) == cfg
