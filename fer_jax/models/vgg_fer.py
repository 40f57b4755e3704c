"""A VGG for 48x48 faces, trained from scratch: Khaireddin & Chen's VGGNet.

"Facial Emotion Recognition: State of the Art Performance on FER2013"
(arXiv 2105.03588), 73.28% single-network accuracy. Four stages of
(conv 3x3 - BN - ReLU) x 2 and a 2x2 max-pool, 64-128-256-512 channels;
then flatten -> (dense(4096) - dropout - ReLU) x 2 -> classifier. With the
defaults, 48x48x1 input and 7 classes: 40,374,599 parameters (the paper's
40x40 crops flatten to 2x2x512 instead of 3x3x512).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.models import max_pool


class VGGFer(nn.Module):
  """Returns float32 logits; sows the classifier input as
  `intermediates/pre_logits`."""
  num_classes: int
  stage_features: Sequence[int] = (64, 128, 256, 512)
  convs_per_stage: int = 2
  hidden_units: Sequence[int] = (4096, 4096)
  dropout: float = 0.2  # After each hidden dense layer.
  # Activations and compute (config.train.compute_dtype); params stay float32.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    for features in self.stage_features:
      for _ in range(self.convs_per_stage):
        # No bias: the BatchNorm after it has one.
        x = nn.Conv(features, (3, 3), use_bias=False, dtype=self.dtype)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                 dtype=self.dtype)(x))
      x = max_pool.pool_2x2(x)
    x = x.reshape(x.shape[0], -1)
    for units in self.hidden_units:
      x = nn.relu(nn.Dense(units, dtype=self.dtype)(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    self.sow('intermediates', 'pre_logits', x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
