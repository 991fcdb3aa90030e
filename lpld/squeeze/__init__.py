"""Stage 1 (squeeze): teacher training and the class-wise BatchNorm statistics pass."""
from .class_stats import record_class_statistics, run_class_stats  # noqa: F401
from .schema import CLASS_STATS_SCHEMA, TRAIN_SCHEMA  # noqa: F401
from .train import run_teacher_training  # noqa: F401
