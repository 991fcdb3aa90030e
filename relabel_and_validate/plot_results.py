#!/usr/bin/env python
"""Student top-1 vs soft-label compression, one line per method:
python relabel_and_validate/plot_results.py RESULTS.csv [--reference PAPER.csv] --output PLOT.png"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.cli import run_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_command("plot"))
