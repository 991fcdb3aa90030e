"""LPQLD temperature schedules and the student-temperature calibration, against their formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lpld.utils.safe_load import safe_torch_load
from lpld.validate.temperature import (SCHEDULES, StudentTemperature, TemperatureSchedule,
                                       calibrate_student_temperature, calibration_grid)


def _theirs(kind, epoch, T, E, step, gamma, t_min):
    """train_FKD_LPQLD.py lines 515-536 as written, called with their 1-based current_epoch."""
    if kind == "step":
        temperature = T * (gamma ** (epoch // step))
        return temperature if temperature > 2 else 2
    if kind == "cosine":
        return t_min + 0.5 * (T - t_min) * (1 + math.cos(math.pi * epoch / E))
    if kind == "step_reverse":
        if epoch >= E:
            epoch = E - 1
        return T * gamma ** ((E - epoch - 1) // step)
    if kind == "cosine_reverse":
        return t_min + 0.5 * (T - t_min) * (1 - math.cos(math.pi * epoch / E))
    return T


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("setting", [dict(base=20.0, train_epochs=300, step_size=30, gamma=0.7, t_min=2.0),
                                     dict(base=1.5, train_epochs=7, step_size=2, gamma=0.5, t_min=0.5)])
def test_schedules_equal_their_formulas_at_every_epoch(kind, setting):
    sched = TemperatureSchedule(kind=kind, **setting)
    E = setting["train_epochs"]
    for epoch in range(E):  # our 0-based epoch is their current_epoch - 1
        expected = _theirs(kind, epoch + 1, setting["base"], E, setting["step_size"], setting["gamma"],
                           setting["t_min"])
        assert sched.at(epoch) == expected, (kind, epoch)


def test_defaults_are_the_reproduce_script():
    sched = TemperatureSchedule()
    assert (sched.kind, sched.base, sched.step_size, sched.gamma) == ("step", 20.0, 30, 0.7)
    temps = [sched.at(e) for e in range(300)]
    assert temps[0] == 20.0 and temps[28] == 20.0 and temps[29] == pytest.approx(14.0)  # 1-based decay at 30
    assert temps[-1] == 2.0 and min(temps) == 2.0  # their floor of 2
    assert StudentTemperature().mode == "calibrated" and StudentTemperature().value == 1.0


@pytest.mark.parametrize("bad", ["linear", "Step-", 3])
def test_unknown_schedule_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match=r"temp_scheduler must be one of \[") as err:
        TemperatureSchedule(kind=bad)
    assert "\n" not in str(err.value)
    assert TemperatureSchedule(kind=None).kind == TemperatureSchedule(kind="None").kind == "none"
    with pytest.raises(ValueError, match="temp_step_size"):
        TemperatureSchedule(kind="step", step_size=0)


def test_calibration_picks_the_grid_minimum():
    """A student whose logits are the teacher's scaled by 1/0.37: KL vanishes at t = 0.37 exactly."""
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(5, 7, generator=gen) * 3
    target = F.softmax(teacher, dim=1)
    student = teacher * 0.37
    assert calibrate_student_temperature(student, target) == pytest.approx(0.37)
    grid = calibration_grid()
    assert grid[0] == 0.01 and grid[-1] == 1.0 and grid.size == 100
    losses = [float(F.kl_div(F.log_softmax(student / t, 1), target, reduction="batchmean")) for t in grid]
    assert calibrate_student_temperature(student, target) == grid[int(np.argmin(losses))]
    # a minimum outside the grid ends at its edge
    assert calibrate_student_temperature(teacher * 3.0, target) == 1.0


def test_student_temperature_modes_and_resume_state():
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(4, 6, generator=gen)
    calibrated = StudentTemperature("calibrated", 1.0)
    assert calibrated.current(20.0) == 1.0  # the first epoch uses the given start value (absolute)
    calibrated.end_epoch(teacher * 0.5, F.softmax(teacher, 1))
    assert calibrated.current(20.0) == pytest.approx(0.5)
    resumed = StudentTemperature("calibrated", 1.0)
    resumed.load_state_dict(calibrated.state_dict())
    assert resumed.current(3.0) == calibrated.current(3.0)
    assert StudentTemperature("teacher").current(14.0) == 14.0
    fixed = StudentTemperature("fixed", 2.5)
    fixed.end_epoch(teacher, F.softmax(teacher, 1))
    assert fixed.current(14.0) == 2.5
    with pytest.raises(ValueError, match="mode must be one of"):
        StudentTemperature("ratio")


# --- in a training run ---------------------------------------------------------------------------------
def _tiny_teacher() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 4))


@pytest.fixture(scope="module")
def topk_store(demo_root, tmp_path_factory):
    """Top-2 labels with regenerated augmentation, written by relabel: 48 demo images, batch 8, 3 epochs."""
    import os
    from lpld.relabel import run_relabel
    out = str(tmp_path_factory.mktemp("lpqld") / "mr2")
    run_relabel({"dataset": "demo", "train_dir": os.path.join(demo_root, "train"), "num_classes": 4,
                 "batch_size": 8, "epochs": 3, "input_size": 16, "mix_type": "cutmix", "output_dir": out,
                 "workers": 0, "progress": False, "device": "cpu", "label_quantization": "MR-2",
                 "augmentation": "regenerated"}, teacher=_tiny_teacher())
    return out




def _train_cfg(demo_root, labels, out, **kw):
    import os
    return dict(dataset="demo", train_dir=os.path.join(demo_root, "train"), label_dir=labels,
                val_dir=os.path.join(demo_root, "val"), batch_size=8, epochs=3, workers=0, output_dir=str(out),
                model="timm/test_resnet", val_interval=3, progress=False, seed=0, max_steps_per_epoch=2) | kw


