"""Model construction and checkpoint I/O shared by every stage.

* ``build_model("resnet18", 200, tiny_stem=True, class_aware=True)``: a torchvision classifier
  (``weights=None``), optionally with the Tiny-ImageNet stem and class-aware BatchNorm.
* ``build_model("timm/resnet18", 10450)``: a timm model (ImageNet-21K-P uses timm's resnet18).
* Checkpoints are dicts ``{"model": state_dict, ...}`` as in torchvision's reference scripts and
  the authors' released ``resnet18_0.pth`` / ``resnet18_tiny_0.pth``; their content hash
  (:func:`checkpoint_sha256`) and their size before they are written (:func:`checkpoint_bytes`).
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torchvision
from torch import nn

from ..utils.errors import InputValueError, UnreadableFileError, UnsafeFileError
from ..utils.fingerprint import state_dict_sha256
from ..utils.io import atomic_torch_save
from ..utils.safe_load import safe_torch_load
from .class_bn import (ClassAwareBatchNorm2d, class_bn_layers, class_labels,  # noqa: F401
                       convert_to_class_aware, finalize_exact_class_stats, per_class_mean_var,
                       set_class_stats_mode)

CLASS_BUFFERS = ("class_running_mean", "class_running_var")
# A refused teacher file: where a usable one comes from.
TEACHER_FIX = ("use a teacher written by lpld squeeze-train / class-stats or the authors' release (bash download.sh "
               "--what teachers)")


def apply_tiny_stem(model: nn.Module) -> nn.Module:
    """Tiny-ImageNet variant (authors' squeeze/relabel code): 3x3 stride-1 conv1, no max-pool."""
    if not (hasattr(model, "conv1") and hasattr(model, "maxpool")):
        raise InputValueError(f"the Tiny-ImageNet stem is defined for ResNets (conv1 + maxpool); "
                         f"{type(model).__name__} has none")
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def build_model(arch: str, num_classes: int, *, tiny_stem: bool = False, class_aware: bool = False,
                weights: str | None = None) -> nn.Module:
    """Build a classifier by name.

    ``arch``: a torchvision model name (``resnet18``, ``resnet50``, ``mobilenet_v2`` ...) or
    ``timm/<name>`` for a timm model. ``weights``: a local checkpoint path loaded after the model
    is built (nothing is ever fetched from the internet).
    """
    if arch.startswith("timm/"):
        import timm  # heavy to import (its whole model zoo); only timm models need it
        model = timm.create_model(arch[len("timm/"):], pretrained=False, num_classes=num_classes)
    else:
        try:
            model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        except ValueError as err:
            raise InputValueError(f"unknown model {arch!r}: use a torchvision model name "
                             f"(e.g. resnet18, resnet50, mobilenet_v2) or 'timm/<name>'") from err
    if tiny_stem:
        apply_tiny_stem(model)
    if class_aware:
        convert_to_class_aware(model, num_classes)
    if weights:
        load_weights(model, weights)
    return model


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a model state dict from any of the checkpoint layouts in use.

    Accepts ``{"model": sd}`` (ours, torchvision references, the authors'), ``{"state_dict": sd}``
    (timm / Alibaba ImageNet-21K), or a bare state dict; strips DataParallel ``module.`` and
    ``torch.compile`` ``_orig_mod.`` prefixes.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = safe_torch_load(path, what="checkpoint", fix=TEACHER_FIX)
    except UnsafeFileError:
        raise
    except Exception as err:  # noqa: BLE001 - name the file whatever went wrong
        raise UnreadableFileError(f"could not read checkpoint {path}: {err}") from err
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputValueError(f"{path} does not hold a model state dict (expected a dict of tensors, "
                         f"optionally under the key 'model' or 'state_dict')")
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_weights(model: nn.Module, path: str, state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Load ``path`` into ``model`` (``state_dict``: its content, when already read). Class-BN buffers
    may be absent (a plain teacher about to get class statistics) or surplus (a class-BN checkpoint
    loaded into a plain model); every other key must match, or the error names the keys and the file."""
    sd = dict(read_state_dict(path) if state_dict is None else state_dict)
    own = model.state_dict()
    for k in [k for k in sd if k.endswith(CLASS_BUFFERS) and k not in own]:
        del sd[k]
    hint = "Check --model, --num-classes and the Tiny-ImageNet stem setting."
    missing = [k for k in own if k not in sd and not k.endswith(CLASS_BUFFERS)]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise InputValueError(f"checkpoint {path} does not fit the model {type(model).__name__}: missing keys "
                         f"{missing[:8]}{'...' if len(missing) > 8 else ''}, unexpected keys "
                         f"{unexpected[:8]}{'...' if len(unexpected) > 8 else ''}. {hint}")
    shapes = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items() if v.shape != own[k].shape]
    if shapes:
        raise InputValueError(f"checkpoint {path}: shape mismatch (key, checkpoint, model): {shapes[:4]}. {hint}")
    model.load_state_dict(sd, strict=False)
    return model


def checkpoint_has_class_stats(path: str) -> bool:
    return any(k.endswith("class_running_mean") for k in read_state_dict(path))


def save_checkpoint(path: str, model: nn.Module, **extra: Any) -> None:
    """Atomically write ``{"model": state_dict, **extra}`` (the authors' layout)."""
    module = getattr(model, "module", model)
    module = getattr(module, "_orig_mod", module)
    atomic_torch_save({"model": module.state_dict(), **extra}, path)


def checkpoint_sha256(path: str) -> str:
    """The state-dict hash of a checkpoint file (any layout :func:`read_state_dict` reads):
    :func:`lpld.utils.fingerprint.state_dict_sha256` of its tensors."""
    return state_dict_sha256(read_state_dict(path))


def checkpoint_bytes(arch: str, num_classes: int, copies: float, tiny_stem: bool = False) -> int:
    """``copies`` x the size of the model's tensors (counted on the meta device: nothing is allocated)."""
    try:
        with torch.device("meta"):
            model = build_model(arch, num_classes, tiny_stem=tiny_stem)
    except Exception:  # noqa: BLE001 - an unknown architecture is reported by the stage itself
        return 0
    tensors = list(model.parameters()) + list(model.buffers())
    return int(copies * sum(t.numel() * t.element_size() for t in tensors))
