"""Stage 2 (recover): synthesise distilled images by class-wise BN matching (LPLD) or, as the
baseline, SRe2L's across-class BN matching. Entry point: :func:`run_recovery`."""
from .augment import AugmentParams, apply_grouped, apply_params, sample_crop, sample_params  # noqa: F401
from .bn_matching import BNMatcher, bn_layers, group_mean_var  # noqa: F401
from .io import class_complete, class_dir, image_name, save_class  # noqa: F401
from .run import load_teacher, plan_units, run_recovery  # noqa: F401
from .schema import RECOVER_SCHEMA  # noqa: F401
from .synthesize import (Group, GroupResult, Recoverer, RecoverySettings, denormalize_to_uint8,  # noqa: F401
                         group_generator, initial_images)
