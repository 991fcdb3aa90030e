"""Per-class diversity measures of image features, vectorised over classes.

The paper's finding these serve (:mod:`lpld.analysis.diversity`) is about how alike a class's
images are; the definitions are ours, stated in full. Per class:

* **cosine**: mean pairwise cosine similarity of the teacher's penultimate features (global-pooled,
  the input of ``fc``) over all *distinct* pairs of the class's images (the diagonal i == j is
  excluded). Lower = more diverse.
* **mmd2_rbf**: squared Maximum Mean Discrepancy between the class's synthetic and real features,
  Gaussian kernel ``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))`` with ``sigma`` by the median
  heuristic: ``sigma^2`` = median of the squared pairwise distances among the pooled sample
  (synthetic and real of that class, distinct pairs, lower median). Estimator: ``unbiased``
  (Gretton et al. 2012, MMD_u^2: within-set kernel means exclude the diagonal; may be slightly
  negative) or ``biased`` (V-statistic MMD_b^2, diagonal included, always >= 0).
* **mmd2_linear**: linear-kernel MMD^2 = squared distance between the class's synthetic and real
  feature means (the biased estimator with ``k(x, y) = x . y``).

Everything is vectorised over classes: cosine uses ``||sum_i f_i||^2 - sum_i ||f_i||^2`` (the sum of
the off-diagonal Gram entries) from one ``index_add``; MMD batches all classes that hold the same
numbers of synthetic and real images into one ``[G, P, P]`` distance tensor. Tests compare both with
per-pair loops.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..utils.errors import InputValueError


def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Images per class, ``[K]``; a label outside ``[0, K)`` is an error."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise InputValueError(f"labels must lie in [0, {num_classes}); got [{int(labels.min())}, {int(labels.max())}]")
    return torch.bincount(labels, minlength=num_classes)


def class_cosine_similarity(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per class, the mean cosine similarity over distinct pairs (i != j): ``[K]`` float64,
    NaN for classes with fewer than two images.

    With unit rows ``u_i``, the off-diagonal Gram sum of a class is ``||sum_i u_i||^2 -
    sum_i ||u_i||^2``, so one ``index_add`` replaces the ``n x n`` Gram matrix of every class.
    (``||u_i||^2`` is 1, or 0 for an all-zero feature, whose cosine is taken as 0.)
    """
    labels = labels.long()
    counts = class_counts(labels, num_classes).double()
    unit = F.normalize(features.double(), dim=1)
    sums = torch.zeros(num_classes, unit.shape[1], dtype=torch.float64).index_add_(0, labels, unit)
    self_sim = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, (unit * unit).sum(1))
    pairs = counts * (counts - 1)
    off_diagonal = (sums * sums).sum(1) - self_sim
    out = off_diagonal / pairs.clamp_min(1)
    return torch.where(counts >= 2, out, torch.full_like(out, math.nan))


def class_linear_mmd2(x: torch.Tensor, x_labels: torch.Tensor, y: torch.Tensor, y_labels: torch.Tensor,
                      num_classes: int) -> torch.Tensor:
    """Linear-kernel MMD^2 per class = ``||mean(x_c) - mean(y_c)||^2``; NaN where a side is empty."""
    def means(f, lab):
        lab = lab.long()
        n = class_counts(lab, num_classes).double()
        s = torch.zeros(num_classes, f.shape[1], dtype=torch.float64).index_add_(0, lab, f.double())
        return s / n.clamp_min(1).unsqueeze(1), n
    mx, nx = means(x, x_labels)
    my, ny = means(y, y_labels)
    out = ((mx - my) ** 2).sum(1)
    return torch.where((nx > 0) & (ny > 0), out, torch.full_like(out, math.nan))


def _class_blocks(labels: torch.Tensor, num_classes: int):
    """Sorted order of the samples, and each class's count and offset into that order."""
    labels = labels.long()
    counts = class_counts(labels, num_classes)
    order = torch.sort(labels, stable=True).indices
    offsets = torch.cumsum(counts, 0) - counts
    return order, counts, offsets


def _gather(features: torch.Tensor, order, offsets, classes: torch.Tensor, n: int) -> torch.Tensor:
    """``[G, n, D]``: the ``n`` samples of each of ``classes`` (all of which hold exactly ``n``)."""
    index = order[offsets[classes].unsqueeze(1) + torch.arange(n).unsqueeze(0)]
    return features[index]


def _squared_distances(z: torch.Tensor) -> torch.Tensor:
    """Batched squared Euclidean distances ``[G, P, P]`` with an exact zero diagonal."""
    sq = (z * z).sum(-1)
    d2 = sq.unsqueeze(2) + sq.unsqueeze(1) - 2 * z @ z.transpose(1, 2)
    d2 = d2.clamp_min(0)
    d2.diagonal(dim1=1, dim2=2).zero_()
    return d2


