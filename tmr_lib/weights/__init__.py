"""The kit's own mark-pretrained checkpoints, shipped inside the package (no network needed).

    from tmr_lib.encoder import build_encoder
    model, info = build_encoder("mobilenetv3_large_100", pretrained="tmr-marks")

See MODEL_CARD.md beside this file for the data, recipe, licences and measured figures.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

#: backbone -> weights file in this folder (fp16 safetensors of a whole Encoder: backbone, fc, bn)
KIT_WEIGHTS: dict[str, str] = {
    "mobilenetv3_large_100": "tmr-marks-mnv3l.safetensors",
}
NAME = "tmr-marks"


def kit_weights_path(backbone: str) -> Path:
    """The shipped checkpoint for `backbone`, or a FileNotFoundError that says which exist."""
    base = backbone.split(".")[0]
    if base not in KIT_WEIGHTS:
        raise FileNotFoundError(
            f"the kit ships mark-pretrained weights for {', '.join(KIT_WEIGHTS)} only, not {backbone!r}; "
            f"use one of those backbones, pretrain your own with `python -m tmr_lib pretrain --backbone "
            f"{base}`, or pass a local weights file")
    path = HERE / KIT_WEIGHTS[base]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from this installation; reinstall the kit")
    return path
