"""Classification heads of the reference studies, shared by the ImageNet ports.

`config.model.head` picks one; 'imagenet' is each architecture's own
classifier and lives in its module. The others take the backbone's final
feature map [N, H, W, C]:

  'gap_bn_dropout_dense256': global average pooling -> BN -> dropout ->
      dense(256, ReLU) -> classifier.
  'flatten_dense256_l2': flatten -> dense(256, ReLU) -> dropout(`dropout`,
      0.5 in the study) -> classifier; the study's L2 penalty is
      config.train.weight_decay.
  'dense128': global average pooling -> dense(128, ReLU) -> classifier.

Their parameters live under `head`, so converted ImageNet weights never
touch them.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.errors import UserError

IMAGENET = 'imagenet'
HEADS = (IMAGENET, 'gap_bn_dropout_dense256', 'flatten_dense256_l2',
         'dense128')


def check(head: str) -> None:
  if head not in HEADS:
    raise UserError(f'config.model.head={head!r} is not one of {HEADS}.')


class Head(nn.Module):
  """One of the non-'imagenet' heads: feature map -> (classifier input,
  float32 logits); the parent sows the first as `intermediates/pre_logits`."""
  kind: str
  num_classes: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray,
               train: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    check(self.kind)
    if self.kind == 'gap_bn_dropout_dense256':
      x = jnp.mean(x, axis=(1, 2))
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       dtype=self.dtype, name='bn')(x)
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.relu(nn.Dense(256, dtype=self.dtype, name='dense')(x))
    elif self.kind == 'flatten_dense256_l2':
      x = x.reshape(x.shape[0], -1)
      x = nn.relu(nn.Dense(256, dtype=self.dtype, name='dense')(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    elif self.kind == 'dense128':
      x = jnp.mean(x, axis=(1, 2))
      x = nn.relu(nn.Dense(128, dtype=self.dtype, name='dense')(x))
    else:
      raise ValueError(f'{self.kind!r} is built by the architecture itself.')
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(x)
    return x, logits.astype(jnp.float32)


def apply_study_head(model: nn.Module, x: jnp.ndarray,
                     train: bool) -> jnp.ndarray:
  """The logits of `model.head` (one of HEADS) on the feature map `x`, its
  input to the classifier sown as `intermediates/pre_logits`; called inside
  the model's compact `__call__`, so the head is its submodule `head`."""
  pre_logits, logits = Head(model.head, model.num_classes, model.dropout,
                            dtype=model.dtype, name='head')(x, train)
  model.sow('intermediates', 'pre_logits', pre_logits)
  return logits
