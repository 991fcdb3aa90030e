"""The one orchestrator: every stage in order, skipping what is done, then the results report.

squeeze (teacher + class-wise BN statistics) -> images (LPLD / SRe2L recovery, RDED, a random real
subset) -> relabel (one soft-label store per image set, label top-k and, in ``label_mode: less``,
prune ratio) -> validate (a student per row and seed) -> ``lpld report`` (``results.{md,csv,json}``
and ``results.png``).

The job is a list of named steps (:func:`plan`). :func:`run_pipeline` runs them in order and skips
each step whose output is complete and current (:func:`step_done`): every step records the settings
and input fingerprints it ran with (:mod:`lpld.pipeline_records`), and a step whose record differs
from the configuration now stops the job with one line naming the step, the key and both values
(``--recompute`` redoes it and what follows instead; ``--dry-run`` lists every step as done / todo
/ changed). The long steps resume inside themselves
(recovery skips finished classes, relabel continues its store, validate its checkpoint). So a run
stopped at any point -- Ctrl-C, a SIGTERM from a scheduler's time limit, a crash -- finishes when
the same command is run again, and the results equal an uninterrupted run's. The paper-table
scripts (``relabel_and_validate/scripts/reproduce/*.sh``) and the demo are configurations of this
module; a cluster launcher runs single steps with :func:`run_step` (``shard`` splits the classes of
a recovery or the batches of a relabel step).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any, Callable

from . import pipeline_records as records
from .config import AUTHORS_SECTIONS, Option, key_value_pairs, parse_config, stage_config
from .data.demo import DEMO_RANGES
from .pipeline_layout import (METHODS, UNPRUNED_REPLAY, Row, _find, _out, _pairs, _relabel_name, data_path,  # noqa: F401
                              image_dir, label_dir, rows, squeeze_dir, student_dir, teacher_path, val_dir)
from .utils.errors import InputValueError
from .utils.io import atomic_json_dump
from .utils.owner import claim_dir

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def _extra_row_format(specs, values):
    """``extra_rows``: the RATIO of METHOD:RATIO:TOPK in [0, 1) and TOPK >= 0 (a spec of another
    shape, or a method not in ``methods``, is reported when the rows are planned)."""
    for spec in specs:
        parts = str(spec).split(":")
        try:
            ratio, topk = float(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            continue
        if not 0 <= ratio < 1 or topk < 0:
            return f"needs METHOD:RATIO:TOPK with RATIO in [0, 1) and TOPK >= 0; {spec!r} is not"
    return None


PIPELINE_SCHEMA = {
    "output_dir": Option("outputs/demo", str, "everything the job writes goes under this folder"),
    "device": Option("auto", str, "auto | cpu | cuda | cuda:N"),
    "dataset": Option(None, str, "demo (generated), tiny, imagenet, in21k ...: passed to every stage; required "
                      "with data_path (default without it: demo, generated at <output_dir>/data)"),
    "data_path": Option(None, str, "real dataset root (demo: generated at <output_dir>/data when unset)"),
    "demo_data": Option([], list, "settings of the generated demo dataset as KEY=VALUE (num_classes, "
                        "image_size, train_per_class, val_per_class, seed)",
                        check=key_value_pairs(DEMO_RANGES, DEMO_RANGES)),
    "val_dir": Option(None, str, "validation set of the students (default: <data_path>/val; the "
                                 "Tiny-ImageNet root for tiny)"),
    "squeeze_configs": Option(["squeeze/configs/demo.yaml"], list,
                              "YAML files shared by teacher training and the class-statistics pass"),
    "teacher_train_configs": Option(["squeeze/configs/demo_train.yaml"], list,
                                    "YAML files with the training-only keys (epochs, lr ...)"),
    "teacher": Option(None, str, "an existing class-BN teacher (skips squeeze), e.g. the authors' "
                                 "resnet18_tiny_0.pth"),
    "squeeze_dir": Option(None, str, "where squeeze trains the teacher when none is given "
                                     "(default: <output_dir>/squeeze)"),
    "relabel_teacher": Option(None, str, "teacher whose logits are the soft labels (default: teacher)"),
    "recover_configs": Option(["recover/configs/demo.yaml"], list, "YAML files of the recovery stage"),
    "sre2l_configs": Option(["recover/configs/sre2l.yaml"], list,
                            "YAML overlays that turn recovery into the SRe2L baseline"),
    "rded_configs": Option(["recover/configs/rded_demo.yaml"], list, "YAML files of RDED (lpld rded)"),
    "random_real_configs": Option(["recover/configs/random_real_demo.yaml"], list,
                                  "YAML files of the random real subset (lpld random-real)"),
    "label_configs": Option(["relabel_and_validate/configs/demo.yaml"], list,
                            "YAML files of relabel and validate (authors' common/relabel/validate layout)"),
    "images_root": Option(None, str, "where image sets live (default: <output_dir>/images); a complete "
                                     "set there (e.g. downloaded) is used as it is"),
    "image_names": Option([], list, "METHOD=NAME folder names under images_root ({ipc} is replaced), "
                                    "e.g. lpld=LPLD_tiny_rn18_4k_ipc{ipc} (download.sh's names); "
                                    "default: <method>_ipc<ipc>", check=key_value_pairs(METHODS)),
    "labels_root": Option(None, str, "where label stores live (default: <output_dir>/labels); a complete "
                                     "store there (e.g. the authors' downloaded labels) is used as it is"),
    "label_names": Option([], list, "METHOD=NAME store names under labels_root ({ipc}, {ratio_suffix} "
                                    "(_ratio975 in less mode), {topk} are replaced); default: <method>_ipc<ipc>[_top<k>][_<compression>]",
                          check=key_value_pairs(METHODS)),
    "methods": Option(["lpld", "sre2l"], list, f"image sources: {' | '.join(METHODS)}"),
    "ipc": Option(10, int, "images per class", min=1),
    "ipcs": Option([], list, "several IPCs (a row block each); default: [ipc]", item=int, min=1),
    "prune_ratios": Option([0.0, 0.9, 0.975], list, "label pruning ratios: 0 = 1x, 0.9 = 10x, 0.975 = 40x",
                           item=float, min=0, max=1, max_open=True),
    "label_topks": Option([0], list, "label top-k per row (LPQLD; 0 = all classes)", item=int, min=0),
    "extra_rows": Option([], list, "rows beyond the grid, METHOD:RATIO:TOPK each (at every ipc, student and "
                         "scheme), e.g. lpld:0.975:2 for top-2 labels at 40x", check=_extra_row_format),
    "label_mode": Option("less", str, "less: one store per ratio holding only the kept batches (the authors' "
                         "less_label_*.sh); full: one full store per image set, pruned when the student "
                         "trains (their main_table_*.sh)", choices=("less", "full")),
    "students": Option([], list, "student architectures (default: the label config's model)"),
    "prune_schemes": Option([], list, "METRIC/GRANULARITY per row, e.g. random/batch_to_epoch order/epoch "
                            "(default: the label config's; ratio 0 replays in order, epoch by epoch)"),
    "seeds": Option([0], list, "student seeds (model init and pool draws): a student per seed", item=int, min=0),
    "diversity": Option(False, bool, "within-class diversity (cosine, MMD) of every image set, in the report"),
    "table": Option("", str, "name of this job in the report (e.g. the paper table)"),
    "workers": Option(None, int, "data-loading workers for every stage (default: each config's)", min=0),
    "progress": Option(True, bool, "tqdm progress bars"),
    "dry_run": Option(False, bool, "print the plan (each step done / todo / changed: key old -> new) and stop"),
    "recompute": Option(False, bool, "recompute the steps whose settings or inputs changed since they ran, and "
                        "the steps after them (default: stop with an error naming the step and the key)"),
}


# ---- configuration -----------------------------------------------------------------------------------
def _repo_path(path: str) -> str:
    return path if os.path.isabs(path) or os.path.exists(path) else os.path.join(HERE, path)


def _stage(schema, sections, files: list[str], overrides: dict[str, Any]) -> argparse.Namespace:
    return stage_config(schema, sections, [_repo_path(p) for p in files], overrides, where="pipeline")


# ---- the plan ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Step:
    name: str                 # unique, "/"-separated
    after: tuple[str, ...]    # steps that must finish first
    kind: str                 # train | recover | relabel | light


def resolve_dataset(cfg: argparse.Namespace) -> argparse.Namespace:
    """``dataset`` must be named whenever ``data_path`` is: the default, demo, generates the demo
    dataset at data_path, and a guess must never point that at someone's real dataset."""
    if cfg.dataset is None:
        if cfg.data_path:
            raise InputValueError(f"--data-path {cfg.data_path} is given without --dataset: name the dataset it holds "
                                  f"(--dataset tiny | imagenet | in21k | imagefolder, or demo to generate the demo there)")
        cfg.dataset = "demo"
    return cfg


