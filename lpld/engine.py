"""Evaluation loop shared by the teacher (squeeze) and student (validate) trainers."""
from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from .utils.metrics import topk_correct
from .utils.runtime import autocast, to_channels_last


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, *, amp: bool = False,
             desc: str = "val", progress: bool = True) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy of ``model`` over ``loader``.

    In a torch.distributed run each rank evaluates its shard and the counts are summed.
    """
    model.eval()
    correct1 = correct5 = seen = 0
    loss_sum = 0.0
    criterion = nn.CrossEntropyLoss(reduction="sum")
    for images, target in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images = to_channels_last(images.to(device, non_blocking=True), device)
        target = target.to(device, non_blocking=True)
        with autocast(device, amp):
            output = model(images)
        loss_sum += float(criterion(output.float(), target))
        c1, c5 = topk_correct(output, target, (1, 5))
        correct1, correct5, seen = correct1 + c1, correct5 + c5, seen + target.numel()
    totals = torch.tensor([correct1, correct5, seen, loss_sum], dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    c1, c5, n, loss = totals.tolist()
    n = max(n, 1)
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n, "samples": int(n)}
