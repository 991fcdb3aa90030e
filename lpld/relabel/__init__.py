"""Stage 3a, relabel: the teacher's soft labels for every augmented view a student will see.

    path = run_relabel(cfg)                       # cfg: parse_config(RELABEL_SCHEMA, ...) or a dict
    diff = replay_check(path, train_dir, ...)     # ~0 (fp16 rounding) when images and labels pair
"""
from .generate import AugmentedBatches, build_manifest, normalize_config, run_relabel  # noqa: F401
from .replay import ReplayReport, replay_check  # noqa: F401
from .schema import RELABEL_SCHEMA  # noqa: F401
from .teacher import teacher_logits  # noqa: F401
