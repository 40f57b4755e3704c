"""Each figure function writes a real PNG; t-SNE gives one point per image."""

import numpy as np
import pytest

from fer_jax.evaluate import figures, plots

CLASSES = ('angry', 'happy', 'sad')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def assert_png(path, min_bytes=5000):
  with open(path, 'rb') as f:
    data = f.read()
  assert data.startswith(PNG_SIGNATURE)
  assert len(data) > min_bytes


def _records(epochs=3):
  rng = np.random.default_rng(0)
  records = []
  for epoch in range(1, epochs + 1):
    record = {'epoch': epoch}
    for split in ('train', 'val'):
      record |= {f'{split}/loss': 2 / epoch, f'{split}/accuracy': 0.3 * epoch,
                 f'{split}/macro_f1': 0.25 * epoch}
    for score in plots.SCORES:
      record |= {f'val/{score}/{name}': float(rng.random())
                 for name in CLASSES}
    records.append(record)
  return records


def _predictions(n=30):
  rng = np.random.default_rng(1)
  labels = np.arange(n) % len(CLASSES)
  probabilities = rng.dirichlet(np.ones(len(CLASSES)), n)
  probabilities[np.arange(n), labels] += 0.5  # Better than chance.
  return labels, probabilities / probabilities.sum(1, keepdims=True)


@pytest.mark.parametrize('draw', [
    lambda path: plots.training_curves(_records(), 2, path, 'run'),
    lambda path: plots.per_class_curves(_records(), CLASSES, path, 'run'),
    lambda path: plots.confusion_matrix([[5, 1, 0], [2, 3, 1], [0, 0, 6]],
                                        CLASSES, path, 'run'),
    lambda path: plots.roc_curves(*_predictions(), CLASSES, path, 'run'),
    lambda path: plots.embedding_scatter(
        np.random.default_rng(2).normal(size=(30, 2)), _predictions()[0],
        CLASSES, path, 'run'),
    lambda path: plots.prediction_grid(
        np.random.default_rng(3).integers(0, 256, (10, 48, 48), np.uint8),
        np.arange(10) % 3, np.zeros(10, int), CLASSES, path, columns=4),
    lambda path: plots.class_distribution(
        {'train': [30, 50, 20], 'val': [5, 8, 3], 'test': [4, 9, 3]},
        CLASSES, path, 'run'),
], ids=['training_curves', 'per_class_curves', 'confusion_matrix',
        'roc_curves', 'embedding_scatter', 'prediction_grid',
        'class_distribution'])
def test_each_plot_writes_a_png(draw, tmp_path):
  path = str(tmp_path / 'figure.png')
  draw(path)
  assert_png(path)


def test_roc_skips_a_class_absent_from_the_labels(tmp_path):
  labels, probabilities = _predictions()
  labels[labels == 2] = 0  # No 'sad' left: its ROC curve is undefined.
  plots.roc_curves(labels, probabilities, CLASSES, str(tmp_path / 'roc.png'))
  assert_png(str(tmp_path / 'roc.png'))


def test_tsne_of_images_gives_2d_points():
  images = np.random.default_rng(4).integers(0, 256, (24, 48, 48), np.uint8)
  points = figures.tsne(images)
  assert points.shape == (24, 2)
  assert np.isfinite(points).all()
