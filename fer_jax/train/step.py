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

from fer_jax.data import device_augment, ferplus
from fer_jax.data.augment import RandomAugment
from fer_jax.data.preprocess import InputSpec
from fer_jax.train import distill, mixing


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
    return self.replace(ema=_copy(self.model_variables))


# One program for the whole tree (eager copies compiled one per shape); its
# outputs keep the inputs' shardings.
_copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


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
               input_spec: InputSpec, rng: jax.Array, ema: bool = False,
               sharding: jax.sharding.Sharding | None = None) -> TrainState:
  """The initial state; with `ema`, its EMA starts at the initial weights.

  Computed by one compiled program (eagerly, each of the model's operations
  would compile on its own: 4x slower for mobilenetv2_small) whose output
  is placed by `sharding` (None: on the default device).
  """

  def initial_state(rng):
    dummy = jnp.zeros((1, input_spec.image_size, input_spec.image_size,
                       input_spec.channels), jnp.float32)
    variables = model.init(rng, dummy, train=False)
    state = TrainState(step=jnp.zeros((), jnp.int32),
                       params=variables['params'],
                       batch_stats=variables.get('batch_stats', {}),
                       opt_state=optimizer.init(variables['params']),
                       ema={} if ema else None)
    return state.with_fresh_ema()

  return jax.jit(initial_state, out_shardings=sharding)(rng)


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


def cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray,
                  weights: jnp.ndarray, label_smoothing: float) -> jnp.ndarray:
  """`weights`-weighted batch mean of the softmax cross-entropy against
  (label-smoothed) target distributions `targets` [B, classes]."""
  losses = optax.softmax_cross_entropy(
      logits, optax.smooth_labels(targets, label_smoothing))
  return jnp.sum(weights * losses) / jnp.sum(weights)


def multi_target_loss(logits: jnp.ndarray, targets: jnp.ndarray,
                      weights: jnp.ndarray) -> jnp.ndarray:
  """FER+'s multi-target loss, `weights`-weighted batch mean: -log max_k p_k
  over the target set (targets > 0), p the softmax: predicting any emotion
  of the set is right. Every row needs a non-empty set (train batches have
  one, see ferplus.targets).

  The FER+ reference weighs the emotions off the set by 1e-3 instead of
  leaving them out, to keep its log of probabilities finite. Once a wrong
  emotion is 1000 times likelier than every right one, its max then picks
  the wrong one, and the gradient raises it further: resnet_small on FER+
  fell into that in its first epoch and stayed at 45% (experiments/
  RESULTS.md, "On the H200"). Log-probabilities are finite without it,
  and the max over the set only ever raises a right emotion.
  """
  log_probabilities = jnp.where(targets > 0, jax.nn.log_softmax(logits),
                                -jnp.inf)
  losses = -jnp.max(log_probabilities, axis=-1)
  return jnp.sum(weights * losses) / jnp.sum(weights)


def classification_loss(logits: jnp.ndarray, targets: jnp.ndarray,
                        labels: jnp.ndarray, class_weights: jnp.ndarray,
                        label_smoothing: float,
                        label_mode: str = 'majority') -> jnp.ndarray:
  """A batch's loss against its `training_targets`, each example weighted by
  its label's class weight: `multi_target_loss` in FER+'s 'multi_target'
  mode, `cross_entropy` otherwise."""
  weights = class_weights[labels]
  if label_mode == 'multi_target':
    return multi_target_loss(logits, targets, weights)
  return cross_entropy(logits, targets, weights, label_smoothing)


def mixed_loss(logits: jnp.ndarray, targets: jnp.ndarray, labels: jnp.ndarray,
               lam: jnp.ndarray, **settings) -> jnp.ndarray:
  """The loss of a mixup / CutMix batch (`mixing`): lam * the
  `classification_loss` against the own targets + (1 - lam) * against the
  partners'. `settings`: classification_loss's. With equal class weights
  and cross-entropy, the loss against the mixed (smoothed) targets."""
  return (lam * classification_loss(logits, targets, labels, **settings)
          + (1 - lam) * classification_loss(logits, mixing.partner(targets),
                                            mixing.partner(labels),
                                            **settings))


