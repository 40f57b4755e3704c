"""ResNet-18 and ResNet-50 in torchvision's layout, for converted weights.

stem conv 7x7/2 (64) -> BN -> ReLU -> max-pool 3x3/2 -> four stages of
BasicBlocks (resnet18: 2, 2, 2, 2) or Bottlenecks (resnet50: 3, 4, 6, 3) with
64, 128, 256, 512 base channels, the first block of stages 2-4 striding by 2
(on the 3x3 conv of a Bottleneck: torchvision's "v1.5") -> with
head='imagenet' global average pooling -> dense(classes). BatchNorm as torch's
(eps 1e-5, momentum 0.1 -> Flax 0.9). 11,689,512 (resnet18) and 25,557,032
(resnet50) parameters with 1000 classes. Module names follow torchvision's
state-dict keys (`layer1.0.conv1.weight` -> `layer1_0/conv1/kernel`), which is
what fer_jax.convert relies on. The other heads (fer_jax/models/heads.py)
take the last stage's feature map.
"""

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.models import heads


def _conv(features: int, kernel: int, stride: int = 1, *, name: str,
          dtype: Any) -> nn.Conv:
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=stride,
                 padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
                 name=name)


class Block(nn.Module):
  """BasicBlock (two 3x3 convs) or Bottleneck (1x1, 3x3 with the stride,
  1x1 to 4x the channels), each conv followed by BN, plus a (projected)
  skip, then ReLU."""
  features: int
  stride: int
  bottleneck: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    conv = functools.partial(_conv, dtype=self.dtype)
    if self.bottleneck:
      out_features = 4 * self.features
      y = nn.relu(norm(name='bn1')(conv(self.features, 1, name='conv1')(x)))
      y = conv(self.features, 3, self.stride, name='conv2')(y)
      y = nn.relu(norm(name='bn2')(y))
      y = norm(name='bn3')(conv(out_features, 1, name='conv3')(y))
    else:
      out_features = self.features
      y = conv(self.features, 3, self.stride, name='conv1')(x)
      y = nn.relu(norm(name='bn1')(y))
      y = norm(name='bn2')(conv(self.features, 3, name='conv2')(y))
    if self.stride != 1 or x.shape[-1] != out_features:
      x = conv(out_features, 1, self.stride, name='downsample_0')(x)
      x = norm(name='downsample_1')(x)
    return nn.relu(y + x)


class ResNet(nn.Module):
  """Returns float32 logits; sows the classifier input as
  `intermediates/pre_logits`."""
  # Set by the subclasses; not config settings.
  STAGE_SIZES: ClassVar[Sequence[int]] = (2, 2, 2, 2)
  BOTTLENECK: ClassVar[bool] = False
  num_classes: int
  head: str = heads.IMAGENET  # Or one of heads.HEADS.
  dropout: float = 0.0  # In the head; the ImageNet head has none.
  # Activations and compute (config.train.compute_dtype); params stay float32.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    heads.check(self.head)
    x = _conv(64, 7, 2, name='conv1', dtype=self.dtype)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, dtype=self.dtype, name='bn1')(x)
    x = nn.relu(x)
    # Padding by hand, with -inf as torch pads: jax2onnx drops max_pool's
    # own padding, and it needs the window as a keyword.
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2))
    for stage, blocks in enumerate(self.STAGE_SIZES):
      for i in range(blocks):
        x = Block(64 * 2**stage, 2 if stage and not i else 1,
                  self.BOTTLENECK, dtype=self.dtype,
                  name=f'layer{stage + 1}_{i}')(x, train)
    if self.head != heads.IMAGENET:
      return heads.apply_study_head(self, x, train)
    x = jnp.mean(x, axis=(1, 2))
    self.sow('intermediates', 'pre_logits', x)
    return nn.Dense(self.num_classes, dtype=self.dtype,
                    name='fc')(x).astype(jnp.float32)


# The registered models.
class ResNet18(ResNet):
  """torchvision.models.resnet18."""
  STAGE_SIZES: ClassVar[Sequence[int]] = (2, 2, 2, 2)
  BOTTLENECK: ClassVar[bool] = False


class ResNet50(ResNet):
  """torchvision.models.resnet50."""
  STAGE_SIZES: ClassVar[Sequence[int]] = (3, 4, 6, 3)
  BOTTLENECK: ClassVar[bool] = True
