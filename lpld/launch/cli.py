"""``lpld launch``: a whole table, or one sharded stage, as cluster jobs (docs/cluster.md).

    lpld launch [--config table.yaml ...] [launch options] [pipeline options]
    lpld launch recover [launch options] -- [recover options]     # a job array of class ranges
    lpld launch relabel [launch options] -- [relabel options]     # batch-range shards, then a merge

Launch options come from the command line or the ``launch:`` section of the YAML files (the rest
of those files is the pipeline's config). ``--dry-run`` prints each job's resources and, for
SLURM, the sbatch script, without submitting.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Sequence

from ..config import ArgumentParser, ConfigError, add_schema_arguments, flatten_yaml, parse_config, read_yaml, resolve
from ..pipeline import PIPELINE_SCHEMA, run_stage
from ..recover import RECOVER_SCHEMA
from ..relabel import RELABEL_SCHEMA
from .launcher import Launcher
from .resources import LAUNCH_SCHEMA

STAGES = {"recover": RECOVER_SCHEMA, "relabel": RELABEL_SCHEMA}


def split_yaml(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(launch options, everything else flattened) of one YAML file (read as every config is:
    UTF-8 text, no key twice)."""
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    launch = data.pop("launch", None) or {}
    if not isinstance(launch, dict):
        raise ConfigError(f"{path}: section 'launch' must be a mapping")
    return launch, flatten_yaml(data, ("pipeline",), path)  # the pipeline's files are flat


def parse(schema, argv: Sequence[str], prog: str, extra=()) -> tuple[argparse.Namespace, argparse.Namespace, Any]:
    """(pipeline or stage config from ``schema``, launch config, parsed args)."""
    clash = sorted(set(schema) & set(LAUNCH_SCHEMA))
    if clash:
        raise ConfigError(f"launch options {clash} clash with the pipeline's options")
    p = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", nargs="*", default=[], help="YAML config file(s); later ones win")
    if "dry_run" not in schema:  # the pipeline's own --dry-run means the same here: print, run nothing
        p.add_argument("--dry-run", action="store_true", help="print the jobs (and sbatch scripts); submit nothing")
    add_schema_arguments(p, LAUNCH_SCHEMA)
    if schema:
        add_schema_arguments(p, schema)
    args = p.parse_args(argv)
    launch_layers, stage_layers = [], []
    flags = {k: v for k, v in vars(args).items() if v is not None and k not in ("config", "dry_run")}
    try:
        for path in args.config:
            launch, rest = split_yaml(path)
            launch_layers.append((f"{path}: launch", launch))
            stage_layers.append((path, rest))
        lcfg = resolve(LAUNCH_SCHEMA, launch_layers + [("command line", {k: v for k, v in flags.items()
                                                                          if k in LAUNCH_SCHEMA})])
        cfg = resolve(schema, stage_layers + [("command line", {k: v for k, v in flags.items() if k in schema})])
    except ConfigError as err:
        p.error(str(err))
    cfg.config = list(args.config)
    args.dry_run = bool(args.dry_run)
    if "dry_run" in schema:
        cfg.dry_run = False  # the jobs run their steps; only the launcher prints and stops
    return cfg, lcfg, args


# ---- one sharded stage --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StageStep:
    name: str
    after: tuple[str, ...]
    kind: str


@dataclasses.dataclass(frozen=True)
class StagePipeline:
    """A one-step plan: one recover or relabel config, sharded by the launcher (recover/scripts)."""
    kind: str

    def plan(self, cfg) -> list[StageStep]:
        return [StageStep(self.kind, (), self.kind)]

    def step_done(self, cfg, name: str) -> bool:
        return False  # the stage itself skips finished classes / batches

    def run_step(self, cfg, name: str, shard: tuple[int, int] | None = None) -> None:
        run_stage(self.kind, cfg, shard)


def main(argv: Sequence[str] | None = None) -> Any:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in STAGES:
        return main_stage(argv[0], argv[1:])
    cfg, lcfg, args = parse(PIPELINE_SCHEMA, argv, "lpld launch")
    launcher = Launcher(cfg, lcfg, "lpld.pipeline")
    if args.dry_run:
        print(launcher.describe())  # the command's output: the jobs it would submit
        return None
    return launcher.run(lcfg.wait)


def main_stage(kind: str, argv: list[str]) -> Any:
    if "--" in argv:
        cut = argv.index("--")
        launch_argv, stage_argv = argv[:cut], argv[cut + 1:]
    else:
        launch_argv, stage_argv = argv, []
    _, lcfg, args = parse({}, launch_argv, f"lpld launch {kind}")
    cfg = parse_config(STAGES[kind], stage_argv, sections=("common", kind), description=f"lpld launch {kind} -- ...")
    out = cfg.output_dir or getattr(cfg, "fkd_path", None) or "."
    # a label store's folder holds the store alone: its job logs go beside it
    launcher = Launcher(cfg, lcfg, StagePipeline(kind), os.path.normpath(out) + ".launch" if kind == "relabel"
                        else os.path.join(out, "launch"))
    if args.dry_run:
        print(launcher.describe())  # the command's output: the jobs it would submit
        return None
    return launcher.run(lcfg.wait)
