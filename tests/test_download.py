"""download.sh, run against a stand-in `gdown` (tests/fake_gdown/gdown) that writes small archives.

Checks: every Drive id the authors publish is in the script and lands in the folder the stages
read; --dry-run fetches nothing; a re-run skips complete items; a failed, truncated, web-page or
interrupted download leaves no partial output and names the Drive id; a missing gdown gives the
install hint; an archive holding links, special files or paths outside its folder is refused, and
unpacked files keep no owner, set-id bit or world write permission.
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "download.sh"
FAKE_DIR = REPO / "tests" / "fake_gdown"

TEACHERS = "recover/model_with_class_bn"
IMAGES = "recover/syn_data_LPLD"
LABELS = "relabel_and_validate/syn_label_LPLD"

# Every Google Drive id published in the authors' README.md (teachers, images, 40x labels; the 40x
# ids are also in their download.sh) and download.sh (the all-labels folder), with the path our
# stages read (authors' layout: recover/scripts/*_recover.sh, relabel_and_validate/scripts/reproduce).
PUBLISHED = {
    "1Vfou8nPp3x7m7YEG0wd7FcuQ_yE9jj34": ("in1k", f"{TEACHERS}/resnet18_0.pth"),
    "1sCArvJoHFthbSaBuWoUhDn67tsYtRPTn": ("tiny", f"{TEACHERS}/resnet18_tiny_0.pth"),
    "1BuplTqBhXKzdfJqCKkTBg218Cbezef57": ("in21k", f"{TEACHERS}/resnet18_21k_0.pth"),
    "1lXN_zi8LRq1pvrVZZgQA6W_ZU83BwvUf": ("in1k", f"{IMAGES}/LPLD_in1k_rn18_4k_ipc10"),
    "18q2MZ5sr9AfNYqcd-NAa3-j3m7LRXKwN": ("in1k", f"{IMAGES}/LPLD_in1k_rn18_4k_ipc20"),
    "1o081uXC-ebu28S_uuT04liACqAwhjA1O": ("in1k", f"{IMAGES}/LPLD_in1k_rn18_4k_ipc50"),
    "18maJqCbuPXKT8zBHTLebbMbUgGwJIn4o": ("in1k", f"{IMAGES}/LPLD_in1k_rn18_4k_ipc100"),
    "1-dLbdD3ww5wap4LpSjb1Ees4II4crv7p": ("in1k", f"{IMAGES}/LPLD_in1k_rn18_4k_ipc200"),
    "1W0JUOAZBrQwIlquIgOpdbFi5C_s8TNt8": ("tiny", f"{IMAGES}/LPLD_tiny_rn18_4k_ipc50"),
    "1cQDD8OfMfoshsDIaiWOQb95pn2q9veuk": ("tiny", f"{IMAGES}/LPLD_tiny_rn18_4k_ipc100"),
    "1DgmZNr1swgJrKZySjk1smgOiGr0mUU2R": ("in21k", f"{IMAGES}/LPLD_in21k_rn18_2k_ipc10"),
    "1rycYU2q6JeUbGUDPBatr_QJQMJQSnGUk": ("in21k", f"{IMAGES}/LPLD_in21k_rn18_2k_ipc20"),
}
LABELS_40X = {
    "1Nf1piVIXIF-_v-jCEmaYGHdWTXsuQIkY": ("in1k", f"{LABELS}/FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc10_ratio975"),
    "1AdP44DJUadFlY1WCrYiE7F6slotk3Vx4": ("in1k", f"{LABELS}/FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc20_ratio975"),
    "1GnCY-Apg-dXgZe8BvDwDKqrQSAz1PAbs": ("in1k", f"{LABELS}/FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc50_ratio975"),
    "12f6qUjsoN6AczK7iJz2ZAT8xNiX0W4bX": ("in1k", f"{LABELS}/FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc100_ratio975"),
    "1mHWwOaB0yG7fP_lbDSZMmIHUrMh_nDWZ": ("in1k", f"{LABELS}/FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc200_ratio975"),
    "1Yzgu-I96ODg2J8_AhGuNOP2mlUtbCzHU": ("tiny", f"{LABELS}/FKD_cutmix_fp16_LPLD_tiny_rn18_4k_ipc50_ratio975"),
    "1oJuUIq36raTtD63sfzT37ZJ3kGqZGqbv": ("tiny", f"{LABELS}/FKD_cutmix_fp16_LPLD_tiny_rn18_4k_ipc100_ratio975"),
    "1inuNAC7ApJWiuXaCsEwWU9_z7DOpMBzG": ("in21k", f"{LABELS}/FKD_cutout_fp16_LPLD_in21k_rn18_2k_ipc10_ratio975"),
    "1g52Lo2XoKHbJySkiLFo3Gsl6hnjffOEN": ("in21k", f"{LABELS}/FKD_cutout_fp16_LPLD_in21k_rn18_2k_ipc20_ratio975"),
}
ALL_LABELS_FOLDER = "1usMukSUMLe4sx_ZNcKExjOD8G56h6G0L"
# What the stand-in puts in that folder (tests/fake_gdown/gdown FOLDER_ARCHIVES), unpacked.
FOLDER_CONTENT = [f"{LABELS}/FKD_cutmix_fp16_LPLD_in1k_rn18_4k_ipc10",
                  f"{LABELS}/FKD_cutmix_fp16_LPLD_tiny_rn18_4k_ipc50"]

TINY_IMAGES_50 = "1W0JUOAZBrQwIlquIgOpdbFi5C_s8TNt8"
TINY_IMAGES_100 = "1cQDD8OfMfoshsDIaiWOQb95pn2q9veuk"
TINY_TEACHER = "1sCArvJoHFthbSaBuWoUhDn67tsYtRPTn"
TINY_LABELS_50 = "1Yzgu-I96ODg2J8_AhGuNOP2mlUtbCzHU"


def _path_without_gdown() -> str:
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not os.access(os.path.join(d, "gdown"), os.X_OK)]
    return os.pathsep.join(dirs)


@pytest.fixture
def sandbox(tmp_path):
    """Run download.sh with the stand-in gdown first on PATH; returns a small helper object."""
    pybin = tmp_path / "pybin"   # this Python as `python3`, without the rest of its bin folder
    pybin.mkdir()
    (pybin / "python3").symlink_to(sys.executable)

    class Sandbox:
        dest = tmp_path / "dest"
        log = tmp_path / "gdown_calls.log"
        env = {
            **os.environ,
            # the stand-in, then this Python (for `python3`), then the system without any gdown
            "PATH": os.pathsep.join([str(FAKE_DIR), str(pybin), _path_without_gdown()]),
            "FAKE_GDOWN_LOG": str(tmp_path / "gdown_calls.log"),
        }

        def run(self, *args, env=None, check=None, dest=True):
            argv = ["bash", str(SCRIPT), *args] + (["--dest", str(self.dest)] if dest else [])
            proc = subprocess.run(argv, env={**self.env, **(env or {})}, capture_output=True,
                                  text=True, timeout=120)
            if check is not None:
                assert (proc.returncode == 0) == check, proc.stdout + proc.stderr
            return proc

        def calls(self) -> list[str]:
            return [line.split()[0] for line in self.log.read_text().splitlines()] if self.log.exists() else []

        def leftovers(self) -> list[str]:
            """Temporary or half-written things under dest (anything hidden that is not a marker)."""
            if not self.dest.exists():
                return []
            return sorted(str(p.relative_to(self.dest)) for p in self.dest.rglob(".*")
                          if not p.name.endswith(".complete"))

    return Sandbox()


def _check_item(dest: Path, rel: str, drive_id: str) -> None:
    path = dest / rel
    if rel.endswith(".pth"):
        assert path.is_file(), rel
        with zipfile.ZipFile(path) as zf:   # the stand-in writes checkpoints as torch.save's zip
            assert zf.testzip() is None
    else:
        assert path.is_dir(), rel
        assert sorted(p.name for p in path.iterdir()) == ["class000", "class001"]
        assert (path / "class000" / f"{drive_id}.bin").stat().st_size == 16384
        assert not (path.parent / f"{path.name}.tar.gz").exists(), "archive not removed after unpacking"


def test_script_lists_every_published_id():
    text = SCRIPT.read_text()
    for drive_id in [*PUBLISHED, *LABELS_40X, ALL_LABELS_FOLDER]:
        assert text.count(drive_id) == 1, drive_id
    assert os.access(SCRIPT, os.X_OK)
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


@pytest.mark.parametrize("switch", ["false", "true"])
def test_dry_run_lists_ids_and_destinations_fetches_nothing(sandbox, switch):
    proc = sandbox.run(switch, "--dry-run", check=True, env={"PATH": _path_without_gdown()})
    expected = dict(PUBLISHED)
    expected.update(LABELS_40X if switch == "true" else {ALL_LABELS_FOLDER: ("in1k", LABELS)})
    for drive_id, (_, rel) in expected.items():
        line = next((ln for ln in proc.stdout.splitlines() if drive_id in ln), None)
        assert line is not None, f"{drive_id} missing from the dry run"
        assert str(sandbox.dest / rel) in line and line.startswith("fetch")
    unexpected = LABELS_40X if switch == "false" else {ALL_LABELS_FOLDER: None}
    assert not any(i in proc.stdout for i in unexpected)
    assert "pip install gdown" in proc.stdout   # the stand-in was left off PATH for this run
    assert sandbox.calls() == [] and not sandbox.dest.exists()


def test_tiny_subset_lands_where_stages_read_and_rerun_skips(sandbox):
    sandbox.run("true", "--datasets", "tiny", check=True)
    tiny = {i: v for i, v in {**PUBLISHED, **LABELS_40X}.items() if v[0] == "tiny"}
    assert sorted(sandbox.calls()) == sorted(tiny)
    for drive_id, (_, rel) in tiny.items():
        _check_item(sandbox.dest, rel, drive_id)
    assert sandbox.leftovers() == []
    before = {p: p.stat().st_mtime_ns for p in sandbox.dest.rglob("*")}
    proc = sandbox.run("true", "--datasets", "tiny", check=True)
    assert len(sandbox.calls()) == len(tiny), "a complete item was fetched again"
    assert proc.stdout.count("complete, skipped") == len(tiny)
    assert {p: p.stat().st_mtime_ns for p in sandbox.dest.rglob("*")} == before
    # the dry run now reports every item as skipped
    dry = sandbox.run("true", "--datasets", "tiny", "--dry-run", check=True)
    assert sum(ln.startswith("skip") for ln in dry.stdout.splitlines()) == len(tiny)


def test_full_default_run_then_40x_labels(sandbox):
    sandbox.run(check=True)   # authors' default: false = the all-labels folder
    assert sorted(sandbox.calls()) == sorted([*PUBLISHED, ALL_LABELS_FOLDER])
    for drive_id, (_, rel) in PUBLISHED.items():
        _check_item(sandbox.dest, rel, drive_id)
    for rel in FOLDER_CONTENT:
        _check_item(sandbox.dest, rel, ALL_LABELS_FOLDER)
    assert sandbox.leftovers() == []
    sandbox.run("true", check=True)   # adds only the 40x labels
    assert len(sandbox.calls()) == len(PUBLISHED) + 1 + len(LABELS_40X)
    for drive_id, (_, rel) in LABELS_40X.items():
        _check_item(sandbox.dest, rel, drive_id)
    sandbox.run("false", check=True)
    sandbox.run("true", check=True)
    assert len(sandbox.calls()) == len(PUBLISHED) + 1 + len(LABELS_40X), "re-run fetched again"


def test_what_and_keep_archives(sandbox):
    sandbox.run("true", "--datasets", "in21k,tiny", "--what", "teachers", "--keep-archives", check=True)
    assert sorted(sandbox.calls()) == sorted([TINY_TEACHER, "1BuplTqBhXKzdfJqCKkTBg218Cbezef57"])
    sandbox.run("--datasets", "tiny", "--what", "images", "--keep-archives", check=True)
    assert (sandbox.dest / IMAGES / "LPLD_tiny_rn18_4k_ipc50.tar.gz").is_file()
    _check_item(sandbox.dest, PUBLISHED[TINY_TEACHER][1], TINY_TEACHER)


def test_failed_download_leaves_no_partial_output(sandbox):
    proc = sandbox.run("--datasets", "tiny", "--what", "images", env={"FAKE_GDOWN_FAIL": TINY_IMAGES_100})
    assert proc.returncode != 0
    assert TINY_IMAGES_100 in proc.stderr and "gdown failed" in proc.stderr
    _check_item(sandbox.dest, PUBLISHED[TINY_IMAGES_50][1], TINY_IMAGES_50)   # the earlier item is kept
    assert not (sandbox.dest / PUBLISHED[TINY_IMAGES_100][1]).exists()
    assert sandbox.leftovers() == [], "temporary files left behind"
    assert sorted(os.listdir(sandbox.dest / IMAGES)) == [".LPLD_tiny_rn18_4k_ipc50.tar.gz.complete",
                                                         "LPLD_tiny_rn18_4k_ipc50"]
    sandbox.run("--datasets", "tiny", "--what", "images", check=True)   # resume fetches only the rest
    assert sandbox.calls() == [TINY_IMAGES_50, TINY_IMAGES_100, TINY_IMAGES_100]
    _check_item(sandbox.dest, PUBLISHED[TINY_IMAGES_100][1], TINY_IMAGES_100)


@pytest.mark.parametrize("drive_id,what,message", [
    (TINY_LABELS_50, "labels", "could not unpack the tar archive"),
    (TINY_TEACHER, "teachers", "truncated or corrupt"),
])
def test_truncated_download_is_caught_and_removed(sandbox, drive_id, what, message):
    proc = sandbox.run("true", "--datasets", "tiny", "--what", what, env={"FAKE_GDOWN_TRUNCATE": drive_id})
    assert proc.returncode != 0
    assert drive_id in proc.stderr and message in proc.stderr
    rel = {**PUBLISHED, **LABELS_40X}[drive_id][1]
    target = sandbox.dest / rel
    assert not target.exists() and not Path(f"{target}.tar.gz").exists()
    assert not any(p.name.endswith(".complete") and target.name in p.name for p in sandbox.dest.rglob(".*"))
    assert sandbox.leftovers() == []


def test_web_page_instead_of_file_is_rejected(sandbox):
    proc = sandbox.run("--datasets", "tiny", "--what", "teachers", env={"FAKE_GDOWN_HTML": TINY_TEACHER})
    assert proc.returncode != 0 and TINY_TEACHER in proc.stderr and "web page" in proc.stderr
    assert not (sandbox.dest / PUBLISHED[TINY_TEACHER][1]).exists() and sandbox.leftovers() == []


def test_failure_inside_the_all_labels_folder(sandbox):
    proc = sandbox.run("--what", "labels", env={"FAKE_GDOWN_FAIL": ALL_LABELS_FOLDER})
    assert proc.returncode != 0 and ALL_LABELS_FOLDER in proc.stderr
    assert sandbox.leftovers() == [] and os.listdir(sandbox.dest / LABELS) == []
    sandbox.run("--what", "labels", check=True)
    for rel in FOLDER_CONTENT:
        _check_item(sandbox.dest, rel, ALL_LABELS_FOLDER)
    assert sandbox.leftovers() == []


def test_interrupted_download_is_cleaned_up(sandbox):
    argv = ["bash", str(SCRIPT), "--datasets", "tiny", "--what", "images", "--dest", str(sandbox.dest)]
    proc = subprocess.Popen(argv, env={**sandbox.env, "FAKE_GDOWN_HANG": TINY_IMAGES_50},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 30
    while not list((sandbox.dest / IMAGES).glob(".*.part")) and time.time() < deadline:
        time.sleep(0.05)
    assert list((sandbox.dest / IMAGES).glob(".*.part")), "the stand-in never started writing"
    # SIGTERM to the whole group (as a job scheduler's kill does). Not SIGINT: a shell started in
    # the background without job control (CI, nohup) inherits SIGINT as ignored and cannot trap it.
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert sandbox.leftovers() == [] and os.listdir(sandbox.dest / IMAGES) == []


def test_already_downloaded_archive_is_unpacked_without_fetching(sandbox, tmp_path):
    # e.g. an archive downloaded by hand from the authors' Drive (their "Method 2")
    src = tmp_path / "LPLD_tiny_rn18_4k_ipc50"
    (src / "class000").mkdir(parents=True)
    (src / "class001").mkdir()
    (src / "class000" / f"{TINY_IMAGES_50}.bin").write_bytes(b"\0" * 16384)
    (sandbox.dest / IMAGES).mkdir(parents=True)
    with tarfile.open(sandbox.dest / IMAGES / "LPLD_tiny_rn18_4k_ipc50.tar.gz", "w:gz") as tar:
        tar.add(src, arcname=src.name)
    sandbox.run("--datasets", "tiny", "--what", "images", check=True)
    assert sandbox.calls() == [TINY_IMAGES_100]
    _check_item(sandbox.dest, PUBLISHED[TINY_IMAGES_50][1], TINY_IMAGES_50)


def test_existing_data_not_from_the_script_is_left_untouched(sandbox):
    mine = sandbox.dest / PUBLISHED[TINY_IMAGES_50][1]
    mine.mkdir(parents=True)
    (mine / "my_file").write_text("keep me")
    proc = sandbox.run("--datasets", "tiny", "--what", "images", check=True)
    assert sandbox.calls() == [TINY_IMAGES_100]
    assert os.listdir(mine) == ["my_file"] and "left untouched" in proc.stderr


def test_missing_gdown_gives_install_hint(sandbox):
    proc = sandbox.run("--datasets", "tiny", env={"PATH": _path_without_gdown()})
    assert proc.returncode != 0 and "pip install gdown" in proc.stderr
    assert not sandbox.dest.exists()


@pytest.mark.parametrize("args,message", [
    (["--datasets", "cifar"], "unknown value 'cifar'"),
    (["--what", "images,logits"], "unknown value 'logits'"),
    (["maybe"], "unknown argument 'maybe'"),
    (["true", "false"], "given twice"),
    (["--datasets"], "needs a value"),
])
def test_bad_arguments_are_named(sandbox, args, message):
    proc = sandbox.run(*args, dest=False)
    assert proc.returncode != 0 and message in proc.stderr and sandbox.calls() == []


def test_help(sandbox):
    proc = sandbox.run("--help", check=True, dest=False)
    for word in ("--datasets", "--what", "--dry-run", "--dest", "true", "syn_data_LPLD"):
        assert word in proc.stdout


def test_archive_with_another_top_folder_is_unpacked_as_is_with_a_note(sandbox, tmp_path):
    # unpacking follows the authors' `tar -xvf` (top-level entries land as they are) and says so
    src = tmp_path / "ipc50_images"
    (src / "class000").mkdir(parents=True)
    (src / "class000" / "a.bin").write_bytes(b"1")
    (sandbox.dest / IMAGES).mkdir(parents=True)
    with tarfile.open(sandbox.dest / IMAGES / "LPLD_tiny_rn18_4k_ipc50.tar.gz", "w:gz") as tar:
        tar.add(src, arcname=src.name)
    proc = sandbox.run("--datasets", "tiny", "--what", "images", check=True)
    assert (sandbox.dest / IMAGES / "ipc50_images" / "class000" / "a.bin").is_file()
    assert "not to the expected folder 'LPLD_tiny_rn18_4k_ipc50'" in proc.stderr
    proc = sandbox.run("--datasets", "tiny", "--what", "images", check=True)   # its marker counts
    assert sandbox.calls() == [TINY_IMAGES_100] and proc.stdout.count("complete, skipped") == 2


# --- archives that try to install more than files and folders -------------------------------------
TOP = "LPLD_tiny_rn18_4k_ipc50"   # the folder the tiny ipc50 image archive must unpack to


def _member(name, kind=tarfile.REGTYPE, data=b"x", **attrs):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _tar_gz(path, *members):
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, data)
    return path


def _zip(path, *entries):
    """``entries``: (name, st_mode, data); st_mode carries the file type, as Info-ZIP stores it."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, mode, data in entries:
            info = zipfile.ZipInfo(name)
            info.create_system = 3   # Unix: the high 16 bits of external_attr are st_mode
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def _serve(sandbox, archive):
    """Fetch the tiny ipc50 images, served as ``archive``."""
    return sandbox.run("--datasets", "tiny", "--what", "images",
                       env={"FAKE_GDOWN_SERVE": f"{TINY_IMAGES_50}={archive}"})


