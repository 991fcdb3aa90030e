"""Numerics of mixed precision: what bf16 autocast does to the KD loss at T=20 and to the class-wise
BN statistics, measured on CPU (CPU autocast computes in bfloat16 like a GPU's).

1. KD loss and its gradient w.r.t. the student logits, bf16 vs fp32, on real teacher logits: the
   teacher's logits (stored as fp16, as the label store does) on replayed CutMix views of the
   training images, and a student trained briefly on them. Variants: the whole student under
   autocast (logits from a bf16 classifier), autocast with the classifier kept in fp32 (what
   ``lpld.validate`` does), and the fp32 logits merely rounded to bf16.
2. Top-1 agreement of evaluation on bf16 vs fp32 logits.
3. Class-wise BN statistics (the class-statistics pass) under bf16 autocast vs fp32.

    python benchmarks/bench_numerics.py --teacher outputs/demo/squeeze/teacher.pth \\
        --data outputs/demo/data --classes 10 --size 32
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.augment import replay_batch, sample_batch_params  # noqa: E402
from lpld.data import ImageFolder, load_rgb, normalization, val_transform  # noqa: E402
from lpld.models import (build_model, class_bn_layers, class_labels, finalize_exact_class_stats,  # noqa: E402
                         set_class_stats_mode)
from lpld.utils.runtime import autocast, keep_logits_fp32  # noqa: E402
from lpld.validate.loss import kd_loss  # noqa: E402

CPU = torch.device("cpu")


def views(images: ImageFolder, batch_id: int, batch: int, size: int, mean, std, gen: torch.Generator):
    cache = {}

    def load(i):
        if i not in cache:
            cache[i] = load_rgb(images.samples[i][0])
        return cache[i]

    idx = torch.randint(0, len(images), (batch,), generator=gen).tolist()
    rec = sample_batch_params(batch_id, idx, [load(i).size for i in idx], seed=0, size=size, mix_type="cutmix")
    return replay_batch(load, rec, size, mean, std)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def loss_and_grad(logits: torch.Tensor, teacher: torch.Tensor, temperature: float, variant: str):
    x = logits.detach().float().requires_grad_(True) if logits.dtype != torch.float32 else logits.detach().requires_grad_(True)
    loss = kd_loss(x, teacher, temperature, variant)
    loss.backward()
    return loss.detach(), x.grad


def kd_section(args, teacher, images, mean, std) -> None:
    gen = torch.Generator().manual_seed(0)
    student = build_model("resnet18", args.classes)
    opt = torch.optim.AdamW(student.parameters(), lr=2e-3)
    t0 = time.time()
    student.train()
    for step in range(args.student_steps):  # a student part-way to its teacher, as during training
        x = views(images, 1000 + step, args.batch, args.size, mean, std, gen)
        with torch.no_grad():
            t = teacher(x).half()
        opt.zero_grad()
        kd_loss(student(x), t, 4.0, "kl_t2").backward()
        opt.step()
    student.eval()
    print(f"student: {args.student_steps} KD steps in {time.time() - t0:.0f}s")
    x = torch.cat([views(images, b, args.batch, args.size, mean, std, gen) for b in range(args.eval_batches)])
    with torch.no_grad():
        t = teacher(x).half()  # stored fp16, as relabel writes them
        fp32 = student(x)
        with autocast(CPU, True):
            bf16 = student(x)
        head = keep_logits_fp32(build_model("resnet18", args.classes))
        head.load_state_dict(student.state_dict())
        head.eval()
        with autocast(CPU, True):
            bf16_head = head(x)
    print(f"logits: {x.shape[0]} replayed CutMix views; student/teacher top-1 agreement "
          f"{float((fp32.argmax(1) == t.float().argmax(1)).float().mean()) * 100:.1f}%")
    for temperature in args.temperatures:
        for variant in ("kl", "kl_t2"):
            ref_loss, ref_grad = loss_and_grad(fp32, t, temperature, variant)
            print(f"T={temperature:g} {variant}: fp32 loss {float(ref_loss):.6g}")
            for name, logits in (("bf16 autocast, bf16 classifier", bf16),
                                 ("bf16 autocast, fp32 classifier", bf16_head),
                                 ("fp32 logits rounded to bf16", fp32.bfloat16())):
                loss, grad = loss_and_grad(logits, t, temperature, variant)
                print(f"    {name:32s} loss rel. err {abs(float(loss) - float(ref_loss)) / abs(float(ref_loss)):.2e}"
                      f"   grad rel. err {rel(grad, ref_grad):.2e}   logits rel. err {rel(logits.float(), fp32):.2e}")
    agree = float((bf16.float().argmax(1) == fp32.argmax(1)).float().mean()) * 100
    agree_head = float((bf16_head.argmax(1) == fp32.argmax(1)).float().mean()) * 100
    print(f"top-1 of bf16 vs fp32 logits: same class for {agree:.2f}% (bf16 classifier), "
          f"{agree_head:.2f}% (fp32 classifier) of {x.shape[0]} views")


def class_stats_section(args, path: str, images: ImageFolder, mean, std) -> None:
    transform = val_transform(args.size, "demo")
    n = min(len(images), args.stats_images)
    xs = torch.stack([transform(load_rgb(images.samples[i][0])) for i in range(n)])
    ys = torch.tensor([images.samples[i][1] for i in range(n)])
    results = {}
    for amp in (False, True):
        for mode in ("exact", "ema"):
            model = build_model("resnet18", args.classes, class_aware=True, weights=path).eval()
            set_class_stats_mode(model, mode)
            with torch.no_grad():
                for k in range(0, n, args.batch):
                    with class_labels(model, ys[k:k + args.batch]), autocast(CPU, amp):
                        model(xs[k:k + args.batch])
            if mode == "exact":
                finalize_exact_class_stats(model)
            results[(amp, mode)] = [(m.class_running_mean.clone(), m.class_running_var.clone())
                                    for m in class_bn_layers(model)]
    print(f"class statistics over {n} images ({args.batch} per batch), bf16 autocast vs fp32, "
          f"relative error per BN layer (norm over classes x channels):")
    for mode in ("exact", "ema"):
        errs_m = [rel(a[0], b[0]) for a, b in zip(results[(True, mode)], results[(False, mode)])]
        errs_v = [rel(a[1], b[1]) for a, b in zip(results[(True, mode)], results[(False, mode)])]
        print(f"    {mode:5s}: mean max {max(errs_m):.2e} (median {sorted(errs_m)[len(errs_m) // 2]:.2e}); "
              f"var max {max(errs_v):.2e} (median {sorted(errs_v)[len(errs_v) // 2]:.2e})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="demo teacher checkpoint ({'model': state_dict})")
    p.add_argument("--data", required=True, help="demo dataset root (with train/)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--student-steps", type=int, default=60)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--temperatures", type=float, nargs="+", default=[20.0, 4.0])
    p.add_argument("--stats-images", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = ImageFolder(os.path.join(args.data, "train"))
    mean, std = normalization("demo")
    teacher = build_model("resnet18", args.classes, weights=args.teacher).eval()
    print(f"torch {torch.__version__}, CPU autocast bf16; teacher {args.teacher}; {len(images)} training images, "
          f"{args.size} px")
    kd_section(args, teacher, images, mean, std)
    class_stats_section(args, args.teacher, images, mean, std)


if __name__ == "__main__":
    main()
