"""Typed configuration: a schema of options, YAML files, and command-line overrides.

Each stage declares a schema, ``{name: Option(default, type, help, source)}``. Values come from, in
increasing priority: the schema defaults, YAML files, command-line flags. YAML may be flat
(``name: value``) or in the authors' layout::

    common:   {basic: {...}, store_true: [flag, ...], path: {...}}
    relabel:  {basic: {...}, store_true: [...], path: {...}}
    validate: {basic: {...}, store_true: [...], path: {...}, aim: {...}}

A stage reads the sections it names (e.g. validate reads ``common`` and ``validate``); an unknown
key, a value of the wrong type or outside its option's range, a key given twice in one mapping, or a
file that is not UTF-8 YAML text is an error in one line that names the key, the value, the file (or
``command line``) and what is valid. Keys may use ``-`` or ``_``. Keys the authors' files carry that
have no effect here (``aim`` experiment-tracker tags, options marked ``Option(ignored=...)`` such as
``gpus``) are accepted, and each one a file sets is reported in one line naming the file and the key,
so nothing is dropped silently.

:func:`stage_config` is the one resolution path: the command line of every stage (:func:`parse_config`)
and the pipeline build a stage's namespace through it.

Ranges are declared on each :class:`Option` (``min`` / ``max``, open or closed, ``sentinels`` such as
``train_epochs: -1``, ``finite`` floats, ``nullable``, a ``check`` for rules between options) and
checked for every value a file, the command line or a caller sets; the defaults are trusted. A rule
that needs the data (a top-k above the teacher's class count, a class with fewer images than asked
for) is checked by the stage once it knows the data, as a one-line
:class:`~lpld.utils.errors.InputValueError`.

The paper's names of its label-pruning ratios live here too (:data:`PAPER_COMPRESSION`), the one
table every stage and report uses.
"""
from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import math
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import yaml

from .utils.log import get_logger

log = get_logger(__name__)
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
        log.info(f"config: {where}: '{key}' is ignored ({why})")


_REPORTED: set[tuple[str, str]] = set()


Rule = Callable[[Any, Mapping[str, Any]], "str | None"]


@dataclasses.dataclass
class Option:
    default: Any
    type: type | None = None  # inferred from the default when None
    help: str = ""
    source: str = ""  # where the default comes from (paper table, authors' script and flag)
    choices: Sequence[Any] | None = None
    ignored: str = ""  # non-empty: accepted for the authors' files, no effect; the reason is reported
    # --- constraints: checked for every value a layer sets (a file, the command line, a caller);
    # the defaults are trusted. A list option with ``item`` applies them to each element.
    min: float | None = None  # smallest valid value (inclusive; exclusive with min_open)
    max: float | None = None  # largest valid value (inclusive; exclusive with max_open)
    min_open: bool = False
    max_open: bool = False
    sentinels: tuple = ()  # documented special values outside the range (train_epochs: -1 = epochs)
    finite: bool | None = None  # reject nan / inf; None: yes for float values
    nullable: bool | None = None  # None (YAML null) is a valid value; None: only if the default is None
    item: type | None = None  # list options: the type of every element (int or float)
    # a rule between options (or on a value's format), run on the merged values: returns what is
    # wrong ("must be <= jitter_max") or None. It reads the other options from its second argument,
    # and the error names where each of them was set.
    check: Rule | None = None

    def kind(self) -> type:
        if self.type is not None:
            return self.type
        if self.default is None:
            return str
        return type(self.default)

    def numeric_kind(self) -> type | None:
        """int or float for a number (or a list of numbers), else None."""
        kind = self.item if self.kind() is list else self.kind()
        return kind if kind in (int, float) else None

    def has_range(self) -> bool:
        """Whether the option declares what is valid beyond its type."""
        return self.min is not None or self.max is not None or self.choices is not None or self.check is not None

    def is_nullable(self) -> bool:
        return self.default is None if self.nullable is None else bool(self.nullable)

    def is_finite(self) -> bool:
        return self.numeric_kind() is float if self.finite is None else bool(self.finite)

    def describe(self) -> str:
        """What a valid value (of a list: each element) is: '>= 1 (an integer)', 'in [0, 1) (a
        finite number)', '-1 or >= 1 (an integer)'."""
        kind = self.numeric_kind()
        noun = {int: "an integer", float: "a finite number" if self.is_finite() else "a number"}.get(
            kind, f"a {self.kind().__name__}")
        if self.min is not None and self.max is not None:
            bounds = (f"in {'(' if self.min_open else '['}{_num(self.min)}, {_num(self.max)}"
                      f"{')' if self.max_open else ']'}")
        elif self.min is not None:
            bounds = f"{'>' if self.min_open else '>='} {_num(self.min)}"
        elif self.max is not None:
            bounds = f"{'<' if self.max_open else '<='} {_num(self.max)}"
        else:
            return noun
        return " or ".join([*map(repr, self.sentinels), bounds]) + f" ({noun})"

    def violation(self, value: Any) -> str | None:
        """Why one (scalar) value is outside the declared range, or None."""
        if value in self.sentinels and not isinstance(value, bool):
            return None
        if isinstance(value, float) and self.is_finite() and not math.isfinite(value):
            return "not finite"
        if self.min is not None and (value <= self.min if self.min_open else value < self.min):
            return "too small"
        if self.max is not None and (value >= self.max if self.max_open else value > self.max):
            return "too large"
        return None


