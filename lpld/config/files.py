"""Reading YAML config files: flat (``name: value``) or in the authors' layout (sections, each with
``basic`` / ``store_true`` / ``path``), strictly (UTF-8 text, no key given twice), with the keys
that have no effect here reported one line each (:func:`report_ignored`)."""
from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping

import yaml

from ..utils.log import get_logger
from .options import ConfigError, normalize_key

log = get_logger(__name__)
AUTHORS_SECTIONS = ("common", "squeeze", "recover", "relabel", "validate")
AUTHORS_SUBSECTIONS = ("basic", "store_true", "path")
IGNORED_SUBSECTIONS = ("aim",)


def report_ignored(where: str, key: str, why: str) -> None:
    """One line per ignored key a config file sets (printed once per file and key)."""
    if (where, key) not in _REPORTED:
        _REPORTED.add((where, key))
        log.info(f"config: {where}: '{key}' is ignored ({why})")


_REPORTED: set[tuple[str, str]] = set()


def _normalized(mapping: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Keys with ``_`` for ``-``; two spellings of one key in one mapping (``batch-size`` and
    ``batch_size``) are the duplicate-key error, not a silent last-one-wins."""
    out: dict[str, Any] = {}
    spelled: dict[str, Any] = {}
    for key, value in mapping.items():
        name = normalize_key(key)
        if name in out:
            raise ConfigError(f"{where}: '{spelled[name]}' and '{key}' are the same key; YAML would keep only the "
                              f"last. Delete one of them.")
        out[name], spelled[name] = value, key
    return out


def flatten_yaml(data: Mapping[str, Any], sections: Iterable[str], path: str) -> dict[str, Any]:
    """Flatten a flat or authors'-layout YAML mapping into ``{name: value}``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    if not any(k in AUTHORS_SECTIONS for k in data):
        return _normalized(data, path)
    unknown = [k for k in data if k not in AUTHORS_SECTIONS]
    if unknown:
        raise ConfigError(f"{path}: unknown top-level section(s) {unknown}; expected {list(AUTHORS_SECTIONS)}")
    flat: dict[str, Any] = {}
    for section in sections:
        body = data.get(section) or {}
        if not isinstance(body, Mapping):
            raise ConfigError(f"{path}: section '{section}' must be a mapping")
        for sub, content in body.items():
            if sub in IGNORED_SUBSECTIONS:
                report_ignored(path, f"{section}.{sub}", "the authors' experiment-tracker tags")
                continue
            where = f"{path}: {section}.{sub}"
            if sub == "store_true":
                if not isinstance(content, (list, tuple)):
                    raise ConfigError(f"{where} must be a list of flag names")
                flat.update({normalize_key(flag): True for flag in content})
            elif sub in ("basic", "path"):
                if content is None:
                    continue
                if not isinstance(content, Mapping):
                    raise ConfigError(f"{where} must be a mapping")
                flat.update(_normalized(content, where))
            else:
                raise ConfigError(f"{path}: unknown sub-section '{section}.{sub}'; expected "
                                  f"{list(AUTHORS_SUBSECTIONS)}")
    return flat


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: PyYAML keeps
    the last value silently, so a pasted override would win (or lose) unnoticed."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # '<<' merges are overridden on purpose
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], line)
                    seen[key] = line
                except TypeError:
                    continue  # an unhashable key: the base constructor reports it
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads 20:40 as the base-60 integer 1240; YAML 1.2 (and every reader of a class range such
# as ``classes: 20:40``) reads a string. Integers here are YAML 1.2's: no base 60.
_INT = "tag:yaml.org,2002:int"
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _INT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_StrictLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's several-line message in one line: what is wrong, and where."""
    problem = " ".join(p for p in (getattr(err, "context", None), getattr(err, "problem", None)) if p)
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if not problem:
        problem = " ".join(str(err).split())
    return problem + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else "")


def read_yaml(path: str) -> Any:
    """The YAML document of ``path``; a missing, non-UTF-8, invalid or duplicate-key file is a
    one-line :class:`ConfigError` naming it."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a YAML text file (byte 0x{raw[err.start]:02x} at offset {err.start} is not "
                          f"UTF-8); pass the YAML config, not a checkpoint or archive") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as dup:
        raise ConfigError(f"{path}: key '{dup.key}' is given twice in one mapping (lines {dup.first} and "
                          f"{dup.second}); YAML would keep only the last. Delete one of them.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None


def load_yaml(path: str, sections: Iterable[str] = AUTHORS_SECTIONS) -> dict[str, Any]:
    return flatten_yaml(read_yaml(path) or {}, sections, path)
