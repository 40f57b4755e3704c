"""Every figure of one evaluated run (a report.Evaluation), as PNG files.

Curves come from metrics.jsonl; everything else from the best checkpoint's
outputs on the test split (PrivateTest), or on both val and test.
"""

import os

import flax.linen as nn
import jax
import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from fer_jax import inference
from fer_jax.data.preprocess import InputSpec
from fer_jax.evaluate import plots, report


def pre_logits_fn(model: nn.Module, input_spec: InputSpec):
  """`fn(variables, uint8 images) -> the classifier's inputs`, jitted."""

  @jax.jit
  def pre_logits(variables, images):
    _, state = model.apply(variables, input_spec(images), train=False,
                           mutable=['intermediates'])
    return state['intermediates']['pre_logits'][0]

  return pre_logits


def tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
  """[N, ...] -> [N, 2]: PCA to 50 dimensions (fewer if N or the features
  are fewer), then t-SNE."""
  features = features.reshape(len(features), -1).astype(np.float32)
  reduced = PCA(min(50, *features.shape), random_state=seed).fit_transform(
      features)
  # Perplexity must stay below the number of points.
  perplexity = min(30.0, (len(features) - 1) / 3)
  # One OpenMP thread: t-SNE's threads spin-wait on each other, and on a
  # busy machine one descheduled thread made it 10-60x slower.
  with threadpool_limits(1, user_api='openmp'):
    return TSNE(perplexity=perplexity,
                random_state=seed).fit_transform(reduced)


def write_figures(evaluation: report.Evaluation, out_dir: str, name: str, *,
                  tsne_points: int = 1000,
                  sample_images: int = 32, seed: int = 0) -> list[str]:
  """Writes the figures of run `name` into `out_dir`; returns their paths.

  t-SNE uses a seeded random subset of `tsne_points` test images (t-SNE is
  quadratic-ish in the points; 0: no t-SNE plots, else at least 2), the
  prediction grid `sample_images`.
  """
  os.makedirs(out_dir, exist_ok=True)
  trained, data = evaluation.trained, evaluation.data
  class_names = trained.class_names
  test = data.splits['test']
  paths = []

  def path(file_name):
    paths.append(os.path.join(out_dir, file_name))
    return paths[-1]

  records = evaluation.run.read_metrics()
  plots.training_curves(records, evaluation.report['best_epoch'],
                        path('training_curves.png'), name)
  plots.per_class_curves(records, class_names, path('per_class_curves.png'),
                         name)
  for split in report.SPLITS:
    plots.confusion_matrix(evaluation.report[split]['confusion_matrix'],
                           class_names, path(f'confusion_{split}.png'),
                           f'{name}: {split}')
  probabilities = jax.nn.softmax(evaluation.logits['test'])
  plots.roc_curves(test.labels, np.asarray(probabilities), class_names,
                   path('roc_test.png'), f'{name}: test, one-vs-rest')

  order = np.random.default_rng(seed).permutation(len(test))
  if tsne_points:
    chosen = test.take(np.sort(order[:tsne_points]))
    embeddings = inference.batched_logits(
        pre_logits_fn(trained.model, trained.input_spec), trained.variables,
        chosen.images, evaluation.run.load_config().train.eval_batch_size)
    for kind, features in (('pixels', chosen.images),
                           ('embeddings', embeddings)):
      plots.embedding_scatter(tsne(features, seed), chosen.labels,
                              class_names, path(f'tsne_{kind}.png'),
                              f'{name}: t-SNE of test {kind}')

  shown = order[:sample_images]
  plots.prediction_grid(test.images[shown], test.labels[shown],
                        evaluation.logits['test'][shown].argmax(-1),
                        class_names, path('test_predictions.png'),
                        title=f'{name}: test, true -> predicted')
  counts = {split_name: np.bincount(split.labels, minlength=len(class_names))
            for split_name, split in data.splits.items()}
  plots.class_distribution(counts, class_names, path('class_distribution.png'),
                           name)
  return paths
