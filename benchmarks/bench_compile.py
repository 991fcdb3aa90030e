"""torch.compile on the CPU: compile time (first call) and step time of the recover step and of a
student training step, eager vs ``aot_eager`` vs ``inductor``, with the largest difference of the
loss from eager.

    python benchmarks/bench_compile.py [--size 32 --batch 16 --steps 5 --backends aot_eager inductor]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.models import build_model  # noqa: E402
from lpld.recover import AugmentParams, Recoverer, RecoverySettings  # noqa: E402
from lpld.validate.loss import kd_loss  # noqa: E402

CPU = torch.device("cpu")


def timed(step, steps: int) -> tuple[float, float, float]:
    """(first call seconds, mean seconds of the next ``steps`` calls, last loss)."""
    t0 = time.perf_counter()
    loss = step()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    return first, (time.perf_counter() - t0) / steps, loss


def recover_step(backend: str | None, args):
    torch.manual_seed(0)
    teacher = build_model("resnet18", 10, class_aware=True).eval()
    settings = RecoverySettings(image_size=args.size, iterations=1, lr=0.1, r_bn=0.01, progress=False)
    rec = Recoverer(teacher, settings, "class", CPU, compile_model=backend or False)
    rec.matcher.set_targets(2, torch.tensor([1, 2]))
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([1] * (args.batch // 2) + [2] * (args.batch - args.batch // 2))
    p = AugmentParams(0, 0, args.size, args.size, False, 0, 0)

    def step():
        xi = x.clone().requires_grad_(True)
        loss = rec.step_loss(xi, labels, 2, [p])[0]
        loss.backward()
        return float(loss.detach())
    try:
        return timed(step, args.steps)
    finally:
        rec.close()


def student_step(backend: str | None, args):
    torch.manual_seed(0)
    model = build_model("resnet18", 10).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every call sees the same weights
    forward = torch.compile(model, backend=backend) if backend else model
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(args.batch, 3, args.size, args.size, generator=gen), torch.randn(args.batch, 10, generator=gen)

    def step():
        opt.zero_grad()
        loss = kd_loss(forward(x), t, 20.0, "kl", reduction="sum") / args.batch
        loss.backward()
        opt.step()
        return float(loss.detach())
    return timed(step, args.steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backends", nargs="+", default=["aot_eager", "inductor"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; ResNet-18, {args.size} px, batch {args.batch}")
    for name, fn in (("recover step (BN matching)", recover_step), ("student KD step", student_step)):
        first, step, ref = fn(None, args)
        print(f"{name}: eager first call {first:.2f}s, step {step * 1e3:.0f} ms")
        for backend in args.backends:
            torch._dynamo.reset()
            first, step, loss = fn(backend, args)
            print(f"    {backend:10s} first call (compile) {first:6.1f}s, step {step * 1e3:5.0f} ms, "
                  f"loss diff from eager {abs(loss - ref) / abs(ref):.1e} (relative)")


if __name__ == "__main__":
    main()
