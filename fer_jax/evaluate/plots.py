"""Figures of a run, written as PNG with matplotlib (no display needed)."""

from collections.abc import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay


def confusion_matrix(matrix: Sequence[Sequence[int]],
                     class_names: Sequence[str], path: str,
                     title: str = '') -> None:
  """Counts (left) and row-normalised recall per true class (right)."""
  counts = np.asarray(matrix)
  rows = counts.sum(axis=1, keepdims=True)
  normalised = np.divide(counts, rows, out=np.zeros(counts.shape),
                         where=rows > 0)
  size = 3 + 0.6 * len(class_names)
  figure, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
  for ax, values, fmt, name in ((axes[0], counts, 'd', 'counts'),
                                (axes[1], normalised, '.2f', 'row-normalised')):
    ConfusionMatrixDisplay(values, display_labels=list(class_names)).plot(
        ax=ax, values_format=fmt, colorbar=False, cmap='Blues',
        xticks_rotation=45)
    ax.set_title(name)
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
