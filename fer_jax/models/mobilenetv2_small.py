"""The modified MobileNetV2 of the reference study for 48x48 grey input.

MobileNetV2 (Sandler et al., 2018) cut down for 48x48: the stride-2 stem and
the stride-2 of the 24-channel stage are removed, the bottleneck repeats cut
from (1, 2, 3, 4, 3) to (1, 1, 2, 1, 1), the 160- and 320-channel stages
dropped and the final 1x1 projection cut from 1280 to 128 channels:

  stem conv 3x3 (32), 48x48
  bottlenecks (expansion t, channels c, repeats n, stride s of the first):
    t=1 c=16  n=1 s=1  48x48
    t=6 c=24  n=1 s=1  48x48
    t=6 c=32  n=2 s=2  24x24
    t=6 c=64  n=1 s=2  12x12
    t=6 c=96  n=1 s=1  12x12
  conv 1x1 (128) -> global average pooling -> dropout -> dense classifier.
With the defaults and 7 classes it has 132,359 parameters (the study: ~130k).
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.models import depthwise


class InvertedResidual(nn.Module):
  """1x1 expand-BN-ReLU6, 3x3 depthwise-BN-ReLU6, 1x1 project-BN, + skip.

  The skip is there when the block keeps the shape (stride 1, same channels);
  with expansion 1 the expanding convolution is left out.
  """
  features: int
  expansion: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, dtype=self.dtype)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    hidden = x.shape[-1] * self.expansion
    y = x
    if self.expansion != 1:
      y = conv(hidden, (1, 1), name='expand')(y)
      y = nn.relu6(norm(name='expand_norm')(y))
    y = conv(hidden, (3, 3), strides=self.stride, feature_group_count=hidden,
             conv_general_dilated=depthwise.conv_general_dilated,
             name='depthwise')(y)
    y = nn.relu6(norm(name='depthwise_norm')(y))
    y = conv(self.features, (1, 1), name='project')(y)
    y = norm(name='project_norm')(y)
    if self.stride == 1 and x.shape[-1] == self.features:
      y = y + x
    return y


class MobileNetV2Small(nn.Module):
  """Returns float32 logits; sows the classifier input as
  `intermediates/pre_logits`."""
  num_classes: int
  stem_features: int = 32
  # (expansion, channels, repeats, stride of the first repeat) per stage.
  stages: Sequence[Sequence[int]] = (
      (1, 16, 1, 1), (6, 24, 1, 1), (6, 32, 2, 2), (6, 64, 1, 2),
      (6, 96, 1, 1))
  head_features: int = 128  # The final 1x1 convolution (1280 in MobileNetV2).
  dropout: float = 0.2
  # Activations and compute (config.train.compute_dtype); params stay float32.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, dtype=self.dtype)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    x = conv(self.stem_features, (3, 3))(x)
    x = nn.relu6(norm()(x))
    for expansion, features, repeats, stride in self.stages:
      for i in range(repeats):
        x = InvertedResidual(features, expansion, stride if i == 0 else 1,
                             dtype=self.dtype)(x, train)
    x = conv(self.head_features, (1, 1))(x)
    x = nn.relu6(norm()(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    self.sow('intermediates', 'pre_logits', x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
