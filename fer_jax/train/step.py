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
from fer_jax.train import mixing


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  # The exponential moving average of `model_variables` (config.train.
  # ema_decay, see `update_ema`); None when off, so such states and their
  # checkpoints keep the layout they had without it.
  ema: Any = None

  @property
  def model_variables(self) -> dict:
    """The trained {params, batch_stats}: what the optimizer updates."""
    return {'params': self.params, 'batch_stats': self.batch_stats}

  @property
  def eval_variables(self) -> dict:
    """What validation, the best checkpoint and predictions use: the EMA
    when there is one, else `model_variables`."""
    return self.model_variables if self.ema is None else self.ema

  def with_fresh_ema(self) -> 'TrainState':
    """This state with its EMA restarted at (a copy of) `model_variables`,
    or unchanged without EMA. A copy: a jitted step donates the state, and
    one buffer cannot be donated twice."""
    if self.ema is None:
      return self
    return self.replace(ema=jax.tree.map(lambda x: jnp.array(x, copy=True),
                                         self.model_variables))


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
               input_spec: InputSpec, rng: jax.Array,
               ema: bool = False) -> TrainState:
  """The initial state; with `ema`, its EMA starts at the initial weights."""
  dummy = jnp.zeros((1, input_spec.image_size, input_spec.image_size,
                     input_spec.channels), jnp.float32)
  variables = model.init(rng, dummy, train=False)
  state = TrainState(step=jnp.zeros((), jnp.int32),
                     params=variables['params'],
                     batch_stats=variables.get('batch_stats', {}),
                     opt_state=optimizer.init(variables['params']),
                     ema={} if ema else None)
  return state.with_fresh_ema()


def update_ema(ema: dict, variables: dict, step: jax.Array,
               decay: float) -> dict:
  """`ema` moved towards `variables`, the weights after train step `step`
  (1, 2, ...): ema + w * (variables - ema), w = (1 - d) / (1 - d**step).

  This is the bias-corrected EMA of optax.ema(debias=True) (and Adam's
  moments) in a form that needs no zero-initialised copy: after t steps
  from the start the EMA is the average of the t states, weighted by d**age
  and normalised, so w = 1 at step 1 (the initial weights are forgotten)
  and w -> 1 - d once d**step is small. Short runs thus get an average of
  what they trained rather than one stuck near the random initialisation;
  long runs get the plain EMA. `step` counts over the whole run, so an EMA
  restarted at a phase's start state (TrainState.with_fresh_ema) moves
  away from it at the plain rate.
  """
  decay = jnp.float32(decay)
  weight = (1 - decay) / (1 - decay ** step.astype(jnp.float32))
  return jax.tree.map(lambda e, v: e + weight * (v - e), ema, variables)


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                  class_weights: jnp.ndarray,
                  label_smoothing: float) -> jnp.ndarray:
  """Class-weighted mean of (label-smoothed) softmax cross-entropy."""
  targets = optax.smooth_labels(
      jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  losses = optax.softmax_cross_entropy(logits, targets)
  weights = class_weights[labels]
  return jnp.sum(weights * losses) / jnp.sum(weights)


def mixed_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                        partner_labels: jnp.ndarray, lam: jnp.ndarray,
                        class_weights: jnp.ndarray,
                        label_smoothing: float) -> jnp.ndarray:
  """The loss of a mixup / CutMix batch (`mixing`): lam * `cross_entropy`
  on the own labels + (1 - lam) * on the partners'. With equal class
  weights, the cross-entropy against the mixed (smoothed) targets."""
  return (lam * cross_entropy(logits, labels, class_weights, label_smoothing)
          + (1 - lam) * cross_entropy(logits, partner_labels, class_weights,
                                      label_smoothing))


def _keep(trainable: frozenset[str], old: dict, new: dict) -> dict:
  return {name: tree if name in trainable else old[name]
          for name, tree in new.items()}


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation,
                    input_spec: InputSpec, class_weights: np.ndarray,
                    label_smoothing: float,
                    augment_settings: RandomAugment | None = None,
                    trainable: frozenset[str] | None = None,
                    mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                    ema_decay: float = 0.0):
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

  `mixup_alpha`, `cutmix_alpha` (0: off): mixup / CutMix of the normalised
  batch (`mixing`), with a key split off next; the loss is then
  `mixed_cross_entropy`, while metrics['labels'] stay the unmixed ones.

  `ema_decay` (0: off): the step also updates `state.ema` (`update_ema`;
  the state must have one, see init_state), frozen modules' EMA included
  bit for bit.
  """
  class_weights = jnp.asarray(class_weights)
  mixes = mixing.check(mixup_alpha, cutmix_alpha)

  def train_step(state: TrainState, batch: dict, rng: jax.Array):
    images = batch['image']
    labels = batch['label']
    dropout_rng = jax.random.fold_in(rng, state.step)
    if augment_settings is not None:
      augment_rng, dropout_rng = jax.random.split(dropout_rng)
      images = device_augment.augment(images, augment_rng, augment_settings)
    images = input_spec(images)
    if mixes:
      mix_rng, dropout_rng = jax.random.split(dropout_rng)
      images, lam = mixing.mix(images, mix_rng, mixup_alpha, cutmix_alpha)

    def loss_fn(params):
      logits, updates = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, images,
          train=True, rngs={'dropout': dropout_rng}, mutable=['batch_stats'])
      logits = logits.astype(jnp.float32)
      if mixes:
        loss = mixed_cross_entropy(logits, labels, mixing.partner(labels),
                                   lam, class_weights, label_smoothing)
      else:
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
    if ema_decay:
      ema = update_ema(state.ema, new_state.model_variables, new_state.step,
                       ema_decay)
      if trainable is not None:
        ema = {name: _keep(trainable, state.ema[name], tree)
               for name, tree in ema.items()}
      new_state = new_state.replace(ema=ema)
    metrics = {'loss': loss, 'predictions': jnp.argmax(logits, -1),
               'labels': labels}
    return new_state, metrics

  return train_step