def _file():
    return _member(f"{TOP}/class000/a.bin")


REFUSED_TARS = {
    "top-level symlink to outside": (lambda out: [_member(TOP, tarfile.SYMTYPE, linkname=str(out))], TOP),
    "symlink inside": (lambda out: [_file(), _member(f"{TOP}/class000/b.bin", tarfile.SYMTYPE, linkname="a.bin")],
                       f"{TOP}/class000/b.bin"),
    "hard link": (lambda out: [_file(), _member(f"{TOP}/class000/b.bin", tarfile.LNKTYPE,
                                              linkname=f"{TOP}/class000/a.bin")], f"{TOP}/class000/b.bin"),
    "fifo": (lambda out: [_file(), _member(f"{TOP}/queue", tarfile.FIFOTYPE)], f"{TOP}/queue"),
    "character device": (lambda out: [_file(), _member(f"{TOP}/null", tarfile.CHRTYPE, devmajor=1, devminor=3)],
                         f"{TOP}/null"),
    "dot-dot path": (lambda out: [_file(), _member(f"{TOP}/../../escape.bin")], f"{TOP}/../../escape.bin"),
    "absolute path": (lambda out: [_file(), _member(f"{out}/escape.bin")], "escape.bin"),
}
REFUSED_ZIPS = {
    "zip symlink": (lambda out: [(f"{TOP}/class000/a.bin", stat.S_IFREG | 0o644, b"x"),
                                 (TOP + "/link", stat.S_IFLNK | 0o777, str(out).encode())], f"{TOP}/link"),
    "zip fifo": (lambda out: [(f"{TOP}/queue", stat.S_IFIFO | 0o644, b"")], f"{TOP}/queue"),
    "zip dot-dot path": (lambda out: [(f"{TOP}/a.bin", stat.S_IFREG | 0o644, b"x"),
                                      ("../escape.bin", stat.S_IFREG | 0o644, b"x")], "../escape.bin"),
    "zip absolute path": (lambda out: [(f"{out}/escape.bin", stat.S_IFREG | 0o644, b"x")], "escape.bin"),
}


