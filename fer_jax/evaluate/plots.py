"""Figures of a run, written as PNG with matplotlib (no display needed).

Each function draws from plain arrays or metrics.jsonl records and writes one
file; computing what is drawn (probabilities, t-SNE) is figures.py's job.
"""

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
import numpy as np

SCORES = ('precision', 'recall', 'f1')


def _save(figure: plt.Figure, path: str, title: str) -> None:
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def confusion_matrix(matrix: Sequence[Sequence[int]],
                     class_names: Sequence[str], path: str,
                     title: str = '') -> None:
  """Counts (left) and row-normalised recall per true class (right)."""
  counts = np.asarray(matrix)
  rows = counts.sum(axis=1, keepdims=True)
  normalised = np.divide(counts, rows, out=np.zeros(counts.shape),
                         where=rows > 0)
  # Imported when drawn, as in metrics.py: scikit-learn's 1.4 s would delay
  # every command that imports this module.
  from sklearn.metrics import ConfusionMatrixDisplay  # pylint: disable=import-outside-toplevel
  size = 3 + 0.6 * len(class_names)
  figure, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
  for ax, values, fmt, name in ((axes[0], counts, 'd', 'counts'),
                                (axes[1], normalised, '.2f', 'row-normalised')):
    ConfusionMatrixDisplay(values, display_labels=list(class_names)).plot(
        ax=ax, values_format=fmt, colorbar=False, cmap='Blues',
        xticks_rotation=45)
    ax.set_title(name)
  _save(figure, path, title)


def training_curves(records: Sequence[Mapping], best_epoch: int, path: str,
                    title: str = '') -> None:
  """Loss, accuracy and macro-F1 of train and val per epoch (metrics.jsonl
  records), the best epoch marked."""
  epochs = [r['epoch'] for r in records]
  figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
  for ax, metric in zip(axes, ('loss', 'accuracy', 'macro_f1')):
    for split in ('train', 'val'):
      ax.plot(epochs, [r[f'{split}/{metric}'] for r in records], marker='.',
              label=split)
    ax.axvline(best_epoch, color='grey', linestyle=':', label='best epoch')
    ax.set(xlabel='epoch', title=metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
  _save(figure, path, title)


def per_class_curves(records: Sequence[Mapping], class_names: Sequence[str],
                     path: str, title: str = '') -> None:
  """Validation precision, recall and F1 of each class per epoch."""
  epochs = [r['epoch'] for r in records]
  figure, axes = plt.subplots(1, 3, figsize=(14, 3.8))
  for ax, score in zip(axes, SCORES):
    for name in class_names:
      ax.plot(epochs, [r[f'val/{score}/{name}'] for r in records],
              marker='.', label=name)
    ax.set(xlabel='epoch', title=f'val {score}', ylim=(-0.02, 1.02))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  axes[-1].legend(loc='center left', bbox_to_anchor=(1.02, 0.5))
  _save(figure, path, title)


def roc_curves(labels: np.ndarray, probabilities: np.ndarray,
               class_names: Sequence[str], path: str,
               title: str = '') -> None:
  """One-vs-rest ROC curve of each class, its AUC in the legend; a class
  absent from `labels` (or the only one) has no curve."""
  from sklearn.metrics import RocCurveDisplay  # pylint: disable=import-outside-toplevel
  figure, ax = plt.subplots(figsize=(6.5, 5.5))
  for index, name in enumerate(class_names):
    positives = labels == index
    if positives.any() and not positives.all():
      RocCurveDisplay.from_predictions(positives, probabilities[:, index],
                                       name=name, ax=ax)
  ax.plot([0, 1], [0, 1], color='grey', linestyle=':', label='chance')
  ax.set(xlabel='false positive rate', ylabel='true positive rate')
  ax.legend(fontsize=8, loc='lower right')
  _save(figure, path, title)


def embedding_scatter(points: np.ndarray, labels: np.ndarray,
                      class_names: Sequence[str], path: str,
                      title: str = '') -> None:
  """2-D points (e.g. t-SNE) coloured by class."""
  figure, ax = plt.subplots(figsize=(7, 5.5))
  for index, name in enumerate(class_names):
    chosen = labels == index
    ax.scatter(points[chosen, 0], points[chosen, 1], s=8, label=name)
  ax.set(xticks=[], yticks=[])
  ax.legend(loc='center left', bbox_to_anchor=(1.02, 0.5), markerscale=2)
  _save(figure, path, title)


def prediction_grid(images: np.ndarray, labels: np.ndarray,
                    predictions: np.ndarray, class_names: Sequence[str],
                    path: str, columns: int = 8, title: str = '') -> None:
  """Faces with 'true -> predicted' above each, green if right, red if not."""
  rows = math.ceil(len(images) / columns)
  figure, axes = plt.subplots(rows, columns,
                              figsize=(1.6 * columns, 1.9 * rows + 0.4),
                              squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for ax, image, label, prediction in zip(axes.flat, images, labels,
                                          predictions):
    ax.imshow(image, cmap='gray', vmin=0, vmax=255)
    ax.set_title(f'{class_names[label]}\n-> {class_names[prediction]}',
                 fontsize=8, color='green' if label == prediction else 'red')
  _save(figure, path, title)


def class_distribution(counts: Mapping[str, Sequence[int]],
                       class_names: Sequence[str], path: str,
                       title: str = '') -> None:
  """Images per class in each split ({split: counts}), as grouped bars."""
  positions = np.arange(len(class_names))
  width = 0.8 / len(counts)
  figure, ax = plt.subplots(figsize=(2 + 1.1 * len(class_names), 4))
  for offset, (split, split_counts) in enumerate(counts.items()):
    bars = ax.bar(positions + (offset - (len(counts) - 1) / 2) * width,
                  split_counts, width, label=f'{split} ({sum(split_counts)})')
    ax.bar_label(bars, fontsize=7)
  ax.set(xticks=positions, ylabel='images')
  ax.set_xticklabels(class_names, rotation=30)
  ax.legend()
  _save(figure, path, title)