def class_mmd2_gaussian(x: torch.Tensor, x_labels: torch.Tensor, y: torch.Tensor, y_labels: torch.Tensor,
                        num_classes: int, *, estimator: str = "unbiased", sigma: float | None = None,
                        max_elements: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian-kernel MMD^2 per class between ``x`` (synthetic) and ``y`` (real) features.

    Returns ``(mmd2 [K], sigma [K])`` in float64; NaN for a class with fewer than 2 samples on a
    side (unbiased) or an empty side (biased). ``sigma=None``: median heuristic per class on the
    pooled sample (``sigma^2`` = lower median of the distinct-pair squared distances); a number:
    that fixed bandwidth for every class. Classes with equal ``(n_x, n_y)`` are processed as one
    batch, chunked to about ``max_elements`` kernel entries.
    """
    if estimator not in ("unbiased", "biased"):
        raise InputValueError(f"estimator must be 'unbiased' or 'biased'; got {estimator!r}")
    x, y = x.double(), y.double()
    ox, nx, offx = _class_blocks(x_labels, num_classes)
    oy, ny, offy = _class_blocks(y_labels, num_classes)
    mmd2 = torch.full((num_classes,), math.nan, dtype=torch.float64)
    sigmas = torch.full((num_classes,), math.nan, dtype=torch.float64)
    min_n = 2 if estimator == "unbiased" else 1
    valid = (nx >= min_n) & (ny >= min_n)
    shapes = torch.stack([nx, ny], 1)[valid]
    for n, m in torch.unique(shapes, dim=0).tolist():
        group = torch.nonzero(valid & (nx == n) & (ny == m)).flatten()
        p = n + m
        chunk = max(1, max_elements // (p * p))
        for start in range(0, len(group), chunk):
            classes = group[start:start + chunk]
            z = torch.cat([_gather(x, ox, offx, classes, n), _gather(y, oy, offy, classes, m)], 1)
            d2 = _squared_distances(z)
            if sigma is None:
                iu = torch.triu_indices(p, p, 1)
                s2 = d2[:, iu[0], iu[1]].median(dim=1).values
                s2 = torch.where(s2 > 0, s2, torch.ones_like(s2))  # identical points: any sigma gives 0
            else:
                s2 = torch.full((len(classes),), float(sigma) ** 2, dtype=torch.float64)
            k = torch.exp(-d2 / (2 * s2.view(-1, 1, 1)))
            kxx, kyy, kxy = k[:, :n, :n], k[:, n:, n:], k[:, :n, n:]
            if estimator == "unbiased":
                # exp(0) = 1 on each diagonal
                xx = (kxx.sum((1, 2)) - n) / (n * (n - 1))
                yy = (kyy.sum((1, 2)) - m) / (m * (m - 1))
            else:
                xx, yy = kxx.mean((1, 2)), kyy.mean((1, 2))
            mmd2[classes] = xx + yy - 2 * kxy.mean((1, 2))
            sigmas[classes] = s2.sqrt()
    return mmd2, sigmas


def summarize(values: torch.Tensor) -> dict[str, float]:
    """Mean and standard deviation (population, ddof=0) over the classes where the value is
    defined (non-NaN), and how many classes that is."""
    v = values[~torch.isnan(values)].double()
    if v.numel() == 0:
        return {"mean": math.nan, "std": math.nan, "classes": 0}
    return {"mean": float(v.mean()), "std": float(v.std(correction=0)), "classes": int(v.numel())}


def diversity_metrics(syn: tuple[torch.Tensor, torch.Tensor], real: tuple[torch.Tensor, torch.Tensor] | None,
                      num_classes: int, *, estimator: str = "unbiased",
                      sigma: float | None = None) -> dict[str, torch.Tensor]:
    """All per-class metrics of one synthetic set (and the real set, when given): ``[K]`` tensors."""
    f, lab = syn
    out = {"n_syn": class_counts(lab.long(), num_classes).double(),
           "cosine": class_cosine_similarity(f, lab, num_classes)}
    if real is not None:
        rf, rlab = real
        out["n_real"] = class_counts(rlab.long(), num_classes).double()
        out["mmd2_rbf"], out["rbf_sigma"] = class_mmd2_gaussian(f, lab, rf, rlab, num_classes,
                                                                estimator=estimator, sigma=sigma)
        out["mmd2_linear"] = class_linear_mmd2(f, lab, rf, rlab, num_classes)
    return out
