"""Class lists (names, in class-index order) and the check that two of them agree.

Every stage records the class list it was made with: teachers in their checkpoint (``classes``),
recovered images in ``recover.json``, label stores in their manifest. Before any work a consumer
compares what it is given (training and validation splits, teacher, label store, distilled
folders); a difference is one error listing it. Checkpoints and stores released by the authors
carry no class list: then only the class counts are compared.
"""
from __future__ import annotations

import re
from typing import Sequence

from .errors import ClassListError

_RECOVERED = re.compile(r"^new(\d+)$")  # the authors' distilled class folders: new000, new001, ...
SHOWN = 8


def _few(items: Sequence) -> str:
    items = list(items)
    return ", ".join(map(str, items[:SHOWN])) + (f", ... ({len(items)} in all)" if len(items) > SHOWN else "")


def difference(expected: Sequence[str], got: Sequence[str]) -> str:
    """A short description of how ``got`` differs from ``expected`` ('' if equal)."""
    expected, got = list(expected), list(got)
    if expected == got:
        return ""
    missing = [c for c in expected if c not in set(got)]
    extra = [c for c in got if c not in set(expected)]
    parts = []
    if missing:
        parts.append(f"missing {_few(missing)}")
    if extra:
        parts.append(f"extra {_few(extra)}")
    if not parts:
        k = next(i for i, (a, b) in enumerate(zip(expected, got)) if a != b)
        parts.append(f"same names in another order (class {k} is {expected[k]!r} vs {got[k]!r})")
    return "; ".join(parts)


def check_same_classes(expected: Sequence[str] | None, got: Sequence[str] | None, *, expected_what: str,
                       got_what: str, fix: str = "", expected_count: int | None = None) -> None:
    """``got`` must list the classes of ``expected`` in the same order. Without one of the lists,
    only the counts are compared (``expected_count`` stands in for an unknown ``expected``)."""
    if expected is not None and got is not None:
        diff = difference(expected, got)
        if diff:
            raise ClassListError(f"the classes of {got_what} do not match {expected_what}: {diff} "
                                 f"({len(got)} vs {len(expected)} classes). {fix}".rstrip())
        return
    count = len(expected) if expected is not None else expected_count
    if got is not None and count is not None and len(got) != count:
        raise ClassListError(f"{got_what} has {len(got)} classes but {expected_what} has {count}. {fix}".rstrip())


def check_distilled_folders(folders: Sequence[str], classes: Sequence[str] | None, num_classes: int,
                            where: str) -> None:
    """The class folders of a distilled image set must cover every class of the teacher: either the
    authors' ``new{c:03d}`` folders for c = 0..num_classes-1, or the class names themselves."""
    indices = [_RECOVERED.match(f) for f in folders]
    if folders and all(indices):
        have = {int(m.group(1)) for m in indices}
        missing = sorted(set(range(num_classes)) - have)
        extra = sorted(have - set(range(num_classes)))
        if missing or extra:
            detail = "; ".join(p for p in (f"missing {_few(f'new{c:03d}' for c in missing)}" if missing else "",
                                           f"extra {_few(f'new{c:03d}' for c in extra)}" if extra else "") if p)
            raise ClassListError(f"the distilled images in {where} do not cover the {num_classes} classes of the "
                                 f"teacher: {detail}. Finish the recovery of the missing classes (rerun recover "
                                 f"for their class range) or point at the complete image folder.")
        return
    check_same_classes(classes, folders, expected_what="the teacher", got_what=f"the image folder {where}",
                       expected_count=num_classes)
