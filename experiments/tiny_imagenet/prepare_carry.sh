#!/usr/bin/env bash
# Fill one carry folder (a git-ignored folder in the repo root, named in the device call's `carry`)
# with what a GPU call needs, and check the 64 MiB limit on what travels (working tree + carry).
#
# usage: experiments/tiny_imagenet/prepare_carry.sh CARRY_DIR ITEM...
#   shard:NAME          Tiny-ImageNet shard (train-0..train-3, val) + SHA256SUMS + wnids/words -> CARRY_DIR/tiny/
#   teacher             $ART/teacher/teacher_fp16.pth.part-* + .sha256 (class-BN teacher: recovery)
#   teacher:plain       $ART/teacher/teacher_plain_fp16.pth.part-* + .sha256 (no class BN: relabel/validate)
#   images:METHOD:IPC   $ART/images/METHOD_ipcIPC_c*.tar                                  -> CARRY_DIR/images/
# CARRY_DIR is emptied first. Env: TINY_SRC (../shared/data/tiny-imagenet-200), ART (.artifacts:
# where the files that came back from earlier calls are kept), LIMIT_MIB (63).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
TINY_SRC=${TINY_SRC:-$REPO/../shared/data/tiny-imagenet-200}
ART=${ART:-.artifacts}
LIMIT_MIB=${LIMIT_MIB:-63}

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 1
fi
CARRY=$1
shift
case "$CARRY" in
    .carry*) ;;
    *) echo "prepare_carry.sh: CARRY_DIR must be a repo-root folder named .carry* (got '$CARRY')" >&2; exit 2 ;;
esac

# carry folders, machine-local work and kept artifacts must not travel as untracked files
if [ -d .git ]; then
    for pattern in '/.carry*/' '/.data/' '/.artifacts/'; do
        grep -qxF "$pattern" .git/info/exclude 2>/dev/null || echo "$pattern" >> .git/info/exclude
    done
fi

rm -rf "$CARRY"
mkdir -p "$CARRY"
for item in "$@"; do
    case "$item" in
        shard:*)
            name=${item#shard:}
            mkdir -p "$CARRY/tiny"
            cp "$TINY_SRC/$name.tar.gz" "$TINY_SRC/SHA256SUMS" "$TINY_SRC/wnids.txt" "$TINY_SRC/words.txt" "$CARRY/tiny/"
            ;;
        teacher|teacher:plain)
            name=teacher_fp16.pth
            [ "$item" = teacher:plain ] && name=teacher_plain_fp16.pth
            ls "$ART"/teacher/$name.part-* >/dev/null 2>&1 || {
                echo "prepare_carry.sh: no $ART/teacher/$name.part-* (copy the class_stats call's files there)" >&2; exit 2; }
            mkdir -p "$CARRY/teacher"
            cp "$ART"/teacher/$name.part-* "$ART/teacher/$name.sha256" "$CARRY/teacher/"
            ;;
        images:*:*)
            spec=${item#images:}
            method=${spec%%:*}
            ipc=${spec#*:}
            ls "$ART"/images/"${method}"_ipc"${ipc}"_c*.tar >/dev/null 2>&1 || {
                echo "prepare_carry.sh: no $ART/images/${method}_ipc${ipc}_c*.tar (copy the recover calls' tars there)" >&2; exit 2; }
            mkdir -p "$CARRY/images"
            cp "$ART"/images/"${method}"_ipc"${ipc}"_c*.tar "$CARRY/images/"
            ;;
        *) echo "prepare_carry.sh: unknown item '$item' (shard:NAME, teacher, teacher:plain, images:METHOD:IPC)" >&2; exit 2 ;;
    esac
done

carry_bytes=$(du -sb "$CARRY" | awk '{print $1}')
if [ -d .git ]; then
    tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null |
                 awk '{s += $1} END {print s + 0}')
else
    tree_bytes=0
fi
total_mib=$(( (carry_bytes + tree_bytes) / 1048576 ))
echo "prepare_carry.sh: $CARRY holds $(( carry_bytes / 1048576 )) MiB ($*); working tree $(( tree_bytes / 1048576 )) MiB; total ${total_mib} MiB of 64"
if [ "$total_mib" -gt "$LIMIT_MIB" ]; then
    echo "prepare_carry.sh: over ${LIMIT_MIB} MiB: split the items over two calls" >&2
    exit 3
fi
