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

The package, from the bottom up: :mod:`.options` (the schema types and their rules), :mod:`.files`
(YAML files), :mod:`.resolve` (defaults < files < command line), :mod:`.compression`.
"""
from .compression import PAPER_COMPRESSION, compression_name, compression_nominal  # noqa: F401
from .files import AUTHORS_SECTIONS, flatten_yaml, load_yaml, read_yaml, report_ignored  # noqa: F401
from .options import ConfigError, Option, Rule, Schema, at_least, at_most, key_value_pairs  # noqa: F401
from .resolve import (ArgumentParser, add_schema_arguments, argument_type, command_name, parse_config,  # noqa: F401
                      resolve, stage_config)
