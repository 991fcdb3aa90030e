#!/usr/bin/env bash
# Download the LPLD authors' released artifacts (class-BN teachers, distilled images, soft labels)
# from Google Drive with gdown and unpack them into the folders the stages read by default.
#
#   bash download.sh [true|false] [--datasets tiny,in1k,in21k] [--what images,teachers,labels]
#                    [--dest DIR] [--keep-archives] [--dry-run] [-h|--help]
#
# The positional true|false keeps the meaning of the authors' download.sh: true = fetch only the
# 40x-pruned labels (one file per dataset/IPC), false (default) = fetch the authors' all-labels
# Drive folder. Layout, sizes and options: docs/downloads.md.
#
# Safety: every file is fetched to a hidden ".partial" name and renamed once gdown succeeds;
# archives are unpacked (python3's tarfile / zipfile, see safe_extract: only regular files and
# folders, no owners, no set-id or world-write bits) into a hidden temporary folder whose entries
# are renamed into place only after that succeeded; a ".<archive>.complete" marker next to the
# data records completion, so a re-run skips it. On any failure the temporary files are removed
# and the script exits non-zero naming the Drive id and the step that failed.
set -euo pipefail

# ---- Published artifacts ------------------------------------------------------------------------
# One line per Drive item: dataset | group | kind | Drive id | file name | folder under --dest |
# size (authors' README) | where the id is published.
#   group: teachers, images, labels40x (true mode), labelsall (false mode)
#   kind:  file (kept as is), tar (tar.gz, unpacked where it lies, as the authors' `tar -xvf`),
#          folder (a Drive folder fetched with `gdown --folder`; the archives in it are unpacked)
# Teacher file names are the defaults of the authors' recover scripts
# (recover/scripts/{imagenet1k,tiny,in21k}_recover.sh: model_with_class_bn/resnet18_0.pth,
# resnet18_tiny_0.pth, resnet18_21k_0.pth). Image archive names are the train_dir folder names of
# relabel_and_validate/scripts/reproduce/*.sh; 40x label names are the authors' download.sh -O names.
ARTIFACTS='
in1k|teachers|file|1Vfou8nPp3x7m7YEG0wd7FcuQ_yE9jj34|resnet18_0.pth|recover/model_with_class_bn|50.41 MB|README "Model with Class BN"
tiny|teachers|file|1sCArvJoHFthbSaBuWoUhDn67tsYtRPTn|resnet18_tiny_0.pth|recover/model_with_class_bn|81.30 MB|README "Model with Class BN"
in21k|teachers|file|1BuplTqBhXKzdfJqCKkTBg218Cbezef57|resnet18_21k_0.pth|recover/model_with_class_bn|445.87 MB|README "Model with Class BN"
in1k|images|tar|1lXN_zi8LRq1pvrVZZgQA6W_ZU83BwvUf|LPLD_in1k_rn18_4k_ipc10.tar.gz|recover/syn_data_LPLD|0.15 GB|README "Distilled Image Dataset"
in1k|images|tar|18q2MZ5sr9AfNYqcd-NAa3-j3m7LRXKwN|LPLD_in1k_rn18_4k_ipc20.tar.gz|recover/syn_data_LPLD|0.30 GB|README "Distilled Image Dataset"
in1k|images|tar|1o081uXC-ebu28S_uuT04liACqAwhjA1O|LPLD_in1k_rn18_4k_ipc50.tar.gz|recover/syn_data_LPLD|0.75 GB|README "Distilled Image Dataset"
in1k|images|tar|18maJqCbuPXKT8zBHTLebbMbUgGwJIn4o|LPLD_in1k_rn18_4k_ipc100.tar.gz|recover/syn_data_LPLD|1.49 GB|README "Distilled Image Dataset"
in1k|images|tar|1-dLbdD3ww5wap4LpSjb1Ees4II4crv7p|LPLD_in1k_rn18_4k_ipc200.tar.gz|recover/syn_data_LPLD|2.98 GB|README "Distilled Image Dataset"
tiny|images|tar|1W0JUOAZBrQwIlquIgOpdbFi5C_s8TNt8|LPLD_tiny_rn18_4k_ipc50.tar.gz|recover/syn_data_LPLD|21 MB|README "Distilled Image Dataset"
tiny|images|tar|1cQDD8OfMfoshsDIaiWOQb95pn2q9veuk|LPLD_tiny_rn18_4k_ipc100.tar.gz|recover/syn_data_LPLD|40 MB|README "Distilled Image Dataset"
in21k|images|tar|1DgmZNr1swgJrKZySjk1smgOiGr0mUU2R|LPLD_in21k_rn18_2k_ipc10.tar.gz|recover/syn_data_LPLD|3 GB|README "Distilled Image Dataset"
in21k|images|tar|1rycYU2q6JeUbGUDPBatr_QJQMJQSnGUk|LPLD_in21k_rn18_2k_ipc20.tar.gz|recover/syn_data_LPLD|5 GB|README "Distilled Image Dataset"
in1k|labels40x|tar|1Nf1piVIXIF-_v-jCEmaYGHdWTXsuQIkY|FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc10_ratio975.tar.gz|relabel_and_validate/syn_label_LPLD|0.14 GB|download.sh download_40x_labels + README labels table
in1k|labels40x|tar|1AdP44DJUadFlY1WCrYiE7F6slotk3Vx4|FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc20_ratio975.tar.gz|relabel_and_validate/syn_label_LPLD|0.29 GB|download.sh download_40x_labels + README labels table
in1k|labels40x|tar|1GnCY-Apg-dXgZe8BvDwDKqrQSAz1PAbs|FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc50_ratio975.tar.gz|relabel_and_validate/syn_label_LPLD|0.71 GB|download.sh download_40x_labels + README labels table
in1k|labels40x|tar|12f6qUjsoN6AczK7iJz2ZAT8xNiX0W4bX|FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc100_ratio975.tar.gz|relabel_and_validate/syn_label_LPLD|1.43 GB|download.sh download_40x_labels + README labels table
in1k|labels40x|tar|1mHWwOaB0yG7fP_lbDSZMmIHUrMh_nDWZ|FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc200_ratio975.tar.gz|relabel_and_validate/syn_label_LPLD|2.85 GB|download.sh download_40x_labels + README labels table
tiny|labels40x|tar|1Yzgu-I96ODg2J8_AhGuNOP2mlUtbCzHU|FKD_cutmix_fp16_LPLD_tiny_rn18_4k_ipc50_ratio975.tar.gz|relabel_and_validate/syn_label_LPLD|11 MB|download.sh download_40x_labels + README labels table
tiny|labels40x|tar|1oJuUIq36raTtD63sfzT37ZJ3kGqZGqbv|FKD_cutmix_fp16_LPLD_tiny_rn18_4k_ipc100_ratio975.tar.gz|relabel_and_validate/syn_label_LPLD|22 MB|download.sh download_40x_labels + README labels table
in21k|labels40x|tar|1inuNAC7ApJWiuXaCsEwWU9_z7DOpMBzG|FKD_cutout_fp16_LPLD_in21k_rn18_2k_ipc10_ratio975.tar.gz|relabel_and_validate/syn_label_LPLD|16 GB|download.sh download_40x_labels + README labels table
in21k|labels40x|tar|1g52Lo2XoKHbJySkiLFo3Gsl6hnjffOEN|FKD_cutout_fp16_LPLD_in21k_rn18_2k_ipc20_ratio975.tar.gz|relabel_and_validate/syn_label_LPLD|32 GB|download.sh download_40x_labels + README labels table
in1k,tiny|labelsall|folder|1usMukSUMLe4sx_ZNcKExjOD8G56h6G0L|all labels (Drive folder)|relabel_and_validate/syn_label_LPLD|size not published|download.sh download_all_labels
'

