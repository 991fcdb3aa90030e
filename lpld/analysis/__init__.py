"""Analysis tools: within-class diversity of distilled images (the paper's Table 1 finding) and
the accuracy-vs-label-compression plot.

* ``lpld.analysis.diversity``: teacher penultimate features of image sets and the real data, and
  their per-class diversity (``lpld.analysis.metrics``: mean pairwise cosine similarity, MMD
  between synthetic and real features). CLI: ``python -m lpld.analysis.diversity --help``.
* ``lpld.analysis.plot``: top-1 vs label compression, one line per method.
  CLI: ``python -m lpld.analysis.plot --help``.

The submodules are not imported here, so ``python -m`` runs them cleanly and importing the
package does not pull in matplotlib.
"""
