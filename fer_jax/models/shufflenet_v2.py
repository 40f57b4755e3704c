"""ShuffleNetV2 1.0x in torchvision's layout, for converted weights.

stem conv 3x3/2 (24) -> BN -> ReLU -> max-pool 3x3/2 -> three stages of
4, 8, 4 units with 116, 232, 464 output channels -> conv 1x1 (1024) -> BN ->
ReLU -> with head='imagenet' global average pooling -> dense(classes). A
stage's first unit strides by 2 and has two branches (branch1: depthwise
3x3/2-BN, 1x1-BN-ReLU; branch2: 1x1-BN-ReLU, depthwise 3x3/2-BN,
1x1-BN-ReLU) each giving half the channels; the others split the channels in
two, pass the first half through and branch2 the second. Every unit ends in a
channel shuffle of the two halves. BatchNorm as torch's (eps 1e-5, momentum
0.1 -> Flax 0.9). 2,278,604 parameters with 1000 classes
(torchvision.models.shufflenet_v2_x1_0). Module names follow torchvision's
state-dict keys, numeric parts joined (`stage2.0.branch1.0.weight` ->
`stage2_0/branch1_0/kernel`), which is what fer_jax.convert relies on. The
other heads (fer_jax/models/heads.py) take the 1024-channel feature map.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.models import depthwise, heads

STAGE_REPEATS = (4, 8, 4)
# Stem, stages 2-4 and conv5 output channels: torchvision's x1_0.
STAGE_CHANNELS = (24, 116, 232, 464, 1024)


def channel_shuffle(x: jnp.ndarray, groups: int) -> jnp.ndarray:
  """torchvision's channel_shuffle on NHWC `x`: channel g * (C / groups) + i
  moves to i * groups + g."""
  *batch, channels = x.shape
  x = x.reshape(*batch, groups, channels // groups)
  return jnp.swapaxes(x, -1, -2).reshape(*batch, channels)


class InvertedResidual(nn.Module):
  """One ShuffleNetV2 unit (torchvision's InvertedResidual)."""
  features: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    branch_features = self.features // 2

    def conv(y, kernel, stride, name, per_channel=False):
      pad = kernel // 2
      return nn.Conv(y.shape[-1] if per_channel else branch_features,
                     (kernel, kernel), strides=stride,
                     padding=((pad, pad), (pad, pad)),
                     feature_group_count=y.shape[-1] if per_channel else 1,
                     conv_general_dilated=(depthwise.conv_general_dilated
                                           if per_channel else None),
                     use_bias=False, dtype=self.dtype, name=name)(y)

    def branch2(y):
      y = nn.relu(norm(name='branch2_1')(conv(y, 1, 1, 'branch2_0')))
      y = norm(name='branch2_4')(conv(y, 3, self.stride, 'branch2_3',
                                      per_channel=True))
      return nn.relu(norm(name='branch2_6')(conv(y, 1, 1, 'branch2_5')))

    if self.stride == 1:
      if x.shape[-1] != self.features:
        raise ValueError(f'A stride-1 unit keeps the {x.shape[-1]} channels, '
                         f'not {self.features}.')
      out = jnp.concatenate(
          [x[..., :branch_features], branch2(x[..., branch_features:])], -1)
    else:
      y = norm(name='branch1_1')(conv(x, 3, self.stride, 'branch1_0',
                                      per_channel=True))
      y = nn.relu(norm(name='branch1_3')(conv(y, 1, 1, 'branch1_2')))
      out = jnp.concatenate([y, branch2(x)], -1)
    return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
  """Returns float32 logits; sows the classifier input as
  `intermediates/pre_logits`."""
  num_classes: int
  head: str = heads.IMAGENET  # Or one of heads.HEADS.
  dropout: float = 0.0  # In the head; the ImageNet head has none.
  # Activations and compute (config.train.compute_dtype); params stay float32.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    heads.check(self.head)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    x = nn.Conv(STAGE_CHANNELS[0], (3, 3), strides=2,
                padding=((1, 1), (1, 1)), use_bias=False, dtype=self.dtype,
                name='conv1_0')(x)
    x = nn.relu(norm(name='conv1_1')(x))
    # Padding by hand, with -inf as torch pads: jax2onnx drops max_pool's
    # own padding, and it needs the window as a keyword.
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2))
    for stage, (repeats, features) in enumerate(
        zip(STAGE_REPEATS, STAGE_CHANNELS[1:-1])):
      for i in range(repeats):
        x = InvertedResidual(features, 1 if i else 2, dtype=self.dtype,
                             name=f'stage{stage + 2}_{i}')(x, train)
    x = nn.Conv(STAGE_CHANNELS[-1], (1, 1), use_bias=False, dtype=self.dtype,
                name='conv5_0')(x)
    x = nn.relu(norm(name='conv5_1')(x))
    if self.head != heads.IMAGENET:
      return heads.apply_study_head(self, x, train)
    x = jnp.mean(x, axis=(1, 2))
    self.sow('intermediates', 'pre_logits', x)
    return nn.Dense(self.num_classes, dtype=self.dtype,
                    name='fc')(x).astype(jnp.float32)
