#!/usr/bin/env python
"""Every piece of GPU evidence from one command: the CUDA tests, each stage once, the speed ratios.

    python benchmarks/gpu_suite.py --output-dir DIR [--cpu-smoke] [--budget-s N] [--only SECTION ...]

The entry point only: the suite is the package beside this file, ``benchmarks/gpu_suite/`` (its
docstring, also ``--help``, says what each section measures and what the JSON holds).
"""
import os
import sys

# Run as a script, this folder is sys.path[0]: ``gpu_suite`` there is the package (a folder wins over
# a module of the same name), not this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gpu_suite import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
