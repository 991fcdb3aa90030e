"""Class subsets of a dataset (``classes: 0:20``), taken from its files without copying them.

A subset is written as comma-separated items, each a class index of the full dataset, a half-open
range of indices ``A:B`` (Python's slice: ``0:20`` is the first twenty), or a class name (a wnid):
``0:20``, ``0:10,15,n01443537``. Indices count in the dataset's own class order (sorted folder
names, sorted ``wnids.txt`` for Tiny-ImageNet's original layout).

The subset keeps the dataset's class order whatever order the items are written in, and its classes
are numbered 0..k-1 in that order: the class list every stage records (teacher checkpoint,
``recover.json``, label-store manifest) is then the subset's names, so an artifact made on one
subset is refused with another by the class-list checks of :mod:`lpld.utils.classes`.
"""
from __future__ import annotations

import re

from ..config import Option
from ..utils.errors import InputValueError
from .folder import LabeledImages

_RANGE = re.compile(r"^(\d+):(\d+)$")
FORMAT = "comma-separated class indices, ranges A:B (half-open, as 0:20) or class names (wnids)"


def parse_classes(spec: str | None, where: str = "classes") -> list[int | str] | None:
    """The items of ``spec`` (indices, the indices of each range, names) in written order; None for
    all classes. A malformed item or an empty range is an :class:`InputValueError`."""
    if spec is None or str(spec).strip() == "":
        return None
    items: list[int | str] = []
    for raw in str(spec).split(","):
        item = raw.strip()
        if not item:
            raise InputValueError(f"{where} {spec!r}: an empty item; expected {FORMAT}")
        match = _RANGE.match(item)
        if match:
            start, stop = int(match.group(1)), int(match.group(2))
            if stop <= start:
                raise InputValueError(f"{where} {spec!r}: range {item} is empty (A:B needs B > A, e.g. 0:20)")
            items += range(start, stop)
        elif item.isdigit():
            items.append(int(item))
        elif ":" in item:
            raise InputValueError(f"{where} {spec!r}: {item!r} is not a range; expected A:B with integers A < B")
        else:
            items.append(item)
    return items


def _classes_format(spec, values) -> str | None:
    try:
        class_count(spec)
    except InputValueError as err:
        return str(err).split(": ", 1)[-1]
    return None


# The option of every stage that reads a real dataset (one definition, one meaning).
CLASSES_OPTION = Option(None, str, f"a class subset of the dataset ({FORMAT}), e.g. 0:20; default: all classes",
                        check=_classes_format)


def class_count(spec: str | None) -> int | None:
    """How many classes ``spec`` selects (None for all); an item written twice is an error."""
    items = parse_classes(spec)
    if items is None:
        return None
    _no_repeats(items, spec)
    return len(items)


def _no_repeats(items, spec) -> None:
    seen = set()
    for item in items:
        if item in seen:
            raise InputValueError(f"classes {spec!r}: class {item!r} is selected twice; list each class once")
        seen.add(item)


def resolve_classes(spec: str | None, classes: list[str], where: str) -> list[int] | None:
    """The dataset indices ``spec`` selects among ``classes`` (the full class list of the data at
    ``where``), in the dataset's order; None for all classes."""
    items = parse_classes(spec)
    if items is None:
        return None
    index = {name: i for i, name in enumerate(classes)}
    picked = []
    for item in items:
        if isinstance(item, int):
            if item >= len(classes):
                raise InputValueError(f"classes {spec!r}: index {item} is out of range; {where} has "
                                      f"{len(classes)} classes (0..{len(classes) - 1})")
            picked.append(item)
        elif item in index:
            picked.append(index[item])
        else:
            raise InputValueError(f"classes {spec!r}: {item!r} is not a class of {where} (its classes are "
                                  f"{', '.join(classes[:3])}, ...; or give indices such as 0:20)")
    _no_repeats(picked, spec)
    return sorted(picked)


def select_classes(data: LabeledImages, spec: str | None, where: str) -> LabeledImages:
    """``data`` restricted to the classes of ``spec``, relabelled 0..k-1 in the dataset's order (the
    same dataset when ``spec`` selects all classes)."""
    picked = resolve_classes(spec, data.classes, where)
    if picked is None:
        return data
    new_label = {old: new for new, old in enumerate(picked)}
    samples = [(path, new_label[t]) for path, t in data.samples if t in new_label]
    subset = LabeledImages(samples, [data.classes[i] for i in picked], data.transform)
    subset.root = getattr(data, "root", None)
    return subset
