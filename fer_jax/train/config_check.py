"""Checks a training config before any data is read or anything compiles, so
that a mistyped name or a bad value costs seconds, not a failed run; also
used by sweep_runner to check every run of a sweep before the first one
starts.
"""

import ml_collections
import numpy as np

from fer_jax import cpu_convolutions, models
from fer_jax.data import dataset, device_augment, preprocess, sources
from fer_jax.errors import UserError
from fer_jax.train import (distill, epoch_metrics, mixing, optim, phases,
                           warm_start)

# Bounds of config.train fields that phases do not set, as phases.LIMITS.
TRAIN_LIMITS = {
    'label_smoothing': (lambda value: 0 <= value < 1,
                        'must be in [0, 1) (0: off; e.g. 0.1)'),
    'log_every_steps': (lambda value: value >= 1,
                        "must be >= 1: the steps between the progress bar's "
                        'loss updates'),
    'ema_decay': (lambda value: 0 <= value < 1,
                  'must be in [0, 1) (0: no EMA of the weights; e.g. 0.999)'),
}


def check(config: ml_collections.ConfigDict) -> None:
  """Fails on a mistyped name before the data is read or anything compiles."""
  model_settings = config.model.to_dict()
  name = model_settings.pop('name')
  model = models.create(name, 2, compute_dtype=config.train.compute_dtype,
                        **model_settings)
  size, channels = config.data.image_size, config.data.channels
  try:
    # Shapes only: a setting of the wrong type (an override like
    # --config.model.block_features=abc) fails here, not mid-run.
    models.variable_shapes(model, (1, size, size, channels))
  except (TypeError, ValueError) as e:
    raise UserError(f'config.model settings {model_settings} do not build a '
                    f'{name} for {size}x{size}x{channels} inputs: '
                    f'{" ".join(str(e).split("-" * 20)[0].split())}') from None
  warm_start.check(config)
  phases.check_limits(config.train, 'config.train.',
                      {**phases.LIMITS, **TRAIN_LIMITS})
  plan = phases.parse(config.train)
  groups = None
  for phase in plan:
    optim.create(phase.train, steps_per_epoch=1)
    if phase.trainable != 'all':
      groups = groups or models.parameter_groups(model, (1, size, size,
                                                         channels))
      phases.trainable_names(phase, groups, name)
  device_augment.from_config(config.data.augment)  # Checks every knob.
  mixing.check(config.train.get('mixup_alpha', 0.0),
               config.train.get('cutmix_alpha', 0.0))
  dataset.class_weights(np.zeros(1, np.int32), 2, config.train.class_weights)
  distill.check(config.train)
  label_mode = config.data.get('label_mode', 'majority')
  sources.check_label_mode(label_mode, config.data.ferplus_path)
  if label_mode == 'multi_target' and config.train.label_smoothing:
    raise UserError('config.train.label_smoothing does not apply to '
                    "config.data.label_mode='multi_target' (its loss has no "
                    'target distribution to smooth): set it to 0.')
  if config.data.normalization not in preprocess.NORMALIZATIONS:
    raise UserError(f'config.data.normalization={config.data.normalization!r}'
                    f' is not one of {preprocess.NORMALIZATIONS}.')
  if ((config.train.epochs < 1 and not config.train.phases)
      or config.train.batch_size < 1):
    raise UserError('config.train.epochs and config.train.batch_size must be '
                    '>= 1.')
  cpu_convolutions.check(cpu_convolutions.setting(config))
  check_metrics(config.train)


def check_metrics(train: ml_collections.ConfigDict,
                  class_names: tuple[str, ...] | None = None) -> None:
  """config.train's selection and plateau metrics are validation metrics
  that every epoch logs; before the classes are known (None), a per-class
  metric passes with any class name."""
  logged = epoch_metrics.validation_metric_names(
      class_names or (epoch_metrics.ANY_CLASS,))
  for field in ('selection_metric', 'plateau_metric'):
    metric = train[field]
    if not metric.startswith('val/'):
      raise UserError(f'config.train.{field}={metric!r} must be a validation '
                      "metric such as 'val/macro_f1' or 'val/loss': models "
                      'are never selected or tuned on the test split.')
    per_class = f'{metric.rpartition("/")[0]}/{epoch_metrics.ANY_CLASS}'
    if metric not in logged and (class_names or per_class not in logged):
      raise UserError(f'config.train.{field}={metric!r} is not logged; '
                      f'choose one of {logged}.')
