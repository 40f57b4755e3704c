"""The training loop: epochs of jitted steps, validation, checkpoints, resume.

Resume order: the latest checkpoint in the workdir if there is one, else a
fresh start from `config.seed`. Selection uses PublicTest (`val`) only;
PrivateTest (`test`) is never looked at here.
"""

import functools
import logging
import os
import signal
import sys
import threading
import time

import jax
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from fer_jax import inference, models, rundir
from fer_jax.data import (dataset, device_augment, pipeline, preprocess,
                          sources)
from fer_jax.errors import Interrupted, UserError
from fer_jax.train import (config_check, cpu_devices, cpu_memory, distill,
                           epoch_metrics, multihost, optim, phases, step,
                           warm_start)


# The process and device layout and the CPU's memory settings, which may
# change on resume.
_LAYOUT_KEYS = ('distributed', 'cpu_devices', 'cpu_keep_memory')


def _without_layout(config: dict | None) -> dict | None:
  """A config as JSON less its `_LAYOUT_KEYS`."""
  return config and {k: v for k, v in config.items()
                     if k not in _LAYOUT_KEYS}


class _StopSignals:
  """Records SIGTERM / SIGINT instead of dying, so the loop can checkpoint
  first; a second signal of the same kind acts as usual."""

  def __init__(self):
    self.signal = 0
    self._previous = {}

  def _handle(self, signal_number, frame):
    del frame
    self.signal = signal_number
    signal.signal(signal_number, self._previous[signal_number])
    logging.warning('%s received: saving a checkpoint, then stopping.',
                    signal.Signals(signal_number).name)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for number in (signal.SIGTERM, signal.SIGINT):
        self._previous[number] = signal.signal(number, self._handle)
    return self

  def __exit__(self, *exc_info):
    for number, handler in self._previous.items():
      signal.signal(number, handler)


def _improved(value: float, best: float | None, metric: str) -> bool:
  if best is None:
    return True
  return value < best if metric.endswith('loss') else value > best


def _data_info(data: sources.FerData, spec: preprocess.InputSpec) -> dict:
  return {'class_names': list(data.class_names),
          'input_spec': spec.to_json(),
          'split_sizes': {name: len(s) for name, s in data.splits.items()},
          'skipped_records': data.skipped}


def _open_run(config: ml_collections.ConfigDict,
              workdir: str) -> tuple[rundir.RunDir, dict | None]:
  """The run directory, in every process, and the config.json it held before
  (process 0 reads it; None elsewhere and for a new run)."""
  previous_config = None
  if jax.process_index() == 0:
    run = rundir.RunDir(workdir)
    if os.path.isfile(run.file(rundir.CONFIG)):
      previous_config = run.read_json(rundir.CONFIG)
    if jax.process_count() > 1:
      run.save_config(config)  # So that the others can open the directory.
  if jax.process_count() > 1:
    # The others open it once process 0 has made it (all making it at once
    # would race on RunDir's write probe).
    multihost_utils.sync_global_devices('fer_jax.train: run directory')
    if jax.process_index() != 0:
      run = rundir.RunDir(workdir, create=False)
  return run, previous_config