def training_targets(batch: dict, label_mode: str, num_classes: int,
                     rng: jax.Array) -> jnp.ndarray:
  """float32 [B, classes] targets of a batch in a FER+ `label_mode`:
  one-hot labels ('majority'), one label drawn per example from the vote
  distribution ('probability': a fresh draw every step, as the FER+
  reference draws one per epoch), or the batch's own targets."""
  if label_mode == 'majority':
    return jax.nn.one_hot(batch['label'], num_classes)
  if label_mode == 'probability':
    drawn = jax.random.categorical(rng, jnp.log(batch['targets']))
    return jax.nn.one_hot(drawn, num_classes)
  return batch['targets']


def _keep(trainable: frozenset[str], old: dict, new: dict) -> dict:
  return {name: tree if name in trainable else old[name]
          for name, tree in new.items()}


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation,
                    input_spec: InputSpec, class_weights: np.ndarray,
                    label_smoothing: float,
                    augment_settings: RandomAugment | None = None,
                    trainable: frozenset[str] | None = None,
                    mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                    ema_decay: float = 0.0, label_mode: str = 'majority',
                    teacher: distill.Teacher | None = None):
  """Returns `train_step(state, batch, rng[, teacher_variables]) -> (state,
  metrics)`, unjitted.

  `trainable`: the top-level modules that learn (None: all). The others keep
  their parameters and BatchNorm statistics (the optimizer should give them
  zero updates, see optim.create); in train mode their BatchNorm layers
  still normalise with the batch's statistics.

  `batch` is {'image': uint8 [B, H, W], 'label': int32 [B]}, plus float32
  'targets' [B, classes] in the FER+ label modes other than 'majority'
  (`training_targets`, `classification_loss`). Augmentation (with
  `augment_settings`, see `device_augment`) and normalisation happen here,
  on the device. The step key is `rng` folded with the step, so one key
  serves the whole run and resuming reproduces it; keys for augmentation,
  mixing and label draws are split off it in that order, what remains
  drives dropout. The model may compute in bfloat16; its logits are cast
  to float32 for the loss.

  `mixup_alpha`, `cutmix_alpha` (0: off): mixup / CutMix of the augmented
  faces before normalisation (`mixing`), with `mixed_loss`, while
  metrics['labels'] stay the unmixed ones.

  `ema_decay` (0: off): the step also updates `state.ema` (`update_ema`;
  the state must have one, see init_state), frozen modules' EMA included
  bit for bit.

  `teacher` (None: off): knowledge distillation (`distill`); the step then
  takes the teacher's variables (a tuple, one per model) as its fourth
  argument.
  """
  class_weights = jnp.asarray(class_weights)
  num_classes = len(class_weights)
  mixes = mixing.check(mixup_alpha, cutmix_alpha)
  if label_mode not in ferplus.LABEL_MODES:
    raise ValueError(f'label_mode={label_mode!r} is not one of '
                     f'{ferplus.LABEL_MODES}.')

  loss_settings = {'class_weights': class_weights,
                   'label_smoothing': label_smoothing,
                   'label_mode': label_mode}

  def train_step(state: TrainState, batch: dict, rng: jax.Array,
                 teacher_variables: tuple[dict, ...] | None = None):
    images = batch['image']
    labels = batch['label']
    dropout_rng = jax.random.fold_in(rng, state.step)
    if augment_settings is not None:
      augment_rng, dropout_rng = jax.random.split(dropout_rng)
      images = device_augment.augment(images, augment_rng, augment_settings)
    faces = images.astype(jnp.float32)  # Grey levels, as input_spec takes.
    if mixes:
      mix_rng, dropout_rng = jax.random.split(dropout_rng)
      faces, lam = mixing.mix(faces, mix_rng, mixup_alpha, cutmix_alpha)
    draw_rng = None
    if label_mode == 'probability':
      draw_rng, dropout_rng = jax.random.split(dropout_rng)
    targets = training_targets(batch, label_mode, num_classes, draw_rng)
    teacher_probabilities = (None if teacher is None else
                             teacher.probabilities(teacher_variables, faces))

    def loss_fn(params):
      logits, updates = model.apply(
          {'params': params, 'batch_stats': state.batch_stats},
          input_spec(faces), train=True, rngs={'dropout': dropout_rng},
          mutable=['batch_stats'])
      logits = logits.astype(jnp.float32)
      if mixes:
        loss = mixed_loss(logits, targets, labels, lam, **loss_settings)
      else:
        loss = classification_loss(logits, targets, labels, **loss_settings)
      if teacher is not None:
        loss = teacher.loss(loss, logits, teacher_probabilities)
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