ALL_DATASETS="tiny,in1k,in21k"
ALL_WHAT="images,teachers,labels"

usage() {
    cat <<'EOF'
Usage: bash download.sh [true|false] [options]

Download the LPLD authors' released teachers, distilled images and soft labels from Google Drive
(with gdown) into the folders the stages read by default, and unpack them.

Positional (the authors' meaning):
  false            fetch the authors' all-labels Drive folder (default)
  true             fetch only the 40x-pruned labels (prune ratio 0.975), one file per dataset/IPC

Options:
  --datasets LIST  comma-separated subset of: tiny,in1k,in21k            (default: all)
  --what LIST      comma-separated subset of: images,teachers,labels     (default: all)
  --dest DIR       root folder to fill (default: the repository root, next to this script)
  --keep-archives  keep the downloaded .tar.gz files after unpacking (default: delete them)
  --dry-run        list every Drive id, file name and destination; fetch nothing
  -h, --help       show this help

Environment:
  GDOWN_ARGS       extra arguments for every gdown call, e.g. GDOWN_ARGS="--retries 5"

Layout written (relative to --dest):
  recover/model_with_class_bn/          class-BN teacher checkpoints (*.pth)
  recover/syn_data_LPLD/<name>/         distilled images, e.g. LPLD_in1k_rn18_4k_ipc10
  relabel_and_validate/syn_label_LPLD/  soft labels, e.g. FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc10_ratio975

Re-running skips everything already complete. See docs/downloads.md.
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf 'download.sh: note: %s\n' "$*" >&2; }
die() { printf 'download.sh: error: %s\n' "$*" >&2; exit 1; }

# ---- Arguments ----------------------------------------------------------------------------------
LABELS_40X_ONLY=false
DATASETS=$ALL_DATASETS
WHAT=$ALL_WHAT
DEST=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DRY_RUN=false
KEEP_ARCHIVES=false
seen_positional=false

need_value() { [[ $# -ge 2 && -n $2 && $2 != --* ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --datasets) need_value "$@"; DATASETS=$2; shift 2 ;;
        --datasets=*) DATASETS=${1#*=}; shift ;;
        --what) need_value "$@"; WHAT=$2; shift 2 ;;
        --what=*) WHAT=${1#*=}; shift ;;
        --dest) need_value "$@"; DEST=$2; shift 2 ;;
        --dest=*) DEST=${1#*=}; shift ;;
        --dry-run) DRY_RUN=true; shift ;;
        --keep-archives) KEEP_ARCHIVES=true; shift ;;
        true|True|TRUE|false|False|FALSE)
            $seen_positional && die "the true|false switch was given twice"
            seen_positional=true
            LABELS_40X_ONLY=$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]'); shift ;;
        *) die "unknown argument '$1' (expected true|false or an option; see --help)" ;;
    esac