def plan(cfg: argparse.Namespace) -> list[Step]:
    """Every step of the job, in an order that runs each after the steps it needs."""
    resolve_dataset(cfg)
    steps: list[Step] = []
    teacher_steps: tuple[str, ...] = ()
    if cfg.dataset == "demo":  # generated at data_path unless the same demo dataset is there
        steps.append(Step("data/demo", (), "light"))
    data = tuple(s.name for s in steps)
    if cfg.teacher is None:
        steps += [Step("squeeze/teacher", data, "train"), Step("squeeze/class_stats", ("squeeze/teacher",), "light")]
        teacher_steps = ("squeeze/class_stats",)
    table = rows(cfg)
    images = list(dict.fromkeys((r.method, r.ipc) for r in table))
    for method, ipc in images:
        steps.append(Step(f"images/{method}_ipc{ipc}", data + teacher_steps, "recover"))
    if cfg.diversity:
        steps.append(Step("analysis/diversity", tuple(f"images/{m}_ipc{i}" for m, i in images) + teacher_steps,
                          "light"))
    seen = set()
    for row in table:
        rel = _relabel_name(cfg, row)
        if rel not in seen:
            seen.add(rel)
            steps.append(Step(rel, (f"images/{row.method}_ipc{row.ipc}",) + teacher_steps, "relabel"))
        for seed in cfg.seeds:
            steps.append(Step(f"validate/{row.tag}/seed{int(seed)}", (rel,), "train"))
    steps.append(Step("report", tuple(s.name for s in steps), "light"))
    return steps


