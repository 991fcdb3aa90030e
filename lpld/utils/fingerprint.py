"""Content fingerprints that bind an artifact to its inputs: the image files and the teacher weights.

* :func:`scan_images`: sha256 over the ordered list of (relative file name, sha256 of the file's
  bytes), in dataset order, and, in the same pass, every image decoded once (JPEG at 1/8 scale,
  which still entropy-decodes every coefficient) so a truncated or corrupt file is named before a
  stage starts instead of failing half-way through an epoch.
* :func:`state_dict_sha256`: sha256 over the tensors of a state dict (sorted keys, dtype, shape,
  raw bytes): the same weights give the same hash whichever way the file was pickled, saved or
  renamed, and retrained weights under the same file name give another.

Distilled image sets are small (ImageNet-1K at 50 images per class: ~1 GB of JPEG), so reading them
once per stage costs seconds; files are read in a thread pool and hashed as they arrive.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import os
from typing import Mapping, Sequence

import torch
from PIL import Image

from .errors import BadImagesError, InputValueError

SHOWN = 16  # hex digits of a hash shown in messages


def short(digest: str | None) -> str:
    return "none" if not digest else digest[:SHOWN]


@dataclasses.dataclass
class ImageScan:
    sha256: str
    count: int
    bad: list[tuple[str, str]]  # (path, reason) of every file that does not decode

    def raise_if_bad(self, where: str) -> None:
        if self.bad:
            shown = "; ".join(f"{path} ({reason})" for path, reason in self.bad[:20])
            more = f"; and {len(self.bad) - 20} more" if len(self.bad) > 20 else ""
            raise BadImagesError(f"{len(self.bad)} image file(s) in {where} cannot be decoded: {shown}{more}. "
                                 f"Remove or replace them (for distilled images: delete the class folder and "
                                 f"rerun recover, which redoes missing classes).")


def _decode_error(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format == "JPEG":
                img.draft(img.mode, (1, 1))
            img.load()
    except Exception as err:  # noqa: BLE001 - any decoder complaint makes the file unusable
        return f"{type(err).__name__}: {err}"
    return None


def _read_file(path: str, decode: bool) -> tuple[str, str | None]:
    digest = hashlib.sha256()
    chunks = []
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
                if decode:
                    chunks.append(block)
    except OSError as err:
        return "", f"unreadable: {err.strerror}"
    return digest.hexdigest(), _decode_error(b"".join(chunks)) if decode else None


def scan_images(paths: Sequence[str], root: str, *, decode: bool = True, workers: int | None = None) -> ImageScan:
    """Fingerprint (and check) the image files ``paths`` (dataset order) of the folder ``root``."""
    workers = workers or min(8, os.cpu_count() or 1)
    total = hashlib.sha256()
    bad: list[tuple[str, str]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        window = max(64, 8 * workers)  # bounded look-ahead keeps memory flat on large folders
        pending: list[concurrent.futures.Future] = []
        for start in range(0, len(paths), window):
            pending = [pool.submit(_read_file, p, decode) for p in paths[start:start + window]]
            for path, future in zip(paths[start:start + window], pending):
                file_digest, problem = future.result()
                if problem:
                    bad.append((path, problem))
                total.update(os.path.relpath(path, root).replace(os.sep, "/").encode())
                total.update(b"\0" + file_digest.encode() + b"\n")
    return ImageScan(total.hexdigest(), len(paths), bad)


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes, read in 16 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors of ``state_dict``: sorted keys, dtype, shape, raw bytes."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key]
        if not isinstance(tensor, torch.Tensor):
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}\0{str(t.dtype).replace('torch.', '')}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_sha256(model: torch.nn.Module) -> str:
    module = getattr(model, "module", model)
    module = getattr(module, "_orig_mod", module)
    return state_dict_sha256(module.state_dict())


def check_same(kind: str, recorded: str | None, actual: str, *, recorded_in: str, actual_at: str,
               fix: str, error: type[Exception] = InputValueError) -> bool:
    """Raise ``error`` (one line: both hashes, both places, the fix) when the hashes differ.

    Returns False when nothing was recorded (artifacts written before hashes existed, or the
    authors' releases), True when the two agree."""
    if not recorded:
        return False
    if recorded != actual:
        raise error(f"{kind} mismatch: {recorded_in} was made from {kind} sha256 {short(recorded)}, but "
                    f"{actual_at} has sha256 {short(actual)}. {fix}")
    return True
