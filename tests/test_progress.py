"""lpld.utils.progress: tqdm on a terminal, whole lines (no carriage returns) in a log."""
from __future__ import annotations

import io

import pytest

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


def _reports(text):
    """(tenth label, count) of each line with a label, and the closing line's count (or None)."""
    marks, close = [], None
    for line in text.splitlines():
        words = line.split(": ", 1)[1].split()
        if words[0].endswith("%"):
            marks.append((words[0], words[1]))
        else:
            assert close is None, text
            close = words[0]
    return marks, close


TENTHS = [f"{10 * k}%" for k in range(1, 10)]


def test_long_loops_report_every_tenth_and_early_exits_still_report():
    log = io.StringIO()
    for k in progress_bar(range(100), desc="relabel", file=log, min_duration=0.0):
        if k == 54:
            break
    assert _reports(log.getvalue()) == ([(f"{10 * k}%", f"{10 * k}/100") for k in range(1, 6)], "54/100")


@pytest.mark.parametrize("total, step", [(1000, 7), (1000, 1), (100, 3), (250, 250), (9, 1), (3, 1), (1, 1), (23, 4)])
def test_one_line_at_each_tenth_whatever_the_step_and_the_total(total, step):
    """Counting images in batches of 7 once drifted the reports (30%, 81%, 91%); a step over several
    tenths, or a total under 10, gives one line for each tenth it reaches, labelled with it."""
    log = io.StringIO()
    with LineProgress(desc="class statistics", total=total, file=log, min_duration=0.0) as bar:
        done = 0
        while done < total:
            bar.update(min(step, total - done))
            done = min(done + step, total)
    marks, close = _reports(log.getvalue())
    assert [label for label, _ in marks] == TENTHS and close == f"{total}/{total}"
    for label, count in marks:  # each at the first update at or past its tenth
        n = int(count.split("/")[0])
        tenth = int(label[:-1]) * total / 100
        assert tenth <= n < tenth + step or n == total, (label, count)


def test_a_resumed_loop_reports_only_the_tenths_ahead_and_leave_false_has_no_closing_line():
    log = io.StringIO()
    bar = LineProgress(desc="relabel", total=100, initial=35, file=log, min_duration=0.0, leave=False)
    bar.update(30)
    bar.update(35)
    bar.close()
    assert _reports(log.getvalue()) == ([("40%", "65/100"), ("50%", "65/100"), ("60%", "65/100"),
                                         ("70%", "100/100"), ("80%", "100/100"), ("90%", "100/100")], None)


@pytest.mark.parametrize("first_tenth_seconds, lines", [(7.0, 9), (5.0, 0)])
def test_only_loops_projected_to_last_min_duration_report(monkeypatch, first_tenth_seconds, lines):
    """Judged at the first tenth (here 10 x 7 s or 10 x 5 s against 60 s); then every tenth, however
    fast the following ones are."""
    clock = [1000.0]
    monkeypatch.setattr("lpld.utils.progress.time.monotonic", lambda: clock[0])
    log = io.StringIO()
    bar = LineProgress(desc="epoch 1/2", total=20, file=log)
    for k in range(20):
        clock[0] += first_tenth_seconds / 2 if k < 2 else 0.01
        bar.update(1)
    bar.close()
    marks, close = _reports(log.getvalue())
    assert [label for label, _ in marks] == TENTHS[:lines] and close == "20/20"


def test_unknown_totals_updates_context_manager_and_disable():
    log = io.StringIO()
    with progress_bar(desc="repair", total=None, file=log, unit="batch") as bar:
        bar.update(3)
        bar.update(2)
    assert log.getvalue().startswith("repair: 5 batch [")
    quiet = io.StringIO()
    assert list(progress_bar(iter([1, 2]), file=quiet, disable=True)) == [1, 2]
    assert quiet.getvalue() == ""
