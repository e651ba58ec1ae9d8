"""The encoder: a timm backbone -> pooling -> FC 512 -> BatchNorm -> L2-normalise (2nd place).

    from tmr_lib.encoder import build_encoder
    model, weights = build_encoder("mobilenetv3_small_100", pretrained="random")
    print(weights)                   # says which starting weights were used, always
    emb = model(images)              # (B, 512), unit norm

Several backbones concatenate and fold models average: :class:`EnsembleEncoder` holds one
list of fold models per backbone, averages each list, and concatenates (2 x 512 -> 1024).

Starting weights (``pretrained=``), resolved by :func:`load_pretrained`:

* ``"random"`` -- random initialisation (weak on a CPU; say so);
* ``"imagenet"`` -- the timm hub (only where the Hugging Face hub is reachable);
* a path -- a local ``.safetensors`` / ``.pth`` / ``.bin`` file, or a folder holding one
  (offline company machines); a bare timm backbone state dict or a whole encoder's;
* a registered name -- :func:`register_weights` plugs in more sources, e.g. the kit's own
  mark-pretrained checkpoint.

When asked-for weights cannot be loaded, :class:`WeightsUnavailableError` names the fixes.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GeM",
    "Encoder",
    "EnsembleEncoder",
    "combine_embeddings",
    "WeightsUnavailableError",
    "WeightsInfo",
    "build_encoder",
    "load_pretrained",
    "register_weights",
    "registered_weights",
    "read_state_dict",
    "save_encoder",
    "load_encoder",
    "save_ensemble",
    "load_ensemble",
    "state_fingerprint",
]

RANDOM_NAMES = {"random", "none", "scratch", ""}
HUB_NAMES = {"imagenet", "timm", "hub"}
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


class WeightsUnavailableError(RuntimeError):
    """Asked-for starting weights could not be loaded; the message lists the fixes."""


@dataclass
class WeightsInfo:
    """Which starting weights a model got (printed by every run)."""

    source: str  #: "random", "imagenet", a path, or a registered name
    detail: str  #: human-readable: what was loaded, how many tensors matched

    def __str__(self) -> str:
        return self.detail


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------
class GeM(nn.Module):
    """Generalised-mean pooling over an NCHW feature map (p=3, fixed: trainable p did not help)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


def create_backbone(name: str, image_size: int | None = None, pretrained: bool = False) -> nn.Module:
    """A timm model without classifier; ``img_size`` is passed only to models that take it."""
    import timm

    from timm.models import get_pretrained_cfg

    kwargs: dict[str, Any] = {"pretrained": pretrained, "num_classes": 0}
    if image_size is not None:
        cfg = get_pretrained_cfg(name)
        cfg_size = cfg.input_size if cfg is not None else None
        if cfg_size is not None and cfg_size[-1] != image_size:
            try:  # transformers (Swin, ViT) are built for one size
                return timm.create_model(name, img_size=image_size, **kwargs)
            except TypeError:
                pass  # convolutional networks take any size
    return timm.create_model(name, **kwargs)


