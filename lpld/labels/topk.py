"""Top-k soft labels: LPQLD's label quantization "MR-k" (marginal re-normalisation).

Relabel keeps, per augmented view, only the teacher's ``k`` largest pre-softmax logits and their
class indices; training rebuilds the target from them at the current temperature. Semantics of the
authors' LPQLD code (he-y/soft-label-pruning-quantization-for-dataset-distillation):

* selection, ``generate_soft_label_pruning_batch.py`` 395-414: ``torch.topk(output, k, dim=1)`` on
  the teacher's full-precision logits ("use full precision for ranking"), values then cast to
  fp16 (``--use-fp16``), indices to int16 (``indices.short()``);
* target, ``train_FKD_LPQLD.py`` 753-764: ``softmax(values / T)`` over the k stored logits,
  scattered into a zero vector of ``num_classes`` ("no need for additional normalization");
* label smoothing, ``train_FKD_LPQLD.py`` 714-718: applied to the stored logits before the softmax,
  ``(1 - ls) * v + ls / k`` (their ``num_classes`` there is the stored width, i.e. k).

Index dtype: int16 while ``num_classes <= 32767`` (every dataset here: ImageNet-21K-P has 10,450
classes), which is what their files hold; int32 above (uint16 would reach 65,535 at the same size,
but torch's uint16 is a limited dtype that cannot index, so the next size up is the safe one).

Also here: an 8-bit codec for the stored values (per-row scale and offset) and the KL distortion
it adds. MR-k is the only method their generator writes; the ``MS-k`` / ``MRS-k`` / ``hard``
branches of their trainer expect data (post-softmax values, per-sample minima) no released
generator stores, so they are refused with a clear error.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..utils.errors import InputValueError

INT16_MAX_CLASSES = 32767  # largest class count whose indices fit int16
CODE_LEVELS = 255  # uint8 codes 0..255
_METHOD = re.compile(r"^\s*MR-(\d+)\s*$", re.IGNORECASE)


def parse_label_quantization(value) -> int | None:
    """The authors' ``--label_quantization`` value as k: ``"MR-10"`` -> 10; ``None``/``"None"`` -> None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _METHOD.match(str(value))
    if match is None:
        raise ValueError(f"label_quantization {value!r} is not supported: use 'MR-<k>' (e.g. MR-10, the only "
                         f"method the authors' generator writes) or None for full logits")
    return int(match.group(1))


def label_quantization_rule(value, values=None) -> str | None:
    """An ``Option(check=...)`` rule: ``label_quantization`` must be ``MR-<k>`` (k >= 1) or None."""
    try:
        k = parse_label_quantization(value)
    except ValueError:
        return "must be 'MR-<k>' (e.g. MR-10, the only method the authors' generator writes) or None"
    return None if k is None or k >= 1 else "must be MR-<k> with k >= 1"


def check_topk(k, num_classes: int, where: str = "") -> int:
    """``k`` as an int in ``1..num_classes``; anything else is a one-line error."""
    ctx = f" ({where})" if where else ""
    if isinstance(k, bool) or not hasattr(k, "__index__"):  # ints and numpy ints, not 10.0
        raise InputValueError(f"label_topk must be an integer in 1..{num_classes}; got {k!r}{ctx}")
    k = int(k)
    if not 1 <= k <= num_classes:
        raise InputValueError(f"label_topk must be in 1..{num_classes} (the teacher's class count); got {k}{ctx}")
    return k


def index_dtype(num_classes: int) -> torch.dtype:
    """int16 up to 32,767 classes (the authors' ``.short()``), int32 beyond."""
    return torch.int16 if num_classes <= INT16_MAX_CLASSES else torch.int32


