"""The schema types: :class:`Option` (a default, a type, a help text, where the default comes from,
and what values are valid), the rules between options (:func:`at_most`, :func:`at_least`,
:func:`key_value_pairs`) and :class:`ConfigError`."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence


class ConfigError(ValueError):
    pass


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


def normalize_key(key: str) -> str:
    """Option names may be spelled with ``-`` or ``_``."""
    return str(key).replace("-", "_")


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