class Encoder(nn.Module):
    """One backbone -> pooling -> FC(embed_dim) -> BatchNorm1d -> L2-normalise.

    ``bn`` and ``bias`` are the head switches the 2nd place set per backbone (BatchNorm after
    the FC on Swin only; an FC without bias, xavier-normal initialised, on both). The kit's
    default keeps both: its checkpoints were trained that way.
    """

    def __init__(self, backbone: str, embed_dim: int = 512, pooling: str = "avg",
                 image_size: int | None = None, bn: bool = True, bias: bool = True):
        super().__init__()
        self.backbone_name = backbone
        self.embed_dim = embed_dim
        self.pooling = pooling
        self.image_size = image_size
        self.head_bn, self.head_bias = bool(bn), bool(bias)
        self.backbone = create_backbone(backbone, image_size)
        if pooling == "avg":
            self.pool = None
            in_dim = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        elif pooling == "gem":
            self.pool = GeM()
            in_dim = self.backbone.num_features
        else:
            raise ValueError(f"pooling must be 'avg' or 'gem', not {pooling!r}")
        self.fc = nn.Linear(in_dim, embed_dim, bias=self.head_bias)
        if not self.head_bias:  # the 2nd place's FC: no bias, xavier-normal weights
            nn.init.xavier_normal_(self.fc.weight)
        self.bn = nn.BatchNorm1d(embed_dim) if self.head_bn else nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (before the FC)."""
        if self.pool is None:
            return self.backbone(x)  # timm's own pooling (+ head conv for MobileNetV3)
        fmap = self.backbone.forward_features(x)
        if getattr(self.backbone, "output_fmt", "NCHW") == "NHWC" or (
            fmap.ndim == 4 and fmap.shape[-1] == self.backbone.num_features and fmap.shape[1] != fmap.shape[-1]
        ):
            fmap = fmap.permute(0, 3, 1, 2)
        if fmap.ndim == 3:  # (B, tokens, C) transformers: mean over tokens
            return fmap.mean(dim=1)
        return self.pool(fmap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bn(self.fc(self.features(x)))
        return F.normalize(z.float(), dim=1)

    def describe(self) -> dict[str, Any]:
        return {"backbone": self.backbone_name, "embed_dim": self.embed_dim,
                "pooling": self.pooling, "image_size": self.image_size,
                "bn": self.head_bn, "bias": self.head_bias}


class EnsembleEncoder(nn.Module):
    """Fold models averaged per backbone, then backbones concatenated; output unit norm.

    ``members[b]`` is the list of fold models of backbone ``b``. Each backbone's averaged
    embedding is re-normalised before the concatenation, so every backbone weighs the same.
    ``normalize=False``: the 2nd place's arithmetic, plain means and a plain concatenation
    (search those with Euclidean distance, ``Config.search_metric="l2"``).
    """

    def __init__(self, members: Sequence[Sequence[Encoder]], normalize: bool = True):
        super().__init__()
        if not members or any(len(m) == 0 for m in members):
            raise ValueError("an ensemble needs at least one model per backbone")
        self.members = nn.ModuleList(nn.ModuleList(list(m)) for m in members)
        self.normalize = normalize

    @property
    def embed_dim(self) -> int:
        return sum(group[0].embed_dim for group in self.members)

    @property
    def image_size(self) -> int | None:
        return self.members[0][0].image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for group in self.members:
            mean = torch.stack([m(x) for m in group]).mean(dim=0)
            parts.append(F.normalize(mean, dim=1) if self.normalize else mean)
        out = torch.cat(parts, dim=1)
        return F.normalize(out, dim=1) if self.normalize else out


def combine_embeddings(groups: Sequence[Sequence[np.ndarray]], normalize: bool = True) -> np.ndarray:
    """:class:`EnsembleEncoder`'s arithmetic on embeddings already computed: ``groups[b]`` holds the
    (N, D) embeddings of backbone ``b``'s fold models; each group is averaged and re-normalised,
    then the groups are concatenated and normalised. Lets an ablation embed with each model once.
    ``normalize=False``: the 2nd place's arithmetic (make_submit.py:404, 413), plain means and a
    plain concatenation, searched with Euclidean distance."""
    def unit(v: np.ndarray) -> np.ndarray:
        if not normalize:
            return v
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("combine_embeddings needs at least one embedding array per group")
    parts = [unit(np.mean(np.stack([np.asarray(e, np.float32) for e in g]), axis=0)) for g in groups]
    return unit(np.concatenate(parts, axis=1)).astype(np.float32)


# ----------------------------------------------------------------------------------------
# Starting weights
# ----------------------------------------------------------------------------------------
#: name -> function(backbone_name) returning a path (or a state dict). Filled by register_weights.
_REGISTRY: dict[str, Callable[[str], Any]] = {}


def register_weights(name: str, resolver: Callable[[str], Any]) -> None:
    """Make ``pretrained=name`` load what ``resolver(backbone_name)`` returns (path or state dict).

    The resolver raises :class:`WeightsUnavailableError` (or FileNotFoundError) when it has
    nothing for that backbone. This is how the kit's own mark-pretrained checkpoint plugs in.
    """
    _REGISTRY[name.lower()] = resolver


def registered_weights() -> list[str]:
    return sorted(_REGISTRY)


def _fixes(backbone: str) -> str:
    """The ways out, as numbered lines (shown by every weights error)."""
    save = (f"python -c \"import timm, safetensors.torch as st; "
            f"m = timm.create_model('{backbone}', pretrained=True, num_classes=0); "
            f"st.save_file(m.state_dict(), '{backbone.split('.')[0]}.safetensors')\"")
    lines = [
        "  1. Use a local weights file or folder: --pretrained PATH (a .safetensors or .pth state dict"
        " of the timm backbone, or of a kit encoder). On a machine with internet, make one with:\n"
        f"       {save}",
        "  2. Make the Hugging Face hub reachable (network or HTTPS_PROXY), or copy a filled hub"
        " cache (HF_HOME) to this machine and set HF_HUB_OFFLINE=1; then --pretrained imagenet.",
    ]
    for name in registered_weights():
        lines.append(f"  {len(lines) + 1}. Use the kit's registered weights: --pretrained {name}")
    lines.append(f"  {len(lines) + 1}. Start from random weights: --pretrained random"
                 " (works anywhere, but is far weaker on a CPU budget).")
    return "\n".join(lines)


def _unavailable(spec: str, backbone: str, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"Could not load the starting weights {spec!r} for backbone {backbone!r}: {reason}\n"
        f"Fixes:\n{_fixes(backbone)}"
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors or torch file (unwrapping {'state_dict': ...} and 'module.')."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state", "encoder"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _find_weights_file(folder: Path, backbone: str) -> Path:
    """The weights file inside a folder: <backbone>.safetensors, model.safetensors, ... or the only one."""
    stem = backbone.split(".")[0]
    names = [f"{backbone}.safetensors", f"{stem}.safetensors", "model.safetensors", "encoder.safetensors",
             f"{backbone}.pth", f"{stem}.pth", "pytorch_model.bin", "model.pth"]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"no weights file ({', '.join(WEIGHT_SUFFIXES)}) in folder {folder}")
    raise FileNotFoundError(
        f"folder {folder} holds several weights files ({', '.join(p.name for p in found[:6])}); "
        f"name one, or call it {stem}.safetensors")


def _apply_state_dict(model: Encoder, sd: dict[str, torch.Tensor], origin: str) -> str:
    """Load matching tensors; return what happened. Raises ValueError when almost nothing matches."""
    if any(k.startswith("backbone.") for k in sd):  # a whole kit encoder
        target: nn.Module = model
        what = "encoder"
    else:  # a bare timm backbone (classifier keys are ignored)
        target = model.backbone
        what = "backbone"
    own = target.state_dict()
    usable = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    mismatched = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    backbone_keys = [k for k in own if not k.startswith(("fc.", "bn.")) or what == "backbone"]
    loaded_backbone = [k for k in usable if k in backbone_keys]
    if len(loaded_backbone) < 0.5 * len(backbone_keys):
        example = ", ".join(list(sd)[:3])
        raise ValueError(
            f"{origin} does not fit {model.backbone_name}: only {len(loaded_backbone)} of "
            f"{len(backbone_keys)} {what} tensors match (file keys start {example}; "
            f"{len(mismatched)} have other shapes). Is it for another backbone?")
    target.load_state_dict(usable, strict=False)
    missing = len(own) - len(usable)
    note = f", {missing} left at random init" if missing else ""
    return f"{len(usable)}/{len(own)} {what} tensors from {origin}{note}"


def load_pretrained(model: Encoder, spec: str | os.PathLike | None) -> WeightsInfo:
    """Give ``model`` its starting weights; return a :class:`WeightsInfo` saying which.

    ``spec``: "random", "imagenet", a path, or a name from :func:`registered_weights`.
    """
    name = model.backbone_name
    spec_s = "random" if spec is None else str(spec)
    key = spec_s.strip().lower()
    if key in RANDOM_NAMES:
        return WeightsInfo("random", f"{name}: random initialisation (no pretrained weights)")
    if key in HUB_NAMES:
        try:
            hub_model = create_backbone(name, model.image_size, pretrained=True)
        except Exception as e:  # network, hub, missing tag: all end here
            raise _unavailable(spec_s, name, f"the timm hub download failed ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:200] if str(e) else ''}).") from e
        detail = _apply_state_dict(model, hub_model.state_dict(), f"the timm hub ({name})")
        return WeightsInfo("imagenet", f"{name}: ImageNet weights, {detail}")
    if key in _REGISTRY:
        try:
            got = _REGISTRY[key](name)
        except (FileNotFoundError, WeightsUnavailableError, KeyError) as e:
            raise _unavailable(spec_s, name, str(e)) from e
        if isinstance(got, dict):
            detail = _apply_state_dict(model, got, f"registered weights {spec_s!r}")
        else:
            detail = _apply_state_dict(model, read_state_dict(got), f"registered weights {spec_s!r} ({got})")
        return WeightsInfo(spec_s, f"{name}: {detail}")
    path = Path(spec_s).expanduser()
    if not path.exists():
        known = ", ".join(["random", "imagenet", *registered_weights()])
        raise _unavailable(spec_s, name, f"no such file or folder, and not a known name ({known}).")
    try:
        file = _find_weights_file(path, name) if path.is_dir() else path
        sd = read_state_dict(file)
        detail = _apply_state_dict(model, sd, str(file))
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        raise _unavailable(spec_s, name, str(e)) from e
    return WeightsInfo(str(file), f"{name}: {detail}")


def build_encoder(backbone: str, pretrained: str | os.PathLike | None = "random", embed_dim: int = 512,
                  pooling: str = "avg", image_size: int | None = None, seed: int | None = 0,
                  head_bn: bool = True, head_bias: bool = True) -> tuple[Encoder, WeightsInfo]:
    """An :class:`Encoder` with its starting weights, and the :class:`WeightsInfo` to print."""
    if seed is not None:
        torch.manual_seed(seed)
    model = Encoder(backbone, embed_dim=embed_dim, pooling=pooling, image_size=image_size, bn=head_bn,
                    bias=head_bias)
    info = load_pretrained(model, pretrained)
    return model, info


def encoder_from_config(cfg: Any, backbone: str | None = None) -> tuple[Encoder, WeightsInfo]:
    """:func:`build_encoder` with a :class:`tmr_lib.config.Config`'s fields."""
    b = backbone or cfg.backbones[0]
    c = cfg.for_backbone(b)
    return build_encoder(b, c.pretrained, c.embed_dim, c.pooling, c.image_size, c.seed,
                         head_bn=c.head_bn, head_bias=c.head_bias)


