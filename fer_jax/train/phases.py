"""Training phases (`config.train.phases`): transfer learning in steps.

Each phase is one string of comma-separated `field=value` pairs, e.g.

  config.train.phases = (
      'epochs=10,trainable=head,learning_rate=1e-3',
      'epochs=20,trainable=last:2,learning_rate=1e-4',
  )

or on the command line
  --config.train.phases="('epochs=10,trainable=head', 'epochs=20')".

Fields: `epochs`, `trainable` ('head', 'last:N' for the last N blocks plus
the head, or 'all'; see models.parameter_groups) and any of TRAIN_FIELDS,
which default to config.train's. `config.train.epochs` caps every phase
(0: no cap), so `--config.train.epochs=1` keeps any run quick. Without
phases, config.train is one phase of `epochs` epochs that trains all.
"""

import dataclasses

import ml_collections

from fer_jax import models
from fer_jax.errors import UserError
from fer_jax.train import optim

# config.train fields a phase may set, with their types.
TRAIN_FIELDS = {
    'optimizer': str, 'learning_rate': float, 'schedule': str,
    'weight_decay': float, 'momentum': float, 'nesterov': bool,
    'warmup_epochs': float, 'plateau_factor': float, 'plateau_patience': int,
    'early_stopping_patience': int}
FIELDS = ('epochs', 'trainable', *TRAIN_FIELDS)
# The bounds of numeric TRAIN_FIELDS, for config.train's values and each
# phase's: field -> (whether a value is within them, what it must be).
LIMITS = {
    'learning_rate': (lambda value: value > 0, 'must be > 0'),
    'weight_decay': (lambda value: value >= 0, 'must be >= 0'),
    'warmup_epochs': (lambda value: value >= 0,
                      'must be >= 0 (0: no warm-up)'),
    'plateau_factor': (lambda value: 0 < value <= 1,
                       'must be in (0, 1]: reduce-on-plateau multiplies the '
                       'learning rate by it (1: never lowers it)'),
    'early_stopping_patience': (lambda value: value >= 0,
                                'must be >= 0 (0: no early stopping)'),
}
TRAINABLE = "'head', 'last:N' (the last N blocks and the head) or 'all'"


@dataclasses.dataclass(frozen=True)
class Phase:
  number: int  # From 1.
  epochs: int  # After the cap.
  trainable: str
  train: ml_collections.ConfigDict  # config.train with this phase's values.


def _value(text: str, kind: type):
  if kind is bool:
    if text.lower() not in ('true', 'false', '1', '0'):
      raise ValueError
    return text.lower() in ('true', '1')
  return kind(text)


def _check_trainable(trainable: str) -> None:
  if trainable in ('head', 'all'):
    return
  prefix, _, count = trainable.partition(':')
  if prefix != 'last' or not count.isdigit() or int(count) < 1:
    raise ValueError


def check_limits(settings: dict | ml_collections.ConfigDict, where: str,
                 limits: dict = LIMITS) -> None:
  """Fails on the first field of `limits` (as LIMITS) whose value in
  `settings` is out of bounds; `where` goes before the field's name."""
  for field, (within, rule) in limits.items():
    if field in settings and not within(settings[field]):
      raise UserError(f'{where}{field}={settings[field]!r} {rule}.')


def parse(train: ml_collections.ConfigDict) -> list[Phase]:
  """config.train's phases, checked; one phase of config.train if none."""
  specs = train.phases
  if isinstance(specs, str):
    specs = (specs,)
  if not specs:
    return [Phase(1, train.epochs, 'all', train)]
  if train.epochs < 0:
    raise UserError('config.train.epochs (the cap on every phase) must be '
                    '>= 0; 0: no cap.')
  result = []
  for number, spec in enumerate(specs, start=1):
    where = f'config.train.phases: phase {number} {spec!r}'
    values = {}
    for item in str(spec).split(','):
      key, sep, text = (s.strip() for s in item.partition('='))
      if not sep or not key:
        raise UserError(f'{where}: {item.strip()!r} is not field=value; the '
                        f'fields are {", ".join(FIELDS)}.')
      if key not in FIELDS:
        raise UserError(f'{where}: unknown field {key!r}; choose from '
                        f'{", ".join(FIELDS)}.')
      kind = TRAIN_FIELDS.get(key, int if key == 'epochs' else str)
      try:
        values[key] = _value(text, kind)
        if key == 'trainable':
          _check_trainable(text)
      except ValueError:
        expected = (TRAINABLE if key == 'trainable' else
                    {int: 'an integer', float: 'a number',
                     bool: 'true or false'}[kind])
        raise UserError(f'{where}: {key}={text!r} is not {expected}.'
                        ) from None
    if 'epochs' not in values and train.epochs == 0:
      raise UserError(f'{where}: no epochs= given, and config.train.epochs '
                      'is 0 (no cap): give each phase its epochs=.')
    epochs = values.pop('epochs', train.epochs)
    if epochs < 1:
      raise UserError(f'{where}: epochs={epochs} must be >= 1.')
    if train.epochs:
      epochs = min(epochs, train.epochs)
    trainable = values.pop('trainable', 'all')
    for key, choices in (('optimizer', optim.OPTIMIZERS),
                         ('schedule', optim.SCHEDULES)):
      if key in values and values[key] not in choices:
        raise UserError(f'{where}: {key}={values[key]!r} is not one of '
                        f'{", ".join(choices)}.')
    check_limits(values, f'{where}: ')
    settings = {**train.to_dict(), **values, 'epochs': epochs}
    result.append(Phase(number, epochs, trainable,
                        ml_collections.ConfigDict(settings)))
  return result


def trainable_names(phase: Phase, groups: models.ParameterGroups,
                    model_name: str) -> frozenset[str] | None:
  """The top-level modules `phase` trains; None: all of them."""
  if phase.trainable == 'all':
    return None
  count = 0
  if phase.trainable.startswith('last:'):
    count = int(phase.trainable.partition(':')[2])
    if count > len(groups.blocks):
      blocks = ', '.join('+'.join(block) for block in groups.blocks)
      raise UserError(
          f'config.train.phases: phase {phase.number} trainable='
          f'{phase.trainable!r}: {model_name} has {len(groups.blocks)} '
          f'blocks ({blocks}) before its head; use last:1 to '
          f'last:{len(groups.blocks)} or all.')
  blocks = groups.blocks[len(groups.blocks) - count:] if count else ()
  return frozenset(groups.head).union(*blocks)
