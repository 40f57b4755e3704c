"""The training loop: epochs of jitted steps, validation, checkpoints, resume.

Resume order: the latest checkpoint in the workdir if there is one, else a
fresh start from `config.seed`. Selection uses PublicTest (`val`) only;
PrivateTest (`test`) is never looked at here.
"""

import functools
import itertools
import logging
import math
import sys
import time

import jax
import ml_collections
import numpy as np
import tqdm
from jax.sharding import NamedSharding, PartitionSpec
from tensorboardX import SummaryWriter

from fer_jax import inference, metrics, models, rundir
from fer_jax.data import dataset, pipeline, preprocess, sources
from fer_jax.errors import UserError
from fer_jax.train import optim, step


def _check_config(config: ml_collections.ConfigDict) -> None:
  """Fails on a mistyped name before the data is read or anything compiles."""
  model_settings = config.model.to_dict()
  models.create(model_settings.pop('name'), 2, **model_settings)
  optim.create(config.train, steps_per_epoch=1)
  dataset.class_weights(np.zeros(1, np.int32), 2, config.train.class_weights)
  if config.data.normalization not in preprocess.NORMALIZATIONS:
    raise UserError(f'config.data.normalization={config.data.normalization!r}'
                    f' is not one of {preprocess.NORMALIZATIONS}.')
  if config.train.epochs < 1 or config.train.batch_size < 1:
    raise UserError('config.train.epochs and config.train.batch_size must be '
                    '>= 1.')
  metric = config.train.selection_metric
  if not metric.startswith('val/'):
    raise UserError(f'config.train.selection_metric={metric!r} must be a '
                    "validation metric such as 'val/macro_f1' or 'val/loss': "
                    'models are never selected on the test split.')


def _improved(value: float, best: float | None, metric: str) -> bool:
  if best is None:
    return True
  return value < best if metric.endswith('loss') else value > best


def _data_info(data: sources.FerData, spec: preprocess.InputSpec) -> dict:
  return {'class_names': list(data.class_names),
          'input_spec': spec.to_json(),
          'split_sizes': {name: len(s) for name, s in data.splits.items()},
          'skipped_records': data.skipped}