# ---- per-step configuration ----------------------------------------------------------------------------
def _common(cfg) -> dict[str, Any]:
    return {"device": cfg.device, "progress": cfg.progress, "workers": cfg.workers}


_CLASS_COUNTS: dict[tuple, int] = {}


def num_classes(cfg) -> int:
    """The teacher decides the class count of every later stage (a dataset subset has fewer classes
    than the dataset presets say); read once per teacher file."""
    from .models import read_state_dict
    from .recover.run import infer_num_classes
    path = teacher_path(cfg)
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _CLASS_COUNTS:
        _CLASS_COUNTS[key] = infer_num_classes(read_state_dict(path), path)
    return _CLASS_COUNTS[key]


def _image_stage(cfg, method: str, ipc: int) -> tuple[Callable, argparse.Namespace]:
    source, settings = METHODS[method]
    root = image_dir(cfg, method, ipc)
    out = {"output_dir": os.path.dirname(root), "exp_name": os.path.basename(root), "ipc": ipc,
           "dataset": cfg.dataset, "progress": cfg.progress}
    if source == "recover":
        from .recover import RECOVER_SCHEMA, run_recovery
        files = cfg.recover_configs + (cfg.sre2l_configs if method == "sre2l" else [])
        ns = _stage(RECOVER_SCHEMA, ("common", "recover"), files,
                    {**out, **settings, "device": cfg.device, "teacher": teacher_path(cfg),
                     "num_classes": num_classes(cfg)})
        return run_recovery, ns
    if source == "rded":
        from .recover.rded import RDED_SCHEMA, run_rded
        ns = _stage(RDED_SCHEMA, ("common", "recover"), cfg.rded_configs,
                    {**out, "device": cfg.device, "teacher": teacher_path(cfg), "data_path": data_path(cfg),
                     "workers": cfg.workers})
        return run_rded, ns
    from .recover.random_real import RANDOM_REAL_SCHEMA, run_random_real
    return run_random_real, _stage(RANDOM_REAL_SCHEMA, ("common", "recover"), cfg.random_real_configs,
                                   {**out, "data_path": data_path(cfg)})