# ----------------------------------------------------------------------------------------
# Saving and loading trained models
# ----------------------------------------------------------------------------------------
def save_encoder(model: Encoder, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """safetensors file with the architecture in its metadata (so :func:`load_encoder` needs nothing else)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"tmr_encoder": json.dumps(model.describe())}
    if meta:
        info["meta"] = json.dumps(meta, default=str)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp), metadata=info)
    os.replace(tmp, path)
    return path


def load_encoder(path: str | os.PathLike) -> Encoder:
    """An :class:`Encoder` saved by :func:`save_encoder`, in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if "tmr_encoder" not in meta:
        raise ValueError(f"{path} is not a kit encoder (no architecture metadata); "
                         "use it as --pretrained instead")
    arch = json.loads(meta["tmr_encoder"])
    model = Encoder(arch["backbone"], arch["embed_dim"], arch["pooling"], arch.get("image_size"),
                    bn=arch.get("bn", True), bias=arch.get("bias", True))
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def save_ensemble(files: Sequence[Sequence[str | os.PathLike]], folder: str | os.PathLike,
                  extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.json`` listing the encoder files (one list of folds per backbone)."""
    folder = Path(folder)
    rel = [[os.path.relpath(f, folder) for f in group] for group in files]
    data = {"members": rel, **(extra or {})}
    out = folder / "model.json"
    out.write_text(json.dumps(data, indent=2, default=str))
    return out


def load_ensemble(folder: str | os.PathLike, normalize: bool = True) -> EnsembleEncoder:
    """The :class:`EnsembleEncoder` described by ``folder/model.json`` (or one encoder file);
    ``normalize`` as in :class:`EnsembleEncoder`."""
    folder = Path(folder)
    if folder.is_file() and folder.suffix == ".safetensors":
        return EnsembleEncoder([[load_encoder(folder)]], normalize).eval()
    spec = folder / "model.json"
    if not spec.is_file():
        raise FileNotFoundError(f"{spec} not found: train a model first (tmr train --out {folder})")
    data = json.loads(spec.read_text())
    members = [[load_encoder(folder / f) for f in group] for group in data["members"]]
    return EnsembleEncoder(members, normalize).eval()


def state_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights (keys the embedding cache)."""
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _kit_resolver(name: str) -> Callable[[str], Any]:
    """Resolver for one of the kit's own checkpoints (tmr-teach, tmr-marks), shipped in the package."""

    def resolve(backbone: str):
        from .weights import kit_weights_path

        return kit_weights_path(backbone, name)

    return resolve


register_weights("tmr-marks", _kit_resolver("tmr-marks"))
register_weights("tmr-teach", _kit_resolver("tmr-teach"))
