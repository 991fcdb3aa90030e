"""The relabel teacher: built from a local checkpoint, run in eval mode without gradients."""
from __future__ import annotations

import os

import torch
from torch import nn

from ..models.teacher import TeacherInfo, load_teacher
from ..utils.errors import InputValueError
from ..utils.runtime import autocast


def load_relabel_teacher(arch: str, checkpoint: str | None, num_classes: int | None = None,
                         tiny_stem: bool = False) -> tuple[nn.Module, TeacherInfo]:
    """torchvision ResNet-18/50 with ImageNet weights, the Tiny-ImageNet teacher, or timm's
    ResNet-18 for ImageNet-21K-P (class-BN buffers in a checkpoint are ignored), with its content
    hash and class list (:func:`lpld.models.teacher.load_teacher`)."""
    if not checkpoint:
        raise InputValueError(
            "no teacher weights: pass --teacher-ckpt FILE (ImageNet-1K: torchvision's "
            "resnet18-f37072fd.pth / resnet50 weights; Tiny-ImageNet: the squeeze/ teacher or the authors' "
            "resnet18_tiny checkpoint; ImageNet-21K-P: the timm resnet18 checkpoint). Nothing is downloaded.")
    return load_teacher(arch, checkpoint, num_classes=num_classes, tiny_stem=tiny_stem)


def teacher_summary(arch: str, checkpoint: str | None, tiny_stem: bool, num_classes: int) -> dict:
    return {"arch": arch, "checkpoint": os.path.basename(checkpoint) if checkpoint else None,
            "tiny_stem": bool(tiny_stem), "num_classes": int(num_classes)}


def teacher_logits(model: nn.Module, images: torch.Tensor, device: torch.device, amp: bool = False,
                   channels_last: bool = True) -> torch.Tensor:
    """fp32 logits on the CPU (fp16 autocast on CUDA when ``amp``)."""
    images = images.to(device, non_blocking=True)
    if channels_last and device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(device, amp, dtype=torch.float16):
        out = model(images)
    return out.float().cpu()