done

# Validate a comma list against the allowed words.
check_list() {  # name value allowed
    local name=$1 value=$2 allowed=$3 word words
    [[ -n $value ]] || die "$name is empty; choose from: $allowed"
    IFS=',' read -ra words <<<"$value"
    for word in "${words[@]}"; do
        [[ ,$allowed, == *,"$word",* ]] || die "$name: unknown value '$word'; choose from: $allowed"
    done
}
check_list --datasets "$DATASETS" "$ALL_DATASETS"
check_list --what "$WHAT" "$ALL_WHAT"

in_list() { [[ ,$2, == *,"$1",* ]]; }  # word list
any_in_list() {  # "a,b" list: true if any of a,b is in list
    local word words
    IFS=',' read -ra words <<<"$1"
    for word in "${words[@]}"; do in_list "$word" "$2" && return 0; done
    return 1
}

if ! $DRY_RUN; then
    command -v gdown >/dev/null 2>&1 \
        || die "gdown is not on PATH. Install it with: pip install gdown   (then re-run this script)"
    mkdir -p "$DEST" 2>/dev/null || die "cannot create --dest folder '$DEST'"
    [[ -w $DEST ]] || die "--dest folder '$DEST' is not writable"
fi
if [[ -d $DEST ]]; then DEST=$(cd "$DEST" && pwd); elif [[ $DEST != /* ]]; then DEST=$PWD/$DEST; fi

# ---- Temporary files: removed on any exit (success unregisters them) -----------------------------
TMP_PATHS=()
cleanup() {
    local p
    for p in "${TMP_PATHS[@]+"${TMP_PATHS[@]}"}"; do
        rm -rf -- "$p"
        rm -f -- "$p"*.part 2>/dev/null || true   # gdown's own "<output>XXXXXXXX.part" files
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Report a failure for one Drive item and exit (the EXIT trap removes its temporary files).
fail() {  # id name what
    die "Drive id $1 ($2): $3. Its temporary files were removed; completed items are kept and a re-run skips them."
}

# ---- File checks --------------------------------------------------------------------------------
magic() { od -An -tx1 -N4 -- "$1" 2>/dev/null | tr -d ' \n'; }

archive_type() {  # prints tar, zip or unknown
    local m; m=$(magic "$1")
    case $m in
        1f8b*|425a68*|fd377a58*) echo tar; return ;;   # gzip, bzip2, xz: compressed tar
        504b0304*) echo zip; return ;;
    esac
    if [[ $(dd if="$1" bs=1 skip=257 count=5 2>/dev/null) == ustar ]]; then echo tar; else echo unknown; fi
}

looks_like_html() {
    local start
    start=$(head -c 512 -- "$1" | LC_ALL=C tr -d '\000' | LC_ALL=C tr '[:upper:]' '[:lower:]')
    [[ $start == *'<!doctype html'* || $start == *'<html'* ]]
}

python_cmd() { command -v python3 2>/dev/null || command -v python 2>/dev/null || true; }

# A downloaded file must be non-empty and not a Drive web page (quota / permission pages).
check_download() {  # path id name
    [[ -s $1 ]] || fail "$2" "$3" "gdown produced an empty file"
    if looks_like_html "$1"; then
        fail "$2" "$3" "Google Drive returned a web page instead of the file (download quota exceeded or access denied?); try again later or fetch it by hand from https://drive.google.com/file/d/$2"
    fi
}

# A checkpoint saved by torch.save is a zip archive: test its CRCs so a truncated file is caught.
check_checkpoint() {  # path id name
    local py
    [[ $(magic "$1") == 504b0304* ]] || return 0   # legacy pickle format: nothing cheap to test
    py=$(python_cmd)
    if [[ -n $py ]]; then
        "$py" - "$1" <<'PY' || fail "$2" "$3" "the downloaded checkpoint is truncated or corrupt (zip test failed)"
import sys, zipfile
try:
    with zipfile.ZipFile(sys.argv[1]) as z:
        sys.exit(0 if z.testzip() is None else 1)
except (zipfile.BadZipFile, OSError, EOFError):
    sys.exit(1)
PY
    elif command -v unzip >/dev/null 2>&1; then
        unzip -tqq "$1" >/dev/null 2>&1 || fail "$2" "$3" "the downloaded checkpoint is truncated or corrupt (unzip -t failed)"
    fi
}

# ---- Fetching -----------------------------------------------------------------------------------
# Download one Drive file to $out via a hidden partial name; rename only when gdown succeeded.
fetch_file() {  # id out name
    local id=$1 out=$2 name=$3 dir base partial rc=0
    dir=$(dirname -- "$out"); base=$(basename -- "$out")
    partial="$dir/.$base.partial"
    mkdir -p -- "$dir"
    rm -f -- "$partial" "$partial"*.part   # leftovers of a run that was killed hard
    TMP_PATHS+=("$partial")
    # shellcheck disable=SC2086  # GDOWN_ARGS is a user-supplied word list
    gdown ${GDOWN_ARGS:-} "https://drive.google.com/uc?id=$id" -O "$partial" || rc=$?
    [[ $rc -eq 0 ]] || fail "$id" "$name" "gdown failed (exit $rc); check your network and the Drive link https://drive.google.com/file/d/$id"
    [[ -f $partial ]] || fail "$id" "$name" "gdown exited 0 but wrote no file at $partial"
    check_download "$partial" "$id" "$name"
}

# Extract a tar or zip archive into an empty folder with Python's tarfile / zipfile, checking each
# entry before it is written. An archive from the network decides what tar -x creates: a symbolic
# link installed as the image folder (pointing anywhere), hard links, device files, FIFOs, and, as
# root, its owners and setuid / world-writable modes. Only regular files and folders inside the
# folder are accepted: links, special files, absolute paths and ".." are refused; owners are never
# applied, and set-id, sticky and world-writable bits are cleared. On failure: one line on stderr,
# exit 3 for a refused entry, 2 for a missing or too old python3, 1 for a damaged archive.
safe_extract() {  # archive folder tar|zip
    local py; py=$(python_cmd)
    [[ -n $py ]] || { echo "python3 is needed to unpack it (each entry is checked before it is written)" >&2; return 2; }
    "$py" - "$@" <<'PY'
import os, stat, sys, tarfile, zipfile

archive, dest, kind = sys.argv[1:4]
UNSAFE_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH


class Refused(Exception):
    pass


def check_path(name):
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts:
        raise Refused(f"entry {name!r} lies outside the archive's folder (absolute path or '..')")


def refuse(name, what):
    raise Refused(f"entry {name!r} is {what}; only regular files and folders are unpacked")


def check_tar(member, path):
    check_path(member.name)
    if member.issym():
        refuse(member.name, f"a symbolic link to {member.linkname!r}")
    if member.islnk():
        refuse(member.name, f"a hard link to {member.linkname!r}")
    if not (member.isreg() or member.isdir()):
        refuse(member.name, "a device, FIFO or other special file")
    return tarfile.data_filter(member, path)  # no owner; no set-id, group- or world-writable bits


def extract_zip():
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():  # the central directory: every entry, before anything is written
            check_path(info.filename)
            kind_bits = stat.S_IFMT(info.external_attr >> 16)
            if kind_bits == stat.S_IFLNK:
                refuse(info.filename, "a symbolic link")
            if kind_bits not in (0, stat.S_IFREG, stat.S_IFDIR):
                refuse(info.filename, "a device, FIFO or other special file")
        z.extractall(dest)  # zipfile applies no modes, owners or links


def clear_unsafe_bits():
    # folders (and every zip entry) get their mode from the umask, and a umask of 0 leaves them
    # world-writable
    for root, dirs, files in os.walk(dest):
        for name in dirs + files:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if mode & UNSAFE_BITS:
                os.chmod(path, stat.S_IMODE(mode) & ~UNSAFE_BITS)


try:
    if kind == "tar":
        if not hasattr(tarfile, "data_filter"):
            print(f"Python {sys.version.split()[0]} has no tarfile extraction filters; unpacking needs "
                  f"Python 3.10.12, 3.11.4, 3.12 or newer", file=sys.stderr)
            sys.exit(2)
        with tarfile.open(archive, "r|*") as tar:  # a stream: one pass over the compressed data
            tar.extractall(dest, filter=check_tar)
    else:
        extract_zip()
    clear_unsafe_bits()
except Refused as err:
    print(err, file=sys.stderr)
    sys.exit(3)
except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
    print(f"{type(err).__name__}: {err}".replace("\n", " "), file=sys.stderr)
    sys.exit(1)
PY
}

# Unpack $archive into $dir the way the authors' `tar -xvf` does (top-level entries land in $dir),
# but through a temporary folder: nothing appears in $dir unless extraction succeeded.
# Sets PLACED to the entries placed.
unpack_into() {  # archive dir id name
    local archive=$1 dir=$2 id=$3 name=$4 tmp type entry msg rc=0
    tmp="$dir/.$name.unpacking"
    rm -rf -- "$tmp"; mkdir -p -- "$tmp"
    TMP_PATHS+=("$tmp")
    type=$(archive_type "$archive")
    case $type in
        tar|zip) ;;
        *) fail "$id" "$name" "not a tar or zip archive (first bytes: $(magic "$archive"))" ;;
    esac
    msg=$(safe_extract "$archive" "$tmp" "$type" 2>&1 >/dev/null) || rc=$?
    msg=${msg//$'\n'/ }
    case $rc in
        0) ;;
        3) fail "$id" "$name" "refused to unpack the archive: $msg. Nothing of it was installed and the archive was deleted" ;;
        2) fail "$id" "$name" "cannot unpack the archive: $msg" ;;
        *) fail "$id" "$name" "could not unpack the $type archive ($msg): truncated or corrupt download; the archive was deleted so that a re-run fetches it again" ;;
    esac
    PLACED=()
    shopt -s dotglob nullglob
    local entries=("$tmp"/*)
    shopt -u dotglob nullglob
    [[ ${#entries[@]} -gt 0 ]] || fail "$id" "$name" "the archive is empty"
    for entry in "${entries[@]}"; do   # check every clash before moving anything
        [[ ! -e $dir/$(basename -- "$entry") ]] \
            || fail "$id" "$name" "$dir/$(basename -- "$entry") already exists; move it away to unpack this archive"
    done
    for entry in "${entries[@]}"; do
        mv -- "$entry" "$dir/"
        PLACED+=("$(basename -- "$entry")")
    done
    rm -rf -- "$tmp"
}

archive_stem() { local n=${1%.tar.gz}; n=${n%.tgz}; n=${n%.tar}; printf '%s' "${n%.zip}"; }

marker_path() { printf '%s/.%s.complete' "$1" "$2"; }   # dir name

# A marker lists the entries an archive placed; the item is complete while all of them exist.
marker_complete() {  # marker dir
    local line
    [[ -f $1 ]] || return 1
    while IFS= read -r line; do
        [[ $line == entry=* ]] || continue
        [[ -e $2/${line#entry=} ]] || return 1
    done <"$1"
}

write_marker() {  # marker id name entries...
    local marker=$1 id=$2 name=$3; shift 3
    {
        printf 'id=%s\nname=%s\ndate=%s\n' "$id" "$name" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        local e; for e in "$@"; do printf 'entry=%s\n' "$e"; done
    } >"$marker.tmp"
    mv -- "$marker.tmp" "$marker"
}

# Status of one item without touching the disk: done, archive (downloaded, not unpacked),
# foreign (target present but not made by this script), or todo.
item_status() {  # kind id name dir
    local kind=$1 id=$2 name=$3 dir=$4 stem
    case $kind in
        file)
            if [[ -f $dir/$name && -f $(marker_path "$dir" "$name") ]]; then echo done
            elif [[ -e $dir/$name ]]; then echo foreign
            else echo todo; fi ;;
        tar)
            stem=$(archive_stem "$name")
            if marker_complete "$(marker_path "$dir" "$name")" "$dir"; then echo done
            elif [[ -e $dir/$stem ]]; then echo foreign
            elif [[ -f $dir/$name ]]; then echo archive
            else echo todo; fi ;;
        folder)
            if [[ -f $(marker_path "$dir" "all_labels_$id") ]]; then echo done; else echo todo; fi ;;
    esac
}

# Unpack a complete archive lying at $dir/$name, write its marker, drop the archive.
finish_archive() {  # id name dir
    local id=$1 name=$2 dir=$3 stem
    stem=$(archive_stem "$name")
    say "  unpacking $name into $dir/"
    unpack_into "$dir/$name" "$dir" "$id" "$name"
    write_marker "$(marker_path "$dir" "$name")" "$id" "$name" "${PLACED[@]}"
    if ! in_list "$stem" "$(IFS=,; echo "${PLACED[*]}")"; then
        warn "$name unpacked to '${PLACED[*]}', not to the expected folder '$stem' (the stages read $dir/$stem)"
    fi
    $KEEP_ARCHIVES || rm -f -- "$dir/$name"
}

get_file() {  # id name dir
    local id=$1 name=$2 dir=$3
    fetch_file "$id" "$dir/$name" "$name"
    check_checkpoint "$dir/.$name.partial" "$id" "$name"
    mv -- "$dir/.$name.partial" "$dir/$name"
    write_marker "$(marker_path "$dir" "$name")" "$id" "$name" "$name"
    TMP_PATHS=()
}

get_tar() {  # id name dir status
    local id=$1 name=$2 dir=$3 status=$4
    if [[ $status == archive ]]; then
        say "  $name is already downloaded; unpacking it"
    else
        fetch_file "$id" "$dir/$name" "$name"
        mv -- "$dir/.$name.partial" "$dir/$name"
    fi
    TMP_PATHS=()
    # A failed unpack means the archive itself is bad: remove it so the re-run downloads it again.
    TMP_PATHS+=("$dir/$name")
    finish_archive "$id" "$name" "$dir"
    TMP_PATHS=()
}

# The authors' all-labels Drive folder: fetched whole into a hidden staging folder, then every
# archive in it is unpacked into $dir (each with its own marker), other files moved next to them.
get_folder() {  # id dir
    local id=$1 dir=$2 staging rc=0 f base status
    staging="$(dirname -- "$dir")/.$(basename -- "$dir").folder-$id.partial"
    rm -rf -- "$staging"; mkdir -p -- "$dir"
    TMP_PATHS+=("$staging")
    # shellcheck disable=SC2086
    gdown ${GDOWN_ARGS:-} --folder "https://drive.google.com/drive/folders/$id" -O "$staging" || rc=$?
    [[ $rc -eq 0 ]] || fail "$id" "all-labels folder" "gdown --folder failed (exit $rc); check your network and https://drive.google.com/drive/folders/$id"
    local files=()
    while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$staging" -type f ! -name '*.part' -print0 | sort -z)
    [[ ${#files[@]} -gt 0 ]] || fail "$id" "all-labels folder" "gdown --folder downloaded no files"
    for f in "${files[@]}"; do
        base=$(basename -- "$f")
        check_download "$f" "$id" "$base"
        case $base in
            *.tar.gz|*.tgz|*.tar|*.zip)
                status=$(item_status tar "$id" "$base" "$dir")
                if [[ $status == done || $status == foreign ]]; then
                    say "  $base: already in place, skipped"; continue
                fi
                rm -f -- "$dir/$base"
                mv -- "$f" "$dir/$base"
                TMP_PATHS+=("$dir/$base")
                finish_archive "$id" "$base" "$dir"
                TMP_PATHS=("$staging") ;;
            *)
                if [[ -e $dir/$base ]]; then say "  $base: already in place, skipped"
                else mv -- "$f" "$dir/$base"; fi ;;
        esac
    done
    rm -rf -- "$staging"
    write_marker "$(marker_path "$dir" "all_labels_$id")" "$id" "all labels folder"
    TMP_PATHS=()
}

# ---- Selection ----------------------------------------------------------------------------------
if [[ $LABELS_40X_ONLY == true ]]; then label_group=labels40x; else label_group=labelsall; fi
SELECTED=()
while IFS='|' read -r ds group kind id name subdir size source; do
    [[ -n ${ds// /} ]] || continue
    case $group in
        labels40x|labelsall) [[ $group == "$label_group" ]] && in_list labels "$WHAT" || continue ;;
        *) in_list "$group" "$WHAT" || continue ;;
    esac
    any_in_list "$ds" "$DATASETS" || continue
    SELECTED+=("$ds|$group|$kind|$id|$name|$subdir|$size|$source")
done <<<"$ARTIFACTS"

if in_list labels "$WHAT" && [[ $label_group == labelsall ]]; then
    if in_list in21k "$DATASETS"; then
        warn "the authors publish no full ImageNet-21K labels (README: too large to upload); run 'bash download.sh true --datasets in21k' for the 40x ones"
    fi
    if any_in_list in1k,tiny "$DATASETS" && [[ $DATASETS != "$ALL_DATASETS" ]]; then
        warn "the all-labels Drive folder is one folder for all datasets and is fetched whole; use 'true' to fetch labels per dataset"
    fi
fi

total=${#SELECTED[@]}
if [[ $total -eq 0 ]]; then say "Nothing selected."; exit 0; fi

if $DRY_RUN; then
    say "Dry run: $total item(s) selected (labels: $([[ $label_group == labels40x ]] && echo '40x only' || echo 'all-labels folder')); nothing is fetched."
    command -v gdown >/dev/null 2>&1 || say "(gdown is not on PATH: pip install gdown before the real run)"
    printf '%-6s %-9s %-33s %-10s %-58s %s\n' STATUS DATASET "DRIVE ID" SIZE NAME DESTINATION
    for item in "${SELECTED[@]}"; do
        IFS='|' read -r ds group kind id name subdir size source <<<"$item"
        status=$(item_status "$kind" "$id" "$name" "$DEST/$subdir")
        case $status in done|foreign) tag=skip ;; archive) tag=unpack ;; *) tag=fetch ;; esac
        case $kind in
            file) where="$DEST/$subdir/$name" ;;
            tar) where="$DEST/$subdir/$(archive_stem "$name")/" ;;
            folder) where="$DEST/$subdir/ (every archive in the folder, unpacked)" ;;
        esac
        printf '%-6s %-9s %-33s %-10s %-58s %s\n' "$tag" "$ds" "$id" "$size" "$name" "$where"
    done
    exit 0
fi

# ---- Run ----------------------------------------------------------------------------------------
# Checked before any fetch: without python3 an archive could not be unpacked, and would be deleted.
if [[ -z $(python_cmd) ]] && printf '%s\n' "${SELECTED[@]}" | grep -q -e '|tar|' -e '|folder|'; then
    die "python3 is not on PATH: it unpacks the archives (each entry is checked before it is written). Install Python 3 and re-run"
fi
n=0; fetched=0; skipped=0
for item in "${SELECTED[@]}"; do
    IFS='|' read -r ds group kind id name subdir size source <<<"$item"
    n=$((n + 1)); dir="$DEST/$subdir"
    status=$(item_status "$kind" "$id" "$name" "$dir")
    case $status in
        done) say "[$n/$total] $name: complete, skipped"; skipped=$((skipped + 1)); continue ;;
        foreign)
            target=$dir/$name
            if [[ $kind == tar ]]; then target=$dir/$(archive_stem "$name"); fi
            warn "$target exists but was not fetched by download.sh; left untouched (delete it to fetch the authors' copy)"
            skipped=$((skipped + 1)); continue ;;
    esac
    say "[$n/$total] $ds $group: $name ($size) <- Drive id $id"
    mkdir -p -- "$dir"
    case $kind in
        file) get_file "$id" "$name" "$dir" ;;
        tar) get_tar "$id" "$name" "$dir" "$status" ;;
        folder) get_folder "$id" "$dir" ;;
    esac
    fetched=$((fetched + 1))
done
say "Done: $fetched fetched or unpacked, $skipped already present, under $DEST"
