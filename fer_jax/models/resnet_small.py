"""The compact ResNet of the reference study: two residual blocks, < 500k params.

stem conv(32) -> [residual block(64) -> max-pool -> dropout]
              -> [residual block(128) -> max-pool -> dropout]
              -> flatten -> dense classifier.
With the defaults and 7 classes it has 417,287 parameters (the study: ~418k).
`blocks_per_stage` > 1 repeats each stage's block before its pool: with
block_features (32, 64, 96), two blocks a stage and global average pooling
it is configs/resnet_small_v2.py: 13 convolutions deep instead of 5, for
fewer FLOPs.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.models import max_pool


class ResidualBlock(nn.Module):
  """conv-BN-ReLU, conv-BN, plus a (projected) skip, then ReLU."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, dtype=self.dtype)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    y = conv(self.features, (3, 3))(x)
    y = nn.relu(norm()(y))
    y = conv(self.features, (3, 3))(y)
    y = norm()(y)
    if x.shape[-1] != self.features:
      x = conv(self.features, (1, 1), name='projection')(x)
      x = norm(name='projection_norm')(x)
    return nn.relu(y + x)


class ResNetSmall(nn.Module):
  """Returns float32 logits; sows the classifier input as
  `intermediates/pre_logits`."""
  num_classes: int
  stem_features: int = 32
  block_features: Sequence[int] = (64, 128)
  # Residual blocks of each width before its max-pool; the first changes the
  # width (projected skip), the others keep it.
  blocks_per_stage: int = 1
  # 'flatten' as in the reference study; 'gap' (global average pooling)
  # trades ~110k parameters for translation invariance.
  pooling: str = 'flatten'
  hidden_units: int = 0  # >0 adds a dense ReLU layer before the classifier.
  dropout: float = 0.0
  # Activations and compute (config.train.compute_dtype); params stay float32.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = nn.Conv(self.stem_features, (3, 3), dtype=self.dtype)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9,
                             dtype=self.dtype)(x))
    for features in self.block_features:
      for _ in range(self.blocks_per_stage):
        x = ResidualBlock(features, dtype=self.dtype)(x, train)
      x = max_pool.pool_2x2(x)
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if self.pooling == 'gap':
      x = jnp.mean(x, axis=(1, 2))
    else:
      x = x.reshape(x.shape[0], -1)
    if self.hidden_units:
      x = nn.relu(nn.Dense(self.hidden_units, dtype=self.dtype)(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    self.sow('intermediates', 'pre_logits', x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