def _relabel_stage(cfg, row: Row) -> tuple[Callable, argparse.Namespace]:
    from .relabel import RELABEL_SCHEMA, run_relabel
    less = cfg.label_mode == "less"
    ns = _stage(RELABEL_SCHEMA, ("common", "relabel"), cfg.label_configs,
                {**_common(cfg), "dataset": cfg.dataset, "num_classes": num_classes(cfg),
                 "train_dir": image_dir(cfg, row.method, row.ipc),
                 "teacher_ckpt": cfg.relabel_teacher or teacher_path(cfg),
                 "prune_ratio": row.prune_ratio if less else 0.0, "output_dir": label_dir(cfg, row),
                 # top-k labels (LPQLD); set only when asked, so stores without it keep their settings
                 **({"label_topk": row.label_topk} if row.label_topk else {})})
    return run_relabel, ns


def validate_overrides(cfg, row: Row, seed: int) -> dict[str, Any]:
    out = student_dir(cfg, row, seed)
    metric_gran = row.scheme or (UNPRUNED_REPLAY if row.prune_ratio == 0 and cfg.dataset not in
                                 ("in21k", "imagenet21k") else None)
    return {**_common(cfg), "dataset": cfg.dataset, "num_classes": num_classes(cfg),
            "train_dir": image_dir(cfg, row.method, row.ipc), "label_dir": label_dir(cfg, row),
            "val_dir": val_dir(cfg), "prune_ratio": row.prune_ratio, "seed": seed, "model": row.student,
            **(dict(zip(("prune_metric", "granularity"), metric_gran)) if metric_gran else {}),
            "output_dir": out, "resume": os.path.isfile(os.path.join(out, "checkpoint.pth"))}


def _validate_stage(cfg, row: Row, seed: int) -> tuple[Callable, argparse.Namespace]:
    from .validate import VALIDATE_SCHEMA, run_validate
    return run_validate, _stage(VALIDATE_SCHEMA, ("common", "validate"), cfg.label_configs,
                                validate_overrides(cfg, row, seed))


def _squeeze_stage(cfg, which: str) -> tuple[Callable, argparse.Namespace]:
    from .squeeze import CLASS_STATS_SCHEMA, TRAIN_SCHEMA, run_class_stats, run_teacher_training
    sq = squeeze_dir(cfg)
    base = {**_common(cfg), "dataset": cfg.dataset, "data_path": data_path(cfg)}
    if which == "teacher":
        return run_teacher_training, _stage(
            TRAIN_SCHEMA, ("common", "squeeze"), cfg.squeeze_configs + cfg.teacher_train_configs,
            {**base, "output_dir": sq, "resume": os.path.isfile(os.path.join(sq, "checkpoint.pth"))})
    return run_class_stats, _stage(CLASS_STATS_SCHEMA, ("common", "squeeze"), cfg.squeeze_configs,
                                   {**base, "weights": os.path.join(sq, "teacher.pth"), "output": teacher_path(cfg)})


def step_settings(cfg: argparse.Namespace, name: str) -> tuple[Callable, argparse.Namespace | None]:
    """(function, its resolved settings) of step ``name``: exactly what :func:`run_step` runs."""
    resolve_dataset(cfg)
    head, _, rest = name.partition("/")
    if name == "data/demo":
        from .data import make_demo_dataset
        settings = {k: int(v) for k, v in _pairs(cfg.demo_data, "demo_data").items()}
        return (lambda _: make_demo_dataset(data_path(cfg), **settings)), None
    if head == "squeeze":
        return _squeeze_stage(cfg, "teacher" if rest == "teacher" else "class_stats")
    if head == "images":
        method, _, ipc = rest.rpartition("_ipc")
        return _image_stage(cfg, method, int(ipc))
    if name == "analysis/diversity":
        return (lambda _: run_diversity(cfg)), None
    if name == "report":
        return (lambda _: write_report(cfg)), None
    row = _find(cfg, name)
    if head == "relabel" and row is not None:
        return _relabel_stage(cfg, row)
    if head == "validate" and row is not None:
        return _validate_stage(cfg, row, int(name.rpartition("/seed")[2]))
    raise KeyError(f"no step {name!r} in this plan; steps: {[s.name for s in plan(cfg)]}")


