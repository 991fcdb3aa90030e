"""lpld.utils.progress: tqdm on a terminal, whole lines (no carriage returns) in a log."""
from __future__ import annotations

import io

from tqdm import tqdm

from lpld.utils.progress import LineProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_tqdm():
    bar = progress_bar(range(3), desc="x", file=Terminal(), leave=False, every=0.5)
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2]


def test_a_log_gets_one_line_at_the_end_without_carriage_returns():
    log = io.StringIO()
    bar = progress_bar(range(1000), desc="epoch 1/3", file=log)
    assert isinstance(bar, LineProgress)
    for k in bar:
        if k == 500:
            bar.set_postfix(loss="0.1234")
    text = log.getvalue()
    assert "\r" not in text and text.count("\n") == 1
    assert text.startswith("epoch 1/3: 1000/1000 it [") and text.rstrip().endswith("loss=0.1234")


def test_leave_false_prints_no_closing_line():
    """As tqdm's leave=False: the caller prints its own summary (a student's epoch line)."""
    log = io.StringIO()
    for _ in progress_bar(range(10), desc="epoch 1/3", file=log, leave=False):
        pass
    assert log.getvalue() == ""


def test_long_loops_report_every_tenth_and_early_exits_still_report():
    log = io.StringIO()
    for k in progress_bar(range(100), desc="relabel", file=log, min_interval=0.0):
        if k == 54:
            break
    lines = log.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["10/100", "20/100", "30/100", "40/100", "50/100", "54/100"]


def test_unknown_totals_updates_context_manager_and_disable():
    log = io.StringIO()
    with progress_bar(desc="repair", total=None, file=log, unit="batch") as bar:
        bar.update(3)
        bar.update(2)
    assert log.getvalue().startswith("repair: 5 batch [")
    quiet = io.StringIO()
    assert list(progress_bar(iter([1, 2]), file=quiet, disable=True)) == [1, 2]
    assert quiet.getvalue() == ""
