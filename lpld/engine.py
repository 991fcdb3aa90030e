"""Evaluation loop shared by the teacher (squeeze) and student (validate) trainers."""
from __future__ import annotations

import torch
from timm.utils import accuracy
from torch import nn

from .utils.metrics import DeviceSums
from .utils.progress import progress_bar
from .utils.runtime import autocast, to_channels_last


def hits(percent: torch.Tensor, n: int) -> torch.Tensor:
    """Correct predictions from ``timm.utils.accuracy``'s percentage of ``n`` rows (exact)."""
    return (percent * n / 100).round()


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, *, amp: bool = False,
             channels_last: bool = False, desc: str = "val", progress: bool = True) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy of ``model`` over ``loader``.

    The forward may run under autocast; logits are cast to fp32 before the loss and the top-k, so
    near-ties are ranked as an fp32 model would rank them. Counts stay on the device until the end.
    In a torch.distributed run each rank evaluates its shard and the sums are all-reduced.
    """
    model.eval()
    sums = DeviceSums(("loss", "top1", "top5", "n"), device)
    for images, target in progress_bar(loader, desc=desc, leave=False, disable=not progress):
        images = to_channels_last(images.to(device, non_blocking=True), channels_last)
        target = target.to(device, non_blocking=True)
        with autocast(device, amp):
            output = model(images)
        output = output.float()
        n = target.shape[0]
        if n == 0:
            continue
        hits1, hits5 = (hits(acc, n) for acc in accuracy(output, target, topk=(1, 5)))
        sums.add(nn.functional.cross_entropy(output, target, reduction="sum"), hits1, hits5, n)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums.values)
    totals = sums.read()
    n = max(totals["n"], 1)
    return {"top1": 100.0 * totals["top1"] / n, "top5": 100.0 * totals["top5"] / n,
            "loss": totals["loss"] / n, "samples": int(round(totals["n"]))}
