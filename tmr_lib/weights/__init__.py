"""The kit's own pretrained checkpoints, shipped inside the package (no network needed).

    from tmr_lib.encoder import build_encoder
    model, info = build_encoder("mobilenetv3_large_100", pretrained="tmr-teach")   # the teaching start
    model, info = build_encoder("mobilenetv3_large_100", pretrained="tmr-marks")   # the domain start

Two starts, two jobs:

* ``tmr-teach`` -- the *teaching start* (default of the ci and cpu recipes, the demo and notebooks
  04-07). It stands in for ImageNet: it knows marks' shapes but was never shown the competition's
  four category changes, text beside a mark, part crops, nor any mark a competition query is made
  of; fine-tuning teaches the task. Card: MODEL_CARD_teach.md.
* ``tmr-marks`` -- the *domain start*: pretrained on exactly those changes, the best offline
  zero-shot model; it already knows the answer, so fine-tuning adds little. Card: MODEL_CARD.md.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> backbone -> weights file in this folder (fp16 safetensors of a whole Encoder: backbone, fc, bn)
KIT_WEIGHTS: dict[str, dict[str, str]] = {
    "tmr-marks": {"mobilenetv3_large_100": "tmr-marks-mnv3l.safetensors"},
    "tmr-teach": {"mobilenetv3_large_100": "tmr-teach-mnv3l.safetensors"},
}
NAME = "tmr-marks"  #: the domain start (kept for old imports)
TEACH = "tmr-teach"  #: the teaching start


def kit_weights_path(backbone: str, name: str = NAME) -> Path:
    """The shipped checkpoint `name` for `backbone`, or a FileNotFoundError that says which exist."""
    if name not in KIT_WEIGHTS:
        raise FileNotFoundError(f"the kit ships {', '.join(KIT_WEIGHTS)}, not {name!r}")
    base = backbone.split(".")[0]
    files = KIT_WEIGHTS[name]
    if base not in files:
        raise FileNotFoundError(
            f"the kit ships {name} weights for {', '.join(files)} only, not {backbone!r}; "
            f"use one of those backbones, pretrain your own with `python -m tmr_lib pretrain --backbone "
            f"{base}`, or pass a local weights file")
    path = HERE / files[base]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from this installation; reinstall the kit")
    return path
