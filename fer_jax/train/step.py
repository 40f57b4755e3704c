"""The train state and the train step: pure functions over pytrees."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from fer_jax.data import device_augment
from fer_jax.data.augment import RandomAugment
from fer_jax.data.preprocess import InputSpec


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState

  @property
  def model_variables(self) -> dict:
    return {'params': self.params, 'batch_stats': self.batch_stats}


def data_parallel(devices: Sequence[jax.Device]
                  ) -> tuple[NamedSharding, NamedSharding]:
  """(batch, replicated) shardings over a one-axis ('data') mesh of `devices`.

  Batches are split along their first axis and the state is replicated; with
  Auto axes XLA propagates the batch sharding through the step, so it
  computes what one device would on the global batch (BatchNorm statistics
  included) and the gradients are all-reduced.
  """
  mesh = jax.make_mesh((len(devices),), ('data',), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))
  return (NamedSharding(mesh, PartitionSpec('data')),
          NamedSharding(mesh, PartitionSpec()))


def init_state(model: nn.Module, optimizer: optax.GradientTransformation,
               input_spec: InputSpec, rng: jax.Array) -> TrainState:
  dummy = jnp.zeros((1, input_spec.image_size, input_spec.image_size,
                     input_spec.channels), jnp.float32)
  variables = model.init(rng, dummy, train=False)
  return TrainState(step=jnp.zeros((), jnp.int32),
                    params=variables['params'],
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=optimizer.init(variables['params']))


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                  class_weights: jnp.ndarray,
                  label_smoothing: float) -> jnp.ndarray:
  """Class-weighted mean of (label-smoothed) softmax cross-entropy."""
  targets = optax.smooth_labels(
      jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  losses = optax.softmax_cross_entropy(logits, targets)
  weights = class_weights[labels]
  return jnp.sum(weights * losses) / jnp.sum(weights)


def _keep(trainable: frozenset[str], old: dict, new: dict) -> dict:
  return {name: tree if name in trainable else old[name]
          for name, tree in new.items()}


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation,
                    input_spec: InputSpec, class_weights: np.ndarray,
                    label_smoothing: float,
                    augment_settings: RandomAugment | None = None,
                    trainable: frozenset[str] | None = None):
  """Returns `train_step(state, batch, rng) -> (state, metrics)`, unjitted.

  `trainable`: the top-level modules that learn (None: all). The others keep
  their parameters and BatchNorm statistics (the optimizer should give them
  zero updates, see optim.create); in train mode their BatchNorm layers
  still normalise with the batch's statistics.

  `batch` is {'image': uint8 [B, H, W], 'label': int32 [B]}; augmentation
  (with `augment_settings`, see `device_augment`) and normalisation happen
  here, on the device. The step key is `rng` folded with the step, so one key
  serves the whole run and resuming reproduces it; with device augmentation
  it is split into an augmentation and a dropout key. The model may compute
  in bfloat16; its logits are cast to float32 for the loss.
  """
  class_weights = jnp.asarray(class_weights)

  def train_step(state: TrainState, batch: dict, rng: jax.Array):
    images = batch['image']
    labels = batch['label']
    dropout_rng = jax.random.fold_in(rng, state.step)
    if augment_settings is not None:
      augment_rng, dropout_rng = jax.random.split(dropout_rng)
      images = device_augment.augment(images, augment_rng, augment_settings)
    images = input_spec(images)

    def loss_fn(params):
      logits, updates = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, images,
          train=True, rngs={'dropout': dropout_rng}, mutable=['batch_stats'])
      logits = logits.astype(jnp.float32)
      loss = cross_entropy(logits, labels, class_weights, label_smoothing)
      return loss, (logits, updates['batch_stats'])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if trainable is not None:  # Frozen ones bit for bit: not even p + 0.
      params = _keep(trainable, state.params, params)
      batch_stats = _keep(trainable, state.batch_stats, batch_stats)
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=batch_stats, opt_state=opt_state)
    metrics = {'loss': loss, 'predictions': jnp.argmax(logits, -1),
               'labels': labels}
    return new_state, metrics

  return train_step
