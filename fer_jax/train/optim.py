"""Optimizers and learning-rate schedules from `config.train`, all optax.

The optimizer is wrapped in `optax.inject_hyperparams`, so the schedule's
learning rate and reduce-on-plateau's factor live in `opt_state.hyperparams`
(`current_learning_rate` multiplies them): they are logged from there,
checkpointed with the optimizer, and the factor changes between epochs
without recompiling the train step.
"""

import dataclasses
import functools

import jax
import ml_collections
import optax

from fer_jax.errors import UserError

OPTIMIZERS = ('adam', 'adamw', 'sgd')
SCHEDULES = ('constant', 'cosine', 'plateau')


# Matrices that are not kernels: Swin's relative-position biases, which timm
# and the Swin paper's recipe leave undecayed.
NOT_DECAYED = frozenset({'relative_position_bias_table'})


def _decay_mask(params):
  # Kernels only: decaying biases and BatchNorm scales hurts small models.
  return jax.tree_util.tree_map_with_path(
      lambda path, p: p.ndim > 1 and getattr(path[-1], 'key', None)
      not in NOT_DECAYED, params)


def _labels(trainable: frozenset[str], params):
  return {name: jax.tree.map(
      lambda _, n=name: 'trainable' if n in trainable else 'frozen', tree)
          for name, tree in params.items()}


def _optimizer(learning_rate, plateau_scale, *, name: str, momentum: float,
               nesterov: bool, weight_decay: float,
               trainable: frozenset[str] | None = None
               ) -> optax.GradientTransformation:
  optimizer = _base_optimizer(learning_rate * plateau_scale, name=name,
                              momentum=momentum, nesterov=nesterov,
                              weight_decay=weight_decay)
  if trainable is None:
    return optimizer
  # Frozen top-level modules get zero updates and no optimizer state.
  return optax.multi_transform(
      {'trainable': optimizer, 'frozen': optax.set_to_zero()},
      functools.partial(_labels, trainable))


def _base_optimizer(learning_rate, *, name: str, momentum: float,
                    nesterov: bool, weight_decay: float
                    ) -> optax.GradientTransformation:
  if name == 'adamw':
    return optax.adamw(learning_rate, weight_decay=weight_decay,
                       mask=_decay_mask)
  if name == 'adam':
    optimizer = optax.adam(learning_rate)
  else:
    optimizer = optax.sgd(learning_rate, momentum=momentum or None,
                          nesterov=nesterov)
  if weight_decay:
    optimizer = optax.chain(
        optax.add_decayed_weights(weight_decay, mask=_decay_mask), optimizer)
  return optimizer


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           steps_per_epoch: int) -> optax.Schedule | float:
  """`config.train`'s schedule over steps: a linear warm-up from 0 over
  `warmup_epochs`, then cosine decay to 0, or the learning rate held
  ('constant', 'plateau'; reduce-on-plateau scales it by a factor of its
  own, see `current_learning_rate`)."""
  if config.schedule not in SCHEDULES:
    raise UserError(f'config.train.schedule={config.schedule!r} is not one '
                    f'of {SCHEDULES}.')
  if config.learning_rate <= 0:
    raise UserError('config.train.learning_rate must be > 0.')
  warmup_steps = int(config.warmup_epochs * steps_per_epoch)
  if config.schedule == 'cosine':
    total_steps = max(config.epochs * steps_per_epoch, 1)
    warmup_steps = min(warmup_steps, total_steps - 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup_steps else config.learning_rate,
        peak_value=config.learning_rate, warmup_steps=warmup_steps,
        decay_steps=total_steps)
  if warmup_steps:
    return optax.linear_schedule(0.0, config.learning_rate, warmup_steps)
  return config.learning_rate


def current_learning_rate(opt_state) -> jax.Array:
  """The learning rate of the latest step of `opt_state` (of `create`'s
  optimizer): the schedule's times reduce-on-plateau's factor."""
  return (opt_state.hyperparams['learning_rate'] *
          opt_state.hyperparams['plateau_scale'])


def create(config: ml_collections.ConfigDict, steps_per_epoch: int,
           trainable: frozenset[str] | None = None
           ) -> optax.GradientTransformation:
  """The optimizer of `config.train`, learning rate injected as state.

  `trainable`: the top-level modules (parameter names) it updates; None: all.
  """
  if config.optimizer not in OPTIMIZERS:
    raise UserError(f'config.train.optimizer={config.optimizer!r} is not one '
                    f'of {OPTIMIZERS}.')
  if config.weight_decay < 0:
    raise UserError('config.train.weight_decay must be >= 0.')
  return optax.inject_hyperparams(
      _optimizer, static_args=('name', 'momentum', 'nesterov', 'weight_decay',
                               'trainable'))(
          learning_rate=learning_rate_schedule(config, steps_per_epoch),
          plateau_scale=1.0, name=config.optimizer, momentum=config.momentum,
          nesterov=config.nesterov, weight_decay=config.weight_decay,
          trainable=trainable)


def improved(value: float, best: float | None, metric: str) -> bool:
  """Whether `value` of validation `metric` beats `best` (None: nothing
  yet): lower is better for a loss, higher for anything else."""
  if best is None:
    return True
  return value < best if metric.endswith('loss') else value > best


@dataclasses.dataclass
class ReduceOnPlateau:
  """Multiplies the learning rate by `factor` after `patience` epochs
  without a new best of validation `metric` (Keras' ReduceLROnPlateau)."""
  factor: float
  patience: int
  metric: str = 'val/loss'
  best: float | None = None
  bad_epochs: int = 0

  @classmethod
  def start(cls, config: ml_collections.ConfigDict) -> 'ReduceOnPlateau':
    """A fresh one with the settings of `config` (config.train or a phase's)."""
    return cls(config.plateau_factor, config.plateau_patience,
               config.plateau_metric)

  @classmethod
  def resume(cls, config: ml_collections.ConfigDict,
             saved: dict) -> 'ReduceOnPlateau':
    """One with the settings of `config`, which a resumed run may have
    changed, and the counts of `saved` (`to_json`) if it watched the same
    metric."""
    plateau = cls.start(config)
    if saved['metric'] == plateau.metric:
      plateau.best, plateau.bad_epochs = saved['best'], saved['bad_epochs']
    return plateau

  def scale(self, value: float) -> float:
    """Records one epoch's value; returns the factor to apply now (or 1)."""
    if improved(value, self.best, self.metric):
      self.best, self.bad_epochs = value, 0
      return 1.0
    self.bad_epochs += 1
    if self.bad_epochs < self.patience:
      return 1.0
    self.bad_epochs = 0
    return self.factor

  def to_json(self) -> dict:
    return dataclasses.asdict(self)
