"""The recovery optimisation: many independent BN-matching runs batched into one tensor.

A *group* is one of the authors' optimisation batches: LPLD class mode, ``batch_size`` (= ipc) images
of one class matched to that class's BN statistics; SRe2L mode, one image of each of ``batch_size``
classes matched to the global BN statistics. Per iteration the authors compute, for one group,

    loss = CE(teacher(aug(x)), labels).mean() + r_bn * sum_l w_l r_l(aug(x))

and take an Adam step (betas 0.5/0.9, eps 1e-8) with a cosine learning rate and no warm-up
(``lr_cosine_policy(lr, 0, iterations)``), then clip the pixels to the valid normalised range.

:class:`Recoverer` stacks G groups ([G * n, 3, S, S], groups contiguous) and minimises the sum of the
G group losses. The teacher is in eval mode, so a BN layer normalises each image with fixed
statistics: image i's logits and features depend on image i only, each group's BN term depends on
its own images only (:mod:`.bn_matching`), hence d(sum_k loss_k)/dx_i = d(loss_group(i))/dx_i, and
Adam, being element-wise, makes the same update as G separate Adams with the same schedule. The
batched step is therefore G single-group runs at once (``tests/test_recover.py`` checks gradients
and trajectories against single-group runs).

Random streams: every group owns a ``torch.Generator`` seeded from (seed, group key), used for its
initial noise and, with ``augment_draw="per_group"`` (the default), for its own crop/flip/shift draws
(as K separate runs of the authors' script would draw): a group's images depend only on the
settings, the seed and its key, never on which groups share its step. ``augment_draw="shared"``
(opt-in) draws once per step for the whole batch from the first group's generator: one crop op on
the whole tensor, and still, for every group, a sequence of independent draws of exactly the
authors' distribution, but which draws a class gets then depends on the grouping (groups_per_step,
sharding, resumption).
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.progress import progress_bar
from ..utils.runtime import autocast
from ..utils.schedule import warmup_cosine
from .augment import AugmentParams, apply_grouped, sample_params
from .bn_matching import BNMatcher


@dataclasses.dataclass
class Group:
    """One optimisation batch: its images' labels, the class whose statistics it matches (LPLD) and
    the key that seeds its random streams."""
    key: tuple[int, ...]
    labels: list[int]
    bn_class: int | None = None


@dataclasses.dataclass
class RecoverySettings:
    image_size: int
    iterations: int
    lr: float
    r_bn: float
    first_bn_multiplier: float = 10.0
    betas: tuple[float, float] = (0.5, 0.9)
    eps: float = 1e-8
    crop_scale: tuple[float, float] = (0.08, 1.0)
    jitter: tuple[int, int] = (0, 32)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    clip: bool = True
    augment_draw: str = "per_group"  # "per_group" | "shared" (grouping-dependent, opt-in)
    amp: bool = False
    channels_last: bool = True
    seed: int = 0
    log_every: int = 100
    progress: bool = True


@dataclasses.dataclass
class GroupResult:
    images: torch.Tensor        # [G * n, 3, S, S] final images (normalised space, fp32, CPU)
    ce: torch.Tensor            # [G * n] per-image cross-entropy of the final images (no augmentation)
    correct: torch.Tensor       # [G * n] bool: teacher top-1 == label on the final images
    bn: torch.Tensor            # [G] BN loss of each group on the final images
    ce_last: torch.Tensor       # [G] CE of the last optimisation step (augmented batch)
    bn_last: torch.Tensor       # [G] BN loss of the last optimisation step


def group_generator(seed: int, key: Sequence[int], stream: str) -> torch.Generator:
    """A CPU generator whose state depends only on (seed, group key, stream name)."""
    text = f"{seed}|{stream}|{','.join(str(int(k)) for k in key)}".encode()
    value = int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)
    return torch.Generator().manual_seed(value)


def initial_images(groups: Sequence[Group], size: int, seed: int) -> torch.Tensor:
    """N(0, 1) noise per group from the group's own generator (independent of batching)."""
    return torch.cat([torch.randn(len(g.labels), 3, size, size, generator=group_generator(seed, g.key, "init"))
                      for g in groups])


