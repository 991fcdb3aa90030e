"""BatchNorm statistic matching, computed per optimisation group with forward hooks.

For a BN layer with input ``x`` the authors' hooks (``recover/utils_recover.py``:
``BNFeatureHook_ClassStats_Training`` for LPLD, ``BNFeatureHook`` for SRe2L) compute

    mean = x.mean([0, 2, 3]);  var = biased variance of x over (N, H, W)
    r    = ||target_var - var||_2 + ||target_mean - mean||_2

with target = ``class_running_mean[c] / class_running_var[c]`` (LPLD, class ``c`` of the batch) or the
layer's global ``running_mean / running_var`` (SRe2L), and the BN loss is ``sum_l w_l r_l`` with
``w_1 = first_bn_multiplier`` and ``w_l = 1`` otherwise, over BN layers in ``model.modules()`` order.

Here a batch holds G groups of n images each, contiguous: the hook views the input as
[G, n, C, H, W] (a view, also for channels_last tensors) and returns r for every group at once, so one
forward pass evaluates G independent copies of the authors' loss. Statistics and the loss are computed
in fp32 whatever the autocast dtype of the forward.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models import ClassAwareBatchNorm2d


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """Every BatchNorm2d (class-aware or not) in ``model.modules()`` order: the authors' hook order."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def group_mean_var(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group channel mean and biased variance of ``x`` [G * n, C, H, W] -> two [G, C] tensors (fp32)."""
    n_total, c, h, w = x.shape
    if n_total % groups:
        raise ValueError(f"a batch of {n_total} images cannot be split into {groups} equal groups")
    xg = x.float().view(groups, n_total // groups, c, h, w)
    var, mean = torch.var_mean(xg, dim=(1, 3, 4), correction=0)
    return mean, var


class BNMatcher:
    """Forward hooks on every BN layer of ``model``; after a forward pass, :meth:`group_loss` is the
    weighted BN loss of each group, a [G] tensor.

    ``targets`` is set per batch by :meth:`set_targets`: ``"class"`` with a [G] tensor of class ids
    (one class per group; LPLD), or ``"global"`` (SRe2L: every group matched to running_mean/var).
    """

    def __init__(self, model: nn.Module, first_bn_multiplier: float = 10.0, target: str = "class") -> None:
        if target not in ("class", "global"):
            raise ValueError(f"BN target must be 'class' or 'global'; got {target!r}")
        self.layers = bn_layers(model)
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no BatchNorm2d layers: BN matching needs them")
        if target == "class":
            plain = [i for i, m in enumerate(self.layers) if not isinstance(m, ClassAwareBatchNorm2d)]
            if plain:
                raise ValueError(f"class-wise BN matching needs class statistics in every BN layer; "
                                 f"layers {plain[:5]} are plain BatchNorm2d. Build the teacher with "
                                 f"class_aware=True from a checkpoint with class statistics.")
        self.target = target
        self.weights = [float(first_bn_multiplier)] + [1.0] * (len(self.layers) - 1)
        self._targets: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._losses: list[torch.Tensor] = []
        self.groups = 1
        self._armed = False  # hooks record only between reset() and group_loss()
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.layers)]

    def set_targets(self, groups: int, class_ids: torch.Tensor | None = None) -> None:
        """Prepare the per-group targets of every layer ([G, C] each) for the batches that follow."""
        self.groups = int(groups)
        targets = []
        for m in self.layers:
            if self.target == "class":
                if class_ids is None or class_ids.numel() != groups:
                    raise ValueError(f"class-wise BN matching needs one class id per group ({groups})")
                ids = class_ids.to(m.class_running_mean.device, torch.long)
                mean, var = m.class_running_mean[ids], m.class_running_var[ids]
            else:
                mean = m.running_mean[None].expand(groups, -1)
                var = m.running_var[None].expand(groups, -1)
            targets.append((mean.detach().float(), var.detach().float()))
        self._targets = targets

    def _hook(self, index: int):
        def hook(module, inputs, output):
            if not self._armed:
                return
            mean, var = group_mean_var(inputs[0], self.groups)
            t_mean, t_var = self._targets[index]
            r = torch.linalg.vector_norm(t_var - var, dim=1) + torch.linalg.vector_norm(t_mean - mean, dim=1)
            self._losses.append(r * self.weights[index])
        return hook

    def reset(self) -> None:
        """Arm the hooks for the next forward pass (other forward passes of the model are ignored)."""
        if not self._targets:
            raise RuntimeError("BNMatcher: call set_targets() before matching")
        self._losses = []
        self._armed = True

    def group_loss(self) -> torch.Tensor:
        """Weighted BN loss per group ([G]) of the last forward pass; clears the stored terms."""
        if len(self._losses) != len(self.layers):
            self._armed = False
            raise RuntimeError(f"expected one BN term per layer ({len(self.layers)}), got "
                               f"{len(self._losses)}: call reset() before each forward pass")
        total = torch.stack(self._losses, dim=0).sum(0)
        self._losses = []
        self._armed = False
        return total

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
