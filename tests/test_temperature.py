"""LPQLD temperature schedules and the student-temperature calibration, against their formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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
