"""Every bad value is a one-line error, never a traceback or a silent change of meaning.

One table: each row is a command line of a real ``lpld`` command (run in-process through
``lpld.cli.main``) with one bad value -- a flag, a config file, or a damaged label store -- and a
fragment its error must contain. The command must exit with status 2 and print exactly one error
line (``warning:`` notices aside) and no traceback. Most rows fail while the options are parsed, so
they need no data; the rows whose rule needs the data use the demo dataset and label stores built
here. Then: every numeric option of every schema declares its range, the defaults lie inside it,
and each declared bound is enforced.
"""
from __future__ import annotations

import json
import math
import os
import shutil

import pytest
import torch

from lpld.cli import main
from lpld.config import ConfigError, Option, load_yaml, resolve

pytestmark = pytest.mark.usefixtures("one_thread")

# (command line, the fragment of its error). Rows that could start work if the value slipped
# through are dry runs, and every row runs in a temporary folder. Placeholders: {tmp} a fresh folder, {cfg} a config
# file holding the row's text (CONFIGS), {train} / {val} the demo images, {teacher} a 4-class
# checkpoint, {store:<kind>} a label store (STORES) damaged as named.
ROWS = [
    # --- squeeze ---------------------------------------------------------------------------------
    ("squeeze-train --batch-size 0", "option 'batch_size' = 0 is not valid: --batch-size must be >= 1 (an integer)"),
    ("squeeze-train --workers -1", "option 'workers' = -1 is not valid: --workers must be >= 0 (an integer)"),
    ("squeeze-train --lr nan", "option 'lr' = nan is not valid: --lr must be > 0 (a finite number)"),
    ("squeeze-train --epochs 0", "option 'epochs' = 0 is not valid: --epochs must be >= 1"),
    ("squeeze-train --warmup-start-factor 0", "--warmup-start-factor must be in (0, 1] (a finite number)"),
    ("class-stats --workers -1", "option 'workers' = -1 is not valid"),
    ("class-stats --image-size 0", "option 'image_size' = 0 is not valid: --image-size must be >= 1"),
    # --- recover (BN matching), RDED, random real ------------------------------------------------
    ("recover --lr -1", "option 'lr' = -1.0 is not valid: --lr must be > 0 (a finite number)"),
    # was: 0 silently meant ipc (only unset does)
    ("recover --batch-size 0", "option 'batch_size' = 0 is not valid: --batch-size must be >= 1 (an integer)"),
    ("recover --ipc 0", "option 'ipc' = 0 is not valid: --ipc must be >= 1 (an integer)"),
    ("recover --adam-beta1 1", "option 'adam_beta1' = 1.0 is not valid: --adam-beta1 must be in [0, 1)"),
    ("recover --jitter-min 40",
     "option 'jitter_min' = 40 is not valid: it must be <= jitter_max (jitter_max = 32: default)"),
    ("recover --class-start 5 --class-end 5", "option 'class_start' = 5 is not valid: it must be < "
                                              "class_end (class_end = 5: command line)"),
    ("recover --config {cfg:ipc_null}",
     "cfg.yaml: option 'ipc' = null is not valid: --ipc must be >= 1 (an integer); leave the key out"),
    ("recover --config {cfg:binary}", "cfg.yaml: not a YAML text file"),
    ("rded --mipc 3", "--mipc 3 < ipc x factor^2 = 40: every stitched patch comes from a different real image"),
    ("rded --workers -1", "option 'workers' = -1 is not valid"),
    ("rded --jpeg-quality 101", "option 'jpeg_quality' = 101 is not valid: --jpeg-quality must be in [0, 100]"),
    ("rded --dataset demo --data-path {data} --teacher {teacher} --tiny-stem --ipc 4 --factor 2 --mipc 16 "
     "--image-size 16 --device cpu --no-progress --output-dir {tmp}",
     "class 0 of {data} has 12 training images, fewer than --mipc 16; every stitched patch needs its own image "
     "(ipc x factor^2 = 16): lower --ipc or --factor"),
    ("random-real --ipc 0", "option 'ipc' = 0 is not valid: --ipc must be >= 1 (an integer)"),
    ("random-real --image-size -1", "option 'image_size' = -1 is not valid: --image-size must be >= 0"),
    ("random-real --dataset demo --data-path {data} --ipc 13 --no-progress --output-dir {tmp}",
     "class 0 has 12 training images, fewer than --ipc 13; lower --ipc to at most 12"),
    # --- relabel and the label-store tools --------------------------------------------------------
    ("relabel --input-size 0", "option 'input_size' = 0 is not valid: --input-size must be >= 1"),
    ("relabel --cutmix -1", "option 'cutmix' = -1.0 is not valid: --cutmix must be > 0"),
    ("relabel --mixup 0", "option 'mixup' = 0.0 is not valid: --mixup must be > 0"),
    ("relabel --workers -1", "option 'workers' = -1 is not valid"),
    ("relabel --prune-ratio 1", "option 'prune_ratio' = 1.0 is not valid: --prune-ratio must be in [0, 1)"),
    ("relabel --label-topk -2", "option 'label_topk' = -2 is not valid: --label-topk must be >= 0"),
    ("relabel --batch-shard 2 2",
     "option 'batch_shard' = [2, 2] is not valid: it must be [index, count] with index < count"),
    ("relabel --dataset demo --train-dir {train} --teacher-ckpt {teacher} --tiny-stem --input-size 16 "
     "--batch-size 8 --epochs 1 --device cpu --workers 0 --no-progress --label-topk 9 --output-dir {tmp}/labels",
     "label_topk 9 is more than the teacher's 4 classes; use --label-topk 1..4"),
    ("check-labels --store {store:authors_cut_mid_list}", "sampler_indices_epoch.json: is not valid JSON"),
    ("check-labels --store {store:authors_string_index}", "sampler_indices_epoch.json: epoch 0 lists '"),
    ("check-labels --store {store:authors_cut_at_list}", "sampler_indices_epoch.json: has no entry for epoch 1, "
                                                          "but epoch_1/ holds 6 batch files"),
    ("check-labels --store {store:authors_short_epoch}", "sampler_indices_epoch.json: lists 40 image indices "
                                                          "(5 batches of 8) for epoch 1, but epoch_1/ holds 6"),
    ("check-labels --store {store:authors_bpe0}", "lpld_manifest.json: 'batches_per_epoch' is 0, but it must be "
                                                  "a positive integer"),
    ("check-labels --store {store:ours_bpe0}", "manifest.json: 'batches_per_epoch' is 0, but it must be a "
                                               "positive integer"),
    ("check-labels --store {store:ours_epochs_negative}", "manifest.json: 'epochs' is -2, but it must be a positive"),
    ("check-labels --store {store:ours_no_batch_size}", "manifest.json: has no 'batch_size'"),
    ("check-labels --store {store:ours_progress_negative}", "progress.json: 'committed' is -1"),
    ("check-labels --store {store:lpqld_string_index}", "sampler_indices_batch.json: batch 0 lists '"),
    ("check-labels --store {store:lpqld_cut_mid_list}", "sampler_indices_batch.json: is not valid JSON"),
    ("check-labels --store {store:lpqld_cut_at_list}", "sampler_indices_batch.json lists 11 batches, but"),
    ("check-labels --store {store:ours} --num-classes 0", "argument --num-classes: must be >= 1 (an integer)"),
    ("check-labels --store {store:ours} --batches 3 99", "--batches 99 is not in"),
    ("convert-labels --src {store:ours} --dst {tmp}/x --to ours --label-topk 9",
     "label_topk 9 is outside 1..4, the class count of"),
    ("convert-labels --src {store:release_cut_at_list} --dst {tmp}/x --to ours", "has no entry for epoch 1"),
    # --- validate ----------------------------------------------------------------------------------
    ("validate --prune-ratio 1.0", "option 'prune_ratio' = 1.0 is not valid: --prune-ratio must be in [0, 1)"),
    ("validate --batch-size 0", "option 'batch_size' = 0 is not valid: --batch-size must be >= 1 (an integer)"),
    ("validate --gradient-accumulation-steps 0", "option 'gradient_accumulation_steps' = 0 is not valid"),
    ("validate --batch-size 8 --gradient-accumulation-steps 3",
     "option 'gradient_accumulation_steps' = 3 is not valid: it must divide batch_size (batch_size = 8: command line)"),
    ("validate --workers -1", "option 'workers' = -1 is not valid: --workers must be >= 0 (an integer)"),
    ("validate --adamw-lr nan", "option 'adamw_lr' = nan is not valid: --adamw-lr must be > 0 (a finite number)"),
    # was: 0 silently trained all epochs (only the documented -1 means "= epochs")
    ("validate --train-epochs 0", "option 'train_epochs' = 0 is not valid: --train-epochs must be -1 or >= 1"),
    ("validate --temperature 0", "option 'temperature' = 0.0 is not valid: --temperature must be > 0"),
    ("validate --ema-decay 1.5", "option 'ema_decay' = 1.5 is not valid: --ema-decay must be in [0, 1]"),
    ("validate --label-quantization MS-2", "option 'label_quantization' = 'MS-2' is not valid: it must be 'MR-<k>'"),
    ("validate --config {cfg:duplicate}", "cfg.yaml: key 'batch_size' is given twice in one mapping (lines 3 "
                                          "and 5)"),
    ("validate --dataset demo --train-dir {train} --label-dir {store:release_cut_at_list} --val-dir {val} "
     "--image-size 16 --batch-size 8 --epochs 2 --prune-ratio 0.5 --device cpu --workers 0 --no-progress "
     "--output-dir {tmp}",  # was: trained on the half of the store that the cut json lists
     "has no entry for epoch 1, but epoch_1/ holds 6 batch files"),
    # label plans (hard-label epochs, HALD): the epochs must add up, the setting must exist, S2-S5 need their n
    ("validate --label-plan S6 --train-epochs 300 --soft-epochs 150 --hard-epochs 100",
     "label_plan S6: soft_epochs 150 + hard_epochs 100 do not add up to the 300 epochs the run trains; set them to "
     "add up to 300 (or leave one at -1: it takes the rest)"),
    ("validate --label-plan soft:150,hard:100 --epochs 300",
     "label_plan 'soft:150,hard:100' holds 250 epochs, but the run trains 300; make its segments add up to 300 "
     "(or set --train-epochs 250)"),
    ("validate --label-plan S9", "option 'label_plan' = 'S9' is not valid: it must be soft | hard | S1..S8 (HALD's "
                                 "settings) | a list KIND:EPOCHS,"),
    ("validate --label-plan soft:3,hrd:3", "segment 'hrd:3' is not KIND:EPOCHS with KIND soft or hard"),
    ("validate --label-plan S3 --train-epochs 300 --train-dir {train} --val-dir {val}",
     "label_plan S3 alternates blocks of plan_block epochs (HALD's n), which defaults to the label store's stored "
     "epochs, but no label_dir is given: set --plan-block N (or --label-dir)"),
    ("validate --dataset demo --train-dir {train} --val-dir {val} --label-plan hard --hard-batch-size 64 --epochs 2 "
     "--device cpu --workers 0 --no-progress --output-dir {tmp}",
     "hard_batch_size 64 is larger than the 48 distilled images in {train}: a hard epoch's batch holds at most all "
     "of them; use --hard-batch-size 48 or less"),
    ("validate --dataset demo --train-dir {train} --label-dir {store:ours} --val-dir {val} --image-size 16 "
     "--batch-size 8 --epochs 2 --label-plan S6 --plan-block 3 --device cpu --workers 0 --no-progress "
     "--output-dir {tmp}",
     "plan_block 3 asks for 3 stored epochs of soft labels, but the pool of"),
    # --- analysis, pipeline, launch ---------------------------------------------------------------
    ("diversity --batch-size 0", "option 'batch_size' = 0 is not valid"),
    ("diversity --sigma -1", "option 'sigma' = -1.0 is not valid: --sigma must be > 0"),
    ("diversity --classes 5:2", "option 'classes' = '5:2' is not valid: it must be A:B with A < B"),
    ("pipeline --dry-run --output-dir {tmp} --prune-ratios 0 1.5",
     "option 'prune_ratios' = [0.0, 1.5] is not valid: every element of --prune-ratios must be in [0, 1) (a finite "
     "number); 1.5 is not"),
    ("pipeline --dry-run --output-dir {tmp} --seeds -1",
     "option 'seeds' = [-1] is not valid: every element of --seeds must be >= 0 (an integer)"),
    ("pipeline --dry-run --output-dir {tmp} --demo-data num_classes=0",
     "option 'demo_data' = ['num_classes=0'] is not valid: it needs a value >= 1 (an integer) in 'num_classes=0'"),
    ("pipeline --dry-run --output-dir {tmp} --image-names lpld",
     "option 'image_names' = ['lpld'] is not valid: it must be a list of KEY=VALUE"),
    ("pipeline --dry-run --output-dir {tmp} --extra-rows lpld:2:1",
     "needs METHOD:RATIO:TOPK[:PLAN] with RATIO in [0, 1)"),
    ("pipeline --dry-run --output-dir {tmp} --label-plans soft S9",
     "option 'label_plans' = ['soft', 'S9'] is not valid: it must be soft | hard | S1..S8 (HALD's settings)"),
    ("pipeline --dry-run --output-dir {tmp} --extra-rows lpld:0.9:0:S0",
     "needs METHOD:RATIO:TOPK[:PLAN] with PLAN soft | hard | S1..S8"),
    ("pipeline --dry-run --output-dir {tmp} --config {cfg:binary}", "cfg.yaml: not a YAML text file"),
    ("launch --dry-run --output-dir {tmp} --nodes 0", "option 'nodes' = 0 is not valid: --nodes must be >= 1"),
    ("launch --dry-run --output-dir {tmp} --poll-s 0", "option 'poll_s' = 0.0 is not valid: --poll-s must be > 0"),
    ("launch --dry-run --output-dir {tmp} --config {cfg:duplicate}", "cfg.yaml: key 'batch_size' is given twice"),
    ("launch recover --dry-run -- --output-dir {tmp} --ipc 0",
     "option 'ipc' = 0 is not valid: --ipc must be >= 1 (an integer)"),
    ("make-demo {tmp}/demo --num-classes 0", "argument --num-classes: must be >= 1 (an integer); got '0'"),
]

