"""LPLD: label pruning for large-scale dataset distillation (Xiao & He, NeurIPS 2024).

Stages: :mod:`lpld.squeeze` (teacher, class-wise BN statistics), :mod:`lpld.recover` (class-wise
BN-matching synthesis), :mod:`lpld.relabel` (FKD soft labels), :mod:`lpld.validate` (students on
pruned labels); :mod:`lpld.pipeline` runs them in order. ``lpld --help`` lists the commands.
"""
__version__ = "0.1.0"
