"""The paper's names of its label-pruning ratios: the one table every stage and report uses."""
from __future__ import annotations


# Nominal label compression of the paper's pruning ratios (Tables 2 and 3: 0 / 0.9 / 0.95 / 0.97 /
# 0.975 are called 1x / 10x / 20x / 30x / 40x; 0.97 is "30x" although 1 / (1 - 0.97) = 33.3).
PAPER_COMPRESSION = {0.0: 1.0, 0.9: 10.0, 0.95: 20.0, 0.97: 30.0, 0.975: 40.0}


def compression_nominal(prune_ratio: float) -> float:
    """The paper's name of a ratio when it has one, else 1 / (1 - ratio) (inf for ratio 1)."""
    ratio = float(prune_ratio)
    if ratio in PAPER_COMPRESSION:
        return PAPER_COMPRESSION[ratio]
    return float("inf") if ratio >= 1 else round(1 / (1 - ratio), 2)


def compression_name(prune_ratio: float) -> str:
    """``0.975 -> "40x"``, ``0.5 -> "2x"``, ``1.0 -> "inf"``."""
    value = compression_nominal(prune_ratio)
    return "inf" if value == float("inf") else f"{value:g}x"