def select_topk(logits: torch.Tensor, k: int, values_dtype: torch.dtype = torch.float16
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest logits per row (descending) and their class indices.

    Ranked in the logits' own precision, then values cast to ``values_dtype`` and indices to
    :func:`index_dtype`. Ties are ordered as ``torch.topk`` orders them (not specified across
    devices; a tie at the k-th place can pick a different class on another device)."""
    if logits.ndim != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float [batch, classes] tensor; got {tuple(logits.shape)} {logits.dtype}")
    num_classes = int(logits.shape[1])
    k = check_topk(k, num_classes)
    top = torch.topk(logits, k, dim=1, largest=True, sorted=True)
    return top.values.to(values_dtype), top.indices.to(index_dtype(num_classes))


def check_topk_pair(values: torch.Tensor, indices: torch.Tensor, num_classes: int | None = None,
                    where: str = "", check_range: bool = True) -> None:
    """Shapes and dtypes of stored top-k labels, and their indices against ``num_classes``.

    ``check_range=False`` skips the index range (a min/max, i.e. a device sync on a GPU): for the
    training step, whose labels were range-checked when the store was read."""
    ctx = f" ({where})" if where else ""
    if not values.is_floating_point():
        raise TypeError(f"top-k values must be a float tensor; got {values.dtype}{ctx}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"top-k class indices must be an integer tensor; got {indices.dtype}{ctx}")
    if values.ndim != 2 or tuple(values.shape) != tuple(indices.shape):
        raise ValueError(f"top-k values {tuple(values.shape)} and indices {tuple(indices.shape)} must both be "
                         f"[batch, k]{ctx}")
    if num_classes is not None:
        k = int(values.shape[1])
        if k > num_classes:
            raise ValueError(f"labels hold the top {k} of each row, but the model has only {num_classes} "
                             f"classes{ctx}; the labels belong to another dataset")
        if check_range and indices.numel():
            low, high = int(indices.min()), int(indices.max())
            if low < 0 or high >= num_classes:
                raise ValueError(f"top-k class index {low if low < 0 else high} is outside 0..{num_classes - 1} "
                                 f"(the model's classes){ctx}; the labels belong to another dataset")


def smooth_topk_values(values: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """The authors' label smoothing on stored logits: ``(1 - ls) * v + ls / width`` (float32)."""
    v = values.float()
    if label_smoothing > 0:
        v = (1 - label_smoothing) * v + label_smoothing / v.shape[1]
    return v


def scatter_topk_logits(values: torch.Tensor, indices: torch.Tensor, num_classes: int,
                        fill: float = float("-inf"), check_range: bool = True) -> torch.Tensor:
    """float32 [B, num_classes]: the stored logits at their classes, ``fill`` elsewhere.

    With ``fill=-inf`` a softmax over the result is exactly zero outside the top-k and equals the
    softmax over the k values inside; with k = num_classes it is the full logit row, bit for bit."""
    check_topk_pair(values, indices, num_classes, check_range=check_range)
    full = torch.full((values.shape[0], num_classes), fill, dtype=torch.float32, device=values.device)
    return full.scatter_(1, indices.long(), values.float())


def topk_mask(indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """bool [B, num_classes]: True at the stored classes."""
    mask = torch.zeros(indices.shape[0], num_classes, dtype=torch.bool, device=indices.device)
    return mask.scatter_(1, indices.long(), True)


def topk_target(values: torch.Tensor, indices: torch.Tensor, num_classes: int, temperature: float,
                label_smoothing: float = 0.0) -> torch.Tensor:
    """The authors' MR-k training target: ``softmax(v / T)`` over the k stored logits, scattered
    into a zero [B, num_classes] vector (``train_FKD_LPQLD.py`` 753-764)."""
    check_topk_pair(values, indices, num_classes)
    probs = F.softmax(smooth_topk_values(values, label_smoothing) / temperature, dim=1)
    full = torch.zeros(values.shape[0], num_classes, dtype=torch.float32, device=values.device)
    return full.scatter_(1, indices.long(), probs)


# --- 8-bit values -------------------------------------------------------------------------------
class Uint8Values(NamedTuple):
    """Logits coded as ``row_min + code * (row_max - row_min) / 255`` per row.

    ``row_max``/``row_min`` are fp16: for fp16 logits they are the row's own extreme values, so
    those two decode exactly. Softmax ignores a per-row offset, so the training target would not
    need ``row_min``; it is kept (2 bytes a row) so that decoded values are the teacher's logits,
    which the replay check compares against."""

    codes: torch.Tensor    # uint8 [B, k]
    row_max: torch.Tensor  # float16 [B]
    row_min: torch.Tensor  # float16 [B]


def _scale(row_max: torch.Tensor, row_min: torch.Tensor) -> torch.Tensor:
    return (row_max.float() - row_min.float()) / CODE_LEVELS


def encode_uint8(values: torch.Tensor) -> Uint8Values:
    """8-bit codes of ``values`` [B, k] with a per-row scale and offset (round to nearest)."""
    if values.ndim != 2 or not values.is_floating_point():
        raise ValueError(f"values must be a float [batch, k] tensor; got {tuple(values.shape)} {values.dtype}")
    v = values.float()
    if not bool(torch.isfinite(v).all()):
        raise ValueError("cannot code non-finite logits in 8 bits (the teacher produced inf/nan)")
    row_max = v.amax(dim=1).half()
    row_min = v.amin(dim=1).half()
    scale = _scale(row_max, row_min).unsqueeze(1)
    offset = row_min.float().unsqueeze(1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # constant rows code as 0
    codes = torch.where(scale > 0, torch.round((v - offset) / safe), torch.zeros_like(v))
    return Uint8Values(codes.clamp_(0, CODE_LEVELS).to(torch.uint8), row_max, row_min)


def decode_uint8(coded: Uint8Values) -> torch.Tensor:
    """float32 [B, k] logits back from :func:`encode_uint8`'s codes."""
    codes, row_max, row_min = coded
    if codes.dtype != torch.uint8 or codes.ndim != 2:
        raise TypeError(f"codes must be uint8 [batch, k]; got {codes.dtype} {tuple(codes.shape)}")
    if tuple(row_max.shape) != (codes.shape[0],) or tuple(row_min.shape) != (codes.shape[0],):
        raise ValueError(f"row_max {tuple(row_max.shape)} and row_min {tuple(row_min.shape)} must be "
                         f"[{codes.shape[0]}] for codes {tuple(codes.shape)}")
    return row_min.float().unsqueeze(1) + codes.float() * _scale(row_max, row_min).unsqueeze(1)


class CodecDistortion(NamedTuple):
    mean_kl: float  # KL(original || decoded) per row, averaged (the KD loss's batchmean)
    max_kl: float   # the worst row
    max_abs_error: float  # largest |decoded - original| logit


def uint8_distortion(values: torch.Tensor, temperature: float) -> CodecDistortion:
    """What 8-bit coding of ``values`` does to the training target at ``temperature``: the KL from
    the softmax of the original values to that of the decoded ones (the support is the same k
    classes, so the scatter into C classes changes nothing), in float64."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    original = values.double()  # float64: the KL of near-equal targets is below float32 rounding
    decoded = decode_uint8(encode_uint8(values)).double()
    log_p = F.log_softmax(original / temperature, dim=1)
    log_q = F.log_softmax(decoded / temperature, dim=1)
    per_row = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    return CodecDistortion(float(per_row.mean()), float(per_row.max()),
                           float((decoded - original).abs().max()))
