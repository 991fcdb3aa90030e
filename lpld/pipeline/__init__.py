"""The one orchestrator: every stage in order, skipping what is done, then the results report.

squeeze (teacher + class-wise BN statistics) -> images (LPLD / SRe2L recovery, RDED, a random real
subset) -> relabel (one soft-label store per image set, label top-k and, in ``label_mode: less``,
prune ratio) -> validate (a student per row and seed) -> ``lpld report`` (``results.{md,csv,json}``
and ``results.png``).

The job is a list of named steps (:func:`plan`). :func:`run_pipeline` runs them in order and skips
each step whose output is complete and current (:func:`step_done`): every step records the settings
and input fingerprints it ran with (:mod:`lpld.pipeline.records`), and a step whose record differs
from the configuration now stops the job with one line naming the step, the key and both values
(``--recompute`` redoes it and what follows instead; ``--dry-run`` lists every step as done / todo
/ changed). The long steps resume inside themselves
(recovery skips finished classes, relabel continues its store, validate its checkpoint). So a run
stopped at any point -- Ctrl-C, a SIGTERM from a scheduler's time limit, a crash -- finishes when
the same command is run again, and the results equal an uninterrupted run's. The paper-table
scripts (``relabel_and_validate/scripts/reproduce/*.sh``) and the demo are configurations of this
module; a cluster launcher runs single steps with :func:`run_step` (``shard`` splits the classes of
a recovery or the batches of a relabel step).

The package, from the bottom up: :mod:`.schema` (the options), :mod:`.layout` (rows and where every
output goes), :mod:`.plan` (the steps), :mod:`.stages` (what each step runs, with which settings),
:mod:`.records` (done / todo / changed), :mod:`.run` (running them).
"""
from __future__ import annotations
from __future__ import annotations

from ..config import parse_config
from .layout import METHODS, Row, data_path, image_dir, label_dir, rows, student_dir, teacher_path  # noqa: F401
from .plan import Job, Step, plan  # noqa: F401
from .records import StaleStepError  # noqa: F401
from .run import claim_run_dir, run_pipeline, run_shard, run_stage, run_step, step_done  # noqa: F401
from .schema import PIPELINE_SCHEMA
from .stages import num_classes, step_settings  # noqa: F401


def main(argv: list[str] | None = None) -> dict:
    """``lpld pipeline`` / ``python -m lpld.pipeline``."""
    cfg = parse_config(PIPELINE_SCHEMA, argv, sections=("pipeline",), description=__doc__)
    return run_pipeline(cfg)