# ---- done? ---------------------------------------------------------------------------------------------
def step_done(cfg: argparse.Namespace, name: str) -> bool:
    """Complete and current (:mod:`lpld.pipeline_records`). A step that changed since it ran raises
    :class:`~lpld.pipeline_records.StaleStepError`, or, with ``recompute``, is not done."""
    st = records.status(cfg, name)
    if st.state == "changed" and not getattr(cfg, "recompute", False):
        raise records.stale_error(name, st)
    return st.state in records.CURRENT


# ---- running ---------------------------------------------------------------------------------------------
def run_step(cfg: argparse.Namespace, name: str, shard: tuple[int, int] | None = None, memo: dict | None = None) -> Any:
    """Run one step. ``shard=(index, count)`` runs one share of a recover / relabel step through
    the cluster module; unsharded, a relabel step whose shards are on disk merges them.

    A step that is complete and current is not run again. One that changed since it ran raises
    :class:`~lpld.pipeline_records.StaleStepError`; with ``recompute`` (unsharded: shards never
    clear what another shard may be writing) its output -- only ours -- is cleared and it runs
    again. Its record is written before it runs and once its output is complete."""
    memo = records.new_memo(cfg) if memo is None else memo
    kind = {s.name: s.kind for s in memo["plan"]}[name]
    claim_run_dir(cfg)
    if name != "report":
        st = records.status(cfg, name, memo)
        if st.waiting:
            raise InputValueError(f"step {name} runs {st.detail}: run that step first")
        if st.state in records.CURRENT:
            print(f"[skip] {name}: already complete", flush=True)
            return None
        if st.state == "changed":
            if not getattr(cfg, "recompute", False) or shard is not None:
                raise records.stale_error(name, st, shard=shard is not None)
            records.clear(cfg, name)
        records.write_record(cfg, name, "started", memo)
    result = _execute(cfg, name, kind, shard)
    if name != "report" and records.outputs_complete(cfg, name):
        done = records.write_record(cfg, name, "done", memo)
        memo["ran"].add(name)
        memo["status"][name] = records.Status("done", output=done["output"])
    return result


def _execute(cfg, name: str, kind: str, shard: tuple[int, int] | None) -> Any:
    fn, settings = step_settings(cfg, name)
    if name.startswith("validate/"):
        _write_row_info(cfg, name, settings)
    if shard is not None:
        if kind not in ("recover", "relabel"):
            raise ValueError(f"step {name} ({kind}) cannot be sharded; only recover and relabel steps can")
        from .launch.shards import run_shard
        return run_shard(kind, settings, shard)
    if kind == "relabel":
        try:
            from .launch import shards
        except ImportError:
            shards = None
        if shards is not None and shards.has_shards(settings):
            return shards.merge_shards(settings, None)
    return fn(settings)


def _write_row_info(cfg, name: str, settings) -> None:
    """Beside each student: what row it belongs to, so ``lpld report`` groups without guessing, and
    the settings it trains with, so the report never averages students trained differently."""
    row = _find(cfg, name)
    seed = int(name.rpartition("/seed")[2])
    info = {"table": cfg.table, "dataset": cfg.dataset, "method": row.method, "ipc": row.ipc,
            "label_topk": row.label_topk, "prune_ratio": row.prune_ratio, "compression": row.compression,
            "student": settings.model, "prune_metric": settings.prune_metric, "granularity": settings.granularity,
            "seed": seed, "label_mode": cfg.label_mode, "images": image_dir(cfg, row.method, row.ipc),
            "labels": label_dir(cfg, row), "settings": records.settings_of(cfg, name)}
    claim_dir(settings.output_dir, "validate", "student output directory")
    atomic_json_dump(info, os.path.join(settings.output_dir, "row.json"))


