"""Class-aware BatchNorm: ordinary BatchNorm that can also keep per-class running statistics.

Semantics follow the authors' ``ClassAwareBatchNorm2d`` (LPLD, squeeze stage): the layer's output
is plain BatchNorm; when the module is in eval mode and labels are set, for every class ``c``
present in the batch

    class_running_mean[c] = (1 - m) * class_running_mean[c] + m * mean(x_c over N, H, W)
    class_running_var[c]  = (1 - m) * class_running_var[c]  + m * biased_var(x_c over N, H, W)

with ``m`` the layer momentum (0.1), ``x_c`` the layer inputs of the images of class ``c``.
Classes absent from the batch are left untouched. The buffers are named exactly as in the
authors' checkpoints (``class_running_mean`` / ``class_running_var``, shape [num_classes, C]).

Unlike the authors' per-class Python loop, the update is vectorised with ``index_add_`` over the
batch; ``tests/test_class_bn.py`` proves it equals a per-class loop.

``exact`` mode (a documented deviation from the paper) instead accumulates count-weighted sums in
float64 over the whole pass and :func:`finalize_exact_class_stats` writes the exact per-class mean
and biased variance, independent of data order and batch composition.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class ClassAwareBatchNorm2d(nn.BatchNorm2d):
    def __init__(self, num_features: int, num_classes: int, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.num_classes = num_classes
        factory = {"device": device, "dtype": dtype}
        self.register_buffer("class_running_mean", torch.zeros(num_classes, num_features, **factory))
        self.register_buffer("class_running_var", torch.ones(num_classes, num_features, **factory))
        # Labels of the current batch; set through `class_labels(model, labels)`.
        self.class_labels: torch.Tensor | None = None
        self.stats_mode = "ema"  # "ema" (authors') or "exact" (count-weighted, order independent)
        self._exact_sums: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d, num_classes: int) -> "ClassAwareBatchNorm2d":
        new = cls(bn.num_features, num_classes, bn.eps, bn.momentum, bn.affine,
                  bn.track_running_stats, device=bn.running_mean.device if bn.running_mean is not None else None)
        new.load_state_dict(bn.state_dict(), strict=False)
        return new.train(bn.training)  # an eval-mode model stays in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and self.class_labels is not None:
            self._update_class_stats(x.detach(), self.class_labels)
        return super().forward(x)

    @torch.no_grad()
    def _update_class_stats(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        labels = labels.to(device=x.device, dtype=torch.long).reshape(-1)
        if labels.numel() != x.shape[0]:
            raise ValueError(f"class labels: got {labels.numel()} labels for a batch of {x.shape[0]} images")
        if self.stats_mode == "exact":
            self._accumulate_exact(x, labels)
            return
        if self.momentum is None:
            raise ValueError("ClassAwareBatchNorm2d needs a numeric momentum (the authors use 0.1)")
        mean, var, counts = per_class_mean_var(x, labels, self.num_classes)
        # torch.where rather than boolean indexing: no host synchronisation on CUDA.
        present = (counts > 0)[:, None]
        m = self.momentum
        for running, batch in ((self.class_running_mean, mean), (self.class_running_var, var)):
            running.copy_(torch.where(present, (1 - m) * running + m * batch.to(running.dtype), running))

    def _accumulate_exact(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        if self._exact_sums is None:
            shape = (self.num_classes, self.num_features)
            z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=x.device)  # noqa: E731
            self._exact_sums = (z(self.num_classes), z(*shape), z(*shape))
        n, s1, s2 = self._exact_sums
        xd = x.to(torch.float64)
        pixels = x.shape[2] * x.shape[3]
        n.index_add_(0, labels, torch.full_like(labels, pixels, dtype=torch.float64))
        s1.index_add_(0, labels, xd.sum((2, 3)))
        s2.index_add_(0, labels, xd.square_().sum((2, 3)))  # in place: one float64 copy of x, not two

    @torch.no_grad()
    def finalize_exact(self) -> None:
        if self._exact_sums is None:
            return
        n, s1, s2 = self._exact_sums
        present = n > 0
        mean = s1[present] / n[present, None]
        var = (s2[present] / n[present, None] - mean * mean).clamp_min(0)
        self.class_running_mean[present] = mean.to(self.class_running_mean.dtype)
        self.class_running_var[present] = var.to(self.class_running_var.dtype)
        self._exact_sums = None


def image_var_mean(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Biased variance and mean of ``x`` [N, C, H, W] over (H, W): [N, C] each.

    ``torch.var_mean`` on the device (one pass). On the CPU its reduction over the inner dimensions
    is a scalar Welford loop, about 20x an eval-mode BatchNorm of the same input, which made the
    class-statistics pass of a small model twice as slow as its forward; the two-pass form (the
    mean, then the mean of the squared deviations) is vectorised, as stable, and costs one
    temporary the size of ``x``."""
    if x.device.type != "cpu":
        return torch.var_mean(x, dim=(2, 3), unbiased=False)
    mean = x.mean((2, 3), keepdim=True)
    return (x - mean).square_().mean((2, 3)), mean[:, :, 0, 0]


