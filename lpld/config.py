"""Typed configuration: a schema of options, YAML files, and command-line overrides.

Each stage declares a schema, ``{name: Option(default, type, help, source)}``. Values come from, in
increasing priority: the schema defaults, YAML files, command-line flags. YAML may be flat
(``name: value``) or in the authors' layout::

    common:   {basic: {...}, store_true: [flag, ...], path: {...}}
    relabel:  {basic: {...}, store_true: [...], path: {...}}
    validate: {basic: {...}, store_true: [...], path: {...}, aim: {...}}

A stage reads the sections it names (e.g. validate reads ``common`` and ``validate``); an unknown
key or a value of the wrong type is an error that names the key and the file. Keys may use ``-`` or
``_``. Keys the authors' files carry that have no effect here (``aim`` experiment-tracker tags, options
marked ``Option(ignored=...)`` such as ``gpus``) are accepted, and each one a file sets is reported in
one line naming the file and the key, so nothing is dropped silently.

:func:`stage_config` is the one resolution path: the command line of every stage (:func:`parse_config`)
and the pipeline build a stage's namespace through it.

The paper's names of its label-pruning ratios live here too (:data:`PAPER_COMPRESSION`), the one
table every stage and report uses.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Iterable, Mapping, Sequence

import yaml

AUTHORS_SECTIONS = ("common", "squeeze", "recover", "relabel", "validate")
AUTHORS_SUBSECTIONS = ("basic", "store_true", "path")
IGNORED_SUBSECTIONS = ("aim",)


class ConfigError(ValueError):
    pass


# Nominal label compression of the paper's pruning ratios (Tables 2 and 3: 0 / 0.9 / 0.95 / 0.97 /
# 0.975 are called 1x / 10x / 20x / 30x / 40x; 0.97 is "30x" although 1 / (1 - 0.97) = 33.3).
PAPER_COMPRESSION = {0.0: 1.0, 0.9: 10.0, 0.95: 20.0, 0.97: 30.0, 0.975: 40.0}


def compression_nominal(prune_ratio: float) -> float:
    """The paper's name of a ratio when it has one, else 1 / (1 - ratio) (inf for ratio 1)."""
    ratio = float(prune_ratio)
    if ratio in PAPER_COMPRESSION:
        return PAPER_COMPRESSION[ratio]
    return float("inf") if ratio >= 1 else round(1 / (1 - ratio), 2)


def compression_name(prune_ratio: float) -> str:
    """``0.975 -> "40x"``, ``0.5 -> "2x"``, ``1.0 -> "inf"``."""
    value = compression_nominal(prune_ratio)
    return "inf" if value == float("inf") else f"{value:g}x"


def report_ignored(where: str, key: str, why: str) -> None:
    """One line per ignored key a config file sets (printed once per file and key)."""
    if (where, key) not in _REPORTED:
        _REPORTED.add((where, key))
        print(f"config: {where}: '{key}' is ignored ({why})", flush=True)


_REPORTED: set[tuple[str, str]] = set()


@dataclasses.dataclass
class Option:
    default: Any
    type: type | None = None  # inferred from the default when None
    help: str = ""
    source: str = ""  # where the default comes from (paper table, authors' script and flag)
    choices: Sequence[Any] | None = None
    ignored: str = ""  # non-empty: accepted for the authors' files, no effect; the reason is reported

    def kind(self) -> type:
        if self.type is not None:
            return self.type
        if self.default is None:
            return str
        return type(self.default)


Schema = Mapping[str, Option]


def _norm(key: str) -> str:
    return str(key).replace("-", "_")


def _coerce(name: str, value: Any, opt: Option, where: str) -> Any:
    kind = opt.kind()
    if value is None:
        return None
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is list:
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"{where}: option '{name}' must be {kind.__name__}; got {value!r} "
                          f"({type(value).__name__})")
    if opt.choices is not None and value not in opt.choices:
        raise ConfigError(f"{where}: option '{name}' must be one of {list(opt.choices)}; got {value!r}")
    return value


def flatten_yaml(data: Mapping[str, Any], sections: Iterable[str], path: str) -> dict[str, Any]:
    """Flatten a flat or authors'-layout YAML mapping into ``{name: value}``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    if not any(k in AUTHORS_SECTIONS for k in data):
        return {_norm(k): v for k, v in data.items()}
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
                flat.update({_norm(flag): True for flag in content})
            elif sub in ("basic", "path"):
                if content is None:
                    continue
                if not isinstance(content, Mapping):
                    raise ConfigError(f"{where} must be a mapping")
                flat.update({_norm(k): v for k, v in content.items()})
            else:
                raise ConfigError(f"{path}: unknown sub-section '{section}.{sub}'; expected "
                                  f"{list(AUTHORS_SUBSECTIONS)}")
    return flat


def load_yaml(path: str, sections: Iterable[str] = AUTHORS_SECTIONS) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return flatten_yaml(data, sections, path)


def resolve(schema: Schema, layers: Sequence[tuple[str, Mapping[str, Any]]], *,
            report: bool = False) -> argparse.Namespace:
    """Merge ``layers`` (``(where, {name: value})``, lowest priority first) over the defaults;
    ``report``: print a line for each ignored option a layer sets."""
    values = {name: opt.default for name, opt in schema.items()}
    for where, layer in layers:
        for key, value in layer.items():
            name = _norm(key)
            if name not in schema:
                close = [n for n in schema if n.split("_")[0] == name.split("_")[0]][:5]
                hint = f" (similar: {close})" if close else ""
                raise ConfigError(f"{where}: unknown option '{key}'{hint}")
            values[name] = _coerce(name, value, schema[name], where)
            if report and schema[name].ignored and value is not None:
                report_ignored(where, key, schema[name].ignored)
    return argparse.Namespace(**values)


def stage_config(schema: Schema, sections: Iterable[str], files: Sequence[str],
                 overrides: Mapping[str, Any], where: str = "command line") -> argparse.Namespace:
    """A stage's namespace: schema defaults < each YAML file (its ``sections``) < ``overrides``
    (``None`` values are left out). The one path from configuration to a stage's settings."""
    sections = tuple(sections)
    layers = [(path, load_yaml(path, sections)) for path in files]
    return resolve(schema, layers + [(where, {k: v for k, v in overrides.items() if v is not None})], report=True)


def add_schema_arguments(parser: argparse.ArgumentParser, schema: Schema) -> None:
    """One ``--flag`` per option (default None, so only flags given on the command line override)."""
    for name, opt in schema.items():
        flag = "--" + name.replace("_", "-")
        kind = opt.kind()
        helptext = opt.help + (f" [default: {opt.default!r}" + (f"; {opt.source}" if opt.source else "") + "]")
        if kind is bool:
            parser.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction, help=helptext)
        elif kind is list:
            parser.add_argument(flag, dest=name, default=None, nargs="*", help=helptext)
        else:
            parser.add_argument(flag, dest=name, default=None, type=kind, help=helptext,
                                choices=opt.choices)


def parse_config(schema: Schema, argv: Sequence[str] | None = None, *, sections: Iterable[str] = AUTHORS_SECTIONS,
                 description: str = "") -> argparse.Namespace:
    """Parse ``--config FILE [FILE ...]`` plus per-option flags into a validated namespace."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="*", default=[], help="YAML config file(s); later ones win")
    add_schema_arguments(parser, schema)
    args = parser.parse_args(argv)
    cli = {k: v for k, v in vars(args).items() if k != "config"}
    try:
        ns = stage_config(schema, sections, args.config, cli)
    except ConfigError as err:
        parser.error(str(err))
    ns.config = list(args.config)
    return ns
