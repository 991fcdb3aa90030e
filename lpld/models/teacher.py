"""One way to load a teacher, for every stage that uses one (recover, relabel, the replay check).

:func:`load_teacher` reads the checkpoint once and returns the model together with a
:class:`TeacherInfo`: the content hash of its tensors (:func:`lpld.utils.fingerprint.state_dict_sha256`),
its class count and, when the checkpoint records it, its class list. Artifacts record the hash and
the class list, so a retrained teacher saved under the same file name is recognised.
"""
from __future__ import annotations

import dataclasses
import os

import torch
from torch import nn

from ..utils.errors import InputValueError, UnsafeFileError
from ..utils.fingerprint import model_sha256, state_dict_sha256
from ..utils.safe_load import safe_torch_load
from . import TEACHER_FIX, build_model, load_weights, read_state_dict


@dataclasses.dataclass
class TeacherInfo:
    sha256: str
    num_classes: int
    classes: list[str] | None = None
    path: str | None = None

    def record(self) -> dict:
        """What artifacts record about their teacher."""
        return {"teacher_sha256": self.sha256, "classes": self.classes}


def infer_num_classes(state_dict: dict[str, torch.Tensor], path: str) -> int:
    """Classes of a checkpoint: from its class-BN buffers or its classifier."""
    for key, value in state_dict.items():
        if key.endswith("class_running_mean"):
            return int(value.shape[0])
    for key in ("fc.weight", "head.fc.weight", "classifier.weight", "head.weight"):
        if key in state_dict and state_dict[key].dim() == 2:
            return int(state_dict[key].shape[0])
    raise InputValueError(f"cannot tell the number of classes of {path}; pass --num-classes")


def checkpoint_classes(path: str) -> list[str] | None:
    """The class list a checkpoint records (ours since class lists exist), or None (the authors',
    torchvision's, older ones). A file holding objects outside :mod:`lpld.utils.safe_load`'s
    allow-list raises :class:`~lpld.utils.errors.UnsafeFileError`."""
    for mmap in (True, False):  # legacy (non-zip) files cannot be memory-mapped
        try:
            obj = safe_torch_load(path, what="checkpoint", fix=TEACHER_FIX, mmap=mmap)
            break
        except UnsafeFileError:
            raise
        except Exception:  # noqa: BLE001 - unreadable files are reported by read_state_dict
            continue
    else:
        return None
    classes = obj.get("classes") if isinstance(obj, dict) else None
    return [str(c) for c in classes] if isinstance(classes, (list, tuple)) else None


def load_teacher(arch: str, checkpoint: str, *, num_classes: int | None = None, tiny_stem: bool = False,
                 class_aware: bool = False) -> tuple[nn.Module, TeacherInfo]:
    """Build ``arch`` with the weights of ``checkpoint`` (read once) and describe it."""
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"teacher checkpoint not found: {checkpoint}")
    state = read_state_dict(checkpoint)
    found = infer_num_classes(state, checkpoint) if num_classes is None else num_classes
    classes = checkpoint_classes(checkpoint)
    if classes is not None and len(classes) != found:
        raise InputValueError(f"teacher {checkpoint} records {len(classes)} class names but {found} classes are "
                              f"asked for; drop --num-classes or use the teacher of this dataset")
    model = build_model(arch, found, tiny_stem=tiny_stem, class_aware=class_aware)
    load_weights(model, checkpoint, state_dict=state)
    return model, TeacherInfo(state_dict_sha256(state), found, classes, os.path.abspath(checkpoint))


def describe_module(model: nn.Module, num_classes: int, classes: list[str] | None = None) -> TeacherInfo:
    """A :class:`TeacherInfo` for a teacher given as a module (tests, benchmarks)."""
    return TeacherInfo(model_sha256(model), num_classes, classes, None)