Schema = Mapping[str, Option]


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _norm(key: str) -> str:
    return str(key).replace("-", "_")


def _is_number(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind is int else isinstance(value, (int, float))


def _invalid(where: str, name: str, value: Any, opt: Option, detail: str = "") -> ConfigError:
    """'<where>: option 'lr' = -1.0 is not valid: --lr must be > 0 (a finite number)': the option as
    a key and as a flag, the value, where it was set and the valid range, in one line."""
    flag = "--" + name.replace("_", "-")
    subject = f"every element of {flag}" if opt.kind() is list else flag
    shown = "null" if value is None else repr(value)
    return ConfigError(f"{where}: option '{name}' = {shown} is not valid: {subject} must be {opt.describe()}"
                       + (f"; {detail}" if detail else ""))


def _coerce(name: str, value: Any, opt: Option, where: str) -> Any:
    kind = opt.kind()
    if value is None:
        if opt.is_nullable():
            return None
        raise _invalid(where, name, value, opt, f"leave the key out for the default {opt.default!r}")
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is float:
        ok = _is_number(value, float)
        value = float(value) if ok else value
    elif kind is int:
        ok = _is_number(value, int)
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
    if kind is list and opt.item is not None:
        bad = next((v for v in value if not _is_number(v, opt.item)), None)
        if bad is None:
            value = [opt.item(v) for v in value]
            bad = next((v for v in value if opt.violation(v)), None)
        if bad is not None:
            raise _invalid(where, name, value, opt, f"{bad!r} is not")
    elif kind in (int, float) and opt.violation(value):
        raise _invalid(where, name, value, opt)
    return value


class _Reads(Mapping):
    """The merged values as a rule sees them; remembers which options the rule read."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values, self.read = values, []

    def __getitem__(self, key: str) -> Any:
        if key not in self.read:
            self.read.append(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _check_rules(schema: Schema, values: Mapping[str, Any], origins: Mapping[str, str]) -> None:
    """Run every option's ``check`` on the merged values; a failure names each option involved and
    where it was set. A rule whose options all keep their defaults is not run (defaults are trusted)."""
    for name, opt in schema.items():
        if opt.check is None or values[name] is None:
            continue
        reads = _Reads(values)
        problem = opt.check(values[name], reads)
        involved = [name] + [k for k in reads.read if k != name]
        set_by = [origins[k] for k in involved if k in origins]
        if not problem or not set_by:
            continue
        where = origins.get(name, set_by[0])
        others = [f"{k} = {values[k]!r}: {origins.get(k, 'default')}" for k in involved[1:]]
        raise ConfigError(f"{where}: option '{name}' = {values[name]!r} is not valid: it {problem}"
                          + (f" ({'; '.join(others)})" if others else ""))


# --- rules for Option(check=...) ---------------------------------------------------------------------
def at_most(other: str, *, strict: bool = False) -> Rule:
    """The value must be <= (``strict``: <) option ``other`` (when that is set)."""
    def rule(value, values):
        bound = values[other]
        if bound is not None and (value >= bound if strict else value > bound):
            return f"must be {'<' if strict else '<='} {other}"
        return None
    return rule


def at_least(other: str, *, strict: bool = False) -> Rule:
    """The value must be >= (``strict``: >) option ``other`` (when that is set)."""
    def rule(value, values):
        bound = values[other]
        if bound is not None and (value <= bound if strict else value < bound):
            return f"must be {'>' if strict else '>='} {other}"
        return None
    return rule


def key_value_pairs(keys: Sequence[str] | None = None,
                    value: Option | Mapping[str, Option] | None = None) -> Rule:
    """A list of ``KEY=VALUE`` strings: each with an ``=``, a key among ``keys`` (when given) and a
    value that ``value`` (one Option for every key, or one per key) accepts."""
    def rule(items, values):
        for item in items:
            key, sep, text = str(item).partition("=")
            if not sep:
                return f"must be a list of KEY=VALUE; {item!r} has no '='"
            if not key:
                return f"must be a list of KEY=VALUE; {item!r} has no key"
            if keys is not None and key not in keys:
                return f"has an unknown key {key!r} in {item!r}; the keys are {list(keys)}"
            spec = value.get(key) if isinstance(value, Mapping) else value
            if spec is not None:
                try:
                    number = spec.kind()(text)
                except ValueError:
                    number = None
                if number is None or spec.violation(number):
                    return f"needs a value {spec.describe()} in {item!r}"
        return None
    return rule


def _normalized(mapping: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Keys with ``_`` for ``-``; two spellings of one key in one mapping (``batch-size`` and
    ``batch_size``) are the duplicate-key error, not a silent last-one-wins."""
    out: dict[str, Any] = {}
    spelled: dict[str, Any] = {}
    for key, value in mapping.items():
        name = _norm(key)
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
                flat.update({_norm(flag): True for flag in content})
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


def resolve(schema: Schema, layers: Sequence[tuple[str, Mapping[str, Any]]], *,
            report: bool = False) -> argparse.Namespace:
    """Merge ``layers`` (``(where, {name: value})``, lowest priority first) over the defaults;
    ``report``: print a line for each ignored option a layer sets. Every value a layer sets is
    checked against its option's type and range, then the options' ``check`` rules run on the
    merged values."""
    values = {name: opt.default for name, opt in schema.items()}
    origins: dict[str, str] = {}  # option -> the layer that set it last
    for where, layer in layers:
        for key, value in layer.items():
            name = _norm(key)
            if name not in schema:
                close = [n for n in schema if n.split("_")[0] == name.split("_")[0]][:5]
                hint = f" (similar: {close})" if close else ""
                raise ConfigError(f"{where}: unknown option '{key}'{hint}")
            values[name] = _coerce(name, value, schema[name], where)
            origins[name] = where
            if report and schema[name].ignored and value is not None:
                report_ignored(where, key, schema[name].ignored)
    _check_rules(schema, values, origins)
    return argparse.Namespace(**values)


def stage_config(schema: Schema, sections: Iterable[str], files: Sequence[str],
                 overrides: Mapping[str, Any], where: str = "command line") -> argparse.Namespace:
    """A stage's namespace: schema defaults < each YAML file (its ``sections``) < ``overrides``
    (``None`` values are left out). The one path from configuration to a stage's settings."""
    sections = tuple(sections)
    layers = [(path, load_yaml(path, sections)) for path in files]
    return resolve(schema, layers + [(where, {k: v for k, v in overrides.items() if v is not None})], report=True)


_COMMAND: contextvars.ContextVar[str | None] = contextvars.ContextVar("lpld_command", default=None)


@contextlib.contextmanager
def command_name(name: str) -> Iterator[None]:
    """Within this block, argument parsers are named ``name`` (the ``lpld`` command being run), so
    their errors read ``<command>: error: ...`` like every other error of the command."""
    token = _COMMAND.set(name)
    try:
        yield
    finally:
        _COMMAND.reset(token)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``<command>: error: <message>``: the usage of a stage
    with eighty options would bury the message (``--help`` still prints it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("prog") is None and not args and _COMMAND.get():
            kwargs["prog"] = _COMMAND.get()
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


def argument_type(option: Option) -> Callable[[str], Any]:
    """An argparse ``type=`` for a plain command-line flag (outside a schema) that converts and
    checks like :func:`_coerce`: ``--num-classes 0`` is an error naming the flag and the range."""
    kind = option.kind()

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {option.describe()}; got {text!r}") from None
        if option.violation(value):
            raise argparse.ArgumentTypeError(f"must be {option.describe()}; got {text!r}")
        return value

    convert.__name__ = kind.__name__
    return convert


def add_schema_arguments(parser: argparse.ArgumentParser, schema: Schema) -> None:
    """One ``--flag`` per option (default None, so only flags given on the command line override)."""
    for name, opt in schema.items():
        flag = "--" + name.replace("_", "-")
        kind = opt.kind()
        valid = (f"; valid: {'each element ' if kind is list else ''}{opt.describe()}"
                 if opt.min is not None or opt.max is not None else "")
        helptext = opt.help + (f" [default: {opt.default!r}" + (f"; {opt.source}" if opt.source else "")
                               + valid + "]")
        if kind is bool:
            parser.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction, help=helptext)
        elif kind is list:
            parser.add_argument(flag, dest=name, default=None, nargs="*", type=opt.item, help=helptext)
        else:
            parser.add_argument(flag, dest=name, default=None, type=kind, help=helptext,
                                choices=opt.choices)


def parse_config(schema: Schema, argv: Sequence[str] | None = None, *, sections: Iterable[str] = AUTHORS_SECTIONS,
                 description: str = "") -> argparse.Namespace:
    """Parse ``--config FILE [FILE ...]`` plus per-option flags into a validated namespace."""
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
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