@pytest.mark.parametrize("case", [*REFUSED_TARS, *REFUSED_ZIPS])
def test_links_special_files_and_escaping_paths_are_refused(sandbox, tmp_path, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    build, entry = {**REFUSED_TARS, **REFUSED_ZIPS}[case]
    pack = _zip if case.startswith("zip") else _tar_gz
    proc = _serve(sandbox, pack(tmp_path / "crafted", *build(outside)))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused" in lines[0], proc.stderr
    assert TINY_IMAGES_50 in lines[0] and f"{TOP}.tar.gz" in lines[0] and entry in lines[0], proc.stderr
    assert os.listdir(sandbox.dest / IMAGES) == [], "something was installed or marked complete"
    assert sandbox.leftovers() == [] and os.listdir(outside) == []


def _modes(root):
    return {str(p.relative_to(root)): p.lstat() for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_unpacked_modes_have_no_set_id_bits_nor_world_write_and_owners_are_not_kept(sandbox, tmp_path, kind):
    if kind == "tar":
        archive = _tar_gz(tmp_path / "modes.tar.gz",
                          _member(TOP, tarfile.DIRTYPE, mode=0o1777, uid=1234, gid=1234),
                          _member(f"{TOP}/class000", tarfile.DIRTYPE, mode=0o2777, uid=1234, gid=1234),
                          _member(f"{TOP}/class000/setuid.bin", mode=0o4755, uid=1234, gid=1234),
                          _member(f"{TOP}/class000/open.bin", mode=0o777, uid=1234, gid=1234))
    else:
        archive = _zip(tmp_path / "modes.zip", (f"{TOP}/", stat.S_IFDIR | 0o1777, b""),
                       (f"{TOP}/class000/", stat.S_IFDIR | 0o2777, b""),
                       (f"{TOP}/class000/setuid.bin", stat.S_IFREG | 0o4755, b"x"),
                       (f"{TOP}/class000/open.bin", stat.S_IFREG | 0o777, b"x"))
    old_umask = os.umask(0)   # the worst case: nothing masks the archive's modes
    try:
        proc = _serve(sandbox, archive)
    finally:
        os.umask(old_umask)
    assert proc.returncode == 0, proc.stderr
    modes = _modes(sandbox.dest / IMAGES / TOP)
    assert sorted(modes) == [".", "class000", "class000/open.bin", "class000/setuid.bin"]
    for rel, st in modes.items():
        assert stat.S_IMODE(st.st_mode) & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH) == 0, \
            (rel, oct(st.st_mode))
        assert st.st_uid == os.getuid(), (rel, st.st_uid)   # as root, tar would have kept uid 1234
    assert (sandbox.dest / IMAGES / TOP / "class000" / "setuid.bin").read_bytes() == b"x"
    assert (sandbox.dest / IMAGES / f".{TOP}.tar.gz.complete").is_file()


def test_missing_python_is_reported_before_any_archive_is_fetched(sandbox, tmp_path):
    # without python3 an archive cannot be checked and unpacked: fetching 30 GB first would be waste
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("bash", "dirname", "basename", "mkdir", "grep", "rm", "mv", "od", "tr", "dd", "head", "date"):
        (tools / tool).symlink_to(shutil.which(tool))
    (tools / "gdown").symlink_to(FAKE_DIR / "gdown")
    proc = sandbox.run("--datasets", "tiny", "--what", "images", env={"PATH": str(tools)})
    assert proc.returncode != 0 and "python3 is not on PATH" in proc.stderr, proc.stderr
    assert sandbox.calls() == [] and os.listdir(sandbox.dest) == []