def per_class_mean_var(x: torch.Tensor, labels: torch.Tensor, num_classes: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class channel mean and biased variance of ``x`` [N, C, H, W] over (N, H, W).

    Returns ``mean`` and ``var`` of shape [num_classes, C] (zero for absent classes) and ``counts``
    [num_classes] (images per class). Per-image statistics first (:func:`image_var_mean`), then
    the law of total variance on the small [N, C] tensors, since every image has H*W pixels:
    ``var_c = mean_i(var_i) + mean_i((mean_i - mean_c)^2)``. Exact and numerically stable (no
    E[x^2] - E[x]^2 cancellation).
    """
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    n, c = work.shape[:2]
    img_var, img_mean = image_var_mean(work)  # [N, C] each
    counts = torch.zeros(num_classes, device=x.device, dtype=work.dtype)
    counts.index_add_(0, labels, torch.ones(n, device=x.device, dtype=work.dtype))
    denom = counts.clamp_min(1)[:, None]
    mean = torch.zeros(num_classes, c, device=x.device, dtype=work.dtype).index_add_(0, labels, img_mean) / denom
    spread = (img_mean - mean[labels]).square_().add_(img_var)
    var = torch.zeros(num_classes, c, device=x.device, dtype=work.dtype).index_add_(0, labels, spread) / denom
    return mean, var, counts


def class_bn_layers(model: nn.Module) -> list[ClassAwareBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, ClassAwareBatchNorm2d)]


def convert_to_class_aware(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``model`` by a :class:`ClassAwareBatchNorm2d` in place."""
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, ClassAwareBatchNorm2d):
            setattr(model, name, ClassAwareBatchNorm2d.from_batchnorm(child, num_classes))
        else:
            convert_to_class_aware(child, num_classes)
    return model


def check_labels(labels: torch.Tensor, num_classes: int | None) -> None:
    """Raise unless every label lies in [0, num_classes). Reads the values: call it on a host
    tensor (the loader's) in a hot loop, not on a device tensor."""
    if num_classes is not None and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"class labels must lie in [0, {num_classes}); got min {int(labels.min())}, "
                         f"max {int(labels.max())}")


@contextlib.contextmanager
def class_labels(model: nn.Module, labels: torch.Tensor, check: bool = True) -> Iterator[None]:
    """Within this context, a forward pass in eval mode updates the per-class statistics.
    ``check=False``: the caller has checked the labels (see :func:`check_labels`)."""
    layers = class_bn_layers(model)
    if not layers:
        raise ValueError("class_labels: the model has no ClassAwareBatchNorm2d layers "
                         "(build it with class_aware=True)")
    if check:
        check_labels(labels, layers[0].num_classes)
    for layer in layers:
        layer.class_labels = labels
    try:
        yield
    finally:
        for layer in layers:
            layer.class_labels = None


def set_class_stats_mode(model: nn.Module, mode: str) -> None:
    if mode not in ("ema", "exact"):
        raise ValueError(f"class statistics mode must be 'ema' (authors') or 'exact'; got {mode!r}")
    for layer in class_bn_layers(model):
        layer.stats_mode = mode


def finalize_exact_class_stats(model: nn.Module) -> None:
    for layer in class_bn_layers(model):
        layer.finalize_exact()