class Recoverer:
    """Optimises groups of synthetic images against a frozen teacher; see the module docstring."""

    def __init__(self, teacher: nn.Module, settings: RecoverySettings, target: str, device: torch.device,
                 compile_model: bool | str = False) -> None:
        self.s = settings
        self.device = device
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.channels_last = settings.channels_last  # on any device: oneDNN takes NHWC on the CPU
        if self.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
        self.teacher = teacher
        self.matcher = BNMatcher(teacher, settings.first_bn_multiplier, target)
        # compile_model: True (inductor) or a torch.compile backend name
        backend = compile_model if isinstance(compile_model, str) else "inductor"
        self.forward = torch.compile(teacher, backend=backend) if compile_model else teacher
        mean = torch.tensor(settings.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(settings.std, device=device).view(1, -1, 1, 1)
        # Valid range of a normalised pixel: (0 - m) / s .. (1 - m) / s (authors' clip()).
        self.lo, self.hi = (0 - mean) / std, (1 - mean) / std
        if settings.augment_draw not in ("shared", "per_group"):
            raise ValueError(f"augment_draw must be 'shared' or 'per_group'; got {settings.augment_draw!r}")

    # ---- one step ---------------------------------------------------------------------------------
    def group_losses(self, x: torch.Tensor, labels: torch.Tensor, num_groups: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher forward on ``x`` (already augmented); returns (logits, CE per image, CE per group,
        BN loss per group), the losses in fp32."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.matcher.reset()
        with autocast(self.device, self.s.amp):
            logits = self.forward(x)
        ce_img = F.cross_entropy(logits.float(), labels, reduction="none")
        return logits, ce_img, ce_img.view(num_groups, -1).mean(1), self.matcher.group_loss()

    def step_loss(self, inputs: torch.Tensor, labels: torch.Tensor, num_groups: int,
                  params: Sequence[AugmentParams]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Total loss (sum over groups of CE_k + r_bn * BN_k) of one augmented step."""
        x = apply_grouped(inputs, params, self.s.image_size)
        _, _, ce, bn = self.group_losses(x, labels, num_groups)
        return (ce + self.s.r_bn * bn).sum(), ce, bn

    def draw(self, generators: Sequence[torch.Generator]) -> list[AugmentParams]:
        s = self.s
        gens = generators if s.augment_draw == "per_group" else generators[:1]
        return [sample_params(g, s.image_size, s.crop_scale, s.jitter) for g in gens]

    @torch.no_grad()
    def clip_(self, inputs: torch.Tensor) -> None:
        if self.s.clip:
            torch.maximum(torch.minimum(inputs, self.hi, out=inputs), self.lo, out=inputs)

    # ---- the whole optimisation -------------------------------------------------------------------
    def run(self, groups: Sequence[Group], desc: str = "recover") -> GroupResult:
        s, device = self.s, self.device
        sizes = {len(g.labels) for g in groups}
        if len(sizes) != 1:
            raise ValueError(f"all groups of a step must have the same size; got sizes {sorted(sizes)}")
        num_groups = len(groups)
        labels = torch.tensor([c for g in groups for c in g.labels], device=device)
        if self.matcher.target == "class":
            self.matcher.set_targets(num_groups, torch.tensor([g.bn_class for g in groups]))
        else:
            self.matcher.set_targets(num_groups)
        inputs = initial_images(groups, s.image_size, s.seed).to(device).requires_grad_(True)
        # Adam is element-wise: one optimiser over all groups == one per group. fused: one CUDA kernel.
        optimizer = torch.optim.Adam([inputs], lr=s.lr, betas=s.betas, eps=s.eps, fused=device.type == "cuda")
        generators = [group_generator(s.seed, g.key, "augment") for g in groups]
        ce = bn = torch.zeros(num_groups, device=device)
        scheduler = warmup_cosine(optimizer, s.iterations)  # the authors' lr_cosine_policy, no warm-up
        bar = progress_bar(range(s.iterations), desc=desc, leave=False, disable=not s.progress)
        for it in bar:
            optimizer.zero_grad(set_to_none=True)
            loss, ce, bn = self.step_loss(inputs, labels, num_groups, self.draw(generators))
            loss.backward()
            optimizer.step()
            scheduler.step()
            self.clip_(inputs)
            if s.log_every and (it % s.log_every == 0 or it == s.iterations - 1):
                bar.set_postfix(ce=f"{float(ce.detach().mean()):.3f}", bn=f"{float(bn.detach().mean()):.3f}")
        ce_last, bn_last = ce.detach().float().cpu(), bn.detach().float().cpu()
        final = inputs.detach()
        with torch.no_grad():  # the final images as saved (before JPEG), without augmentation
            logits, ce_img, _, bn_final = self.group_losses(final, labels, num_groups)
            correct = logits.argmax(1) == labels
        return GroupResult(final.float().cpu(), ce_img.cpu(), correct.cpu(), bn_final.float().cpu(),
                           ce_last, bn_last)

    def close(self) -> None:
        self.matcher.close()


def denormalize_to_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Authors' ``denormalize`` (clamp(x * s + m, 0, 1)) then ``(x * 255).astype(uint8)`` (truncation):
    [N, 3, H, W] float -> [N, H, W, 3] uint8."""
    m = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    sd = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    x = (images * sd + m).clamp(0, 1)
    return (x * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