def train(config: ml_collections.ConfigDict,
          workdir: str) -> tuple[rundir.RunDir, sources.FerData]:
  """Trains (or resumes) a run in `workdir`; returns it and its data."""
  _check_config(config)
  run = rundir.RunDir(workdir)
  data = dataset.load(config.data, config.seed)
  train_split = data.splits['train']
  spec = preprocess.input_spec(config.data.normalization,
                               config.data.image_size, config.data.channels,
                               train_split.images)
  if (run.latest_epoch() is not None
      and run.read_json(rundir.CONFIG) != rundir.as_json(config)):
    logging.warning('Resuming %s with a config that differs from its '
                    'config.json; the new one is saved.', run.path)
  run.save_config(config)
  run.write_json(rundir.DATASET, _data_info(data, spec))

  # ---------------------------------------------------------------- Devices.
  num_devices = jax.device_count()
  global_batch = config.train.batch_size
  if global_batch % num_devices:
    raise UserError(f'config.train.batch_size={global_batch} must be a '
                    f'multiple of the {num_devices} devices.')
  steps_per_epoch = len(train_split) // global_batch
  if not steps_per_epoch:
    raise UserError(f'The train split has {len(train_split)} images, fewer '
                    f'than one batch of {global_batch}; lower '
                    'config.train.batch_size.')
  # Auto axes: XLA propagates the batch sharding through the step.
  mesh = jax.make_mesh((num_devices,), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  batch_sharding = NamedSharding(mesh, PartitionSpec('data'))
  replicated = NamedSharding(mesh, PartitionSpec())

  # ------------------------------------------------------ Model and state.
  model_settings = config.model.to_dict()
  model = models.create(model_settings.pop('name'), data.num_classes,
                        **model_settings)
  optimizer = optim.create(config.train, steps_per_epoch)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  state = jax.jit(functools.partial(step.init_state, model, optimizer, spec),
                  out_shardings=replicated)(init_rng)
  num_params = models.count_params(state.params)
  logging.info('Model %s: %s parameters; %d steps of %d images per epoch on '
               '%d device(s).', config.model.name, f'{num_params:,}',
               steps_per_epoch, global_batch, num_devices)
  print(f'{config.model.name}: {num_params:,} parameters', flush=True)

  weights = dataset.class_weights(train_split.labels, data.num_classes,
                                  config.train.class_weights)
  train_step = jax.jit(
      step.make_train_step(model, optimizer, spec, weights,
                           config.train.label_smoothing),
      donate_argnums=0)
  logits_fn = inference.make_logits_fn(model, spec)
  batches = iter(pipeline.train_dataset(
      train_split, batch_size=global_batch // jax.process_count(),
      seed=config.seed, augment_config=config.data.augment,
      num_workers=config.data.num_workers,
      process_index=jax.process_index(), process_count=jax.process_count()))

  # ---------------------------------------------------------------- Resume.
  plateau = optim.ReduceOnPlateau(config.train.plateau_factor,
                                  config.train.plateau_patience)
  loop = {'epoch': 0, 'best_value': None, 'best_epoch': 0,
          'epochs_without_improvement': 0, 'stopped_early': False,
          'plateau': plateau.to_json()}
  if run.latest_epoch() is not None:
    restored = run.restore('latest', model=state.model_variables,
                           optimizer={'step': state.step,
                                      'opt_state': state.opt_state},
                           data_iterator=batches)
    state = step.TrainState(params=restored['model']['params'],
                            batch_stats=restored['model']['batch_stats'],
                            **restored['optimizer'])
    loop = restored['loop']
    plateau = optim.ReduceOnPlateau(**loop['plateau'])
    logging.info('Resumed %s after epoch %d.', run.path, loop['epoch'])
  run.truncate_metrics(loop['epoch'])
  writer = SummaryWriter(run.file(rundir.TENSORBOARD),
                         purge_step=loop['epoch'] + 1)

  # ----------------------------------------------------------------- Epochs.
  metric = config.train.selection_metric
  first_epoch = loop['epoch'] + 1
  if loop['stopped_early']:
    first_epoch = config.train.epochs + 1
  for epoch in range(first_epoch, config.train.epochs + 1):
    start = time.perf_counter()
    progress = tqdm.tqdm(total=steps_per_epoch * global_batch, unit='img',
                         desc=f'epoch {epoch}/{config.train.epochs}',
                         leave=False, mininterval=1 if sys.stderr.isatty()
                         else 30, disable=jax.process_index() != 0)
    step_metrics = []
    epoch_batches = pipeline.to_device(
        itertools.islice(batches, steps_per_epoch), batch_sharding,
        config.data.prefetch_batches)
    for i, batch in enumerate(epoch_batches):
      state, results = train_step(state, batch, dropout_rng)
      step_metrics.append(results)
      progress.update(global_batch)
      if i % config.train.log_every_steps == 0:
        progress.set_postfix(loss=f'{float(results["loss"]):.3f}')
    step_metrics = jax.device_get(step_metrics)
    train_seconds = time.perf_counter() - start
    progress.close()

    val_split = data.splits['val']
    val = inference.evaluate(logits_fn, state.model_variables,
                             val_split.images, val_split.labels,
                             data.class_names, config.train.eval_batch_size)
    learning_rate = float(state.opt_state.hyperparams['learning_rate'])
    train_metrics = metrics.classification_metrics(
        np.concatenate([m['labels'] for m in step_metrics]),
        np.concatenate([m['predictions'] for m in step_metrics]),
        data.class_names)
    record = {
        'epoch': epoch, 'step': int(state.step),
        'train/loss': float(np.mean([m['loss'] for m in step_metrics])),
        'train/accuracy': train_metrics['accuracy'],
        'train/macro_f1': train_metrics['macro_f1'],
        'learning_rate': learning_rate,
        'train_seconds': train_seconds,
        'train_images_per_second': steps_per_epoch * global_batch
                                   / train_seconds,
        **metrics.flat_scalars(val, 'val')}
    if not math.isfinite(record['train/loss']):
      raise UserError(f'The training loss became {record["train/loss"]} in '
                      f'epoch {epoch} (by step {int(state.step)}); lower '
                      'config.train.learning_rate. The last good checkpoint '
                      f'(epoch {loop["epoch"]}) is kept in {run.path}.')
    run.append_metrics(record)
    for key, value in record.items():
      if key not in ('epoch', 'step'):
        writer.add_scalar(key, value, epoch)
    writer.flush()
    logging.info('epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc '
                 '%.4f macro-F1 %.4f | lr %.2g | %.0f s, %.0f img/s', epoch,
                 config.train.epochs, record['train/loss'],
                 record['train/accuracy'], record['val/loss'],
                 record['val/accuracy'], record['val/macro_f1'],
                 learning_rate, train_seconds,
                 record['train_images_per_second'])

    if config.train.schedule == 'plateau':
      factor = plateau.scale(record['val/loss'])
      if factor != 1.0:
        # A strongly typed float32, as in the state: no recompilation.
        state.opt_state.hyperparams['learning_rate'] = jax.device_put(
            np.float32(learning_rate * factor), replicated)
        logging.info('Validation loss plateaued: learning rate -> %.2g.',
                     learning_rate * factor)
    if metric not in record:
      raise UserError(f'config.train.selection_metric={metric!r} is not '
                      f'logged; choose one of {sorted(record)}.')
    loop['epoch'] = epoch
    loop['plateau'] = plateau.to_json()
    if _improved(record[metric], loop['best_value'], metric):
      loop.update(best_value=record[metric], best_epoch=epoch,
                  epochs_without_improvement=0)
      run.save('best', epoch, model=state.model_variables, loop=loop)
    else:
      loop['epochs_without_improvement'] += 1
    patience = config.train.early_stopping_patience
    loop['stopped_early'] = bool(
        patience and loop['epochs_without_improvement'] >= patience
        and epoch < config.train.epochs)
    run.save('latest', epoch, model=state.model_variables, loop=loop,
             optimizer={'step': state.step, 'opt_state': state.opt_state},
             data_iterator=batches)
    if loop['stopped_early']:
      logging.info('Early stopping: no better %s for %d epochs.', metric,
                   patience)
      break

  writer.close()
  run.wait_until_finished()
  logging.info('Best %s %.4f at epoch %d.', metric, loop['best_value'],
               loop['best_epoch'])
  return run, data