def _metrics(out):
    import json
    return [json.loads(line) for line in open(out / "metrics.jsonl")]


def test_schedule_and_calibration_drive_a_training_run(demo_root, topk_store, tmp_path, one_thread):
    """Each epoch trains at the schedule's T (step: 8 * 0.5^e, floored at 2) and the student at the
    temperature calibrated on the previous epoch's last micro-batch (1.0 first)."""
    from lpld.validate import run_validate
    result = run_validate(_train_cfg(demo_root, topk_store, tmp_path / "a", temperature=8.0, temp_scheduler="step",
                                     temp_step_size=1, temp_step_gamma=0.5, temp_stu_dynamic=1.0))
    rows = _metrics(tmp_path / "a")
    assert [r["temperature"] for r in rows] == [4.0, 2.0, 2.0]
    state = safe_torch_load(tmp_path / "a" / "checkpoint.pth", what="checkpoint")["student_temperature"]
    assert state["mode"] == "calibrated" and len(state["history"]) == 3
    assert [r["student_temperature"] for r in rows] == [1.0, *state["history"][:2]]
    grid = calibration_grid()
    assert all(np.isclose(grid, t).any() for t in state["history"])
    assert result["label_topk"] == 2 and result["augmentation"] == "regenerated"
    assert result["compression_actual"] == pytest.approx(result["label_bytes_full"] / result["label_bytes_actual"],
                                                         rel=1e-3)
    # cosine to temp_min over the 3 epochs, student at the teacher's T (no calibration)
    run_validate(_train_cfg(demo_root, topk_store, tmp_path / "c", temperature=8.0, temp_scheduler="cosine",
                            temp_min=2.0))
    rows = _metrics(tmp_path / "c")
    want = [2.0 + 0.5 * 6.0 * (1 + math.cos(math.pi * e / 3)) for e in (1, 2, 3)]
    assert [r["temperature"] for r in rows] == pytest.approx(want)
    assert [r["student_temperature"] for r in rows] == pytest.approx(want)


def test_resume_keeps_the_calibrated_temperature(demo_root, topk_store, tmp_path, interrupt_at_epoch, one_thread):
    """A run stopped after epoch 1 and resumed trains epoch 2 at the temperature calibrated after
    epoch 1 (not the starting 0.5 again): weights and temperatures equal the uninterrupted run's."""
    from lpld.validate import run_validate
    from lpld.validate import train as train_mod
    kw = dict(temperature=8.0, temp_scheduler="step", temp_step_size=1, temp_step_gamma=0.5, temp_stu_dynamic=0.5,
              train_epochs=2)
    run_validate(_train_cfg(demo_root, topk_store, tmp_path / "a", **kw))
    interrupt_at_epoch(train_mod, lambda: run_validate(_train_cfg(demo_root, topk_store, tmp_path / "b", **kw)))
    run_validate(_train_cfg(demo_root, topk_store, tmp_path / "b", resume=True, **kw))
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert a[0]["student_temperature"] == 0.5 and a[1]["student_temperature"] != 0.5  # a reset would show
    assert [r["student_temperature"] for r in b] == [r["student_temperature"] for r in a]
    sa = safe_torch_load(tmp_path / "a" / "checkpoint.pth", what="checkpoint")
    sb = safe_torch_load(tmp_path / "b" / "checkpoint.pth", what="checkpoint")
    assert sa["student_temperature"] == sb["student_temperature"]
    for k in sa["model"]:
        torch.testing.assert_close(sa["model"][k], sb["model"][k], msg=k)


def _calibration_batch():
    """A last micro-batch whose two halves, calibrated alone, pick different temperatures."""
    gen = torch.Generator().manual_seed(3)
    soft = torch.randn(8, 6, generator=gen) * 3
    # the student's logits are the target's (T = 2) scaled by 0.3 / 0.8: best t near 0.3 / 0.8
    out = soft / 2 * torch.tensor([0.3] * 4 + [0.8] * 4)[:, None] + 0.05 * torch.randn(8, 6, generator=gen)
    return out, soft


def _calibrate_rank(rank: int, world: int, port: int, result_dir: str) -> None:
    import torch.distributed as dist
    from lpld.validate.distributed import DistInfo
    from lpld.validate.loader import rank_rows
    from lpld.validate.epochs import calibrate
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    out, soft = _calibration_batch()
    rows = torch.as_tensor(rank_rows(8, rank, world))
    student = StudentTemperature("calibrated", 1.0)
    value = calibrate(student, (out[rows], soft[rows]), 2.0, 0.1, DistInfo(rank, world, rank))
    with open(f"{result_dir}/rank{rank}.txt", "w") as f:
        f.write(repr(value))
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_calibration_gathers_the_last_batch(tmp_path):
    """Under DDP (2 gloo processes) every rank picks the temperature one process picks on the
    whole last micro-batch, although each rank's own slice would pick another."""
    import socket
    from lpld.validate.distributed import DistInfo
    from lpld.validate.loss import probability_target
    from lpld.validate.epochs import calibrate
    out, soft = _calibration_batch()
    whole = calibrate(StudentTemperature("calibrated", 1.0), (out, soft), 2.0, 0.1, DistInfo())
    target = probability_target(soft, 2.0, 0.1)
    halves = [calibrate_student_temperature(out[s], target[s]) for s in (slice(0, 4), slice(4, 8))]
    assert halves[0] != halves[1]  # without the gather the ranks would disagree
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.start_processes(_calibrate_rank, args=(2, port, str(tmp_path)), nprocs=2,
                                          start_method="spawn")
    got = [float(open(tmp_path / f"rank{r}.txt").read()) for r in (0, 1)]
    assert got == [whole, whole]
