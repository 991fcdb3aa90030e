#!/usr/bin/env python
"""Within-class diversity of distilled images (the paper's Table 1 finding):
python relabel_and_validate/analyze_diversity.py --config squeeze/configs/tiny.yaml --weights TEACHER
--syn lpld=IMAGES_A sre2l=IMAGES_B --real TINY_ROOT --output-dir DIR  (see --help)"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.cli import run_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_command("diversity"))
