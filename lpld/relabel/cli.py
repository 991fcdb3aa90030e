"""Command-line entry points behind relabel_and_validate/{relabel,check_labels,convert_labels}.py."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..config import ArgumentParser, Option, argument_type, parse_config
from ..labels import convert, open_label_store
from ..labels.common import describe_ids
from ..utils.errors import InputValueError
from ..utils.log import get_logger
from .generate import repair_store, run_relabel
from .replay import digest_failures, replay_check
from .schema import RELABEL_SCHEMA

log = get_logger(__name__)

# Ranges of the plain flags of check-labels and convert-labels (the relabel stage's are in its schema).
CLASSES = argument_type(Option(None, int, min=1))
SIZE = argument_type(Option(None, int, min=1))
BATCH_ID = argument_type(Option(None, int, min=0))
TOLERANCE = argument_type(Option(None, float, min=0))
TOPK = argument_type(Option(None, int, min=1))


def _dashed(argv: Sequence[str], names) -> list[str]:
    """Accept the authors' underscore flags (``--train_dir``, ``--fkd_path``) next to ours."""
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if flag.startswith("--") and flag[2:] in names:
            flag = "--" + flag[2:].replace("_", "-")
        out.append(flag + eq + value)
    return out


def main_relabel(argv: Sequence[str] | None = None) -> str:
    argv = _dashed(sys.argv[1:] if argv is None else argv, RELABEL_SCHEMA)
    cfg = parse_config(RELABEL_SCHEMA, argv, sections=("common", "relabel"),
                       description="Generate FKD soft labels (stage 3a). Reads the common and relabel "
                                   "sections of the authors' cfg/reproduce/*.yaml.")
    return run_relabel(cfg)


