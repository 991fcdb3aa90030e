"""Train and evaluate a student on distilled images + stored (pruned) soft labels.

    python relabel_and_validate/validate.py --config relabel_and_validate/configs/tiny.yaml \
        --train-dir DISTILLED --label-dir LABELS --val-dir VAL --prune-ratio 0.975
    torchrun --nproc_per_node 4 relabel_and_validate/validate.py --config ... (DDP, one GPU per process)
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lpld.config import ConfigError, parse_config  # noqa: E402
from lpld.labels import StoreMismatchError  # noqa: E402
from lpld.validate import VALIDATE_SCHEMA, run_validate  # noqa: E402
from lpld.validate.fetcher_patch import FetcherPatchError  # noqa: E402

if __name__ == "__main__":
    cfg = parse_config(VALIDATE_SCHEMA, sys.argv[1:], sections=("common", "validate"),
                       description=__doc__.splitlines()[0])
    try:
        result = run_validate(cfg)
    except (ConfigError, StoreMismatchError, FetcherPatchError, FileNotFoundError) as err:
        sys.exit(f"validate.py: error: {err}")
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result, indent=2))
