"""The weights a run starts from: `config.model.init_from`.

Either a directory of converted ImageNet weights (python -m fer_jax.convert)
or another run's directory (any workdir of python -m fer_jax.main, or the
released model in fer_jax/pretrained), whose best checkpoint is loaded: to
fine-tune a trained FER model on other labels or data (FER2013 -> FER+,
where the classifier starts afresh) or to continue one under a new
schedule. Either way every parameter and BatchNorm statistic with the same
name and shape is loaded and the rest keeps its initialisation, but for a
run of other classes (names or order) the classifier is never loaded, even
where the class counts match; the optimizer always starts afresh. A run
directory must be of the same model with the same settings, but for those
that shape no weight (dropout, stochastic depth), so that all its weights
load: a model of other widths or depth would start mostly afresh. The run
records what it started from in its workdir's init_from.json (`record`).
"""

import hashlib
import json
import logging
import os

import jax
import ml_collections
from flax import traverse_util

from fer_jax import convert, inference, models, rundir
from fer_jax.errors import UserError


def check(config: ml_collections.ConfigDict) -> None:
  """Fails, before any data is read, on init_from weights that cannot fit
  the run's model or input normalisation."""
  path = config.model.get('init_from', '')
  if not path:
    return
  if not rundir.is_run_directory(path):
    if config.model.name not in convert.ARCHS:
      raise UserError(f'config.model.init_from={path!r} is not a run '
                      'directory (no config.json): give the --workdir of a '
                      f'trained {config.model.name} run (converted ImageNet '
                      f'weights exist for {", ".join(sorted(convert.ARCHS))}'
                      ' only).')
    convert.read_meta(path, config.model.name, config.data.normalization)
    return
  source = rundir.RunDir(path, create=False)
  trained = source.load_config()
  if trained.model.name != config.model.name:
    raise UserError(f'config.model.init_from={path!r} is a run of '
                    f'{trained.model.name}, but config.model.name is '
                    f'{config.model.name!r}.')
  try:
    differing = _shaping_settings_differ(trained.model, config.model)
  except UserError as error:  # Raised by models.create on either config.
    raise UserError(f'config.model.init_from={path!r}: its config.json and '
                    f'this run\'s disagree on the model\'s settings: {error}'
                    ) from None
  if differing:
    raise UserError(
        f'config.model.init_from={path!r} is a run of another '
        f'{config.model.name}: '
        + ', '.join(f'{key}={theirs} there, {ours} here'
                    for key, (theirs, ours) in differing.items())
        + '; set those as in its config.json (e.g. train with the config '
        'file it was trained with), so that all its weights load.')
  if trained.data.normalization != config.data.normalization:
    raise UserError(f'config.model.init_from={path!r} was trained with '
                    f'{trained.data.normalization!r} input normalisation, but '
                    f'config.data.normalization is '
                    f'{config.data.normalization!r}; set '
                    f'--config.data.normalization='
                    f'{trained.data.normalization}.')
  if not source.has_checkpoint('best'):
    raise UserError(f'config.model.init_from={path!r} is a run directory '
                    'without a best checkpoint: train it for at least one '
                    'epoch first.')


# Model settings that shape no variable: a run may change them from its
# init_from run's.
_NOT_SHAPING = frozenset({'dropout', 'drop_path_rate'})


def _shaping_settings_differ(
    trained: ml_collections.ConfigDict,
    this_run: ml_collections.ConfigDict) -> dict[str, tuple[str, str]]:
  """The model settings, other than `_NOT_SHAPING`, that differ between two
  config.model sections of the same model, a setting left out counting as
  its default: {setting: (trained's, this run's)}, as JSON, by name."""
  def fields(settings):
    module = models.create(**{**settings.to_dict(), 'num_classes': 1})
    return {name: json.dumps(getattr(module, name))
            for name in sorted(models.setting_names(type(module))
                               - _NOT_SHAPING)}
  theirs, ours = fields(trained), fields(this_run)
  return {key: (theirs[key], ours[key]) for key in theirs
          if theirs[key] != ours[key]}


def load(config: ml_collections.ConfigDict, params, batch_stats,
         class_names: tuple[str, ...]) -> tuple:
  """(params, batch_stats) with init_from's weights merged in (see the
  module docstring), for a run of `class_names`; `check` has passed."""
  path = config.model.init_from
  if not rundir.is_run_directory(path):
    return convert.init_from(path, config.model.name, params, batch_stats)
  trained = inference.load_trained(rundir.RunDir(path, create=False))
  pretrained = jax.device_get(trained.variables)
  if tuple(trained.class_names) != tuple(class_names):
    classifier = _classifier_keys(config, len(class_names))
    pretrained = traverse_util.unflatten_dict({
        key: value
        for key, value in traverse_util.flatten_dict(pretrained).items()
        if key not in classifier})
    logging.info('%s predicts %s, this run %s: its classifier (%s) is not '
                 'loaded.', path, ','.join(trained.class_names),
                 ','.join(class_names),
                 ', '.join('/'.join(key) for key in sorted(classifier)))
  return convert.merge(pretrained, params, batch_stats, path)


def _classifier_keys(config: ml_collections.ConfigDict,
                     num_classes: int) -> set[tuple[str, ...]]:
  """The variables' flattened keys whose shapes follow the class count: the
  classifier's, whatever the model calls it (traced, nothing computed)."""
  settings = config.model.to_dict()
  name = settings.pop('name')
  size, channels = config.data.image_size, config.data.channels

  def shapes(classes):
    return traverse_util.flatten_dict(models.variable_shapes(
        models.create(name, classes, **settings), (1, size, size, channels)))

  these, one_more = shapes(num_classes), shapes(num_classes + 1)
  return {key for key, value in these.items()
          if value.shape != one_more[key].shape}


def source_run(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """init_from's run directory, alone; () without one (none given, or
  converted ImageNet weights)."""
  path = config.model.get('init_from', '')
  return (path,) if path and rundir.is_run_directory(path) else ()


def replays_data_stream(config: ml_collections.ConfigDict,
                        train_images: int) -> bool:
  """Whether init_from is a run that trained on the stream of batches this
  run starts with: one of the same seed over as many training images,
  which fix the stream (fer_jax.data.pipeline), so that this run's first
  epochs show the faces the source saw in its first, in the same order with
  the same augmentation."""
  if not source_run(config):
    return False
  source = rundir.RunDir(config.model.init_from, create=False)
  return (source.load_config().seed == config.seed
          and source.read_json(rundir.DATASET)['split_sizes']['train']
          == train_images)


def record(config: ml_collections.ConfigDict) -> dict:
  """What a run started from, for its init_from.json: the weights' path and
  sha256 and, for a run directory, what that run itself started from (so a
  chain of continued runs stays traceable to its first)."""
  path = os.path.abspath(config.model.init_from)
  if not rundir.is_run_directory(path):
    with open(os.path.join(path, convert.VARIABLES), 'rb') as f:
      digest = hashlib.file_digest(f, 'sha256').hexdigest()
    return {'path': path, 'variables_sha256': digest,
            'converted': convert.read_meta(path, config.model.name)}
  source = rundir.RunDir(path, create=False)
  info = source.best_checkpoint_record()
  if os.path.isfile(source.file(rundir.INIT_FROM)):
    info['init_from'] = source.read_json(rundir.INIT_FROM)
  return info