def main_check(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(description="Check a label store: the checksum of every batch, then (with "
                                            "--train-dir and --teacher-ckpt) the content hashes of the images and "
                                            "teacher, and a replay: re-apply the recorded crop/flip/mix to the "
                                            "images, rerun the teacher, report the max difference from the stored "
                                            "logits. --repair regenerates exactly the damaged batches.")
    p.add_argument("--store", required=True, help="label store (ours or the authors' epoch_*/batch_*.tar folder)")
    p.add_argument("--train-dir", default=None, help="the distilled images the labels were generated from")
    p.add_argument("--teacher-ckpt", "--weights", dest="teacher_ckpt", default=None, help="teacher checkpoint")
    p.add_argument("--model", default=None, help="teacher architecture (default: from the store's manifest)")
    p.add_argument("--tiny-stem", default=None, action=argparse.BooleanOptionalAction)
    p.add_argument("--num-classes", type=CLASSES, default=None)
    p.add_argument("--dataset", default=None, help="needed for an authors' folder without lpld_manifest.json")
    p.add_argument("--input-size", type=SIZE, default=None, help="likewise")
    p.add_argument("--batches", type=BATCH_ID, nargs="*", default=None,
                   help="batch ids to replay (default: 4 spread over the store); one number = how many")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default=None, action=argparse.BooleanOptionalAction)
    p.add_argument("--tolerance", type=TOLERANCE, default=None,
                   help="pass threshold (default: 4 x fp16 half-ulp at the largest logit)")
    p.add_argument("--repair", action="store_true",
                   help="regenerate the damaged batches in place (needs --train-dir and --teacher-ckpt: the "
                        "images and teacher the store records)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.repair:
        if not (args.train_dir and args.teacher_ckpt):
            p.error("--repair needs --train-dir and --teacher-ckpt (the images and teacher the store was made from)")
        repair_store(args.store, args.train_dir, args.teacher_ckpt, model=args.model, tiny_stem=args.tiny_stem,
                     device="cpu" if args.device == "auto" else args.device)
    store = open_label_store(args.store, num_classes=args.num_classes, train_dir=args.train_dir)
    if args.batches and len(args.batches) > 1 and max(args.batches) >= store.num_batches:
        raise InputValueError(f"--batches {max(args.batches)} is not in {args.store}, which holds batches "
                              f"0..{store.num_batches - 1}; give ids below {store.num_batches} (or one number: "
                              f"how many to replay)")
    damaged = store.verify()
    if damaged:
        log.info(f"[check_labels] {args.store}: {len(damaged)} of {store.num_batches} batches fail their checksum "
                 f"({describe_ids(damaged)}) -> DAMAGED. Regenerate them with --repair --train-dir <images> "
                 f"--teacher-ckpt <teacher>.")
        return 1
    log.info(f"[check_labels] {args.store}: {store.num_batches} batches, every checksum verified"
             if getattr(store, "has_checksums", True) else f"[check_labels] {args.store}: {store.num_batches} batches "
             f"(no checksums recorded)")
    if getattr(store, "regenerated", False):
        if not args.train_dir:
            log.info("[check_labels] the store regenerates its augmentation: pass --train-dir to check every "
                     "batch's augmentation digest")
        else:
            bad = digest_failures(store)
            if bad:
                log.info(f"[check_labels] {args.store}: {len(bad)} of {store.num_batches} batches draw another "
                         f"augmentation than their digest ({describe_ids(bad)}) -> DRIFT (another torch version or "
                         f"device than the relabel run, or other images). Train with the relabel run's torch version "
                         f"or relabel with --augmentation recorded.")
                return 1
            log.info(f"[check_labels] {args.store}: every batch's regenerated augmentation matches its digest")
    if not (args.train_dir and args.teacher_ckpt):
        log.info("[check_labels] pass --train-dir and --teacher-ckpt to also check the images and teacher")
        return 0
    batches = args.batches
    if batches is not None and len(batches) == 1:
        batches = batches[0]
    rep = replay_check(args.store, args.train_dir, model=args.model, teacher_ckpt=args.teacher_ckpt,
                       tiny_stem=args.tiny_stem, num_classes=args.num_classes, dataset=args.dataset,
                       input_size=args.input_size, batches=batches, device=args.device, amp=args.amp, report=True)
    tol = args.tolerance if args.tolerance is not None else rep.fp16_tolerance
    ok = rep.max_abs_diff <= tol and rep.topk_misses == 0
    what = "teacher at the stored classes" if store.manifest.get("label_topk") else "teacher"
    misses = f", {rep.topk_misses} rows whose stored classes are not the teacher's top k" if rep.topk_misses else ""
    log.info(f"[check_labels] batches {rep.batches}: max |{what} - stored| = {rep.max_abs_diff:.3g} "
             f"(largest logit {rep.max_abs_logit:.3g}, tolerance {tol:.3g}{misses}) -> {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


def main_convert(argv: Sequence[str] | None = None) -> str:
    p = ArgumentParser(description="Convert a soft-label store between our format and the authors'.")
    p.add_argument("--src", required=True, help="store to read (either format, auto-detected)")
    p.add_argument("--dst", required=True, help="store to write")
    p.add_argument("--to", required=True, choices=("ours", "authors", "lpqld"),
                   help="ours | authors (LPLD epoch_*/batch_*.tar) | lpqld (LPQLD flat batch_*.tar)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --dst")
    p.add_argument("--num-classes", type=CLASSES, default=None,
                   help="class count of an LPQLD top-k folder (their files do not record it: 1000, 200, 10450)")
    p.add_argument("--train-dir", default=None, help="the images, for a store with regenerated augmentation")
    p.add_argument("--label-topk", type=TOPK, default=None, help="keep the top k of full logits")
    p.add_argument("--label-codec", default=None, choices=("float16", "uint8"), help="top-k values (ours only)")
    p.add_argument("--augmentation", default=None, choices=("recorded", "regenerated"), help="ours only")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    out = convert(args.src, args.dst, to=args.to, overwrite=args.overwrite, num_classes=args.num_classes,
                  train_dir=args.train_dir, label_topk=args.label_topk, label_codec=args.label_codec,
                  augmentation=args.augmentation)
    store = open_label_store(out, num_classes=args.num_classes)
    log.info(f"[convert_labels] {args.src} -> {out} ({args.to}): {store.num_batches} batches, {store.nbytes():,} bytes")
    return out