CONFIGS = {
    "ipc_null": "ipc: null\n",
    "binary": b"PK\x03\x04\x14\x00\x00\x08\x08\x00\xb1\x9c\x00\x00",  # the start of a torch checkpoint (zip)
    "duplicate": "common:\n  basic:\n    batch_size: 64\n    workers: 2\n    batch_size: 32\n",
}


# --- the label stores of the rows ----------------------------------------------------------------
@pytest.fixture(scope="module")
def base_stores(demo_root, make_label_store, tmp_path_factory):
    """A 4-class store of ours (48 images, batch 8, 2 epochs: 12 batches), and its copies in the
    authors' LPLD and LPQLD layouts."""
    from lpld.labels import convert
    tmp = tmp_path_factory.mktemp("bad_values_stores")
    ours = str(tmp / "ours")
    make_label_store(os.path.join(demo_root, "train"), ours, None, num_classes=4, batch_size=8, epochs=2)
    return {"ours": ours, "authors": convert(ours, str(tmp / "authors"), to="authors", progress=False),
            "lpqld": convert(ours, str(tmp / "lpqld"), to="lpqld", progress=False)}


def _edit_json(path: str, change) -> None:
    with open(path) as f:
        data = json.load(f)
    change(data)
    with open(path, "w") as f:
        json.dump(data, f)


