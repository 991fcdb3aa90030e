#!/usr/bin/env bash
# Stage Tiny-ImageNet shards into one folder in the original layout (what lpld.data.TinyImageNet reads):
#   TARGET/wnids.txt, TARGET/words.txt, TARGET/train/<wnid>/images/*.JPEG, TARGET/val/...
#
# usage: experiments/tiny_imagenet/stage_data.sh TARGET [SHARD ...]
#   SHARD: train-0 train-1 train-2 train-3 val | train (= all four train shards) | all (default)
#   TINY_SRC: folder with the *.tar.gz shards, SHA256SUMS, wnids.txt, words.txt
#             (default: ../shared/data/tiny-imagenet-200 next to the repo). On the GPU machine it is a
#             carried folder holding only the shards of that call plus SHA256SUMS and the .txt files.
#
# Every file is checked against SHA256SUMS before use. Idempotent: a shard is unpacked once; the
# marker TARGET/.staged/<shard> (its checksum) is written only after tar succeeded, so an interrupted
# run unpacks that shard again next time. Shard s holds images k = 125*s .. 125*s+124 of every class.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TINY_SRC=${TINY_SRC:-$REPO/../shared/data/tiny-imagenet-200}

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 1
fi
TARGET=$1
shift
SHARDS=("$@")
[ ${#SHARDS[@]} -eq 0 ] && SHARDS=(all)

expanded=()
for s in "${SHARDS[@]}"; do
    case "$s" in
        all) expanded+=(train-0 train-1 train-2 train-3 val) ;;
        train) expanded+=(train-0 train-1 train-2 train-3) ;;
        train-[0-3]|val) expanded+=("$s") ;;
        *) echo "stage_data.sh: unknown shard '$s' (expected train-0..train-3, val, train or all)" >&2; exit 2 ;;
    esac
done

if [ ! -f "$TINY_SRC/SHA256SUMS" ]; then
    echo "stage_data.sh: $TINY_SRC/SHA256SUMS not found; set TINY_SRC to the folder holding the shards" >&2
    exit 2
fi

expected_sum() {  # expected_sum FILE -> the checksum listed in SHA256SUMS
    local sum
    sum=$(awk -v f="$1" '$2 == f || $2 == "*"f {print $1}' "$TINY_SRC/SHA256SUMS")
    if [ -z "$sum" ]; then
        echo "stage_data.sh: $1 is not listed in $TINY_SRC/SHA256SUMS" >&2
        exit 2
    fi
    echo "$sum"
}

verify() {  # verify FILE: fail unless TINY_SRC/FILE matches SHA256SUMS
    local file=$TINY_SRC/$1 want got
    if [ ! -f "$file" ]; then
        echo "stage_data.sh: $file not found (is the shard in TINY_SRC=$TINY_SRC?)" >&2
        exit 2
    fi
    want=$(expected_sum "$1")
    got=$(sha256sum "$file" | awk '{print $1}')
    if [ "$want" != "$got" ]; then
        echo "stage_data.sh: checksum mismatch for $file: expected $want, got $got (corrupt or partial copy)" >&2
        exit 3
    fi
}

mkdir -p "$TARGET/.staged"
for txt in wnids.txt words.txt; do
    want=$(expected_sum "$txt")
    if [ ! -f "$TARGET/$txt" ] || [ "$(sha256sum "$TARGET/$txt" | awk '{print $1}')" != "$want" ]; then
        verify "$txt"
        cp "$TINY_SRC/$txt" "$TARGET/$txt.tmp" && mv "$TARGET/$txt.tmp" "$TARGET/$txt"
    fi
done

for shard in "${expanded[@]}"; do
    archive=$shard.tar.gz
    want=$(expected_sum "$archive")
    marker=$TARGET/.staged/$shard
    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
        echo "stage_data.sh: $shard already staged in $TARGET"
        continue
    fi
    verify "$archive"
    start=$(date +%s)
    tar -xzf "$TINY_SRC/$archive" -C "$TARGET"
    echo "$want" > "$marker.tmp" && mv "$marker.tmp" "$marker"
    echo "stage_data.sh: staged $shard into $TARGET ($(( $(date +%s) - start )) s)"
done

train_images=$(find "$TARGET/train" -name '*.JPEG' 2>/dev/null | wc -l || true)
val_images=$(find "$TARGET/val/images" -name '*.JPEG' 2>/dev/null | wc -l || true)
echo "stage_data.sh: $TARGET holds $train_images train and $val_images val images"
