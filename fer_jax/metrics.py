"""Classification metrics of FER runs (scikit-learn), as plain JSON-able dicts."""

from collections.abc import Sequence

import numpy as np


def classification_metrics(labels: np.ndarray, predictions: np.ndarray,
                           class_names: Sequence[str]) -> dict:
  """Accuracy, macro / weighted P/R/F1, per-class P/R/F1 and the confusion.

  Every class of `class_names` is reported, also one absent from `labels`
  (its scores are 0 rather than a warning).
  """
  # scikit-learn takes 1.4 s to import (SciPy's statistics): imported here,
  # the commands that end before evaluating (a flag or config error, a
  # prediction) start that much sooner.
  from sklearn import metrics as skmetrics  # pylint: disable=import-outside-toplevel
  class_ids = np.arange(len(class_names))
  result = {'accuracy': float(skmetrics.accuracy_score(labels, predictions))}
  for average in ('macro', 'weighted'):
    precision, recall, f1, _ = skmetrics.precision_recall_fscore_support(
        labels, predictions, labels=class_ids, average=average,
        zero_division=0)
    result |= {f'{average}_precision': float(precision),
               f'{average}_recall': float(recall), f'{average}_f1': float(f1)}
  precision, recall, f1, support = skmetrics.precision_recall_fscore_support(
      labels, predictions, labels=class_ids, average=None, zero_division=0)
  result['per_class'] = {
      name: {'precision': float(p), 'recall': float(r), 'f1': float(f),
             'support': int(s)}
      for name, p, r, f, s in zip(class_names, precision, recall, f1, support)}
  result['confusion_matrix'] = skmetrics.confusion_matrix(
      labels, predictions, labels=class_ids).tolist()
  return result


def flat_scalars(metrics: dict, prefix: str) -> dict[str, float]:
  """`{'accuracy': .6, 'per_class': {'happy': {'f1': .8}}}` ->
  `{'val/accuracy': .6, 'val/f1/happy': .8}` for logs and TensorBoard."""
  scalars = {f'{prefix}/{k}': v for k, v in metrics.items()
             if isinstance(v, float)}
  for name, scores in metrics.get('per_class', {}).items():
    for key in ('precision', 'recall', 'f1'):
      scalars[f'{prefix}/{key}/{name}'] = scores[key]
  return scalars
