#!/usr/bin/env python
"""A K-class subset of a staged Tiny-ImageNet folder, in the original layout (symlinked images):

    python experiments/tiny_imagenet/make_subset.py STAGED_ROOT SUBSET_ROOT --classes 10

Classes are the first K wnids in sorted order; train keeps whatever shards were staged, val keeps
the 50 validation images of each kept class. Used for reduced CPU runs of the whole pipeline.
"""
import argparse
import os


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--classes", type=int, default=10)
    args = p.parse_args()
    with open(os.path.join(args.src, "wnids.txt")) as f:
        wnids = sorted(line.strip() for line in f if line.strip())[: args.classes]
    os.makedirs(os.path.join(args.dst, "val", "images"), exist_ok=True)
    with open(os.path.join(args.dst, "wnids.txt"), "w") as f:
        f.write("\n".join(wnids) + "\n")
    for w in wnids:
        src, dst = os.path.join(args.src, "train", w, "images"), os.path.join(args.dst, "train", w, "images")
        os.makedirs(dst, exist_ok=True)
        for name in os.listdir(src):
            if not os.path.lexists(os.path.join(dst, name)):
                os.symlink(os.path.join(src, name), os.path.join(dst, name))
    keep = set(wnids)
    lines = []
    with open(os.path.join(args.src, "val", "val_annotations.txt")) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) > 1 and parts[1] in keep:
                lines.append(line)
                link = os.path.join(args.dst, "val", "images", parts[0])
                if not os.path.lexists(link):
                    os.symlink(os.path.join(args.src, "val", "images", parts[0]), link)
    with open(os.path.join(args.dst, "val", "val_annotations.txt"), "w") as f:
        f.writelines(lines)
    print(f"{args.dst}: {len(wnids)} classes, {len(lines)} val images")


if __name__ == "__main__":
    main()