def train(config: ml_collections.ConfigDict,
          workdir: str) -> tuple[rundir.RunDir, sources.FerData]:
  """Trains (or resumes) a run in `workdir`; returns it and its data.

  With several processes (config.distributed), each runs this with the same
  config: each reads its share of every global batch, evaluates the whole
  validation split itself, and saves its part of the checkpoints; process 0
  alone writes the other files (config, metrics, TensorBoard).
  """
  distributed = config.get('distributed')
  keep_memory_steps = config.get('cpu_keep_memory', 0)
  memory_kept = cpu_memory.keep(keep_memory_steps)
  cpu_devices.split(config.get('cpu_devices', 0), config.train.batch_size,
                    1 if distributed is None else distributed.num_processes)
  multihost.initialize(distributed)
  config_check.check(config)
  main = jax.process_index() == 0
  run, previous_config = _open_run(config, workdir)
  data = dataset.load(config.data, config.seed)
  train_split = data.splits['train']
  spec = preprocess.input_spec(config.data.normalization,
                               config.data.image_size, config.data.channels,
                               train_split.images)
  resuming = run.latest_step() is not None  # Every process: orbax syncs.
  if main:
    if resuming and (_without_layout(previous_config)
                     != _without_layout(rundir.as_json(config))):
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
  batch_sharding, replicated = step.data_parallel(jax.devices())

  # ------------------------------------------------------ Model and state.
  model_settings = config.model.to_dict()
  model = models.create(model_settings.pop('name'), data.num_classes,
                        compute_dtype=config.train.compute_dtype,
                        **model_settings)
  weights = dataset.class_weights(train_split.labels, data.num_classes,
                                  config.train.class_weights)
  plan = phases.parse(config.train)
  ema_decay = config.train.get('ema_decay', 0.0)  # 0: no EMA.
  teacher, teacher_variables = distill.load(config.train, data.class_names)
  if teacher is not None:
    teacher_variables = jax.device_put(teacher_variables, replicated)
  groups = None
  if any(phase.trainable != 'all' for phase in plan):
    groups = models.parameter_groups(
        model, (1, spec.image_size, spec.image_size, spec.channels))

  def setup(phase: phases.Phase):
    """`phase`'s optimizer and jitted train step (compiled at first use)."""
    trainable = (None if groups is None else
                 phases.trainable_names(phase, groups, config.model.name))
    optimizer = optim.create(phase.train, steps_per_epoch, trainable)
    train_step = jax.jit(
        step.make_train_step(model, optimizer, spec, weights,
                             config.train.label_smoothing,
                             device_augment.from_config(config.data.augment),
                             trainable=trainable,
                             mixup_alpha=config.train.get('mixup_alpha', 0.0),
                             cutmix_alpha=config.train.get('cutmix_alpha',
                                                           0.0),
                             ema_decay=ema_decay,
                             label_mode=config.data.get('label_mode',
                                                        'majority'),
                             teacher=teacher),
        donate_argnums=0)
    if teacher is not None:
      train_step = functools.partial(train_step,
                                     teacher_variables=teacher_variables)
    if trainable is not None:
      logging.info('Phase %d trains %s of %s.', phase.number,
                   ', '.join(n for n in groups.names if n in trainable),
                   config.model.name)
    return optimizer, train_step

  optimizer, train_step = setup(plan[0])
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  state = step.init_state(model, optimizer, spec, init_rng,
                          ema=bool(ema_decay), sharding=replicated)
  if config.model.get('init_from') and not resuming:
    # The optimizer state depends on shapes only.
    state = state.replace(**jax.device_put(dict(zip(
        ('params', 'batch_stats'), warm_start.load(
            config, state.params, state.batch_stats))),
        replicated)).with_fresh_ema()
    if main:
      run.write_json(rundir.INIT_FROM, warm_start.record(config))
  num_params = models.count_params(state.params)
  logging.info('Model %s: %s parameters; %d steps of %d images per epoch on '
               '%d %s device(s).', config.model.name, f'{num_params:,}',
               steps_per_epoch, global_batch, num_devices,
               jax.default_backend())
  logits_fn = inference.make_logits_fn(model, spec)
  mflops = inference.forward_mflops(
      logits_fn, multihost.local(state.model_variables),
      train_split.images[:1])
  print(f'{config.model.name}: {num_params:,} parameters, {mflops:,.1f} '
        'MFLOPs per image', flush=True)
  batches = iter(pipeline.train_dataset(
      train_split, batch_size=global_batch // jax.process_count(),
      seed=config.seed,
      augment_config=(config.data.augment if device_augment.where(
          config.data.augment) == 'host' else None),
      num_workers=config.data.num_workers,
      process_index=jax.process_index(), process_count=jax.process_count()))

  # ---------------------------------------------------------------- Resume.
  plateau = optim.ReduceOnPlateau(plan[0].train.plateau_factor,
                                  plan[0].train.plateau_patience)
  # `epoch` counts over all phases; `phase_epoch` within `phase` (from 1).
  loop = {'epoch': 0, 'phase': 1, 'phase_epoch': 0, 'best_value': None,
          'best_epoch': 0, 'epochs_without_improvement': 0,
          'stopped_early': False, 'plateau': plateau.to_json(),
          'partial_epoch': None}

  def init_opt_state(optimizer, params):
    return jax.jit(optimizer.init, out_shardings=replicated)(params)

  if resuming:
    if len(plan) > 1:
      # The checkpoint's phase decides the layout of its optimizer state.
      number = run.restore('latest', model=state.model_variables)[
          'loop'].get('phase', 1)
      if 1 < number <= len(plan):
        optimizer, train_step = setup(plan[number - 1])
        state = state.replace(
            opt_state=init_opt_state(optimizer, state.params))
    with_ema = (state.ema is not None
                and run.has_item('latest', run.latest_step(), 'ema'))
    restored = run.restore('latest', model=state.model_variables,
                           optimizer={'step': state.step,
                                      'opt_state': state.opt_state},
                           with_data_state=True,
                           ema=state.ema if with_ema else None)
    state = step.TrainState(params=restored['model']['params'],
                            batch_stats=restored['model']['batch_stats'],
                            ema=restored.get('ema'), **restored['optimizer'])
    if ema_decay and not with_ema:
      logging.warning('The latest checkpoint has no EMA of the weights: it '
                      'starts at the restored ones.')
      state = state.replace(ema={}).with_fresh_ema()
    batches.set_state(restored['data'])
    loop = {'phase': 1, 'phase_epoch': restored['loop']['epoch'],
            **restored['loop']}
    plateau = optim.ReduceOnPlateau(**loop['plateau'])
    logging.info('Resumed %s at step %d (epoch %d done).', run.path,
                 restored['step'], loop['epoch'])
  writer = None
  if main:
    run.truncate_metrics(loop['epoch'])
    writer = epoch_metrics.summary_writer(run.file(rundir.TENSORBOARD),
                                          purge_step=loop['epoch'] + 1)

  def save_latest(data_state, partial_epoch):
    loop['partial_epoch'] = partial_epoch
    run.save('latest', int(state.step), model=state.model_variables,
             loop=loop, optimizer={'step': state.step,
                                   'opt_state': state.opt_state},
             data_state=data_state, ema=state.ema)

  def next_phase(state: step.TrainState):
    """Starts the phase after loop['phase'] from that phase's best state,
    with a fresh optimizer, schedule and early-stopping counters."""
    run.wait_until_finished()
    # With EMA: the best EMA weights, where the EMA restarts too.
    best = run.restore('best', model=state.model_variables)['model']
    phase = plan[loop['phase']]
    optimizer, train_step = setup(phase)
    # The step count goes on: checkpoints and dropout keys stay unique.
    state = state.replace(params=best['params'],
                          batch_stats=best['batch_stats'],
                          opt_state=init_opt_state(optimizer, best['params'])
                          ).with_fresh_ema()
    plateau = optim.ReduceOnPlateau(phase.train.plateau_factor,
                                    phase.train.plateau_patience)
    logging.info('Phase %d/%d (%s, %d epochs) starts from the best state of '
                 'phase %d (epoch %d).', phase.number, len(plan),
                 phase.trainable, phase.epochs, loop['phase'],
                 loop['best_epoch'])
    loop.update(phase=phase.number, phase_epoch=0, best_value=None,
                epochs_without_improvement=0, stopped_early=False,
                plateau=plateau.to_json(), partial_epoch=None)
    return state, train_step, plateau

  def phase_done(phase: phases.Phase) -> bool:
    return loop['stopped_early'] or loop['phase_epoch'] >= phase.epochs

  # ----------------------------------------------------------------- Epochs.
  metric = config.train.selection_metric
  every = config.train.checkpoint_every_steps
  total_epochs = sum(phase.epochs for phase in plan)
  with _StopSignals() as stop:
    while True:
      phase = plan[loop['phase'] - 1]
      if phase_done(phase):
        if loop['phase'] >= len(plan):
          break
        # Only on resuming a checkpoint saved before phases took over.
        state, train_step, plateau = next_phase(state)
        continue
      epoch = loop['epoch'] + 1
      partial = loop['partial_epoch'] or epoch_metrics.PartialEpoch.EMPTY
      done = len(partial['losses'])
      start = time.perf_counter()
      progress = tqdm.tqdm(
          total=steps_per_epoch * global_batch, initial=done * global_batch,
          unit='img', desc=f'epoch {epoch}/{total_epochs}' + (
              f' (phase {phase.number}/{len(plan)})' if len(plan) > 1
              else ''),
          leave=False, mininterval=1 if sys.stderr.isatty() else 30,
          disable=jax.process_index() != 0)
      step_metrics = []
      data_state = None
      for i, (batch, data_state) in enumerate(pipeline.to_device(
          batches, steps_per_epoch - done, batch_sharding,
          config.data.prefetch_batches), start=done + 1):
        state, results = train_step(state, batch, dropout_rng)
        step_metrics.append(results)
        progress.update(global_batch)
        if i % config.train.log_every_steps == 0:
          progress.set_postfix(loss=f'{float(results["loss"]):.3f}')
        if memory_kept:
          cpu_memory.after_step(i - done, keep_memory_steps, results)
        if i < steps_per_epoch and (stop.signal or (every and i % every == 0)):
          partial = epoch_metrics.PartialEpoch.extend(partial, step_metrics,
                                                      start)
          step_metrics, start = [], time.perf_counter()
          epoch_metrics.check_losses(partial, epoch, steps_per_epoch, run)
          save_latest(data_state, partial)
          if stop.signal:
            run.wait_until_finished()
            raise Interrupted(
                f'Stopped by {signal.Signals(stop.signal).name} in epoch '
                f'{epoch} at step {int(state.step)}; a checkpoint is saved: '
                'run the same command again to resume.', stop.signal)
      progress.close()
      partial = epoch_metrics.PartialEpoch.extend(partial, step_metrics,
                                                  start)
      epoch_metrics.check_losses(partial, epoch, steps_per_epoch, run)

      val_split = data.splits['val']
      # Every process evaluates the whole split alone (no collectives).
      val = inference.evaluate(
          logits_fn, multihost.local(state.eval_variables), val_split.images,
          val_split.labels, data.class_names, config.train.eval_batch_size)
      record = epoch_metrics.epoch_record(
          epoch, phase.number, state, partial, val, data.class_names,
          steps_per_epoch * global_batch)
      if metric not in record:
        raise UserError(f'config.train.selection_metric={metric!r} is not '
                        f'logged; choose one of {sorted(record)}.')
      record = multihost.from_process_0(record)
      if main:
        run.append_metrics(record)
        for key, value in record.items():
          if key not in ('epoch', 'step', 'phase'):
            writer.add_scalar(key, value, epoch)
        writer.flush()
      epoch_metrics.log_epoch(
          record, total_epochs,
          f' (phase {phase.number})' if len(plan) > 1 else '')

      if phase.train.schedule == 'plateau':
        factor = plateau.scale(record['val/loss'])
        if factor != 1.0:
          learning_rate = record['learning_rate'] * factor
          # A strongly typed float32, as in the state: no recompilation.
          state.opt_state.hyperparams['learning_rate'] = jax.device_put(
              np.float32(learning_rate), replicated)
          logging.info('Validation loss plateaued: learning rate -> %.2g.',
                       learning_rate)
      loop['epoch'] = epoch
      loop['phase_epoch'] += 1
      loop['plateau'] = plateau.to_json()
      # Best checkpoint and early stopping are per phase.
      if _improved(record[metric], loop['best_value'], metric):
        loop.update(best_value=record[metric], best_epoch=epoch,
                    epochs_without_improvement=0, partial_epoch=None)
        run.save('best', int(state.step), model=state.eval_variables,
                 loop=loop)
      else:
        loop['epochs_without_improvement'] += 1
      patience = phase.train.early_stopping_patience
      loop['stopped_early'] = bool(
          patience and loop['epochs_without_improvement'] >= patience
          and loop['phase_epoch'] < phase.epochs)
      if loop['stopped_early']:
        logging.info('Early stopping%s: no better %s for %d epochs.',
                     f' of phase {phase.number}' if len(plan) > 1 else '',
                     metric, patience)
      if phase_done(phase) and loop['phase'] < len(plan):
        # The latest checkpoint then holds the next phase's start.
        state, train_step, plateau = next_phase(state)
      save_latest(data_state, None)

  if main:
    writer.close()
  run.wait_until_finished()
  logging.info('Best %s %.4f at epoch %d.', metric, loop['best_value'],
               loop['best_epoch'])
  return run, data
