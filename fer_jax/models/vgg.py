"""VGG16 in torchvision's layout, so converted ImageNet weights load into it.

features: 13 conv 3x3 (padding 1) + ReLU in five stages of (64, 64),
(128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512), each stage
ending in a 2x2 max-pool; then with head='imagenet' an adaptive average pool
to 7x7 (as torch.nn.AdaptiveAvgPool2d, so any input >= 32 works) and the
classifier dense(4096)-ReLU-dropout-dense(4096)-ReLU-dropout-dense(classes).
138,357,544 parameters with 1000 classes. Module names follow torchvision's
state-dict keys (`features.0.weight` -> `features_0/kernel`), which is what
fer_jax.convert relies on. The other heads (fer_jax/models/heads.py) take the
feature map after the last max-pool.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from fer_jax.models import heads, max_pool

# Output channels per conv, 'M' for a max-pool: torchvision's cfgs['D'].
VGG16_LAYERS = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512,
                'M', 512, 512, 512, 'M')


def _pool_matrix(size: int, out: int) -> np.ndarray:
  """[out, size] averaging weights of torch's adaptive pooling along an axis:
  bin i covers [floor(i * size / out), ceil((i + 1) * size / out))."""
  matrix = np.zeros((out, size), np.float32)
  for i in range(out):
    start, end = (i * size) // out, -((-(i + 1) * size) // out)
    matrix[i, start:end] = 1.0 / (end - start)
  return matrix


def adaptive_avg_pool(x: jnp.ndarray, out: int) -> jnp.ndarray:
  """torch.nn.AdaptiveAvgPool2d((out, out)) on NHWC `x`."""
  rows = jnp.asarray(_pool_matrix(x.shape[1], out), x.dtype)
  cols = jnp.asarray(_pool_matrix(x.shape[2], out), x.dtype)
  return jnp.einsum('ih,nhwc,jw->nijc', rows, x, cols)


class VGG16(nn.Module):
  """Returns float32 logits; sows the classifier input as
  `intermediates/pre_logits`."""
  num_classes: int
  head: str = heads.IMAGENET  # Or one of heads.HEADS.
  dropout: float = 0.5  # Between the classifier's dense layers / in the head.
  # Activations and compute (config.train.compute_dtype); params stay float32.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    heads.check(self.head)
    conv = functools.partial(nn.Conv, kernel_size=(3, 3),
                             padding=((1, 1), (1, 1)), dtype=self.dtype)
    index = 0  # Position in torchvision's `features` Sequential.
    for layer in VGG16_LAYERS:
      if layer == 'M':
        x = max_pool.pool_2x2(x)
        index += 1
      else:
        x = nn.relu(conv(layer, name=f'features_{index}')(x))
        index += 2
    if self.head != heads.IMAGENET:
      return heads.apply_study_head(self, x, train)
    x = adaptive_avg_pool(x, 7)
    x = x.reshape(x.shape[0], -1)  # NHWC order; the converter permutes.
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    for index in (0, 3):
      x = nn.relu(dense(4096, name=f'classifier_{index}')(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    self.sow('intermediates', 'pre_logits', x)
    return dense(self.num_classes, name='classifier_6')(x).astype(jnp.float32)
