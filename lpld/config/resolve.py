"""Resolving a stage's settings: the schema defaults, then YAML files, then the command line, every
value checked against its option (:func:`resolve`, :func:`stage_config`, :func:`parse_config`),
and the one-line argparse errors of every command."""
from __future__ import annotations

import argparse
import contextlib
import contextvars
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .files import AUTHORS_SECTIONS, load_yaml, report_ignored
from .options import ConfigError, Option, Schema, normalize_key


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
            name = normalize_key(key)
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
                 overrides: Mapping[str, Any], where: str = "command line",
                 unset: Iterable[str] = ()) -> argparse.Namespace:
    """A stage's namespace: schema defaults < each YAML file (its ``sections``) < ``overrides``
    (``None`` values are left out) < ``unset`` (options set back to null). The one path from
    configuration to a stage's settings."""
    sections = tuple(sections)
    layers = [(path, load_yaml(path, sections)) for path in files]
    layers.append((where, {k: v for k, v in overrides.items() if v is not None}))
    return resolve(schema, layers + [(where, {k: None for k in unset})], report=True)


def _unsets(schema: Schema, cli: Mapping[str, Any]) -> set[str]:
    """Text options given as ``null`` on the command line (``--teacher null``): they clear what a
    config file set, as ``teacher: null`` in a later file would."""
    return {k for k, v in cli.items() if v == "null" and schema[k].kind() is str and schema[k].is_nullable()}


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
    unset = _unsets(schema, cli)
    try:
        ns = stage_config(schema, sections, args.config, {k: v for k, v in cli.items() if k not in unset},
                          unset=unset)
    except ConfigError as err:
        parser.error(str(err))
    ns.config = list(args.config)
    return ns
