"""The pipeline's options (:data:`PIPELINE_SCHEMA`): what ``lpld pipeline --help`` lists and the
``configs/pipeline/*.yaml`` files set."""
from __future__ import annotations

import argparse

from ..config import Option, key_value_pairs
from ..data.demo import DEMO_RANGES
from ..data.subset import CLASSES_OPTION
from ..utils.errors import InputValueError
from ..validate.label_plan import PLAN_HELP, label_plan_rule
from .layout import METHODS


def _extra_row_format(specs, values):
    """``extra_rows``: the RATIO of METHOD:RATIO:TOPK[:PLAN] in [0, 1), TOPK >= 0 and PLAN a label
    plan (a spec of another shape, or a method not in ``methods``, is reported when the rows are
    planned)."""
    for spec in specs:
        parts = str(spec).split(":", 3)
        try:
            ratio, topk = float(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            continue
        if not 0 <= ratio < 1 or topk < 0:
            return f"needs METHOD:RATIO:TOPK[:PLAN] with RATIO in [0, 1) and TOPK >= 0; {spec!r} is not"
        if len(parts) > 3 and label_plan_rule(parts[3], values):
            return f"needs METHOD:RATIO:TOPK[:PLAN] with PLAN {PLAN_HELP}; {spec!r} is not"
    return None


def _label_plans_format(plans, values):
    for plan in plans:
        problem = label_plan_rule(plan, values)
        if problem:
            return f"{problem} (element {plan!r})"
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
    "classes": CLASSES_OPTION,
    "squeeze_configs": Option(["squeeze/configs/demo.yaml"], list,
                              "YAML files shared by teacher training and the class-statistics pass"),
    "teacher_train_configs": Option(["squeeze/configs/demo_train.yaml"], list,
                                    "YAML files with the training-only keys (epochs, lr ...)"),
    "teacher": Option(None, str, "an existing class-BN teacher (skips squeeze), e.g. the authors' "
                                 "resnet18_tiny_0.pth; --teacher null: none, train one"),
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
    "label_plans": Option(["soft"], list, "student label plans per row: soft (LPLD), hard (class labels only, no "
                          "label store, no relabel step), HALD's S1..S8, or a list such as soft:20,hard:20 "
                          "(lpld validate --label-plan; docs/hald.md)", check=_label_plans_format),
    "extra_rows": Option([], list, "rows beyond the grid, METHOD:RATIO:TOPK[:PLAN] each (at every ipc, student and "
                         "scheme), e.g. lpld:0.975:2 for top-2 labels at 40x, lpld:0.975:0:S6 for HALD's soft/hard "
                         "plan on the 40x labels, lpld:0:0:hard for hard labels only", check=_extra_row_format),
    "label_mode": Option("less", str, "less: one store per ratio holding only the kept batches (the authors' "
                         "less_label_*.sh); full: one full store per image set, pruned when the student "
                         "trains (their main_table_*.sh)", choices=("less", "full")),
    "students": Option([], list, "student architectures (default: the label config's model)"),
    "prune_schemes": Option([], list, "METRIC/GRANULARITY per row, e.g. random/batch_to_epoch order/epoch "
                            "(default: the label config's; ratio 0 replays in order, epoch by epoch)"),
    "seeds": Option([0], list, "student seeds (model init and pool draws): a student per seed", item=int, min=0),
    "diversity": Option(False, bool, "within-class diversity (cosine, MMD) of every image set, in the report"),
    "table": Option("", str, "name of this job in the report (e.g. the paper table)"),
    # ---- the sizes a shorter run changes first (default: each stage config's) ----
    "teacher_epochs": Option(None, int, "teacher training epochs (squeeze epochs)", min=1),
    "recover_iterations": Option(None, int, "recovery steps per batch of LPLD / SRe2L images (recover iterations)",
                                 min=1),
    "label_epochs": Option(None, int, "epochs of soft labels relabel writes, and the student's label pool "
                           "(relabel and validate epochs)", min=1),
    "student_epochs": Option(None, int, "epochs each student trains (validate train_epochs; default: label "
                             "epochs)", min=1),
    "workers": Option(None, int, "data-loading workers for every stage (default: each config's)", min=0),
    "threads": Option(None, int, "CPU threads of torch in this process (torch.set_num_threads; default: "
                      "torch's, one per core). Set 1 when other jobs share the cores: oversubscribed "
                      "threads run several times slower", min=1),
    "progress": Option(True, bool, "tqdm progress bars"),
    "dry_run": Option(False, bool, "print the plan (each step done / todo / changed: key old -> new) and stop"),
    "recompute": Option(False, bool, "recompute the steps whose settings or inputs changed since they ran, and "
                        "the steps after them (default: stop with an error naming the step and the key)"),
}


def resolve_dataset(cfg: argparse.Namespace) -> argparse.Namespace:
    """``dataset`` must be named whenever ``data_path`` is: the default, demo, generates the demo
    dataset at data_path, and a guess must never point that at someone's real dataset. An empty
    ``teacher`` is an error (it would silently drop the squeeze steps)."""
    if cfg.teacher == "":
        raise InputValueError("--teacher '' names no file: give a class-BN teacher (e.g. the authors' "
                              "resnet18_tiny_0.pth), or --teacher null to train one (squeeze)")
    if cfg.dataset is None:
        if cfg.data_path:
            raise InputValueError(f"--data-path {cfg.data_path} is given without --dataset: name the dataset it holds "
                                  f"(--dataset tiny | imagenet | in21k | imagefolder, or demo to generate the demo there)")
        cfg.dataset = "demo"
    return cfg
