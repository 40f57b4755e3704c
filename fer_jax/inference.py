"""Batched, jitted forward passes over host arrays with fixed batch shapes."""

import flax.linen as nn
import jax
import numpy as np

from fer_jax import metrics
from fer_jax.data.preprocess import InputSpec


def make_logits_fn(model: nn.Module, input_spec: InputSpec):
  """`logits_fn(variables, uint8 images) -> logits`, jitted once."""

  @jax.jit
  def logits_fn(variables, images):
    return model.apply(variables, input_spec(images), train=False)

  return logits_fn


def batched_logits(logits_fn, variables, images: np.ndarray,
                   batch_size: int) -> np.ndarray:
  """Logits of all `images`, in batches of exactly `batch_size` (the last one
  zero-padded) so the function compiles once whatever the number of images."""
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    padding = batch_size - len(chunk)
    if padding:
      chunk = np.concatenate(
          [chunk, np.zeros((padding,) + chunk.shape[1:], chunk.dtype)])
    outputs.append(logits_fn(variables, chunk))
  # One transfer at the end: the loop above only dispatches.
  logits = np.concatenate(jax.device_get(outputs))
  return logits[:len(images)]


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
  """Mean cross-entropy on the host (validation loss, unweighted)."""
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  return float(-log_probs[np.arange(len(labels)), labels].mean())


def evaluate(logits_fn, variables, images: np.ndarray, labels: np.ndarray,
             class_names: tuple[str, ...], batch_size: int) -> dict:
  """Loss and classification metrics of `variables` on labelled images."""
  logits = batched_logits(logits_fn, variables, images, batch_size)
  result = metrics.classification_metrics(labels, logits.argmax(-1),
                                          class_names)
  result['loss'] = softmax_cross_entropy(logits, labels)
  return result
