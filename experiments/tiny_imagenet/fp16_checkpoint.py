#!/usr/bin/env python
"""Move a teacher between machines within the device limits (files back: 16 MiB each, 8 per call;
carry: 64 MiB per call): cast to fp16 and split into parts, then join and verify.

    python experiments/tiny_imagenet/fp16_checkpoint.py export CKPT OUT_DIR [--name teacher_fp16.pth]
        [--part-mib 15] [--plain]
    python experiments/tiny_imagenet/fp16_checkpoint.py join PARTS_DIR OUT_FILE [--name teacher_fp16.pth]

``export`` writes ``OUT_DIR/NAME.part-00, -01, ...`` and ``OUT_DIR/NAME.sha256`` (checksum of the
joined file). Weights and class-BN statistics become fp16; the ordinary BN running statistics (a few
KB), integer buffers and any tensor fp16 cannot hold (|x| > 65504) stay as they are;
``--plain`` drops the class-BN buffers (``class_running_mean/var``) for stages that need only the
plain teacher (relabel, validate, diversity), saving ~4 MB for ResNet-18 / 200 classes. The largest
relative change of any tensor is printed. Loading an fp16 checkpoint into an fp32 model casts back
(``lpld.models.load_weights``); the fp16 rounding is a deviation worth one evaluation (see README).
``join`` concatenates the parts in order and fails unless the checksum matches.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import sys

import torch

CLASS_BUFFERS = ("class_running_mean", "class_running_var")


KEEP_FP32 = ("running_mean", "running_var")  # ordinary BN statistics: a few KB, kept exact


def to_fp16(state: dict, plain: bool = False) -> tuple[dict, float, list[str]]:
    """fp16 copy of a state dict: weights and class-BN statistics in fp16; the ordinary BN running
    statistics, and any tensor fp16 cannot hold (|x| > 65504), stay fp32. Returns the state, the
    largest error relative to each tensor's largest magnitude, and the keys kept in fp32."""
    out, worst, kept = {}, 0.0, []
    for key, value in state.items():
        if plain and key.endswith(CLASS_BUFFERS):
            continue
        ordinary_bn = key.endswith(KEEP_FP32) and not key.endswith(CLASS_BUFFERS)
        if value.is_floating_point() and not ordinary_bn:
            half = value.half()
            if torch.isfinite(half).all() or not torch.isfinite(value).all():
                scale = value.float().abs().max().clamp_min(1e-12)
                worst = max(worst, float((half.float() - value.float()).abs().max() / scale))
                value = half
            else:
                kept.append(key)
        out[key] = value
    return out, worst, kept


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export(ckpt: str, out_dir: str, name: str, part_mib: float, plain: bool) -> list[str]:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from lpld.models import read_state_dict
    state, worst, kept = to_fp16(read_state_dict(ckpt), plain)
    os.makedirs(out_dir, exist_ok=True)
    whole = os.path.join(out_dir, f".{name}.tmp")
    torch.save({"model": state, "source": os.path.basename(ckpt), "dtype": "float16"}, whole)
    digest = sha256(whole)
    for old in glob.glob(os.path.join(out_dir, f"{name}.part-*")):
        os.remove(old)
    parts, size = [], int(part_mib * 2 ** 20)
    with open(whole, "rb") as f:
        for i, block in enumerate(iter(lambda: f.read(size), b"")):
            part = os.path.join(out_dir, f"{name}.part-{i:02d}")
            with open(part, "wb") as g:
                g.write(block)
            parts.append(part)
    total = os.path.getsize(whole)
    os.remove(whole)
    with open(os.path.join(out_dir, f"{name}.sha256"), "w") as f:
        f.write(f"{digest}  {name}\n")
    print(f"{ckpt} -> {len(parts)} part(s) of {name} in {out_dir} ({total / 2**20:.1f} MiB fp16, "
          f"{'without' if plain else 'with'} class-BN buffers; largest relative cast error {worst:.2e}; "
          f"BN running statistics fp32" + (f"; kept fp32 (out of fp16 range): {kept}" if kept else "") + ")")
    return parts


def join(parts_dir: str, out_file: str, name: str) -> str:
    parts = sorted(glob.glob(os.path.join(parts_dir, f"{name}.part-*")))
    if not parts:
        raise FileNotFoundError(f"no {name}.part-* files in {parts_dir}")
    sum_file = os.path.join(parts_dir, f"{name}.sha256")
    if not os.path.isfile(sum_file):
        raise FileNotFoundError(f"{sum_file} not found: cannot verify the joined file")
    want = open(sum_file).read().split()[0]
    tmp = out_file + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                out.write(f.read())
    got = sha256(tmp)
    if got != want:
        os.remove(tmp)
        raise ValueError(f"joined {len(parts)} parts of {name} from {parts_dir}: sha256 {got} != {want} "
                         f"(a part is missing or truncated)")
    os.replace(tmp, out_file)
    print(f"joined {len(parts)} part(s) -> {out_file} (sha256 ok)")
    return out_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="cast to fp16 and split into parts")
    e.add_argument("ckpt")
    e.add_argument("out_dir")
    e.add_argument("--name", default="teacher_fp16.pth")
    e.add_argument("--part-mib", type=float, default=15.0)
    e.add_argument("--plain", action="store_true", help="drop the class-BN buffers")
    j = sub.add_parser("join", help="concatenate the parts and verify the checksum")
    j.add_argument("parts_dir")
    j.add_argument("out_file")
    j.add_argument("--name", default="teacher_fp16.pth")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "export":
            export(args.ckpt, args.out_dir, args.name, args.part_mib, args.plain)
        else:
            join(args.parts_dir, args.out_file, args.name)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