def claim_run_dir(cfg) -> None:
    """The output folder is new, empty or ours -- also one made before owner markers, recognised
    by an image set or label store of ours in it."""
    from .labels.common import is_our_label_store
    from .utils.owner import is_ours

    def made_here(out: str) -> bool:
        sets = [(os.path.join(out, sub), test) for sub, test in
                (("images", lambda p: is_ours(p, ["images"])), ("labels", is_our_label_store))]
        return any(test(os.path.join(d, e)) for d, test in sets if os.path.isdir(d) for e in os.listdir(d))
    claim_dir(_out(cfg), "pipeline", "pipeline output folder", owned=made_here)


def run_pipeline(cfg: argparse.Namespace) -> dict[str, Any]:
    """Run every step not done yet, in plan order; returns the report. A step that changed since
    it ran stops the job before anything runs (one line: step, key, old -> new), unless
    ``recompute``."""
    resolve_dataset(cfg)
    if cfg.teacher and not os.path.isfile(cfg.teacher):
        raise InputValueError(f"teacher {cfg.teacher} not found: download it (bash download.sh --what teachers) or "
                              f"leave teacher unset to train one (squeeze)")
    memo = records.new_memo(cfg)
    checked = [(step.name, records.status(cfg, step.name, memo)) for step in memo["plan"]]
    if cfg.dry_run:
        for name, st in checked:
            print(st.line(name))
        return {}
    changed = [(name, st) for name, st in checked if st.state == "changed"]
    if changed and not cfg.recompute:
        raise records.stale_error(*changed[0], more=len(changed) - 1)
    claim_run_dir(cfg)
    memo = records.new_memo(cfg)  # checked again step by step, as the steps before each one run
    for step in memo["plan"]:
        st = records.status(cfg, step.name, memo)
        if st.state in records.CURRENT:
            print(f"[skip] {step.name}: already complete", flush=True)
            continue
        print(f"[{'redo' if st.state == 'changed' else 'run '}] {step.name}"
              + (f": {st.detail}" if st.state == "changed" else ""), flush=True)
        t0 = time.time()
        run_step(cfg, step.name, memo=memo)
        print(f"[done] {step.name} in {time.time() - t0:.1f}s", flush=True)
    with open(os.path.join(_out(cfg), "results.json")) as f:
        return json.load(f)


def diversity_stage(cfg) -> argparse.Namespace:
    from .analysis.diversity import SCHEMA
    stats = _squeeze_stage(cfg, "class_stats")[1] if cfg.teacher is None else None
    model = {k: getattr(stats, k) for k in ("model", "tiny_stem", "image_size")} if stats else {}
    sets = [f"{m}_ipc{i}={image_dir(cfg, m, i)}" for m, i in dict.fromkeys((r.method, r.ipc) for r in rows(cfg))]
    return _stage(SCHEMA, AUTHORS_SECTIONS, [], {
        **model, "dataset": cfg.dataset, "weights": teacher_path(cfg), "syn": sets, "real": data_path(cfg),
        "device": cfg.device, "progress": cfg.progress, "workers": cfg.workers or 0,
        "output_dir": os.path.join(_out(cfg), "diversity")})


def run_diversity(cfg) -> dict:
    """Within-class diversity of every image set of the job (lpld.analysis.diversity)."""
    from .analysis.diversity import run_diversity as measure
    return measure(diversity_stage(cfg))


def write_report(cfg) -> dict:
    """The report of this plan's students only: a student folder left from a seed or row no longer
    in the plan is named, never averaged in."""
    from .report import collect_and_write, find_runs
    planned = [student_dir(cfg, row, int(seed)) for row in rows(cfg) for seed in cfg.seeds]
    students = os.path.join(_out(cfg), "students")
    stray = sorted(set(find_runs([students])) - set(planned)) if os.path.isdir(students) else []
    if stray:
        print(f"report: {len(stray)} student folder(s) not in this plan, left out: {', '.join(stray)}", flush=True)
    div = os.path.join(_out(cfg), "diversity", "diversity_summary.json")
    return collect_and_write([students], _out(cfg), runs=planned,
                             diversity=div if os.path.isfile(div) else None, title=cfg.table or None)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(PIPELINE_SCHEMA, argv, sections=("pipeline",), description=__doc__)
    return run_pipeline(cfg)


if __name__ == "__main__":
    main()