def _edit_text(path: str, change) -> None:
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(change(text))


def _first_index_as_string(text: str) -> str:
    head, _, tail = text.partition(": [")
    number, _, rest = tail.partition(",")
    return f'{head}: ["{number.strip()}",{rest}'


def _as_release_cut_at_list(path: str) -> None:
    """As the authors' release (no side manifest or checksums of ours, so no planned batch count to
    notice a short json by), with the json cut after epoch 0."""
    for name in ("lpld_manifest.json", "lpld_checksums.tsv"):
        os.remove(os.path.join(path, name))
    _edit_json(f"{path}/sampler_indices_epoch.json", lambda d: d.pop("1"))


STORES = {  # kind -> (source format, damage)
    "ours": ("ours", None),
    "authors_cut_mid_list": ("authors", lambda p: _edit_text(f"{p}/sampler_indices_epoch.json",
                                                             lambda t: t[:len(t) // 2])),
    "authors_string_index": ("authors", lambda p: _edit_text(f"{p}/sampler_indices_epoch.json",
                                                             _first_index_as_string)),
    # cut after epoch 0's list and closed again: valid JSON, one epoch shorter
    "authors_cut_at_list": ("authors", lambda p: _edit_json(f"{p}/sampler_indices_epoch.json",
                                                            lambda d: d.pop("1"))),
    "release_cut_at_list": ("authors", lambda p: _as_release_cut_at_list(p)),
    "authors_short_epoch": ("authors", lambda p: _edit_json(f"{p}/sampler_indices_epoch.json",
                                                            lambda d: d.update({"1": d["1"][:40]}))),
    "authors_bpe0": ("authors", lambda p: _edit_json(f"{p}/lpld_manifest.json",
                                                     lambda m: m.update(batches_per_epoch=0))),
    "ours_bpe0": ("ours", lambda p: _edit_json(f"{p}/manifest.json", lambda m: m.update(batches_per_epoch=0))),
    "ours_epochs_negative": ("ours", lambda p: _edit_json(f"{p}/manifest.json", lambda m: m.update(epochs=-2))),
    "ours_no_batch_size": ("ours", lambda p: _edit_json(f"{p}/manifest.json", lambda m: m.pop("batch_size"))),
    "ours_progress_negative": ("ours", lambda p: _edit_json(f"{p}/progress.json",
                                                            lambda m: m.update(committed=-1))),
    "lpqld_string_index": ("lpqld", lambda p: _edit_text(f"{p}/sampler_indices_batch.json", _first_index_as_string)),
    "lpqld_cut_mid_list": ("lpqld", lambda p: _edit_text(f"{p}/sampler_indices_batch.json",
                                                         lambda t: t[:len(t) // 2])),
    "lpqld_cut_at_list": ("lpqld", lambda p: _edit_json(f"{p}/sampler_indices_batch.json", lambda d: d.pop("11"))),
}


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> str:
    from lpld.models import build_model, save_checkpoint
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("bad_values_teacher") / "teacher.pth")
    save_checkpoint(path, build_model("resnet18", 4, tiny_stem=True))
    return path


def _expand(template: str, request, tmp_path) -> str:
    """The row's text with its placeholders filled (building only the data the row needs)."""
    out = template.replace("{tmp}", str(tmp_path / "run"))
    if "{cfg:" in out:
        name = out.split("{cfg:")[1].split("}")[0]
        path = tmp_path / "cfg.yaml"
        text = CONFIGS[name]
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        out = out.replace(f"{{cfg:{name}}}", str(path))
    if "{store:" in out:
        kind = out.split("{store:")[1].split("}")[0]
        source, damage = STORES[kind]
        path = str(tmp_path / kind)
        shutil.copytree(request.getfixturevalue("base_stores")[source], path)
        if damage is not None:
            damage(path)
        out = out.replace(f"{{store:{kind}}}", path)
    if any(key in out for key in ("{train}", "{val}", "{data}")):
        root = request.getfixturevalue("demo_root")
        out = (out.replace("{train}", os.path.join(root, "train")).replace("{val}", os.path.join(root, "val"))
               .replace("{data}", root))
    if "{teacher}" in out:
        out = out.replace("{teacher}", request.getfixturevalue("teacher_ckpt"))
    return out


def _one_line_error(argv: list[str], capsys) -> str:
    """Run ``lpld <argv>``; it must exit 2 with one error line and no traceback. Returns the line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert exc.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert len(lines) == 1, err
    assert ": error: " in lines[0], err
    return lines[0]


@pytest.mark.parametrize("command, fragment", ROWS, ids=[r[0][:70] for r in ROWS])
def test_bad_value_is_one_line_error(command, fragment, request, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the authors' sampler index cache
    argv = _expand(command, request, tmp_path).split()
    monkeypatch.chdir(tmp_path)  # default output folders are relative: a value that slipped through writes here
    line = _one_line_error(argv, capsys)
    assert line.split(": error: ")[0].endswith(argv[0]), line  # '<command>: error: ...' ('lpld launch' too)
    assert _expand(fragment, request, tmp_path) in line, line


# --- every schema declares its ranges -------------------------------------------------------------
def all_schemas() -> dict[str, dict[str, Option]]:
    from lpld.analysis.diversity import SCHEMA as DIVERSITY
    from lpld.launch.resources import LAUNCH_SCHEMA
    from lpld.pipeline import PIPELINE_SCHEMA
    from lpld.recover import RECOVER_SCHEMA
    from lpld.recover.random_real import RANDOM_REAL_SCHEMA
    from lpld.recover.rded import RDED_SCHEMA
    from lpld.relabel import RELABEL_SCHEMA
    from lpld.squeeze import CLASS_STATS_SCHEMA, TRAIN_SCHEMA
    from lpld.validate import VALIDATE_SCHEMA
    return {"squeeze-train": TRAIN_SCHEMA, "class-stats": CLASS_STATS_SCHEMA, "recover": RECOVER_SCHEMA,
            "rded": RDED_SCHEMA, "random-real": RANDOM_REAL_SCHEMA, "relabel": RELABEL_SCHEMA,
            "validate": VALIDATE_SCHEMA, "diversity": DIVERSITY, "pipeline": PIPELINE_SCHEMA,
            "launch": LAUNCH_SCHEMA}


def _options():
    return [(stage, name, opt) for stage, schema in all_schemas().items() for name, opt in schema.items()
            if not opt.ignored]  # accepted for the authors' files and without effect


def test_every_numeric_option_declares_its_range():
    """A new int / float option (or list of numbers) without min / max / choices / check fails here."""
    missing = [f"{stage}.{name}" for stage, name, opt in _options() if opt.numeric_kind() and not opt.has_range()]
    untyped = [f"{stage}.{name}" for stage, name, opt in _options()
               if opt.kind() is list and opt.item is None
               and any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in opt.default or [])]
    assert not missing, f"numeric options without a declared range: {missing}"
    assert not untyped, f"lists of numbers without item=int/float: {untyped}"


@pytest.mark.parametrize("stage", sorted(all_schemas()))
def test_defaults_lie_inside_their_ranges(stage):
    schema = all_schemas()[stage]
    defaults = {name: opt.default for name, opt in schema.items() if opt.default is not None}
    resolve(schema, [("the defaults", defaults)])  # every value and every cross-option rule


def _outside(opt: Option):
    """Values just outside each declared bound (and nan for floats)."""
    kind = opt.numeric_kind()
    if opt.min is not None:
        yield opt.min if opt.min_open else (opt.min - 1 if kind is int else opt.min - 1e-3)
    if opt.max is not None:
        yield opt.max if opt.max_open else (opt.max + 1 if kind is int else opt.max + 1e-3)
    if kind is float and opt.is_finite():
        yield math.nan
        yield math.inf


BOUNDED = [(stage, name, opt) for stage, name, opt in _options() if opt.numeric_kind()]


@pytest.mark.parametrize("stage, name, opt", BOUNDED, ids=[f"{s}.{n}" for s, n, _ in BOUNDED])
def test_each_bound_is_enforced_and_names_option_value_and_place(stage, name, opt):
    schema = all_schemas()[stage]
    for value in _outside(opt):
        if value in opt.sentinels:
            continue
        bad = [value] if opt.kind() is list else value
        with pytest.raises(ConfigError) as err:
            resolve(schema, [("run.yaml", {name: bad})])
        message = str(err.value)
        flag = "--" + name.replace("_", "-")
        assert message.startswith(f"run.yaml: option '{name}' = "), message
        assert f" is not valid: {'every element of ' if opt.kind() is list else ''}{flag} must be {opt.describe()}" \
            in message, message
        assert "\n" not in message


def test_sentinels_and_nullable_options_are_kept():
    from lpld.validate import VALIDATE_SCHEMA
    from lpld.recover import RECOVER_SCHEMA
    assert resolve(VALIDATE_SCHEMA, [("f", {"train_epochs": -1})]).train_epochs == -1  # -1: = epochs
    assert resolve(VALIDATE_SCHEMA, [("f", {"num_classes": None})]).num_classes is None  # from the data
    assert resolve(RECOVER_SCHEMA, [("f", {"batch_size": None})]).batch_size is None  # = ipc
    with pytest.raises(ConfigError, match=r"option 'ipc' = null is not valid: --ipc must be >= 1 \(an integer\)"):
        resolve(RECOVER_SCHEMA, [("f", {"ipc": None})])


def test_a_rule_names_where_each_option_was_set(tmp_path):
    from lpld.recover import RECOVER_SCHEMA
    path = tmp_path / "r.yaml"
    path.write_text("jitter_max: 3\n")
    with pytest.raises(ConfigError) as err:
        resolve(RECOVER_SCHEMA, [(str(path), load_yaml(str(path))), ("command line", {"jitter_min": 5})])
    assert str(err.value) == (f"command line: option 'jitter_min' = 5 is not valid: it must be <= jitter_max "
                              f"(jitter_max = 3: {path})")


def test_yaml_merge_keys_still_override_but_plain_duplicates_do_not(tmp_path):
    ok = tmp_path / "merge.yaml"
    ok.write_text("base: &b {batch_size: 8, workers: 2}\nrun:\n  <<: *b\n  batch_size: 16\n")
    assert load_yaml(str(ok))["run"] == {"batch_size": 16, "workers": 2}
    nested = tmp_path / "nested.yaml"
    nested.write_text("validate:\n  basic:\n    lr: 1\n  store_true: [cos]\n  basic:\n    lr: 2\n")
    with pytest.raises(ConfigError, match=r"nested.yaml: key 'basic' is given twice in one mapping \(lines 2 and 5\)"):
        load_yaml(str(nested))


def test_two_spellings_of_one_key_are_a_duplicate(tmp_path):
    path = tmp_path / "spell.yaml"
    path.write_text("batch-size: 8\nbatch_size: 16\n")
    with pytest.raises(ConfigError, match=r"spell.yaml: 'batch-size' and 'batch_size' are the same key"):
        load_yaml(str(path))
