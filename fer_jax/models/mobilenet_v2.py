"""MobileNetV2 (standard ImageNet version) in torchvision's layout.

stem conv 3x3/2 (32) -> 17 inverted residual blocks (expansion t, channels c,
repeats n, stride s of the first):
  t=1 c=16 n=1 s=1, t=6 c=24 n=2 s=2, t=6 c=32 n=3 s=2, t=6 c=64 n=4 s=2,
  t=6 c=96 n=3 s=1, t=6 c=160 n=3 s=2, t=6 c=320 n=1 s=1
-> conv 1x1 (1280) -> with head='imagenet' global average pooling ->
dropout(0.2) -> dense(classes); BN + ReLU6 after every conv but the
projections. 3,504,872 parameters with 1000 classes. Module names follow
torchvision's state-dict keys, numeric parts joined (`features.1.conv.0.0`
-> `features_1/conv_0_0`), which is what fer_jax.convert relies on. The
other heads (fer_jax/models/heads.py) take the 1280-channel feature map.
mobilenetv2_small.py is the reference study's cut-down 48x48 variant.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.models import depthwise, heads

# (expansion, channels, repeats, stride of the first repeat): torchvision's.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn(x, features: int, kernel: int, stride: int, groups: int,
             conv_name: str, norm_name: str, train: bool, dtype: Any,
             activation: bool = True) -> jnp.ndarray:
  """Conv (no bias), BN and ReLU6, created in the calling module's scope
  under the given names: torchvision's Conv2dNormActivation is a Sequential
  (`<name>.0`, `<name>.1`), or a bare conv and BN in the projection."""
  pad = (kernel - 1) // 2
  x = nn.Conv(features, (kernel, kernel), strides=stride,
              padding=((pad, pad), (pad, pad)), feature_group_count=groups,
              conv_general_dilated=(depthwise.conv_general_dilated
                                    if groups > 1 else None),
              use_bias=False, dtype=dtype, name=conv_name)(x)
  x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                   epsilon=1e-5, dtype=dtype, name=norm_name)(x)
  return nn.relu6(x) if activation else x


class InvertedResidual(nn.Module):
  """[1x1 expand-BN-ReLU6], 3x3 depthwise-BN-ReLU6, 1x1 project-BN, + skip
  when the shape is kept."""
  features: int
  expansion: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    conv_bn = functools.partial(_conv_bn, train=train, dtype=self.dtype)
    hidden = x.shape[-1] * self.expansion
    y, index = x, 0  # Position in torchvision's `conv` Sequential.
    if self.expansion != 1:
      y = conv_bn(y, hidden, 1, 1, 1, 'conv_0_0', 'conv_0_1')
      index = 1
    y = conv_bn(y, hidden, 3, self.stride, hidden, f'conv_{index}_0',
                f'conv_{index}_1')
    y = conv_bn(y, self.features, 1, 1, 1, f'conv_{index + 1}',
                f'conv_{index + 2}', activation=False)
    if self.stride == 1 and x.shape[-1] == self.features:
      y = y + x
    return y


class MobileNetV2(nn.Module):
  """Returns float32 logits; sows the classifier input as
  `intermediates/pre_logits`."""
  num_classes: int
  head: str = heads.IMAGENET  # Or one of heads.HEADS.
  dropout: float = 0.2  # Before the classifier / in the head.
  # Activations and compute (config.train.compute_dtype); params stay float32.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    heads.check(self.head)
    conv_bn = functools.partial(_conv_bn, train=train, dtype=self.dtype)
    x = conv_bn(x, 32, 3, 2, 1, 'features_0_0', 'features_0_1')
    index = 1
    for expansion, features, repeats, stride in SETTINGS:
      for i in range(repeats):
        x = InvertedResidual(features, expansion, stride if i == 0 else 1,
                             dtype=self.dtype, name=f'features_{index}')(
                                 x, train)
        index += 1
    x = conv_bn(x, 1280, 1, 1, 1, f'features_{index}_0',
                f'features_{index}_1')
    if self.head != heads.IMAGENET:
      return heads.apply_study_head(self, x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    self.sow('intermediates', 'pre_logits', x)
    return nn.Dense(self.num_classes, dtype=self.dtype,
                    name='classifier_1')(x).astype(jnp.float32)
